//! KPI alerting: rules and a pure state machine. (The Alertmanager webhook payload is
//! built in `ioc-api`, the only crate that speaks HTTP and JSON.)
//!
//! A rule watches one ratio KPI over a window (month to date, today, or rolling) in one
//! or more scopes and breaches when the value does not meet its threshold. Evaluation
//! follows Prometheus: a breach is `pending` until it has held for `for`, then `firing`;
//! `keep_firing_for` and `hysteresis` stop a value hovering at the threshold from
//! flapping. [`step`] is a pure function of (rule, threshold, state, sample, now), so the
//! caller owns the clock, the queries, persistence and delivery, and replays are exact.

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::admin::is_digits;
use crate::catalog::{Catalog, Direction, KpiDef, KpiKind};
use crate::time::{start_of_day, start_of_month, vn_year};

/// A non-negative duration written `30s`, `5m`, `1h` or `2d` (bare `0` is zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Span {
    secs: u32,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("`{input}` is not a duration like 30s, 5m, 1h or 2d")]
pub struct SpanParseError {
    pub input: String,
}

impl Span {
    pub const ZERO: Span = Span { secs: 0 };

    pub fn from_secs(secs: u32) -> Self {
        Self { secs }
    }

    pub fn parse(s: &str) -> Result<Self, SpanParseError> {
        let bad = || SpanParseError { input: s.to_string() };
        if s == "0" {
            return Ok(Self::ZERO);
        }
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (digits, unit) = s.split_at(split);
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        let n: u32 = digits.parse().map_err(|_| bad())?;
        n.checked_mul(unit_secs).map(Self::from_secs).ok_or_else(bad)
    }

    pub fn as_delta(self) -> TimeDelta {
        TimeDelta::seconds(i64::from(self.secs))
    }
}

impl fmt::Display for Span {
    /// The largest whole unit, so `90m` prints as `90m` and `120m` as `2h`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.secs;
        match [(86_400, 'd'), (3600, 'h'), (60, 'm')].into_iter().find(|(u, _)| s != 0 && s.is_multiple_of(*u)) {
            Some((u, c)) => write!(f, "{}{c}", s / u),
            None => write!(f, "{s}s"),
        }
    }
}

impl TryFrom<String> for Span {
    type Error = SpanParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Span> for String {
    fn from(s: Span) -> String {
        s.to_string()
    }
}

/// The period a rule's value is computed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Window {
    /// Month to date in Vietnam time: what the KPI reports are judged on.
    #[default]
    Mtd,
    /// Since Vietnam midnight.
    Today,
    /// The last `Span` before now, e.g. `24h` or `7d`.
    Rolling(Span),
}

impl Window {
    /// The evaluation period `[from, to)`, ending at `now`.
    pub fn period(self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let from = match self {
            Window::Mtd => start_of_month(now).to_utc(),
            Window::Today => start_of_day(now).to_utc(),
            Window::Rolling(span) => now - span.as_delta(),
        };
        (from, now)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Mtd => f.write_str("mtd"),
            Window::Today => f.write_str("today"),
            Window::Rolling(span) => span.fmt(f),
        }
    }
}

impl TryFrom<String> for Window {
    type Error = SpanParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "mtd" => Ok(Window::Mtd),
            "today" => Ok(Window::Today),
            // An empty rolling window has no events: always no_data, surely a typo.
            _ => Span::parse(&s)
                .ok()
                .filter(|d| *d != Span::ZERO)
                .map(Window::Rolling)
                .ok_or(SpanParseError { input: s }),
        }
    }
}

impl From<Window> for String {
    fn from(w: Window) -> String {
        w.to_string()
    }
}

/// Where a rule applies, as written in the config: `"national"`, `"01"`, `["01", "79"]`
/// or `"each_province"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawScope", into = "RawScope")]
pub enum ScopeSpec {
    #[default]
    National,
    Province(String),
    Provinces(Vec<String>),
    EachProvince,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawScope {
    One(String),
    Many(Vec<String>),
}

impl From<RawScope> for ScopeSpec {
    fn from(raw: RawScope) -> Self {
        match raw {
            RawScope::One(s) if s == "national" => ScopeSpec::National,
            RawScope::One(s) if s == "each_province" => ScopeSpec::EachProvince,
            RawScope::One(code) => ScopeSpec::Province(code),
            RawScope::Many(codes) => ScopeSpec::Provinces(codes),
        }
    }
}

impl From<ScopeSpec> for RawScope {
    fn from(s: ScopeSpec) -> Self {
        match s {
            ScopeSpec::National => RawScope::One("national".into()),
            ScopeSpec::EachProvince => RawScope::One("each_province".into()),
            ScopeSpec::Province(code) => RawScope::One(code),
            ScopeSpec::Provinces(codes) => RawScope::Many(codes),
        }
    }
}

/// One concrete scope an alert is evaluated in. Displays as `national` or `province:01`,
/// the form used in labels and as a persistence key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Scope {
    National,
    Province(String),
}

