//! `GET /api/v1/ws`: live KPI values and alert changes for wall displays
//! (CONTRACT.md §3, §7.3).
//!
//! The client subscribes with `{"op": "subscribe", "kpis": ["*"] | [ids], "group_by":
//! null | "province_code", "period": "today" | "mtd" | "ytd"}` (`period` defaults to
//! `mtd`), and may do so again at any time to change what it gets. Each subscription
//! is answered with a `snapshot` of the period (its `from` and `to` say which); then
//! `kpi` messages follow as values change (at most one per KPI and scope per 250 ms:
//! the hub's tick), and `alert` messages on every alert state change. When the period
//! rolls over, a new `snapshot` of the new period comes before any value of it. `seq`
//! counts every message on the connection, from 1, with no gap.
//!
//! A connection never holds anything up: it reads the hub's broadcast into its own
//! queue, which keeps only the latest value per KPI and scope (alerts are kept in order,
//! up to a bound). If it falls behind the broadcast, it catches up from the hub's latest
//! values. A client that takes no message, or answers no ping, within the configured
//! timeout is disconnected with close code 1008 and a reason.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::{Sink, SinkExt, Stream, StreamExt};
use ioc_core::catalog::{Catalog, KpiKind};
use ioc_core::counters::{Count, ScopeKey};
use ioc_core::time::{LivePeriod, vn_year};
use ioc_query::{KpiValue, Period};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tracing::debug;

use crate::app::AppState;
use crate::auth::Principal;
use crate::config::WsSettings;
use crate::error::ApiError;
use crate::kpis::kpi_json;
use crate::live::{IndexUpdate, KpiUpdate, Push, Tick, UpdateKey, scope_json};
use crate::throughput::{ThroughputUpdate, View};

/// Close code for a client that cannot keep up (policy violation).
pub const CLOSE_TOO_SLOW: u16 = 1008;
/// Close code on server shutdown (going away).
pub const CLOSE_SHUTDOWN: u16 = 1001;
/// Alert changes a client may have queued before it counts as too slow.
const MAX_QUEUED_ALERTS: usize = 1024;

/// Websocket metrics, defined with their log lines.
#[derive(Clone)]
pub struct WsMetrics {
    clients: IntGauge,
    messages: IntCounterVec,
    disconnects: IntCounterVec,
}

impl WsMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            clients: IntGauge::new("ioc_ws_clients", "Open websocket connections")?,
            messages: IntCounterVec::new(
                Opts::new("ioc_ws_messages_total", "Messages sent to websocket clients, by type"),
                &["type"],
            )?,
            disconnects: IntCounterVec::new(
                Opts::new("ioc_ws_disconnects_total", "Websocket connections ended, by reason"),
                &["reason"],
            )?,
        };
        registry.register(Box::new(m.clients.clone()))?;
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.disconnects.clone()))?;
        Ok(m)
    }

    /// Open connections now.
    pub fn open(&self) -> i64 {
        self.clients.get()
    }

    fn ended(&self, reason: &'static str) {
        debug!(reason, "websocket connection ended");
        self.disconnects.with_label_values(&[reason]).inc();
    }
}

pub async fn handler(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            let message = format!("{}; this endpoint is a websocket (send `Upgrade: websocket`)", e.body_text());
            return ApiError::new(e.status(), "websocket_upgrade_required", message).into_response();
        }
    };
    ws.on_upgrade(move |socket: WebSocket| async move {
        let (sink, stream) = socket.split();
        state.ws_metrics.clients.inc();
        serve(&state, &who, sink, stream).await;
        state.ws_metrics.clients.dec();
    })
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum ClientMessage {
    Subscribe {
        kpis: Vec<String>,
        #[serde(default)]
        group_by: Option<String>,
        /// `today`, `mtd` (the default) or `ytd`.
        #[serde(default)]
        period: Option<String>,
        /// Also the rows of the service index (CONTRACT.md §7.6).
        #[serde(default)]
        index: bool,
        /// Also events per minute by source family (`crate::throughput`).
        #[serde(default)]
        throughput: bool,
    },
}

