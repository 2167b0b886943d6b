//! The `kpi_hourly` rollup table: what a set of events adds to each ratio KPI's
//! counters, per KPI, UTC hour and dimension tuple (CounterDelta rows), with the
//! earliest and latest event time each row covers.
//!
//! Rollups are written in the same commit as the events they count (see
//! [`ioc_ingest::Derive`]), so they are always exactly the sum over the stored events.
//! Every reader SUMs them, so any split of the same rows, for instance the result of
//! [`reaggregate_rollups`] after compaction, gives the same answers.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use ioc_core::counters::{CounterDelta, CubeRow, Dim, DimValues, Rollup};
use ioc_core::dim_cube::{DimCubes, DimRow};
use ioc_core::time::HourBucket;
use ioc_core::{Catalog, Count};
use ioc_storage::kpi_hourly_schema;
use thiserror::Error;

const HOUR_US: i64 = 3_600_000_000;

#[derive(Debug, Error)]
pub enum RollupError {
    #[error("kpi_hourly batch has no usable column `{0}`")]
    Column(&'static str),
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// The columns the cube is rebuilt from.
pub const CUBE_COLUMNS: [&str; 7] = ["kpi", "hour", "province_code", "numerator", "denominator", "first_at", "last_at"];

/// The rollup rows of a delta, as a `kpi_hourly` batch. KPI indexes are turned into
/// the catalog's ids.
pub fn rollup_batch(catalog: &Catalog, delta: &CounterDelta) -> RecordBatch {
    let rows = delta.rows.iter().map(|((k, h, d), r)| (catalog.kpis()[*k].id.as_str(), *h, d, *r));
    build_batch(delta.rows.len(), rows).expect("rollup batch matches its schema")
}

/// A `kpi_hourly` batch from `(kpi id, hour, dimensions, rollup)` rows.
fn build_batch<'a>(
    n: usize,
    rows: impl Iterator<Item = (&'a str, HourBucket, &'a DimValues, Rollup)>,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut kpi = StringBuilder::with_capacity(n, n * 16);
    let mut dims: Vec<StringBuilder> = Dim::ALL.iter().map(|_| StringBuilder::with_capacity(n, n * 8)).collect();
    let (mut hour, mut num, mut den, mut first, mut last) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (k, h, d, r) in rows {
        kpi.append_value(k);
        hour.push(h * HOUR_US);
        for (b, v) in dims.iter_mut().zip(d.0.iter()) {
            b.append_option(v.as_deref());
        }
        num.push(r.count.numerator as i64);
        den.push(r.count.denominator as i64);
        first.push(r.first_us);
        last.push(r.last_us);
    }
    let ts = |v: Vec<i64>| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) };
    let mut columns: Vec<ArrayRef> = vec![Arc::new(kpi.finish()), ts(hour)];
    columns.extend(dims.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.extend([Arc::new(Int64Array::from(num)) as ArrayRef, Arc::new(Int64Array::from(den))]);
    columns.extend([ts(first), ts(last)]);
    RecordBatch::try_new(kpi_hourly_schema(), columns)
}

fn strings<'a>(batch: &'a RecordBatch, name: &'static str) -> Result<&'a StringArray, RollupError> {
    batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>()).ok_or(RollupError::Column(name))
}

fn times<'a>(batch: &'a RecordBatch, name: &'static str) -> Result<&'a [i64], RollupError> {
    let c = batch.column_by_name(name).and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>());
    c.map(|c| c.values().as_ref()).ok_or(RollupError::Column(name))
}

fn ints<'a>(batch: &'a RecordBatch, name: &'static str) -> Result<&'a [i64], RollupError> {
    let c = batch.column_by_name(name).and_then(|c| c.as_primitive_opt::<Int64Type>());
    c.map(|c| c.values().as_ref()).ok_or(RollupError::Column(name))
}