impl Scope {
    /// The province code, for [`KpiDef::target`] and query filters.
    pub fn province(&self) -> Option<&str> {
        match self {
            Scope::National => None,
            Scope::Province(code) => Some(code),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::National => f.write_str("national"),
            Scope::Province(code) => write!(f, "province:{code}"),
        }
    }
}

impl TryFrom<String> for Scope {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.strip_prefix("province:") {
            _ if s == "national" => Ok(Scope::National),
            Some(code) if is_digits(code, 2) => Ok(Scope::Province(code.to_string())),
            _ => Err(format!("`{s}` is not `national` or `province:` and a 2-digit code")),
        }
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.to_string()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

fn one() -> u64 {
    1
}

/// An alert rule, as written in the `[[rule]]` entries of the rules file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// The `alertname`: unique in the file, `[A-Za-z0-9_-]`.
    pub name: String,
    /// A ratio KPI id of the catalog.
    pub kpi: String,
    #[serde(default)]
    pub scope: ScopeSpec,
    #[serde(default)]
    pub window: Window,
    /// Absent: the KPI's target for the scope and year, so target overrides apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Absent: the KPI's direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// The `for` key: how long a breach must hold before the alert fires.
    #[serde(default, rename = "for")]
    pub hold_for: Span,
    /// How long the alert keeps firing after the last breach.
    #[serde(default)]
    pub keep_firing_for: Span,
    /// Fewer events than this below the line is `no_data`: 1 of 2 is not a 50% rate.
    #[serde(default = "one")]
    pub min_denominator: u64,
    /// Once firing, the value must get this far past the threshold to count as recovered.
    #[serde(default)]
    pub hysteresis: f64,
    #[serde(default)]
    pub severity: Severity,
}

impl AlertRule {
    /// The rule's default form for a KPI: national, month to date, the KPI's target.
    pub fn for_kpi(kpi: &KpiDef) -> Self {
        Self {
            name: kpi.id.clone(),
            kpi: kpi.id.clone(),
            scope: ScopeSpec::National,
            window: Window::Mtd,
            threshold: None,
            direction: None,
            hold_for: Span::ZERO,
            keep_firing_for: Span::ZERO,
            min_denominator: 1,
            hysteresis: 0.0,
            severity: Severity::Warning,
        }
    }

    /// The concrete scopes; `each_province` expands to `provinces` (the reference data).
    pub fn scopes<'a>(&self, provinces: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        match &self.scope {
            ScopeSpec::National => vec![Scope::National],
            ScopeSpec::Province(code) => vec![Scope::Province(code.clone())],
            ScopeSpec::Provinces(codes) => codes.iter().cloned().map(Scope::Province).collect(),
            ScopeSpec::EachProvince => provinces.into_iter().map(|c| Scope::Province(c.to_string())).collect(),
        }
    }

    /// The threshold in force for `scope` at `now`: targets vary by province and year.
    pub fn threshold_for(&self, kpi: &KpiDef, scope: &Scope, now: DateTime<Utc>) -> Threshold {
        debug_assert_eq!(kpi.id, self.kpi, "the rule's own KPI");
        Threshold {
            // Rules have no level: level-limited targets do not apply (as in GET /api/v1/kpis).
            value: self.threshold.unwrap_or_else(|| kpi.target(scope.province(), vn_year(now), None).value),
            direction: self.direction.unwrap_or(kpi.direction),
        }
    }
}

/// One rule per ratio KPI, national, month to date, threshold = target: alerting works
/// out of the box and a rules file only has to say what differs.
pub fn default_rules(catalog: &Catalog) -> Vec<AlertRule> {
    catalog.kpis().iter().filter(|k| matches!(k.kind, KpiKind::Ratio { .. })).map(AlertRule::for_kpi).collect()
}

