//! Snapshots of the live KPI state, so that a restart does not rebuild it from every
//! rollup row and dossier event (40 s at 50M events).
//!
//! A snapshot holds the province cube (its hour cells), the dimension cubes (their
//! keys and day and hour cells), the open-dossier state (id hashes, due times,
//! dimension symbols) and the store version `V` they cover: every
//! commit up to `V` is in them, none after. At start, the newest snapshot that reads
//! back whole and belongs to this store and catalog is loaded, and the commits after
//! `V` are folded in from their files, as the running engine folds another writer's
//! commits. Anything else falls back to the full rebuild, never to a wrong answer:
//! no snapshot, a damaged one (every byte is under a checksum), one of another store
//! (its anchor, a commit it names, is not in this store's log), of another catalog or
//! province list, or one whose later commits' files were compacted away.
//!
//! The file, `<state dir>/kpi-state/<V, 20 digits>.kpistate`, is four Arrow IPC streams
//! (the cube's hour cells with their non-zero counts, the open dossiers, the dimension
//! cubes' keys and cells; decoded in place), a JSON header (with the dimension cubes'
//! names), the header's length (u64 LE), the
//! xxh3-128 of everything before it (LE) and a magic. It is written to a temporary
//! name, fsynced, renamed, and its folder fsynced; the newest two are kept. It is
//! local to each instance (the state dir), since only reading it back is saved.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Int64Array, ListBuilder, RecordBatch, UInt32Array, UInt32Builder, UInt64Array, UInt64Builder,
};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt32Type, UInt64Type};
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use chrono::{DateTime, Utc};
use ioc_core::counters::{Count, Dim, ProvinceCube};
use ioc_core::dim_cube::{DimCube, DimCubeParts, DimCubes, Grain, Pair};
use ioc_core::event::Family;
use ioc_core::open_dossiers::OpenDossiers;
use ioc_storage::{KPI_HOURLY, Snapshot};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{info, warn};
use xxhash_rust::xxh3::xxh3_128;

use super::{KpiEngine, KpiError, Live, OPEN_DOSSIER_COLUMNS, track_open};

/// The folder of the snapshots inside the state dir.
pub const STATE_DIR: &str = "kpi-state";
const SUFFIX: &str = ".kpistate";
const MAGIC: &[u8; 8] = b"IOCKPIS1";
const FORMAT: u32 = 3;
/// Snapshots kept: the newest, and the one before in case it is damaged.
const KEEP: usize = 2;

/// Why a snapshot could not be used.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Arrow { path: PathBuf, source: ArrowError },
}

/// How the KPI state was set up at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// From the snapshot at `version`, then `commits` later commits folded in.
    Snapshot { version: u64, commits: usize },
    /// Rebuilt from every rollup row and dossier event, for this reason.
    Rebuilt { reason: String },
}

/// A snapshot written by [`KpiEngine::save_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub version: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

/// A commit the snapshot's version has seen: the newest in the store's history at or
/// before it. Finding it in a store's log tells the snapshot is of that store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Anchor {
    version: u64,
    at: DateTime<Utc>,
    file: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    version: u64,
    anchor: Option<Anchor>,
    /// [`catalog_fingerprint`]: the cube is indexed by catalog position.
    catalog: String,
    /// The cube's provinces, slot 1 on.
    provinces: Vec<String>,
    /// The open dossiers' dimension symbols.
    symbols: Vec<String>,
    as_of: Option<DateTime<Utc>>,
    /// The dimension cubes' names, in [`DimCubes::dims`] order.
    dims: Vec<DimNames>,
    /// (offset, length) of the Arrow streams.
    cube: (u64, u64),
    open: (u64, u64),
    dim_keys: (u64, u64),
    dim_cells: (u64, u64),
}

/// A dimension cube's interned names and newest hour.
#[derive(Debug, Serialize, Deserialize)]
struct DimNames {
    dim: Dim,
    provinces: Vec<String>,
    values: Vec<String>,
    newest: Option<i64>,
    /// The cube declines every query (a count over 32 bits, too many values).
    declined: bool,
}

