//! `ioc-query`: reading what ingest committed.
//!
//! - [`context`]: DataFusion sessions over one storage snapshot, with the contract's
//!   tables (`dossier_events`, ..., `admin_units`, `dead_letters`);
//! - [`sandbox`]: the read-only SQL sandbox with memory, time, row and concurrency limits,
//!   row security for province-scoped callers, and the audit log ([`audit`]);
//! - [`kpi`]: the KPI engine: catalog expressions compiled once, evaluated on committed
//!   batches (live counters) and as SQL over Parquet (recompute and period edges).

pub mod audit;
pub mod context;
pub mod kpi;
pub mod sandbox;

pub use audit::{AuditEntry, AuditLog};
pub use kpi::{KpiEngine, KpiError, KpiValue, Period, SeriesQuery, SeriesRow};
pub use sandbox::{Caller, Described, QueryOutput, SessionHook, SqlEngine, SqlError, SqlLimits};
