//! The uplink: forwards the outbox to central over MQTT, QoS 1, in `seq` order.
//!
//! * Reads only up to the outbox's durable watermark, so nothing unflushed ever leaves.
//! * Keeps at most `uplink.window` events in flight; each connection starts with one and
//!   grows by one per answer (slow start, so a refused event is found in O(log window)
//!   reconnects; see `Connection::run`). rumqttc reports each publish it sends with
//!   its packet id, in the order they were queued; a FIFO of queued `seq`s maps packet ids back
//!   to events, and a PUBACK marks its event delivered in the outbox. The marks are made on a
//!   blocking thread, a batch at a time, beside the connection's loop (a mark is cheap, but
//!   every 256th prunes what is kept for resends and may delete or rewrite segment files);
//!   the events count as forwarded once marked, and a connection that ends waits for its
//!   marks before the next one reads the outbox.
//! * On any connection error the session is dropped whole; after a capped, jittered exponential
//!   backoff a new one resends everything still in the outbox from the lowest `seq`
//!   (at-least-once: central de-duplicates on `id`).
//! * On connect: publishes `online` retained on `acsgd/v1/{post}/status` (the last will says
//!   `offline`), the public key retained on `acsgd/v1/{post}/key`, and subscribes to
//!   `acsgd/v1/{post}/in/#`, caching what arrives (see [`inbox`]).
//! * On shutdown: waits briefly for outstanding PUBACKs, publishes `offline`, disconnects.
//!
//! Poison messages cost one message, never the link:
//! * an event the broker refuses for good (an MQTT 5 PUBACK with a reason code ≥ 0x80, e.g.
//!   "not authorized" from an ACL) is moved to the outbox's dead-letter tree with its reason,
//!   counted and reported as a `health` event; the events after it flow on. (MQTT 3.1.1 has
//!   no way to refuse: a broker that denies a publish acknowledges it and drops it.)
//! * a message from central larger than `uplink.max_inbound_kb` is refused with a `health`
//!   event and acknowledged, so the broker does not send it again; the MQTT packet limit
//!   (`uplink.max_packet_kb`) is what the broker may send at most, so a large message never
//!   breaks the connection.

pub mod inbox;
pub mod session;
pub mod settings;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use acsgd_contract::envelope::{rfc3339_ms, SCHEMA};
use acsgd_outbox::health::{Health, State};
use acsgd_outbox::{Outbox, StoreError};
use session::{Io, Session, SessionConfig, TlsMaterial};