/// What one connection wants.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subscription {
    /// `None`: every KPI.
    kpis: Option<HashSet<String>>,
    by_province: bool,
    /// A province-scoped token sees that province only.
    only_province: Option<String>,
    /// The live period the values are over.
    period: LivePeriod,
    /// The service index rows too.
    index: bool,
    /// Throughput messages too.
    throughput: bool,
}

impl Subscription {
    fn parse(text: &str, catalog: &Catalog, who: &Principal) -> Result<Self, (&'static str, String)> {
        let msg: ClientMessage =
            serde_json::from_str(text).map_err(|e| ("invalid_message", format!("expected a subscribe op: {e}")))?;
        let ClientMessage::Subscribe { kpis, group_by, period, index, throughput } = msg;
        let period = match period.as_deref() {
            None => LivePeriod::Mtd,
            Some(p) => LivePeriod::parse(p)
                .ok_or_else(|| ("invalid_period", format!("period `{p}` is not one of \"today\", \"mtd\", \"ytd\"")))?,
        };
        let kpis = if kpis.iter().any(|k| k == "*") {
            None
        } else {
            if let Some(bad) = kpis.iter().find(|k| catalog.get(k).is_none()) {
                return Err(("unknown_kpi", format!("unknown KPI `{bad}`")));
            }
            Some(kpis.into_iter().collect())
        };
        let by_province = match group_by.as_deref() {
            None => false,
            Some("province_code") => true,
            Some(other) => {
                return Err(("invalid_group_by", format!("group_by `{other}` is not null or \"province_code\"")));
            }
        };
        if index && catalog.index().is_none() {
            return Err(("no_index", "the KPI catalog defines no service index".into()));
        }
        Ok(Self { kpis, by_province, only_province: who.province.clone(), period, index, throughput })
    }

    fn wants(&self, u: &KpiUpdate) -> bool {
        if self.kpis.as_ref().is_some_and(|k| !k.contains(u.id.as_ref())) {
            return false;
        }
        match (&u.scope, &self.only_province) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(p), Some(only)) => p.as_ref() == only,
            (Some(_), None) => self.by_province,
        }
    }
}

impl Subscription {
    /// The part of a tick this subscription can want.
    fn scopes_of<'a>(&'a self, tick: &'a Tick) -> impl Iterator<Item = &'a Arc<KpiUpdate>> + 'a {
        let national = if self.only_province.is_none() { tick.national.as_slice() } else { &[] };
        let provinces: Vec<&'a Vec<Arc<KpiUpdate>>> = match &self.only_province {
            Some(p) => tick.provinces.get(p.as_str()).into_iter().collect(),
            None if self.by_province => tick.provinces.values().collect(),
            None => Vec::new(),
        };
        national.iter().chain(provinces.into_iter().flatten())
    }

    /// A province-scoped token sees only its province's alerts, as over REST.
    /// An index row: the nation's, every province's with `group_by`, or the token's
    /// province's only.
    fn wants_index(&self, u: &IndexUpdate) -> bool {
        self.index
            && match (&u.scope, &self.only_province) {
                (None, None) => true,
                (None, Some(_)) => false,
                (Some(p), Some(only)) => p.as_ref() == only,
                (Some(_), None) => self.by_province,
            }
    }

    /// The scopes of the throughput this connection gets: its token's province, or
    /// the nation and, with `group_by`, every province.
    fn throughput_view(&self) -> View<'_> {
        match &self.only_province {
            Some(p) => View::Province(p),
            None => View::National { provinces: self.by_province },
        }
    }

    fn wants_alert(&self, alert: &Value) -> bool {
        match &self.only_province {
            None => true,
            Some(p) => alert["scope"].as_str().and_then(|s| s.strip_prefix("province:")) == Some(p.as_str()),
        }
    }
}

/// Why a connection ended (a metrics label), and the close frame to send, if any.
type Ending = (&'static str, Option<(u16, &'static str)>);

