//! The KPI catalog: data, not code (CONTRACT.md §2).
//!
//! A ratio KPI names one event type and two SQL boolean expressions over that type's
//! table: `denominator` selects the events counted below the line, and `numerator` is
//! an extra condition applied on top of the denominator. A new ratio KPI therefore
//! needs only a new `[[kpi]]` entry. Targets can be overridden per province and per
//! year. The default catalog ships inside the binary (`config/kpis.toml`).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::admin::is_digits;
use crate::event::{EventType, Family};
use crate::index::IndexDef;

/// The shipped default catalog.
pub const DEFAULT_CATALOG_TOML: &str = include_str!("../../config/kpis.toml");

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("KPI catalog is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("KPI catalog, kpi `{id}`: {message}")]
    Invalid { id: String, message: String },
    #[error("KPI catalog, index: `{id}`: {message}")]
    Index { id: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    AtLeast,
    AtMost,
}

impl Direction {
    /// As in the contract and the catalog file.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::AtLeast => "at_least",
            Direction::AtMost => "at_most",
        }
    }

    /// Whether `value` meets `target` in this direction.
    pub fn meets(self, value: f64, target: f64) -> bool {
        match self {
            Direction::AtLeast => value >= target,
            Direction::AtMost => value <= target,
        }
    }
}

/// Built-in gauges: KPIs that are not ratios of event counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gauge {
    /// Dossiers received, not yet resolved or closed, and past their due time.
    OverdueOpen,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KpiKind {
    Ratio { event_type: EventType, denominator: String, numerator: String },
    Gauge(Gauge),
}

/// A target override for a province and/or a year.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetOverride {
    /// Province code; absent means the national scope.
    #[serde(default)]
    pub province: Option<String>,
    /// Year (Vietnam time); absent means every year.
    #[serde(default)]
    pub year: Option<i32>,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KpiDef {
    pub id: String,
    pub name_vi: String,
    pub name_en: String,
    pub kind: KpiKind,
    pub target: f64,
    pub direction: Direction,
    pub targets: Vec<TargetOverride>,
}

impl KpiDef {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            KpiKind::Ratio { .. } => "ratio",
            KpiKind::Gauge(_) => "gauge",
        }
    }

    /// The family whose table the KPI reads (gauges read dossiers).
    pub fn family(&self) -> Family {
        match &self.kind {
            KpiKind::Ratio { event_type, .. } => event_type.family(),
            KpiKind::Gauge(Gauge::OverdueOpen) => Family::Dossier,
        }
    }

    /// The target that applies to a scope (`None` = national) in a year. The most
    /// specific override wins: province and year, then province, then national year,
    /// then the default.
    pub fn target_for(&self, province: Option<&str>, year: i32) -> f64 {
        let score = |t: &TargetOverride| -> Option<u8> {
            let p = match (&t.province, province) {
                (None, _) => 0,
                (Some(a), Some(b)) if a == b => 2,
                _ => return None,
            };
            let y = match t.year {
                None => 0,
                Some(ty) if ty == year => 1,
                _ => return None,
            };
            Some(p + y)
        };
        self.targets
            .iter()
            .filter_map(|t| score(t).map(|s| (s, t.value)))
            .max_by_key(|(s, _)| *s)
            .map_or(self.target, |(_, v)| v)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    kpi: Vec<RawKpi>,
    /// The service index built from the KPIs (CONTRACT.md §7.6).
    #[serde(default)]
    index: Option<IndexDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKpi {
    id: String,
    name_vi: String,
    name_en: String,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    denominator: Option<String>,
    #[serde(default)]
    numerator: Option<String>,
    #[serde(default)]
    gauge: Option<Gauge>,
    target: f64,
    direction: Direction,
    #[serde(default)]
    targets: Vec<TargetOverride>,
}

/// The KPI catalog, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    kpis: Vec<KpiDef>,
    index: Option<IndexDef>,
}

impl Catalog {
    /// The catalog shipped with the product.
    pub fn builtin() -> Self {
        Self::from_toml(DEFAULT_CATALOG_TOML).expect("the shipped catalog is valid")
    }

