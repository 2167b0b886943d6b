//! The service index of Quyết định 766/QĐ-TTg (CONTRACT.md §7.6): groups of
//! indicators, each worth some points, most of them read from one ratio KPI.
//!
//! The index is data in the catalog (its `[index]` section, each group and indicator
//! with its source). Scoring is pure: an indicator scores `max × min(1, value /
//! threshold)`, or nothing when its KPI has no value (no events in the period) or
//! when no KPI can measure it (`kpi` absent: procedures published in the national
//! database, services offered, ...). A group scores the sum of its indicators' scores,
//! a row the sum of its groups', and `measured_max` says how many of the points could
//! be measured at all, so that a province is never compared on points no event can
//! earn.

use serde::{Deserialize, Serialize};

/// The index as the catalog defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexDef {
    pub id: String,
    pub name_vi: String,
    pub name_en: String,
    /// The decision the index comes from.
    pub source: String,
    #[serde(rename = "group")]
    pub groups: Vec<GroupDef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDef {
    pub id: String,
    pub name_vi: String,
    pub name_en: String,
    /// Points: the sum of its indicators' points.
    pub max: f64,
    pub source: String,
    #[serde(rename = "indicator")]
    pub indicators: Vec<IndicatorDef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndicatorDef {
    pub id: String,
    pub name_vi: String,
    pub name_en: String,
    /// The ratio KPI it reads; `None` where no event can measure it.
    #[serde(default)]
    pub kpi: Option<String>,
    /// Points; 0 for what the decision tracks without scoring.
    pub max: f64,
    /// The value at or above which the indicator earns all its points (0 < t ≤ 1).
    pub threshold: f64,
    pub source: String,
    /// How sure the source is, and how the decision's rule differs, if it does.
    #[serde(default)]
    pub note: Option<String>,
}

impl IndexDef {
    /// Checks what serde cannot; `is_ratio_kpi` says whether a KPI id is a ratio KPI
    /// of the catalog. Returns the offending group or indicator and the problem.
    pub fn validate(&self, is_ratio_kpi: impl Fn(&str) -> bool) -> Result<(), (String, String)> {
        let valid_id =
            |id: &str| !id.is_empty() && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let mut seen = std::collections::HashSet::new();
        if self.groups.is_empty() {
            return Err((self.id.clone(), "the index has no group".into()));
        }
        for g in &self.groups {
            if !valid_id(&g.id) || !seen.insert(g.id.as_str()) {
                return Err((g.id.clone(), "ids must be unique and [a-z0-9_]".into()));
            }
            let sum: f64 = g.indicators.iter().map(|i| i.max).sum();
            if !g.max.is_finite() || (sum - g.max).abs() > 1e-9 {
                return Err((g.id.clone(), format!("max is {}, but its indicators' points add up to {sum}", g.max)));
            }
            for i in &g.indicators {
                if !valid_id(&i.id) || !seen.insert(i.id.as_str()) {
                    return Err((i.id.clone(), "ids must be unique and [a-z0-9_]".into()));
                }
                if !i.max.is_finite() || i.max < 0.0 {
                    return Err((i.id.clone(), format!("max {} must be a number of points, at least 0", i.max)));
                }
                if !(i.threshold > 0.0 && i.threshold <= 1.0) {
                    return Err((i.id.clone(), format!("threshold {} must be above 0 and at most 1", i.threshold)));
                }
                if let Some(k) = &i.kpi
                    && !is_ratio_kpi(k)
                {
                    return Err((i.id.clone(), format!("kpi `{k}` is not a ratio KPI of the catalog")));
                }
            }
        }
        Ok(())
    }

    /// Every KPI the index reads, once each, in catalog order of first use.
    pub fn kpis(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for k in self.groups.iter().flat_map(|g| &g.indicators).filter_map(|i| i.kpi.as_deref()) {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }

    /// The maximum of the whole index (100 for QĐ 766).
    pub fn max(&self) -> f64 {
        self.groups.iter().map(|g| g.max).sum()
    }

    /// Scores one scope (the nation or a province), given the value of each KPI there
    /// (`None`: no events in the period).
    pub fn score(&self, value_of: impl Fn(&str) -> Option<f64>) -> IndexScore {
        let mut row = IndexScore::default();
        for g in &self.groups {
            let mut group = GroupScore { score: 0.0, indicators: Vec::with_capacity(g.indicators.len()) };
            for i in &g.indicators {
                let value = i.kpi.as_deref().and_then(&value_of).filter(|v| v.is_finite());
                let score = value.map(|v| i.max * (v / i.threshold).clamp(0.0, 1.0));
                if let Some(s) = score {
                    group.score += s;
                    row.measured_max += i.max;
                }
                group.indicators.push(IndicatorScore { value, score });
            }
            row.score += group.score;
            row.groups.push(group);
        }
        row
    }
}

/// The scores of one scope, in the order of the definition's groups and indicators.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexScore {
    pub score: f64,
    /// The points of the indicators that have a value.
    pub measured_max: f64,
    pub groups: Vec<GroupScore>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupScore {
    pub score: f64,
    pub indicators: Vec<IndicatorScore>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IndicatorScore {
    pub value: Option<f64>,
    pub score: Option<f64>,
}

/// Orders scored scopes best first, by score, then by key for ties (so the order is
/// stable), and returns each with its rank from 1.
pub fn rank<K: Ord>(mut rows: Vec<(K, IndexScore)>) -> Vec<(u32, K, IndexScore)> {
    rows.sort_by(|(ka, a), (kb, b)| b.score.total_cmp(&a.score).then_with(|| ka.cmp(kb)));
    rows.into_iter().enumerate().map(|(i, (k, s))| (i as u32 + 1, k, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> IndexDef {
        toml::from_str(
            r#"
            id = "t"
            name_vi = "t"
            name_en = "t"
            source = "s"
            [[group]]
            id = "a"
            name_vi = "A"
            name_en = "A"
            max = 10
            source = "s"
            [[group.indicator]]
            id = "a1"
            name_vi = "a1"
            name_en = "a1"
            kpi = "k1"
            max = 6
            threshold = 0.5
            source = "s"
            [[group.indicator]]
            id = "a2"
            name_vi = "a2"
            name_en = "a2"
            max = 4
            threshold = 1.0
            source = "s"
            [[group]]
            id = "b"
            name_vi = "B"
            name_en = "B"
            max = 8
            source = "s"
            [[group.indicator]]
            id = "b1"
            name_vi = "b1"
            name_en = "b1"
            kpi = "k2"
            max = 8
            threshold = 1.0
            source = "s"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn an_indicator_scores_its_points_times_its_value_over_the_threshold_capped_at_all_of_them() {
        let d = def();
        let s = d.score(|k| match k {
            "k1" => Some(0.25),
            "k2" => Some(0.75),
            _ => None,
        });
        // 6 × min(1, 0.25 / 0.5) = 3; the unmeasurable a2 is not scored; 8 × 0.75 = 6.
        assert_eq!(s.groups[0].indicators[0], IndicatorScore { value: Some(0.25), score: Some(3.0) });
        assert_eq!(s.groups[0].indicators[1], IndicatorScore { value: None, score: None });
        assert_eq!((s.groups[0].score, s.groups[1].score, s.score, s.measured_max), (3.0, 6.0, 9.0, 14.0));
        // At or above the threshold, all the points.
        let full = d.score(|k| (k == "k1").then_some(0.9));
        assert_eq!((full.score, full.measured_max), (6.0, 6.0), "k2 without events is left out, not 0");
        assert_eq!(d.max(), 18.0);
        assert_eq!(d.kpis(), ["k1", "k2"]);
    }

    #[test]
    fn ranks_go_from_the_best_score_with_ties_in_key_order() {
        let d = def();
        let rows = vec![("79", d.score(|_| Some(0.1))), ("01", d.score(|_| Some(0.9))), ("48", d.score(|_| Some(0.1)))];
        let ranked: Vec<(u32, &str)> = rank(rows).into_iter().map(|(r, k, _)| (r, k)).collect();
        assert_eq!(ranked, [(1, "01"), (2, "48"), (3, "79")]);
    }

    #[test]
    fn an_index_whose_points_do_not_add_up_or_whose_kpi_is_unknown_is_refused() {
        let ratio = |k: &str| k == "k1" || k == "k2";
        assert!(def().validate(ratio).is_ok());
        let mut d = def();
        d.groups[0].max = 11.0;
        assert_eq!(d.validate(ratio).unwrap_err().0, "a");
        let mut d = def();
        d.groups[1].indicators[0].kpi = Some("nope".into());
        assert!(d.validate(ratio).unwrap_err().1.contains("`nope`"));
        let mut d = def();
        d.groups[0].indicators[0].threshold = 0.0;
        assert_eq!(d.validate(ratio).unwrap_err().0, "a1");
        let mut d = def();
        d.groups[1].indicators[0].id = "a1".into();
        assert_eq!(d.validate(ratio).unwrap_err().0, "a1", "ids are unique across the index");
    }
}
