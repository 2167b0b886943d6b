//! The Delta Lake export: every table is also a Delta table that other engines read.
//!
//! The global commit log (`_log/`, see [`crate::store`]) stays the one source of truth:
//! one of its commits spans every table and the source positions. From it, each
//! table's `_delta_log/` (in `tables/<table>/`) is derived, one Delta commit per global
//! commit that adds or removes files of that table:
//!
//! ```text
//! tables/<table>/_delta_log/00000000000000000000.json               protocol, metaData, ...
//! tables/<table>/_delta_log/<version:020>.json                      add / remove, txn
//! tables/<table>/_delta_log/<version:020>.checkpoint.parquet        every N versions
//! tables/<table>/_delta_log/_last_checkpoint
//! ```
//!
//! - Version 0 of a table is written with the first global commit exported (whether or
//!   not it touches the table, so that every table can be opened), and carries the
//!   `protocol` (reader 1, writer 2) and the `metaData` (the table's Arrow schema as a
//!   Delta schema, no partition columns: the date folders are only folders, and
//!   `add.path` is relative to the table's folder, `2026-12-01/<file>.parquet`).
//! - Every Delta commit carries `txn {appId: "ioc", version: <global version>}`. The
//!   latest one says how far the table is exported; export is idempotent: it goes on
//!   from there after a crash or on another process, and a global commit that touches
//!   no file of the table writes nothing for it.
//! - A Delta commit file is published as the global log's records are: written in full
//!   to a temporary file (in `_log/`, so that a Delta reader never lists it), fsynced,
//!   hard-linked to its name (put-if-absent), then `_delta_log/` is fsynced. Two
//!   processes exporting at once never both take a version: the loser re-reads the
//!   table's latest `txn` and goes on after it.
//! - Compaction's commits are `remove` + `add` with `dataChange: false`; retention's
//!   are `remove` with `dataChange: true`. Vacuum deletes a removed file only once its
//!   table is exported past the removal ([`exported_through`]), so a Delta reader never
//!   meets a missing file of its current version.
//! - A checkpoint (`<v>.checkpoint.parquet` and `_last_checkpoint`) is written when a
//!   table is at least `checkpoint_interval` versions past the last one and its Delta
//!   log is level with the store's snapshot (its live files are then the snapshot's).
//! - When a table's schema gained a column (schema evolution), the first Delta commit
//!   after it carries a new `metaData` with the new schema (the same table id).
//!
//! [`Store`] calls [`export`] at the end of every commit it publishes and when it opens
//! (which builds the Delta logs of a store written before them), so the Delta log is up
//! to date when a commit call returns, unless writing it failed (logged; the next
//! commit, open or vacuum catches up). Another process's commits are exported by the
//! next commit of this process or by that process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use chrono::{DateTime, SecondsFormat, Utc};
use parquet::arrow::ArrowWriter;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::fs::Fs;
use crate::schema::{tables, time_column_of};
use crate::store::{Commit, DataFile, Snapshot, StorageError, Store};

/// The folder of a table's Delta log, inside the table's folder.
pub const DELTA_LOG_DIR: &str = "_delta_log";
/// The `txn.appId` of every Delta commit the store writes.
pub const APP_ID: &str = "ioc";
/// Delta's convention: a checkpoint every 10 commits.
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 10;

/// How many times a table's next Delta version is tried after other exporters took it.
const MAX_ATTEMPTS: usize = 64;

/// What this process knows of one table's Delta log.
#[derive(Debug, Clone, Default)]
struct TableLog {
    /// Read from disk since the last failure.
    loaded: bool,
    /// The latest Delta version.
    version: Option<u64>,
    /// The global version in that Delta commit's `txn`.
    txn: Option<u64>,
    /// Every global commit up to this one is in the Delta log (at least `txn`: later
    /// commits may touch no file of the table).
    through: Option<u64>,
    /// The version of the latest checkpoint.
    checkpoint: Option<u64>,
    /// The table's latest `metaData` (its schema), as written.
    meta: Option<Value>,
}

/// The exporter's state, one per [`Store`] (behind a lock: one export at a time).
#[derive(Debug, Default)]
pub(crate) struct Exporter {
    tables: BTreeMap<&'static str, TableLog>,
}

/// What one export did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Delta commit files written, over every table.
    pub commits: usize,
    pub checkpoints: usize,
    /// Versions another exporter had written first (skipped here).
    pub raced: usize,
}

/// The folder of `table`'s Delta log.
pub fn delta_log_dir(root: &Path, table: &str) -> PathBuf {
    root.join("tables").join(table).join(DELTA_LOG_DIR)
}

/// The global version up to which `table`'s Delta log is known (by this process) to
/// hold every commit; `None` when nothing is exported yet.
pub fn exported_through(store: &Store, table: &str) -> Option<u64> {
    let state = store.delta_state().lock().expect("delta lock");
    state.tables.get(table).filter(|t| t.loaded).and_then(|t| t.through)
}

/// Exports every global commit not yet in the Delta logs. `just_published` is a commit
/// this process has just published (it saves reading it back).
pub fn export(store: &Store, just_published: Option<&Commit>) -> Result<ExportReport, StorageError> {
    let mut state = store.delta_state().lock().expect("delta lock");
    let result = export_locked(store, &mut state, just_published, None);
    if result.is_err() {
        // Read the logs again next time: this process's view may be wrong now.
        state.tables.values_mut().for_each(|t| t.loaded = false);
    }
    result
}