/// What the rollups and the cube depend on: every KPI's id and definition, in order.
fn catalog_fingerprint(engine: &KpiEngine) -> String {
    let text: Vec<String> = engine.catalog.kpis().iter().map(|d| format!("{}={:?}", d.id, d.kind)).collect();
    format!("{:032x}", xxh3_128(text.join("\n").as_bytes()))
}

/// One row per hour cell, with its non-zero counts only (a year of a small site is
/// mostly empty slots): `slots[i]` has `numerators[i]` over `denominators[i]`.
fn cube_schema() -> Arc<Schema> {
    let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, false)));
    Arc::new(Schema::new(vec![
        Field::new("kpi", DataType::UInt32, false),
        Field::new("hour", DataType::Int64, false),
        Field::new("first_us", DataType::Int64, false),
        Field::new("last_us", DataType::Int64, false),
        Field::new("slots", list(DataType::UInt32), false),
        Field::new("numerators", list(DataType::UInt64), false),
        Field::new("denominators", list(DataType::UInt64), false),
    ]))
}

/// The dimension cubes' keys: per cube (by position in [`DimCubes::dims`]), in key id
/// order, the ids of the province and value names.
fn dim_keys_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("cube", DataType::UInt8, false),
        Field::new("province", DataType::UInt32, false),
        Field::new("value", DataType::UInt32, false),
    ]))
}

/// The dimension cubes' cells: one row per (cube, KPI, day or hour), its key ids and
/// counts.
fn dim_cells_schema() -> Arc<Schema> {
    let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, false)));
    Arc::new(Schema::new(vec![
        Field::new("cube", DataType::UInt8, false),
        Field::new("kpi", DataType::UInt32, false),
        // 0: a Vietnam day, 1: an hour.
        Field::new("grain", DataType::UInt8, false),
        Field::new("at", DataType::Int64, false),
        Field::new("keys", list(DataType::UInt32), false),
        Field::new("numerators", list(DataType::UInt32), false),
        Field::new("denominators", list(DataType::UInt32), false),
    ]))
}

fn dim_batches(dims: &DimCubes) -> Result<(Vec<DimNames>, RecordBatch, RecordBatch), ArrowError> {
    let mut names = Vec::new();
    let (mut key_cube, mut key_p, mut key_v) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cube, mut kpi, mut grain, mut at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let item = |t: DataType| Field::new("item", t, false);
    let list = || ListBuilder::new(UInt32Builder::new()).with_field(item(DataType::UInt32));
    let (mut keys, mut num, mut den) = (list(), list(), list());
    for (i, c) in dims.cubes().iter().enumerate() {
        let parts = c.parts();
        let strings = |v: &[Arc<str>]| v.iter().map(|s| s.to_string()).collect();
        names.push(DimNames {
            dim: parts.dim,
            provinces: strings(&parts.provinces),
            values: strings(&parts.values),
            newest: parts.newest,
            declined: parts.declined,
        });
        for (p, v) in parts.keys {
            key_cube.push(i as u8);
            key_p.push(p);
            key_v.push(v);
        }
        for (k, g, t, ks, counts) in c.cells() {
            cube.push(i as u8);
            kpi.push(k as u32);
            grain.push(u8::from(g == Grain::Hour));
            at.push(t);
            keys.append_value(ks.iter().map(|k| Some(*k)));
            num.append_value(counts.iter().map(|c| Some(c[0])));
            den.append_value(counts.iter().map(|c| Some(c[1])));
        }
    }
    let keys_batch = RecordBatch::try_new(
        dim_keys_schema(),
        vec![
            Arc::new(arrow::array::UInt8Array::from(key_cube)),
            Arc::new(UInt32Array::from(key_p)),
            Arc::new(UInt32Array::from(key_v)),
        ],
    )?;
    let cells_batch = RecordBatch::try_new(
        dim_cells_schema(),
        vec![
            Arc::new(arrow::array::UInt8Array::from(cube)),
            Arc::new(UInt32Array::from(kpi)),
            Arc::new(arrow::array::UInt8Array::from(grain)),
            Arc::new(Int64Array::from(at)),
            Arc::new(keys.finish()),
            Arc::new(num.finish()),
            Arc::new(den.finish()),
        ],
    )?;
    Ok((names, keys_batch, cells_batch))
}

