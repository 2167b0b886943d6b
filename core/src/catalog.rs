//! The KPI catalog: data, not code (CONTRACT.md §2).
//!
//! A ratio KPI names one event type and two SQL boolean expressions over that type's
//! table: `denominator` selects the events counted below the line, and `numerator` is
//! an extra condition applied on top of the denominator. A new ratio KPI therefore
//! needs only a new `[[kpi]]` entry. The default catalog ships inside the binary
//! (`config/kpis.toml`).
//!
//! **Targets** are sourced data (CONTRACT.md §7.4). Each KPI has a national default
//! (`target`, `target_source`) and may have entries (`targets`) limited to a province,
//! to the years from `from_year` on, and to one event `level`, each with its `source`.
//! [`KpiDef::target`] resolves them: among the entries that apply, a province's own
//! beats a national one; within a scope the latest `from_year` wins (the default is
//! from the beginning of time); at an equal `from_year`, a level-limited entry beats a
//! level-free one. An entry limited to a level applies only when the question names
//! that level. Catalog version 1's `year = Y` is still accepted and keeps its meaning,
//! that year only: it ranks as `from_year = Y` and does not apply in other years.

use std::collections::HashSet;

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::AdminUnits;
use crate::admin::is_digits;
use crate::event::{EventType, Family, Level};
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

/// The level named in the catalog file (`central`, `province`, `commune`).
pub fn parse_level(s: &str) -> Option<Level> {
    [Level::Central, Level::Province, Level::Commune].into_iter().find(|l| l.as_str() == s)
}

fn de_level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Level>, D::Error> {
    let s = String::deserialize(d)?;
    parse_level(&s)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("level `{s}` is not one of central, province, commune")))
}

/// A target entry of `targets`: a value, its source, and where and from when it applies.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetOverride {
    /// Province code; absent means the national scope.
    #[serde(default)]
    pub province: Option<String>,
    /// The first year (Vietnam time) it applies in; absent means since always.
    #[serde(default)]
    pub from_year: Option<i32>,
    /// Catalog version 1: the one year it applies in. Ranks as `from_year` would.
    #[serde(default)]
    pub year: Option<i32>,
    /// Only for questions about this level; absent means any level.
    #[serde(default, deserialize_with = "de_level")]
    pub level: Option<Level>,
    pub value: f64,
    /// The document and clause the value comes from.
    #[serde(default)]
    pub source: Option<String>,
}

impl TargetOverride {
    fn applies(&self, province: Option<&str>, year: i32, level: Option<Level>) -> bool {
        (self.province.is_none() || self.province.as_deref() == province)
            && self.from_year.is_none_or(|from| from <= year)
            && self.year.is_none_or(|only| only == year)
            && (self.level.is_none() || self.level == level)
    }

    /// Precedence among the entries that apply, greatest first: a province's own, then
    /// the latest start (`None`, since always, is the earliest), then a level-limited one.
    fn rank(&self) -> (bool, Option<i32>, bool) {
        (self.province.is_some(), self.year.or(self.from_year), self.level.is_some())
    }
}

