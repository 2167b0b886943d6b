//! The live hub: KPI changes are computed once, every 250 ms, and shared by every
//! websocket connection (`broadcast`); alert state changes are shared the same way.
//!
//! The values are those of `GET /api/v1/kpis` over the live periods of CONTRACT.md
//! §7.3, today, the month and the year to date in Vietnam time, nationally and per
//! province. They come from running totals that the KPI engine keeps as commits
//! arrive, so a tick costs what changed, not a scan of the period. A late event in a
//! past hour of a period changes the totals of the scopes it touches, and the
//! corrected values are pushed like any other change.
//!
//! When a period rolls over (Vietnam midnight, a new month, a new year), the hub
//! replaces that period's values with the new period's totals, and only then tells
//! the connections (`Push::Rollover`), which answer with a fresh snapshot: no value of
//! the old period is ever shown as the new one's. The `overdue_open` gauge is "now"
//! in every period.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ioc_core::catalog::KpiKind;
use ioc_core::counters::ScopeKey;
use ioc_core::index::{IndexDef, IndexScore, rank};
use ioc_core::time::LivePeriod;
use ioc_query::index::IndexRow;
use ioc_query::{KpiEngine, Period};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::throughput::ThroughputUpdate;

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
    /// Every value that changed in one tick, for one live period or for the gauges.
    Tick(Arc<Tick>),
    /// A live period rolled over: the hub's values of it are the new period's now.
    Rollover(LivePeriod, Period),
    /// An alert state change, as `GET /api/v1/alerts` shows it.
    Alert(Arc<Value>),
    /// Rows of the service index that changed in a live period (their score or rank).
    Index(LivePeriod, Period, Arc<Vec<Arc<IndexUpdate>>>),
    /// Events per minute by source family changed (`crate::throughput`).
    Throughput(Arc<ThroughputUpdate>),
}

/// One row of the service index in a live period, as `GET /api/v1/index` shows it,
/// serialised once for every connection.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexUpdate {
    /// `None`: the national row.
    pub scope: ScopeKey,
    pub row: Value,
    /// The message after its `seq`.
    tail: Arc<str>,
}

impl IndexUpdate {
    fn new(def: &IndexDef, row: &IndexRow) -> Self {
        let json = crate::index::row_json(def, row);
        let text = json.to_string();
        let tail = if text.len() > 2 { text[1..].into() } else { "}".into() };
        Self { scope: row.province.as_deref().map(Into::into), row: json, tail }
    }

    /// The websocket message with its `seq`.
    pub fn message(&self, seq: u64) -> String {
        format!("{{\"type\":\"index\",\"seq\":{seq},{}", self.tail)
    }
}

/// The service index rows of a period's values: the nation, and every province that
/// has data, ranked best first; the same sums as the KPIs, so the same numbers as
/// `GET /api/v1/index` over the period.
fn index_rows(def: &IndexDef, values: &HashMap<UpdateKey, Arc<KpiUpdate>>) -> HashMap<ScopeKey, Arc<IndexUpdate>> {
    let kpis: Vec<Arc<str>> = def.kpis().into_iter().map(Arc::from).collect();
    let value_in = |scope: &ScopeKey| {
        let found: HashMap<&str, Option<f64>> =
            kpis.iter().map(|k| (k.as_ref(), values.get(&(k.clone(), scope.clone())).and_then(|u| u.value))).collect();
        move |k: &str| found.get(k).copied().flatten()
    };
    let mut provinces: Vec<Arc<str>> = values.keys().filter_map(|(_, s)| s.clone()).collect();
    provinces.sort();
    provinces.dedup();
    let scored: Vec<(Arc<str>, IndexScore)> = provinces
        .into_iter()
        .map(|p| {
            let score = def.score(value_in(&Some(p.clone())));
            (p, score)
        })
        .filter(|(_, s)| s.measured_max > 0.0)
        .collect();
    let national = IndexRow { province: None, rank: None, score: def.score(value_in(&None)) };
    std::iter::once(national)
        .chain(rank(scored).into_iter().map(|(r, p, score)| IndexRow {
            province: Some(p.to_string()),
            rank: Some(r),
            score,
        }))
        .map(|row| {
            let u = Arc::new(IndexUpdate::new(def, &row));
            (u.scope.clone(), u)
        })
        .collect()
}