#[derive(Debug, Error)]
pub enum RulesError {
    #[error("alert rules are not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("alert rule `{rule}`, key `{key}`: {message}")]
    Invalid { rule: String, key: &'static str, message: String },
}

/// The alert rules file: `[[rule]]` entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub rule: Vec<AlertRule>,
}

impl RulesFile {
    pub fn from_toml(text: &str, catalog: &Catalog) -> Result<Self, RulesError> {
        let file: RulesFile = toml::from_str(text)?;
        file.validate(catalog)?;
        Ok(file)
    }

    /// Checks what serde cannot. Gauge KPIs are rejected: a gauge is a count with no
    /// denominator, so `min_denominator` and the 0..=1 threshold range would mean nothing.
    pub fn validate(&self, catalog: &Catalog) -> Result<(), RulesError> {
        let mut names = HashSet::new();
        for r in &self.rule {
            let bad = |key, message: String| RulesError::Invalid { rule: r.name.clone(), key, message };
            if r.name.is_empty() || !r.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Err(bad("name", "must be non-empty [A-Za-z0-9_-]".into()));
            }
            if !names.insert(r.name.as_str()) {
                return Err(bad("name", "appears twice".into()));
            }
            match catalog.get(&r.kpi) {
                None => return Err(bad("kpi", format!("`{}` is not a KPI of the catalog", r.kpi))),
                Some((_, k)) if !matches!(k.kind, KpiKind::Ratio { .. }) => {
                    return Err(bad("kpi", format!("`{}` is a gauge; only ratio KPIs can be alerted on", r.kpi)));
                }
                Some(_) => {}
            }
            let codes: &[String] = match &r.scope {
                ScopeSpec::Province(code) => std::slice::from_ref(code),
                ScopeSpec::Provinces(codes) if codes.is_empty() => return Err(bad("scope", "empty list".into())),
                ScopeSpec::Provinces(codes) => codes,
                ScopeSpec::National | ScopeSpec::EachProvince => &[],
            };
            if let Some(c) = codes.iter().find(|c| !is_digits(c, 2)) {
                return Err(bad("scope", format!("`{c}` is not national, each_province or a 2-digit province code")));
            }
            if let Some(t) = r.threshold.filter(|t| !(0.0..=1.0).contains(t)) {
                return Err(bad("threshold", format!("{t} is not a ratio between 0 and 1")));
            }
            if !(r.hysteresis.is_finite() && r.hysteresis >= 0.0) {
                return Err(bad("hysteresis", format!("{} must be a non-negative number", r.hysteresis)));
            }
        }
        Ok(())
    }
}

/// The threshold and direction a value is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub value: f64,
    pub direction: Direction,
}

impl Threshold {
    fn breached(self, value: f64) -> bool {
        !self.direction.meets(value, self.value)
    }

    /// Past the threshold by the margin. The bar is capped to 0..=1 because the values
    /// are ratios: with a target of 100% any margin would make recovery impossible.
    fn recovered(self, value: f64, hysteresis: f64) -> bool {
        let bar = match self.direction {
            Direction::AtLeast => (self.value + hysteresis).min(1.0),
            Direction::AtMost => (self.value - hysteresis).max(0.0),
        };
        self.direction.meets(value, bar)
    }
}

/// The KPI over the rule's window in one scope, as the caller measured it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub value: Option<f64>,
    pub numerator: u64,
    pub denominator: u64,
    /// Set by the caller when ingest lag or source silence exceeds its limit.
    pub stale: bool,
}

impl Sample {
    /// A fresh sample of `numerator / denominator` (no value when nothing is below the line).
    pub fn ratio(numerator: u64, denominator: u64) -> Self {
        let value = (denominator > 0).then(|| numerator as f64 / denominator as f64);
        Self { value, numerator, denominator, stale: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Ok,
    Pending,
    Firing,
    /// Recently resolved: stays until the next breach or data gap, so a dashboard can
    /// show "resolved since …" (`RuleState::since`); it never decays to `ok` by itself.
    Resolved,
    NoData,
    Stale,
}

/// The persisted state of one rule in one scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    pub state: AlertState,
    /// When the current state began.
    pub since: DateTime<Utc>,
    /// When the current breach began (the start of `pending`).
    pub active_since: Option<DateTime<Utc>>,
    /// When `Fire` was emitted; set until `Resolve`. The receiver sees the alert as
    /// firing exactly while this is set, even through `stale` and `no_data`.
    pub firing_since: Option<DateTime<Utc>>,
    /// The last evaluation at which the condition held (for `keep_firing_for`).
    pub last_breach: Option<DateTime<Utc>>,
    /// The value of the last sample that was evaluated.
    pub last_value: Option<f64>,
}

impl RuleState {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            state: AlertState::Ok,
            since: now,
            active_since: None,
            firing_since: None,
            last_breach: None,
            last_value: None,
        }
    }
}

