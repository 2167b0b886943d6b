//! The SQL audit log: one JSON line per statement, with the token's name (never the
//! token), the protocol, how long it ran, how many rows it returned and how it ended.
//! Written to `<data-dir>/audit/sql.jsonl` and to the `audit` tracing target, by the
//! [`SqlEngine`](crate::SqlEngine) itself, so HTTP, the PostgreSQL wire protocol and
//! `ioc sql` cannot forget it. Admins query it as the `audit_log` table.
//!
//! - **Rotation by size.** When an entry would take `sql.jsonl` past
//!   [`Rotation::max_bytes`] (64 MiB), the file is renamed `sql.jsonl.1`, older ones move
//!   up one (`.1` → `.2`, ...), the one past [`Rotation::keep`] (5) is dropped, and the
//!   entry starts a new `sql.jsonl`. At most `keep + 1` files, about 384 MiB.
//! - **Several processes.** Several `ioc serve` (and `ioc sql`) may share a data dir.
//!   Every append, and so every rotation, runs under an exclusive `flock` of
//!   `sql.jsonl.lock`, a file that is never renamed, so every process locks the same
//!   one, and the kernel releases the lock of a process that dies. Under the lock the
//!   writer opens `sql.jsonl` afresh (a few microseconds per statement), so it never
//!   appends to a file that another process has just rotated away, nor rotates twice
//!   for one crossing of the limit. If the file system refuses locks, entries are still
//!   appended (`O_APPEND`), but not rotated, and a warning says why.
//! - **Torn tails.** A crash in the middle of an append leaves a last line without its
//!   newline. On open, and before every append, the writer reads the file's last byte;
//!   if it is not a newline the next entry starts with one, so a torn line costs only
//!   itself. Readers skip lines that do not parse.
//! - **Reading.** [`AuditLog::table`] is a streaming table: a query reads the rotated
//!   files and the current one, oldest first, line by line, in batches of the session's
//!   batch size (8,192 rows) or [`BATCH_BYTES`], whichever comes first, so the log is
//!   never all in memory and what the admin's query keeps is under the SQL sandbox's
//!   memory limit. The files and their lengths are taken together under a shared lock
//!   when the query starts: it sees exactly the entries complete at that moment, even
//!   if an append or a rotation follows.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::{RecordBatch, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use datafusion::catalog::TableProvider;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// The current file, in `<data-dir>/audit/`; rotated ones are `sql.jsonl.1`, `.2`, ...
pub const FILE_NAME: &str = "sql.jsonl";
const LOCK_NAME: &str = "sql.jsonl.lock";

/// The default size past which the current file is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// The default number of rotated files kept.
pub const DEFAULT_KEEP: usize = 5;
/// The most line bytes that go into one batch of the `audit_log` table (a batch also
/// ends at the session's batch size in rows): statements can be long.
pub const BATCH_BYTES: usize = 2 << 20;

/// One audited statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The token's name, e.g. `analyst-2`; `local` without tokens.
    pub token: String,
    /// `http`, `pg` or `cli`.
    pub via: String,
    pub sql: String,
    /// `ok`, `truncated`, or the error code (`read_only`, `query_timeout`, ...).
    pub outcome: String,
    pub rows: Option<u64>,
    pub ms: Option<u64>,
    pub error: Option<String>,
}

/// When the current file is rotated, and how many rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// An entry that would take the current file past this size goes to a new file
    /// (an entry larger than this on its own gets a file of its own).
    pub max_bytes: u64,
    /// Rotated files kept (`sql.jsonl.1` to `sql.jsonl.<keep>`); older ones are
    /// deleted. With 0, the current file is deleted when it is full.
    pub keep: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Self { max_bytes: DEFAULT_MAX_BYTES, keep: DEFAULT_KEEP }
    }
}

/// The append-only, rotated audit files.
pub struct AuditLog {
    dir: PathBuf,
    rotation: Rotation,
    /// The lock file, `flock`ed exclusively around each append. The mutex orders this
    /// process's threads; the `flock`, other processes (and other `AuditLog`s).
    lock: Mutex<File>,
}

impl AuditLog {
    /// Opens (creates) `<data_dir>/audit/sql.jsonl` with the default [`Rotation`].
    pub fn open(data_dir: &Path) -> io::Result<Arc<Self>> {
        Self::open_with(data_dir, Rotation::default())
    }

