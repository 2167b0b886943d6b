//! `ioc-api`: the only crate that knows HTTP and JSON.
//!
//! - [`app`]: `fn app(state) -> Router`, auth middleware, health and metrics;
//! - [`events`], [`kpis`], [`index`], [`sql`]: the REST handlers;
//! - [`auth`]: bearer tokens and roles; [`pg`]: the PostgreSQL wire protocol;
//! - [`config`]: flags, `IOC_*` variables and the TOML config file;
//! - [`live`]: the hub that computes KPI changes once and fans them out;
//!   [`ws`]: the websocket endpoint; [`alerts`]: alert evaluation, history and
//!   delivery; [`webhook`]: the Alertmanager payload; [`throughput`]: events per
//!   minute by source family, for the wall display;
//! - [`maintenance`]: compaction, retention and vacuum, in the background and for
//!   `ioc compact`;
//! - [`server`]: wiring and graceful shutdown; [`dashboard`]: the embedded page.

pub mod alerts;
pub mod app;
pub mod auth;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod http_metrics;
pub mod index;
pub mod json;
pub mod kpis;
pub mod live;
pub mod maintenance;
pub mod pg;
pub mod server;
pub mod sql;
pub mod throughput;
pub mod webhook;
pub mod ws;
