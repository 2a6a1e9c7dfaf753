//! The outbox: every event the appliance emits, on disk, until central has acknowledged it.
//!
//! # Guarantees
//! * **Accepted means on disk.** An event is *accepted* when the sync of the batch that holds
//!   it has returned: an `fdatasync` of the segment file it was appended to (and of the
//!   directory when a segment was created), with sled's flush and an `fdatasync` of sled's
//!   files for the counters beside it (sled's own flush ends in `sync_file_range`, which
//!   commits neither the file's metadata nor the file system's journal nor the drive's cache).
//!   Only then does its producer get an answer (and a tracker its ACK), and only then may the
//!   uplink publish it: the uplink never reads past the *durable watermark*, the highest `seq`
//!   synced. This holds across a process crash and a power cut.
//! * **Group commit, pipelined.** A writer thread takes every append request queued at that
//!   moment (up to `storage.commit_batch` events), assigns `seq`, signs (on all cores) and
//!   appends them to the segment log, a chunk per write; a flusher thread syncs whatever
//!   batches are appended, once for all of them, and only then answers them and moves the
//!   durable watermark. The writer
//!   prepares the next batch while the previous one is being synced.
//! * **`seq` is never issued twice to events anyone saw.** `seq` is assigned by the writer, in
//!   order, only to events it accepts; a refused event gets none. The last assigned `seq` is
//!   written in the same batch as the events, so after a crash the next `seq` follows the last
//!   *durable* one (the log's highest `seq`, as the newest segment is never deleted): events
//!   that were not yet synced were never acknowledged, never published
//!   and never shown, so nobody has seen their numbers. When a sync fails, its batch is refused,
//!   but what was already written may still reach the disk and be sent later under its
//!   number (the producer was told "not accepted" and may send it again: at-least-once). A
//!   write that fails is cut back out of its file, and its numbers are given again.
//! * **Delivered means acknowledged.** An event is marked delivered only after the broker's
//!   PUBACK for it. Marks are synced lazily (with the next batch, or at close): after a crash
//!   a few delivered events may be sent again with the same `id` (at-least-once).
//! * **An I/O error is not the end.** sled keeps its first I/O error for good and fails every
//!   later call with it; a failed fdatasync leaves the log's pages in doubt. The store then
//!   reopens the database and reads the log back by itself, at the next call and at most
//!   twice a second, until the disk takes writes again (space freed, a file system back
//!   read-write); numbering goes on above the highest `seq` found. Meanwhile appends are
//!   refused with the reason (a tracker is not acknowledged and sends again).
//! * **Keep events have a disk reserve.** Below `storage.reserve_mb` of free space on the file
//!   system, bulk events are refused, so passages and alerts still fit when something else
//!   fills the disk.
//! * **Poison events are set aside.** An event the broker refuses for good is moved to the
//!   `dead` tree with its reason and never sent again (see the uplink, `acsgd-uplink`).

//! # On disk (`<data_dir>/`)
//! * `events/`: the events, in the segment log of [`log`]: frames holding one record each,
//!   in `seq` order, and the marks saying which were delivered, evicted, dead-lettered or
//!   corrupt. A record:
//!   ```text
//!   0     1      2              10       11         11+T            N-4        N
//!   | ver | prio | time_ms u64 LE | T u8  | type (T) | envelope JSON | crc32 LE |
//!   ```
//!   `ver` = 1; `prio` = 0 bulk / 1 keep; `type` is the MQTT topic's last level; the envelope
//!   is the exact signed bytes that are published; the CRC-32 (IEEE) covers bytes `0..N-4`.
//!   Delivered events stay in their segment for `storage.keep_delivered_h` (by event time,
//!   within a byte cap): central's resend requests read them there.
//! * `outbox/`: a sled database with the small trees:
//!   * `meta`: `last_seq` (u64 BE), `durable_seq` (the last `seq` a commit synced, written
//!     after its sync) and the persisted counters `c.<name>` (u64 BE).
//!   * `inbox`: what central sent on `acsgd/v1/{post}/in/#` (see `acsgd_uplink::inbox`).
//!   * `corrupt`: records that failed their check, kept for forensics, never sent: by `seq`
//!     (8 bytes BE), or a damaged stretch of a segment by `<segment>@<offset>`.
//!   * `dead`: events the broker refused, by `seq`: reason length u16 LE, reason, record.
//!   * `events` and `sent`: where earlier versions kept the events; moved into the log at
//!     the first start of this version (the log is rebuilt if that move was cut short).
//! * `seq.reserve`: a `seq` that no event has reached yet, written (fsync, rename) a block ahead
//!   of use. If the store is lost, numbering resumes above it: the jump shows central that
//!   events were lost rather than silently reusing their numbers.
//! * `quarantine/outbox-<UTC time>/`: a store that could not be opened or read, moved aside
//!   whole for forensics.
//! * `status.json`: the running service's view of the backlog, rewritten every second, read by
//!   `acsgd outbox stat` while the service holds the store's lock.
//!
//! # Quota
//! `storage.quota_mb` bounds the bytes of records. When an event does not fit:
//! * a *bulk* event (tracker positions) is **refused** (the producer is told, the `refused`
//!   counter grows): older track is kept rather than overwritten;
//! * a *keep* event (passage, alert, ack, health) **evicts** the oldest bulk events until it fits
//!   (`evicted` counter); if no bulk event is left it is accepted over quota: alerts and
//!   passages are never evicted nor refused for space. The disk itself is the last limit.
//!
//! The quota counts record bytes. The log's files hold them with 20 bytes of framing each,
//! plus what waits to be reclaimed: segments go whole once nothing in them is pending or
//! kept, and a closed segment that is mostly holes is rewritten (see [`log`]).
//!
//! # Recovery at start
//! 1. Open the database. If sled refuses it or panics (torn or garbage files), the whole
//!    directory is moved to `quarantine/` and a new one is created (the events, in the log,
//!    are not touched).
//! 2. Read every segment and check every frame: a damaged stretch is copied to `corrupt`,
//!    counted and dropped from its file; a torn tail (a write a crash interrupted, never
//!    acknowledged) is cut off.
//! 3. `last_seq` = the larger of the stored `last_seq` and the log's last `seq`; if the
//!    database was quarantined or has lost its `last_seq`, numbering resumes after
//!    `seq.reserve`.
//!
//! After an I/O error while running, the same scan runs again on reopen (see above).
//!
//! Each of these raises a health note that the service publishes as a `health` event.

