"""Checks deploy/ as an operator's tools would read it, and prints what the Rust test
(tests/deploy_config.rs) checks further against promtool, amtool and a live server.

Usage: check_deploy.py REPO_ROOT HELM OUT_DIR
  - every YAML and JSON file under deploy/ (but the chart's Go templates) parses;
  - docker-compose.yml is the site the README describes (KRaft Kafka, two ioc in one
    consumer group over one volume, Prometheus, Alertmanager, Grafana; ports on loopback);
  - the Helm chart passes `helm lint --strict` and renders to the objects it promises;
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
for s in ["kafka", "ioc-1", "ioc-2", "prometheus", "alertmanager", "grafana"]:
    check(s in services, f"docker-compose.yml has no service {s}")
check("controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "Kafka runs in KRaft mode")
groups = {services[s]["environment"]["IOC_KAFKA_GROUP"] for s in ["ioc-1", "ioc-2"]}
check(len(groups) == 1, f"both ioc servers are in one consumer group, not {groups}")
for s in ["ioc-1", "ioc-2"]:
    check(services[s]["environment"]["IOC_KAFKA_ASSIGNMENT"] == "group", f"{s} uses group assignment")
    check(services[s]["environment"]["IOC_KAFKA_BROKERS"] == "kafka:9092", f"{s} reads the compose Kafka")
    check("ioc-data:/var/lib/ioc" in services[s]["volumes"], f"{s} mounts the shared store")
    check(services[s]["build"]["dockerfile"] == "deploy/Dockerfile", f"{s} builds deploy/Dockerfile")
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
lint = subprocess.run([helm, "lint", "--strict", str(chart)], capture_output=True, text=True)
check(lint.returncode == 0, f"helm lint --strict failed:\n{lint.stdout}{lint.stderr}")
rendered = subprocess.run([helm, "template", "site", str(chart)], capture_output=True, text=True)
check(rendered.returncode == 0, f"helm template failed:\n{rendered.stderr}")
objects = [d for d in yaml.safe_load_all(rendered.stdout) if d]
by_kind = {}
for o in objects:
    by_kind.setdefault(o["kind"], []).append(o)
deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
check(set(deployments) == {"site-ioc-ingest", "site-ioc-api"}, f"Deployments: {sorted(deployments)}")
for name, d in deployments.items():
    c = d["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
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