fn open_schema() -> Arc<Schema> {
    let mut fields = vec![
        Field::new("id_high", DataType::UInt64, false),
        Field::new("id_low", DataType::UInt64, false),
        // Null: finished before its receipt was seen.
        Field::new("due_us", DataType::Int64, true),
    ];
    // Symbol indexes, u32::MAX for no value.
    fields.extend(Dim::ALL.iter().map(|d| Field::new(d.as_str(), DataType::UInt32, false)));
    Arc::new(Schema::new(fields))
}

fn cube_batch(cube: &ProvinceCube) -> Result<RecordBatch, ArrowError> {
    let (mut kpi, mut hour, mut first, mut last) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let item = |t: DataType| Field::new("item", t, false);
    let mut slots = ListBuilder::new(UInt32Builder::new()).with_field(item(DataType::UInt32));
    let mut num = ListBuilder::new(UInt64Builder::new()).with_field(item(DataType::UInt64));
    let mut den = ListBuilder::new(UInt64Builder::new()).with_field(item(DataType::UInt64));
    for (k, h, span, counts) in cube.cells() {
        kpi.push(k as u32);
        hour.push(h);
        first.push(span.0);
        last.push(span.1);
        let set = || counts.iter().enumerate().filter(|(_, c)| !c.is_zero());
        slots.append_value(set().map(|(slot, _)| Some(slot as u32)));
        num.append_value(set().map(|(_, c)| Some(c.numerator)));
        den.append_value(set().map(|(_, c)| Some(c.denominator)));
    }
    RecordBatch::try_new(
        cube_schema(),
        vec![
            Arc::new(UInt32Array::from(kpi)),
            Arc::new(Int64Array::from(hour)),
            Arc::new(Int64Array::from(first)),
            Arc::new(Int64Array::from(last)),
            Arc::new(slots.finish()),
            Arc::new(num.finish()),
            Arc::new(den.finish()),
        ],
    )
}

fn open_batch(open: &OpenDossiers) -> Result<RecordBatch, ArrowError> {
    let n = open.len();
    let (mut high, mut low, mut due) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let mut dims: Vec<Vec<u32>> = vec![Vec::with_capacity(n); Dim::ALL.len()];
    for (id, entry) in open.entries() {
        high.push((id >> 64) as u64);
        low.push(id as u64);
        due.push(entry.map(|(at, _)| at));
        let values = entry.map_or([u32::MAX; 7], |(_, d)| d);
        for (column, v) in dims.iter_mut().zip(values) {
            column.push(v);
        }
    }
    let mut columns: Vec<Arc<dyn Array>> =
        vec![Arc::new(UInt64Array::from(high)), Arc::new(UInt64Array::from(low)), Arc::new(Int64Array::from(due))];
    columns.extend(dims.into_iter().map(|d| Arc::new(UInt32Array::from(d)) as Arc<dyn Array>));
    RecordBatch::try_new(open_schema(), columns)
}

fn stream(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(u64, u64), ArrowError> {
    let start = out.len() as u64;
    let mut writer = StreamWriter::try_new(&mut *out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok((start, out.len() as u64 - start))
}

fn file_name(version: u64) -> String {
    format!("{version:020}{SUFFIX}")
}

/// The snapshots in `dir`, newest first.
fn listed(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.strip_suffix(SUFFIX)?.parse().ok()?;
            Some((v, e.path()))
        })
        .collect();
    out.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
    out
}

/// The parts of a snapshot file, checked against its checksum and format.
struct Parts {
    header: Header,
    cube: RecordBatch,
    open: RecordBatch,
    dim_keys: RecordBatch,
    dim_cells: RecordBatch,
}

