//! `acsgd-central run`: the ingest connection and its writers (`[store] writers`, each
//! committing its part of the posts on its own connection), the route publisher, the
//! scheduler, the notifier, the seal operator's EGTS feed and the HTTP API as tasks of one
//! process. A task that ends is an error of the whole service (systemd restarts it); nothing
//! runs unnoticed half-dead.
//!
//! The broker session is persistent (`clean_session = false`) with manual acknowledgements: a
//! message is acknowledged only after the transaction that applied it committed. While the
//! database is away the worker retries the same batch with backoff and acknowledges nothing;
//! the broker keeps the rest of the session's messages until it returns. The broker must be
//! configured to keep them (mosquitto: `max_queued_messages 0`), or the resend requests for
//! seq gaps are what recovers them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{broadcast, mpsc, Notify};

use crate::api::Api;
use crate::auth::Auth;
use crate::config::Config;
use crate::ingest::{Ingestor, Limits, Message, Outcome, Worker, MAX_PAYLOAD};
use crate::notify::Notifier;
use crate::routing::Publisher;
use crate::store::{now_ms, Store, StoreError};

/// Quarantined messages kept at most (the newest; each up to 64 kB).
pub const MAX_QUARANTINED: i64 = 100_000;

/// What central subscribes to: every post's events and status.
pub const SUBSCRIPTION: &str = "acsgd/v1/+/+";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("HTTP API on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("broker TLS: cannot read {path}: {source}")]
    TlsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("task {0} ended")]
    TaskEnded(&'static str),
    #[error("notify: {0}")]
    Notify(String),
}

