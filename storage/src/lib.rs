//! `ioc-storage`: the on-disk layout shared by ingest (writer) and query (reader).
//!
//! - [`schema`]: Arrow schemas of the contract's tables and builders from events;
//! - [`store`]: Parquet files made visible by an atomic, fsynced commit log that also
//!   records source positions (Kafka offsets) in the same commit;
//! - [`compact`]: compaction of small files, retention of old date partitions, and
//!   the deferred deletion (vacuum) of removed files;
//! - [`delta`]: the Delta Lake log of every table, derived from the commit log, so
//!   that other engines read exactly the committed files;
//! - [`fs`]: the file-system seam every write of the store goes through;
//! - [`object`]: the store in an S3-compatible bucket, an [`fs::Fs`] over `object_store`.

pub mod compact;
pub mod delta;
pub mod fs;
pub mod object;
pub mod schema;
pub mod store;

pub use compact::{CompactOptions, CompactPlan, CompactReport, RetentionReport, Rewrite, RewriteError, VacuumReport};
pub use schema::{
    DEAD_LETTERS, DeadLetter, FamilyBuilder, KPI_HOURLY, adapt_batch, dead_letter_batch, family_schema,
    kpi_hourly_schema, time_column_of,
};
pub use store::{Commit, CommitInfo, DataFile, Publish, Snapshot, Staged, StorageError, Store};
