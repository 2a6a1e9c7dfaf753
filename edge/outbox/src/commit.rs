//! The group-commit writer: one OS thread owns appends (writes and fsync block), async callers
//! queue requests to it and get their answer once their batch is on disk. Accepted events are
//! also offered to in-process watchers (the officer display) once they are on disk.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::log::State;
use super::{encode_record, Store};
use acsgd_contract::envelope::{Event, Priority, Signer};

/// Requests queued at most; a producer beyond that waits (backpressure).
const QUEUE: usize = 1024;

/// Accepted events a slow watcher may fall behind by before it is told it lagged.
const FEED: usize = 4096;

/// An event on disk, as offered to watchers.
#[derive(Debug, Clone)]
pub struct Fed {
    pub seq: u64,
    pub id: String,
    pub kind: String,
    /// The event's own time, RFC 3339.
    pub time: String,
    pub body: serde_json::Value,
    /// When the fsync that accepted it returned (Unix ms).
    pub accepted_ms: i64,
}

/// An accepted event: on disk, numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub seq: u64,
    pub id: String,
}

/// Why an event was not accepted. The producer keeps it (a tracker is not acknowledged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("refused: outbox quota full and `{0}` is bulk data")]
    QuotaFull(String),
    #[error("refused: the disk is down to the reserve kept for passages and alerts, and `{0}` is bulk data")]
    DiskLow(String),
    #[error("outbox is closed")]
    Closed,
    #[error("outbox storage failed: {0}")]
    Storage(String),
}

type Reply = Vec<Result<Accepted, AppendError>>;

enum Msg {
    Append {
        events: Vec<Event>,
        reply: oneshot::Sender<Reply>,
    },
    Close(oneshot::Sender<()>),
}

/// Handle to the outbox: append events, watch the durable watermark. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Msg>,
    store: Arc<Store>,
    durable: watch::Receiver<u64>,
    feed: broadcast::Sender<Arc<Fed>>,
    /// Why the writer thread died, once it has (`None` while it runs or after a clean close).
    died: watch::Receiver<Option<String>>,
}

