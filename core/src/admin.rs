//! Reference data: the 34 provinces and 3,321 communes in effect since 2025-07-01.
//!
//! The CSV ships inside the binary (`data/admin_units_2025.csv`), so validation works
//! air-gapped with no files to install. Codes are the keys; names are for display only.

use std::collections::HashMap;

use serde::Deserialize;
use thiserror::Error;

/// The shipped copy of the reference data.
pub const ADMIN_UNITS_CSV: &str = include_str!("../../data/admin_units_2025.csv");

#[derive(Debug, Error)]
pub enum AdminUnitsError {
    #[error("admin units CSV, line {line}: {source}")]
    Csv { line: u64, source: csv::Error },
    #[error("admin units CSV, line {line}: {message}")]
    Invalid { line: u64, message: String },
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

/// Provinces and communes, indexed by code.
#[derive(Debug, Clone)]
pub struct AdminUnits {
    provinces: Vec<Province>,
    communes: Vec<Commune>,
    province_index: HashMap<String, usize>,
    commune_index: HashMap<String, usize>,
}

impl AdminUnits {
    /// The reference data shipped with the product.
    pub fn builtin() -> Self {
        Self::from_csv(ADMIN_UNITS_CSV).expect("the shipped admin units CSV is valid")
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
        Ok(Self { provinces, communes, province_index, commune_index })
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
    fn bad_codes_in_reference_data_are_reported_with_the_line() {
        let csv = "province_code,province_name,province_short,province_lat,province_lon,commune_code,commune_name,commune_type,commune_lat,commune_lon,commune_area_km2\n\
                   1,A,A,0,0,00004,B,Phường,0,0,1\n";
        let err = AdminUnits::from_csv(csv).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
