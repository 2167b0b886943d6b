//! Alerting: rules are evaluated on a timer; the pure state machine
//! (`ioc_core::alert::step`) decides; this module does the I/O around it.
//!
//! Each evaluation measures every rule's KPI over its window in each of its scopes and
//! steps the state of that (rule, scope). Every state change is appended to the alert
//! history (`<data-dir>/alerts/history.jsonl`), pushed to websocket clients and shown
//! in `ioc_alert_state`; firing and resolving also go to the Alertmanager-compatible
//! webhook, through a bounded queue with retries, so a failing receiver never holds up
//! evaluation. The states are persisted (`<data-dir>/alerts/state.json`) after every
//! change, so a restart neither forgets a firing alert nor notifies it twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ioc_core::alert::{
    Action, AlertRule, AlertState, RuleState, RulesError, RulesFile, Sample, Scope, Window, default_rules, step,
};
use ioc_core::counters::{Count, Dim, DimFilter};
use ioc_core::time::LivePeriod;
use ioc_core::{AdminUnits, Catalog};
use ioc_query::{KpiEngine, KpiError, Period, SeriesQuery};
use prometheus::{GaugeVec, IntCounter, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::AlertSettings;
use crate::live::Hub;
use crate::webhook::{WebhookAlert, alertmanager_webhook};

/// Entries of the history kept in memory for `GET /api/v1/alerts`.
const RECENT: usize = 200;
/// Notifications waiting for the webhook before new ones are dropped (and counted).
const WEBHOOK_QUEUE: usize = 1024;

#[derive(Debug, Error)]
pub enum AlertError {
    #[error("--alert-rules / IOC_ALERT_RULES / alerts.rules: {path}: {source}")]
    Rules { path: PathBuf, source: RulesError },
    #[error("--alert-rules / IOC_ALERT_RULES / alerts.rules: {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("alert rule `{rule}`, key `scope`: `{code}` is not one of the 34 province codes")]
    UnknownProvince { rule: String, code: String },
    #[error("alert store {path}: {source}")]
    Store { path: PathBuf, source: std::io::Error },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl AlertError {
    /// A fault of the rules file (exit code 2), not of the machine.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Rules { .. } | Self::Read { .. } | Self::UnknownProvince { .. })
    }
}

/// A rule's counts in each of its scopes, or why its KPI could not be measured.
type Measured = Result<HashMap<Scope, Count>, KpiError>;

/// One persisted (rule, scope) state.
#[derive(Debug, Serialize, Deserialize)]
struct Persisted {
    rule: String,
    scope: Scope,
    state: RuleState,
}

/// One state change, as the history and `recent` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Change {
    at: DateTime<Utc>,
    rule: String,
    kpi: String,
    scope: Scope,
    from: AlertState,
    to: AlertState,
    value: Option<f64>,
    threshold: f64,
}

struct Metrics {
    kpi_value: GaugeVec,
    kpi_target: GaugeVec,
    alert_state: GaugeVec,
    notifications: IntCounterVec,
    evaluation_failures: IntCounterVec,
    persist_failures: IntCounter,
}

impl Metrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            kpi_value: GaugeVec::new(
                Opts::new("ioc_kpi_value", "A KPI's value over its alert rule's window, by KPI and scope"),
                &["kpi", "scope"],
            )?,
            kpi_target: GaugeVec::new(
                Opts::new("ioc_kpi_target", "The threshold a KPI is held to, by KPI and scope"),
                &["kpi", "scope"],
            )?,
            alert_state: GaugeVec::new(
                Opts::new(
                    "ioc_alert_state",
                    "Alert state by rule and scope: 0 ok, 1 pending, 2 firing, 3 resolved, 4 no_data, 5 stale",
                ),
                &["rule", "scope"],
            )?,
            notifications: IntCounterVec::new(
                Opts::new("ioc_alert_notifications_total", "Webhook notifications, by outcome"),
                &["outcome"],
            )?,
            evaluation_failures: IntCounterVec::new(
                Opts::new(
                    "ioc_alert_evaluation_failures_total",
                    "Alert rules whose KPI could not be measured, by rule",
                ),
                &["rule"],
            )?,
            persist_failures: IntCounter::new(
                "ioc_alert_persist_failures_total",
                "Evaluations whose state changes could not be written (retried, not notified)",
            )?,
        };
        registry.register(Box::new(m.kpi_value.clone()))?;
        registry.register(Box::new(m.kpi_target.clone()))?;
        registry.register(Box::new(m.alert_state.clone()))?;
        registry.register(Box::new(m.notifications.clone()))?;
        registry.register(Box::new(m.evaluation_failures.clone()))?;
        registry.register(Box::new(m.persist_failures.clone()))?;
        Ok(m)
    }
}