mod commit;
pub mod health;
pub mod log;

pub use commit::{Accepted, AppendError, Fed, Outbox};

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use acsgd_contract::envelope::Priority;
use acsgd_contract::files::sync_dir;

/// How far ahead of use `seq.reserve` is written.
const RESERVE_BLOCK: u64 = 100_000;
const RECORD_VERSION: u8 = 1;
const DB_DIR: &str = "outbox";
const RESERVE_FILE: &str = "seq.reserve";
/// File the service writes its live status to.
pub const STATUS_FILE: &str = "status.json";

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("outbox {path} is in use by another process (is the service running?)")]
    Locked { path: PathBuf },
    #[error("outbox {path} cannot be opened: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("outbox storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("outbox {path}: syncing to disk failed: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("outbox is being reopened after an I/O error")]
    Reopening,
    #[error("outbox {path} still holds {events} events in an earlier version's format; the service moves them into the log at its next start")]
    NotMoved { path: PathBuf, events: usize },
    #[error("outbox log {0}")]
    Log(#[from] log::LogError),
    #[error("seq reservation {path}: {source}")]
    Reserve {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A record that failed its checks.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("record too short ({0} bytes)")]
    Short(usize),
    #[error("record CRC mismatch")]
    Crc,
    #[error("record version {0} unknown")]
    Version(u8),
    #[error("record priority {0} unknown")]
    Priority(u8),
    #[error("record type is not UTF-8")]
    Type,
}

/// A decoded record, borrowing from the stored bytes.
#[derive(Debug, PartialEq)]
pub struct Record<'a> {
    pub prio: Priority,
    pub time_ms: u64,
    pub kind: &'a str,
    pub payload: &'a [u8],
}

/// Encodes a record (layout in the module docs).
pub fn encode_record(prio: Priority, time_ms: u64, kind: &str, payload: &[u8]) -> Vec<u8> {
    debug_assert!(kind.len() <= u8::MAX as usize);
    let mut out = Vec::with_capacity(15 + kind.len() + payload.len());
    out.push(RECORD_VERSION);
    out.push(prio as u8);
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.push(kind.len() as u8);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and checks a record.
pub fn decode_record(b: &[u8]) -> Result<Record<'_>, RecordError> {
    if b.len() < 15 {
        return Err(RecordError::Short(b.len()));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(RecordError::Crc);
    }
    if body[0] != RECORD_VERSION {
        return Err(RecordError::Version(body[0]));
    }
    let prio = Priority::from_u8(body[1]).ok_or(RecordError::Priority(body[1]))?;
    let time_ms = u64::from_le_bytes(body[2..10].try_into().expect("8 bytes"));
    let tlen = body[10] as usize;
    if body.len() < 11 + tlen {
        return Err(RecordError::Short(b.len()));
    }
    let kind = std::str::from_utf8(&body[11..11 + tlen]).map_err(|_| RecordError::Type)?;
    Ok(Record {
        prio,
        time_ms,
        kind,
        payload: &body[11 + tlen..],
    })
}

/// Counters kept across restarts.
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub delivered: AtomicU64,
    pub evicted: AtomicU64,
    pub refused: AtomicU64,
    pub corrupt: AtomicU64,
    pub quarantined: AtomicU64,
    /// Events the broker refused for good, moved to the dead-letter tree.
    pub dead_lettered: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct CounterValues {
    pub accepted: u64,
    pub delivered: u64,
    pub evicted: u64,
    pub refused: u64,
    pub corrupt: u64,
    pub quarantined: u64,
    #[serde(default)]
    pub dead_lettered: u64,
}

impl Counters {
    const NAMES: [&'static str; 7] = [
        "accepted",
        "delivered",
        "evicted",
        "refused",
        "corrupt",
        "quarantined",
        "dead_lettered",
    ];

    fn all(&self) -> [&AtomicU64; 7] {
        [
            &self.accepted,
            &self.delivered,
            &self.evicted,
            &self.refused,
            &self.corrupt,
            &self.quarantined,
            &self.dead_lettered,
        ]
    }

    pub fn snapshot(&self) -> CounterValues {
        let v = self.all().map(|c| c.load(Ordering::Relaxed));
        CounterValues {
            accepted: v[0],
            delivered: v[1],
            evicted: v[2],
            refused: v[3],
            corrupt: v[4],
            quarantined: v[5],
            dead_lettered: v[6],
        }
    }
}