impl Outbox {
    /// Starts the writer thread.
    pub fn start(store: Arc<Store>, signer: Signer, batch_max: usize) -> Outbox {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (durable_tx, durable) = watch::channel(store.last_seq());
        let (feed, _) = broadcast::channel(FEED);
        let s = store.clone();
        let f = feed.clone();
        let (died_tx, died) = watch::channel(None);
        let died_tx = Arc::new(died_tx);
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || {
                let d = died_tx.clone();
                let run = || writer(s, signer, rx, batch_max.max(1), durable_tx, f, d);
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
                    report_death(&died_tx, "writer", p);
                }
            })
            .expect("spawning the outbox writer thread");
        Outbox {
            tx,
            store,
            durable,
            feed,
            died,
        }
    }

    /// Resolves with the reason once the writer thread (or its flusher) has died: from then
    /// on every append fails with [`AppendError::Closed`]. Pending while it runs, and after
    /// a clean [`Outbox::close`].
    /// The future holds no handle to the outbox (it does not keep the store open).
    pub fn died(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut rx = self.died.clone();
        async move {
            loop {
                if let Some(why) = rx.borrow_and_update().clone() {
                    return why;
                }
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }

    /// Events as they become accepted (on disk), in `seq` order. Events are copied for
    /// watchers only while somebody watches.
    pub fn watch(&self) -> broadcast::Receiver<Arc<Fed>> {
        self.feed.subscribe()
    }

    /// Appends one event; returns once it is on disk.
    pub async fn append(&self, event: Event) -> Result<Accepted, AppendError> {
        self.append_many(vec![event])
            .await
            .pop()
            .unwrap_or(Err(AppendError::Closed))
    }

    /// Appends events in order; one result per event, returned once they are on disk.
    pub async fn append_many(&self, events: Vec<Event>) -> Reply {
        let n = events.len();
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Append { events, reply }).await.is_err() {
            return vec![Err(AppendError::Closed); n];
        }
        rx.await
            .unwrap_or_else(|_| vec![Err(AppendError::Closed); n])
    }

    /// The highest `seq` on disk; changes after every flushed batch.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Commits everything queued before this call, flushes and stops the writer. Appends after
    /// it fail with [`AppendError::Closed`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Says that a thread of the outbox died (the first death is the one reported).
fn report_death(
    to: &watch::Sender<Option<String>>,
    thread: &str,
    p: Box<dyn std::any::Any + Send>,
) {
    let why = acsgd_supervise::panic_message(p);
    tracing::error!(why = %why, "the outbox {thread} died; nothing more is accepted");
    to.send_if_modified(|d| {
        let first = d.is_none();
        if first {
            *d = Some(format!("panicked: the outbox {thread}: {why}"));
        }
        first
    });
}

fn writer(
    store: Arc<Store>,
    signer: Signer,
    mut rx: mpsc::Receiver<Msg>,
    batch_max: usize,
    durable: watch::Sender<u64>,
    feed: broadcast::Sender<Arc<Fed>>,
    died_tx: Arc<watch::Sender<Option<String>>>,
) {
    // Pipelined group commit: this thread seals and applies batch N+1 while the flusher
    // thread waits on the fsync of batch N. Answers go out only after the fsync.
    let (to_flusher, flushes) = std::sync::mpsc::channel::<Flush>();
    let flusher = {
        let store = store.clone();
        let feed = feed.clone();
        std::thread::Builder::new()
            .name("outbox-flusher".into())
            .spawn(move || {
                let run = || flusher(&store, flushes, durable, feed);
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
                    report_death(&died_tx, "flusher", p);
                }
            })
            .expect("spawning the outbox flusher thread")
    };
    let mut flusher = Some(flusher);
    let mut closing = None;
    while closing.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut reqs = Vec::new();
        let mut n = 0;
        let take = |m: Msg, reqs: &mut Vec<_>, n: &mut usize| match m {
            Msg::Append { events, reply } => {
                *n += events.len();
                reqs.push((events, reply));
                None
            }
            Msg::Close(tx) => Some(tx),
        };
        closing = take(first, &mut reqs, &mut n);
        // Everything queued right now shares this batch.
        while closing.is_none() && n < batch_max {
            match rx.try_recv() {
                Ok(m) => closing = take(m, &mut reqs, &mut n),
                Err(_) => break,
            }
        }
        if !reqs.is_empty() {
            acsgd_supervise::fault_point("outbox");
            if n == 0 {
                // The test hang at the first empty batch: the watchdog's probe, which comes
                // only after the start has stored its own events.
                acsgd_supervise::hang_point_blocking("outbox");
            }
            let watched = feed.receiver_count() > 0;
            if to_flusher
                .send(commit(&store, &signer, reqs, watched))
                .is_err()
            {
                // The flusher only stops when this thread lets go of it: it died (and said
                // so). Every later batch would wait forever; the writer stops taking them.
                let _ = flusher.take().map(std::thread::JoinHandle::join);
                panic!("its flusher died");
            }
        }
    }
    rx.close();
    drop(to_flusher);
    if let Some(f) = flusher {
        let _ = f.join();
    }
    if let Err(e) = store.flush() {
        tracing::error!(error = %e, "final outbox flush failed");
    }
    // Let go of the store before answering, so a caller that drops its handles can reopen it.
    drop(store);
    if let Some(tx) = closing {
        let _ = tx.send(());
    }
}

/// A batch appended to the log, waiting for the fsync that makes it accepted.
struct Flush {
    /// The last `seq` assigned when the batch was applied.
    upto: u64,
    replies: Vec<(Reply, oneshot::Sender<Reply>)>,
    /// Copies of the accepted events, when someone watches.
    fed: Vec<Fed>,
}

/// Flushes whatever batches are waiting, with one fsync, then answers them.
fn flusher(
    store: &Store,
    rx: std::sync::mpsc::Receiver<Flush>,
    durable: watch::Sender<u64>,
    feed: broadcast::Sender<Arc<Fed>>,
) {
    while let Ok(first) = rx.recv() {
        acsgd_supervise::fault_point("outbox-flusher");
        let mut batches = vec![first];
        while let Ok(b) = rx.try_recv() {
            batches.push(b);
        }
        let upto = batches.iter().map(|b| b.upto).max().unwrap_or(0);
        // The fsync this whole design rests on: the log's files, then sled's.
        let flushed = store.flush_upto(Some(upto));
        if let Err(e) = &flushed {
            tracing::error!(error = %e, "outbox flush failed; its batches are not accepted");
        }
        if flushed.is_ok() {
            durable.send_if_modified(|d| {
                let grew = upto > *d;
                *d = (*d).max(upto);
                grew
            });
        }
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        for b in batches {
            if flushed.is_ok() {
                for mut f in b.fed {
                    f.accepted_ms = now_ms;
                    let _ = feed.send(Arc::new(f));
                }
            }
            for (mut results, reply) in b.replies {
                if let Err(e) = &flushed {
                    for r in results.iter_mut().filter(|r| r.is_ok()) {
                        *r = Err(AppendError::Storage(e.to_string()));
                    }
                }
                let _ = reply.send(results);
            }
        }
    }
}

