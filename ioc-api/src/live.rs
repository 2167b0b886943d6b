//! The live hub: KPI changes are computed once, every 250 ms, and shared by every
//! websocket connection (`broadcast`); alert state changes are shared the same way.
//!
//! The values are those of `GET /api/v1/kpis` for its default period, the current
//! month in Vietnam time, nationally and per province. They come from running totals
//! that the KPI engine keeps as commits arrive, so a tick costs what changed, not a
//! scan of the month. A late event in a past hour of the month changes the totals of
//! the scopes it touches, and the corrected values are pushed like any other change.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ioc_core::catalog::KpiKind;
use ioc_core::counters::ScopeKey;
use ioc_query::KpiEngine;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

/// How often changes are gathered and pushed: at most one message per KPI and scope
/// per tick.
pub const TICK: Duration = Duration::from_millis(250);

/// One KPI value for one scope.
#[derive(Debug, Clone, PartialEq)]
pub struct KpiUpdate {
    pub id: Arc<str>,
    pub scope: ScopeKey,
    pub value: Option<f64>,
    pub numerator: u64,
    /// `None` for gauges.
    pub denominator: Option<u64>,
    /// The commit time of the newest data the value covers (for gauges: when counted).
    pub as_of: DateTime<Utc>,
    /// The message after its `seq`, serialised once for every connection.
    tail: Arc<str>,
}

impl KpiUpdate {
    pub fn new(
        id: Arc<str>,
        scope: ScopeKey,
        value: Option<f64>,
        numerator: u64,
        denominator: Option<u64>,
        as_of: DateTime<Utc>,
    ) -> Self {
        let body = json!({
            "id": id,
            "scope": scope_json(&scope),
            "value": value,
            "numerator": numerator,
            "denominator": denominator,
            "as_of": as_of.to_rfc3339(),
        })
        .to_string();
        // `{"id":...}` without its opening brace.
        let tail = body[1..].into();
        Self { id, scope, value, numerator, denominator, as_of, tail }
    }

    pub fn key(&self) -> UpdateKey {
        (self.id.clone(), self.scope.clone())
    }

    /// The websocket message with its `seq`.
    pub fn message(&self, seq: u64) -> String {
        format!("{{\"type\":\"kpi\",\"seq\":{seq},{}", self.tail)
    }
}

/// `{}` for national, `{"province_code": "01"}` for a province.
pub fn scope_json(scope: &ScopeKey) -> Value {
    match scope {
        None => json!({}),
        Some(p) => json!({ "province_code": p }),
    }
}

/// A KPI and a scope: what a value is kept and coalesced by.
pub type UpdateKey = (Arc<str>, ScopeKey);

/// What the hub fans out.
#[derive(Debug, Clone)]
pub enum Push {
    /// Every value that changed in one tick.
    Tick(Arc<Tick>),
    /// An alert state change, as `GET /api/v1/alerts` shows it.
    Alert(Arc<Value>),
}

/// The changes of one tick, indexed by scope, so that a connection looks only at the
/// scopes it watches (a provincial display at 15 values, not 525).
#[derive(Debug, Default)]
pub struct Tick {
    pub national: Vec<Arc<KpiUpdate>>,
    pub provinces: HashMap<Arc<str>, Vec<Arc<KpiUpdate>>>,
}

impl Tick {
    fn push(&mut self, u: Arc<KpiUpdate>) {
        match &u.scope {
            None => self.national.push(u),
            Some(p) => self.provinces.entry(p.clone()).or_default().push(u),
        }
    }

    fn is_empty(&self) -> bool {
        self.national.is_empty() && self.provinces.is_empty()
    }
}

/// The hub; cheap to share.
pub struct Hub {
    tx: broadcast::Sender<Push>,
    latest: RwLock<HashMap<UpdateKey, Arc<KpiUpdate>>>,
}