/// The rows of a `kpi_hourly` batch (at least the [`CUBE_COLUMNS`]) projected on the
/// province, for the cube. `kpi_index` maps the catalog's ratio KPI ids to indexes;
/// rows of other ids (a KPI removed from the catalog) are skipped and counted.
pub fn cube_rows(
    batch: &RecordBatch,
    kpi_index: &HashMap<String, usize>,
    out: &mut Vec<CubeRow>,
) -> Result<usize, RollupError> {
    let kpi = strings(batch, "kpi")?;
    let province = strings(batch, "province_code")?;
    let (hour, num, den) = (times(batch, "hour")?, ints(batch, "numerator")?, ints(batch, "denominator")?);
    let (first, last) = (times(batch, "first_at")?, times(batch, "last_at")?);
    let mut interned: HashMap<&str, Arc<str>> = HashMap::new();
    let mut last_kpi: Option<(&str, usize)> = None;
    let mut skipped = 0;
    out.reserve(batch.num_rows());
    for i in 0..batch.num_rows() {
        let id = kpi.value(i);
        let k = match last_kpi {
            Some((prev, k)) if prev == id => k,
            _ => match kpi_index.get(id) {
                Some(k) => {
                    last_kpi = Some((id, *k));
                    *k
                }
                None => {
                    skipped += 1;
                    continue;
                }
            },
        };
        let p = province.is_valid(i).then(|| {
            let s = province.value(i);
            interned.entry(s).or_insert_with(|| Arc::from(s)).clone()
        });
        out.push(CubeRow {
            kpi: k,
            hour: hour[i].div_euclid(HOUR_US),
            province: p,
            rollup: Rollup { count: Count::new(num[i] as u64, den[i] as u64), first_us: first[i], last_us: last[i] },
        });
    }
    Ok(skipped)
}

/// Adds the rows of a `kpi_hourly` batch (every column) to the dimension cubes, each
/// projected on the province and the cube's dimension. `kpi_index` as for
/// [`cube_rows`]; rows of other ids are skipped.
pub fn add_to_dim_cubes(
    batch: &RecordBatch,
    kpi_index: &HashMap<String, usize>,
    cubes: &mut DimCubes,
) -> Result<(), RollupError> {
    let kpi = strings(batch, "kpi")?;
    let province = strings(batch, "province_code")?;
    let (hour, num, den) = (times(batch, "hour")?, ints(batch, "numerator")?, ints(batch, "denominator")?);
    // The KPI index of each row, looked up once for all the cubes.
    let mut last: Option<(&str, Option<usize>)> = None;
    let kpis: Vec<Option<usize>> = (0..batch.num_rows())
        .map(|i| {
            let id = kpi.value(i);
            match last {
                Some((prev, k)) if prev == id => k,
                _ => {
                    let k = kpi_index.get(id).copied();
                    last = Some((id, k));
                    k
                }
            }
        })
        .collect();
    for cube in cubes.cubes_mut() {
        let values = strings(batch, cube.dim().as_str())?;
        cube.apply(kpis.iter().enumerate().filter_map(|(i, k)| {
            Some(DimRow {
                kpi: (*k)?,
                hour: hour[i].div_euclid(HOUR_US),
                province: province.is_valid(i).then(|| province.value(i)),
                value: values.is_valid(i).then(|| values.value(i)),
                count: Count::new(num[i] as u64, den[i] as u64),
            })
        }));
    }
    Ok(())
}