/// The system CA bundle used for `mqtts://` when no `uplink.tls.ca_file` is given.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An error of one of the two MQTT clients (v4 and v5 have their own types).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the uplink layer. All of them end the current connection, none the service.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The connection failed; shown as the OS's text where there is one under it.
    #[error("connection: {}", session::describe(.0.as_ref()))]
    Broker(#[source] BoxError),
    /// The broker closed the connection (its reason code, under MQTT 5).
    #[error("connection: broker disconnected us{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Disconnected(Option<String>),
    #[error("connection: shutting down")]
    ShuttingDown,
    #[error("no CONNACK within {0:?}")]
    ConnectTimeout(Duration),
    /// rumqttc's client refused a request (its queue to the event loop is full or gone).
    #[error("MQTT client: {0}")]
    Client(#[source] BoxError),
    #[error("storing a message from central: {0}")]
    Inbox(#[source] tokio::task::JoinError),
    /// `uplink.broker` is not a broker address (the configuration's checks refuse it first).
    #[error("uplink.broker: {0}")]
    Address(String),
    #[error("TLS file {path}: {source}")]
    TlsFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("removing delivered events from the outbox: {0}")]
    Removal(#[source] tokio::task::JoinError),
}

/// What the uplink is doing, for the status file and the demo.
#[derive(Debug, Default)]
pub struct UplinkState {
    pub connected: AtomicBool,
    /// Events acknowledged by the broker since start.
    pub forwarded: AtomicU64,
    /// Events sent again after a reconnect (possible duplicates at central).
    pub resent: AtomicU64,
    pub connects: AtomicU64,
    /// Events the broker refused for good, moved to the dead-letter tree since start.
    pub dead_lettered: AtomicU64,
    /// Messages from central refused for their size since start.
    pub inbound_refused: AtomicU64,
    /// Delivered events sent again because central asked for them (`in/replay`) since start.
    pub replayed: AtomicU64,
    max_sent: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of [`UplinkState`].
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct UplinkSnapshot {
    pub connected: bool,
    pub forwarded: u64,
    pub resent: u64,
    pub connects: u64,
    #[serde(default)]
    pub dead_lettered: u64,
    #[serde(default)]
    pub inbound_refused: u64,
    #[serde(default)]
    pub replayed: u64,
    pub last_error: Option<String>,
}

impl UplinkState {
    pub fn snapshot(&self) -> UplinkSnapshot {
        UplinkSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            resent: self.resent.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            inbound_refused: self.inbound_refused.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            last_error: self.last_error.lock().expect("state lock").clone(),
        }
    }
}

/// Uplink settings derived from the configuration.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    pub post: String,
    pub session: SessionConfig,
    pub window: usize,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Time to wait for outstanding PUBACKs at shutdown.
    pub drain_grace: Duration,
    /// Messages from central larger than this are refused (and acknowledged).
    pub max_inbound: usize,
}

impl UplinkConfig {
    /// Builds the settings of `post`'s uplink from its validated `[uplink]` table, reading
    /// the TLS files.
    pub fn new(post: &str, u: &settings::Uplink) -> Result<UplinkConfig, UplinkError> {
        let broker = u.broker_addr().map_err(UplinkError::Address)?;
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|source| UplinkError::TlsFile {
                path: p.display().to_string(),
                source,
            })
        };
        let tls = match (&u.tls, broker.tls) {
            (Some(t), _) => {
                let (ca, client) = t.read().map_err(|(path, source)| UplinkError::TlsFile {
                    path: path.display().to_string(),
                    source,
                })?;
                Some(TlsMaterial { ca, client })
            }
            (None, true) => Some(TlsMaterial {
                ca: read(std::path::Path::new(SYSTEM_CA))?,
                client: None,
            }),
            (None, false) => None,
        };
        let offline = serde_json::json!({"schema": SCHEMA, "post": post, "state": "offline"});
        Ok(UplinkConfig {
            post: post.to_string(),
            session: SessionConfig {
                broker,
                version: u.protocol,
                client_id: u.client_id(post),
                credentials: u
                    .username
                    .clone()
                    .map(|user| (user, u.password.clone().unwrap_or_default())),
                keep_alive: Duration::from_secs(u.keep_alive_s),
                inflight: u.window,
                max_packet: u.max_packet_kb.saturating_mul(1024) as usize,
                tls,
                last_will: (
                    format!("acsgd/v1/{post}/status"),
                    offline.to_string().into_bytes(),
                ),
            },
            window: usize::from(u.window),
            backoff_initial: Duration::from_millis(u.backoff_initial_ms),
            backoff_max: Duration::from_secs(u.backoff_max_s),
            drain_grace: Duration::from_secs(3),
            max_inbound: u.max_inbound_kb.saturating_mul(1024) as usize,
        })
    }
}

/// Runs the uplink until `shutdown` becomes true.
pub async fn run(
    cfg: UplinkConfig,
    outbox: Outbox,
    key_announcement: Vec<u8>,
    health: Arc<Health>,
    state: Arc<UplinkState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = cfg.backoff_initial;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = Instant::now();
        let mut conn = Connection {
            cfg: &cfg,
            outbox: &outbox,
            state: &state,
            health: &health,
            announce: &key_announcement,
            session: Session::new(&cfg.session),
            fifo: VecDeque::new(),
            inflight: HashMap::new(),
            answered: 0,
            acked: Vec::new(),
            removals: tokio::task::JoinSet::new(),
            replays: VecDeque::new(),
        };
        let mut result = conn.run(&mut shutdown).await;
        // Removals still running belong to this connection; the next one reads the outbox
        // from its lowest seq and would resend what they remove.
        if let Err(e) = conn.settle().await {
            result = result.and(Err(e));
        }
        drop(conn);
        state.connected.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => return,
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(error = %msg, retry_in = ?backoff, "uplink connection failed");
                *state.last_error.lock().expect("state lock") = Some(msg.clone());
                health.report("uplink", State::Down, &msg).await;
            }
        }
        // A connection that held for a while earns a fresh start of the backoff.
        if started.elapsed() > Duration::from_secs(30) {
            backoff = cfg.backoff_initial;
        }
        let wait = jitter(backoff);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