/// What happened while opening the store, for the health channel.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenNote {
    /// The store was moved aside; numbering resumes at `resumed_at`.
    Quarantined {
        reason: String,
        moved_to: PathBuf,
        resumed_at: u64,
    },
    /// Some records failed their CRC and were set aside.
    CorruptRecords { count: u64 },
    /// The store had no sequence state although the post had numbered events before.
    SequenceLost { resumed_at: u64 },
    /// Events once synced (acknowledged, or about to be) are no longer in the log: the disk
    /// lost them. Numbering goes on after them; central sees the gap.
    EventsLost { from: u64, upto: u64 },
}

/// The backlog as `outbox stat` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Stat {
    pub backlog_events: u64,
    pub backlog_bytes: u64,
    pub quota_bytes: u64,
    pub oldest_seq: Option<u64>,
    /// Age of the oldest unsent event, in seconds.
    pub oldest_age_s: Option<f64>,
    pub last_seq: u64,
    pub counters: CounterValues,
    pub inbox_entries: u64,
    /// Events in the dead-letter tree.
    #[serde(default)]
    pub dead_letters: u64,
    /// Free space on the data directory's file system.
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
    /// Segment files of the log, and the bytes of the log's files (segments and marks):
    /// what the events take on disk, pending, kept for resends and not yet reclaimed.
    #[serde(default)]
    pub log_segments: u64,
    #[serde(default)]
    pub log_bytes: u64,
}

/// An event waiting to be published.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: u64,
    pub kind: String,
    pub payload: Vec<u8>,
}

/// Open the store for the service (creating, repairing and quarantining as needed) or only to
/// inspect it (nothing is changed; a damaged store is an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    Service,
    Inspect,
}

/// sled's handles on one open database. Replaced whole when the store reopens after an I/O
/// error: sled records the first I/O error for good and fails every later call with it.
struct Handles {
    db: sled::Db,
    meta: sled::Tree,
    inbox: sled::Tree,
    corrupt: sled::Tree,
    /// Events the broker refused for good (MQTT 5 reason code), by `seq`: never sent again.
    dead: sled::Tree,
    /// sled's log file. sled ends a flush with `sync_file_range`, which commits neither the
    /// file's metadata nor the file system's journal nor the drive's cache: after a power cut
    /// the flushed tail can be gone. [`Store::sync_sled`] fdatasyncs it after every flush.
    log: std::fs::File,
}

/// The store: the events in the segment log, the small trees in sled. Cheap operations
/// only; the group-commit writer lives in [`Outbox`].
pub struct Store {
    /// `None` only while [`Store::recover`] swaps the database.
    h: RwLock<Option<Arc<Handles>>>,
    db_path: PathBuf,
    data_dir: PathBuf,
    /// The events. One lock: appends, marks and reads each take it briefly; syncs run
    /// outside it.
    log: Mutex<log::EventLog>,
    log_path: PathBuf,
    read_only: bool,
    quota: u64,
    /// Free bytes on the data directory's file system below which bulk events are refused:
    /// what is left is kept for passages, alerts and the rest of the keep events.
    reserve: AtomicU64,
    counters: Counters,
    /// Last assigned (and, between batches, last durable) `seq`. Written by the writer only.
    last_seq: AtomicU64,
    reserved: AtomicU64,
    /// Bumped on every inbox change, so fusion knows to reload declarations.
    inbox_generation: AtomicU64,
    /// An operation failed with an I/O error: the next one reopens the database first.
    broken: AtomicBool,
    /// When the last reopen was tried (ms since `opened`), so a disk that stays full is not
    /// hammered.
    last_recovery_ms: AtomicU64,
    opened: std::time::Instant,
    /// Blob files (sled's values too large for its log) already fdatasynced.
    synced_blobs: Mutex<HashSet<std::ffi::OsString>>,
    /// Delivered events are kept this long (by event time) in their segments, for central's
    /// resend requests; 0 keeps none (`storage.keep_delivered_h`).
    keep_delivered_ms: AtomicU64,
    /// At most this many record bytes of delivered events are kept; the oldest go first.
    sent_cap: AtomicU64,
}

impl Store {
    /// Opens (and in service mode creates, repairs or quarantines) the store in `data_dir`.
    pub fn open(
        data_dir: &Path,
        quota: u64,
        mode: OpenMode,
    ) -> Result<(Store, Vec<OpenNote>), StoreError> {
        let dir_err = |source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        };
        let db_path = data_dir.join(DB_DIR);
        if mode == OpenMode::Service {
            std::fs::create_dir_all(data_dir).map_err(dir_err)?;
            // Fail early with the directory's name rather than deep inside sled.
            let probe = data_dir.join(".write-probe");
            std::fs::write(&probe, b"ok")
                .and_then(|_| std::fs::remove_file(&probe))
                .map_err(dir_err)?;
        } else if !db_path.exists() {
            return Err(StoreError::Unreadable {
                path: db_path,
                reason: "no outbox here".into(),
            });
        }
        let reserve_path = data_dir.join(RESERVE_FILE);
        let reserved = read_reserve(&reserve_path);
        let mut notes = Vec::new();

