//! Reference data: the 34 provinces and 3,321 communes in effect since 2025-07-01, and
//! the 63 province codes in use before that date with the province each went into.
//!
//! The CSVs ship inside the binary (`data/admin_units_2025.csv`,
//! `data/province_codes_2025.csv`), so validation works air-gapped with no files to
//! install. Codes are the keys; names are for display only.

use std::collections::HashMap;

use serde::Deserialize;
use thiserror::Error;

/// The shipped copy of the reference data.
pub const ADMIN_UNITS_CSV: &str = include_str!("../../data/admin_units_2025.csv");

/// The shipped copy of the map from the 63 province codes in use before 2025-07-01 to
/// the province that holds each since (Nghị quyết 202/2025/QH15).
pub const PROVINCE_CODES_CSV: &str = include_str!("../../data/province_codes_2025.csv");

#[derive(Debug, Error)]
pub enum AdminUnitsError {
    #[error("admin units CSV, line {line}: {source}")]
    Csv { line: u64, source: csv::Error },
    #[error("admin units CSV, line {line}: {message}")]
    Invalid { line: u64, message: String },
    #[error("province codes CSV, line {line}: {message}")]
    Legacy { line: u64, message: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Commune {
    pub province_code: String,
    pub province_name: String,
    pub province_short: String,
    pub province_lat: f64,
    pub province_lon: f64,
    pub commune_code: String,
    pub commune_name: String,
    pub commune_type: String,
    pub commune_lat: Option<f64>,
    pub commune_lon: Option<f64>,
    pub commune_area_km2: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Province {
    pub code: String,
    pub name: String,
    pub short_name: String,
    pub lat: f64,
    pub lon: f64,
}

/// A province code in use before 2025-07-01 and the province that holds it since.
/// Every old province went whole into one new one, so the map is exact.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LegacyProvince {
    pub old_province_code: String,
    pub old_province_name: String,
    pub province_code: String,
    pub province_name: String,
}

/// Provinces and communes, indexed by code, and the pre-2025 province codes.
#[derive(Debug, Clone)]
pub struct AdminUnits {
    provinces: Vec<Province>,
    communes: Vec<Commune>,
    province_index: HashMap<String, usize>,
    commune_index: HashMap<String, usize>,
    legacy: Vec<LegacyProvince>,
    legacy_index: HashMap<String, usize>,
}

impl AdminUnits {
    /// The reference data shipped with the product, with the pre-2025 province codes.
    pub fn builtin() -> Self {
        Self::from_csv(ADMIN_UNITS_CSV)
            .and_then(|u| u.with_legacy_codes(PROVINCE_CODES_CSV))
            .expect("the shipped reference data is valid")
    }

    /// Adds the map of pre-2025 province codes (`old_province_code, old_province_name,
    /// province_code, province_name`). Every new code must be one of these provinces,
    /// under the same name, and no old code may appear twice.
    pub fn with_legacy_codes(mut self, text: &str) -> Result<Self, AdminUnitsError> {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let (mut legacy, mut legacy_index) = (Vec::new(), HashMap::new());
        for row in reader.deserialize::<LegacyProvince>() {
            let line = legacy.len() as u64 + 2;
            let row = row.map_err(|e| AdminUnitsError::Legacy { line, message: e.to_string() })?;
            let bad = |message: String| AdminUnitsError::Legacy { line, message };
            if !is_digits(&row.old_province_code, 2) {
                return Err(bad(format!("old code `{}` is not 2 digits", row.old_province_code)));
            }
            match self.province(&row.province_code) {
                None => return Err(bad(format!("`{}` is not a province code in effect", row.province_code))),
                Some(p) if p.name != row.province_name => {
                    return Err(bad(format!("`{}` is {}, not {}", p.code, p.name, row.province_name)));
                }
                Some(_) => {}
            }
            if legacy_index.insert(row.old_province_code.clone(), legacy.len()).is_some() {
                return Err(bad(format!("old code `{}` appears twice", row.old_province_code)));
            }
            legacy.push(row);
        }
        self.legacy = legacy;
        self.legacy_index = legacy_index;
        Ok(self)
    }

    pub fn from_csv(text: &str) -> Result<Self, AdminUnitsError> {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let mut provinces = Vec::new();
        let mut communes: Vec<Commune> = Vec::new();
        let mut province_index = HashMap::new();
        let mut commune_index = HashMap::new();
        for row in reader.deserialize::<Commune>() {
            let row =
                row.map_err(|e| AdminUnitsError::Csv { line: e.position().map_or(0, |p| p.line()), source: e })?;
            let line = communes.len() as u64 + 2;
            if !is_digits(&row.province_code, 2) || !is_digits(&row.commune_code, 5) {
                return Err(AdminUnitsError::Invalid {
                    line,
                    message: format!(
                        "codes must be 2 and 5 digits, got `{}` and `{}`",
                        row.province_code, row.commune_code
                    ),
                });
            }
            if !province_index.contains_key(&row.province_code) {
                province_index.insert(row.province_code.clone(), provinces.len());
                provinces.push(Province {
                    code: row.province_code.clone(),
                    name: row.province_name.clone(),
                    short_name: row.province_short.clone(),
                    lat: row.province_lat,
                    lon: row.province_lon,
                });
            }
            if commune_index.insert(row.commune_code.clone(), communes.len()).is_some() {
                return Err(AdminUnitsError::Invalid {
                    line,
                    message: format!("commune code `{}` appears twice", row.commune_code),
                });
            }
            communes.push(row);
        }
        Ok(Self {
            provinces,
            communes,
            province_index,
            commune_index,
            legacy: Vec::new(),
            legacy_index: HashMap::new(),
        })
    }

    pub fn provinces(&self) -> &[Province] {
        &self.provinces
    }

    pub fn communes(&self) -> &[Commune] {
        &self.communes
    }

    pub fn province(&self, code: &str) -> Option<&Province> {
        self.province_index.get(code).map(|&i| &self.provinces[i])
    }

    pub fn commune(&self, code: &str) -> Option<&Commune> {
        self.commune_index.get(code).map(|&i| &self.communes[i])
    }

    /// A province code in use before 2025-07-01, with the province that holds it since
    /// (the same code for the provinces that kept theirs).
    pub fn legacy_province(&self, old_code: &str) -> Option<&LegacyProvince> {
        self.legacy_index.get(old_code).map(|&i| &self.legacy[i])
    }

    /// The pre-2025 province codes, in file order.
    pub fn legacy_provinces(&self) -> &[LegacyProvince] {
        &self.legacy
    }

    /// Communes of one province, in file order.
    pub fn communes_of<'a>(&'a self, province_code: &'a str) -> impl Iterator<Item = &'a Commune> + 'a {
        self.communes.iter().filter(move |c| c.province_code == province_code)
    }
}

/// True when `s` is exactly `n` ASCII digits.
pub fn is_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_reference_data_has_34_provinces_and_3321_communes() {
        let units = AdminUnits::builtin();
        assert_eq!(units.provinces().len(), 34);
        assert_eq!(units.communes().len(), 3321);
        assert_eq!(units.province("01").unwrap().name, "Thành phố Hà Nội");
        let ba_dinh = units.commune("00004").unwrap();
        assert_eq!(ba_dinh.province_code, "01");
        assert_eq!(ba_dinh.commune_name, "Phường Ba Đình");
        assert!(units.province("99").is_none());
        // Every province has communes, and every commune's province exists.
        for p in units.provinces() {
            assert!(units.communes_of(&p.code).next().is_some(), "{} has no commune", p.code);
        }
    }

