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
use ioc_core::{AdminUnits, Catalog};
use ioc_query::{KpiEngine, KpiError, Period, SeriesQuery};
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

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
        };
        registry.register(Box::new(m.kpi_value.clone()))?;
        registry.register(Box::new(m.kpi_target.clone()))?;
        registry.register(Box::new(m.alert_state.clone()))?;
        registry.register(Box::new(m.notifications.clone()))?;
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

    /// One evaluation of every rule at `now`.
    pub async fn evaluate(&self, kpis: &KpiEngine, hub: &Hub, now: DateTime<Utc>) -> Result<(), KpiError> {
        let stale = kpis.as_of().is_none_or(|t| (now - t).to_std().unwrap_or_default() > self.settings.stale_after);
        let mut changes = Vec::new();
        let mut notify = Vec::new();
        for rule in &self.rules {
            let Some((idx, def)) = kpis.catalog().get(&rule.kpi) else { continue };
            let scopes = rule.scopes(self.provinces.iter().map(String::as_str));
            // Month to date (the default window) comes from the running month totals,
            // the very numbers the wall displays show; other windows are counted.
            let month = (rule.window == Window::Mtd).then(|| kpis.month_totals(idx, now)).flatten();
            let counts = match month {
                Some(totals) => totals
                    .into_iter()
                    .map(|(scope, c)| (scope.map_or(Scope::National, |p| Scope::Province(p.to_string())), c))
                    .collect(),
                None => {
                    let (from, to) = rule.window.period(now);
                    measure(kpis, &rule.kpi, Period { from, to }, &scopes, now).await?
                }
            };
            let mut states = self.states.lock().expect("alert lock");
            for scope in scopes {
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
                self.metrics
                    .alert_state
                    .with_label_values(&[rule.name.as_str(), &scope_label])
                    .set(state_code(next.state));
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
                states.insert(key, next);
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        // Persist first: a notification must never be sent for a state that a restart
        // would not remember.
        if let Err(e) = self.persist(&changes) {
            warn!(error = %e, "could not persist alert states; they are kept in memory");
        }
        for c in &changes {
            info!(rule = %c.rule, scope = %c.scope, from = ?c.from, to = ?c.to, value = ?c.value, "alert state changed");
            hub.publish_alert(self.alert_json(&c.rule, &c.scope));
        }
        for payload in notify {
            self.send(payload);
        }
        Ok(())
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

    fn persist(&self, changes: &[Change]) -> std::io::Result<()> {
        let history = self.dir.join("history.jsonl");
        let mut f = OpenOptions::new().create(true).append(true).open(&history)?;
        for c in changes {
            let mut line = serde_json::to_vec(c).expect("change serialises");
            line.push(b'\n');
            f.write_all(&line)?;
        }
        f.sync_data()?;
        let mut recent = self.recent.lock().expect("alert lock");
        for c in changes {
            recent.push_front(c.clone());
        }
        recent.truncate(RECENT);
        drop(recent);

        let states: Vec<Persisted> = self
            .states
            .lock()
            .expect("alert lock")
            .iter()
            .map(|((rule, scope), state)| Persisted { rule: rule.clone(), scope: scope.clone(), state: state.clone() })
            .collect();
        // Several instances may share a data directory: never share a temporary file.
        let tmp = self.dir.join(format!(".state.json.{}.tmp", std::process::id()));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&states).expect("states serialise"))?;
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
            if let Err(e) = self.evaluate(&kpis, &hub, Utc::now()).await {
                warn!(error = %e, "alert evaluation failed");
            }
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