        let opened = open_waiting(&db_path);
        let (handles, mut migration) = match opened {
            Ok(x) => x,
            Err(e @ StoreError::Locked { .. }) => return Err(e),
            Err(e) if mode == OpenMode::Inspect => return Err(e),
            Err(e) => {
                let reason = match &e {
                    StoreError::Unreadable { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                let moved_to = quarantine(data_dir, &db_path).map_err(dir_err)?;
                tracing::error!(%reason, moved_to = %moved_to.display(),
                    "outbox database is unreadable; quarantined it and starting a new one");
                let (h, migration) = open_and_scan(&db_path)?;
                let resumed_at = reserved.unwrap_or(0) + 1;
                notes.push(OpenNote::Quarantined {
                    reason,
                    moved_to,
                    resumed_at,
                });
                (h, migration)
            }
        };
        let quarantined_now = !notes.is_empty();
        let log_path = data_dir.join(log::LOG_DIR);
        let segment_bytes = segment_bytes(quota);
        let mut bad = std::mem::take(&mut migration.bad);
        match mode {
            OpenMode::Service if migration.records > 0 => {
                migrate(&handles, &log_path, segment_bytes)?
            }
            // Inspecting changes nothing, and the log alone would show an empty backlog.
            OpenMode::Inspect if migration.records > 0 => {
                return Err(StoreError::NotMoved {
                    path: db_path,
                    events: migration.records,
                })
            }
            _ => {}
        }
        let (event_log, found) =
            log::EventLog::open(&log_path, segment_bytes, mode == OpenMode::Inspect)?;
        if found.torn_bytes > 0 {
            tracing::warn!(
                bytes = found.torn_bytes,
                "cut off the outbox log's torn tail (a write a crash interrupted, never acknowledged)"
            );
        }
        bad.extend(found.corrupt.into_iter().map(|(k, v)| (k.into_bytes(), v)));
        let meta = handles.meta.clone();
        let log_last = event_log.last_seq;
        let store = Store {
            h: RwLock::new(Some(Arc::new(handles))),
            db_path,
            data_dir: data_dir.to_path_buf(),
            log: Mutex::new(event_log),
            log_path,
            read_only: mode == OpenMode::Inspect,
            quota,
            reserve: AtomicU64::new(0),
            counters: Counters::default(),
            last_seq: AtomicU64::new(0),
            reserved: AtomicU64::new(reserved.unwrap_or(0)),
            inbox_generation: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            last_recovery_ms: AtomicU64::new(0),
            opened: std::time::Instant::now(),
            synced_blobs: Mutex::new(HashSet::new()),
            keep_delivered_ms: AtomicU64::new(0),
            sent_cap: AtomicU64::new(0),
        };
        for (name, c) in Counters::NAMES.iter().zip(store.counters.all()) {
            if let Some(v) = meta.get(format!("c.{name}"))? {
                c.store(be_u64(&v), Ordering::Relaxed);
            }
        }
        let stored_last = meta.get("last_seq")?.map(|v| be_u64(&v));
        let durable = meta.get("durable_seq")?.map_or(0, |v| be_u64(&v));
        if mode == OpenMode::Service && durable > log_last {
            tracing::error!(
                from = log_last + 1,
                upto = durable,
                "events that were on disk are missing from the outbox log"
            );
            notes.push(OpenNote::EventsLost {
                from: log_last + 1,
                upto: durable,
            });
        }
        let mut last = stored_last.unwrap_or(0).max(log_last).max(durable);
        if quarantined_now {
            last = last.max(reserved.unwrap_or(0));
            store.counters.quarantined.fetch_add(1, Ordering::Relaxed);
        } else if stored_last.is_none() && log_last == 0 && reserved.is_some_and(|r| r > 0) {
            // A store that has never numbered anything beside a reservation that says we did:
            // the store was replaced or wiped. Do not reuse numbers central has already seen.
            last = reserved.unwrap_or(0);
            notes.push(OpenNote::SequenceLost {
                resumed_at: last + 1,
            });
        }
        store.last_seq.store(last, Ordering::Relaxed);
        if mode == OpenMode::Service {
            let h = store.handles()?;
            // Keep what failed its checks for forensics: it can never be sent.
            for (key, raw) in &bad {
                h.corrupt.insert(key.as_slice(), raw.as_slice())?;
            }
            if !bad.is_empty() {
                store
                    .counters
                    .corrupt
                    .fetch_add(bad.len() as u64, Ordering::Relaxed);
                notes.push(OpenNote::CorruptRecords {
                    count: bad.len() as u64,
                });
            }
            h.meta.insert("last_seq", &last.to_be_bytes())?;
            drop(h);
            store.persist_counters()?;
            store.reserve_upto(last)?;
            store.flush()?;
            // The database's own directory entries (its log file, created by sled) and ours.
            sync_dir(&store.db_path).map_err(dir_err)?;
            sync_dir(data_dir).map_err(dir_err)?;
        }
        Ok((store, notes))
    }

    /// Keeps `bytes` of the file system free for keep events: below that, bulk events are
    /// refused (`storage.reserve_mb`).
    pub fn set_disk_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Ordering::Relaxed);
    }

    /// The current handles. After an I/O error the database is reopened first (at most
    /// twice a second); while that fails, every call fails with the reason.
    fn handles(&self) -> Result<Arc<Handles>, StoreError> {
        if self.broken.load(Ordering::Acquire) {
            let now = self.opened.elapsed().as_millis() as u64;
            let last = self.last_recovery_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 500 || last == 0 {
                self.last_recovery_ms.store(now.max(1), Ordering::Relaxed);
                self.recover()?;
            }
        }
        self.h
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(StoreError::Reopening)
    }

    /// Passes a sled result through, marking the store for a reopen if sled failed on I/O.
    fn check<T>(&self, r: Result<T, sled::Error>) -> Result<T, StoreError> {
        r.map_err(|e| {
            if matches!(e, sled::Error::Io(_)) {
                self.broken.store(true, Ordering::Release);
            }
            StoreError::Sled(e)
        })
    }

    /// Whether the last I/O failed and the store waits to be reopened.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Reopens the database after an I/O error (a full disk, a file system remounted): drops
    /// the old handles, waits for sled to let go of its files, opens again and recounts what
    /// is there. Numbering goes on after the highest `seq` found, so no number is reused.
    fn recover(&self) -> Result<(), StoreError> {
        let mut slot = self.h.write().unwrap_or_else(|p| p.into_inner());
        if !self.broken.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(old) = slot.take() {
            let weak = Arc::downgrade(&old);
            drop(old);
            // Another thread may still be inside a call with the old handles.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while weak.strong_count() > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let (h, _) = match open_waiting(&self.db_path) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "outbox still cannot be reopened");
                return Err(e);
            }
        };
        // The log is read back from the files: after a failed fdatasync, what the index says
        // was written is in doubt. Marks not written yet are written first if the disk lets us
        // (if not, those deliveries are made again: at-least-once).
        let mut event_log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(pending) = event_log.take_sync() {
            let _ = pending.run();
        }
        let (fresh, found) =
            match log::EventLog::open(&self.log_path, event_log.segment_bytes(), false) {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox log still cannot be read back");
                    return Err(e.into());
                }
            };
        *event_log = fresh;
        for (k, v) in &found.corrupt {
            let _ = h.corrupt.insert(k.as_bytes(), v.as_slice());
        }
        self.counters
            .corrupt
            .fetch_add(found.corrupt.len() as u64, Ordering::Relaxed);
        let stored_last = h.meta.get("last_seq").ok().flatten().map(|v| be_u64(&v));
        let last = self
            .last_seq
            .load(Ordering::Acquire)
            .max(stored_last.unwrap_or(0))
            .max(event_log.last_seq);
        drop(event_log);
        self.last_seq.store(last, Ordering::Release);
        self.synced_blobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        *slot = Some(Arc::new(h));
        self.broken.store(false, Ordering::Release);
        self.inbox_generation.fetch_add(1, Ordering::Release);
        tracing::info!(last_seq = last, "outbox reopened after an I/O error");
        Ok(())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Last assigned `seq`.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// The log, locked.
    fn log(&self) -> std::sync::MutexGuard<'_, log::EventLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events with `from <= seq <= upto`, in order, at most `limit`. Records that fail their
    /// check here (the disk rotted since start-up) are set aside and skipped.
    pub fn read_range(
        &self,
        from: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let mut log = self.log();
        let read = log.read(from, upto, limit, log::State::Live)?;
        let mut out = Vec::with_capacity(read.len());
        for r in read {
            match r.and_then(pending) {
                Ok(p) => out.push(p),
                Err(seq) => {
                    tracing::error!(seq, "outbox record failed its check; set aside");
                    let raw = log.raw(seq).unwrap_or_default();
                    log.mark(seq, log::State::Corrupt);
                    self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                    drop(log);
                    let h = self.handles()?;
                    self.check(h.corrupt.insert(seq.to_be_bytes(), raw))?;
                    log = self.log();
                }
            }
        }
        Ok(out)
    }

    /// The lowest `seq` still in the outbox.
    pub fn first_seq(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.log().first_live())
    }

    /// Marks an event the broker has acknowledged as delivered. Returns whether it was still
    /// pending. With a retention set ([`Store::keep_delivered`]) it stays readable for
    /// central's resend requests.
    pub fn delivered(&self, seq: u64) -> Result<bool, StoreError> {
        let keep = self.keep_delivered_ms.load(Ordering::Relaxed) > 0;
        let mut log = self.log();
        let state = if keep {
            log::State::Delivered
        } else {
            log::State::Expired
        };
        let gone = matches!(log.mark(seq, state), Some((log::State::Live, _)));
        if gone {
            self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        }
        // Pruned by time, and the files reclaimed, every 256 deliveries; at once when over
        // the byte cap.
        let over = keep && log.kept_bytes > self.sent_cap.load(Ordering::Relaxed);
        drop(log);
        if seq % 256 == 0 || over {
            self.prune_sent(now_ms())?;
        }
        Ok(gone)
    }

    /// Keeps delivered events for `keep_ms` (by event time), at most `cap` record bytes of
    /// them, for central's resend requests (`acsgd/v1/{post}/in/replay`). 0 keeps none.
    pub fn keep_delivered(&self, keep_ms: u64, cap: u64) -> Result<(), StoreError> {
        self.keep_delivered_ms.store(keep_ms, Ordering::Relaxed);
        self.sent_cap.store(cap, Ordering::Relaxed);
        self.prune_sent(now_ms())
    }

    /// Stops keeping delivered events older than the retention, and the oldest while over
    /// the byte cap; deletes or rewrites segments that no longer hold anything wanted.
    pub fn prune_sent(&self, now_ms: u64) -> Result<(), StoreError> {
        let keep = self.keep_delivered_ms.load(Ordering::Relaxed);
        let cap = self.sent_cap.load(Ordering::Relaxed);
        let mut log = self.log();
        log.prune_kept(now_ms.saturating_sub(keep), cap, keep == 0);
        log.reclaim()?;
        Ok(())
    }

    /// Delivered events still kept with `from <= seq <= upto`, in order, at most `limit`.
    pub fn read_sent(
        &self,
        from: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let read = self.log().read(from, upto, limit, log::State::Delivered)?;
        Ok(read
            .into_iter()
            .filter_map(|r| r.and_then(pending).ok())
            .collect())
    }

    /// Moves an event the broker refused for good into the `dead` tree, with the reason, so
    /// that the events after it flow. It is kept there for forensics and never sent again.
    /// Returns the event's type, or `None` if it was no longer in the outbox.
    pub fn dead_letter(&self, seq: u64, reason: &str) -> Result<Option<String>, StoreError> {
        let rec = {
            let log = self.log();
            match log.read(seq, seq, 1, log::State::Live)?.pop() {
                Some(Ok(r)) => r.record,
                Some(Err(_)) => log.raw(seq).unwrap_or_default(),
                None => return Ok(None),
            }
        };
        let kind = decode_record(&rec)
            .map(|r| r.kind.to_string())
            .unwrap_or_default();
        let mut kept = Vec::with_capacity(rec.len() + reason.len() + 2);
        kept.extend_from_slice(&(reason.len().min(u16::MAX as usize) as u16).to_le_bytes());
        kept.extend_from_slice(&reason.as_bytes()[..reason.len().min(u16::MAX as usize)]);
        kept.extend_from_slice(&rec);
        let h = self.handles()?;
        self.check(h.dead.insert(seq.to_be_bytes(), kept))?;
        drop(h);
        let gone = matches!(
            self.log().mark(seq, log::State::Dead),
            Some((log::State::Live, _))
        );
        if gone {
            self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        }
        self.flush()?;
        Ok(gone.then_some(kind))
    }

    /// Writes the counters to `meta` (flushed with the next batch).
    fn persist_counters(&self) -> Result<(), StoreError> {
        let h = self.handles()?;
        for (name, c) in Counters::NAMES.iter().zip(self.counters.all()) {
            self.check(h.meta.insert(
                format!("c.{name}"),
                &c.load(Ordering::Relaxed).to_be_bytes(),
            ))?;
        }
        Ok(())
    }

    /// Makes sure `seq.reserve` is at or above `seq`, writing a new block ahead if not.
    fn reserve_upto(&self, seq: u64) -> Result<(), StoreError> {
        if self.reserved.load(Ordering::Relaxed) >= seq && seq > 0 {
            return Ok(());
        }
        let next = seq + RESERVE_BLOCK;
        let path = self.data_dir.join(RESERVE_FILE);
        acsgd_contract::files::write_atomic(&path, next.to_string().as_bytes()).map_err(
            |source| StoreError::Reserve {
                path: path.clone(),
                source,
            },
        )?;
        self.reserved.store(next, Ordering::Relaxed);
        Ok(())
    }

    /// Makes everything written to sled so far durable: sled's flush, then an fdatasync of its
    /// log file and of any blob file not synced yet (see [`Handles::log`]).
    fn sync_sled(&self, h: &Handles) -> Result<(), StoreError> {
        self.check(h.db.flush())?;
        let synced = h.log.sync_data().and_then(|()| self.sync_blobs());
        synced.map_err(|e| {
            self.broken.store(true, Ordering::Release);
            StoreError::Sync {
                path: self.db_path.clone(),
                source: e,
            }
        })
    }

    /// sled writes values too large for its log segments to `blobs/<lsn>` with no sync at all.
    /// The directory is listed at each flush (it is empty for ordinary events) and every file
    /// not seen before is fdatasynced, then the directory itself.
    fn sync_blobs(&self) -> std::io::Result<()> {
        let dir = self.db_path.join("blobs");
        let mut seen = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut now = HashSet::new();
        let mut fresh = false;
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for e in entries {
            let name = e?.file_name();
            if !seen.contains(&name) {
                std::fs::File::open(dir.join(&name))?.sync_data()?;
                fresh = true;
            }
            now.insert(name);
        }
        if fresh {
            sync_dir(&dir)?;
        }
        *seen = now;
        Ok(())
    }

    /// Flushes everything written so far to disk: the log's files (synced outside its lock,
    /// so appends go on meanwhile), then sled with the counters.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.flush_upto(None)
    }

    /// [`Store::flush`], recording that every event up to `durable` (the group commit's
    /// last `seq`) is on disk: written to `meta` only after the log's sync, so a later start
    /// that finds less in the log knows the disk lost events.
    pub(crate) fn flush_upto(&self, durable: Option<u64>) -> Result<(), StoreError> {
        if self.read_only {
            return Ok(());
        }
        let pending = self.log().take_sync()?;
        pending.run().map_err(|e| {
            self.broken.store(true, Ordering::Release);
            StoreError::Sync {
                path: e.path,
                source: e.source,
            }
        })?;
        self.persist_counters()?;
        let h = self.handles()?;
        if let Some(d) = durable {
            self.check(h.meta.insert("durable_seq", &d.to_be_bytes()))?;
        }
        self.sync_sled(&h)?;
        self.log().rewrite_marks()?;
        Ok(())
    }

    /// Stores something central sent, durably (fsync) before returning.
    pub fn inbox_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inbox_put_many(&[(key, value)])
    }

    /// Stores several documents from one message with one flush.
    pub fn inbox_put_many(&self, docs: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let h = self.handles()?;
        let mut batch = sled::Batch::default();
        for (k, v) in docs {
            batch.insert(k.as_bytes(), *v);
        }
        self.check(h.inbox.apply_batch(batch))?;
        self.sync_sled(&h)?;
        self.inbox_generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Removes something central withdrew, durably.
    pub fn inbox_remove(&self, key: &str) -> Result<(), StoreError> {
        let h = self.handles()?;
        self.check(h.inbox.remove(key.as_bytes()))?;
        self.sync_sled(&h)?;
        self.inbox_generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// A tree of its own for another part of the appliance (the display's board and
    /// sessions), in the same database so it shares the data directory and its fsyncs. It
    /// follows the store across a reopen.
    pub fn tree(self: &Arc<Self>, name: &str) -> Result<KvTree, StoreError> {
        let h = self.handles()?;
        self.check(h.db.open_tree(name))?;
        Ok(KvTree {
            store: Arc::downgrade(self),
            name: name.to_string(),
        })
    }

    /// Changes to the inbox since the store was opened.
    pub fn inbox_generation(&self) -> u64 {
        self.inbox_generation.load(Ordering::Acquire)
    }

    /// Reads something central sent.
    pub fn inbox_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let h = self.handles()?;
        Ok(self.check(h.inbox.get(key.as_bytes()))?.map(|v| v.to_vec()))
    }

    /// Keys cached from central under a prefix (e.g. `declarations/`).
    pub fn inbox_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let h = self.handles()?;
        h.inbox
            .scan_prefix(prefix.as_bytes())
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&self.check(k)?).into_owned()))
            .collect()
    }

    /// Free bytes for us on the data directory's file system (statvfs), `None` if unknown.
    fn free_bytes(&self) -> Option<u64> {
        acsgd_contract::files::free_bytes(&self.data_dir)
    }

    /// Whether the file system is down to the keep events' reserve.
    fn disk_low(&self) -> bool {
        let reserve = self.reserve.load(Ordering::Relaxed);
        reserve > 0 && self.free_bytes().is_some_and(|f| f < reserve)
    }

    /// The backlog.
    pub fn stat(&self) -> Result<Stat, StoreError> {
        let (backlog_events, backlog_bytes, oldest_seq, oldest_ms, (log_segments, log_bytes)) = {
            let log = self.log();
            let first = log.first_live();
            (
                log.count,
                log.bytes,
                first,
                first.and_then(|s| log.time_of(s)),
                log.disk_use(),
            )
        };
        let oldest_age_s = oldest_ms.map(|t| (now_ms().saturating_sub(t)) as f64 / 1000.0);
        let h = self.handles()?;
        Ok(Stat {
            backlog_events,
            backlog_bytes,
            quota_bytes: self.quota,
            oldest_seq,
            oldest_age_s,
            last_seq: self.last_seq(),
            counters: self.counters.snapshot(),
            inbox_entries: h.inbox.len() as u64,
            dead_letters: h.dead.len() as u64,
            disk_free_bytes: self.free_bytes(),
            log_segments,
            log_bytes,
        })
    }
}