/// The number `ioc_alert_state` shows for a state.
pub fn state_code(s: AlertState) -> f64 {
    match s {
        AlertState::Ok => 0.0,
        AlertState::Pending => 1.0,
        AlertState::Firing => 2.0,
        AlertState::Resolved => 3.0,
        AlertState::NoData => 4.0,
        AlertState::Stale => 5.0,
    }
}

pub struct AlertEngine {
    rules: Vec<AlertRule>,
    provinces: Vec<String>,
    states: Mutex<BTreeMap<(String, Scope), RuleState>>,
    recent: Mutex<VecDeque<Change>>,
    dir: PathBuf,
    settings: AlertSettings,
    metrics: Metrics,
    webhook: Option<mpsc::Sender<Value>>,
}

impl AlertEngine {
    /// Loads the rules (or the defaults) and the persisted states and history.
    pub fn open(
        settings: &AlertSettings,
        catalog: &Catalog,
        units: &AdminUnits,
        data_dir: &Path,
        registry: &Registry,
    ) -> Result<Self, AlertError> {
        let rules = match &settings.rules {
            None => default_rules(catalog),
            Some(path) => {
                let text =
                    fs::read_to_string(path).map_err(|source| AlertError::Read { path: path.clone(), source })?;
                RulesFile::from_toml(&text, catalog)
                    .map_err(|source| AlertError::Rules { path: path.clone(), source })?
                    .rule
            }
        };
        let provinces: Vec<String> = units.provinces().iter().map(|p| p.code.clone()).collect();
        for r in &rules {
            for s in r.scopes(provinces.iter().map(String::as_str)) {
                if let Some(code) = s.province().filter(|c| units.province(c).is_none()) {
                    return Err(AlertError::UnknownProvince { rule: r.name.clone(), code: code.to_string() });
                }
            }
        }
        let dir = data_dir.join("alerts");
        fs::create_dir_all(&dir).map_err(|source| AlertError::Store { path: dir.clone(), source })?;
        let states = load_states(&dir.join("state.json"))?;
        let recent = load_recent(&dir.join("history.jsonl"))?;
        let metrics = Metrics::register(registry)?;
        let engine = Self {
            rules,
            provinces,
            states: Mutex::new(states),
            recent: Mutex::new(recent),
            dir,
            settings: settings.clone(),
            metrics,
            webhook: None,
        };
        for ((rule, scope), st) in engine.states.lock().expect("alert lock").iter() {
            engine
                .metrics
                .alert_state
                .with_label_values(&[rule.as_str(), &scope.to_string()])
                .set(state_code(st.state));
        }
        info!(rules = engine.rules.len(), "alert rules loaded");
        Ok(engine)
    }

