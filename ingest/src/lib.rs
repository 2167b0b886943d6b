//! `ioc-ingest`: getting events in, exactly once, without losing anything.
//!
//! - [`pipeline`]: the writer thread (validate → dedupe → Arrow → durable commit →
//!   listeners) with group commit, and the [`pipeline::Ingestor`] handle sources use;
//! - [`dedupe`]: the bounded `event_id` index, rebuilt from storage on start;
//! - [`simulator`]: seeded, realistic events for the demo and for load;
//! - [`telemetry`]: ingest metrics and their log lines.

pub mod dedupe;
pub mod kafka;
pub mod pipeline;
pub mod simulator;
pub mod telemetry;

pub use pipeline::{
    CommitListener, Committed, Derive, DeriveError, IngestError, Ingestor, Origin, Outcome, PipelineConfig, Record,
};
pub use simulator::Simulator;
pub use telemetry::IngestMetrics;