/// Events sealed together by one sealing thread, and handed on to the writer as one piece.
const CHUNK: usize = 64;

/// Sealed envelopes, handed to the writer in `seq` order whatever order they were sealed in.
enum Sealed {
    /// Sealed on this thread, all at once (small batches: threads cost more than they save).
    Here(std::vec::IntoIter<Vec<u8>>),
    /// Sealed by threads on every core, [`CHUNK`] events at a time, as the writer goes.
    Threads {
        rx: std::sync::mpsc::Receiver<(usize, Vec<Vec<u8>>)>,
        /// Chunks that arrived before the one the writer needs.
        early: std::collections::HashMap<usize, Vec<Vec<u8>>>,
        current: std::vec::IntoIter<Vec<u8>>,
        next_chunk: usize,
    },
}

impl Sealed {
    /// The envelope of the next event, in order.
    fn next(&mut self) -> Vec<u8> {
        match self {
            Sealed::Here(it) => it.next().expect("one sealed envelope per event"),
            Sealed::Threads {
                rx,
                early,
                current,
                next_chunk,
                ..
            } => loop {
                if let Some(env) = current.next() {
                    return env;
                }
                let chunk = match early.remove(next_chunk) {
                    Some(c) => c,
                    None => loop {
                        let (i, c) = rx.recv().expect("a sealing thread died");
                        if i == *next_chunk {
                            break c;
                        }
                        early.insert(i, c);
                    },
                };
                *next_chunk += 1;
                *current = chunk.into_iter();
            },
        }
    }
}