impl Hub {
    /// `capacity` bounds what a slow receiver can lag behind before it must catch up
    /// from [`Hub::latest`].
    pub fn new(capacity: usize) -> Self {
        Self { tx: broadcast::channel(capacity).0, latest: RwLock::new(HashMap::new()) }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Push> {
        self.tx.subscribe()
    }

    /// The newest value of every KPI and scope, for a receiver that lagged behind.
    pub fn latest(&self) -> Vec<Arc<KpiUpdate>> {
        self.latest.read().expect("hub lock").values().cloned().collect()
    }

    fn publish(&self, tick: &mut Tick, update: KpiUpdate) {
        let update = Arc::new(update);
        self.latest.write().expect("hub lock").insert(update.key(), update.clone());
        tick.push(update);
    }

    pub fn publish_alert(&self, alert: Value) {
        let _ = self.tx.send(Push::Alert(Arc::new(alert)));
    }

    /// Gathers what changed since the last call and pushes it. With `gauges`, gauges
    /// are recounted too (they move with time, not only with data) and pushed when
    /// they differ.
    pub fn tick(&self, kpis: &KpiEngine, now: DateTime<Utc>, gauges: bool) {
        let catalog = kpis.catalog();
        let as_of = kpis.as_of().unwrap_or(now);
        let (_, changed) = kpis.take_month_changes(now);
        let mut tick = Tick::default();
        for (idx, scope, count) in changed {
            let def = &catalog.kpis()[idx];
            self.publish(
                &mut tick,
                KpiUpdate::new(
                    def.id.as_str().into(),
                    scope,
                    count.ratio(),
                    count.numerator,
                    Some(count.denominator),
                    as_of,
                ),
            );
        }
        for def in catalog.kpis().iter().filter(|d| gauges && matches!(d.kind, KpiKind::Gauge(_))) {
            let id: Arc<str> = def.id.as_str().into();
            let now_counts: HashMap<ScopeKey, u64> = kpis.overdue_by_scope(now).into_iter().collect();
            let before: Vec<(ScopeKey, u64)> = {
                let latest = self.latest.read().expect("hub lock");
                latest.values().filter(|u| u.id == id).map(|u| (u.scope.clone(), u.numerator)).collect()
            };
            // Scopes that were counted before and have no overdue dossier now go to 0.
            let mut scopes: Vec<(ScopeKey, u64)> = now_counts.clone().into_iter().collect();
            for (scope, _) in &before {
                if !now_counts.contains_key(scope) {
                    scopes.push((scope.clone(), 0));
                }
            }
            for (scope, n) in scopes {
                if before.iter().any(|(s, m)| *s == scope && *m == n) {
                    continue;
                }
                self.publish(&mut tick, KpiUpdate::new(id.clone(), scope, Some(n as f64), n, None, now));
            }
        }
        if !tick.is_empty() {
            // No receivers is fine: nobody is watching.
            let _ = self.tx.send(Push::Tick(Arc::new(tick)));
        }
    }

    /// Ticks until `stop` turns true.
    pub async fn run(self: Arc<Self>, kpis: Arc<KpiEngine>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u64;
        loop {
            n += 1;
            // Gauges once a second: counting them walks every open dossier.
            let gauges = n % 4 == 1;
            tokio::select! {
                _ = tick.tick() => {}
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            }
            let (hub, kpis) = (self.clone(), kpis.clone());
            // Counting takes locks shared with the writer thread: keep it off the
            // async workers.
            if tokio::task::spawn_blocking(move || hub.tick(&kpis, Utc::now(), gauges)).await.is_err() {
                tracing::error!("the live hub's tick panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kpi_message_is_the_contracts_json_with_the_connections_seq() {
        let at: DateTime<Utc> = "2026-11-23T01:02:03Z".parse().unwrap();
        let u = KpiUpdate::new("edoc_rate".into(), Some("01".into()), Some(0.5), 1, Some(2), at);
        let m: Value = serde_json::from_str(&u.message(7)).unwrap();
        assert_eq!(
            m,
            json!({"type": "kpi", "seq": 7, "id": "edoc_rate", "scope": {"province_code": "01"}, "value": 0.5,
                   "numerator": 1, "denominator": 2, "as_of": "2026-11-23T01:02:03+00:00"})
        );
        let g = KpiUpdate::new("overdue_open".into(), None, Some(3.0), 3, None, at);
        let m: Value = serde_json::from_str(&g.message(1)).unwrap();
        assert_eq!((m["scope"].clone(), m["denominator"].clone()), (json!({}), Value::Null));
    }
}