    /// Starts the webhook sender, when a receiver is configured.
    pub fn with_webhook(mut self, stop: watch::Receiver<bool>) -> Self {
        if let Some(url) = self.settings.webhook_url.clone() {
            let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE);
            tokio::spawn(deliver(url, rx, self.metrics.notifications.clone(), stop));
            self.webhook = Some(tx);
        }
        self
    }

    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// One evaluation of every rule at `now`. A rule whose KPI cannot be measured
    /// is skipped this round (logged and counted) and keeps its state; every other
    /// rule is stepped as usual. Returns how many rules failed.
    pub async fn evaluate(&self, kpis: &KpiEngine, hub: &Hub, now: DateTime<Utc>) -> usize {
        let stale = kpis.as_of().is_none_or(|t| (now - t).to_std().unwrap_or_default() > self.settings.stale_after);
        let mut samples = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            samples.push((i, self.sample(kpis, rule, now).await));
        }
        self.advance(kpis.catalog(), samples, stale, hub, now)
    }

    /// A rule's counts in each of its scopes.
    async fn sample(&self, kpis: &KpiEngine, rule: &AlertRule, now: DateTime<Utc>) -> Measured {
        let Some((idx, _)) = kpis.catalog().get(&rule.kpi) else { return Ok(HashMap::new()) };
        // Month to date (the default window) and today come from the running totals,
        // the very numbers the wall displays show; rolling windows are counted.
        let live = match rule.window {
            Window::Mtd => Some(LivePeriod::Mtd),
            Window::Today => Some(LivePeriod::Today),
            Window::Rolling(_) => None,
        };
        if let Some(period) = live
            && let Some(totals) = kpis.period_totals(period, idx, now)
        {
            return Ok(totals
                .into_iter()
                .map(|(scope, c)| (scope.map_or(Scope::National, |p| Scope::Province(p.to_string())), c))
                .collect());
        }
        let (from, to) = rule.window.period(now);
        let scopes = rule.scopes(self.provinces.iter().map(String::as_str));
        measure(kpis, &rule.kpi, Period { from, to }, &scopes, now).await
    }

    /// Steps every (rule, scope) with its sample. The new states, the history and the
    /// notifications go together: the changes are persisted first, and only once
    /// they are on disk do the new states replace the old ones in memory and go to
    /// websockets and the webhook. If persisting fails, nothing changes (the next
    /// evaluation finds the same transitions again), so a firing is never notified
    /// that a restart would forget, nor lost from the history.
    fn advance(
        &self,
        catalog: &Catalog,
        samples: Vec<(usize, Measured)>,
        stale: bool,
        hub: &Hub,
        now: DateTime<Utc>,
    ) -> usize {
        let mut failed = 0;
        let mut changes = Vec::new();
        let mut notify = Vec::new();
        let mut next_states: Vec<((String, Scope), RuleState)> = Vec::new();
        {
            let states = self.states.lock().expect("alert lock");
            for (i, counts) in samples {
                let rule = &self.rules[i];
                let Some((_, def)) = catalog.get(&rule.kpi) else { continue };
                let counts = match counts {
                    Ok(c) => c,
                    Err(e) => {
                        failed += 1;
                        warn!(rule = %rule.name, error = %e, "could not measure an alert rule's KPI; its state is kept");
                        self.metrics.evaluation_failures.with_label_values(&[rule.name.as_str()]).inc();
                        continue;
                    }
                };
                for scope in rule.scopes(self.provinces.iter().map(String::as_str)) {
                    let count = counts.get(&scope).copied().unwrap_or_default();
                    let sample = Sample { stale, ..Sample::ratio(count.numerator, count.denominator) };
                    let threshold = rule.threshold_for(def, &scope, now);
                    let key = (rule.name.clone(), scope.clone());
                    let prev = states.get(&key).cloned().unwrap_or_else(|| RuleState::new(now));
                    let (next, actions) = step(rule, threshold, &prev, &sample, now);
                    let scope_label = scope.to_string();
                    if let Some(v) = sample.value {
                        self.metrics.kpi_value.with_label_values(&[rule.kpi.as_str(), &scope_label]).set(v);
                    }
                    self.metrics.kpi_target.with_label_values(&[rule.kpi.as_str(), &scope_label]).set(threshold.value);
                    for action in &actions {
                        if let Action::Transition { from, to } = action {
                            changes.push(Change {
                                at: now,
                                rule: rule.name.clone(),
                                kpi: rule.kpi.clone(),
                                scope: scope.clone(),
                                from: *from,
                                to: *to,
                                value: sample.value,
                                threshold: threshold.value,
                            });
                        }
                        if let Some(alert) = WebhookAlert::from_action(rule, &scope, threshold, action) {
                            notify.push(alertmanager_webhook(&alert, "ioc", self.external_url()));
                        }
                    }
                    next_states.push((key, next));
                }
            }
        }
        if !changes.is_empty() {
            // Persist first: a notification must never be sent for a state that a
            // restart would not remember.
            if let Err(e) = self.persist(&changes, &next_states) {
                error!(error = %e, changes = changes.len(), "could not persist alert changes; they are retried at the next evaluation and nothing is notified");
                self.metrics.persist_failures.inc();
                return failed;
            }
        }
        {
            let mut states = self.states.lock().expect("alert lock");
            for ((rule, scope), next) in next_states {
                self.metrics
                    .alert_state
                    .with_label_values(&[rule.as_str(), &scope.to_string()])
                    .set(state_code(next.state));
                states.insert((rule, scope), next);
            }
        }
        let mut recent = self.recent.lock().expect("alert lock");
        for c in &changes {
            recent.push_front(c.clone());
        }
        recent.truncate(RECENT);
        drop(recent);
        for c in &changes {
            info!(rule = %c.rule, scope = %c.scope, from = ?c.from, to = ?c.to, value = ?c.value, "alert state changed");
            hub.publish_alert(self.alert_json(&c.rule, &c.scope));
        }
        for payload in notify {
            self.send(payload);
        }
        failed
    }

    fn external_url(&self) -> &str {
        self.settings.external_url.as_deref().unwrap_or("")
    }

    fn send(&self, payload: Value) {
        let Some(tx) = &self.webhook else { return };
        if tx.try_send(payload).is_err() {
            warn!("the alert webhook queue is full; a notification was dropped");
            self.metrics.notifications.with_label_values(&["dropped"]).inc();
        }
    }

    /// Appends the changes to the history and writes every state, with `next`
    /// replacing the current ones, durably.
    fn persist(&self, changes: &[Change], next: &[((String, Scope), RuleState)]) -> std::io::Result<()> {
        let history = self.dir.join("history.jsonl");
        let mut f = OpenOptions::new().create(true).append(true).open(&history)?;
        let mut lines = Vec::new();
        for c in changes {
            serde_json::to_writer(&mut lines, c).map_err(std::io::Error::other)?;
            lines.push(b'\n');
        }
        f.write_all(&lines)?;
        f.sync_data()?;

        let mut all = self.states.lock().expect("alert lock").clone();
        all.extend(next.iter().cloned());
        let states: Vec<Persisted> =
            all.into_iter().map(|((rule, scope), state)| Persisted { rule, scope, state }).collect();
        // Several instances may share a data directory: never share a temporary file.
        let tmp = self.dir.join(format!(".state.json.{}.tmp", std::process::id()));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&states).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join("state.json"))?;
        File::open(&self.dir)?.sync_all()
    }

    /// An alert as the API and the websocket show it.
    pub fn alert_json(&self, rule_name: &str, scope: &Scope) -> Value {
        let states = self.states.lock().expect("alert lock");
        let st = states.get(&(rule_name.to_string(), scope.clone()));
        let rule = self.rules.iter().find(|r| r.name == rule_name);
        instance_json(rule, scope, st)
    }

    /// `GET /api/v1/alerts`: pending and firing alerts, and the latest changes, newest
    /// first; only `province` when given.
    pub fn alerts(&self, province: Option<&str>) -> Value {
        let visible = |s: &Scope| province.is_none() || s.province() == province;
        let states = self.states.lock().expect("alert lock");
        let active: Vec<Value> = states
            .iter()
            .filter(|((_, scope), st)| visible(scope) && matches!(st.state, AlertState::Pending | AlertState::Firing))
            .map(|((rule, scope), st)| instance_json(self.rules.iter().find(|r| &r.name == rule), scope, Some(st)))
            .collect();
        let recent: Vec<Value> = self
            .recent
            .lock()
            .expect("alert lock")
            .iter()
            .filter(|c| visible(&c.scope))
            .take(100)
            .map(|c| serde_json::to_value(c).expect("change serialises"))
            .collect();
        json!({"active": active, "recent": recent})
    }

    /// `GET /api/v1/alert-rules`: each rule with the current state of its scopes.
    pub fn rules_json(&self, province: Option<&str>) -> Value {
        let states = self.states.lock().expect("alert lock");
        let rules: Vec<Value> = self
            .rules
            .iter()
            .map(|rule| {
                let mut v = serde_json::to_value(rule).expect("rule serialises");
                let instances: Vec<Value> = rule
                    .scopes(self.provinces.iter().map(String::as_str))
                    .into_iter()
                    .filter(|s| province.is_none() || s.province() == province)
                    .map(|s| {
                        let st = states.get(&(rule.name.clone(), s.clone()));
                        instance_json(Some(rule), &s, st)
                    })
                    .collect();
                v["instances"] = json!(instances);
                v
            })
            .collect();
        json!(rules)
    }

    /// Evaluates every `eval_interval` until `stop` turns true.
    pub async fn run(self: Arc<Self>, kpis: Arc<KpiEngine>, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.eval_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            }
            self.evaluate(&kpis, &hub, Utc::now()).await;
        }
    }
}

