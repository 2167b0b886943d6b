"""Checks deploy/ as an operator's tools would read it, and prints what the Rust test
(tests/deploy_config.rs) checks further against promtool, amtool and a live server.

Usage: check_deploy.py REPO_ROOT HELM OUT_DIR
  - every YAML and JSON file under deploy/ (but the chart's Go templates) parses;
  - docker-compose.yml is the site the README describes (KRaft Kafka, an S3 store, two
    ioc in one consumer group over one bucket, each with its own state volume,
    Prometheus, Alertmanager, Grafana; ports on loopback);
  - the Helm chart passes `helm lint --strict` and renders to the objects it promises,
    with its default values (a ReadWriteMany claim) and with a bucket (no claim);
  - OUT_DIR/ioc.toml is the chart's rendered config, OUT_DIR/dashboard-rules.yml the
    dashboard's queries as recording rules (for promtool), and stdout a JSON object with
    the metric names the dashboard and the alert rules use.
Fails (exit 1) with a message naming the file and the check.
"""

import json
import pathlib
import re
import subprocess
import sys

import yaml

root, helm, out = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
deploy = root / "deploy"
chart = deploy / "helm" / "ioc"


def fail(msg):
    print(f"check_deploy: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


# 1. Everything parses.
parsed = {}
for path in sorted(deploy.rglob("*")):
    if path.is_dir() or (chart / "templates") in path.parents:
        continue
    rel = path.relative_to(root).as_posix()
    try:
        if path.suffix in (".yml", ".yaml"):
            parsed[rel] = list(yaml.safe_load_all(path.read_text()))
        elif path.suffix == ".json":
            parsed[rel] = json.loads(path.read_text())
    except Exception as e:  # noqa: BLE001 - the message is the point
        fail(f"{rel} does not parse: {e}")
check(len(parsed) >= 10, f"only {len(parsed)} YAML/JSON files found under deploy/")

# 2. The compose site.
compose = parsed["deploy/compose/docker-compose.yml"][0]
services = compose["services"]
for s in ["kafka", "seaweedfs", "ioc-1", "ioc-2", "prometheus", "alertmanager", "grafana"]:
    check(s in services, f"docker-compose.yml has no service {s}")
check("controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "Kafka runs in KRaft mode")
groups = {services[s]["environment"]["IOC_KAFKA_GROUP"] for s in ["ioc-1", "ioc-2"]}
check(len(groups) == 1, f"both ioc servers are in one consumer group, not {groups}")
for s in ["ioc-1", "ioc-2"]:
    check(services[s]["environment"]["IOC_KAFKA_ASSIGNMENT"] == "group", f"{s} uses group assignment")
    check(services[s]["environment"]["IOC_KAFKA_BROKERS"] == "kafka:9092", f"{s} reads the compose Kafka")
    check(services[s]["build"]["dockerfile"] == "deploy/Dockerfile", f"{s} builds deploy/Dockerfile")
# Both servers share one bucket, reached at an S3 service of the site, and nothing else:
# each has its own state directory on a volume of its own.
buckets = {services[s]["environment"].get("IOC_DATA_DIR", "") for s in ["ioc-1", "ioc-2"]}
check(len(buckets) == 1, f"both ioc servers use one store, not {sorted(buckets)}")
bucket = buckets.pop()
check(re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]+/[^/].*", bucket) is not None, f"the store is a bucket URL, not {bucket!r}")
state_mounts = []
for s in ["ioc-1", "ioc-2"]:
    env = services[s]["environment"]
    state = env.get("IOC_STATE_DIR", "")
    check(state.startswith("/"), f"{s} sets IOC_STATE_DIR to a directory, not {state!r}")
    endpoint = re.fullmatch(r"https?://([A-Za-z0-9_.-]+):(\d+)/?", env.get("AWS_ENDPOINT_URL", ""))
    check(endpoint is not None, f"{s}: AWS_ENDPOINT_URL is http(s)://HOST:PORT, not {env.get('AWS_ENDPOINT_URL')!r}")
    s3 = endpoint.group(1)
    check(s3 in services, f"{s}: AWS_ENDPOINT_URL names {s3}, which is not a service")
    check(env.get("AWS_REGION"), f"{s} sets AWS_REGION")
    if env["AWS_ENDPOINT_URL"].startswith("http://"):
        check(str(env.get("AWS_ALLOW_HTTP")).lower() == "true", f"{s}: a plain-http endpoint needs AWS_ALLOW_HTTP=true")
    deps = services[s].get("depends_on", {})
    check(s3 in deps, f"{s} starts after the S3 service {s3}")
    mounts = [m for m in services[s].get("volumes", []) if m.split(":")[1] == state]
    check(len(mounts) == 1, f"{s} mounts a volume at its state dir {state}")
    state_mounts.append(mounts[0].split(":")[0])
    check(not any(m.split(":")[1] == "/var/lib/ioc" for m in services[s].get("volumes", [])),
          f"{s} shares no data volume: the store is the bucket")
check(len(set(state_mounts)) == 2, f"each ioc server has its own state volume, not {state_mounts}")
for v in state_mounts:
    check(v in (compose.get("volumes") or {}), f"the state volume {v} is declared")
check("ioc-data" not in (compose.get("volumes") or {}), "no shared ioc-data volume is left")
weed = services[s3]
check(re.search(r":\d+(\.\d+)+$", weed["image"]) is not None, f"the S3 service's image is pinned: {weed['image']}")
weed_cmd = " ".join(weed["command"]) if isinstance(weed["command"], list) else weed["command"]
check(f"-bucket={bucket[5:].split('/')[0]}" in weed_cmd, f"the S3 service creates the bucket of {bucket}")
check(any(m.split(":")[1] == "/data" for m in weed["volumes"]), "the S3 service keeps its data on a volume")
env_example = (deploy / "compose" / "ioc.env.example").read_text()
for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
    check(re.search(rf"^{k}=", env_example, re.M) is not None, f"ioc.env.example gives {k}")
check(all("ioc.env" in str(services[n].get("env_file")) for n in [s3, "ioc-1", "ioc-2"]),
      "the S3 service and both servers read the S3 keys from ioc.env")
for name, s in services.items():
    for p in s.get("ports", []):
        check(str(p).startswith("127.0.0.1:"), f"{name} publishes {p} beyond loopback")
prom_mounts = " ".join(services["prometheus"]["volumes"])
check("ioc-alerts.yml" in prom_mounts and "ioc-token" in prom_mounts, "Prometheus gets the rules and the token")
for mount in services["prometheus"]["volumes"] + services["grafana"]["volumes"] + services["alertmanager"]["volumes"]:
    src = mount.split(":")[0]
    if src.startswith("."):
        target = (deploy / "compose" / src).resolve()
        check(target.exists() or target.name == "ioc-token", f"compose mounts {src}, which does not exist")
dockerfile = (deploy / "Dockerfile").read_text()
check(dockerfile.count("FROM ") >= 2, "the Dockerfile is multi-stage")
check(re.search(r"^USER 10001", dockerfile, re.M) is not None, "the runtime image runs as a non-root user")
check((root / ".dockerignore").read_text().find("target/") >= 0, ".dockerignore keeps target/ out of the context")

# 3. The Helm chart.
S3_VALUES = {
    "storage.s3.url": "s3://ioc/site",
    "storage.s3.endpoint": "http://seaweedfs.storage:8333",
    "storage.s3.allowHttp": "true",
}
s3_args = [a for k, v in S3_VALUES.items() for a in ("--set", f"{k}={v}")]


def render(args, what):
    """helm lint --strict and helm template with these values: the objects by kind."""
    lint = subprocess.run([helm, "lint", "--strict", str(chart), *args], capture_output=True, text=True)
    check(lint.returncode == 0, f"helm lint --strict ({what}) failed:\n{lint.stdout}{lint.stderr}")
    rendered = subprocess.run([helm, "template", "site", str(chart), *args], capture_output=True, text=True)
    check(rendered.returncode == 0, f"helm template ({what}) failed:\n{rendered.stderr}")
    kinds = {}
    for o in yaml.safe_load_all(rendered.stdout):
        if o:
            kinds.setdefault(o["kind"], []).append(o)
    return kinds


def deployments_of(kinds, what):
    found = {d["metadata"]["name"]: d for d in kinds.get("Deployment", [])}
    check(set(found) == {"site-ioc-ingest", "site-ioc-api"}, f"Deployments ({what}): {sorted(found)}")
    return found


def env_of(d):
    return {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}


def mounts_of(d):
    c = d["spec"]["template"]["spec"]["containers"][0]
    return {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}


def volumes_of(d):
    return {v["name"]: v for v in d["spec"]["template"]["spec"].get("volumes", [])}


# 3a. Default values: the store on the ReadWriteMany claim the chart creates.
by_kind = render([], "default values")
deployments = deployments_of(by_kind, "default values")
claims = by_kind.get("PersistentVolumeClaim", [])
check(len(claims) == 1 and claims[0]["spec"]["accessModes"] == ["ReadWriteMany"],
      "with default values the chart creates one ReadWriteMany claim")
for name, d in deployments.items():
    env = env_of(d)
    check(env["IOC_DATA_DIR"]["value"] == "/var/lib/ioc", f"{name}: the data dir is the mounted claim")
    check("IOC_STATE_DIR" not in env, f"{name}: on a claim the state stays in the data dir")
    data = volumes_of(d).get(mounts_of(d).get("/var/lib/ioc"), {})
    check(data.get("persistentVolumeClaim", {}).get("claimName") == claims[0]["metadata"]["name"],
          f"{name}: /var/lib/ioc is the chart's claim")
for name, d in deployments.items():
    c = d["spec"]["template"]["spec"]["containers"][0]
    env = env_of(d)
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{name}: liveness probe on /healthz")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{name}: readiness probe on /readyz")
    check("memory" in c["resources"]["requests"] and "cpu" in c["resources"]["requests"], f"{name}: requests")
    check("secretKeyRef" in env["IOC_AUTH_TOKENS"]["valueFrom"], f"{name}: tokens from a Secret")
    check(d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], f"{name}: non-root")
    labels = d["spec"]["template"]["metadata"]["labels"]
    pdbs = [p for p in by_kind.get("PodDisruptionBudget", [])
            if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    check(len(pdbs) == 1, f"{name}: exactly one PodDisruptionBudget selects its pods, found {len(pdbs)}")
    kafka = "IOC_KAFKA_GROUP" in env
    check(kafka == name.endswith("-ingest"), f"{name}: Kafka settings only on the ingest Deployment")
check(deployments["site-ioc-ingest"]["spec"]["replicas"] >= 2, "ingest is scaled in one group")
configmaps = by_kind.get("ConfigMap", [])
check(len(configmaps) == 1 and "ioc.toml" in configmaps[0]["data"], "one ConfigMap with ioc.toml")
check(not by_kind.get("Secret"), "the chart renders no Secret (tokens never land in a manifest)")

# 3b. With a bucket: every pod reaches it, no claim is made or mounted, and the state
# dir is a volume of each pod's own.
s3_kinds = render(s3_args, "with storage.s3")
check(not s3_kinds.get("PersistentVolumeClaim"), "with storage.s3.url the chart renders no PersistentVolumeClaim")
check(not s3_kinds.get("Secret"), "with storage.s3.url the chart renders no Secret (keys never land in a manifest)")
for name, d in deployments_of(s3_kinds, "with storage.s3").items():
    env = env_of(d)
    check(env["IOC_DATA_DIR"].get("value") == S3_VALUES["storage.s3.url"], f"{name}: IOC_DATA_DIR is the bucket")
    check(env["AWS_ENDPOINT_URL"].get("value") == S3_VALUES["storage.s3.endpoint"], f"{name}: AWS_ENDPOINT_URL")
    check(env["AWS_ALLOW_HTTP"].get("value") == "true", f"{name}: AWS_ALLOW_HTTP for a plain-http endpoint")
    check(env.get("AWS_REGION", {}).get("value"), f"{name}: AWS_REGION")
    for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
        check("secretKeyRef" in env.get(k, {}).get("valueFrom", {}), f"{name}: {k} from a Secret")
    state = env.get("IOC_STATE_DIR", {}).get("value", "")
    mounts = mounts_of(d)
    check(state in mounts, f"{name}: IOC_STATE_DIR {state!r} is a mounted volume")
    vols = volumes_of(d)
    check(not any("persistentVolumeClaim" in v for v in vols.values()), f"{name}: mounts no shared claim")
    check("emptyDir" in vols[mounts[state]] or "ephemeral" in vols[mounts[state]],
          f"{name}: the state dir is a volume of the pod's own")
    check("/var/lib/ioc" not in mounts, f"{name}: nothing is mounted at the local data dir")
bad = subprocess.run([helm, "template", "site", str(chart), "--set", "storage.s3.url=/var/lib/ioc"],
                     capture_output=True, text=True)
check(bad.returncode != 0 and "s3://" in bad.stderr, "the chart refuses a storage.s3.url that is not s3://")

out.mkdir(parents=True, exist_ok=True)
(out / "ioc.toml").write_text(configmaps[0]["data"]["ioc.toml"])

# 4. What the dashboard and the rules query.
dashboard = parsed["deploy/grafana/dashboards/ioc-operations.json"]
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
titles = " ".join(p["title"].lower() for p in dashboard["panels"])
for want in ["ingest", "lag", "dead letters", "commit latency", "websocket", "query latency", "alert states"]:
    check(want in titles, f"the operations dashboard has a panel for {want}")
rules = [r["expr"] for g in parsed["deploy/prometheus/ioc-alerts.yml"][0]["groups"] for r in g["rules"]]
recording = {"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
(out / "dashboard-rules.yml").write_text(yaml.safe_dump(recording, allow_unicode=True))
names = set()
for e in exprs + rules:
    for m in re.findall(r"\bioc_[a-z_]+", e):
        names.add(re.sub(r"_(bucket|sum|count)$", "", m) if m.endswith(("_bucket", "_sum", "_count")) else m)
print(json.dumps({"metrics": sorted(names), "dashboard_queries": len(exprs), "rules": len(rules)}))