/// Re-aggregates rollup batches by key (kpi, hour and the seven dimensions): numerators
/// and denominators are summed, `first_at` is the minimum and `last_at` the maximum.
/// The rewrite for compacting `kpi_hourly`: the result answers every query exactly as
/// the input did, in fewer rows. Pure; returns one batch (none for no rows).
pub fn reaggregate_rollups(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, RollupError> {
    type Key = (Arc<str>, HourBucket, DimValues);
    let mut ids: HashMap<String, Arc<str>> = HashMap::new();
    let mut values: Vec<HashMap<String, Arc<str>>> = vec![HashMap::new(); Dim::ALL.len()];
    let mut merged: HashMap<Key, Rollup> = HashMap::new();
    let mut order: Vec<Key> = Vec::new();
    for batch in &batches {
        let kpi = strings(batch, "kpi")?;
        let dims: Vec<&StringArray> = Dim::ALL.iter().map(|d| strings(batch, d.as_str())).collect::<Result<_, _>>()?;
        let (hour, num, den) = (times(batch, "hour")?, ints(batch, "numerator")?, ints(batch, "denominator")?);
        let (first, last) = (times(batch, "first_at")?, times(batch, "last_at")?);
        for i in 0..batch.num_rows() {
            let id = intern(&mut ids, kpi.value(i));
            let mut dv = DimValues::default();
            for (k, col) in dims.iter().enumerate() {
                if col.is_valid(i) {
                    dv.0[k] = Some(intern(&mut values[k], col.value(i)));
                }
            }
            let r = Rollup { count: Count::new(num[i] as u64, den[i] as u64), first_us: first[i], last_us: last[i] };
            let key = (id, hour[i].div_euclid(HOUR_US), dv);
            match merged.get_mut(&key) {
                Some(m) => m.merge(r),
                None => {
                    order.push(key.clone());
                    merged.insert(key, r);
                }
            }
        }
    }
    if order.is_empty() {
        return Ok(Vec::new());
    }
    let rows = order.iter().map(|key| (&*key.0, key.1, &key.2, merged[key]));
    Ok(vec![build_batch(order.len(), rows)?])
}

fn intern(map: &mut HashMap<String, Arc<str>>, s: &str) -> Arc<str> {
    if let Some(a) = map.get(s) {
        return a.clone();
    }
    let a: Arc<str> = Arc::from(s);
    map.insert(s.to_string(), a.clone());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use ioc_core::Catalog;

    fn dims(p: Option<&str>, commune: &str) -> DimValues {
        let mut d = DimValues::default();
        d.0[Dim::ProvinceCode.index()] = p.map(Into::into);
        d.0[Dim::CommuneCode.index()] = Some(commune.into());
        d
    }

    /// (kpi id, hour, province, commune) -> (numerator, denominator, first, last).
    type Table = std::collections::BTreeMap<(String, i64, Option<String>, Option<String>), (i64, i64, i64, i64)>;

    fn table(batches: &[RecordBatch]) -> Table {
        let mut out = Table::new();
        for b in batches {
            let kpi = strings(b, "kpi").unwrap();
            let p = strings(b, "province_code").unwrap();
            let c = strings(b, "commune_code").unwrap();
            let (h, n, d) = (times(b, "hour").unwrap(), ints(b, "numerator").unwrap(), ints(b, "denominator").unwrap());
            let (f, l) = (times(b, "first_at").unwrap(), times(b, "last_at").unwrap());
            for i in 0..b.num_rows() {
                let opt = |a: &StringArray| a.is_valid(i).then(|| a.value(i).to_string());
                let key = (kpi.value(i).to_string(), h[i], opt(p), opt(c));
                let e = out.entry(key).or_insert((0, 0, i64::MAX, i64::MIN));
                e.0 += n[i];
                e.1 += d[i];
                e.2 = e.2.min(f[i]);
                e.3 = e.3.max(l[i]);
            }
        }
        out
    }

    #[test]
    fn reaggregation_merges_equal_keys_and_keeps_sums_and_spans() {
        let catalog = Catalog::builtin();
        let h = 490_000;
        let at = h * HOUR_US;
        let mut a = CounterDelta::default();
        a.add(0, h, dims(Some("01"), "00004"), Count::new(1, 1), at + 10);
        a.add(0, h, dims(None, "00004"), Count::new(0, 1), at + 11);
        a.add(1, h + 1, dims(Some("01"), "00004"), Count::new(1, 1), at + HOUR_US + 5);
        let mut b = CounterDelta::default();
        b.add(0, h, dims(Some("01"), "00004"), Count::new(0, 1), at + 3);
        b.add(0, h, dims(Some("01"), "00007"), Count::new(1, 1), at + 99);
        let input = vec![rollup_batch(&catalog, &a), rollup_batch(&catalog, &b)];
        let out = reaggregate_rollups(input.clone()).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].schema(), kpi_hourly_schema());
        assert_eq!(out[0].num_rows(), 4, "the two rows of one key became one");
        assert_eq!(table(&out), table(&input));
        let id0 = catalog.kpis()[0].id.clone();
        let merged = table(&out)[&(id0, at, Some("01".into()), Some("00004".into()))];
        assert_eq!(merged, (1, 2, at + 3, at + 10));
        // Idempotent, and nothing in gives nothing out.
        assert_eq!(reaggregate_rollups(out.clone()).unwrap()[0].num_rows(), 4);
        assert!(reaggregate_rollups(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn cube_rows_project_on_the_province_and_skip_unknown_kpis() {
        let catalog = Catalog::builtin();
        let mut d = CounterDelta::default();
        d.add(0, 7, dims(Some("01"), "00004"), Count::new(1, 2), 7 * HOUR_US + 1);
        d.add(1, 7, dims(None, "00004"), Count::new(0, 1), 7 * HOUR_US + 2);
        let batch = rollup_batch(&catalog, &d);
        let index = HashMap::from([(catalog.kpis()[0].id.clone(), 0)]);
        let mut rows = Vec::new();
        assert_eq!(cube_rows(&batch, &index, &mut rows).unwrap(), 1, "KPI 1 is not in the index");
        assert_eq!(
            rows,
            vec![CubeRow {
                kpi: 0,
                hour: 7,
                province: Some("01".into()),
                rollup: Rollup { count: Count::new(1, 2), first_us: 7 * HOUR_US + 1, last_us: 7 * HOUR_US + 1 },
            }]
        );
    }
}