/// The target that applies to a question, and the source it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target<'a> {
    pub value: f64,
    /// `None` when the catalog names no source (a custom catalog may omit it).
    pub source: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KpiDef {
    pub id: String,
    pub name_vi: String,
    pub name_en: String,
    pub kind: KpiKind,
    /// The national default, from the beginning of time, any level.
    pub target: f64,
    pub target_source: Option<String>,
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

    /// The target for a scope (`None` = national), a year (Vietnam time) and
    /// optionally a level, with its source: see the module docs for the precedence.
    /// Entries are checked at load so that no two that can apply together rank equal.
    pub fn target(&self, province: Option<&str>, year: i32, level: Option<Level>) -> Target<'_> {
        self.targets.iter().filter(|t| t.applies(province, year, level)).max_by_key(|t| t.rank()).map_or(
            Target { value: self.target, source: self.target_source.as_deref() },
            |t| Target { value: t.value, source: t.source.as_deref() },
        )
    }

    /// The value of [`KpiDef::target`] for a question without a level.
    pub fn target_for(&self, province: Option<&str>, year: i32) -> f64 {
        self.target(province, year, None).value
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
    #[serde(default)]
    target_source: Option<String>,
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
            let in_range = |v: f64| v.is_finite() && (matches!(kind, KpiKind::Gauge(_)) || (0.0..=1.0).contains(&v));
            if !in_range(k.target) {
                return Err(bad(format!("target {} is out of range", k.target)));
            }
            if k.target_source.as_ref().is_some_and(|s| s.trim().is_empty()) {
                return Err(bad("`target_source` must not be empty".into()));
            }
            let mut ranks = HashSet::new();
            for (i, t) in k.targets.iter().enumerate() {
                if let Some(p) = &t.province
                    && !is_digits(p, 2)
                {
                    return Err(bad(format!("targets[{i}].province: `{p}` is not 2 digits")));
                }
                if !in_range(t.value) {
                    return Err(bad(format!("targets[{i}].value: {} is out of range", t.value)));
                }
                if t.year.is_some() && t.from_year.is_some() {
                    return Err(bad(format!(
                        "targets[{i}]: set `from_year` (from that year on) or `year` (that year only), not both"
                    )));
                }
                if t.source.as_ref().is_some_and(|s| s.trim().is_empty()) {
                    return Err(bad(format!("targets[{i}].source must not be empty")));
                }
                // Two entries with the same province, start and level would tie; one with
                // none of them is the default `target` again.
                let key = (t.province.clone(), t.year.or(t.from_year), t.level.map(Level::as_str));
                if key == (None, None, None) {
                    return Err(bad(format!(
                        "targets[{i}] has no `province`, `from_year`, `year` or `level`: that is `target`"
                    )));
                }
                if !ranks.insert(key) {
                    return Err(bad(format!(
                        "targets[{i}] has the same province, start year and level as an earlier entry"
                    )));
                }
            }
            kpis.push(KpiDef {
                id: k.id,
                name_vi: k.name_vi,
                name_en: k.name_en,
                kind,
                target: k.target,
                target_source: k.target_source,
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

    /// Checks the province of every target entry against the reference data: a code
    /// that is not one of the provinces in effect (e.g. one abolished on 2025-07-01) is
    /// an error naming the KPI and the entry.
    pub fn check_provinces(&self, units: &AdminUnits) -> Result<(), CatalogError> {
        for k in &self.kpis {
            for (i, t) in k.targets.iter().enumerate() {
                if let Some(p) = &t.province
                    && units.province(p).is_none()
                {
                    return Err(CatalogError::Invalid {
                        id: k.id.clone(),
                        message: format!(
                            "targets[{i}].province: `{p}` is not one of the {} province codes in effect since 2025-07-01",
                            units.provinces().len()
                        ),
                    });
                }
            }
        }
        Ok(())
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
    fn builtin_catalog_has_the_17_ratios_and_the_overdue_gauge() {
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
                "feedback_on_time_rate",
                "feedback_satisfaction_rate",
                "dvcqg_sync_rate",
                "overdue_open",
            ]
        );
        let (_, full) = c.get("full_online_rate").unwrap();
        assert_eq!(full.target, 0.80);
        assert_eq!(full.name_vi, "Tỷ lệ hồ sơ trực tuyến toàn trình");
        let (_, gauge) = c.get("overdue_open").unwrap();
        assert_eq!(
            (gauge.kind.clone(), gauge.target, gauge.direction),
            (KpiKind::Gauge(Gauge::OverdueOpen), 0.0, Direction::AtMost)
        );
    }

    const QD1105_DIGITIZATION: &str = "QĐ 1105/QĐ-BNV: 100% hồ sơ ... thủ tục hành chính được số hóa";
    const QD1105_EDOC: &str = "QĐ 1105/QĐ-BNV: 100% văn bản trao đổi ... dưới dạng điện tử";
    const PLAN_2021: &str =
        "Kế hoạch chuyển đổi số của Bộ Nội vụ đến năm 2025, định hướng đến năm 2030 (2021); điều khoản chưa xác minh";
    const PLAN_2021_2030: &str = "Kế hoạch chuyển đổi số của Bộ Nội vụ đến năm 2025, định hướng đến năm 2030 (2021), mục tiêu đến năm 2030; điều khoản chưa xác minh";
    const PLAN_24_2024: &str = "Kế hoạch chuyển đổi số năm 2024 của Sở Nội vụ tỉnh Bắc Giang (mã tỉnh 24 đến 30/6/2025); số hiệu, điều khoản chưa xác minh";

    /// The shipped catalog's targets (CONTRACT.md §7.4), resolved: a province's own entry
    /// beats a national one even when the national one is newer; a level-limited entry
    /// applies only to questions about its level.
    #[test]
    fn shipped_targets_resolve_by_province_year_and_level() {
        let c = Catalog::builtin();
        let p = Some(Level::Province);
        // (kpi, province, year, level, target, source)
        type Case<'a> = (&'a str, Option<&'a str>, i32, Option<Level>, f64, &'a str);
        let cases: [Case<'_>; 28] = [
            ("digitization_rate", None, 2026, None, 1.00, QD1105_DIGITIZATION),
            ("digitization_rate", Some("24"), 2024, None, 1.00, QD1105_DIGITIZATION),
            ("edoc_rate", None, 2026, None, 1.00, QD1105_EDOC),
            ("edoc_rate", Some("24"), 2023, None, 1.00, QD1105_EDOC),
            ("edoc_rate", Some("24"), 2024, None, 1.00, PLAN_24_2024),
            ("full_online_rate", None, 2024, None, 0.80, PLAN_2021),
            ("full_online_rate", Some("24"), 2023, None, 0.80, PLAN_2021),
            ("full_online_rate", Some("24"), 2024, None, 0.70, PLAN_24_2024),
            ("full_online_rate", Some("01"), 2024, None, 0.80, PLAN_2021),
            ("online_payment_rate", Some("24"), 2024, None, 0.60, PLAN_24_2024),
            ("data_reuse_rate", Some("24"), 2024, None, 0.50, PLAN_24_2024),
            ("online_work_record_rate", None, 2029, None, 0.90, PLAN_2021),
            ("online_work_record_rate", None, 2030, None, 1.00, PLAN_2021_2030),
            ("online_work_record_rate", None, 2031, None, 1.00, PLAN_2021_2030),
            ("online_work_record_rate", Some("24"), 2024, None, 0.90, PLAN_2021),
            ("online_work_record_rate", Some("24"), 2030, None, 1.00, PLAN_2021_2030),
            ("online_work_record_rate", Some("24"), 2023, p, 0.90, PLAN_2021),
            ("online_work_record_rate", Some("24"), 2024, p, 0.95, PLAN_24_2024),
            ("online_work_record_rate", Some("24"), 2029, p, 0.95, PLAN_24_2024),
            ("online_work_record_rate", Some("24"), 2030, p, 0.95, PLAN_24_2024),
            ("online_work_record_rate", Some("24"), 2031, p, 0.95, PLAN_24_2024),
            ("online_work_record_rate", Some("24"), 2030, Some(Level::Commune), 1.00, PLAN_2021_2030),
            ("online_work_record_rate", Some("01"), 2030, p, 1.00, PLAN_2021_2030),
            ("digital_inspection_rate", None, 2029, None, 0.50, PLAN_2021),
            ("digital_inspection_rate", None, 2030, None, 0.70, PLAN_2021_2030),
            ("digital_inspection_rate", Some("24"), 2024, None, 0.30, PLAN_24_2024),
            ("digital_inspection_rate", Some("24"), 2029, None, 0.30, PLAN_24_2024),
            ("digital_inspection_rate", Some("24"), 2030, None, 0.30, PLAN_24_2024),
        ];
        let got: Vec<_> = cases
            .iter()
            .map(|&(id, province, year, level, _, _)| {
                let t = c.get(id).unwrap().1.target(province, year, level);
                (id, province, year, level, t.value, t.source.unwrap_or("(none)"))
            })
            .collect();
        assert_eq!(got, cases);
    }

    #[test]
    fn every_shipped_target_names_its_source_and_a_province_in_effect() {
        let c = Catalog::builtin();
        for k in c.kpis() {
            assert!(k.target_source.as_ref().is_some_and(|s| !s.is_empty()), "{}: target_source", k.id);
            for (i, t) in k.targets.iter().enumerate() {
                assert!(t.source.as_ref().is_some_and(|s| !s.is_empty()), "{}: targets[{i}].source", k.id);
            }
        }
        c.check_provinces(&AdminUnits::builtin()).unwrap();
    }

    /// Within a scope the latest `from_year` wins, whatever the level; an equal start
    /// goes to the level-limited entry; a province's own entry beats every national one.
    #[test]
    fn a_province_beats_the_nation_then_the_latest_start_then_the_level() {
        let c = Catalog::from_toml(
            r#"
            [[kpi]]
            id = "x"
            name_vi = "x"
            name_en = "x"
            event = "work_record.closed"
            numerator = "online"
            target = 0.5
            target_source = "default"
            direction = "at_least"
            targets = [
              { from_year = 2026, value = 0.6, source = "national 2026" },
              { from_year = 2026, level = "commune", value = 0.65, source = "national 2026 commune" },
              { level = "central", value = 0.9, source = "national central" },
              { province = "01", from_year = 2024, level = "province", value = 0.7, source = "01 2024 province" },
              { province = "01", from_year = 2027, value = 0.8, source = "01 2027" },
            ]
            "#,
        )
        .unwrap();
        let k = &c.kpis()[0];
        let at = |province, year, level| {
            let t = k.target(province, year, level);
            (t.value, t.source.unwrap())
        };
        assert_eq!(at(None, 2025, None), (0.5, "default"));
        assert_eq!(at(None, 2026, None), (0.6, "national 2026"));
        assert_eq!(at(None, 2026, Some(Level::Commune)), (0.65, "national 2026 commune"));
        assert_eq!(at(None, 2026, Some(Level::Province)), (0.6, "national 2026"));
        // A later national start beats an earlier level-limited national entry.
        assert_eq!(at(None, 2025, Some(Level::Central)), (0.9, "national central"));
        assert_eq!(at(None, 2026, Some(Level::Central)), (0.6, "national 2026"));
        assert_eq!(at(Some("01"), 2026, None), (0.6, "national 2026"));
        assert_eq!(at(Some("01"), 2026, Some(Level::Province)), (0.7, "01 2024 province"));
        assert_eq!(at(Some("01"), 2026, Some(Level::Commune)), (0.65, "national 2026 commune"));
        // Within the province, the latest start wins over the level-limited entry.
        assert_eq!(at(Some("01"), 2027, Some(Level::Province)), (0.8, "01 2027"));
        assert_eq!(at(Some("01"), 2027, Some(Level::Commune)), (0.8, "01 2027"));
        assert_eq!(at(Some("79"), 2027, Some(Level::Province)), (0.6, "national 2026"));
        assert_eq!(k.target_for(Some("01"), 2026), 0.6);
    }

    #[test]
    fn a_target_on_a_province_code_not_in_effect_is_refused_naming_the_entry() {
        let c = Catalog::from_toml(
            r#"
            [[kpi]]
            id = "edoc_rate"
            name_vi = "x"
            name_en = "x"
            event = "document.sent"
            numerator = "electronic"
            target = 1.0
            direction = "at_least"
            targets = [
              { province = "01", from_year = 2026, value = 0.95 },
              { province = "02", from_year = 2024, value = 0.9 },
            ]
            "#,
        )
        .unwrap();
        // 02 (Hà Giang) was abolished on 2025-07-01: it is now part of 08.
        let err = c.check_provinces(&AdminUnits::builtin()).unwrap_err().to_string();
        assert!(
            err.contains("kpi `edoc_rate`")
                && err.contains("targets[1].province: `02` is not one of the 34 province codes"),
            "{err}"
        );
    }

    #[test]
    fn catalog_version_1_year_entries_keep_their_exact_year_meaning() {
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
        assert_eq!((k.target_for(None, 2027), k.target_for(Some("01"), 2027)), (0.8, 0.7), "that year only");
        assert_eq!(k.target(None, 2026, None).source, None, "no source given");
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
            (
                "event = \"dossier.paid\"\nnumerator = \"online\"\ntargets = [{ year = 2026, from_year = 2026, value = 1 }]",
                "targets[0]: set `from_year`",
            ),
            (
                "event = \"dossier.paid\"\nnumerator = \"online\"\ntargets = [{ from_year = 2026, value = 1 }, { year = 2026, value = 0.9 }]",
                "targets[1] has the same province, start year and level",
            ),
            ("event = \"dossier.paid\"\nnumerator = \"online\"\ntargets = [{ value = 1 }]", "that is `target`"),
            (
                "event = \"dossier.paid\"\nnumerator = \"online\"\ntargets = [{ level = \"ward\", value = 1 }]",
                "level `ward` is not one of",
            ),
            (
                "event = \"dossier.paid\"\nnumerator = \"online\"\ntargets = [{ from_year = 2030, value = 1.5 }]",
                "targets[0].value",
            ),
            (
                "event = \"dossier.paid\"\nnumerator = \"online\"\ntargets = [{ province = \"1\", value = 1 }]",
                "targets[0].province: `1` is not 2 digits",
            ),
            (
                "event = \"dossier.paid\"\nnumerator = \"online\"\ntarget_source = \" \"",
                "`target_source` must not be empty",
            ),
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