    pub fn from_toml(text: &str) -> Result<Self, CatalogError> {
        let raw: RawCatalog = toml::from_str(text)?;
        let mut seen = HashSet::new();
        let mut kpis = Vec::with_capacity(raw.kpi.len());
        for k in raw.kpi {
            let bad = |message: String| CatalogError::Invalid { id: k.id.clone(), message };
            if k.id.is_empty() || !k.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                return Err(bad("id must be non-empty [a-z0-9_]".into()));
            }
            if !seen.insert(k.id.clone()) {
                return Err(bad("id appears twice".into()));
            }
            let kind = match (&k.gauge, &k.event) {
                (Some(g), None) => {
                    if k.denominator.is_some() || k.numerator.is_some() {
                        return Err(bad("a gauge has no numerator or denominator".into()));
                    }
                    KpiKind::Gauge(*g)
                }
                (None, Some(ev)) => {
                    let event_type =
                        EventType::parse(ev).ok_or_else(|| bad(format!("event `{ev}` is not a known event type")))?;
                    let denominator = k.denominator.clone().unwrap_or_else(|| "true".into());
                    let numerator = k.numerator.clone().ok_or_else(|| bad("a ratio needs `numerator`".into()))?;
                    if denominator.trim().is_empty() || numerator.trim().is_empty() {
                        return Err(bad("expressions must not be empty".into()));
                    }
                    if [&denominator, &numerator].iter().any(|e| e.contains(';')) {
                        return Err(bad("an expression must not contain `;`".into()));
                    }
                    KpiKind::Ratio { event_type, denominator, numerator }
                }
                _ => return Err(bad("set exactly one of `event` (a ratio) or `gauge`".into())),
            };
            if !k.target.is_finite() || matches!(kind, KpiKind::Ratio { .. }) && !(0.0..=1.0).contains(&k.target) {
                return Err(bad(format!("target {} is out of range", k.target)));
            }
            for t in &k.targets {
                if let Some(p) = &t.province
                    && !is_digits(p, 2)
                {
                    return Err(bad(format!("target override province `{p}` is not 2 digits")));
                }
                if !t.value.is_finite() {
                    return Err(bad("target override value must be finite".into()));
                }
            }
            kpis.push(KpiDef {
                id: k.id,
                name_vi: k.name_vi,
                name_en: k.name_en,
                kind,
                target: k.target,
                direction: k.direction,
                targets: k.targets,
            });
        }
        if kpis.is_empty() {
            return Err(CatalogError::Invalid { id: String::new(), message: "the catalog has no KPI".into() });
        }
        if let Some(index) = &raw.index {
            let is_ratio = |id: &str| kpis.iter().any(|k| k.id == id && matches!(k.kind, KpiKind::Ratio { .. }));
            index.validate(is_ratio).map_err(|(id, message)| CatalogError::Index { id, message })?;
        }
        Ok(Self { kpis, index: raw.index })
    }

    pub fn kpis(&self) -> &[KpiDef] {
        &self.kpis
    }

    /// The service index, when the catalog defines one.
    pub fn index(&self) -> Option<&IndexDef> {
        self.index.as_ref()
    }

    pub fn get(&self, id: &str) -> Option<(usize, &KpiDef)> {
        self.kpis.iter().enumerate().find(|(_, k)| k.id == id)
    }

    pub fn len(&self) -> usize {
        self.kpis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kpis.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_the_14_ratios_and_the_overdue_gauge() {
        let c = Catalog::builtin();
        let ids: Vec<&str> = c.kpis().iter().map(|k| k.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "full_online_rate",
                "online_submission_rate",
                "digitization_rate",
                "data_reuse_rate",
                "eid_auth_rate",
                "on_time_rate",
                "e_result_rate",
                "online_payment_rate",
                "satisfaction_rate",
                "edoc_rate",
                "signed_edoc_rate",
                "online_work_record_rate",
                "digital_inspection_rate",
                "report_online_rate",
                "overdue_open",
            ]
        );
        let (_, full) = c.get("full_online_rate").unwrap();
        assert_eq!(full.target, 0.80);
        assert_eq!(full.name_vi, "Tỷ lệ hồ sơ TTHC xử lý trực tuyến toàn trình");
        let (_, gauge) = c.get("overdue_open").unwrap();
        assert_eq!(
            (gauge.kind.clone(), gauge.target, gauge.direction),
            (KpiKind::Gauge(Gauge::OverdueOpen), 0.0, Direction::AtMost)
        );
    }

    #[test]
    fn the_most_specific_target_override_wins() {
        let c = Catalog::from_toml(
            r#"
            [[kpi]]
            id = "x"
            name_vi = "x"
            name_en = "x"
            event = "dossier.received"
            numerator = "digitized"
            target = 0.8
            direction = "at_least"
            targets = [
              { year = 2026, value = 0.85 },
              { province = "01", value = 0.7 },
              { province = "01", year = 2026, value = 0.9 },
            ]
            "#,
        )
        .unwrap();
        let k = &c.kpis()[0];
        assert_eq!(k.target_for(None, 2025), 0.8);
        assert_eq!(k.target_for(None, 2026), 0.85);
        assert_eq!(k.target_for(Some("79"), 2026), 0.85);
        assert_eq!(k.target_for(Some("01"), 2025), 0.7);
        assert_eq!(k.target_for(Some("01"), 2026), 0.9);
        if let KpiKind::Ratio { denominator, .. } = &k.kind {
            assert_eq!(denominator, "true", "a missing denominator means all events");
        }
    }

    #[test]
    fn invalid_catalogs_name_the_kpi_and_the_problem() {
        let base = |extra: &str| {
            format!(
                "[[kpi]]\nid = \"k\"\nname_vi = \"k\"\nname_en = \"k\"\ntarget = 0.5\ndirection = \"at_least\"\n{extra}"
            )
        };
        for (extra, needle) in [
            ("event = \"dossier.nope\"\nnumerator = \"x\"", "not a known event type"),
            ("event = \"dossier.paid\"", "needs `numerator`"),
            ("", "exactly one of"),
            ("event = \"dossier.paid\"\nnumerator = \"online; DROP\"", "`;`"),
            ("event = \"dossier.paid\"\nnumerator = \"online\"\nunknown_key = 1", "unknown field"),
        ] {
            let err = Catalog::from_toml(&base(extra)).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra:?} gave {err}");
        }
        let twice = format!("{}\nevent = \"dossier.paid\"\nnumerator = \"online\"\n", base(""));
        let err = Catalog::from_toml(&format!("{twice}{twice}")).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn direction_decides_whether_a_value_meets_its_target() {
        assert!(Direction::AtLeast.meets(0.8, 0.8));
        assert!(!Direction::AtLeast.meets(0.79, 0.8));
        assert!(Direction::AtMost.meets(0.0, 0.0));
        assert!(!Direction::AtMost.meets(1.0, 0.0));
    }
}
