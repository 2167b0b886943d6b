//! Wiring: storage → KPI engine → ingest pipeline → HTTP, and graceful shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::Utc;
use ioc_core::event::DecodeOptions;
use ioc_core::{AdminUnits, Catalog};
use ioc_ingest::kafka::{self, KafkaConfig, KafkaMetrics};
use ioc_ingest::pipeline::{self, PipelineConfig};
use ioc_ingest::{IngestMetrics, Ingestor, Origin, Record, Simulator};
use ioc_query::context::admin_units_table;
use ioc_query::{KpiEngine, STATE_DIR, SqlEngine, Startup};
use ioc_storage::Store;
use prometheus::Registry;
use std::thread::JoinHandle;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::alerts::{AlertEngine, AlertError};
use crate::app::{AppState, app};
use crate::config::{ConfigError, Settings};
use crate::http_metrics::HttpMetrics;
use crate::live::Hub;
use crate::maintenance::{self, MaintenanceMetrics};
use crate::pg::{self, PgHandlers};
use crate::throughput::{self, ThroughputCounter};
use crate::ws::WsMetrics;

#[derive(Debug, Error)]
pub enum ServerError {
    /// Bad configuration: the binary exits with code 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Storage(#[from] ioc_storage::StorageError),
    #[error("KPI engine: {0}")]
    Kpi(#[from] ioc_query::KpiError),
    #[error("ingest: {0}")]
    Ingest(#[from] ioc_ingest::IngestError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Alerts(#[from] AlertError),
    /// The writer stopped while the server ran (a commit whose durability could not
    /// be confirmed): the process exits so that a restart rebuilds from disk.
    #[error("the ingest writer stopped; the server stopped with it, restart it to rebuild its state from storage")]
    WriterStopped,
}

/// What to run besides the API.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Serve,
    /// The embedded simulator at this many events per second.
    Demo {
        rate: u32,
    },
}

/// The shipped catalog, or the one `--catalog` names, checked: its target entries
/// name provinces in effect (the shipped one's are, by a unit test).
pub fn load_catalog(path: Option<&PathBuf>) -> Result<Catalog, ConfigError> {
    const KEY: &str = "--catalog / IOC_CATALOG / catalog";
    let Some(path) = path else { return Ok(Catalog::builtin()) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Invalid { key: KEY, message: format!("{}: {e}", path.display()) })?;
    let catalog = Catalog::from_toml(&text).map_err(|e| ConfigError::Invalid { key: KEY, message: e.to_string() })?;
    catalog
        .check_provinces(&AdminUnits::builtin())
        .map_err(|e| ConfigError::Invalid { key: KEY, message: e.to_string() })?;
    Ok(catalog)
}

/// The state every handler shares, built from the settings: the store opened, the KPI
/// state rebuilt, the writer thread started (join its handle after every
/// [`Ingestor`] is dropped). Nothing listens yet; [`run`] serves it.
pub fn build(settings: &Settings, stop: watch::Receiver<bool>) -> Result<(AppState, JoinHandle<()>), ServerError> {
    settings.check_bind_safety()?;
    for t in settings.tokens.iter().filter(|t| t.is_weak()) {
        warn!(token = %t.name, "token is shorter than 16 characters; use long random tokens");
    }
    let catalog = Arc::new(load_catalog(settings.catalog.as_ref())?);
    let units = Arc::new(AdminUnits::builtin());
    let writer = format!("w{}x{}", std::process::id(), Utc::now().timestamp_millis());
    let store = Store::open(settings.data_dir.join("store"), writer)?;
    let _ = store.orphans()?;
    let admin = admin_units_table(&units);
    let kpis = Arc::new(KpiEngine::new(catalog.clone(), store.clone(), &units)?.with_limits(settings.kpi.clone()));
    // Stores written before rollups existed get them once, before the KPI state is
    // rebuilt from them.
    kpis.backfill_rollups(Utc::now())?;
    let snapshot = store.refresh()?;
    let registry = Registry::new();
    let metrics = IngestMetrics::register(&registry)?;
    // Events per minute by source family, for the wall display.
    let throughput = Arc::new(ThroughputCounter::default());
    let kafka_metrics = match &settings.kafka_brokers {
        Some(_) => Some(KafkaMetrics::register(&registry)?),
        None => None,
    };
    // The KPI state (from the newest snapshot of it and the commits after it, else
    // rebuilt) and the pipeline's dedupe index are set up side by side. Nothing reaches
    // the listeners before this returns: commits come from sources and the sync task,
    // neither of which exists yet.
    let state_dir = settings.state_dir.join(STATE_DIR);
    let (startup, pipeline) = std::thread::scope(|s| {
        let restore = s.spawn(|| {
            let started = std::time::Instant::now();
            kpis.restore_or_rebuild(&state_dir, &snapshot).map(|how| (how, started.elapsed().as_secs_f64()))
        });
        let pipeline = pipeline::start(
            store.clone(),
            &snapshot,
            units.clone(),
            Some(kpis.clone()),
            vec![kpis.clone(), throughput.clone()],
            metrics,
            PipelineConfig {
                dedupe_window_days: settings.dedupe_window_days,
                decode: DecodeOptions { legacy_province_codes: settings.legacy_province_codes },
                ..Default::default()
            },
        );
        (restore.join().expect("the KPI state restore panicked"), pipeline)
    });
    let (ingestor, writer_thread) = pipeline?;
    let (startup, startup_secs) = startup?;
    let startup_gauge = prometheus::GaugeVec::new(
        prometheus::Opts::new(
            "ioc_kpi_startup_seconds",
            "Seconds the KPI state took to set up at start, by how: from a snapshot and the commits after it, or rebuilt from every rollup and dossier event",
        ),
        &["from"],
    )?;
    registry.register(Box::new(startup_gauge.clone()))?;
    let from = match startup {
        Startup::Snapshot { .. } => "snapshot",
        Startup::Rebuilt { .. } => "rebuild",
    };
    startup_gauge.with_label_values(&[from]).set(startup_secs);
    let audit = ioc_query::AuditLog::open(&settings.state_dir)
        .map_err(|source| ServerError::Io { what: "audit log".into(), source })?;
    let hub = Arc::new(Hub::new(4096));
    let alerts = Arc::new(
        AlertEngine::open(&settings.alerts, kpis.catalog(), &units, &settings.state_dir, &registry)?
            .with_webhook(stop.clone()),
    );
    let ws_metrics = WsMetrics::register(&registry)?;
    let http_metrics = HttpMetrics::register(&registry)?;
    let state = AppState {
        store: store.clone(),
        units,
        ingestor,
        kpis,
        sql: SqlEngine::new(store, admin, settings.sql.clone()).with_audit(audit).with_catalog(catalog),
        registry,
        tokens: Arc::new(settings.tokens.clone()),
        body_limit_bytes: settings.body_limit_bytes,
        requests: Arc::new(AtomicU64::new(0)),
        kafka: kafka_metrics,
        boot_id: format!("{:x}", Utc::now().timestamp_millis()),
        hub,
        alerts,
        ws: settings.ws,
        ws_metrics,
        http_metrics,
        shutdown: stop,
        throughput,
        dashboard: settings.dashboard.clone(),
    };
    Ok((state, writer_thread))
}

/// Runs until `shutdown` resolves, then stops accepting, finishes in-flight requests,
/// and waits for the last commit.
pub async fn run(
    settings: Settings,
    mode: Mode,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (state, writer_thread) = build(&settings, stop_rx.clone())?;
    let maintenance_metrics = MaintenanceMetrics::register(&state.registry)?;
    let (store, ingestor, kpis, hub, alerts, units) = (
        state.store.clone(),
        state.ingestor.clone(),
        state.kpis.clone(),
        state.hub.clone(),
        state.alerts.clone(),
        state.units.clone(),
    );
    let (kafka_metrics, ws_metrics) = (state.kafka.clone(), state.ws_metrics.clone());
    // The live values exist before the first websocket asks for a snapshot.
    hub.tick(&kpis, Utc::now(), true);

    let listener = TcpListener::bind(settings.http)
        .await
        .map_err(|source| ServerError::Io { what: format!("cannot listen on {}", settings.http), source })?;
    let local = listener.local_addr().map_err(|source| ServerError::Io { what: "listener".into(), source })?;
    info!(addr = %local, mode = ?mode, "IOC API listening on http://{local}/");

    let pg_listener = TcpListener::bind(settings.pg).await.map_err(|source| ServerError::Io {
        what: format!("--pg / IOC_PG / pg: cannot listen on {}", settings.pg),
        source,
    })?;
    let pg_handlers = Arc::new(PgHandlers::new(state.sql.clone(), state.tokens.clone()));
    let pg_task = tokio::spawn(pg::serve(pg_listener, pg_handlers, stop_rx.clone()));

    let kafka = match (&settings.kafka_brokers, kafka_metrics) {
        (Some(brokers), Some(m)) => {
            let mut config = KafkaConfig::new(brokers.clone());
            config.topics = settings.kafka_topics.clone();
            config.group = settings.kafka_group.clone();
            config.assignment = settings.kafka_assignment;
            Some(tokio::spawn(kafka::run(config, ingestor.clone(), store.clone(), m, stop_rx.clone())))
        }
        _ => None,
    };
    // Other instances may share the store (scale-out): fold their commits in even
    // while this one ingests nothing.
    let sync = tokio::spawn(sync_with_other_writers(ingestor.clone(), stop_rx.clone()));
    let hub_task = tokio::spawn(hub.clone().run(kpis.clone(), stop_rx.clone()));
    let throughput_task = tokio::spawn(throughput::run(state.throughput.clone(), hub.clone(), stop_rx.clone()));
    let alert_task = tokio::spawn(alerts.clone().run(kpis.clone(), hub.clone(), stop_rx.clone()));
    // Compaction, retention and vacuum: off the writer thread, published with CAS.
    let maintenance_task = tokio::spawn(maintenance::run_background(
        store.clone(),
        settings.compaction.clone(),
        maintenance_metrics,
        stop_rx.clone(),
    ));
    let state_task =
        tokio::spawn(save_kpi_state(kpis.clone(), store.clone(), settings.state_dir.join(STATE_DIR), stop_rx.clone()));
    let simulator = match mode {
        Mode::Demo { rate } => Some(tokio::spawn(simulate_live(ingestor.clone(), units, rate, stop_rx.clone()))),
        Mode::Serve => None,
    };
    drop(ingestor);

    let mut stop_for_http = stop_rx.clone();
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        let _ = stop_for_http.wait_for(|s| *s).await;
    });
    let stop_tx = Arc::new(stop_tx);
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            info!("shutting down: finishing requests and the last commit");
            let _ = stop_tx.send(true);
        });
    }
    // The writer ends on shutdown, once every source is gone, or on its own after a
    // commit whose durability it could not confirm: then the whole server stops (fail
    // stop, as PostgreSQL does on a failed fsync), and a restart rebuilds from disk.
    let writer = {
        let (stop_tx, stop_rx) = (stop_tx.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
            let unexpected = !*stop_rx.borrow();
            if unexpected {
                tracing::error!("the ingest writer stopped while the server ran; stopping the server");
                let _ = stop_tx.send(true);
            }
            unexpected
        })
    };
    server.await.map_err(|source| ServerError::Io { what: "HTTP server".into(), source })?;
    if let Some(sim) = simulator {
        let _ = sim.await;
    }
    let _ = sync.await;
    let _ = pg_task.await;
    let _ = hub_task.await;
    let _ = throughput_task.await;
    let _ = alert_task.await;
    let _ = maintenance_task.await;
    // Upgraded websockets outlive the HTTP server's graceful shutdown: give each a
    // moment to send its close frame.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while ws_metrics.open() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(k) = kafka {
        match k.await {
            Ok(Err(e)) => warn!(error = %e, "Kafka consumer failed"),
            Err(e) => warn!(error = %e, "Kafka consumer task panicked"),
            Ok(Ok(())) => {}
        }
    }
    // Every Ingestor is gone now; the writer drains its queue and stops.
    let writer_failed = writer.await.unwrap_or(true);
    let _ = state_task.await;
    // The final state, so that the next start folds in nothing.
    if !writer_failed {
        save_state_now(&kpis, &settings.state_dir.join(STATE_DIR)).await;
    }
    info!("stopped");
    if writer_failed {
        return Err(ServerError::WriterStopped);
    }
    Ok(())
}