fn instance_json(rule: Option<&AlertRule>, scope: &Scope, st: Option<&RuleState>) -> Value {
    json!({
        "rule": rule.map(|r| r.name.as_str()),
        "kpi": rule.map(|r| r.kpi.as_str()),
        "severity": rule.map(|r| r.severity),
        "window": rule.map(|r| r.window.to_string()),
        "scope": scope,
        "state": st.map_or(AlertState::Ok, |s| s.state),
        "since": st.map(|s| s.since.to_rfc3339()),
        "firing_since": st.and_then(|s| s.firing_since).map(|t| t.to_rfc3339()),
        "value": st.and_then(|s| s.last_value),
    })
}

/// A KPI's counts over a period in each scope: one query for the nation, one grouped
/// by province for all the province scopes.
async fn measure(
    kpis: &KpiEngine,
    kpi: &str,
    period: Period,
    scopes: &[Scope],
    now: DateTime<Utc>,
) -> Result<HashMap<Scope, Count>, KpiError> {
    let mut out = HashMap::new();
    let query = |group_by: Vec<Dim>| SeriesQuery { period, bucket: None, group_by, filter: DimFilter::default() };
    if scopes.contains(&Scope::National) {
        let (_, rows) = kpis.series(kpi, &query(vec![]), now).await?;
        out.insert(
            Scope::National,
            rows.iter().fold(Count::default(), |mut a, r| {
                a += r.count;
                a
            }),
        );
    }
    if scopes.iter().any(|s| s.province().is_some()) {
        let (_, rows) = kpis.series(kpi, &query(vec![Dim::ProvinceCode]), now).await?;
        for r in rows {
            if let Some(Some(p)) = r.dims.first() {
                *out.entry(Scope::Province(p.to_string())).or_default() += r.count;
            }
        }
    }
    Ok(out)
}