/// ±20 % so that many posts coming back after a central outage do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::getrandom(&mut b);
    let f = 0.8 + 0.4 * (f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX));
    d.mul_f64(f)
}

struct Connection<'a> {
    cfg: &'a UplinkConfig,
    outbox: &'a Outbox,
    state: &'a Arc<UplinkState>,
    health: &'a Health,
    announce: &'a [u8],
    session: Session,
    /// Publishes queued to rumqttc and not yet given a packet id: `Some(seq)` for events,
    /// `None` for control messages (status, key).
    fifo: VecDeque<Option<u64>>,
    /// Packet id → `seq` of events sent and not yet acknowledged.
    inflight: HashMap<u16, u64>,
    /// Events the broker answered on this connection (acknowledged or refused): the window.
    answered: usize,
    /// Acknowledged events not yet handed to a removal.
    acked: Vec<u64>,
    /// Removals from the outbox in progress (blocking threads).
    removals: tokio::task::JoinSet<Result<usize, StoreError>>,
    /// Central's resend requests being answered, oldest first.
    replays: VecDeque<Replay>,
}

/// Marks a `seq` in `fifo`/`inflight` as a resend for central: its PUBACK removes nothing.
const REPLAY: u64 = 1 << 63;

/// Resend requests queued at most; more are refused (central asks again after its grace).
const MAX_REPLAYS: usize = 16;

/// One resend request from central (`acsgd/v1/{post}/in/replay` `{"from": A, "to": B}`).
#[derive(Debug)]
struct Replay {
    from: u64,
    to: u64,
    /// The next `seq` to read from the kept events.
    next: u64,
    /// Read and not yet published.
    ahead: VecDeque<acsgd_outbox::Pending>,
    resent: u64,
    /// Ranges the post no longer has (pruned, evicted, dead-lettered, or never numbered).
    gone: Vec<(u64, u64)>,
    /// Events at or above it are still waiting in the outbox and will be sent anyway.
    first_pending: u64,
}

impl Replay {
    fn missing(&mut self, a: u64, b: u64) {
        let b = b.min(self.first_pending.saturating_sub(1));
        if a > b {
            return;
        }
        match self.gone.last_mut() {
            Some(last) if last.1 + 1 == a => last.1 = b,
            _ => self.gone.push((a, b)),
        }
    }
}

/// Acknowledged events handed to one removal at most; more wait for the next.
const REMOVAL_BATCH: usize = 256;

/// The outcome of a finished removal task: a failed task or a failed removal is an error.
fn removed(
    done: Result<Result<usize, StoreError>, tokio::task::JoinError>,
) -> Result<(), UplinkError> {
    done.map_err(UplinkError::Removal)?
        .map(drop)
        .map_err(UplinkError::from)
}