fn read_parts(path: &Path) -> Result<Parts, StateError> {
    let invalid = |message: &str| StateError::Invalid { path: path.to_path_buf(), message: message.to_string() };
    let file = std::fs::read(path).map_err(|source| StateError::Io { path: path.to_path_buf(), source })?;
    // The Arrow sections are decoded in place, without copying the file again.
    let whole = Buffer::from_vec(file);
    let bytes = whole.as_slice();
    let tail = 8 + 16 + MAGIC.len();
    if bytes.len() < tail || &bytes[bytes.len() - MAGIC.len()..] != MAGIC {
        return Err(invalid("not a KPI state snapshot (no trailer)"));
    }
    let body = &bytes[..bytes.len() - 16 - MAGIC.len()];
    let sum = u128::from_le_bytes(bytes[body.len()..body.len() + 16].try_into().expect("16 bytes"));
    if xxh3_128(body) != sum {
        return Err(invalid("checksum mismatch: the file is damaged"));
    }
    let len = u64::from_le_bytes(body[body.len() - 8..].try_into().expect("8 bytes")) as usize;
    let data = &body[..body.len() - 8];
    let json = data.len().checked_sub(len).map(|start| &data[start..]).ok_or_else(|| invalid("header length"))?;
    let header: Header = serde_json::from_slice(json).map_err(|e| invalid(&format!("header: {e}")))?;
    if header.format != FORMAT {
        return Err(invalid(&format!("format {} (this version reads {FORMAT})", header.format)));
    }
    let section = |(offset, length): (u64, u64), schema: Arc<Schema>| -> Result<RecordBatch, StateError> {
        let arrow = |source| StateError::Arrow { path: path.to_path_buf(), source };
        let range = usize::try_from(offset).ok().zip(usize::try_from(offset + length).ok());
        let (a, b) =
            range.filter(|(a, b)| a <= b && *b <= data.len()).ok_or_else(|| invalid("section out of range"))?;
        let mut section = whole.slice_with_length(a, b - a);
        let mut decoder = StreamDecoder::new();
        let mut batches = Vec::new();
        while let Some(batch) = decoder.decode(&mut section).map_err(arrow)? {
            batches.push(batch);
        }
        decoder.finish().map_err(arrow)?;
        if decoder.schema().is_none_or(|s| s != schema) {
            return Err(invalid("unexpected section schema"));
        }
        match batches.len() {
            1 => Ok(batches.pop().expect("one batch")),
            _ => arrow::compute::concat_batches(&schema, &batches).map_err(arrow),
        }
    };
    let cube = section(header.cube, cube_schema())?;
    let open = section(header.open, open_schema())?;
    let dim_keys = section(header.dim_keys, dim_keys_schema())?;
    let dim_cells = section(header.dim_cells, dim_cells_schema())?;
    Ok(Parts { header, cube, open, dim_keys, dim_cells })
}

/// The newest history entry at or before `version`.
fn anchor(snap: &Snapshot, version: u64) -> Option<Anchor> {
    snap.history.iter().rev().find(|(v, _, files)| *v <= version && !files.is_empty()).map(|(v, at, files)| Anchor {
        version: *v,
        at: *at,
        file: files[0].clone(),
    })
}

fn table_of(path: &str) -> &str {
    path.split('/').nth(1).unwrap_or_default()
}

impl KpiEngine {
    /// The store version the live state covers: every commit up to it is counted.
    pub fn version(&self) -> Option<u64> {
        self.live.read().expect("live lock").version
    }

