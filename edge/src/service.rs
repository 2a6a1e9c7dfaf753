//! The service (`acsgd run`): opens the outbox, starts the uplink and the ingest, writes the
//! status file, and stops in order on SIGTERM or SIGINT.
//!
//! Stop order: ingest stops taking lines (connections answer what they hold) → sensors stop
//! reading and their batches are stored → fusion closes open passages and stores them → the outbox
//! commits everything queued and flushes → the uplink waits briefly for outstanding PUBACKs
//! and says `offline` → final status. Nothing accepted is lost at any point of it: what is not
//! yet delivered stays in the outbox for the next start.
//!
//! Every task is watched ([`crate::supervise`]): when one the appliance cannot run without
//! dies, the service reports a `health` event for it, stops in the same order and exits
//! non-zero, so that systemd starts it again; a camera that dies is a `health` event only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::envelope::{EnvelopeError, Signer};
use crate::health::{Health, State};
use crate::outbox::{OpenMode, OpenNote, Outbox, Store, StoreError};
use crate::status::{self, Source, Status};
use crate::supervise::{Death, Deaths, Supervisor};
use crate::uplink::{self, UplinkConfig, UplinkError, UplinkState};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] EnvelopeError),
    #[error(transparent)]
    Uplink(#[from] UplinkError),
    #[error(transparent)]
    Sensor(#[from] crate::sensors::SensorError),
    #[error(transparent)]
    Display(#[from] crate::display::DisplayError),
    #[error(transparent)]
    Journal(#[from] crate::fusion::journal::file::JournalError),
    /// A listener of the service's own (`ingest`, `metrics`) could not bind its address.
    #[error("{what}: cannot listen on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the {task} task died ({why}); stopped so that it is started again")]
    TaskDied { task: String, why: String },
}

/// A running service.
pub struct Running {
    pub outbox: Outbox,
    pub uplink: Arc<UplinkState>,
    pub health: Arc<Health>,
    pub ingest_addr: Option<std::net::SocketAddr>,
    /// Where `/metrics` is served, when configured.
    pub metrics_addr: Option<std::net::SocketAddr>,
    metrics_task: Option<JoinHandle<()>>,
    display: Option<crate::display::Served>,
    /// The sensors with a driver, their counters and bound addresses.
    pub sensors: Vec<crate::sensors::Started>,
    sensor_store: JoinHandle<()>,
    /// Lane fusion (the sensors feed it; the demo feeds it from its trace).
    pub fusion: crate::live::Shared,
    fusion_task: JoinHandle<()>,
    /// The fusion ticker's ticks (what the systemd watchdog vouches for).
    heartbeat: crate::notify::Heartbeat,
    sensor_stats: SensorStats,
    /// The lanes' barriers and lights as their nodes last reported.
    barriers: crate::barrier::States,
    stop: watch::Sender<bool>,
    uplink_task: JoinHandle<()>,
    ingest_task: Option<JoinHandle<()>>,
    status_task: JoinHandle<()>,
    deaths: Deaths,
    config: Config,
}

/// Starts the service's parts.
pub async fn start(config: Config) -> Result<Running, ServiceError> {
    start_with(config, true).await
}

/// Starts the service; without `transports` the configured sensors are known to fusion but
/// not opened (the demo feeds fusion from a bundled trace instead).
pub async fn start_with(config: Config, transports: bool) -> Result<Running, ServiceError> {
    let data_dir = config.storage.data_dir.clone();
    let (store, notes) = Store::open(&data_dir, config.quota_bytes(), OpenMode::Service)?;
    store.set_disk_reserve(config.storage.reserve_mb.saturating_mul(1024 * 1024));
    store.keep_delivered(
        config.storage.keep_delivered_h.saturating_mul(3_600_000),
        config.quota_bytes(),
    )?;
    let signer = Signer::load_or_create(&data_dir, &config.post)?;
    let announce = signer.key_announcement();
    let uplink_cfg = UplinkConfig::new(&config.post, &config.uplink)?;
    let ingest_listener = match &config.ingest {
        Some(i) => Some(bind("ingest", i.listen).await?),
        None => None,
    };
    let metrics_listener = match &config.metrics {
        Some(m) => Some(bind("metrics", m.listen).await?),
        None => None,
    };

    let outbox = Outbox::start(Arc::new(store), signer, config.storage.commit_batch);
    let display_bound = match &config.display {
        Some(d) => Some((d, crate::display::bind(d, &outbox).await?)),
        None => None,
    };
    let health = Arc::new(Health::new(outbox.clone()));
    // What opening the store found is news whether or not the rest starts: the store has
    // already been repaired and would not report it again.
    for note in notes {
        report_open_note(&health, note).await;
    }
    let (stop, stop_rx) = watch::channel(false);
    let (sup, deaths) = Supervisor::new(stop_rx.clone());
    {
        // The writer is a thread of its own; it says when it died.
        let (died, sup, mut stopping) = (outbox.died(), sup.clone(), stop_rx.clone());
        tokio::spawn(async move {
            tokio::select! {
                why = died => sup.died("outbox".into(), why, true),
                _ = stopping.changed() => {}
            }
        });
    }
    let state = Arc::new(UplinkState::default());
    let fusion: crate::live::Shared = Arc::new(std::sync::Mutex::new(recovered_fusion(&config)?));
    let opened = if transports { &config.sensors[..] } else { &[] };
    let lanes = crate::barrier::start(&config, outbox.clone(), stop_rx.clone());
    for (name, task) in lanes.tasks {
        // A lane whose control died cannot be opened from the screen; the post goes on.
        sup.watch(name, false, task);
    }
    let (sensors, sensor_store) = crate::sensors::start(
        opened,
        &config.anpr,
        outbox.clone(),
        fusion.clone(),
        health.clone(),
        crate::sensors::LaneLinks {
            taps: lanes.frames,
            lines: lanes.lines,
        },
        &sup,
        stop_rx.clone(),
    )
    .await?;
    let barriers = lanes.states;
    let heartbeat = crate::notify::Heartbeat::default();
    let fusion_task = sup.watch(
        "fusion",
        true,
        tokio::spawn(crate::live::run(
            fusion.clone(),
            outbox.clone(),
            heartbeat.clone(),
            stop_rx.clone(),
        )),
    );
    let uplink_task = sup.watch(
        "uplink",
        true,
        tokio::spawn(uplink::run(
            uplink_cfg,
            outbox.clone(),
            announce,
            health.clone(),
            state.clone(),
            stop_rx.clone(),
        )),
    );
    let mut ingest_addr = None;
    let ingest_task = match (ingest_listener, &config.ingest) {
        (Some(l), Some(i)) => {
            ingest_addr = l.local_addr().ok();
            tracing::info!(addr = ?ingest_addr, "ingest listening");
            Some(sup.watch(
                "ingest",
                true,
                tokio::spawn(crate::ingest::serve(
                    l,
                    outbox.clone(),
                    crate::ingest::Limits::from(i),
                    crate::ingest::Clients::from_config(i),
                    stop_rx.clone(),
                )),
            ))
        }
        _ => None,
    };
    let sensor_stats: SensorStats = Arc::new(
        sensors
            .iter()
            .map(|s| (s.id.clone(), s.stats.clone()))
            .collect(),
    );
    let first_stats = fusion_now(&fusion).map(|f| f.0).unwrap_or_default();
    let first = snapshot(
        &config,
        &outbox,
        &state,
        &sensor_stats,
        &barriers,
        Some(first_stats.clone()),
        None,
    )
    .ok()
    .and_then(|s| serde_json::to_value(s).ok())
    .unwrap_or_default();
    let (status_tx, status_rx) = watch::channel(first);
    let mut metrics_addr = None;
    let metrics_task = metrics_listener.map(|l| {
        metrics_addr = l.local_addr().ok();
        tracing::info!(addr = ?metrics_addr, "metrics serving");
        // Not essential: the post works without its scraper; a death is a health event.
        sup.watch(
            "metrics",
            false,
            tokio::spawn(crate::metrics::serve(l, status_rx.clone(), stop_rx.clone())),
        )
    });
    let display = match display_bound {
        Some((d, b)) => Some(crate::display::start(
            b,
            d,
            crate::display::Post {
                post: config.post.clone(),
                lanes: config.lanes.iter().map(|l| l.id.clone()).collect(),
                summary: config.summary(),
                barriers: lanes.requests,
            },
            outbox.clone(),
            status_rx,
            stop_rx.clone(),
        )?),
        None => None,
    };
    let status_task = sup.watch(
        "status",
        true,
        tokio::spawn(status_loop(
            config.clone(),
            outbox.clone(),
            state.clone(),
            (sensor_stats.clone(), barriers.clone()),
            (fusion.clone(), first_stats),
            status_tx,
            stop_rx,
        )),
    );
    // Only now: a start that failed above (a port in use, a sensor that cannot be opened)
    // must not queue a "started" event for central on every try.
    health
        .event(
            "service",
            State::Up,
            "started",
            json!({"version": env!("CARGO_PKG_VERSION"), "last_seq": outbox.store().last_seq()}),
        )
        .await;
    tracing::info!(post = %config.post, broker = %config.broker(), data_dir = %data_dir.display(), "service started");
    Ok(Running {
        outbox,
        uplink: state,
        health,
        ingest_addr,
        metrics_addr,
        metrics_task,
        display,
        sensors,
        sensor_store,
        fusion,
        fusion_task,
        heartbeat,
        sensor_stats,
        barriers,
        stop,
        uplink_task,
        ingest_task,
        status_task,
        deaths,
        config,
    })
}

/// Fusion for `config`, with the readings of the passages that were open when the appliance
/// last stopped buffered again from the lane journal (see [`crate::fusion::journal::file`]), and the journal
/// installed for what comes.
fn recovered_fusion(config: &Config) -> Result<crate::fusion::Fusion, ServiceError> {
    let mut fusion = crate::fusion::Fusion::new(&config.fusion_setup(), crate::live::now());
    let r = &config.rules.radiation;
    // The background before the oldest vehicle that can still be open, with a margin.
    let keep = ((r.background_s + config.fusion.max_presence_s) * 1000.0) as i64 + 60_000;
    // At start, before anything else runs: reading it here blocks nothing.
    let (journal, kept, opened) =
        crate::fusion::journal::file::open(&config.storage.data_dir, keep)?;
    if opened.set_aside {
        tracing::error!(
            "lane journal over {} bytes: set aside, not read",
            crate::fusion::journal::file::MAX_FILE
        );
    }
    if opened.unreadable > 0 {
        tracing::warn!(
            lines = opened.unreadable,
            "lane journal: lines that could not be read were skipped"
        );
    }
    if opened.kept > 0 {
        let buffered = fusion.recover(&kept);
        tracing::info!(
            readings = opened.kept,
            buffered,
            "lane journal: readings of passages open at the last stop buffered again"
        );
    }
    fusion.set_journal(Box::new(journal));
    Ok(fusion)
}

async fn report_open_note(health: &Health, note: OpenNote) {
    match note {
        OpenNote::Quarantined {
            reason,
            moved_to,
            resumed_at,
        } => {
            health
                .event(
                    "outbox",
                    State::Degraded,
                    "store unreadable: quarantined and replaced",
                    json!({"error": reason, "moved_to": moved_to.display().to_string(), "seq_resumes_at": resumed_at}),
                )
                .await
        }
        OpenNote::CorruptRecords { count } => {
            health
                .event(
                    "outbox",
                    State::Degraded,
                    "records failed their checksum and were set aside",
                    json!({"count": count}),
                )
                .await
        }
        OpenNote::EventsLost { from, upto } => {
            health
                .event(
                    "outbox",
                    State::Degraded,
                    "events that were on disk are missing: the disk lost them",
                    json!({"from": from, "upto": upto}),
                )
                .await
        }
        OpenNote::SequenceLost { resumed_at } => {
            health
                .event(
                    "outbox",
                    State::Degraded,
                    "store had lost its sequence state",
                    json!({"seq_resumes_at": resumed_at}),
                )
                .await
        }
    }
}

impl Running {
    /// The next task that dies while the service runs (pending while none does).
    pub async fn died(&mut self) -> Death {
        self.deaths.next().await
    }

    /// Reports a death as a `health` event; `true` if the service must stop for it. An
    /// essential task's death is always an event; a camera's only if its own reports have
    /// not already said it is down.
    pub async fn report_death(&self, d: &Death) -> bool {
        let why = format!("task died: {}", d.why);
        if d.essential {
            self.health
                .event(
                    &d.task,
                    State::Down,
                    &why,
                    json!({"task": d.task, "essential": true, "restart": "the service exits for systemd to start it again"}),
                )
                .await;
        } else {
            self.health.report(&d.task, State::Down, &why).await;
        }
        d.essential
    }

    /// Where the officer display is served, when configured.
    pub fn display_addr(&self) -> Option<std::net::SocketAddr> {
        self.display.as_ref().map(|d| d.addr)
    }

    /// The status now.
    pub fn status(&self) -> Result<Status, StoreError> {
        let now = fusion_now(&self.fusion);
        snapshot(
            &self.config,
            &self.outbox,
            &self.uplink,
            &self.sensor_stats,
            &self.barriers,
            now.as_ref().map(|(f, _)| f.clone()),
            now.map(|(_, busy)| busy),
        )
    }

    /// Stops in order (see the module docs).
    pub async fn stop(self) {
        tracing::info!("stopping: draining ingest, flushing the outbox");
        let _ = self.stop.send(true);
        if let Some(t) = self.ingest_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        // Sensor transports stop reading; batches they hold are still stored and answered.
        for s in self.sensors {
            let _ = tokio::time::timeout(Duration::from_secs(5), s.task).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.sensor_store).await;
        // Open passages close and are stored before the outbox flushes.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.fusion_task).await;
        self.outbox.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.uplink_task).await;
        let _ = self.status_task.await;
        if let Some(t) = self.metrics_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        if let Some(d) = self.display {
            d.stopped().await;
        }
        if let Ok(s) = snapshot(
            &self.config,
            &self.outbox,
            &self.uplink,
            &self.sensor_stats,
            &self.barriers,
            fusion_now(&self.fusion).map(|f| f.0),
            None,
        ) {
            let _ = status::write_live(&self.config.storage.data_dir, &s);
        }
        tracing::info!("stopped");
    }
}

/// Sensor ids and their counters, for the status file and the display.
type SensorStats = Arc<Vec<(String, Arc<acsgd_drivers::transport::Stats>)>>;

/// Fusion's counters and its busy lanes, if its lock is free now (never waits: a busy or hung
/// fusion must not stall the status, the stop or the start).
fn fusion_now(fusion: &crate::live::Shared) -> Option<(acsgd_fusion::FusionStats, usize)> {
    fusion
        .try_lock()
        .ok()
        .map(|f| (f.stats().clone(), f.busy_lanes()))
}

fn snapshot(
    config: &Config,
    outbox: &Outbox,
    uplink: &UplinkState,
    sensors: &SensorStats,
    barriers: &crate::barrier::States,
    fusion: Option<acsgd_fusion::FusionStats>,
    busy_lanes: Option<usize>,
) -> Result<Status, StoreError> {
    Ok(Status {
        source: Source::Live,
        post: Some(config.post.clone()),
        time: crate::envelope::rfc3339_ms(time::OffsetDateTime::now_utc()),
        outbox: outbox.store().stat()?,
        uplink: Some(uplink.snapshot()),
        sensors: sensors
            .iter()
            .map(|(id, st)| (id.clone(), status::SensorCounters::of(st)))
            .collect(),
        fusion,
        busy_lanes,
        barriers: barriers.lock().map(|b| b.clone()).unwrap_or_default(),
    })
}

async fn status_loop(
    config: Config,
    outbox: Outbox,
    uplink: Arc<UplinkState>,
    (sensors, barriers): (SensorStats, crate::barrier::States),
    (fusion, mut last_fusion): (crate::live::Shared, acsgd_fusion::FusionStats),
    screens: watch::Sender<serde_json::Value>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let dir = config.storage.data_dir.clone();
        // Not waiting for a busy (or hung) fusion: its counters as last read then, so that
        // the metrics' fusion families never vanish for a second; the watchdog, not the
        // status, is what notices a fusion that stopped.
        // Busy lanes only as read now: unknown (absent) when fusion's lock was held, so that
        // an update never takes a stale 0 for an idle post.
        let now = fusion_now(&fusion);
        if let Some((f, _)) = &now {
            last_fusion = f.clone();
        }
        match snapshot(
            &config,
            &outbox,
            &uplink,
            &sensors,
            &barriers,
            Some(last_fusion.clone()),
            now.map(|(_, busy)| busy),
        ) {
            Ok(s) => {
                // The same status for the officer display's screens.
                if let Ok(v) = serde_json::to_value(&s) {
                    screens.send_replace(v);
                }
                let r = tokio::task::spawn_blocking(move || status::write_live(&dir, &s)).await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "cannot write the status file");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the outbox status"),
        }
    }
}

/// `acsgd run`: the service until SIGTERM or SIGINT, or until a task it cannot run without
/// dies (then an error: the exit is non-zero and systemd starts it again).
pub async fn run(config: Config) -> Result<(), ServiceError> {
    // Listening before the start: a SIGTERM while it starts stops it in order once started.
    let mut signals = Signals::new();
    let systemd = crate::notify::Notifier::from_env();
    let mut running = start(config).await?;
    systemd.ready(&format!("post {} running", running.config.post));
    // Not supervised: if it died, the keep-alives would stop and systemd would restart the
    // service, which is what a supervisor would do.
    let _watchdog = crate::notify::watchdog_interval().map(|every| {
        tokio::spawn(crate::notify::watchdog(
            systemd.clone(),
            every,
            running.heartbeat.clone(),
            running.outbox.clone(),
            running.stop.subscribe(),
        ))
    });
    loop {
        tokio::select! {
            _ = signals.recv() => break,
            d = running.died() => {
                if running.report_death(&d).await {
                    systemd.stopping();
                    running.stop().await;
                    return Err(ServiceError::TaskDied { task: d.task, why: d.why });
                }
            }
        }
    }
    systemd.stopping();
    running.stop().await;
    Ok(())
}

/// SIGTERM (systemd's stop) and SIGINT (Ctrl-C), listened to from creation on, so that none
/// is missed between two waits.
pub struct Signals {
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    pub fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            _ => None,
        };
        Signals { streams }
    }

    /// Resolves at the next signal.
    pub async fn recv(&mut self) {
        match &mut self.streams {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

impl Default for Signals {
    fn default() -> Signals {
        Signals::new()
    }
}

/// Resolves on SIGTERM (systemd's stop) or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    Signals::new().recv().await
}

/// Binds one of the service's own listeners, naming it in the error.
async fn bind(
    what: &'static str,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, ServiceError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServiceError::Bind { what, addr, source })
}