impl Connection<'_> {
    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), UplinkError> {
        self.connect(shutdown).await?;
        let post = &self.cfg.post;
        let topic_prefix = format!("acsgd/v1/{post}/");
        self.state.connects.fetch_add(1, Ordering::Relaxed);
        self.state.connected.store(true, Ordering::Relaxed);
        // The last error describes an outage that is over now.
        *self
            .state
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        tracing::info!(broker = %self.cfg.session.broker, "uplink connected");
        let online = serde_json::json!({"schema": SCHEMA, "post": post, "state": "online",
            "since": rfc3339_ms(time::OffsetDateTime::now_utc()), "version": env!("CARGO_PKG_VERSION")});
        self.control(
            &format!("{topic_prefix}status"),
            online.to_string().into_bytes(),
        )?;
        self.control(&format!("{topic_prefix}key"), self.announce.to_vec())?;
        self.session.subscribe(&format!("{topic_prefix}in/#"))?;
        self.health.report("uplink", State::Up, "connected").await;

        let store = self.outbox.store().clone();
        let mut durable_rx = self.outbox.durable();
        // Everything still in the outbox is (re)sent from its lowest seq, with a window that
        // starts at one event and grows by one per answer (doubling every round trip, as TCP's
        // slow start does). A broker that refuses a publish may close the connection at once
        // (mosquitto does), and the PUBACKs of the events in flight with it can be lost to the
        // reset: starting small, each new connection gets about half-way closer to the refused
        // event, and once it is the first event sent its refusal is read before the close. A
        // poison event costs O(log window) reconnects, never a loop; a healthy connection
        // reaches the full window within log2(window) round trips.
        let mut cursor = 0u64;
        let mut outstanding = 0usize;
        // Events read from the store and not yet published: the store is read a window at a
        // time rather than with one range scan per PUBACK (the window refills one slot at a
        // time).
        let mut ahead: VecDeque<acsgd_outbox::Pending> = VecDeque::new();
        loop {
            acsgd_supervise::fault_point("uplink");
            self.reap()?;
            let durable = *durable_rx.borrow_and_update();
            let window = (1 + self.answered).min(self.cfg.window);
            if outstanding < window && ahead.is_empty() && cursor <= durable {
                let batch = store.read_range(cursor, durable, self.cfg.window)?;
                // A short read means the range is exhausted up to the watermark.
                cursor = match batch.last() {
                    Some(p) if batch.len() == self.cfg.window => p.seq + 1,
                    _ => durable + 1,
                };
                ahead.extend(batch);
            }
            while outstanding < window {
                let Some(p) = ahead.pop_front() else { break };
                let topic = format!("{topic_prefix}{}", p.kind);
                self.session.publish(&topic, p.payload, false)?;
                self.fifo.push_back(Some(p.seq));
                outstanding += 1;
                if self.state.max_sent.fetch_max(p.seq, Ordering::Relaxed) >= p.seq {
                    self.state.resent.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.replay_some(&topic_prefix, &mut outstanding, window)
                .await?;
            let idle = ahead.is_empty() && cursor > durable;
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    self.drain(&mut outstanding).await;
                    return Ok(());
                }
                io = self.session.poll() => self.handle(io?, &mut outstanding).await?,
                // A finished removal may leave acknowledged events waiting for the next.
                Some(done) = self.removals.join_next(), if !self.removals.is_empty() => {
                    removed(done)?;
                }
                r = durable_rx.changed(), if idle && outstanding < window => {
                    if r.is_err() {
                        // The outbox is gone: the service is stopping, or the outbox died
                        // (and says so itself); the uplink ends only with the service.
                        if !*shutdown.borrow() {
                            let _ = shutdown.changed().await;
                        }
                        self.drain(&mut outstanding).await;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Polls until the broker accepts the connection.
    async fn connect(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), UplinkError> {
        let limit = Duration::from_secs(15);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Err(UplinkError::ShuttingDown),
                r = tokio::time::timeout_at(deadline, self.session.poll()) => match r {
                    Err(_) => return Err(UplinkError::ConnectTimeout(limit)),
                    Ok(io) => if let Io::Connected = io? { return Ok(()) },
                },
            }
        }
    }

    fn control(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), UplinkError> {
        self.session.publish(topic, payload, true)?;
        self.fifo.push_back(None);
        Ok(())
    }

    async fn handle(&mut self, io: Io, outstanding: &mut usize) -> Result<(), UplinkError> {
        match io {
            Io::Sent(pkid) => {
                if let Some(Some(seq)) = self.fifo.pop_front() {
                    self.inflight.insert(pkid, seq);
                }
            }
            Io::Acked(pkid) => {
                if let Some(seq) = self.inflight.remove(&pkid) {
                    *outstanding -= 1;
                    self.answered += 1;
                    if seq & REPLAY == 0 {
                        self.acked.push(seq);
                    } else {
                        self.state.replayed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Io::Refused(pkid, reason) => {
                let Some(seq) = self.inflight.remove(&pkid) else {
                    // A control message (status, key): nothing to set aside.
                    tracing::warn!(pkid, %reason, "broker refused a control message");
                    return Ok(());
                };
                *outstanding -= 1;
                self.answered += 1;
                if seq & REPLAY != 0 {
                    tracing::warn!(seq = seq & !REPLAY, %reason, "broker refused a resent event");
                    return Ok(());
                }
                self.dead_letter(seq, &reason).await?;
            }
            Io::Inbound(msg) if msg.topic == format!("acsgd/v1/{}/in/replay", self.cfg.post) => {
                self.replay_request(&msg.payload).await?;
                self.session.ack(&msg)?;
            }
            Io::Inbound(msg) => {
                if msg.payload.len() > self.cfg.max_inbound {
                    self.state.inbound_refused.fetch_add(1, Ordering::Relaxed);
                    let why = format!(
                        "message on {} refused: {} bytes, over uplink.max_inbound_kb ({} bytes)",
                        msg.topic,
                        msg.payload.len(),
                        self.cfg.max_inbound
                    );
                    let detail = serde_json::json!({"topic": msg.topic, "bytes": msg.payload.len(),
                        "limit": self.cfg.max_inbound});
                    self.health
                        .event("inbox", State::Degraded, &why, detail)
                        .await;
                    // Acknowledged all the same: the broker must not send it again.
                    self.session.ack(&msg)?;
                    return Ok(());
                }
                let store = self.outbox.store().clone();
                let (post, topic, payload) = (
                    self.cfg.post.clone(),
                    msg.topic.clone(),
                    msg.payload.clone(),
                );
                let stored = tokio::task::spawn_blocking(move || {
                    inbox::store_inbound(&store, &post, &topic, &payload)
                })
                .await
                .map_err(UplinkError::Inbox)?;
                match stored {
                    Ok(s) => {
                        tracing::info!(topic = %msg.topic, keys = s.keys.len(), "cached message from central");
                        if !s.refused.is_empty() {
                            let why = format!(
                                "{} of the documents on {} refused, the rest stored",
                                s.refused.len(),
                                msg.topic
                            );
                            let first: Vec<_> = s.refused.iter().take(10).collect();
                            let detail = serde_json::json!({"topic": msg.topic, "refused": first});
                            self.health
                                .event("inbox", State::Degraded, &why, detail)
                                .await;
                        }
                    }
                    Err(inbox::InboxError::Store(e)) => return Err(e.into()),
                    Err(e) => {
                        let why = e.to_string();
                        tracing::warn!(error = %why, "ignored a message from central");
                        let detail = serde_json::json!({"topic": msg.topic});
                        self.health
                            .event("inbox", State::Degraded, &why, detail)
                            .await;
                    }
                }
                self.session.ack(&msg)?;
            }
            Io::Connected | Io::Other => {}
        }
        Ok(())
    }

    /// Queues a resend request from central, or says why it is refused.
    async fn replay_request(&mut self, payload: &[u8]) -> Result<(), UplinkError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Request {
            from: u64,
            to: u64,
        }
        let health = self.health;
        let refuse = |why: String| async move {
            tracing::warn!(%why, "resend request refused");
            health
                .event("replay", State::Degraded, &why, serde_json::Value::Null)
                .await;
        };
        let r: Request = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                refuse(format!(
                    "resend request is not {{\"from\": A, \"to\": B}}: {e}"
                ))
                .await;
                return Ok(());
            }
        };
        if r.from == 0 || r.from > r.to || r.to >= REPLAY {
            refuse(format!(
                "resend request {}..{} is not a seq range",
                r.from, r.to
            ))
            .await;
            return Ok(());
        }
        if self.replays.len() >= MAX_REPLAYS {
            refuse(format!(
                "resend request {}..{} refused: {MAX_REPLAYS} are being answered",
                r.from, r.to
            ))
            .await;
            return Ok(());
        }
        let store = self.outbox.store();
        let first_pending = store.first_seq()?.unwrap_or(store.last_seq() + 1);
        tracing::info!(from = r.from, to = r.to, "central asked for a resend");
        self.replays.push_back(Replay {
            from: r.from,
            to: r.to,
            next: r.from,
            ahead: VecDeque::new(),
            resent: 0,
            gone: Vec::new(),
            first_pending,
        });
        Ok(())
    }

    /// Publishes kept events of the oldest resend request while the window has room, and
    /// reports each finished request as a `health` event (`replay`) naming what is gone.
    async fn replay_some(
        &mut self,
        topic_prefix: &str,
        outstanding: &mut usize,
        window: usize,
    ) -> Result<(), UplinkError> {
        const CHUNK: u64 = 512;
        while *outstanding < window {
            let Some(r) = self.replays.front_mut() else {
                return Ok(());
            };
            if let Some(p) = r.ahead.pop_front() {
                let topic = format!("{topic_prefix}{}", p.kind);
                self.session.publish(&topic, p.payload, false)?;
                self.fifo.push_back(Some(p.seq | REPLAY));
                *outstanding += 1;
                r.resent += 1;
                continue;
            }
            if r.next <= r.to {
                let upto = r.to.min(r.next.saturating_add(CHUNK - 1));
                let batch = self
                    .outbox
                    .store()
                    .read_sent(r.next, upto, CHUNK as usize)?;
                let mut expect = r.next;
                for p in &batch {
                    if p.seq > expect {
                        r.missing(expect, p.seq - 1);
                    }
                    expect = p.seq + 1;
                }
                if expect <= upto {
                    r.missing(expect, upto);
                }
                r.next = upto + 1;
                r.ahead.extend(batch);
                continue;
            }
            let Some(done) = self.replays.pop_front() else {
                return Ok(());
            };
            let gone: Vec<String> = done.gone.iter().map(|(a, b)| format!("{a}..{b}")).collect();
            let why = if gone.is_empty() {
                format!(
                    "resent seq {}..{}: {} events",
                    done.from, done.to, done.resent
                )
            } else {
                format!(
                    "resent seq {}..{}: {} events; no longer kept: {}",
                    done.from,
                    done.to,
                    done.resent,
                    gone.join(", ")
                )
            };
            tracing::info!("{why}");
            let detail = serde_json::json!({"from": done.from, "to": done.to,
                "resent": done.resent, "gone": done.gone});
            self.health.event("replay", State::Up, &why, detail).await;
        }
        Ok(())
    }

    /// Collects finished removals (a failed one ends the connection) and hands the events
    /// acknowledged since to a new one, unless one is still running and the batch is small:
    /// under load the batches grow, and an idle link removes each event at once.
    fn reap(&mut self) -> Result<(), UplinkError> {
        while let Some(done) = self.removals.try_join_next() {
            removed(done)?;
        }
        if self.acked.is_empty() || (!self.removals.is_empty() && self.acked.len() < REMOVAL_BATCH)
        {
            return Ok(());
        }
        let seqs = std::mem::take(&mut self.acked);
        let store = self.outbox.store().clone();
        let state = self.state.clone();
        self.removals.spawn_blocking(move || {
            let n = seqs.len();
            for seq in seqs {
                store.delivered(seq)?;
            }
            // Counted once removed, so "forwarded" never runs ahead of the outbox.
            state.forwarded.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        });
        Ok(())
    }

    /// Removes every acknowledged event and waits for the removals in progress.
    async fn settle(&mut self) -> Result<(), UplinkError> {
        let mut result = Ok(());
        loop {
            if let Err(e) = self.reap() {
                result = result.and(Err(e));
            }
            let Some(done) = self.removals.join_next().await else {
                break;
            };
            if let Err(e) = removed(done) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// Sets aside an event the broker refused for good, so the rest of the outbox flows.
    async fn dead_letter(&mut self, seq: u64, reason: &str) -> Result<(), UplinkError> {
        let Some(kind) = self.outbox.store().dead_letter(seq, reason)? else {
            return Ok(());
        };
        self.state.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let why = format!("broker refused event seq {seq} ({kind}): {reason}; set aside");
        if kind == "health" {
            // Reporting it as a health event could be refused in turn, forever.
            tracing::error!("{why}");
        } else {
            let detail = serde_json::json!({"seq": seq, "type": kind, "reason": reason});
            self.health
                .event("uplink", State::Degraded, &why, detail)
                .await;
        }
        Ok(())
    }

    /// At shutdown: a short wait for outstanding acknowledgements, then a clean goodbye.
    async fn drain(&mut self, outstanding: &mut usize) {
        let deadline = tokio::time::Instant::now() + self.cfg.drain_grace;
        while *outstanding > 0 {
            match tokio::time::timeout_at(deadline, self.session.poll()).await {
                Ok(Ok(io)) => {
                    if self.handle(io, outstanding).await.is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        let offline =
            serde_json::json!({"schema": SCHEMA, "post": self.cfg.post, "state": "offline"});
        let topic = format!("acsgd/v1/{}/status", self.cfg.post);
        if self
            .control(&topic, offline.to_string().into_bytes())
            .is_ok()
        {
            self.session.disconnect();
            // Let the publish and the DISCONNECT reach the socket.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while self.session.poll().await.is_ok() {}
            })
            .await;
        }
        tracing::info!(unacknowledged = *outstanding, "uplink stopped");
    }
}