/// Serves one connection until it ends, closing it properly; returns why it ended.
pub async fn serve<S, R>(state: &AppState, who: &Principal, mut sink: S, mut stream: R) -> &'static str
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let (label, close) = session(state, who, &mut sink, &mut stream).await;
    state.ws_metrics.ended(label);
    if let Some((code, reason)) = close {
        goodbye(&mut sink, &mut stream, code, reason).await;
    }
    label
}

async fn session<S, R>(state: &AppState, who: &Principal, sink: &mut S, stream: &mut R) -> Ending
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let WsSettings { ping_interval, timeout } = state.ws;
    let mut rx = state.hub.subscribe();
    let mut stop = state.shutdown.clone();
    let mut seq = 0u64;
    let mut sub: Option<Subscription> = None;
    // The period of the last snapshot sent: every value sent after it is of it.
    let mut shown: Option<Period> = None;
    let mut values: BTreeMap<UpdateKey, Arc<KpiUpdate>> = BTreeMap::new();
    let mut alerts: VecDeque<Arc<Value>> = VecDeque::new();
    let mut index_rows: BTreeMap<ScopeKey, Arc<IndexUpdate>> = BTreeMap::new();
    // The throughput to send, and the newest whole minute already sent (minutes are
    // sent again only when a new one is complete).
    let mut throughput: Option<Arc<ThroughputUpdate>> = None;
    let mut minutes_sent: Option<i64> = None;
    let mut ping = tokio::time::interval(ping_interval);
    ping.reset();
    let mut last_pong = Instant::now();

    // One message, written at once (snapshots and errors).
    macro_rules! send {
        ($msg:expr, $kind:expr) => {
            match tokio::time::timeout(timeout, sink.send(Message::Text($msg.to_string().into()))).await {
                Ok(Ok(())) => state.ws_metrics.messages.with_label_values(&[$kind]).inc(),
                Ok(Err(_)) => return ("closed", None),
                Err(_) => return ("too_slow", Some((CLOSE_TOO_SLOW, "too slow: a message was not taken in time"))),
            }
        };
    }

    loop {
        // Send what is queued: alerts in order, then the latest value of each KPI, as
        // one write.
        if !alerts.is_empty() || !values.is_empty() || !index_rows.is_empty() || throughput.is_some() {
            let (n_alerts, n_kpis, n_index) = (alerts.len(), values.len(), index_rows.len());
            let n_throughput = u64::from(throughput.is_some());
            let written = tokio::time::timeout(timeout, async {
                while let Some(alert) = alerts.pop_front() {
                    seq += 1;
                    let msg = json!({"type": "alert", "seq": seq, "alert": *alert}).to_string();
                    sink.feed(Message::Text(msg.into())).await?;
                }
                while let Some((_, update)) = values.pop_first() {
                    seq += 1;
                    sink.feed(Message::Text(update.message(seq).into())).await?;
                }
                while let Some((_, row)) = index_rows.pop_first() {
                    seq += 1;
                    sink.feed(Message::Text(row.message(seq).into())).await?;
                }
                if let (Some(t), Some(s)) = (throughput.take(), &sub) {
                    let with_minutes = t.last_minute() != minutes_sent;
                    minutes_sent = t.last_minute();
                    seq += 1;
                    sink.feed(Message::Text(t.message(seq, s.throughput_view(), with_minutes).into())).await?;
                }
                sink.flush().await
            })
            .await;
            match written {
                Ok(Ok(())) => {
                    state.ws_metrics.messages.with_label_values(&["alert"]).inc_by(n_alerts as u64);
                    state.ws_metrics.messages.with_label_values(&["kpi"]).inc_by(n_kpis as u64);
                    state.ws_metrics.messages.with_label_values(&["index"]).inc_by(n_index as u64);
                    state.ws_metrics.messages.with_label_values(&["throughput"]).inc_by(n_throughput);
                }
                Ok(Err(_)) => return ("closed", None),
                Err(_) => return ("too_slow", Some((CLOSE_TOO_SLOW, "too slow: messages were not taken in time"))),
            }
        }
        tokio::select! {
            msg = stream.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return ("closed", None),
                Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                Some(Ok(Message::Text(text))) => {
                    last_pong = Instant::now();
                    match Subscription::parse(&text, state.kpis.catalog(), who) {
                        Ok(s) => {
                            values.clear();
                            index_rows.clear();
                            throughput = None;
                            seq += 1;
                            let (snapshot, period) = snapshot(state, &s, seq, &mut minutes_sent);
                            sub = Some(s);
                            shown = period;
                            send!(snapshot, "snapshot");
                        }
                        Err((code, message)) => {
                            seq += 1;
                            send!(json!({"type": "error", "seq": seq, "error": {"code": code, "message": message}}), "error");
                        }
                    }
                }
                Some(Ok(_)) => last_pong = Instant::now(),
            },
            push = rx.recv() => match push {
                Ok(Push::Tick(tick)) => {
                    let Some(s) = &sub else { continue };
                    match tick.period {
                        Some((p, _)) if p != s.period => {}
                        // A tick of a period this connection has not been shown: it
                        // missed the rollover (it lagged); the snapshot says it all.
                        Some((_, range)) if Some(range) != shown => {
                            values.clear();
                            index_rows.clear();
                            throughput = None;
                            seq += 1;
                            let (snapshot, period) = snapshot(state, s, seq, &mut minutes_sent);
                            shown = period;
                            send!(snapshot, "snapshot");
                        }
                        _ => {
                            for u in s.scopes_of(&tick).filter(|u| s.wants(u)) {
                                values.insert(u.key(), u.clone());
                            }
                        }
                    }
                }
                Ok(Push::Rollover(p, _)) => {
                    if let Some(s) = sub.as_ref().filter(|s| s.period == p) {
                        // Values queued before the rollover are the old period's.
                        values.clear();
                            index_rows.clear();
                        throughput = None;
                        seq += 1;
                        let (snapshot, period) = snapshot(state, s, seq, &mut minutes_sent);
                        shown = period;
                        send!(snapshot, "snapshot");
                    }
                }
                Ok(Push::Index(p, range, rows)) => {
                    if let Some(s) = sub.as_ref().filter(|s| s.index && s.period == p && Some(range) == shown) {
                        for u in rows.iter().filter(|u| s.wants_index(u)) {
                            index_rows.insert(u.scope.clone(), u.clone());
                        }
                    }
                }
                Ok(Push::Throughput(t)) => {
                    if sub.as_ref().is_some_and(|s| s.throughput) {
                        throughput = Some(t);
                    }
                }
                Ok(Push::Alert(a)) => {
                    if sub.as_ref().is_some_and(|s| s.wants_alert(&a)) {
                        alerts.push_back(a);
                        if alerts.len() > MAX_QUEUED_ALERTS {
                            return ("too_slow", Some((CLOSE_TOO_SLOW, "too slow: too many alerts queued")));
                        }
                    }
                }
                // Fell behind the broadcast: the latest values say everything missed
                // (alert changes are also in GET /api/v1/alerts); a rollover missed
                // meanwhile gets its snapshot.
                Err(RecvError::Lagged(_)) => {
                    if let Some(s) = &sub {
                        let (period, latest) = state.hub.latest(s.period);
                        if period != shown {
                            values.clear();
                            index_rows.clear();
                            throughput = None;
                            seq += 1;
                            let (snapshot, period) = snapshot(state, s, seq, &mut minutes_sent);
                            shown = period;
                            send!(snapshot, "snapshot");
                        } else {
                            for u in latest.into_iter().filter(|u| s.wants(u)) {
                                values.insert(u.key(), u);
                            }
                            for u in state.hub.latest_index(s.period).into_iter().filter(|u| s.wants_index(u)) {
                                index_rows.insert(u.scope.clone(), u);
                            }
                            if s.throughput {
                                throughput = state.hub.latest_throughput();
                            }
                        }
                    }
                }
                Err(RecvError::Closed) => return ("shutdown", Some((CLOSE_SHUTDOWN, "server shutting down"))),
            },
            _ = ping.tick() => {
                if last_pong.elapsed() > timeout {
                    return ("too_slow", Some((CLOSE_TOO_SLOW, "too slow: no answer to pings")));
                }
                match tokio::time::timeout(timeout, sink.send(Message::Ping(Vec::new().into()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return ("closed", None),
                    Err(_) => return ("too_slow", Some((CLOSE_TOO_SLOW, "too slow: a ping was not taken in time"))),
                }
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                return ("shutdown", Some((CLOSE_SHUTDOWN, "server shutting down")));
            }
        }
    }
}