/// Runs until SIGTERM or Ctrl-C, or until a task fails.
pub async fn run(config: Config) -> Result<(), ServiceError> {
    let store = Store::open(&config.store.url).await?;
    let notifier = Arc::new(
        Notifier::new(store.clone(), config.notify.clone()).map_err(ServiceError::Notify)?,
    );
    let routed = Arc::new(Notify::new());
    let (changes, _) = broadcast::channel::<()>(64);

    let mut mqtt = MqttOptions::new(
        &config.broker.client_id,
        &config.broker.host,
        config.broker.port,
    );
    if let (Some(u), Some(p)) = (&config.broker.username, &config.broker.password) {
        mqtt.set_credentials(u, p);
    }
    if let Some(tls) = &config.broker.tls {
        mqtt.set_transport(tls_transport(tls)?);
    }
    mqtt.set_clean_session(false);
    mqtt.set_manual_acks(true);
    mqtt.set_keep_alive(Duration::from_secs(30));
    // Room for an oversized message to arrive and be quarantined instead of breaking the
    // connection (which would redeliver it forever).
    mqtt.set_max_packet_size(16 * MAX_PAYLOAD, 16 * MAX_PAYLOAD);
    let (client, mut eventloop) = AsyncClient::new(mqtt, 1024);

    // Every post, or this worker's share of them (no `$share` on a NATS cluster).
    let filters: Vec<String> = match &config.broker.posts {
        Some(posts) => posts.iter().map(|p| format!("acsgd/v1/{p}/+")).collect(),
        None => vec![SUBSCRIPTION.to_string()],
    };
    let share = config.broker.share;
    if let Some(share) = share {
        tracing::info!(%share, "taking this share of the posts");
    }
    // The writers: each applies its part of the posts (`writer_of`) on its own connection.
    let writers = config.store.writers();
    if writers > 1 {
        tracing::info!(
            writers,
            "committing the posts' batches on this many connections at once"
        );
    }
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..writers).map(|_| mpsc::channel::<Publish>(4096)).unzip();
    // Every acknowledgement goes through one task ([`acknowledge`]), on a queue that never
    // makes its sender wait: the connection task (the other shares' messages) and the ingest
    // (its batches, once committed) must not wait on the client's request queue, which only
    // the connection task drains. Had the ingest waited there, a burst of route publishes
    // could fill it while the connection task waited for room in the ingest's channel, and
    // each would wait on the other for ever. The broker bounds the queue: it sends no more
    // than its in-flight window of unacknowledged messages.
    let (acks, acks_rx) = mpsc::unbounded_channel::<Publish>();
    let acker = tokio::spawn(acknowledge(acks_rx, client.clone()));
    let totals = Arc::new(Totals::default());
    let connection = {
        let client = client.clone();
        let (acks, totals) = (acks.clone(), totals.clone());
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let gone = match share {
                            // Another worker's: acknowledged unread (each worker has its own
                            // session, so the broker keeps it until that worker took it).
                            Some(s) if !s.takes(&p.topic) => {
                                totals.others.fetch_add(1, Ordering::Relaxed);
                                acks.send(p).is_err()
                            }
                            _ => {
                                let w = crate::config::writer_of(&p.topic, share, writers);
                                txs[w].send(p).await.is_err()
                            }
                        };
                        if gone {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!("connected to the broker");
                        let subs = filters
                            .iter()
                            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                        if let Err(e) = client.try_subscribe_many(subs) {
                            tracing::error!(error = %e, "cannot subscribe");
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(a))) => {
                        let refused = a
                            .return_codes
                            .iter()
                            .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                            .count();
                        if refused > 0 {
                            tracing::error!(
                                refused,
                                "the broker refused subscriptions: check central's permissions there \
                                 (on NATS, also that the posts times the MQTT max_ack_pending stay \
                                 within 65535 per session)"
                            );
                        } else {
                            tracing::info!(filters = a.return_codes.len(), "subscribed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "broker connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    };

    let mut ingest = tokio::task::JoinSet::new();
    for rx in rxs {
        let ingestor = Ingestor::new(
            store.clone(),
            Limits {
                max_clock_skew_ms: i64::from(config.tracking.max_clock_skew_s) * 1000,
                positions: config.positions.clone(),
            },
        )
        .await?;
        ingest.spawn(ingest_worker(
            ingestor,
            rx,
            acks.clone(),
            routed.clone(),
            changes.clone(),
            totals.clone(),
        ));
    }
    drop(acks);

    let publisher = Publisher::new(store.clone()).await?;
    let routes = tokio::spawn(route_publisher(
        publisher,
        store.clone(),
        client.clone(),
        routed.clone(),
    ));

    let scheduler = tokio::spawn(scheduler(
        store.clone(),
        client.clone(),
        Duration::from_secs(u64::from(config.tracking.scan_every_s)),
        i64::from(config.tracking.gap_grace_s) * 1000,
        routed.clone(),
        changes.clone(),
        config.positions.clone(),
        config.store.keep_positions_days,
    ));

    // The seal operator's EGTS feed, where one is configured.
    let feed = match config.positions.egts_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServiceError::Bind { addr, source })?;
            tracing::info!(%addr, "EGTS feed listening");
            tokio::spawn(crate::feed::serve(
                listener,
                store.clone(),
                config.positions.clone(),
                Default::default(),
            ))
        }
        None => tokio::spawn(std::future::pending()),
    };

    let addr = config.http.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServiceError::Bind { addr, source })?;
    tracing::info!(%addr, "HTTP API listening");
    let auth = Arc::new(Auth::new(&config.accounts, &config.http.tokens));
    let app = Api::new(store.clone(), auth, routed.clone(), changes.clone())
        .with_notify(notifier.clone(), config.notify.rate_per_hour)
        .router();
    let mut notify = tokio::spawn(notify_sender(notifier.clone()));
    let http = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| ServiceError::Bind { addr, source })?;
    let ended = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        _ = connection => Some("broker connection"),
        _ = acker => Some("acknowledgements"),
        _ = ingest.join_next() => Some("ingest"),
        _ = routes => Some("route publisher"),
        _ = scheduler => Some("scheduler"),
        _ = &mut notify => Some("notifier"),
        _ = feed => Some("EGTS feed"),
        _ = http => Some("HTTP API"),
    };
    match ended {
        None => {
            totals.log();
            tracing::info!("stopping");
            // A notification the recipient took is recorded as sent before the process ends:
            // a restart must not tell it again. The send in flight finishes (each channel has
            // its own timeout); no other starts.
            notifier.stop();
            if tokio::time::timeout(Duration::from_secs(60), &mut notify)
                .await
                .is_err()
            {
                tracing::warn!("notifier: a send still in flight after 60 s; stopping anyway");
            }
            let _ = client.disconnect().await;
            Ok(())
        }
        Some(task) => Err(ServiceError::TaskEnded(task)),
    }
}

