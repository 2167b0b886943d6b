//! `ioc-core`: the pure domain of the IOC backend.
//!
//! No I/O, no async, no clocks: callers pass `now` in. Everything here is a value
//! in and a value out, so it is unit-tested without files, sockets or time.
//!
//! - [`event`]: the event model of CONTRACT.md §1 and its validation;
//! - [`admin`]: the reference data (34 provinces, 3,321 communes);
//! - [`alert`]: alert rules and the pure alert state machine (`step`);
//! - [`catalog`]: the KPI catalog (data, not code) and targets;
//! - [`time`]: Vietnam-time calendar buckets;
//! - [`counters`]: additive counter deltas per KPI, hour and dimension tuple, the dense
//!   per-province cube that sums them, and running period totals;
//! - [`dim_cube`]: per-day counters for each other dimension (with the province);
//! - [`ids`]: ids kept as 128-bit hashes, and the hasher for maps keyed by them;
//! - [`index`]: the QĐ 766 service index: its definition (catalog data) and scoring;
//! - [`open_dossiers`]: the state behind the `overdue_open` gauge;
//! - [`sources`]: the family of a sending system, and events per family per minute.

pub mod admin;
pub mod alert;
pub mod catalog;
pub mod counters;
pub mod dim_cube;
pub mod event;
pub mod ids;
pub mod index;
pub mod open_dossiers;
pub mod sources;
pub mod time;

pub use admin::AdminUnits;
pub use catalog::{Catalog, KpiDef, KpiKind};
pub use counters::{Count, CounterDelta, CubeRow, Dim, DimFilter, DimValues, ProvinceCube, ProvinceSel, Rollup};
pub use event::{Event, EventType, Family, ValidationError, decode_event};