/// The closing handshake: sends a close frame, then keeps reading (and discarding)
/// until the client answers with its own, for a moment at most. Dropping the socket at
/// once would make the kernel answer a late pong with a reset, and a client that reads
/// late would lose the close frame and its reason.
async fn goodbye<S, R>(sink: &mut S, stream: &mut R, code: u16, reason: &'static str)
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let frame = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    if tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The subscribed KPIs over the subscription's live period, as `GET /api/v1/kpis`
/// lists them, from the hub's values of that period (the same sums): nationally, or
/// for the token's province; with `group_by`, also one entry per province with data.
/// Each entry has its `scope`. `from` and `to` are those of the period the values are
/// of, which the hub replaces only together with the values, so a snapshot never
/// shows one period's values under another's dates. Returns that period too.
/// `as_of` is the commit time of the newest data. With `throughput`, it carries the
/// latest throughput with its minutes, and `minutes_sent` says which were sent.
fn snapshot(state: &AppState, sub: &Subscription, seq: u64, minutes_sent: &mut Option<i64>) -> (Value, Option<Period>) {
    let (shown, latest) = state.hub.latest(sub.period);
    let period = shown.unwrap_or_else(|| {
        // Before the hub's first tick (the server ticks once before it listens).
        let (from, to) = sub.period.range(Utc::now());
        Period { from: from.to_utc(), to: to.to_utc() }
    });
    let catalog = state.kpis.catalog();
    let latest: BTreeMap<UpdateKey, Arc<KpiUpdate>> = latest.into_iter().map(|u| (u.key(), u)).collect();
    let home: ScopeKey = sub.only_province.as_deref().map(Into::into);
    let mut scopes = vec![home.clone()];
    if sub.by_province && home.is_none() {
        let mut provinces: Vec<ScopeKey> = latest.keys().filter_map(|(_, s)| s.clone()).map(Some).collect();
        provinces.sort();
        provinces.dedup();
        scopes.extend(provinces);
    }
    let mut kpis = Vec::new();
    for scope in &scopes {
        for def in catalog.kpis() {
            if sub.kpis.as_ref().is_some_and(|k| !k.contains(&def.id)) {
                continue;
            }
            let found = latest.get(&(def.id.as_str().into(), scope.clone()));
            if scope.is_some() && home.is_none() && found.is_none() {
                continue;
            }
            let gauge = matches!(def.kind, KpiKind::Gauge(_));
            let count = found.map_or(Count::default(), |u| Count::new(u.numerator, u.denominator.unwrap_or(0)));
            let value = if gauge { Some(count.numerator as f64) } else { count.ratio() };
            let v = KpiValue::new(def, scope.as_deref(), vn_year(period.from), count, value);
            let mut entry = kpi_json(&v, period);
            entry["scope"] = scope_json(scope);
            kpis.push(entry);
        }
    }
    let mut snapshot = json!({"type": "snapshot", "seq": seq, "period": sub.period.as_str(), "kpis": kpis});
    snapshot["as_of"] = json!(state.kpis.as_of().map(|t| t.to_rfc3339()));
    if sub.throughput {
        let latest = state.hub.latest_throughput();
        *minutes_sent = latest.as_ref().and_then(|t| t.last_minute());
        snapshot["throughput"] = latest.map_or(Value::Null, |t| t.json(sub.throughput_view(), true));
    }
    if sub.index {
        // The nation (or the token's province) first, then the provinces by rank.
        let mut rows: Vec<Arc<IndexUpdate>> =
            state.hub.latest_index(sub.period).into_iter().filter(|u| sub.wants_index(u)).collect();
        rows.sort_by_key(|u| (u.scope.is_some() && sub.only_province.is_none(), u.row["rank"].as_u64()));
        snapshot["index"] = Value::Array(rows.iter().map(|u| u.row.clone()).collect());
    }
    (snapshot, shown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn who(province: Option<&str>) -> Principal {
        Principal { province: province.map(String::from), role: Role::Viewer, ..Principal::local() }
    }

    fn update(id: &str, scope: Option<&str>) -> KpiUpdate {
        KpiUpdate::new(id.into(), scope.map(Into::into), Some(1.0), 1, Some(1), Utc::now())
    }

    #[test]
    fn a_subscription_gets_the_kpis_and_scopes_it_asked_for_and_its_token_allows() {
        let catalog = Catalog::builtin();
        let national =
            Subscription::parse(r#"{"op":"subscribe","kpis":["*"],"group_by":null}"#, &catalog, &who(None)).unwrap();
        assert!(national.wants(&update("edoc_rate", None)));
        assert!(!national.wants(&update("edoc_rate", Some("01"))), "no provinces without group_by");

        let by_province = r#"{"op":"subscribe","kpis":["edoc_rate"],"group_by":"province_code"}"#;
        let s = Subscription::parse(by_province, &catalog, &who(None)).unwrap();
        assert!(s.wants(&update("edoc_rate", Some("79"))) && s.wants(&update("edoc_rate", None)));
        assert!(!s.wants(&update("on_time_rate", None)), "only the listed KPIs");

        let hanoi = Subscription::parse(by_province, &catalog, &who(Some("01"))).unwrap();
        assert!(hanoi.wants(&update("edoc_rate", Some("01"))));
        assert!(!hanoi.wants(&update("edoc_rate", Some("79"))) && !hanoi.wants(&update("edoc_rate", None)));
        assert!(hanoi.wants_alert(&json!({"scope": "province:01"})));
        assert!(
            !hanoi.wants_alert(&json!({"scope": "province:79"})) && !hanoi.wants_alert(&json!({"scope": "national"}))
        );
    }

    #[test]
    fn a_bad_subscription_is_refused_with_a_code() {
        let catalog = Catalog::builtin();
        let err = |text: &str| Subscription::parse(text, &catalog, &who(None)).unwrap_err().0;
        assert_eq!(err(r#"{"op":"subscribe","kpis":["nope"]}"#), "unknown_kpi");
        assert_eq!(err(r#"{"op":"subscribe","kpis":["*"],"group_by":"level"}"#), "invalid_group_by");
        assert_eq!(err(r#"{"op":"unsubscribe"}"#), "invalid_message");
        assert_eq!(err("not json"), "invalid_message");
    }
}

/// A connection driven in-process, with the hub ticked at chosen times.
#[cfg(test)]
mod rollover {
    use super::*;
    use crate::config::{FileConfig, Overrides, Settings};
    use crate::live::tests::{reports, t};
    use futures::channel::mpsc;
    use std::collections::BTreeMap as Map;

    struct Client {
        to_server: mpsc::Sender<Result<Message, axum::Error>>,
        from_server: mpsc::Receiver<Message>,
    }

    impl Client {
        async fn send(&mut self, v: Value) {
            self.to_server.send(Ok(Message::Text(v.to_string().into()))).await.unwrap();
        }

        /// The next text message, skipping pings.
        async fn next(&mut self) -> Value {
            loop {
                let m = tokio::time::timeout(Duration::from_secs(10), self.from_server.next())
                    .await
                    .expect("a message in time")
                    .expect("the connection is open");
                if let Message::Text(text) = m {
                    return serde_json::from_str(&text).unwrap();
                }
            }
        }

        async fn nothing_more(&mut self) {
            let got = tokio::time::timeout(Duration::from_millis(300), self.from_server.next()).await;
            assert!(got.is_err(), "expected silence, got {got:?}");
        }
    }

    fn connect(state: &AppState) -> Client {
        let (to_server, stream) = mpsc::channel(16);
        let (sink, from_server) = mpsc::channel(16);
        let state = state.clone();
        tokio::spawn(async move {
            let who = Principal::local();
            serve(&state, &who, sink, stream).await;
        });
        Client { to_server, from_server }
    }

    fn report_entry(snapshot: &Value) -> (String, Value, Value) {
        let k = snapshot["kpis"].as_array().unwrap().iter().find(|k| k["id"] == "report_online_rate").unwrap();
        (k["from"].as_str().unwrap().to_string(), k["numerator"].clone(), k["denominator"].clone())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_subscribed_connection_gets_a_snapshot_of_the_new_period_before_its_values() {
        let dir = tempfile::tempdir().unwrap();
        let o = Overrides { data_dir: Some(dir.path().to_path_buf()), ..Default::default() };
        let settings = Settings::resolve(o, FileConfig::default(), "unused").unwrap();
        let (_stop, stop_rx) = tokio::sync::watch::channel(false);
        let (state, _writer) = crate::server::build(&settings, stop_rx).unwrap();
        state.ingestor.submit(reports("old", 40, 30, "2025-12-31T23:59:00+07:00"), Map::new()).await.unwrap();
        state.hub.tick(&state.kpis, t("2025-12-31T23:59:30+07:00"), true);

        let mut clients = Vec::new();
        for (period, from) in [
            ("today", "2025-12-31T00:00:00+07:00"),
            ("mtd", "2025-12-01T00:00:00+07:00"),
            ("ytd", "2025-01-01T00:00:00+07:00"),
        ] {
            let mut c = connect(&state);
            c.send(json!({"op": "subscribe", "kpis": ["report_online_rate"], "group_by": null, "period": period}))
                .await;
            let snap = c.next().await;
            assert_eq!(
                (snap["type"].as_str(), snap["seq"].as_u64(), snap["period"].as_str()),
                (Some("snapshot"), Some(1), Some(period))
            );
            assert_eq!(report_entry(&snap), (from.to_string(), json!(30), json!(40)), "{period}");
            clients.push((period, c));
        }

        // Vietnam midnight on New Year's Eve rolls all three over.
        state.hub.tick(&state.kpis, t("2026-01-01T00:00:00.250+07:00"), true);
        for (period, c) in &mut clients {
            let snap = c.next().await;
            assert_eq!((snap["type"].as_str(), snap["seq"].as_u64()), (Some("snapshot"), Some(2)), "{period}: {snap}");
            assert_eq!(
                report_entry(&snap),
                ("2026-01-01T00:00:00+07:00".to_string(), json!(0), json!(0)),
                "{period}: none of the old period's 40 reports"
            );
            c.nothing_more().await;
        }

        // Data of the new period then comes as values, after the snapshot.
        state.ingestor.submit(reports("new", 2, 2, "2026-01-01T00:00:10+07:00"), Map::new()).await.unwrap();
        state.hub.tick(&state.kpis, t("2026-01-01T00:00:20+07:00"), false);
        for (period, c) in &mut clients {
            let m = c.next().await;
            assert_eq!(
                (m["type"].as_str(), m["seq"].as_u64(), m["id"].as_str()),
                (Some("kpi"), Some(3), Some("report_online_rate")),
                "{period}: {m}"
            );
            assert_eq!((m["numerator"].clone(), m["denominator"].clone()), (json!(2), json!(2)), "{period}");
        }
        // A display connecting now sees the new period only.
        let mut late = connect(&state);
        late.send(json!({"op": "subscribe", "kpis": ["*"], "group_by": "province_code", "period": "mtd"})).await;
        let snap = late.next().await;
        assert_eq!(report_entry(&snap), ("2026-01-01T00:00:00+07:00".to_string(), json!(2), json!(2)));
        for k in snap["kpis"].as_array().unwrap() {
            assert_eq!(k["from"], "2026-01-01T00:00:00+07:00", "{k}");
        }
        // A subscription to another period is refused with a reason.
        late.send(json!({"op": "subscribe", "kpis": ["*"], "period": "week"})).await;
        let err = late.next().await;
        assert_eq!(
            (err["type"].as_str(), err["error"]["code"].as_str()),
            (Some("error"), Some("invalid_period")),
            "{err}"
        );
    }
}