fn load_states(path: &Path) -> Result<BTreeMap<(String, Scope), RuleState>, AlertError> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => return Err(AlertError::Store { path: path.to_path_buf(), source }),
    };
    let list: Vec<Persisted> = serde_json::from_slice(&text).map_err(|e| AlertError::Store {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    Ok(list.into_iter().map(|p| ((p.rule, p.scope), p.state)).collect())
}

/// The newest history entries, newest first. A torn last line (a crash mid-append) is
/// skipped.
fn load_recent(path: &Path) -> Result<VecDeque<Change>, AlertError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(VecDeque::new()),
        Err(source) => return Err(AlertError::Store { path: path.to_path_buf(), source }),
    };
    let mut recent = VecDeque::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|source| AlertError::Store { path: path.to_path_buf(), source })?;
        if let Ok(c) = serde_json::from_str::<Change>(&line) {
            recent.push_front(c);
            recent.truncate(RECENT);
        }
    }
    Ok(recent)
}

/// Posts notifications to the webhook in order, retrying each with back-off.
async fn deliver(url: String, mut rx: mpsc::Receiver<Value>, counter: IntCounterVec, mut stop: watch::Receiver<bool>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("HTTP client");
    while let Some(payload) = rx.recv().await {
        let mut backoff = Duration::from_millis(500);
        let mut delivered = false;
        for attempt in 1..=6 {
            match client.post(&url).json(&payload).send().await {
                Ok(r) if r.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(r) => warn!(status = %r.status(), attempt, "the alert webhook refused a notification"),
                // Without the URL: it may carry credentials.
                Err(e) => warn!(error = %e.without_url(), attempt, "could not reach the alert webhook"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        counter.with_label_values(&[if delivered { "sent" } else { "failed" }]).inc();
    }
}

/// `GET /api/v1/alerts`.
pub async fn list(
    axum::extract::State(state): axum::extract::State<crate::app::AppState>,
    axum::extract::Extension(who): axum::extract::Extension<crate::auth::Principal>,
) -> axum::Json<Value> {
    axum::Json(state.alerts.alerts(who.province.as_deref()))
}

/// `GET /api/v1/alert-rules`.
pub async fn rules(
    axum::extract::State(state): axum::extract::State<crate::app::AppState>,
    axum::extract::Extension(who): axum::extract::Extension<crate::auth::Principal>,
) -> axum::Json<Value> {
    axum::Json(state.alerts.rules_json(who.province.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Push;

    const RULES: &str = r#"
[[rule]]
name = "edoc"
kpi = "edoc_rate"
for = "0s"

[[rule]]
name = "on_time"
kpi = "on_time_rate"
for = "0s"
"#;

    fn engine(dir: &Path) -> AlertEngine {
        let rules = dir.join("rules.toml");
        fs::write(&rules, RULES).unwrap();
        let settings = AlertSettings {
            rules: Some(rules),
            webhook_url: None,
            eval_interval: Duration::from_secs(15),
            stale_after: Duration::from_secs(3600),
            external_url: None,
        };
        AlertEngine::open(&settings, &Catalog::builtin(), &AdminUnits::builtin(), dir, &Registry::new()).unwrap()
    }

    /// One sample per rule: `edoc` as given, `on_time` at 1 of 10 (far below target).
    fn samples(edoc: Measured) -> Vec<(usize, Measured)> {
        vec![(0, edoc), (1, Ok(HashMap::from([(Scope::National, Count::new(1, 10))])))]
    }

    fn pushed(rx: &mut tokio::sync::broadcast::Receiver<Push>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(p) = rx.try_recv() {
            if let Push::Alert(a) = p {
                out.push((*a).clone());
            }
        }
        out
    }

    fn history(dir: &Path) -> Vec<Change> {
        let text = fs::read_to_string(dir.join("alerts/history.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn one_rule_that_cannot_be_measured_does_not_stop_another_rules_transition() {
        let dir = tempfile::tempdir().unwrap();
        let alerts = engine(dir.path());
        let hub = Hub::new(16);
        let mut rx = hub.subscribe();
        let now = Utc::now();
        let failed = alerts.advance(&Catalog::builtin(), samples(Err(KpiError::BackfillContention)), false, &hub, now);
        assert_eq!(failed, 1);
        // `on_time` fired: recorded, in memory, pushed.
        let h = history(dir.path());
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!((h[0].rule.as_str(), h[0].to), ("on_time", AlertState::Firing));
        let pushed = pushed(&mut rx);
        assert_eq!(pushed.len(), 1, "{pushed:?}");
        assert_eq!((pushed[0]["rule"].as_str(), pushed[0]["state"].as_str()), (Some("on_time"), Some("firing")));
        assert_eq!(alerts.alerts(None)["active"].as_array().unwrap().len(), 1);
        // `edoc` kept its (initial) state and gets measured again next time.
        let rules = alerts.rules_json(None);
        assert_eq!(rules[0]["instances"][0]["state"], "ok", "{rules}");
        assert_eq!(alerts.metrics.evaluation_failures.with_label_values(&["edoc"]).get(), 1);
    }

    #[test]
    fn a_change_that_cannot_be_persisted_is_neither_notified_nor_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let alerts = engine(dir.path());
        let hub = Hub::new(16);
        let mut rx = hub.subscribe();
        // The history cannot be appended to: a directory stands where the file goes.
        let blocker = dir.path().join("alerts/history.jsonl");
        fs::create_dir_all(&blocker).unwrap();
        let now = Utc::now();
        let edoc = || Ok(HashMap::from([(Scope::National, Count::new(100, 100))]));
        assert_eq!(alerts.advance(&Catalog::builtin(), samples(edoc()), false, &hub, now), 0);
        assert!(pushed(&mut rx).is_empty(), "nothing is notified that is not on disk");
        assert!(alerts.alerts(None)["active"].as_array().unwrap().is_empty(), "the old state is kept");
        assert!(alerts.alerts(None)["recent"].as_array().unwrap().is_empty());
        assert_eq!(alerts.metrics.persist_failures.get(), 1);

        // Once the disk takes writes again, the same transition is found and recorded.
        fs::remove_dir(&blocker).unwrap();
        let later = now + chrono::Duration::seconds(15);
        alerts.advance(&Catalog::builtin(), samples(edoc()), false, &hub, later);
        let h = history(dir.path());
        assert_eq!(h.iter().map(|c| (c.rule.as_str(), c.to)).collect::<Vec<_>>(), [("on_time", AlertState::Firing)]);
        assert_eq!(pushed(&mut rx).len(), 1);
        // And a restart remembers it.
        let reopened = engine(dir.path());
        assert_eq!(reopened.alerts(None)["active"][0]["rule"], "on_time");
    }
}