/// How often the live KPI state is snapshotted while commits arrive: a restart after a
/// crash folds in at most this much of the newest data on top of the snapshot.
const STATE_SNAPSHOT_EVERY: Duration = Duration::from_secs(300);

/// Snapshots the live KPI state every [`STATE_SNAPSHOT_EVERY`] if it changed, and soon
/// after a commit that removed files (compaction, retention): a snapshot older than
/// such a commit cannot be used once the files it merged are gone.
async fn save_kpi_state(kpis: Arc<KpiEngine>, store: Store, dir: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut saved_at, mut rewrites) = (tokio::time::Instant::now(), store.snapshot().rewrites.len());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
        let now_rewrites = store.snapshot().rewrites.len();
        if saved_at.elapsed() >= STATE_SNAPSHOT_EVERY || now_rewrites != rewrites {
            save_state_now(&kpis, &dir).await;
            (saved_at, rewrites) = (tokio::time::Instant::now(), now_rewrites);
        }
    }
}

async fn save_state_now(kpis: &Arc<KpiEngine>, dir: &Path) {
    let (kpis, dir) = (kpis.clone(), dir.to_path_buf());
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || kpis.save_state(&dir)).await {
        Ok(Ok(Some(saved))) => info!(
            version = saved.version,
            bytes = saved.bytes,
            ms = started.elapsed().as_millis() as u64,
            "KPI state snapshot written"
        ),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => warn!(error = %e, "could not write a KPI state snapshot; a restart will rebuild"),
        Err(e) => warn!(error = %e, "the KPI state snapshot task panicked"),
    }
}

/// Asks the writer once a second to fold in commits by other writers.
async fn sync_with_other_writers(ingestor: Ingestor, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
        if let Err(e) = ingestor.sync().await {
            warn!(error = %e, "could not fold in other writers' commits");
        }
    }
}

/// The demo's live event stream: `rate` events per second, committed once a second
/// (one commit per tick keeps the number of small files down), stamped with the
/// current time.
async fn simulate_live(ingestor: Ingestor, units: Arc<AdminUnits>, rate: u32, mut stop: watch::Receiver<bool>) {
    let mut sim = Simulator::new(units, Utc::now().timestamp_millis() as u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut carry = 0.0f64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
        carry += f64::from(rate);
        let n = carry.floor() as usize;
        carry -= n as f64;
        if n == 0 {
            continue;
        }
        let now = Utc::now();
        let records: Vec<Record> = (0..n)
            .map(|_| Record::new(sim.next_event(now).to_json().to_string().into_bytes(), Origin::Simulator))
            .collect();
        if let Err(e) = ingestor.submit(records, Default::default()).await {
            warn!(error = %e, "demo simulator could not submit events");
            break;
        }
    }
}