/// Exports `commits`, the whole global log from version 0 (as opening reads it).
pub(crate) fn export_log(store: &Store, commits: &[Commit]) -> Result<ExportReport, StorageError> {
    let mut state = store.delta_state().lock().expect("delta lock");
    let result = export_locked(store, &mut state, None, Some(commits));
    if result.is_err() {
        state.tables.values_mut().for_each(|t| t.loaded = false);
    }
    result
}

/// Deletes every table's Delta log and writes it again from the global log: for a
/// damaged or hand-edited Delta log. Run it with no other process writing to the
/// store: an exporter writing meanwhile could interleave its commits with the rebuilt
/// ones.
pub fn rebuild(store: &Store) -> Result<ExportReport, StorageError> {
    let mut state = store.delta_state().lock().expect("delta lock");
    let fs = store.fs();
    for (table, _) in tables() {
        let dir = delta_log_dir(store.root(), table);
        if !fs.exists(&dir) {
            continue;
        }
        // The newest first: a reader in the meantime sees a shorter log, never a gap.
        let mut names: Vec<String> = fs
            .read_dir(&dir)
            .map_err(io_err(&dir))?
            .into_iter()
            .filter(|e| !e.is_dir)
            .filter_map(|e| e.name.into_string().ok())
            .collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        for name in names {
            let path = dir.join(name);
            fs.remove_file(&path).map_err(io_err(&path))?;
        }
        fs.sync_dir(&dir).map_err(io_err(&dir))?;
    }
    state.tables.clear();
    let commits = store.commits_after(None)?;
    let result = export_locked(store, &mut state, None, Some(&commits));
    if result.is_err() {
        state.tables.values_mut().for_each(|t| t.loaded = false);
    }
    let report = result?;
    info!(commits = report.commits, checkpoints = report.checkpoints, "rebuilt the Delta logs");
    Ok(report)
}

fn export_locked(
    store: &Store,
    state: &mut Exporter,
    just_published: Option<&Commit>,
    log: Option<&[Commit]>,
) -> Result<ExportReport, StorageError> {
    let fs = store.fs();
    for (table, _) in tables() {
        let t = state.tables.entry(table).or_default();
        if !t.loaded {
            *t = load(fs, &delta_log_dir(store.root(), table))?;
        }
    }
    // The commits after the least exported table, read once for every table.
    let from = state.tables.values().map(|t| t.through).min().flatten();
    let read;
    let commits: &[Commit] = match (log, just_published) {
        (Some(log), _) => log,
        (None, Some(c)) if c.version == from.map_or(0, |v| v + 1) => std::slice::from_ref(c),
        (None, _) => {
            read = store.commits_after(from)?;
            &read
        }
    };
    let mine = just_published.is_some_and(|c| commits.len() == 1 && commits[0].version == c.version);
    if !commits.is_empty() && !mine {
        // Commits read from the log may be another process's whose `_log/` fsync
        // failed (it stopped writing): make them durable before the Delta logs name
        // them, so that a Delta log never leads the global log after a power loss.
        let log_dir = store.root().join("_log");
        store.fs().sync_dir(&log_dir).map_err(io_err(&log_dir))?;
    }
    let mut report = ExportReport::default();
    if commits.is_empty() {
        return Ok(report);
    }
    let snap = store.snapshot();
    for (table, schema) in tables() {
        let t = state.tables.get_mut(table).expect("loaded above");
        export_table(store, table, &schema, t, commits, &snap, &mut report)?;
    }
    if report.commits > 0 {
        debug!(commits = report.commits, through = ?commits.last().map(|c| c.version), "exported to the Delta logs");
    }
    Ok(report)
}

/// The state of a table's Delta log on disk: its latest version, that commit's `txn`,
/// the latest `metaData` and the latest checkpoint.
fn load(fs: &dyn Fs, dir: &Path) -> Result<TableLog, StorageError> {
    let mut t = TableLog { loaded: true, ..TableLog::default() };
    if !fs.exists(dir) {
        return Ok(t);
    }
    let mut versions = Vec::new();
    for e in fs.read_dir(dir).map_err(io_err(dir))? {
        let Some(name) = e.name.to_str() else { continue };
        if let Some(v) = name.strip_suffix(".json").and_then(parse_version) {
            versions.push(v);
        } else if let Some(v) = name.strip_suffix(".checkpoint.parquet").and_then(parse_version) {
            t.checkpoint = t.checkpoint.max(Some(v));
        }
    }
    versions.sort_unstable();
    t.version = versions.last().copied();
    // Newest first, until both the latest txn and the latest metaData are found (the
    // metaData of the versions a checkpoint covers is in the checkpoint).
    for &v in versions.iter().rev() {
        if t.txn.is_some() && (t.meta.is_some() || t.checkpoint.is_some_and(|cp| v <= cp)) {
            break;
        }
        for action in read_actions(fs, &dir.join(file_name(v)))? {
            if t.txn.is_none()
                && let Some(txn) = action.get("txn").filter(|x| x["appId"] == APP_ID)
            {
                let bad = || StorageError::DeltaLog { path: dir.join(file_name(v)), message: format!("bad txn {txn}") };
                t.txn = Some(txn["version"].as_u64().ok_or_else(bad)?);
            }
            if t.meta.is_none()
                && let Some(meta) = action.get("metaData")
            {
                t.meta = Some(meta.clone());
            }
        }
    }
    if t.meta.is_none()
        && let Some(cp) = t.checkpoint
    {
        t.meta = checkpoint_metadata(fs, &dir.join(checkpoint_name(cp)))?;
    }
    t.through = t.txn;
    if t.version.is_some() && t.txn.is_none() {
        return Err(StorageError::DeltaLog {
            path: dir.to_path_buf(),
            message: format!("no commit carries a txn of appId `{APP_ID}`: not written by ioc (`ioc lake rebuild`)"),
        });
    }
    Ok(t)
}