    /// Opens (creates) `<data_dir>/audit/sql.jsonl`, rotated as `rotation` says. A torn
    /// last line (a crash during an append) is ended, so the next entry is whole.
    pub fn open_with(data_dir: &Path, rotation: Rotation) -> io::Result<Arc<Self>> {
        let dir = data_dir.join("audit");
        std::fs::create_dir_all(&dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(dir.join(LOCK_NAME))?;
        let log = Self { dir, rotation, lock: Mutex::new(lock) };
        log.locked(|_| {
            let mut file = log.open_current()?;
            let len = file.metadata()?.len();
            if torn(&mut file, len)? {
                warn!(path = %log.current().display(), "the SQL audit log ends in a torn line (a crash during a write?); the next entry starts on a new line");
                file.write_all(b"\n")?;
            }
            Ok(())
        })?;
        Ok(Arc::new(log))
    }

    /// Writes `entry` to the file and to the `audit` tracing target. An I/O error is
    /// logged, never returned: a statement is not refused because its audit failed.
    pub fn record(&self, entry: &AuditEntry) {
        info!(target: "audit", token = entry.token, via = entry.via, outcome = entry.outcome, rows = entry.rows, ms = entry.ms, sql = entry.sql, "sql statement");
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(e) => {
                warn!(error = %e, "could not encode a SQL audit entry");
                return;
            }
        };
        line.push(b'\n');
        if let Err(e) = self.locked(|locked| self.append(&line, locked)) {
            warn!(error = %e, "could not write the SQL audit log");
        }
    }

    /// Every entry, oldest first, in memory: for tests and tools. SQL reads the
    /// streaming [`AuditLog::table`] instead.
    pub fn entries(&self) -> io::Result<Vec<AuditEntry>> {
        let mut lines = Lines::open(&self.dir)?;
        let mut out = Vec::new();
        while let Some(line) = lines.next_line()? {
            if let Some(e) = parse(line) {
                out.push(e);
            }
        }
        Ok(out)
    }

    pub fn schema() -> SchemaRef {
        let text = |n| Field::new(n, DataType::Utf8, true);
        Arc::new(Schema::new(vec![
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
            text("token"),
            text("via"),
            text("sql"),
            text("outcome"),
            Field::new("rows", DataType::UInt64, true),
            Field::new("ms", DataType::UInt64, true),
            text("error"),
        ]))
    }

    /// The admins' `audit_log` table: a stream over the files, read when a query runs.
    pub fn table(&self) -> Result<Arc<dyn TableProvider>, DataFusionError> {
        let stream = AuditStream { dir: self.dir.clone(), schema: Self::schema() };
        Ok(Arc::new(StreamingTable::try_new(Self::schema(), vec![Arc::new(stream)])?))
    }