impl Drop for Store {
    /// Writes and syncs the marks made since the last flush (deliveries after the writer's
    /// final flush), so a clean stop does not send them again.
    fn drop(&mut self) {
        if self.read_only {
            return;
        }
        let pending = self.log().take_sync();
        if let Err(e) = pending.and_then(log::ToSync::run) {
            tracing::warn!(error = %e, "the outbox's last marks could not be synced");
        }
    }
}

/// A key and its value, as [`KvTree::entries`] returns them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A key-value tree of the store's database for another part of the appliance. Each call
/// goes through the store's current handles, so the tree works on after the store reopened.
/// Errors are the store's; callers that can live without their tree log them.
#[derive(Clone)]
pub struct KvTree {
    store: std::sync::Weak<Store>,
    name: String,
}

impl KvTree {
    fn with<T>(&self, f: impl FnOnce(&sled::Tree) -> sled::Result<T>) -> Result<T, StoreError> {
        let store = self.store.upgrade().ok_or(StoreError::Reopening)?;
        let h = store.handles()?;
        let tree = store.check(h.db.open_tree(&self.name))?;
        store.check(f(&tree))
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|t| t.get(key).map(|v| v.map(|v| v.to_vec())))
    }

    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StoreError> {
        self.with(|t| t.insert(key.as_ref(), value.as_ref()).map(|_| ()))
    }

    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), StoreError> {
        self.with(|t| t.remove(key).map(|_| ()))
    }

    /// Every entry, in key order.
    pub fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        self.with(|t| {
            t.iter()
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect()
        })
    }
}