/// The actions of one Delta commit file.
fn read_actions(fs: &dyn Fs, path: &Path) -> Result<Vec<Value>, StorageError> {
    let corrupt = |message: String| StorageError::DeltaLog { path: path.to_path_buf(), message };
    let bytes = fs.read(path).map_err(io_err(path))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| corrupt(e.to_string()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| corrupt(e.to_string())))
        .collect()
}

/// The `metaData` in a checkpoint.
fn checkpoint_metadata(fs: &dyn Fs, path: &Path) -> Result<Option<Value>, StorageError> {
    let pq = |source| StorageError::Parquet { path: path.to_path_buf(), source };
    let file = bytes::Bytes::from(fs.read(path).map_err(io_err(path))?);
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
    let Some(column) = builder.schema().fields().iter().position(|f| f.name() == "metaData") else {
        return Ok(None);
    };
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [column]);
    let mut json_rows = Vec::new();
    let mut writer = arrow::json::ArrayWriter::new(&mut json_rows);
    for batch in builder.with_projection(mask).build().map_err(pq)? {
        writer.write(&batch?)?;
    }
    writer.finish()?;
    let rows: Vec<Value> = serde_json::from_slice(&json_rows)
        .map_err(|e| StorageError::DeltaLog { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(rows.into_iter().find_map(|mut r| r.get_mut("metaData").map(Value::take)))
}

fn export_table(
    store: &Store,
    table: &'static str,
    schema: &SchemaRef,
    t: &mut TableLog,
    commits: &[Commit],
    snap: &Snapshot,
    report: &mut ExportReport,
) -> Result<(), StorageError> {
    let dir = delta_log_dir(store.root(), table);
    let fetched;
    let mut commits = commits;
    // Commits must follow on from `through`; read the missing ones if they do not.
    if commits.first().is_some_and(|c| c.version > t.through.map_or(0, |v| v + 1)) {
        fetched = store.commits_after(t.through)?;
        commits = &fetched;
    }
    let next_index = |through: Option<u64>| commits.partition_point(|c| Some(c.version) <= through);
    let mut i = next_index(t.through);
    let mut attempts = 0;
    let current = delta_schema(schema)?.to_string();
    while let Some(c) = commits.get(i) {
        let actions = file_actions(table, c);
        if actions.is_empty() && t.version.is_some() {
            t.through = Some(c.version);
            i += 1;
            continue;
        }
        let version = t.version.map_or(0, |v| v + 1);
        // A new metaData in version 0, and with the first commit after the table's
        // schema changed (a column added: the files it adds have it).
        let meta = match &t.meta {
            _ if version == 0 => Some(new_metadata(table, &current, c.committed_at.timestamp_millis())),
            Some(m) if m["schemaString"] == current.as_str() => None,
            Some(m) => {
                let mut m = m.clone();
                m["schemaString"] = Value::String(current.clone());
                Some(m)
            }
            None => Some(new_metadata(table, &current, c.committed_at.timestamp_millis())),
        };
        let body = commit_body(c, actions, version == 0, meta.as_ref());
        if publish(store, &dir, &file_name(version), &body)? {
            if meta.is_some() {
                t.meta = meta;
            }
            t.version = Some(version);
            t.txn = Some(c.version);
            t.through = Some(c.version);
            report.commits += 1;
            i += 1;
            continue;
        }
        // Another exporter took this version: go on after what it exported.
        attempts += 1;
        report.raced += 1;
        if attempts >= MAX_ATTEMPTS {
            return Err(StorageError::Contention(MAX_ATTEMPTS));
        }
        let on_disk = load(store.fs(), &dir)?;
        debug!(table, version, txn = ?on_disk.txn, "Delta version taken by another exporter");
        let through = t.through.max(on_disk.txn);
        *t = TableLog { through, ..on_disk };
        i = next_index(t.through);
    }
    maybe_checkpoint(store, table, t, snap, report)
}

/// The `add` and `remove` actions of global commit `c` on `table`.
fn file_actions(table: &str, c: &Commit) -> Vec<Value> {
    let at = c.committed_at.timestamp_millis();
    // Compaction rewrites rows (remove + add): no data change. Retention drops rows.
    let rewrite = !c.remove.is_empty() && !c.add.is_empty();
    let mut out = Vec::new();
    for path in c.remove.iter().filter(|p| table_of(p) == Some(table)) {
        out.push(json!({"remove": {
            "path": table_path(path),
            "deletionTimestamp": at,
            "dataChange": !rewrite,
            "extendedFileMetadata": false,
        }}));
    }
    for f in c.add.iter().filter(|f| f.table == table) {
        let modified = f.accepted_at.unwrap_or(c.committed_at);
        out.push(add_action(f, modified, c.remove.is_empty()));
    }
    out
}

fn add_action(f: &DataFile, modified: DateTime<Utc>, data_change: bool) -> Value {
    let time = time_column_of(&f.table);
    // Delta keeps timestamp statistics to the millisecond: round outwards, so that no
    // reader prunes a file that holds a matching row.
    let min = f.min_time_us.div_euclid(1000) * 1000;
    let max = (f.max_time_us + 999).div_euclid(1000) * 1000;
    let stats = json!({
        "numRecords": f.rows,
        "minValues": {time: stat_time(min)},
        "maxValues": {time: stat_time(max)},
        "nullCount": {time: 0},
    });
    json!({"add": {
        "path": table_path(&f.path),
        "partitionValues": {},
        "size": f.bytes,
        "modificationTime": modified.timestamp_millis(),
        "dataChange": data_change,
        "stats": stats.to_string(),
    }})
}

fn stat_time(us: i64) -> String {
    DateTime::from_timestamp_micros(us).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The table of a data file's path, `tables/<table>/<date>/<file>`.
fn table_of(path: &str) -> Option<&str> {
    path.strip_prefix("tables/")?.split('/').next()
}

/// A data file's path relative to its table's folder, as a relative URI.
fn table_path(path: &str) -> String {
    let rel = path.strip_prefix("tables/").and_then(|p| p.split_once('/')).map_or(path, |(_, rest)| rest);
    let mut out = String::with_capacity(rel.len());
    for b in rel.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn commit_body(c: &Commit, actions: Vec<Value>, first: bool, meta: Option<&Value>) -> Vec<u8> {
    let at = c.committed_at.timestamp_millis();
    let operation = match (c.add.is_empty(), c.remove.is_empty()) {
        _ if first && actions.is_empty() => "CREATE TABLE",
        (false, false) => "OPTIMIZE",
        (true, false) => "DELETE",
        _ => "WRITE",
    };
    let mut lines = vec![json!({"commitInfo": {
        "timestamp": at,
        "operation": operation,
        "operationParameters": {},
        "isBlindAppend": c.remove.is_empty(),
        "engineInfo": concat!("ioc/", env!("CARGO_PKG_VERSION")),
        "ioc": {"version": c.version, "writer": c.writer},
    }})];
    if first {
        lines.push(protocol());
    }
    if let Some(meta) = meta {
        lines.push(json!({"metaData": meta}));
    }
    lines.push(json!({"txn": {"appId": APP_ID, "version": c.version, "lastUpdated": at}}));
    lines.extend(actions);
    let mut body = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut body, &l).expect("JSON serialises");
        body.push(b'\n');
    }
    body
}

fn protocol() -> Value {
    json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}})
}