    fn current(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    fn open_current(&self) -> io::Result<File> {
        OpenOptions::new().create(true).read(true).append(true).open(self.current())
    }

    /// Runs `f` holding this process's mutex and, if the file system allows it, the
    /// exclusive lock; `f` learns whether it holds the lock.
    fn locked<T>(&self, f: impl FnOnce(bool) -> io::Result<T>) -> io::Result<T> {
        let file = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let held = match file.lock() {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, path = %self.dir.join(LOCK_NAME).display(), "could not lock the SQL audit log; appending without rotation");
                false
            }
        };
        let result = f(held);
        if held && let Err(e) = file.unlock() {
            warn!(error = %e, "could not unlock the SQL audit log");
        }
        result
    }

    /// Appends one line (with its newline). `locked`: under the exclusive lock, so it
    /// may rotate.
    fn append(&self, line: &[u8], locked: bool) -> io::Result<()> {
        let mut file = self.open_current()?;
        let mut len = file.metadata()?.len();
        if locked && len > 0 && len + line.len() as u64 > self.rotation.max_bytes {
            drop(file);
            self.rotate()?;
            file = self.open_current()?;
            len = file.metadata()?.len();
        }
        if locked && torn(&mut file, len)? {
            let mut whole = Vec::with_capacity(line.len() + 1);
            whole.push(b'\n');
            whole.extend_from_slice(line);
            return file.write_all(&whole);
        }
        file.write_all(line)
    }

    /// `sql.jsonl` becomes `sql.jsonl.1`, `.1` becomes `.2`, ..., and `.<keep>` is
    /// replaced. A crash in between leaves a gap in the numbers, never entries out of
    /// order; readers skip missing files.
    fn rotate(&self) -> io::Result<()> {
        let keep = self.rotation.keep;
        if keep == 0 {
            return std::fs::remove_file(self.current());
        }
        for i in (1..keep).rev() {
            match std::fs::rename(rotated(&self.dir, i), rotated(&self.dir, i + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(self.current(), rotated(&self.dir, 1))?;
        info!(path = %self.current().display(), max_bytes = self.rotation.max_bytes, "rotated the SQL audit log");
        Ok(())
    }
}

fn rotated(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("{FILE_NAME}.{i}"))
}

/// Whether a file of `len` bytes does not end with a newline.
fn torn(file: &mut File, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

fn parse(line: &[u8]) -> Option<AuditEntry> {
    serde_json::from_slice(line.strip_suffix(b"\n").unwrap_or(line)).ok()
}

/// The lines of the files, oldest first, up to the lengths the files had when opened.
struct Lines {
    files: VecDeque<io::Take<BufReader<File>>>,
    buf: Vec<u8>,
}

impl Lines {
    /// Opens every file of the log in `dir` under a shared lock (so no append or
    /// rotation is half done) and notes its length.
    fn open(dir: &Path) -> io::Result<Self> {
        let lock = File::open(dir.join(LOCK_NAME))?;
        if let Err(e) = lock.lock_shared() {
            warn!(error = %e, "could not lock the SQL audit log to read it; reading it anyway");
        }
        // Oldest first: the highest number first, the current file last. Numbers are
        // listed, not counted up to, so a gap (a rotation cut short) hides nothing.
        let mut numbers: Vec<usize> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix(FILE_NAME)?.strip_prefix('.')?.parse().ok())
            .collect();
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        let paths = numbers.into_iter().map(|i| rotated(dir, i)).chain(std::iter::once(dir.join(FILE_NAME)));
        let mut files = VecDeque::new();
        for path in paths {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            files.push_back(BufReader::new(file).take(len));
        }
        // Closing the lock file releases the shared lock.
        drop(lock);
        Ok(Self { files, buf: Vec::new() })
    }

    /// The next line, with its newline if it has one; `None` at the end.
    fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            let Some(file) = self.files.front_mut() else { return Ok(None) };
            self.buf.clear();
            if file.read_until(b'\n', &mut self.buf)? > 0 {
                return Ok(Some(&self.buf));
            }
            self.files.pop_front();
        }
    }

    /// The next batch of at most `rows` entries and about `bytes` line bytes; `None`
    /// at the end. Lines that do not parse are skipped.
    fn next_batch(&mut self, rows: usize, bytes: usize) -> io::Result<Option<RecordBatch>> {
        let mut b = BatchBuilder::default();
        let (mut n, mut size) = (0, 0);
        while n < rows.max(1) && size < bytes {
            let Some(line) = self.next_line()? else { break };
            size += line.len();
            if let Some(e) = parse(line) {
                b.push(&e);
                n += 1;
            }
        }
        if n == 0 { Ok(None) } else { b.finish().map(Some) }
    }
}

struct BatchBuilder {
    at: TimestampMicrosecondBuilder,
    text: [StringBuilder; 5],
    rows: UInt64Builder,
    ms: UInt64Builder,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self {
            at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            text: std::array::from_fn(|_| StringBuilder::new()),
            rows: UInt64Builder::new(),
            ms: UInt64Builder::new(),
        }
    }
}

impl BatchBuilder {
    fn push(&mut self, e: &AuditEntry) {
        self.at.append_value(e.at.timestamp_micros());
        let [token, via, sql, outcome, error] = &mut self.text;
        token.append_value(&e.token);
        via.append_value(&e.via);
        sql.append_value(&e.sql);
        outcome.append_value(&e.outcome);
        error.append_option(e.error.as_deref());
        self.rows.append_option(e.rows);
        self.ms.append_option(e.ms);
    }

    fn finish(mut self) -> io::Result<RecordBatch> {
        let [token, via, sql, outcome, error] = &mut self.text;
        RecordBatch::try_new(
            AuditLog::schema(),
            vec![
                Arc::new(self.at.finish()),
                Arc::new(token.finish()),
                Arc::new(via.finish()),
                Arc::new(sql.finish()),
                Arc::new(outcome.finish()),
                Arc::new(self.rows.finish()),
                Arc::new(self.ms.finish()),
                Arc::new(error.finish()),
            ],
        )
        .map_err(io::Error::other)
    }
}

/// The one partition of the `audit_log` table.
#[derive(Debug)]
struct AuditStream {
    dir: PathBuf,
    schema: SchemaRef,
}

