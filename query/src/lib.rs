//! `ioc-query`: reading what ingest committed.
//!
//! - [`context`]: DataFusion sessions over one storage snapshot, with the contract's
//!   tables (`dossier_events`, ..., `admin_units`, `dead_letters`);
//! - [`sandbox`]: the read-only SQL sandbox with memory, time, row and concurrency limits,
//!   row security for province-scoped callers, and the audit log ([`audit`]);
//! - [`kpi`]: the KPI engine: catalog expressions compiled once, evaluated on the
//!   events of each commit (its rollups) and as SQL over Parquet (recompute and period
//!   edges); the in-memory province cube and SQL over the rollups answer queries;
//! - [`rollup`]: the `kpi_hourly` rollup rows, and their re-aggregation for compaction;
//! - [`date_trunc`]: DataFusion's `date_trunc`, fast on time-ordered rows;
//! - [`eager_aggregate`]: groups the events before a join with a lookup table such as
//!   `admin_units`, when the answer cannot change;
//! - [`view_eq`]: `text = 'literal'` in filters, compared by views;
//! - [`view_groups`]: a faster GROUP BY over one text column, swapped into plans by a
//!   physical optimizer rule;
//! - [`generate`]: writes seeded simulator events with their rollups, fast (benchmarks).

pub mod audit;
pub mod context;
pub mod date_trunc;
pub mod eager_aggregate;
pub mod generate;
pub mod index;
pub mod kpi;
pub mod rollup;
pub mod sandbox;
pub mod view_eq;
pub mod view_groups;

pub use audit::{AuditEntry, AuditLog};
pub use kpi::{
    KpiEngine, KpiError, KpiLimits, KpiValue, LiveChanges, Period, STATE_DIR, Saved, SeriesQuery, SeriesRow, Startup,
    StateError, commits_without_rollups,
};
pub use rollup::{RollupError, reaggregate_rollups};
pub use sandbox::{Caller, Described, QueryOutput, SessionHook, SqlEngine, SqlError, SqlLimits};