/// A table's `metaData`: a fresh id, Parquet, its schema string, no partitions.
fn new_metadata(table: &str, schema_string: &str, created_ms: i64) -> Value {
    json!({
        "id": random_uuid(),
        "name": table,
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema_string,
        "partitionColumns": [],
        "configuration": {},
        "createdTime": created_ms,
    })
}

/// A version-4-shaped UUID from the standard library's randomly seeded hasher.
fn random_uuid() -> String {
    let mut bytes = [0u8; 16];
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(Utc::now().timestamp_nanos_opt().unwrap_or_default());
    h.write_u32(std::process::id());
    for chunk in bytes.chunks_mut(8) {
        let n = h.finish();
        chunk.copy_from_slice(&n.to_le_bytes());
        h.write_u64(n);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &s[..8], &s[8..12], &s[12..16], &s[16..20], &s[20..])
}

/// A table's Arrow schema in Delta's JSON schema format.
pub fn delta_schema(schema: &Schema) -> Result<Value, StorageError> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| Ok(json!({"name": f.name(), "type": delta_type(f)?, "nullable": f.is_nullable(), "metadata": {}})))
        .collect::<Result<Vec<_>, StorageError>>()?;
    Ok(json!({"type": "struct", "fields": fields}))
}

fn delta_type(f: &Field) -> Result<&'static str, StorageError> {
    Ok(match f.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string",
        DataType::Int64 => "long",
        DataType::Int32 => "integer",
        DataType::Int16 => "short",
        DataType::Int8 => "byte",
        DataType::Float64 => "double",
        DataType::Float32 => "float",
        DataType::Boolean => "boolean",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary",
        DataType::Date32 => "date",
        // Instants (adjusted to UTC): Delta's `timestamp`.
        DataType::Timestamp(_, Some(_)) => "timestamp",
        other => {
            return Err(StorageError::DeltaLog {
                path: PathBuf::new(),
                message: format!("column `{}`: no Delta type for {other}", f.name()),
            });
        }
    })
}