    #[test]
    fn the_63_old_province_codes_map_to_the_province_holding_each_since_2025() {
        let units = AdminUnits::builtin();
        let legacy = units.legacy_provinces();
        assert_eq!(legacy.len(), 63);
        let changed: Vec<&str> = legacy
            .iter()
            .filter(|l| l.old_province_code != l.province_code)
            .map(|l| l.old_province_code.as_str())
            .collect();
        assert_eq!(changed.len(), 29, "{changed:?}");
        // Every changed code is one that is no longer in effect, so an event's code is
        // never ambiguous: a code in effect means its province since 2025-07-01.
        assert!(changed.iter().all(|c| units.province(c).is_none()), "{changed:?}");
        assert!(units.provinces().iter().all(|p| units.legacy_province(&p.code).unwrap().province_code == p.code));
        let ha_giang = units.legacy_province("02").unwrap();
        assert_eq!((ha_giang.old_province_name.as_str(), ha_giang.province_code.as_str()), ("Tỉnh Hà Giang", "08"));
        // Kept the name, not the code.
        assert_eq!(units.legacy_province("10").unwrap().province_code, "15");
        assert_eq!(units.legacy_province("27").unwrap().province_code, "24");
        assert!(units.legacy_province("03").is_none());
    }

    #[test]
    fn a_bad_province_code_map_is_reported_with_the_line() {
        let header = "old_province_code,old_province_name,province_code,province_name\n";
        for (rows, needle) in [
            (
                "02,Tỉnh Hà Giang,08,Tỉnh Tuyên Quang\n02,Tỉnh Hà Giang,08,Tỉnh Tuyên Quang\n",
                "line 3: old code `02` appears twice",
            ),
            ("02,Tỉnh Hà Giang,99,Tỉnh X\n", "line 2: `99` is not a province code"),
            ("02,Tỉnh Hà Giang,08,Tỉnh Hà Giang\n", "is Tỉnh Tuyên Quang, not Tỉnh Hà Giang"),
            ("2,Tỉnh Hà Giang,08,Tỉnh Tuyên Quang\n", "not 2 digits"),
        ] {
            let err = AdminUnits::from_csv(ADMIN_UNITS_CSV)
                .unwrap()
                .with_legacy_codes(&format!("{header}{rows}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn bad_codes_in_reference_data_are_reported_with_the_line() {
        let csv = "province_code,province_name,province_short,province_lat,province_lon,commune_code,commune_name,commune_type,commune_lat,commune_lon,commune_area_km2\n\
                   1,A,A,0,0,00004,B,Phường,0,0,1\n";
        let err = AdminUnits::from_csv(csv).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