impl PartitionStream for AuditStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Reads on a blocking thread, two batches ahead of the query at most; stops when
    /// the query is dropped (the send fails).
    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let rows = ctx.session_config().batch_size();
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        let tx = builder.tx();
        let dir = self.dir.clone();
        builder.spawn_blocking(move || {
            let mut lines = Lines::open(&dir)?;
            while let Some(batch) = lines.next_batch(rows, BATCH_BYTES)? {
                if tx.blocking_send(Ok(batch)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            // Never a whole millisecond, so every `at` is written with six digits.
            at: DateTime::from_timestamp_micros(1_767_225_600_000_001 + 1000 * i as i64).unwrap(),
            token: "analyst-2".into(),
            via: "pg".into(),
            sql: format!("SELECT {i}"),
            outcome: "ok".into(),
            rows: Some(1),
            ms: Some(3),
            error: None,
        }
    }

    #[test]
    fn entries_round_trip_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.record(&entry(1));
        OpenOptions::new().append(true).open(log.current()).unwrap().write_all(b"{\"at\": \"torn").unwrap();
        assert_eq!(log.entries().unwrap(), vec![entry(1)]);
    }

    #[test]
    fn a_torn_tail_does_not_swallow_the_next_entry() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.record(&entry(1));
        // A crash during an append, while this process goes on ...
        OpenOptions::new().append(true).open(log.current()).unwrap().write_all(b"{\"at\": \"torn").unwrap();
        log.record(&entry(2));
        // ... and after a restart.
        OpenOptions::new().append(true).open(log.current()).unwrap().write_all(b"{\"at\":").unwrap();
        drop(log);
        let log = AuditLog::open(dir.path()).unwrap();
        log.record(&entry(3));
        assert_eq!(log.entries().unwrap(), vec![entry(1), entry(2), entry(3)]);
    }

    #[test]
    fn the_file_rotates_at_its_size_and_entries_stay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let line = serde_json::to_vec(&entry(10)).unwrap().len() as u64 + 1;
        // Room for three entries a file, two rotated files kept.
        let log = AuditLog::open_with(dir.path(), Rotation { max_bytes: 3 * line, keep: 2 }).unwrap();
        let audit = dir.path().join("audit");
        let size = |name: &str| std::fs::metadata(audit.join(name)).map(|m| m.len()).ok();
        for i in 10..13 {
            log.record(&entry(i));
        }
        assert_eq!((size("sql.jsonl"), size("sql.jsonl.1")), (Some(3 * line), None));
        log.record(&entry(13));
        assert_eq!((size("sql.jsonl"), size("sql.jsonl.1")), (Some(line), Some(3 * line)));
        assert_eq!(log.entries().unwrap(), (10..14).map(entry).collect::<Vec<_>>());
        // Two more files' worth: the oldest file (10..13) is dropped.
        for i in 14..20 {
            log.record(&entry(i));
        }
        assert_eq!((size("sql.jsonl"), size("sql.jsonl.2"), size("sql.jsonl.3")), (Some(line), Some(3 * line), None));
        assert_eq!(log.entries().unwrap(), (13..20).map(entry).collect::<Vec<_>>());
    }

    #[test]
    fn two_logs_on_one_dir_rotate_once_per_crossing() {
        // Two processes' logs over one data dir: each appends to the file that is
        // current, whoever rotated it.
        let dir = tempfile::tempdir().unwrap();
        let line = serde_json::to_vec(&entry(1000)).unwrap().len() as u64 + 1;
        let rotation = Rotation { max_bytes: 4 * line, keep: 10 };
        let (a, b) =
            (AuditLog::open_with(dir.path(), rotation).unwrap(), AuditLog::open_with(dir.path(), rotation).unwrap());
        std::thread::scope(|s| {
            s.spawn(|| (0..1000).for_each(|i| a.record(&entry(1000 + i))));
            s.spawn(|| (0..1000).for_each(|i| b.record(&entry(2000 + i))));
        });
        let audit = dir.path().join("audit");
        let sizes: Vec<u64> = (1..=10)
            .map(|i| std::fs::metadata(rotated(&audit, i)).unwrap().len())
            .chain([std::fs::metadata(audit.join(FILE_NAME)).unwrap().len()])
            .collect();
        assert_eq!(sizes, vec![4 * line; 11], "every file full, none skipped or doubled");
        let entries = a.entries().unwrap();
        assert_eq!(entries.len(), 44, "the 10 + 1 files hold the last 44 of 2,000");
        for writer in [1, 2] {
            let mine: Vec<u64> =
                entries.iter().map(|e| e.sql[7..].parse().unwrap()).filter(|i| i / 1000 == writer).collect();
            assert!(mine.is_sorted(), "each writer's entries in order: {mine:?}");
        }
    }
}