/// Seals, numbers and applies one batch (quota rules included); the fsync is the flusher's.
///
/// Large batches are sealed on every core while this thread appends what is sealed so far
/// to the log, a chunk at a time: signing is most of an append's cost, and it overlaps the
/// encoding and writing instead of preceding it.
fn commit(
    store: &Store,
    signer: &Signer,
    reqs: Vec<(Vec<Event>, oneshot::Sender<Reply>)>,
    watched: bool,
) -> Flush {
    let (lists, senders): (Vec<Vec<Event>>, Vec<oneshot::Sender<Reply>>) = reqs.into_iter().unzip();
    let all: Vec<&Event> = lists.iter().flatten().collect();
    // Sealed up front numbered as if all are accepted. A quota refusal shifts the numbers of
    // the events after it; those are sealed again (rare: only when the quota is full).
    let base = store.last_seq();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || all.len() < 2 * CHUNK {
        let sealed = (0..all.len())
            .map(|i| signer.seal(all[i], base + 1 + i as u64))
            .collect::<Vec<_>>();
        let sealed = Sealed::Here(sealed.into_iter());
        return apply(store, signer, &lists, senders, sealed, watched);
    }
    let chunks = all.len().div_ceil(CHUNK);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..threads {
            let (tx, next, all) = (tx.clone(), &next, &all);
            s.spawn(move || loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= chunks {
                    return;
                }
                let from = c * CHUNK;
                let sealed = all[from..(from + CHUNK).min(all.len())]
                    .iter()
                    .enumerate()
                    .map(|(i, ev)| signer.seal(ev, base + 1 + (from + i) as u64))
                    .collect();
                if tx.send((c, sealed)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let sealed = Sealed::Threads {
            rx,
            early: Default::default(),
            current: Vec::new().into_iter(),
            next_chunk: 0,
        };
        apply(store, signer, &lists, senders, sealed, watched)
    })
}

/// Numbers the sealed events, applies the quota rules and appends them to the log a chunk at
/// a time. A failed write refuses the whole batch: chunks written before it are cut back out
/// of the log (or, if even that fails, their numbers are never issued again).
fn apply(
    store: &Store,
    signer: &Signer,
    lists: &[Vec<Event>],
    senders: Vec<oneshot::Sender<Reply>>,
    mut sealed: Sealed,
    watched: bool,
) -> Flush {
    // After an I/O error (a full disk) the store is reopened here, before numbering: the
    // reopened store may hold more than was acknowledged, and numbering goes on after it.
    let (handles, mut failure) = match store.handles() {
        Ok(h) => (Some(h), None),
        Err(e) => (None, Some(e)),
    };
    let disk_low = store.disk_low();
    let mut seq = store.last_seq();
    let base = seq;
    let (mut accepted, mut evicted, mut refused) = (0u64, 0u64, 0u64);
    let mut replies: Vec<(Reply, oneshot::Sender<Reply>)> = Vec::with_capacity(senders.len());
    let mut index = 0u64;
    let mut fed = Vec::new();
    let mut chunk: Vec<(u64, bool, Vec<u8>)> = Vec::with_capacity(CHUNK);
    // Record bytes accepted into the chunk, not yet in the log's count.
    let mut unwritten = 0u64;
    let write = |chunk: &[(u64, bool, Vec<u8>)], upto: u64| -> Result<(), super::StoreError> {
        store.reserve_upto(upto)?;
        store.log().append(chunk)?;
        Ok(())
    };
    for (events, reply) in lists.iter().zip(senders) {
        let mut results = Vec::with_capacity(events.len());
        for ev in events {
            let prio = Priority::of(&ev.kind);
            index += 1;
            let pre = sealed.next();
            if let Some(e) = &failure {
                results.push(Err(AppendError::Storage(e.to_string())));
                continue;
            }
            let payload = if seq + 1 == base + index {
                pre
            } else {
                signer.seal(ev, seq + 1)
            };
            let time_ms = (ev.time.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
            let rec = encode_record(prio, time_ms, &ev.kind, &payload);
            let size = rec.len() as u64;
            {
                let mut log = store.log();
                if disk_low && prio == Priority::Bulk {
                    refused += 1;
                    results.push(Err(AppendError::DiskLow(ev.kind.clone())));
                    continue;
                }
                if log.bytes + unwritten + size > store.quota {
                    if prio == Priority::Bulk {
                        refused += 1;
                        results.push(Err(AppendError::QuotaFull(ev.kind.clone())));
                        continue;
                    }
                    while log.bytes + unwritten + size > store.quota {
                        let Some(old) = log.oldest_bulk() else {
                            break;
                        };
                        log.mark(old, State::Evicted);
                        evicted += 1;
                    }
                }
            }
            seq += 1;
            unwritten += size;
            chunk.push((seq, prio == Priority::Bulk, rec));
            accepted += 1;
            if watched {
                fed.push(Fed {
                    seq,
                    id: ev.id.clone(),
                    kind: ev.kind.clone(),
                    time: acsgd_contract::envelope::rfc3339_ms(ev.time),
                    body: ev.body.clone(),
                    accepted_ms: 0,
                });
            }
            results.push(Ok(Accepted {
                seq,
                id: ev.id.clone(),
            }));
            if chunk.len() == CHUNK {
                if let Err(e) = write(&chunk, seq) {
                    failure = Some(e);
                }
                chunk.clear();
                unwritten = 0;
            }
        }
        replies.push((results, reply));
    }
    if failure.is_none() && (accepted > 0 || evicted > 0) {
        let last = (|| -> Result<(), super::StoreError> {
            write(&chunk, seq)?;
            let h = handles
                .as_ref()
                .expect("writes only with the store's handles");
            store.check(h.meta.insert("last_seq", &seq.to_be_bytes()))?;
            Ok(())
        })();
        failure = last.err();
    }
    if evicted > 0 {
        // Evictions may have emptied old segments, or left them mostly holes.
        if let Err(e) = store.log().reclaim() {
            tracing::warn!(error = %e, "could not reclaim outbox segments");
        }
    }

    let c = store.counters();
    c.refused.fetch_add(refused, Ordering::Relaxed);
    if refused > 0 && disk_low {
        tracing::warn!(refused, "disk down to its reserve: bulk events refused");
    } else if refused > 0 {
        tracing::warn!(refused, "outbox quota full: bulk events refused");
    }
    if evicted > 0 {
        tracing::warn!(evicted, "outbox quota full: oldest bulk events evicted");
    }
    match failure {
        None => {
            // Counted now so the persisted counters travel with this batch's fsync.
            c.accepted.fetch_add(accepted, Ordering::Relaxed);
            c.evicted.fetch_add(evicted, Ordering::Relaxed);
            if let Err(e) = store.persist_counters() {
                tracing::warn!(error = %e, "could not record the outbox counters");
            }
            store.last_seq.store(seq, Ordering::Release);
        }
        Some(e) => {
            tracing::error!(error = %e, "outbox write failed; the batch is not accepted");
            let msg = e.to_string();
            for (results, _) in &mut replies {
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(AppendError::Storage(msg.clone()));
                }
            }
            // Chunks written before the failure are cut back out; if even that fails they may
            // reach the disk, so their numbers are never issued again.
            if accepted > 0 {
                if let Err(e) = store.log().discard_from(base + 1) {
                    tracing::warn!(
                        from = base + 1,
                        upto = seq,
                        error = %e,
                        "numbers of the refused batch are skipped"
                    );
                    store.last_seq.store(seq, Ordering::Release);
                }
            }
            fed.clear();
        }
    }
    Flush {
        upto: store.last_seq(),
        replies,
        fed,
    }
}