/// What the database holds from earlier versions, which kept the events in sled.
#[derive(Default)]
struct Migration {
    /// Records in the old `events` and `sent` trees.
    records: usize,
    /// Records that failed their check there: (key, bytes), for the `corrupt` tree.
    bad: Vec<(Vec<u8>, Vec<u8>)>,
}

/// [`open_and_scan`], waiting briefly for a lock that this process itself still holds: sled
/// lets go of its file lock from a background thread after the last handle is dropped, so an
/// in-process reopen can briefly see the lock still held.
fn open_waiting(db_path: &Path) -> Result<(Handles, Migration), StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match open_and_scan(db_path) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Opens sled, turning refusals and panics into [`StoreError`], and counts what an earlier
/// version left in its event trees.
fn open_and_scan(db_path: &Path) -> Result<(Handles, Migration), StoreError> {
    let unreadable = |reason: String| StoreError::Unreadable {
        path: db_path.to_path_buf(),
        reason,
    };
    let db = quietly(|| {
        sled::Config::new()
            .path(db_path)
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(Some(1000))
            .open()
    })
    .map_err(|panic| unreadable(format!("sled panicked while opening: {panic}")))?
    .map_err(|e| match &e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => StoreError::Locked {
            path: db_path.to_path_buf(),
        },
        sled::Error::Io(io) if io.to_string().contains("lock") => StoreError::Locked {
            path: db_path.to_path_buf(),
        },
        _ => unreadable(e.to_string()),
    })?;
    let migration = quietly(|| old_events(&db))
        .map_err(|panic| unreadable(format!("sled panicked while reading: {panic}")))?
        .map_err(|e| unreadable(e.to_string()))?;
    let log = std::fs::File::open(db_path.join("db")).map_err(|e| unreadable(e.to_string()))?;
    let handles = Handles {
        meta: db.open_tree("meta")?,
        inbox: db.open_tree("inbox")?,
        corrupt: db.open_tree("corrupt")?,
        dead: db.open_tree("dead")?,
        log,
        db,
    };
    Ok((handles, migration))
}

