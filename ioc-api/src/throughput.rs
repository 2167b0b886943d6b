//! Throughput for the wall display: events committed per minute by source family
//! (`ioc_core::sources`), nationally and per province, pushed on the websocket to
//! subscriptions with `"throughput": true`.
//!
//! [`ThroughputCounter`] is a commit listener: it counts each committed batch's rows
//! by their `source` and `province_code`, at the commit's time, so it counts what is
//! durable, once (other writers' commits are folded in through the listeners too).
//! [`run`] asks it once a second for the moving minute and the last whole minutes and
//! hands them to the live hub, which pushes them when they changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use chrono::{DateTime, TimeZone, Utc};
use ioc_core::counters::ScopeKey;
use ioc_core::sources::{FamilyCounts, ScopeCounts, SourceFamily, Throughput, WINDOW_SECS};
use ioc_core::time::vn;
use ioc_ingest::pipeline::{CommitListener, Committed};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::live::Hub;

/// Whole minutes kept and sent.
pub const HISTORY_MINUTES: usize = 30;

/// Counts committed events; cheap to share.
pub struct ThroughputCounter {
    inner: Mutex<Throughput>,
    /// Province codes, interned.
    provinces: Mutex<HashMap<String, Arc<str>>>,
}

impl Default for ThroughputCounter {
    fn default() -> Self {
        Self { inner: Mutex::new(Throughput::new(HISTORY_MINUTES)), provinces: Mutex::default() }
    }
}

impl CommitListener for ThroughputCounter {
    fn on_commit(&self, committed: &Committed) {
        // (province, family) -> events, for the whole commit; then one add each.
        let mut counts: HashMap<(Option<&str>, SourceFamily), u64> = HashMap::new();
        for (_, batch) in &committed.batches {
            let Some(sources) = batch.column_by_name("source").and_then(|c| c.as_string_opt::<i32>()) else {
                continue;
            };
            let provinces = batch.column_by_name("province_code").and_then(|c| c.as_string_opt::<i32>());
            for row in 0..batch.num_rows() {
                let province = provinces.filter(|p| p.is_valid(row)).map(|p| p.value(row));
                *counts.entry((province, SourceFamily::of(sources.value(row)))).or_default() += 1;
            }
        }
        if counts.is_empty() {
            return;
        }
        let mut interned = self.provinces.lock().expect("throughput lock");
        let mut inner = self.inner.lock().expect("throughput lock");
        for ((province, family), n) in counts {
            let p = province.map(|p| interned.entry(p.to_string()).or_insert_with(|| p.into()).clone());
            inner.add(committed.committed_at, p.as_ref(), family, n);
        }
    }
}

impl ThroughputCounter {
    /// The throughput at `now`.
    pub fn update(&self, now: DateTime<Utc>) -> ThroughputUpdate {
        let mut inner = self.inner.lock().expect("throughput lock");
        inner.prune(now);
        ThroughputUpdate { as_of: now, per_minute: inner.last_minute(now), minutes: Arc::new(inner.minutes(now)) }
    }
}

/// The throughput at one moment, for every scope.
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputUpdate {
    pub as_of: DateTime<Utc>,
    /// Events in the moving minute up to `as_of`, per scope (the nation always).
    pub per_minute: ScopeCounts,
    /// The last whole minutes, oldest first, with their Unix minute.
    pub minutes: Arc<Vec<(i64, ScopeCounts)>>,
}

/// Which scopes a connection gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View<'a> {
    /// The nation, and with `provinces` every province too.
    National { provinces: bool },
    /// One province only (a province-scoped token).
    Province(&'a str),
}

impl ThroughputUpdate {
    /// The newest whole minute, by which a connection knows whether it was sent.
    pub fn last_minute(&self) -> Option<i64> {
        self.minutes.last().map(|(m, _)| *m)
    }

    /// Whether anything a display shows differs (the time alone does not count).
    pub fn differs(&self, other: &ThroughputUpdate) -> bool {
        self.per_minute != other.per_minute || self.minutes != other.minutes
    }