/// Publishes `body` as `dir/name` if the name is free ([`Fs::put_if_absent`]), then
/// fsyncs `dir`. `false` if the name was taken.
fn publish(store: &Store, dir: &Path, name: &str, body: &[u8]) -> Result<bool, StorageError> {
    let fs = store.fs();
    if !fs.exists(dir) {
        create_log_dir(store, dir)?;
    }
    let target = dir.join(name);
    match fs.put_if_absent(&store.temp_path("delta"), &target, body) {
        Ok(()) => {
            fs.sync_dir(dir).map_err(io_err(dir))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(StorageError::Io { path: target, source: e }),
    }
}

/// Creates `tables/<table>/_delta_log/` and makes its entry (and the table folder's,
/// for a table with no data yet) durable.
fn create_log_dir(store: &Store, dir: &Path) -> Result<(), StorageError> {
    let fs = store.fs();
    let table_dir = dir.parent().expect("a table folder");
    let new_table = !fs.exists(table_dir);
    fs.create_dir_all(dir).map_err(io_err(dir))?;
    fs.sync_dir(table_dir).map_err(io_err(table_dir))?;
    if new_table {
        let tables_dir = table_dir.parent().expect("tables/");
        fs.sync_dir(tables_dir).map_err(io_err(tables_dir))?;
    }
    Ok(())
}

/// Writes a checkpoint of `table` at its latest version if it is due and the table's
/// Delta log is level with `snap` (whose live files are then the table's).
fn maybe_checkpoint(
    store: &Store,
    table: &str,
    t: &mut TableLog,
    snap: &Snapshot,
    report: &mut ExportReport,
) -> Result<(), StorageError> {
    let interval = store.checkpoint_interval();
    let (Some(version), Some(txn)) = (t.version, t.txn) else { return Ok(()) };
    let due = interval > 0 && version >= t.checkpoint.unwrap_or(0) + interval;
    if !due || snap.version.is_none() || t.through != snap.version {
        return Ok(());
    }
    let dir = delta_log_dir(store.root(), table);
    let Some(meta) = t.meta.clone() else {
        warn!(table, version, "no metaData known for the Delta log; no checkpoint");
        return Ok(());
    };
    let header = vec![protocol(), json!({"metaData": meta})];
    let live = snap.files(table);
    let wanted: HashSet<&str> = live.iter().map(|f| f.path.as_str()).collect();
    let mut accepted: HashMap<&str, DateTime<Utc>> = HashMap::new();
    for (_, at, paths) in &snap.history {
        for p in paths.iter().filter(|p| wanted.contains(p.as_str())) {
            accepted.insert(p, *at);
        }
    }
    let mut actions = header;
    actions.push(json!({"txn": {"appId": APP_ID, "version": txn, "lastUpdated": Utc::now().timestamp_millis()}}));
    for f in live {
        let modified = f.accepted_at.or_else(|| accepted.get(f.path.as_str()).copied()).unwrap_or_default();
        actions.push(add_action(f, modified, false));
    }
    let body = checkpoint_parquet(&actions)?;
    let name = checkpoint_name(version);
    if publish(store, &dir, &name, &body)? {
        let hint = json!({"version": version, "size": actions.len(), "numOfAddFiles": live.len()}).to_string();
        let last = dir.join("_last_checkpoint");
        // A hint only (readers list the folder without it): replaced, not linked.
        match store.fs().remove_file(&last) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::Io { path: last, source: e }),
        }
        if !publish(store, &dir, "_last_checkpoint", hint.as_bytes())? {
            debug!(table, version, "another exporter wrote _last_checkpoint meanwhile");
        }
        report.checkpoints += 1;
        debug!(table, version, files = live.len(), "wrote a Delta checkpoint");
    }
    t.checkpoint = Some(version);
    Ok(())
}

/// The Arrow schema of a Delta checkpoint: one struct column per action type.
pub fn checkpoint_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let long = |n: &str| Field::new(n, DataType::Int64, true);
    let boolean = |n: &str| Field::new(n, DataType::Boolean, true);
    let map = |n: &str| {
        let entries = Fields::from(vec![Field::new("key", DataType::Utf8, false), s("value")]);
        Field::new(n, DataType::Map(Arc::new(Field::new("key_value", DataType::Struct(entries), false)), false), true)
    };
    let st = |n: &str, fields: Vec<Field>| Field::new(n, DataType::Struct(Fields::from(fields)), true);
    Arc::new(Schema::new(vec![
        st("txn", vec![s("appId"), long("version"), long("lastUpdated")]),
        st(
            "add",
            vec![
                s("path"),
                map("partitionValues"),
                long("size"),
                long("modificationTime"),
                boolean("dataChange"),
                s("stats"),
                map("tags"),
            ],
        ),
        st(
            "remove",
            vec![
                s("path"),
                long("deletionTimestamp"),
                boolean("dataChange"),
                boolean("extendedFileMetadata"),
                map("partitionValues"),
                long("size"),
            ],
        ),
        st(
            "metaData",
            vec![
                s("id"),
                s("name"),
                s("description"),
                st("format", vec![s("provider"), map("options")]),
                s("schemaString"),
                Field::new(
                    "partitionColumns",
                    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
                    true,
                ),
                map("configuration"),
                long("createdTime"),
            ],
        ),
        st(
            "protocol",
            vec![
                Field::new("minReaderVersion", DataType::Int32, true),
                Field::new("minWriterVersion", DataType::Int32, true),
            ],
        ),
    ]))
}

/// Actions (one JSON object each) as a checkpoint Parquet file.
fn checkpoint_parquet(actions: &[Value]) -> Result<Vec<u8>, StorageError> {
    let schema = checkpoint_schema();
    let mut ndjson = Vec::new();
    for a in actions {
        serde_json::to_writer(&mut ndjson, a).expect("JSON serialises");
        ndjson.push(b'\n');
    }
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone()).build(&ndjson[..])?;
    let pq = |source| StorageError::Parquet { path: PathBuf::from("<checkpoint>"), source };
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, None).map_err(pq)?;
    for batch in decoder.by_ref() {
        writer.write(&batch?).map_err(pq)?;
    }
    writer.close().map_err(pq)?;
    Ok(out)
}