/// Reads every record an earlier version left in sled's `events` and `sent` trees (sled
/// refusing to iterate them means the database is unreadable).
fn old_events(db: &sled::Db) -> Result<Migration, sled::Error> {
    let mut m = Migration::default();
    for name in ["events", "sent"] {
        for item in db.open_tree(name)?.iter() {
            let (k, v) = item?;
            m.records += 1;
            if k.len() != 8 {
                return Err(sled::Error::Corruption { at: None, bt: () });
            }
            if decode_record(&v).is_err() {
                m.bad.push((k.to_vec(), v.to_vec()));
            }
        }
    }
    Ok(m)
}

/// Moves the events an earlier version kept in sled into the log, in `seq` order, the
/// delivered ones (`sent`) marked so; synced before the old trees are cleared. A log found
/// beside non-empty old trees is what a move cut short left (nothing is appended before the
/// move is done), so it is built again from the start.
fn migrate(h: &Handles, log_dir: &Path, segment_bytes: u64) -> Result<(), StoreError> {
    let (events, sent) = (h.db.open_tree("events")?, h.db.open_tree("sent")?);
    if log_dir.exists() {
        std::fs::remove_dir_all(log_dir).map_err(|source| StoreError::DataDir {
            path: log_dir.to_path_buf(),
            source,
        })?;
    }
    let (mut log, _) = log::EventLog::open(log_dir, segment_bytes, false)?;
    let mut a = events.iter().peekable();
    let mut b = sent.iter().peekable();
    let mut chunk: Vec<(u64, bool, Vec<u8>)> = Vec::new();
    let mut delivered = Vec::new();
    let mut moved = 0u64;
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(Ok((ka, _))), Some(Ok((kb, _)))) => ka <= kb,
            (Some(Err(_)), _) => true,
            (_, Some(Err(_))) => false,
        };
        let (k, v) = if take_a { a.next() } else { b.next() }.expect("peeked")?;
        let seq = be_u64(&k);
        let Ok(r) = decode_record(&v) else {
            continue; // Kept in `corrupt` by the caller.
        };
        if chunk.last().is_some_and(|(last, ..)| *last >= seq) {
            continue; // In both trees (delivered while being moved, by an older version).
        }
        chunk.push((seq, r.prio == Priority::Bulk, v.to_vec()));
        if !take_a {
            delivered.push(seq);
        }
        if chunk.len() == 256 {
            log.append(&chunk)?;
            moved += chunk.len() as u64;
            chunk.clear();
        }
    }
    moved += chunk.len() as u64;
    log.append(&chunk)?;
    for seq in delivered {
        log.mark(seq, log::State::Delivered);
    }
    log.take_sync()?.run()?;
    drop(log);
    events.clear()?;
    sent.clear()?;
    h.db.flush()?;
    h.log.sync_data().map_err(|source| StoreError::Sync {
        path: log_dir.to_path_buf(),
        source,
    })?;
    tracing::info!(
        events = moved,
        "moved the outbox's events from sled into the segment log"
    );
    Ok(())
}

