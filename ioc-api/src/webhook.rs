//! The Alertmanager webhook payload (version 4) for firing and resolved alerts, so a
//! site's existing Alertmanager consumers can take IOC notifications as they are.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use ioc_core::alert::{Action, AlertRule, Scope, Threshold};
use ioc_core::catalog::Direction;
use serde_json::{Value, json};

/// One alert to notify, as Alertmanager would see it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookAlert<'a> {
    pub rule: &'a AlertRule,
    pub scope: &'a Scope,
    pub value: f64,
    pub threshold: Threshold,
    pub starts_at: DateTime<Utc>,
    /// `None` while firing; the resolve time once resolved.
    pub ends_at: Option<DateTime<Utc>>,
}

impl<'a> WebhookAlert<'a> {
    /// The notification an action calls for (`Transition` calls for none).
    pub fn from_action(rule: &'a AlertRule, scope: &'a Scope, threshold: Threshold, action: &Action) -> Option<Self> {
        let (starts_at, ends_at, value) = match *action {
            Action::Fire { starts_at, value } => (starts_at, None, value),
            Action::Resolve { starts_at, ends_at, value } => (starts_at, Some(ends_at), value),
            Action::Transition { .. } => return None,
        };
        Some(Self { rule, scope, value, threshold, starts_at, ends_at })
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Alertmanager's label-set fingerprint (FNV-1a 64 over sorted `name 0xff value 0xff`),
/// so receivers that deduplicate on it treat our alerts like Alertmanager's.
fn fingerprint(labels: &BTreeMap<&str, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, value) in labels {
        for b in name.bytes().chain([0xff]).chain(value.bytes()).chain([0xff]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The body Alertmanager's webhook receiver would POST (`version` "4"), for one alert
/// in its own group, so existing Alertmanager consumers can take our notifications.
pub fn alertmanager_webhook(alert: &WebhookAlert<'_>, receiver: &str, external_url: &str) -> Value {
    let r = alert.rule;
    let status = if alert.ends_at.is_some() { "resolved" } else { "firing" };
    let labels: BTreeMap<&str, String> = BTreeMap::from([
        ("alertname", r.name.clone()),
        ("kpi", r.kpi.clone()),
        ("scope", alert.scope.to_string()),
        ("severity", r.severity.as_str().to_string()),
    ]);
    let t = alert.threshold;
    let (pct, target) = (alert.value * 100.0, t.value * 100.0);
    let (direction, breached) = match t.direction {
        Direction::AtLeast => ("at least", "below"),
        Direction::AtMost => ("at most", "above"),
    };
    let where_ = if alert.ends_at.is_some() { "back at" } else { breached };
    let summary =
        format!("{} ({}, {}) is {pct:.1}%, {where_} the {target:.1}% threshold", r.kpi, alert.scope, r.window);
    let description = format!(
        "Rule `{}`: KPI `{}` over window {} in scope {} is {} and should be {direction} {}.",
        r.name, r.kpi, r.window, alert.scope, alert.value, t.value
    );
    let annotations = json!({ "summary": summary, "description": description });
    let base = external_url.trim_end_matches('/');
    let group_key = format!("{{}}:{{alertname=\"{}\", scope=\"{}\"}}", r.name, alert.scope);
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": { "alertname": r.name, "scope": alert.scope.to_string() },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": base,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(alert.starts_at),
            "endsAt": alert.ends_at.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339),
            // The alert as the IOC serves it.
            "generatorURL": format!("{base}/api/v1/alerts"),
            "fingerprint": fingerprint(&labels),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use ioc_core::alert::{AlertState::Firing, RuleState, Sample, step};

    /// `min` minutes after 09:00 Vietnam time.
    fn t(min: i64) -> DateTime<Utc> {
        "2026-03-09T02:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::minutes(min)
    }

    fn v(value: f64) -> Sample {
        Sample { value: Some(value), numerator: (value * 100.0).round() as u64, denominator: 100, stale: false }
    }

    fn rule(extra: &str) -> AlertRule {
        toml::from_str(&format!("name = \"r\"\nkpi = \"on_time_rate\"\n{extra}")).unwrap()
    }

    const AT_LEAST_80: Threshold = Threshold { value: 0.8, direction: Direction::AtLeast };

    #[test]
    fn fingerprints_match_alertmanagers_label_fingerprint() {
        // The vectors of prometheus/common's labelSetToFingerprint tests.
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
        let labels =
            BTreeMap::from([("name", "garland, briggs".to_string()), ("fear", "love is not enough".to_string())]);
        assert_eq!(fingerprint(&labels), format!("{:016x}", 5_799_056_148_416_392_346_u64));
    }

    #[test]
    fn alertmanager_webhook_has_the_v4_shape_while_firing_and_once_resolved() {
        let r = rule("severity = \"critical\"");
        let scope = Scope::Province("01".into());
        let (state, actions) = step(&r, AT_LEAST_80, &RuleState::new(t(0)), &v(0.72), t(1));
        assert_eq!(state.state, Firing);
        assert_eq!(WebhookAlert::from_action(&r, &scope, AT_LEAST_80, &actions[0]), None, "transitions notify nobody");
        let firing = WebhookAlert::from_action(&r, &scope, AT_LEAST_80, &actions[1]).unwrap();
        let labels = json!({ "alertname": "r", "kpi": "on_time_rate", "scope": "province:01", "severity": "critical" });
        let annotations = json!({
            "summary": "on_time_rate (province:01, mtd) is 72.0%, below the 80.0% threshold",
            "description": "Rule `r`: KPI `on_time_rate` over window mtd in scope province:01 is 0.72 and should be at least 0.8.",
        });
        let mut want = json!({
            "version": "4",
            "groupKey": "{}:{alertname=\"r\", scope=\"province:01\"}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "ioc",
            "groupLabels": { "alertname": "r", "scope": "province:01" },
            "commonLabels": labels,
            "commonAnnotations": annotations,
            "externalURL": "https://ioc.example",
            "alerts": [{
                "status": "firing",
                "labels": labels,
                "annotations": annotations,
                "startsAt": "2026-03-09T02:01:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "https://ioc.example/api/v1/alerts",
                "fingerprint": "f9c422d2b82c8cb3",
            }],
        });
        assert_eq!(alertmanager_webhook(&firing, "ioc", "https://ioc.example/"), want);
        let (_, actions) = step(&r, AT_LEAST_80, &state, &v(0.85), t(90));
        let resolved = WebhookAlert::from_action(&r, &scope, AT_LEAST_80, &actions[1]).unwrap();
        let summary = "on_time_rate (province:01, mtd) is 85.0%, back at the 80.0% threshold";
        let description =
            "Rule `r`: KPI `on_time_rate` over window mtd in scope province:01 is 0.85 and should be at least 0.8.";
        want["status"] = json!("resolved");
        want["commonAnnotations"] = json!({ "summary": summary, "description": description });
        want["alerts"][0]["annotations"] = want["commonAnnotations"].clone();
        want["alerts"][0]["status"] = json!("resolved");
        want["alerts"][0]["endsAt"] = json!("2026-03-09T03:30:00Z");
        assert_eq!(alertmanager_webhook(&resolved, "ioc", "https://ioc.example"), want);
    }
}