/// The changes of one tick, indexed by scope, so that a connection looks only at the
/// scopes it watches (a provincial display at 15 values, not 525).
#[derive(Debug, Default)]
pub struct Tick {
    /// The live period and its range the values are over; `None` for gauges, which
    /// are the same in every period.
    pub period: Option<(LivePeriod, Period)>,
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

/// The newest values of one live period, and which period they are of.
#[derive(Debug, Default)]
struct PeriodValues {
    period: Option<Period>,
    values: HashMap<UpdateKey, Arc<KpiUpdate>>,
}

/// The hub; cheap to share.
pub struct Hub {
    tx: broadcast::Sender<Push>,
    /// By [`LivePeriod::index`].
    periods: [RwLock<PeriodValues>; 3],
    gauges: RwLock<HashMap<UpdateKey, Arc<KpiUpdate>>>,
    /// The service index rows of each period's values, by [`LivePeriod::index`].
    index: [RwLock<HashMap<ScopeKey, Arc<IndexUpdate>>>; 3],
    /// The throughput last pushed.
    throughput: RwLock<Option<Arc<ThroughputUpdate>>>,
}

impl Hub {
    /// `capacity` bounds what a slow receiver can lag behind before it must catch up
    /// from [`Hub::latest`].
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity).0,
            periods: Default::default(),
            gauges: RwLock::default(),
            index: Default::default(),
            throughput: RwLock::default(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Push> {
        self.tx.subscribe()
    }

    /// The newest value of every KPI and scope in a live period, gauges included, and
    /// the period they are of (`None` before the first tick).
    pub fn latest(&self, period: LivePeriod) -> (Option<Period>, Vec<Arc<KpiUpdate>>) {
        let p = self.periods[period.index()].read().expect("hub lock");
        let gauges = self.gauges.read().expect("hub lock");
        (p.period, p.values.values().chain(gauges.values()).cloned().collect())
    }

    /// The service index rows of a live period's values (national first is not
    /// guaranteed: callers order them).
    pub fn latest_index(&self, period: LivePeriod) -> Vec<Arc<IndexUpdate>> {
        self.index[period.index()].read().expect("hub lock").values().cloned().collect()
    }

    /// The throughput last pushed (`None` before the first).
    pub fn latest_throughput(&self) -> Option<Arc<ThroughputUpdate>> {
        self.throughput.read().expect("hub lock").clone()
    }

    /// Pushes the throughput when what it shows differs from the last pushed; returns
    /// whether it did.
    pub fn publish_throughput(&self, update: ThroughputUpdate) -> bool {
        let mut latest = self.throughput.write().expect("hub lock");
        if latest.as_ref().is_some_and(|l| !l.differs(&update)) {
            return false;
        }
        let update = Arc::new(update);
        *latest = Some(update.clone());
        let _ = self.tx.send(Push::Throughput(update));
        true
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
        for period in LivePeriod::ALL {
            let changes = kpis.take_changes(period, now);
            let mut tick = Tick { period: Some((period, changes.period)), ..Tick::default() };
            {
                let mut values = self.periods[period.index()].write().expect("hub lock");
                if changes.rolled {
                    *values = PeriodValues { period: Some(changes.period), values: HashMap::new() };
                }
                for (idx, scope, count) in changes.changed {
                    let def = &catalog.kpis()[idx];
                    let u = Arc::new(KpiUpdate::new(
                        def.id.as_str().into(),
                        scope,
                        count.ratio(),
                        count.numerator,
                        Some(count.denominator),
                        as_of,
                    ));
                    values.values.insert(u.key(), u.clone());
                    tick.push(u);
                }
            }
            // The index moves with the values it reads: recomputed (35 rows of a few
            // dozen indicators) when they changed; only rows whose numbers or rank
            // changed are pushed.
            let mut index_changes = Vec::new();
            if let Some(def) = catalog.index()
                && (changes.rolled || !tick.is_empty())
            {
                let rows = index_rows(def, &self.periods[period.index()].read().expect("hub lock").values);
                let mut latest = self.index[period.index()].write().expect("hub lock");
                index_changes = rows.values().filter(|u| latest.get(&u.scope) != Some(*u)).cloned().collect();
                // A scope no longer ranked (it cannot happen without a rollover) is
                // dropped with the rest.
                *latest = rows;
            }
            // No receivers is fine: nobody is watching. A rollover is announced only
            // once the new period's values are in place; its snapshot carries them.
            if changes.rolled {
                let _ = self.tx.send(Push::Rollover(period, changes.period));
            } else {
                if !tick.is_empty() {
                    let _ = self.tx.send(Push::Tick(Arc::new(tick)));
                }
                if !index_changes.is_empty() {
                    let _ = self.tx.send(Push::Index(period, changes.period, Arc::new(index_changes)));
                }
            }
        }
        if gauges {
            self.tick_gauges(kpis, now);
        }
    }

    /// Recounts the gauges and pushes those that changed.
    fn tick_gauges(&self, kpis: &KpiEngine, now: DateTime<Utc>) {
        let mut tick = Tick::default();
        for def in kpis.catalog().kpis().iter().filter(|d| matches!(d.kind, KpiKind::Gauge(_))) {
            let id: Arc<str> = def.id.as_str().into();
            let now_counts: HashMap<ScopeKey, u64> = kpis.overdue_by_scope(now).into_iter().collect();
            let mut latest = self.gauges.write().expect("hub lock");
            let before: Vec<(ScopeKey, u64)> =
                latest.values().filter(|u| u.id == id).map(|u| (u.scope.clone(), u.numerator)).collect();
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
                let u = Arc::new(KpiUpdate::new(id.clone(), scope, Some(n as f64), n, None, now));
                latest.insert(u.key(), u.clone());
                tick.push(u);
            }
        }
        if !tick.is_empty() {
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
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use ioc_core::{AdminUnits, Catalog};
    use ioc_ingest::pipeline::{self, PipelineConfig};
    use ioc_ingest::{IngestMetrics, Origin, Record};
    use ioc_storage::Store;

    pub(crate) fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    /// `n` periodic reports at `at`, `on_system` of them on the reporting system.
    pub(crate) fn reports(tag: &str, n: usize, on_system: usize, at: &str) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let e = json!({"event_id": format!("{tag}-{i}"), "type": "report.submitted", "occurred_at": at,
                    "source": "bc-hanoi", "agency_code": "000.00.00.H01", "level": "province", "province_code": "01",
                    "report_id": format!("{tag}-{i}"), "via_system": i < on_system});
                Record::new(e.to_string().into_bytes(), Origin::Simulator)
            })
            .collect()
    }

    /// A KPI engine over a fresh store holding `records`.
    fn engine_with(records: Vec<Record>) -> (tempfile::TempDir, Arc<KpiEngine>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "t").unwrap();
        let units = Arc::new(AdminUnits::builtin());
        let kpis = Arc::new(KpiEngine::new(Arc::new(Catalog::builtin()), store.clone(), &units).unwrap());
        let (ingestor, writer) = pipeline::start(
            store.clone(),
            &store.snapshot(),
            units,
            Some(kpis.clone()),
            vec![kpis.clone()],
            IngestMetrics::unregistered(),
            PipelineConfig::default(),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out = rt.block_on(ingestor.submit(records, BTreeMap::new())).unwrap();
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        drop(ingestor);
        writer.join().unwrap();
        (dir, kpis)
    }

    fn report_rate(hub: &Hub, p: LivePeriod) -> (Option<Period>, Option<(u64, Option<u64>)>) {
        let (period, values) = hub.latest(p);
        let v = values.iter().find(|u| &*u.id == "report_online_rate" && u.scope.is_none());
        (period, v.map(|u| (u.numerator, u.denominator)))
    }

    fn pushes(rx: &mut broadcast::Receiver<Push>) -> Vec<Push> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn at_a_rollover_the_new_periods_totals_replace_the_old_before_it_is_announced() {
        // 23:59 on New Year's Eve, Vietnam time: the day, the month and the year end.
        let (_dir, kpis) = engine_with(reports("r", 40, 30, "2025-12-31T23:59:00+07:00"));
        let hub = Hub::new(64);
        hub.tick(&kpis, t("2025-12-31T23:59:59+07:00"), true);
        for (p, from) in [
            (LivePeriod::Today, "2025-12-31T00:00:00+07:00"),
            (LivePeriod::Mtd, "2025-12-01T00:00:00+07:00"),
            (LivePeriod::Ytd, "2025-01-01T00:00:00+07:00"),
        ] {
            let (period, value) = report_rate(&hub, p);
            assert_eq!(period.map(|q| q.from), Some(t(from)), "{p:?}");
            assert_eq!(value, Some((30, Some(40))), "{p:?}");
        }

        let mut rx = hub.subscribe();
        let midnight = t("2026-01-01T00:00:00+07:00");
        hub.tick(&kpis, midnight + chrono::Duration::milliseconds(200), true);
        let announced: Vec<(LivePeriod, DateTime<Utc>)> = pushes(&mut rx)
            .into_iter()
            .filter_map(|p| match p {
                Push::Rollover(period, range) => Some((period, range.from)),
                Push::Tick(t) => {
                    assert!(t.period.is_none(), "no values of a period before its rollover: {t:?}");
                    None
                }
                Push::Alert(_) | Push::Index(..) | Push::Throughput(_) => None,
            })
            .collect();
        assert_eq!(
            announced,
            [(LivePeriod::Today, midnight), (LivePeriod::Mtd, midnight), (LivePeriod::Ytd, midnight)]
        );
        for p in LivePeriod::ALL {
            let (period, value) = report_rate(&hub, p);
            assert_eq!(period.map(|q| q.from), Some(midnight), "{p:?}");
            assert_eq!(value, None, "{p:?}: the old period's 40 reports are gone");
        }

        // A quiet tick in the same periods announces nothing.
        hub.tick(&kpis, midnight + chrono::Duration::seconds(1), false);
        assert!(pushes(&mut rx).is_empty());
    }

    /// Simulated events (every type) over the first days of March 2026.
    fn simulated(seed: u64, n: usize) -> Vec<Record> {
        let mut sim = ioc_ingest::Simulator::new(Arc::new(AdminUnits::builtin()), seed);
        let start = t("2026-03-01T08:00:00+07:00");
        (0..n)
            .map(|i| {
                let at = start + chrono::Duration::minutes(i as i64 * 7);
                Record::new(sim.next_event(at).to_json().to_string().into_bytes(), Origin::Simulator)
            })
            .collect()
    }

    #[test]
    fn the_index_rows_of_a_period_are_the_kpi_apis_numbers_ranked_and_quiet_without_change() {
        let (_dir, kpis) = engine_with(simulated(3, 2_000));
        let def = kpis.catalog().index().expect("the shipped catalog has the index").clone();
        let hub = Hub::new(64);
        let now = t("2026-03-20T12:00:00+07:00");
        hub.tick(&kpis, now, false);
        let rows = hub.latest_index(LivePeriod::Mtd);
        // The national row equals the index scored from `GET /api/v1/kpis`'s values.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (from, to) = LivePeriod::Mtd.range(now);
        let period = Period { from: from.to_utc(), to: to.to_utc() };
        let listed = rt.block_on(kpis.list(period, None, now)).unwrap();
        let want = def.score(|k| listed.iter().find(|v| v.def.id == k).and_then(|v| v.value));
        let national = rows.iter().find(|u| u.scope.is_none()).unwrap();
        let want_row = crate::index::row_json(&def, &IndexRow { province: None, rank: None, score: want.clone() });
        assert_eq!(national.row, want_row);
        assert!(want.measured_max > 0.0);
        // Provinces: ranked from 1 by score.
        let mut provinces: Vec<&Arc<IndexUpdate>> = rows.iter().filter(|u| u.scope.is_some()).collect();
        provinces.sort_by_key(|u| u.row["rank"].as_u64());
        assert!(!provinces.is_empty());
        for (i, w) in provinces.windows(2).enumerate() {
            assert_eq!(w[0].row["rank"], i + 1);
            assert!(w[0].row["score"].as_f64() >= w[1].row["score"].as_f64());
        }

        // No change, no push (tests/e2e_index.rs follows pushes of changes end to end).
        let mut rx = hub.subscribe();
        hub.tick(&kpis, now + chrono::Duration::seconds(1), false);
        assert!(pushes(&mut rx).is_empty());
    }

    #[test]
    fn without_a_rollover_only_changed_totals_are_pushed_per_period() {
        let (_dir, kpis) = engine_with(reports("r", 4, 1, "2026-03-10T09:00:00+07:00"));
        let hub = Hub::new(64);
        hub.tick(&kpis, t("2026-03-10T10:00:00+07:00"), false);
        let mut rx = hub.subscribe();
        hub.tick(&kpis, t("2026-03-10T10:00:01+07:00"), false);
        assert!(pushes(&mut rx).is_empty(), "nothing changed");
        // A day later the day rolls over, the month and the year do not.
        hub.tick(&kpis, t("2026-03-11T00:00:01+07:00"), false);
        let got: Vec<String> = pushes(&mut rx).iter().map(|p| format!("{p:?}").chars().take(20).collect()).collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            matches!(hub.latest(LivePeriod::Today), (Some(p), v) if p.from == t("2026-03-11T00:00:00+07:00") && v.is_empty())
        );
        assert_eq!(report_rate(&hub, LivePeriod::Mtd).1, Some((1, Some(4))));
        assert_eq!(report_rate(&hub, LivePeriod::Ytd).1, Some((1, Some(4))));
    }

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