/// MQTT over TLS with the configured files, read now so that a missing one stops the start.
fn tls_transport(tls: &acsgd_tomlfile::TlsFiles) -> Result<rumqttc::Transport, ServiceError> {
    let (ca, client_auth) = tls
        .read()
        .map_err(|(path, source)| ServiceError::TlsFile { path, source })?;
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        },
    ))
}

/// Sends due notifications: looks twice a second (a change queues its rows in its own
/// transaction, so there is nothing to miss between looks).
async fn notify_sender(notifier: Arc<Notifier>) {
    while !notifier.stopping() {
        if let Err(e) = notifier.step(now_ms()).await {
            tracing::error!(error = %e, "notifier: cannot read or record notifications; retrying");
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What this worker's ingest did since it started, logged when it stops: with shares, what
/// it took and what it left to the other workers.
#[derive(Default)]
struct Totals {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    quarantined: AtomicU64,
    /// Status messages and topics central does not consume.
    other_topics: AtomicU64,
    /// Messages of posts in other workers' shares, acknowledged unread.
    others: AtomicU64,
}

impl Totals {
    fn count(&self, out: &[Outcome]) {
        for o in out {
            let n = match o {
                Outcome::Accepted => &self.accepted,
                Outcome::Duplicate => &self.duplicates,
                Outcome::Quarantined(_) => &self.quarantined,
                Outcome::Link | Outcome::Ignored => &self.other_topics,
            };
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn log(&self) {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        tracing::info!(
            accepted = get(&self.accepted),
            duplicates = get(&self.duplicates),
            quarantined = get(&self.quarantined),
            status_and_ignored = get(&self.other_topics),
            other_shares = get(&self.others),
            "ingest totals"
        );
    }
}

/// Sends the acknowledgements, in the order they come: of this worker's batches once they
/// committed, and of the other shares' messages as they arrive. By packet id, so those of
/// another share may overtake this worker's uncommitted ones; mosquitto and NATS take them so.
async fn acknowledge(mut rx: mpsc::UnboundedReceiver<Publish>, client: AsyncClient) {
    while let Some(p) = rx.recv().await {
        if let Err(e) = client.ack(&p).await {
            tracing::warn!(error = %e, "cannot acknowledge; the broker will resend");
        }
    }
}

/// Applies what the broker delivers in batches ([`Worker`]), acknowledging each batch after
/// its commit.
async fn ingest_worker(
    ingestor: Ingestor,
    mut rx: mpsc::Receiver<Publish>,
    acks: mpsc::UnboundedSender<Publish>,
    routed: Arc<Notify>,
    changes: broadcast::Sender<()>,
    totals: Arc<Totals>,
) {
    let mut worker = Worker::new(ingestor);
    let message = |p: &Publish| Message {
        topic: p.topic.clone(),
        payload: p.payload.to_vec(),
    };
    while let Some((batch, out)) = worker.next(&mut rx, message).await {
        totals.count(&out);
        if out
            .iter()
            .any(|o| !matches!(o, Outcome::Duplicate | Outcome::Ignored))
        {
            let _ = changes.send(());
        }
        for p in batch {
            if acks.send(p).is_err() {
                return;
            }
        }
        routed.notify_one();
    }
}

/// Sends the routes not yet sent, and the watchlist to every post when it changed: at start,
/// on every change, and every few seconds.
async fn route_publisher(
    publisher: Publisher,
    store: Store,
    client: AsyncClient,
    routed: Arc<Notify>,
) {
    if let Err(e) = store.watchlist_resend().await {
        tracing::error!(error = %e, "cannot mark the watchlist for sending");
    }
    loop {
        // The posts are read only when there is a watchlist to send.
        match store.watchlist().await {
            Ok(Some((doc, true))) => match store.posts().await {
                Ok(posts) => {
                    let mut all = true;
                    for p in &posts {
                        let topic = format!("acsgd/v1/{}/in/watchlist", p.id);
                        if let Err(e) = client
                            .publish(topic, QoS::AtLeastOnce, true, doc.clone().into_bytes())
                            .await
                        {
                            tracing::warn!(error = %e, "cannot queue the watchlist");
                            all = false;
                            break;
                        }
                    }
                    if all {
                        if let Err(e) = store.watchlist_sent(&doc, now_ms()).await {
                            tracing::warn!(error = %e, "watchlist sent but not marked; it is sent again");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the posts"),
            },
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot read the watchlist"),
        }
        match publisher.pending(500).await {
            Ok(pending) => {
                for p in &pending {
                    let sent = client
                        .publish(p.topic(), QoS::AtLeastOnce, true, p.payload.clone())
                        .await;
                    match sent {
                        Ok(()) => {
                            if let Err(e) = publisher.done(p, now_ms()).await {
                                tracing::warn!(error = %e, "route sent but not marked; it is sent again");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot queue a route");
                            break;
                        }
                    }
                }
                if pending.len() == 500 {
                    continue;
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read routes"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), routed.notified()).await;
    }
}

/// Position events to forget in one scan at most: a database that kept them for long before
/// retention was turned on is worked through over several scans, not in one long one.
const PRUNED_PER_SCAN: u64 = 100_000;

/// How often the tracks of transits off the road are looked through (the first scan does
/// it too): that reads every track, where the position events are found by an index.
const TRACKS_EVERY: Duration = Duration::from_secs(3_600);

/// Tracks of transits off the road forgotten in one look at most.
const TRACKS_PER_SCAN: u64 = 5_000;

async fn prune(store: &Store, before: i64, tracks_pruned: &mut Option<std::time::Instant>) {
    match store.prune_position_events(before, PRUNED_PER_SCAN).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(events = n, "old position events forgotten"),
        Err(e) => tracing::error!(error = %e, "cannot forget old position events"),
    }
    if tracks_pruned.is_some_and(|t| t.elapsed() < TRACKS_EVERY) {
        return;
    }
    match store.prune_tracks(before, TRACKS_PER_SCAN).await {
        Ok(p) => {
            // A full look leaves more for the next scan rather than an hour later.
            if p.transits < TRACKS_PER_SCAN {
                *tracks_pruned = Some(std::time::Instant::now());
            }
            if p.transits > 0 {
                tracing::info!(
                    transits = p.transits,
                    fixes = p.fixes,
                    "old tracks of transits off the road forgotten"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot forget old tracks"),
    }
}

/// Raises overdue legs, asks posts to resend the seq ranges they have not delivered, and
/// forgets what is kept no longer ([`crate::retention`]).
#[allow(clippy::too_many_arguments)]
async fn scheduler(
    store: Store,
    client: AsyncClient,
    every: Duration,
    gap_grace_ms: i64,
    routed: Arc<Notify>,
    changes: broadcast::Sender<()>,
    positions: crate::positions::PositionsConfig,
    keep_positions_days: u32,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracks_pruned: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        let now = now_ms();
        if keep_positions_days > 0 {
            let before = now - i64::from(keep_positions_days) * crate::retention::DAY_MS;
            prune(&store, before, &mut tracks_pruned).await;
        }
        match store.scan_overdue(now).await {
            Ok(moved) if !moved.is_empty() => {
                tracing::info!(count = moved.len(), "transits overdue");
                routed.notify_one();
                let _ = changes.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "overdue scan failed"),
        }
        match store.scan_silent(now, &positions).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(count = n, "trackers silent");
                let _ = changes.send(());
            }
            Err(e) => tracing::error!(error = %e, "tracker silence scan failed"),
        }
        match store.prune_quarantine(MAX_QUARANTINED).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(dropped = n, "oldest quarantined messages dropped"),
            Err(e) => tracing::error!(error = %e, "quarantine prune failed"),
        }
        match store.due_gaps(now, gap_grace_ms).await {
            Ok(gaps) => {
                for (post, from, to) in gaps {
                    let topic = format!("acsgd/v1/{post}/in/replay");
                    let body = serde_json::json!({"from": from, "to": to}).to_string();
                    if client
                        .publish(topic, QoS::AtLeastOnce, false, body)
                        .await
                        .is_ok()
                    {
                        if let Err(e) = store.gap_requested(&post, from, to, now).await {
                            tracing::error!(error = %e, "cannot record a resend request");
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "gap scan failed"),
        }
    }
}