    /// Writes a snapshot of the live state into `dir` (see the module docs), unless
    /// the state is empty or this engine wrote or started from the snapshot of its
    /// version (a file of that version that was not, e.g. a damaged one or one of an
    /// older format, is replaced). The state is copied
    /// into Arrow arrays under the read lock (tens of milliseconds at 50M events);
    /// encoding and the fsyncs happen outside it.
    pub fn save_state(&self, dir: &Path) -> Result<Option<Saved>, StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        let (version, cube, open, (dims, dim_keys, dim_cells), provinces, symbols, as_of) = {
            let live = self.live.read().expect("live lock");
            let Some(version) = live.version else { return Ok(None) };
            if self.state_saved.lock().expect("state lock").as_ref().is_some_and(|(d, v)| d == dir && *v == version) {
                return Ok(None);
            }
            let arrow = |source| StateError::Arrow { path: dir.to_path_buf(), source };
            let provinces: Vec<String> = live.cube.provinces().iter().map(|p| p.to_string()).collect();
            let symbols: Vec<String> = live.open.symbols().iter().map(|s| s.to_string()).collect();
            (
                version,
                cube_batch(&live.cube).map_err(arrow)?,
                open_batch(&live.open).map_err(arrow)?,
                dim_batches(&live.dims).map_err(arrow)?,
                provinces,
                symbols,
                live.as_of,
            )
        };
        let arrow = |source| StateError::Arrow { path: dir.to_path_buf(), source };
        let mut out = Vec::new();
        let cube = stream(&cube, &mut out).map_err(arrow)?;
        let open = stream(&open, &mut out).map_err(arrow)?;
        let dim_keys = stream(&dim_keys, &mut out).map_err(arrow)?;
        let dim_cells = stream(&dim_cells, &mut out).map_err(arrow)?;
        let header = Header {
            format: FORMAT,
            version,
            anchor: anchor(&self.store.snapshot(), version),
            catalog: catalog_fingerprint(self),
            provinces,
            symbols,
            as_of,
            dims,
            cube,
            open,
            dim_keys,
            dim_cells,
        };
        let json = serde_json::to_vec(&header).expect("a header serializes");
        out.extend_from_slice(&json);
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        let sum = xxh3_128(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out.extend_from_slice(MAGIC);

        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(file_name(version));
        let tmp = dir.join(format!(".{}.{}.tmp", file_name(version), std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(&out).and_then(|()| file.sync_all()).map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        for (_, old) in listed(dir).into_iter().skip(KEEP) {
            if let Err(e) = std::fs::remove_file(&old) {
                warn!(path = %old.display(), error = %e, "could not remove an old KPI state snapshot");
            }
        }
        *self.state_saved.lock().expect("state lock") = Some((dir.to_path_buf(), version));
        Ok(Some(Saved { version, path, bytes: out.len() as u64 }))
    }

    /// Sets up the live state for `snap`: from the newest usable snapshot in `dir` and
    /// the commits after it, else by [`KpiEngine::rebuild`]. Exact either way.
    pub fn restore_or_rebuild(&self, dir: &Path, snap: &Snapshot) -> Result<Startup, KpiError> {
        let started = std::time::Instant::now();
        let mut reason = String::from("no snapshot of the KPI state");
        for (version, path) in listed(dir) {
            if snap.version.is_none_or(|v| version > v) {
                reason = format!("{}: newer than the store (version {:?})", path.display(), snap.version);
                continue;
            }
            match self.restore(&path, snap) {
                Ok(Ok(commits)) => {
                    if commits == 0 {
                        *self.state_saved.lock().expect("state lock") = Some((dir.to_path_buf(), version));
                    }
                    info!(
                        version,
                        commits,
                        ms = started.elapsed().as_millis() as u64,
                        store_version = ?snap.version,
                        "KPI state restored from its snapshot and the commits after it"
                    );
                    return Ok(Startup::Snapshot { version, commits });
                }
                // Files of later commits were compacted away: an older snapshot needs
                // them too.
                Ok(Err(why)) => {
                    reason = why;
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "skipping a KPI state snapshot that cannot be used");
                    reason = e.to_string();
                }
            }
        }
        info!(%reason, "rebuilding the KPI state from the rollups and the dossier events");
        self.rebuild(snap)?;
        Ok(Startup::Rebuilt { reason })
    }

    /// Loads one snapshot and folds in the commits of `snap` after it. The outer error:
    /// this snapshot is unusable; the inner one: none is (later files are gone).
    fn restore(&self, path: &Path, snap: &Snapshot) -> Result<Result<usize, String>, StateError> {
        let invalid = |message: String| StateError::Invalid { path: path.to_path_buf(), message };
        let Parts { header, cube: cube_batch, open: open_batch, dim_keys, dim_cells } = read_parts(path)?;
        if header.catalog != catalog_fingerprint(self) {
            return Err(invalid("written with another KPI catalog".into()));
        }
        let provinces: Vec<String> = self.provinces.iter().map(|p| p.to_string()).collect();
        if !header.provinces.starts_with(&provinces) {
            return Err(invalid("written with other provinces".into()));
        }
        if header.anchor != anchor(snap, header.version) {
            return Err(invalid(format!("of another store (commit {:?} is not in this log)", header.anchor)));
        }

        // The commits after the snapshot that add rows, and their files to read.
        let live: std::collections::HashMap<&str, &ioc_storage::DataFile> =
            snap.files.values().flatten().map(|f| (f.path.as_str(), f)).collect();
        let mut files = Vec::new();
        let mut commits = 0;
        for (version, _, paths) in snap.history.iter().filter(|(v, _, _)| *v > header.version) {
            if snap.rewrites.contains(version) {
                continue;
            }
            commits += 1;
            for p in
                paths.iter().filter(|p| matches!(table_of(p), t if t == KPI_HOURLY || t == Family::Dossier.table()))
            {
                match live.get(p.as_str()) {
                    Some(f) => files.push(*f),
                    None => {
                        return Ok(Err(format!("a file of commit {version}, after the snapshot, was compacted away")));
                    }
                }
            }
        }

        let mut cube = ProvinceCube::new(self.catalog.len(), header.provinces.iter().map(|p| Arc::from(p.as_str())));
        let (kpi, hour) =
            (cube_batch.column(0).as_primitive::<UInt32Type>(), cube_batch.column(1).as_primitive::<Int64Type>());
        let (first, last) =
            (cube_batch.column(2).as_primitive::<Int64Type>(), cube_batch.column(3).as_primitive::<Int64Type>());
        let lists = [4, 5, 6].map(|c| cube_batch.column(c).as_list::<i32>());
        let offsets = lists.map(|l| l.value_offsets());
        if offsets[0] != offsets[1] || offsets[0] != offsets[2] {
            return Err(invalid("a cell's slots, numerators and denominators differ in length".into()));
        }
        let slots = lists[0].values().as_primitive::<UInt32Type>().values();
        let (num, den) = (
            lists[1].values().as_primitive::<UInt64Type>().values(),
            lists[2].values().as_primitive::<UInt64Type>().values(),
        );
        let width = cube.provinces().len() + 1;
        let mut counts = Vec::new();
        for i in 0..cube_batch.num_rows() {
            let (from, to) = (offsets[0][i] as usize, offsets[0][i + 1] as usize);
            counts.clear();
            counts.resize(width, Count::default());
            for j in from..to {
                let slot = slots[j] as usize;
                if slot >= width {
                    return Err(invalid(format!("cell {i}: slot {slot} is outside the cube")));
                }
                counts[slot] = Count::new(num[j], den[j]);
            }
            cube.add_cell(kpi.value(i) as usize, hour.value(i), (first.value(i), last.value(i)), &counts)
                .ok_or_else(|| invalid(format!("cell {i} is outside the cube")))?;
        }

        let (high, low) =
            (open_batch.column(0).as_primitive::<UInt64Type>(), open_batch.column(1).as_primitive::<UInt64Type>());
        let due = open_batch.column(2).as_primitive::<Int64Type>();
        let dims: Vec<&UInt32Array> =
            (3..3 + Dim::ALL.len()).map(|c| open_batch.column(c).as_primitive::<UInt32Type>()).collect();
        let entries = (0..open_batch.num_rows()).map(|i| {
            let id = (u128::from(high.value(i)) << 64) | u128::from(low.value(i));
            (id, due.is_valid(i).then(|| (due.value(i), std::array::from_fn(|k| dims[k].value(i)))))
        });
        let symbols = header.symbols.iter().map(|s| Arc::from(s.as_str())).collect();
        let mut open = OpenDossiers::from_parts(symbols, entries)
            .ok_or_else(|| invalid("open dossiers: a symbol index out of range or a repeated id".into()))?;

        let mut dims = restore_dims(self.catalog.len(), header.dims, &dim_keys, &dim_cells).map_err(invalid)?;

        // Fold the later commits in, as the running engine would have.
        let mut rows = Vec::new();
        for file in files {
            if file.table == KPI_HOURLY {
                for batch in self.store.read_file(file, None).map_err(|e| invalid(e.to_string()))? {
                    self.fold_rollups(&mut cube, &mut dims, &batch, &mut rows).map_err(|e| invalid(e.to_string()))?;
                }
            } else {
                for batch in
                    self.store.read_file(file, Some(&OPEN_DOSSIER_COLUMNS)).map_err(|e| invalid(e.to_string()))?
                {
                    track_open(&mut open, &batch);
                }
            }
        }
        let as_of = snap.history.iter().map(|(_, at, _)| *at).max().max(header.as_of);
        *self.live.write().expect("live lock") =
            Live { cube, dims, open, as_of, version: snap.version, periods: Default::default() };
        Ok(Ok(commits))
    }
}

/// The dimension cubes of a snapshot, from its names, keys and cells.
fn restore_dims(
    kpis: usize,
    names: Vec<DimNames>,
    keys: &RecordBatch,
    cells: &RecordBatch,
) -> Result<DimCubes, String> {
    let (key_cube, key_p, key_v) = (
        keys.column(0).as_primitive::<arrow::datatypes::UInt8Type>().values(),
        keys.column(1).as_primitive::<UInt32Type>().values(),
        keys.column(2).as_primitive::<UInt32Type>().values(),
    );
    let mut cubes = Vec::with_capacity(names.len());
    for (i, n) in names.into_iter().enumerate() {
        let arcs = |v: Vec<String>| v.into_iter().map(|s| Arc::<str>::from(s.as_str())).collect();
        let keys = (0..keys.num_rows()).filter(|r| key_cube[*r] as usize == i).map(|r| (key_p[r], key_v[r])).collect();
        let parts = DimCubeParts {
            dim: n.dim,
            provinces: arcs(n.provinces),
            values: arcs(n.values),
            keys,
            newest: n.newest,
            declined: n.declined,
        };
        cubes.push(DimCube::from_parts(parts, kpis).ok_or_else(|| format!("the {:?} cube's names or keys", n.dim))?);
    }
    let (cube, kpi, grain, at) = (
        cells.column(0).as_primitive::<arrow::datatypes::UInt8Type>().values(),
        cells.column(1).as_primitive::<UInt32Type>().values(),
        cells.column(2).as_primitive::<arrow::datatypes::UInt8Type>().values(),
        cells.column(3).as_primitive::<Int64Type>().values(),
    );
    let lists = [4, 5, 6].map(|c| cells.column(c).as_list::<i32>());
    let offsets = lists.map(|l| l.value_offsets());
    if offsets[0] != offsets[1] || offsets[0] != offsets[2] {
        return Err("a dimension cell's keys, numerators and denominators differ in length".into());
    }
    let [ks, num, den] = lists.map(|l| l.values().as_primitive::<UInt32Type>().values());
    let mut counts: Vec<Pair> = Vec::new();
    for r in 0..cells.num_rows() {
        let (a, b) = (offsets[0][r] as usize, offsets[0][r + 1] as usize);
        counts.clear();
        counts.extend((a..b).map(|j| [num[j], den[j]]));
        let g = if grain[r] == 0 { Grain::Day } else { Grain::Hour };
        cubes
            .get_mut(cube[r] as usize)
            .and_then(|c| c.add_cell(kpi[r] as usize, g, at[r], &ks[a..b], &counts))
            .ok_or_else(|| format!("dimension cell {r} is outside its cube"))?;
    }
    DimCubes::from_cubes(cubes).ok_or_else(|| "the dimension cubes are not the expected ones".into())
}