/// What the caller must do after a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Every state change: push it to websocket clients and append it to the history.
    Transition { from: AlertState, to: AlertState },
    /// Send a firing notification (the Alertmanager webhook).
    Fire { starts_at: DateTime<Utc>, value: f64 },
    /// Send a resolved notification for the alert fired at `starts_at`.
    Resolve { starts_at: DateTime<Utc>, ends_at: DateTime<Utc>, value: f64 },
}

/// Advances one rule in one scope by one sample.
///
/// - A stale sample moves any state to `stale`; nothing fires or resolves. An open
///   alert stays open at the receiver (`firing_since` is kept) because we do not know
///   whether the problem is gone, only that we stopped seeing; a pending breach is
///   dropped, since its duration was not observed.
/// - Too few events (`denominator < min_denominator`) or no value is `no_data`, with the
///   same rules as `stale`: windows reset at midnight and on the 1st, and resolving then
///   re-firing every morning would be noise.
/// - With fresh data an open alert goes back to `firing` (no second `Fire`) or resolves
///   once it has recovered and `keep_firing_for` has elapsed since the last breach.
pub fn step(
    rule: &AlertRule,
    threshold: Threshold,
    prev: &RuleState,
    sample: &Sample,
    now: DateTime<Utc>,
) -> (RuleState, Vec<Action>) {
    use AlertState::*;
    let mut next = prev.clone();
    let mut actions = Vec::new();
    let value = sample.value.filter(|v| v.is_finite() && sample.denominator >= rule.min_denominator);
    let to = match value {
        _ if sample.stale => Stale,
        None => NoData,
        Some(value) => {
            next.last_value = Some(value);
            if let Some(starts_at) = prev.firing_since {
                let last_breach = prev.last_breach.unwrap_or(starts_at);
                if !threshold.recovered(value, rule.hysteresis) {
                    next.last_breach = Some(now);
                    Firing
                } else if now - last_breach >= rule.keep_firing_for.as_delta() {
                    actions.push(Action::Resolve { starts_at, ends_at: now, value });
                    next.firing_since = None;
                    next.active_since = None;
                    Resolved
                } else {
                    Firing
                }
            } else if threshold.breached(value) {
                let active = prev.active_since.filter(|_| prev.state == Pending).unwrap_or(now);
                next.active_since = Some(active);
                next.last_breach = Some(now);
                if now - active >= rule.hold_for.as_delta() {
                    actions.push(Action::Fire { starts_at: now, value });
                    next.firing_since = Some(now);
                    Firing
                } else {
                    Pending
                }
            } else {
                next.active_since = None;
                if prev.state == Resolved { Resolved } else { Ok }
            }
        }
    };
    if matches!(to, Stale | NoData) && next.firing_since.is_none() {
        next.active_since = None;
    }
    if to != prev.state {
        actions.insert(0, Action::Transition { from: prev.state, to });
        next.state = to;
        next.since = now;
    }
    (next, actions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::TargetOverride;
    use AlertState::*;
    use serde_json::json;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// `min` minutes after 09:00 Vietnam time.
    fn t(min: i64) -> DateTime<Utc> {
        utc("2026-03-09T02:00:00Z") + TimeDelta::minutes(min)
    }

    fn v(value: f64) -> Sample {
        Sample { value: Some(value), numerator: (value * 100.0).round() as u64, denominator: 100, stale: false }
    }

    fn stale() -> Sample {
        Sample { stale: true, ..v(0.5) }
    }

    fn tr(from: AlertState, to: AlertState) -> Action {
        Action::Transition { from, to }
    }

    fn fire(at: i64, value: f64) -> Action {
        Action::Fire { starts_at: t(at), value }
    }

    fn resolve(start: i64, end: i64, value: f64) -> Action {
        Action::Resolve { starts_at: t(start), ends_at: t(end), value }
    }

    /// A rule on `on_time_rate` as the config would write it.
    fn rule(extra: &str) -> AlertRule {
        toml::from_str(&format!("name = \"r\"\nkpi = \"on_time_rate\"\n{extra}")).unwrap()
    }

    const AT_LEAST_80: Threshold = Threshold { value: 0.8, direction: Direction::AtLeast };

    #[test]
    fn alerts_follow_pending_firing_resolved_with_for_hysteresis_keep_firing_and_data_gaps() {
        struct Case {
            name: &'static str,
            rule: AlertRule,
            threshold: Threshold,
            steps: Vec<(Sample, i64, AlertState, Vec<Action>)>,
        }
        let at_most_10 = Threshold { value: 0.1, direction: Direction::AtMost };
        let cases = [
            Case {
                name: "without `for`, the first breach fires and the first recovery resolves",
                rule: rule(""),
                threshold: AT_LEAST_80,
                steps: vec![
                    (v(0.9), 0, Ok, vec![]),
                    (v(0.7), 1, Firing, vec![tr(Ok, Firing), fire(1, 0.7)]),
                    (v(0.75), 2, Firing, vec![]),
                    (v(0.85), 3, Resolved, vec![tr(Firing, Resolved), resolve(1, 3, 0.85)]),
                    (v(0.9), 4, Resolved, vec![]),
                    (v(0.7), 5, Firing, vec![tr(Resolved, Firing), fire(5, 0.7)]),
                ],
            },
            Case {
                name: "a breach is pending until it has held for `for`",
                rule: rule("for = \"5m\""),
                threshold: AT_LEAST_80,
                steps: vec![
                    (v(0.7), 0, Pending, vec![tr(Ok, Pending)]),
                    (v(0.7), 4, Pending, vec![]),
                    (v(0.7), 5, Firing, vec![tr(Pending, Firing), fire(5, 0.7)]),
                ],
            },
            Case {
                name: "a pending breach that clears goes back to ok silently and its clock restarts",
                rule: rule("for = \"5m\""),
                threshold: AT_LEAST_80,
                steps: vec![
                    (v(0.7), 0, Pending, vec![tr(Ok, Pending)]),
                    (v(0.9), 2, Ok, vec![tr(Pending, Ok)]),
                    (v(0.7), 3, Pending, vec![tr(Ok, Pending)]),
                    (v(0.7), 7, Pending, vec![]),
                    (v(0.7), 8, Firing, vec![tr(Pending, Firing), fire(8, 0.7)]),
                ],
            },
            Case {
                name: "with hysteresis a firing alert recovers only past threshold + margin",
                rule: rule("hysteresis = 0.05"),
                threshold: AT_LEAST_80,
                steps: vec![
                    (v(0.7), 0, Firing, vec![tr(Ok, Firing), fire(0, 0.7)]),
                    (v(0.82), 1, Firing, vec![]),
                    (v(0.84), 2, Firing, vec![]),
                    (v(0.86), 3, Resolved, vec![tr(Firing, Resolved), resolve(0, 3, 0.86)]),
                    (v(0.79), 4, Firing, vec![tr(Resolved, Firing), fire(4, 0.79)]),
                ],
            },
            Case {
                name: "hysteresis is capped at 100% so a 100% target can still recover",
                rule: rule("hysteresis = 0.05"),
                threshold: Threshold { value: 1.0, direction: Direction::AtLeast },
                steps: vec![
                    (v(0.9), 0, Firing, vec![tr(Ok, Firing), fire(0, 0.9)]),
                    (v(1.0), 1, Resolved, vec![tr(Firing, Resolved), resolve(0, 1, 1.0)]),
                ],
            },
            Case {
                name: "keep_firing_for holds the alert after recovery and a new breach restarts it",
                rule: rule("keep_firing_for = \"10m\""),
                threshold: AT_LEAST_80,
                steps: vec![
                    (v(0.7), 0, Firing, vec![tr(Ok, Firing), fire(0, 0.7)]),
                    (v(0.9), 5, Firing, vec![]),
                    (v(0.7), 8, Firing, vec![]),
                    (v(0.9), 17, Firing, vec![]),
                    (v(0.9), 18, Resolved, vec![tr(Firing, Resolved), resolve(0, 18, 0.9)]),
                ],
            },
            Case {
                name: "at_most rules breach above the threshold and recover below it minus the margin",
                rule: rule("hysteresis = 0.02"),
                threshold: at_most_10,
                steps: vec![
                    (v(0.05), 0, Ok, vec![]),
                    (v(0.2), 1, Firing, vec![tr(Ok, Firing), fire(1, 0.2)]),
                    (v(0.09), 2, Firing, vec![]),
                    (v(0.07), 3, Resolved, vec![tr(Firing, Resolved), resolve(1, 3, 0.07)]),
                ],
            },
            Case {
                name: "stale data pauses a firing alert: nothing resolves until fresh data says so",
                rule: rule(""),
                threshold: AT_LEAST_80,
                steps: vec![
                    (v(0.7), 0, Firing, vec![tr(Ok, Firing), fire(0, 0.7)]),
                    (stale(), 1, Stale, vec![tr(Firing, Stale)]),
                    (stale(), 2, Stale, vec![]),
                    (v(0.7), 3, Firing, vec![tr(Stale, Firing)]),
                    (stale(), 4, Stale, vec![tr(Firing, Stale)]),
                    (v(0.9), 5, Resolved, vec![tr(Stale, Resolved), resolve(0, 5, 0.9)]),
                ],
            },
            Case {
                name: "stale data drops a pending breach, whose clock restarts on fresh data",
                rule: rule("for = \"5m\""),
                threshold: AT_LEAST_80,
                steps: vec![
                    (v(0.7), 0, Pending, vec![tr(Ok, Pending)]),
                    (stale(), 3, Stale, vec![tr(Pending, Stale)]),
                    (v(0.7), 6, Pending, vec![tr(Stale, Pending)]),
                    (v(0.7), 10, Pending, vec![]),
                    (v(0.7), 11, Firing, vec![tr(Pending, Firing), fire(11, 0.7)]),
                ],
            },
            Case {
                name: "too few events is no_data, and an open alert survives it without a second fire",
                rule: rule("min_denominator = 10"),
                threshold: AT_LEAST_80,
                steps: vec![
                    (Sample::ratio(1, 5), 0, NoData, vec![tr(Ok, NoData)]),
                    (v(0.7), 1, Firing, vec![tr(NoData, Firing), fire(1, 0.7)]),
                    (Sample::ratio(0, 0), 2, NoData, vec![tr(Firing, NoData)]),
                    (v(0.7), 3, Firing, vec![tr(NoData, Firing)]),
                    (v(0.9), 4, Resolved, vec![tr(Firing, Resolved), resolve(1, 4, 0.9)]),
                    (Sample::ratio(0, 0), 5, NoData, vec![tr(Resolved, NoData)]),
                    (v(0.9), 6, Ok, vec![tr(NoData, Ok)]),
                ],
            },
            Case {
                name: "stale wins over no_data",
                rule: rule(""),
                threshold: AT_LEAST_80,
                steps: vec![
                    (Sample { stale: true, ..Sample::ratio(0, 0) }, 0, Stale, vec![tr(Ok, Stale)]),
                    (v(0.9), 1, Ok, vec![tr(Stale, Ok)]),
                ],
            },
        ];
        for c in cases {
            let mut state = RuleState::new(t(-60));
            for (i, (sample, at, want_state, want_actions)) in c.steps.into_iter().enumerate() {
                let (next, actions) = step(&c.rule, c.threshold, &state, &sample, t(at));
                assert_eq!((next.state, actions), (want_state, want_actions), "{}, step {i}", c.name);
                state = next;
            }
        }
    }

    #[test]
    fn rule_state_records_when_the_state_and_the_breach_began_and_persists_as_json() {
        let r = rule("for = \"5m\"");
        let s0 = RuleState::new(t(-60));
        let (s1, _) = step(&r, AT_LEAST_80, &s0, &v(0.7), t(0));
        let (s2, _) = step(&r, AT_LEAST_80, &s1, &v(0.6), t(5));
        let (s3, _) = step(&r, AT_LEAST_80, &s2, &stale(), t(6));
        assert_eq!(
            s3,
            RuleState {
                state: Stale,
                since: t(6),
                active_since: Some(t(0)),
                firing_since: Some(t(5)),
                last_breach: Some(t(5)),
                last_value: Some(0.6),
            }
        );
        let json = serde_json::to_value(&s3).unwrap();
        assert_eq!(json["state"], "stale");
        assert_eq!(serde_json::from_value::<RuleState>(json).unwrap(), s3);
        assert_eq!(serde_json::to_value(NoData).unwrap(), "no_data");
    }

    #[test]
    fn durations_parse_from_seconds_minutes_hours_and_days_and_errors_name_the_value() {
        for (text, secs, shown) in [("30s", 30, "30s"), ("5m", 300, "5m"), ("120m", 7200, "2h"), ("2d", 172_800, "2d")]
        {
            let span = Span::parse(text).unwrap();
            assert_eq!((span, span.to_string().as_str()), (Span::from_secs(secs), shown));
        }
        assert_eq!(Span::parse("0").unwrap(), Span::ZERO);
        assert_eq!(Span::ZERO.to_string(), "0s");
        for bad in ["5", "5x", "m", "-1m", "1.5h", "1h30m", "", "99999999d"] {
            let err = Span::parse(bad).unwrap_err();
            assert_eq!(err.to_string(), format!("`{bad}` is not a duration like 30s, 5m, 1h or 2d"));
        }
    }

    #[test]
    fn windows_start_at_vietnam_midnight_or_roll_back_from_now() {
        let now = utc("2026-11-30T18:00:00Z"); // 2026-12-01 01:00 in Vietnam
        let from = |w: &str| Window::try_from(w.to_string()).unwrap().period(now);
        assert_eq!(from("mtd"), (utc("2026-11-30T17:00:00Z"), now));
        assert_eq!(from("today"), (utc("2026-11-30T17:00:00Z"), now));
        assert_eq!(from("24h"), (utc("2026-11-29T18:00:00Z"), now));
        assert_eq!(from("7d"), (utc("2026-11-23T18:00:00Z"), now));
        let noon = utc("2026-11-15T05:00:00Z");
        assert_eq!(Window::Mtd.period(noon).0, utc("2026-10-31T17:00:00Z"));
        assert_eq!(Window::Today.period(noon).0, utc("2026-11-14T17:00:00Z"));
        for bad in ["0s", "weekly", "1w"] {
            assert_eq!(Window::try_from(bad.to_string()).unwrap_err().input, bad);
        }
    }

    #[test]
    fn default_rules_are_one_national_mtd_rule_per_ratio_kpi_at_its_target() {
        let catalog = Catalog::builtin();
        let rules = default_rules(&catalog);
        let ratios: Vec<&KpiDef> = catalog.kpis().iter().filter(|k| k.id != "overdue_open").collect();
        assert_eq!(
            rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ratios.iter().map(|k| k.id.as_str()).collect::<Vec<_>>()
        );
        for (r, k) in rules.iter().zip(&ratios) {
            assert_eq!((r.kpi.as_str(), &r.scope, r.window), (k.id.as_str(), &ScopeSpec::National, Window::Mtd));
            assert_eq!(r.scopes([]), [Scope::National]);
            assert_eq!(
                r.threshold_for(k, &Scope::National, t(0)),
                Threshold { value: k.target, direction: k.direction }
            );
        }
        let file = RulesFile { rule: rules };
        assert_eq!(file.validate(&catalog).ok(), Some(()));
        let json = serde_json::to_string(&file).unwrap();
        assert_eq!(serde_json::from_str::<RulesFile>(&json).unwrap(), file);
    }

    #[test]
    fn threshold_defaults_to_the_kpi_target_for_the_province_and_year() {
        let mut kpi = Catalog::builtin().get("on_time_rate").unwrap().1.clone();
        kpi.targets.push(TargetOverride {
            province: Some("01".into()),
            from_year: Some(2026),
            value: 0.9,
            ..TargetOverride::default()
        });
        let hanoi = Scope::Province("01".into());
        let at = |r: &AlertRule, scope: &Scope, now: &str| {
            let t = r.threshold_for(&kpi, scope, utc(now));
            (t.value, t.direction)
        };
        let (by_target, explicit) = (rule(""), rule("threshold = 0.5\ndirection = \"at_most\""));
        assert_eq!(at(&by_target, &hanoi, "2026-06-01T00:00:00Z"), (0.9, Direction::AtLeast));
        // 2025-12-31T17:00Z is already 2026 in Vietnam.
        assert_eq!(at(&by_target, &hanoi, "2025-12-31T17:00:00Z"), (0.9, Direction::AtLeast));
        assert_eq!(at(&by_target, &hanoi, "2025-12-31T16:59:59Z"), (0.95, Direction::AtLeast));
        assert_eq!(at(&by_target, &Scope::National, "2026-06-01T00:00:00Z"), (0.95, Direction::AtLeast));
        assert_eq!(at(&explicit, &hanoi, "2026-06-01T00:00:00Z"), (0.5, Direction::AtMost));
    }

    #[test]
    fn rules_file_accepts_every_scope_form_and_expands_each_province() {
        let text = r#"
            [[rule]]
            name = "national"
            kpi = "on_time_rate"

            [[rule]]
            name = "hanoi"
            kpi = "on_time_rate"
            scope = "01"
            window = "7d"
            for = "5m"
            keep_firing_for = "1h"
            min_denominator = 30
            hysteresis = 0.02
            severity = "critical"

            [[rule]]
            name = "two"
            kpi = "on_time_rate"
            scope = ["01", "79"]

            [[rule]]
            name = "each"
            kpi = "edoc_rate"
            scope = "each_province"
            window = "today"
        "#;
        let rules = RulesFile::from_toml(text, &Catalog::builtin()).unwrap().rule;
        let provinces = ["01", "31", "79"];
        let scopes: Vec<Vec<String>> =
            rules.iter().map(|r| r.scopes(provinces).iter().map(Scope::to_string).collect()).collect();
        assert_eq!(
            scopes,
            [
                vec!["national"],
                vec!["province:01"],
                vec!["province:01", "province:79"],
                vec!["province:01", "province:31", "province:79"],
            ]
        );
        let national = &rules[0];
        assert_eq!(
            (national.window, national.hold_for, national.keep_firing_for, national.min_denominator, national.severity),
            (Window::Mtd, Span::ZERO, Span::ZERO, 1, Severity::Warning)
        );
        let hanoi = &rules[1];
        assert_eq!(
            (hanoi.window, hanoi.hold_for, hanoi.keep_firing_for, hanoi.min_denominator, hanoi.hysteresis),
            (Window::Rolling(Span::from_secs(7 * 86_400)), Span::from_secs(300), Span::from_secs(3600), 30, 0.02)
        );
        assert_eq!(rules[3].window, Window::Today);
        // Concrete scopes persist as their display form.
        let hanoi = Scope::Province("01".into());
        assert_eq!(serde_json::to_value(&hanoi).unwrap(), "province:01");
        assert_eq!(serde_json::from_value::<Scope>(json!("province:01")).unwrap(), hanoi);
        assert_eq!(serde_json::from_value::<Scope>(json!("national")).unwrap(), Scope::National);
        assert!(serde_json::from_value::<Scope>(json!("province:1")).is_err());
    }

    #[test]
    fn invalid_rules_name_the_rule_and_the_key() {
        let catalog = Catalog::builtin();
        let rule =
            |name: &str, kpi: &str, extra: &str| format!("[[rule]]\nname = \"{name}\"\nkpi = \"{kpi}\"\n{extra}\n");
        let ok = rule("r", "on_time_rate", "");
        for (text, needle) in [
            (rule("r", "nope", ""), "alert rule `r`, key `kpi`: `nope` is not a KPI of the catalog"),
            (rule("r", "overdue_open", ""), "alert rule `r`, key `kpi`: `overdue_open` is a gauge"),
            (rule("r", "on_time_rate", "scope = \"hanoi\""), "alert rule `r`, key `scope`: `hanoi` is not national"),
            (rule("r", "on_time_rate", "scope = [\"01\", \"7\"]"), "key `scope`: `7` is not"),
            (rule("r", "on_time_rate", "scope = []"), "alert rule `r`, key `scope`: empty list"),
            (rule("r", "on_time_rate", "threshold = 80"), "alert rule `r`, key `threshold`: 80 is not a ratio"),
            (rule("r", "on_time_rate", "hysteresis = -0.1"), "alert rule `r`, key `hysteresis`: -0.1 must be"),
            (rule("a b", "on_time_rate", ""), "alert rule `a b`, key `name`: must be non-empty"),
            (format!("{ok}{ok}"), "alert rule `r`, key `name`: appears twice"),
            (rule("r", "on_time_rate", "for = \"5x\""), "`5x` is not a duration"),
            (rule("r", "on_time_rate", "window = \"weekly\""), "`weekly` is not a duration"),
            (rule("r", "on_time_rate", "thresold = 0.8"), "unknown field `thresold`"),
        ] {
            let err = RulesFile::from_toml(&text, &catalog).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err}");
        }
    }
}