    /// The body of a `throughput` message (without `type` and `seq`): `per_minute`
    /// of the view's scope, `minutes` when asked, and with `View::National {
    /// provinces: true }` the same two for every province with events.
    pub fn json(&self, view: View<'_>, with_minutes: bool) -> Value {
        let scope_json = |scope: &ScopeKey| {
            let mut entry = json!({ "per_minute": families(self.per_minute.get(scope).copied().unwrap_or_default()) });
            if with_minutes {
                entry["minutes"] = self
                    .minutes
                    .iter()
                    .map(|(m, counts)| {
                        let mut row = families(counts.get(scope).copied().unwrap_or_default());
                        row["minute"] = json!(minute_time(*m));
                        row
                    })
                    .collect();
            }
            entry
        };
        let mut out = match view {
            View::National { .. } => scope_json(&None),
            View::Province(p) => {
                let mut v = scope_json(&Some(p.into()));
                v["scope"] = json!({ "province_code": p });
                v
            }
        };
        if let View::National { provinces: true } = view {
            let mut seen: Vec<&ScopeKey> = self.per_minute.keys().filter(|s| s.is_some()).collect();
            if with_minutes {
                seen.extend(self.minutes.iter().flat_map(|(_, c)| c.keys().filter(|s| s.is_some())));
            }
            seen.sort();
            seen.dedup();
            let provinces: Map<String, Value> =
                seen.into_iter().filter_map(|s| Some((s.as_deref()?.to_string(), scope_json(s)))).collect();
            out["provinces"] = Value::Object(provinces);
        }
        out["window_secs"] = json!(WINDOW_SECS);
        out["as_of"] = json!(self.as_of.to_rfc3339());
        out
    }

    /// The websocket message with its `seq`.
    pub fn message(&self, seq: u64, view: View<'_>, with_minutes: bool) -> String {
        let mut v = json!({"type": "throughput", "seq": seq});
        if let (Value::Object(head), Value::Object(body)) = (&mut v, self.json(view, with_minutes)) {
            head.extend(body);
        }
        v.to_string()
    }
}

fn families(c: FamilyCounts) -> Value {
    let mut m = Map::new();
    for f in SourceFamily::ALL {
        m.insert(f.key().into(), json!(c[f.index()]));
    }
    Value::Object(m)
}

/// The start of a Unix minute, in Vietnam time.
fn minute_time(minute: i64) -> String {
    vn().timestamp_opt(minute * 60, 0).single().map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// Once a second, until `stop` turns true: the throughput to the hub, which pushes it
/// when it changed.
pub async fn run(counter: Arc<ThroughputCounter>, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
        hub.publish_throughput(counter.update(Utc::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use ioc_core::Family;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn batch(rows: &[(&str, Option<&str>)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("source", DataType::Utf8, false),
            Field::new("province_code", DataType::Utf8, true),
        ]);
        let sources = StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
        let provinces = StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(sources), Arc::new(provinces)]).unwrap()
    }

    #[test]
    fn committed_rows_are_counted_by_family_and_province_and_sent_as_the_view_allows() {
        let counter = ThroughputCounter::default();
        let committed = Committed {
            version: 1,
            committed_at: t("2026-12-02T06:30:10Z"),
            batches: vec![
                (
                    Family::Dossier,
                    batch(&[("motcua-01", Some("01")), ("motcua-01", Some("01")), ("dvc-quocgia-79", Some("79"))]),
                ),
                (Family::Document, batch(&[("vdxp", None), ("qlvb-01", Some("01"))])),
            ],
            derived: vec![],
        };
        counter.on_commit(&committed);
        let u = counter.update(t("2026-12-02T06:31:05Z"));
        assert_eq!(u.per_minute[&None], [2, 1, 1, 1]);

        let national = u.json(View::National { provinces: false }, true);
        assert_eq!(national["per_minute"], json!({"motcua": 2, "vdxp": 1, "dvc": 1, "other": 1}));
        assert!(national.get("provinces").is_none());
        let minutes = national["minutes"].as_array().unwrap();
        assert_eq!(minutes.len(), HISTORY_MINUTES);
        assert_eq!(
            minutes.last().unwrap(),
            &json!({"minute": "2026-12-02T13:30:00+07:00", "motcua": 2, "vdxp": 1, "dvc": 1, "other": 1})
        );

        let all = u.json(View::National { provinces: true }, false);
        assert_eq!(all["provinces"]["01"]["per_minute"], json!({"motcua": 2, "vdxp": 0, "dvc": 0, "other": 1}));
        assert_eq!(all["provinces"]["79"]["per_minute"]["dvc"], 1);
        assert!(all.get("minutes").is_none() && all["provinces"]["01"].get("minutes").is_none());

        let hanoi: Value = serde_json::from_str(&u.message(7, View::Province("01"), false)).unwrap();
        assert_eq!(
            hanoi,
            json!({"type": "throughput", "seq": 7, "scope": {"province_code": "01"},
                   "per_minute": {"motcua": 2, "vdxp": 0, "dvc": 0, "other": 1},
                   "window_secs": 60, "as_of": "2026-12-02T06:31:05+00:00"})
        );

        // A minute later the moving minute is empty, and the update differs.
        let later = counter.update(t("2026-12-02T06:32:05Z"));
        assert!(later.differs(&u));
        assert_eq!(later.per_minute[&None], [0; 4]);
        assert!(!later.differs(&counter.update(t("2026-12-02T06:32:05.5Z"))));
    }
}