fn parse_version(s: &str) -> Option<u64> {
    (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

fn checkpoint_name(version: u64) -> String {
    format!("{version:020}.checkpoint.parquet")
}

fn file_name(version: u64) -> String {
    format!("{version:020}.json")
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { path: path.to_path_buf(), source }
}

/// Logs a failed export after a commit that happened anyway.
pub(crate) fn warn_failed(version: u64, e: &StorageError) {
    warn!(version, error = %e, "committed, but the Delta logs could not be brought up to date; the next commit tries again");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;
    use std::time::Duration;

    use arrow::array::RecordBatch;

    use super::*;
    use crate::compact::{self, CompactOptions};
    use crate::schema::DEAD_LETTERS;
    use crate::store::tests::letters;

    fn commit(store: &Store, n: usize, at: &str) -> u64 {
        store.commit(&[(DEAD_LETTERS, letters(n, at))], BTreeMap::new(), Utc::now()).unwrap().version
    }

    /// Every Delta commit of a table, in version order, as its actions.
    fn delta_commits(root: &Path, table: &str) -> Vec<Vec<Value>> {
        let dir = delta_log_dir(root, table);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.len() == 25 && n.ends_with(".json"))
            .collect();
        names.sort();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(*n, file_name(i as u64), "the Delta log of {table} has no gap");
        }
        names
            .iter()
            .map(|n| {
                fs::read_to_string(dir.join(n)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
            })
            .collect()
    }

    /// What a Delta reader sees: (live paths, rows), replaying every commit; checks
    /// that no file is added twice while live and every remove names a live file.
    fn replay(root: &Path, table: &str, upto: Option<usize>) -> (BTreeSet<String>, u64) {
        let mut live: BTreeMap<String, u64> = BTreeMap::new();
        let commits = delta_commits(root, table);
        for actions in commits.iter().take(upto.map_or(usize::MAX, |v| v + 1)) {
            for a in actions {
                if let Some(add) = a.get("add") {
                    let stats: Value = serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
                    let path = add["path"].as_str().unwrap().to_string();
                    assert!(live.insert(path.clone(), stats["numRecords"].as_u64().unwrap()).is_none(), "{path} twice");
                }
                if let Some(rm) = a.get("remove") {
                    let path = rm["path"].as_str().unwrap();
                    assert!(live.remove(path).is_some(), "removed {path}, which is not live");
                }
            }
        }
        let rows = live.values().sum();
        (live.into_keys().collect(), rows)
    }

    fn snapshot_paths(store: &Store, table: &str) -> BTreeSet<String> {
        store.refresh().unwrap().files(table).iter().map(|f| table_path(&f.path)).collect()
    }

    fn txns(root: &Path, table: &str) -> Vec<u64> {
        delta_commits(root, table)
            .iter()
            .map(|actions| {
                let txn: Vec<u64> = actions.iter().filter_map(|a| a["txn"]["version"].as_u64()).collect();
                assert_eq!(txn.len(), 1, "one txn per Delta commit: {actions:?}");
                txn[0]
            })
            .collect()
    }

    #[test]
    fn every_commit_is_in_the_delta_log_of_the_tables_it_touches_with_its_global_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        store.set_delta_checkpoint_interval(0);
        commit(&store, 3, "2026-01-01T00:00:00Z");
        store.commit(&[], BTreeMap::new(), Utc::now()).unwrap();
        commit(&store, 2, "2026-01-02T00:00:00Z");

        let first = &delta_commits(dir.path(), DEAD_LETTERS)[0];
        assert_eq!(
            first.iter().find_map(|a| a.get("protocol")).unwrap(),
            &json!({"minReaderVersion": 1, "minWriterVersion": 2})
        );
        let meta = first.iter().find_map(|a| a.get("metaData")).unwrap();
        assert_eq!(meta["partitionColumns"], json!([]));
        let schema: Value = serde_json::from_str(meta["schemaString"].as_str().unwrap()).unwrap();
        assert_eq!(
            schema["fields"][0],
            json!({"name": "received_at", "type": "timestamp", "nullable": false, "metadata": {}})
        );
        let add = first.iter().find_map(|a| a.get("add")).unwrap();
        assert!(add["path"].as_str().unwrap().starts_with("2026-01-01/w-"), "{add}");
        let stats: Value = serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
        assert_eq!(stats["numRecords"], 3);
        assert_eq!(stats["minValues"]["received_at"], "2026-01-01T00:00:00.000Z");

        // Version 1 of the global log touches no table: no Delta commit for it.
        assert_eq!(txns(dir.path(), DEAD_LETTERS), [0, 2]);
        assert_eq!(replay(dir.path(), DEAD_LETTERS, None), (snapshot_paths(&store, DEAD_LETTERS), 5));
        // Every other table is a Delta table too, from the first commit on.
        for (table, _) in tables().filter(|(t, _)| *t != DEAD_LETTERS) {
            assert_eq!(txns(dir.path(), table), [0], "{table}");
            assert_eq!(replay(dir.path(), table, None).1, 0);
        }
        assert!(store.orphans().unwrap().is_empty(), "the Delta logs are not orphan data");
    }

    #[test]
    fn exporting_again_writes_nothing_and_a_lost_delta_commit_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        for day in ["2026-01-01", "2026-01-02", "2026-01-03"] {
            commit(&store, 2, &format!("{day}T00:00:00Z"));
        }
        assert_eq!(export(&store, None).unwrap(), ExportReport::default());
        let reopened = Store::open(dir.path(), "r").unwrap();
        assert_eq!(export(&reopened, None).unwrap(), ExportReport::default());
        let before = fs::read(delta_log_dir(dir.path(), DEAD_LETTERS).join(file_name(2))).unwrap();

        // As if the process had died after the global commit, before its Delta commit.
        fs::remove_file(delta_log_dir(dir.path(), DEAD_LETTERS).join(file_name(2))).unwrap();
        let reopened = Store::open(dir.path(), "r").unwrap();
        assert_eq!(txns(dir.path(), DEAD_LETTERS), [0, 1, 2]);
        let again = fs::read(delta_log_dir(dir.path(), DEAD_LETTERS).join(file_name(2))).unwrap();
        assert_eq!(String::from_utf8_lossy(&again), String::from_utf8_lossy(&before));
        assert_eq!(replay(dir.path(), DEAD_LETTERS, None), (snapshot_paths(&reopened, DEAD_LETTERS), 6));
    }

    #[test]
    fn compaction_and_retention_write_removes_and_vacuum_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        for _ in 0..3 {
            commit(&store, 4, "2026-03-10T03:00:00Z");
        }
        commit(&store, 2, "2020-01-15T03:00:00Z");
        let plan =
            compact::plan(&store.refresh().unwrap(), &CompactOptions { min_files: 2, ..CompactOptions::default() });
        assert_eq!(compact::compact(&store, &plan, None, &mut |_| {}).unwrap().files_removed, 3);
        let compacted = delta_commits(dir.path(), DEAD_LETTERS).pop().unwrap();
        let removes: Vec<&Value> = compacted.iter().filter_map(|a| a.get("remove")).collect();
        assert_eq!(removes.len(), 3);
        assert!(removes.iter().all(|r| r["dataChange"] == false));
        assert!(compacted.iter().filter_map(|a| a.get("add")).all(|a| a["dataChange"] == false));
        assert_eq!(replay(dir.path(), DEAD_LETTERS, None), (snapshot_paths(&store, DEAD_LETTERS), 14));

        let keep = (Utc::now() - "2021-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()).num_days() as u32;
        let days = BTreeMap::from([(DEAD_LETTERS.to_string(), keep)]);
        assert_eq!(compact::apply_retention(&store, &days, Utc::now()).unwrap().rows_removed, 2);
        let dropped = delta_commits(dir.path(), DEAD_LETTERS).pop().unwrap();
        let removes: Vec<&Value> = dropped.iter().filter_map(|a| a.get("remove")).collect();
        assert_eq!((removes.len(), &removes[0]["dataChange"]), (1, &json!(true)));
        assert!(removes[0]["path"].as_str().unwrap().starts_with("2020-01-15/"));
        assert_eq!(replay(dir.path(), DEAD_LETTERS, None), (snapshot_paths(&store, DEAD_LETTERS), 12));

        // A Delta log that cannot be written holds the vacuum back: the removed files
        // stay until their removes are in it.
        let removed: Vec<PathBuf> =
            store.snapshot().removed.iter().flat_map(|(_, _, p)| p.iter().map(|p| dir.path().join(p))).collect();
        let blocked = Store::open(dir.path(), "v").unwrap();
        let delta_dir = delta_log_dir(dir.path(), DEAD_LETTERS);
        fs::rename(&delta_dir, dir.path().join("aside")).unwrap();
        fs::write(&delta_dir, b"not a folder").unwrap();
        blocked.delta_state().lock().unwrap().tables.clear();
        let report = compact::vacuum(&blocked, Duration::ZERO, Utc::now()).unwrap();
        assert_eq!((report.files_deleted, report.files_pending), (0, 4));
        assert!(removed.iter().all(|p| p.exists()));
        fs::remove_file(&delta_dir).unwrap();
        fs::rename(dir.path().join("aside"), &delta_dir).unwrap();
        let report = compact::vacuum(&blocked, Duration::ZERO, Utc::now()).unwrap();
        assert_eq!((report.files_deleted, report.files_pending), (4, 0));
        assert!(removed.iter().all(|p| !p.exists()));
    }

    #[test]
    fn two_processes_exporting_at_once_never_corrupt_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let stores: Vec<Store> = (0..2).map(|i| Store::open(dir.path(), format!("w{i}")).unwrap()).collect();
        std::thread::scope(|s| {
            for st in &stores {
                s.spawn(move || {
                    for _ in 0..25 {
                        commit(st, 1, "2026-01-01T00:00:00Z");
                    }
                });
            }
        });
        for st in &stores {
            export(st, None).unwrap();
        }
        let reader = Store::open(dir.path(), "r").unwrap();
        assert_eq!(reader.snapshot().version, Some(49));
        let txn = txns(dir.path(), DEAD_LETTERS);
        assert_eq!(txn, (0..50).collect::<Vec<_>>(), "each global commit once, in order");
        assert_eq!(replay(dir.path(), DEAD_LETTERS, None), (snapshot_paths(&reader, DEAD_LETTERS), 50));
        for (table, _) in tables().filter(|(t, _)| *t != DEAD_LETTERS) {
            assert_eq!(txns(dir.path(), table), [0], "{table} was created once");
        }
    }

    #[test]
    fn rebuild_writes_the_same_tables_again_and_opening_builds_missing_logs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        for _ in 0..4 {
            commit(&store, 2, "2026-03-10T03:00:00Z");
        }
        let plan =
            compact::plan(&store.refresh().unwrap(), &CompactOptions { min_files: 2, ..CompactOptions::default() });
        compact::compact(&store, &plan, None, &mut |_| {}).unwrap();
        let expected = replay(dir.path(), DEAD_LETTERS, None);
        let at_1 = replay(dir.path(), DEAD_LETTERS, Some(1));
        assert_eq!(at_1.1, 4);

        rebuild(&store).unwrap();
        assert_eq!(txns(dir.path(), DEAD_LETTERS), [0, 1, 2, 3, 4]);
        assert_eq!(replay(dir.path(), DEAD_LETTERS, None), expected);
        assert_eq!(replay(dir.path(), DEAD_LETTERS, Some(1)), at_1);

        // A store from before the Delta logs: opening writes them.
        for (table, _) in tables() {
            fs::remove_dir_all(delta_log_dir(dir.path(), table)).unwrap();
        }
        let reopened = Store::open(dir.path(), "r").unwrap();
        assert_eq!(replay(dir.path(), DEAD_LETTERS, None), (snapshot_paths(&reopened, DEAD_LETTERS), 8));
        assert_eq!(txns(dir.path(), DEAD_LETTERS), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_table_whose_schema_gained_a_column_gets_a_new_metadata_with_its_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        store.set_delta_checkpoint_interval(3);
        commit(&store, 1, "2026-01-01T00:00:00Z");
        // As an older version would have written it: without the last column.
        let first = delta_log_dir(dir.path(), DEAD_LETTERS).join(file_name(0));
        let mut actions: Vec<Value> =
            fs::read_to_string(&first).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let meta = actions.iter_mut().find_map(|a| a.get_mut("metaData")).unwrap();
        let mut old: Value = serde_json::from_str(meta["schemaString"].as_str().unwrap()).unwrap();
        old["fields"].as_array_mut().unwrap().pop();
        meta["schemaString"] = Value::String(old.to_string());
        let id = meta["id"].clone();
        fs::write(&first, actions.iter().map(|a| format!("{a}\n")).collect::<String>()).unwrap();

        let upgraded = Store::open(dir.path(), "w2").unwrap();
        upgraded.set_delta_checkpoint_interval(3);
        for _ in 0..3 {
            commit(&upgraded, 1, "2026-01-01T00:00:00Z");
        }
        let commits = delta_commits(dir.path(), DEAD_LETTERS);
        let metas: Vec<(usize, &Value)> = commits
            .iter()
            .enumerate()
            .flat_map(|(v, c)| c.iter().filter_map(move |a| a.get("metaData").map(|m| (v, m))))
            .collect();
        assert_eq!(metas.len(), 2, "version 0's, and the one of the first commit after the upgrade");
        assert_eq!((metas[1].0, &metas[1].1["id"]), (1, &id), "the same table");
        let current = delta_schema(&crate::schema::schema_of(DEAD_LETTERS).unwrap()).unwrap().to_string();
        assert_eq!(metas[1].1["schemaString"], current.as_str());
        // The checkpoint (at 3) carries the new schema, and a process that starts from it
        // writes no other metaData.
        assert!(delta_log_dir(dir.path(), DEAD_LETTERS).join(checkpoint_name(3)).exists());
        let cp =
            checkpoint_metadata(&crate::fs::StdFs, &delta_log_dir(dir.path(), DEAD_LETTERS).join(checkpoint_name(3)))
                .unwrap()
                .unwrap();
        assert_eq!((&cp["schemaString"], &cp["id"]), (&Value::String(current), &id));
        commit(&Store::open(dir.path(), "w3").unwrap(), 1, "2026-01-01T00:00:00Z");
        let last = delta_commits(dir.path(), DEAD_LETTERS).pop().unwrap();
        assert!(last.iter().all(|a| a.get("metaData").is_none()), "{last:?}");
    }

    #[test]
    fn a_checkpoint_holds_the_live_files_of_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "w").unwrap();
        store.set_delta_checkpoint_interval(3);
        for i in 0..7 {
            commit(&store, i + 1, "2026-03-10T03:00:00Z");
        }
        let delta_dir = delta_log_dir(dir.path(), DEAD_LETTERS);
        let last: Value = serde_json::from_slice(&fs::read(delta_dir.join("_last_checkpoint")).unwrap()).unwrap();
        assert_eq!(last["version"], 6);
        let file = fs::File::open(delta_dir.join(format!("{:020}.checkpoint.parquet", 6))).unwrap();
        let batches: Vec<RecordBatch> = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut json_rows = Vec::new();
        let mut w = arrow::json::ArrayWriter::new(&mut json_rows);
        for b in &batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        let rows: Vec<Value> = serde_json::from_slice(&json_rows).unwrap();
        assert_eq!(rows.len(), last["size"].as_u64().unwrap() as usize);
        let adds: BTreeSet<String> = rows.iter().filter_map(|r| r["add"]["path"].as_str().map(String::from)).collect();
        assert_eq!(adds, replay(dir.path(), DEAD_LETTERS, Some(6)).0);
        assert_eq!(rows.iter().filter_map(|r| r["txn"]["version"].as_u64()).collect::<Vec<_>>(), [6]);
        assert!(rows.iter().any(|r| r["metaData"]["schemaString"].is_string()));
        assert!(rows.iter().any(|r| r["protocol"]["minReaderVersion"] == 1));
        // Checkpoints at 3 and 6 only, and none for tables that stay at version 0.
        let cps = fs::read_dir(&delta_dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".checkpoint.parquet"));
        assert_eq!(cps.count(), 2);
        assert!(!delta_log_dir(dir.path(), crate::KPI_HOURLY).join("_last_checkpoint").exists());
    }
}