/// Segments are closed at a sixteenth of the quota (1 – 64 MiB): small enough that whole
/// files are freed as the backlog drains, few enough to keep the index small.
fn segment_bytes(quota: u64) -> u64 {
    (quota / 16).clamp(1 << 20, 64 << 20)
}

/// An event read back from the log, ready to publish; `Err(seq)` if its record fails its
/// own check (the frame's passed: written so by a bug, never by the disk).
fn pending(r: log::Read) -> Result<Pending, u64> {
    let rec = decode_record(&r.record).map_err(|_| r.seq)?;
    Ok(Pending {
        seq: r.seq,
        kind: rec.kind.to_string(),
        payload: rec.payload.to_vec(),
    })
}

thread_local! {
    /// Set while this thread runs [`quietly`].
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into an error message without printing the usual panic report:
/// sled panics on some garbage files, and that is an expected outcome here, not a crash.
/// Only this thread's panics are kept quiet: the process-wide hook is wrapped once, not
/// swapped for the call (a swap would silence every other thread's panics meanwhile, and
/// race with another thread doing the same).
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static WRAPPED: std::sync::Once = std::sync::Once::new();
    WRAPPED.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                report(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    r.map_err(acsgd_supervise::panic_message)
}

/// Moves the store aside to `quarantine/outbox-<UTC time>`.
fn quarantine(data_dir: &Path, db_path: &Path) -> std::io::Result<PathBuf> {
    let qdir = data_dir.join("quarantine");
    std::fs::create_dir_all(&qdir)?;
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let mut target = qdir.join(format!("outbox-{stamp}"));
    let mut n = 1;
    while target.exists() {
        n += 1;
        target = qdir.join(format!("outbox-{stamp}-{n}"));
    }
    std::fs::rename(db_path, &target)?;
    sync_dir(data_dir)?;
    Ok(target)
}

fn read_reserve(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[8 - n..].copy_from_slice(&b[b.len() - n..]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests;

/// Milliseconds since the epoch, now (the retention of delivered events is in event time).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
