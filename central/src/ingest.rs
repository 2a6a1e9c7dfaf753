//! Ingest: every message the posts publish on `acsgd/v1/{post}/{type}`, checked and applied in
//! one database transaction per batch, and acknowledged to the broker only after that
//! transaction committed.
//!
//! For each message, in order:
//! 1. `status` (retained online/offline) sets the post's link; `key` is ignored: a post's key is
//!    pinned by an operator (`acsgd-central post add`), never taken from the wire.
//! 2. Refused into **quarantine** with its reason (never applied, counted, raised to operators):
//!    oversized, unknown post, malformed envelope, bad signature, envelope post or type not the
//!    topic's, wrong schema, a `time` further in the future than the allowed clock skew, a `seq`
//!    already carried by another event.
//! 3. De-duplicated on `id` (a resend after a reconnect is acknowledged and dropped).
//! 4. Journaled with its signed bytes; the post's `seq` progress and gaps updated. A post's
//!    answer to a resend request (a `health` event of component `replay`) that names ranges it
//!    no longer has closes those gaps as lost, with an operator alert.
//! 5. Applied to the transit its body names (`mrn`): a passage is a sighting, a supervisor's
//!    override of a red passage to green or yellow is a release, an alert whose rule maps to a
//!    flag raises it ([`crate::tracking`]). A passage that names no MRN (the post was not sent
//!    the declaration: the truck is off its itinerary, or came before it) is a sighting of every
//!    open transit that declares one of its plates (compared as the posts compare them,
//!    [`acsgd_contract::plate`]): so a truck seen at the wrong post is diverted. A `position`
//!    event's fixes go to the transits that declare its device as their tracker
//!    ([`crate::positions`]).
//!
//! Checking needs no database and costs about as much as the transaction: [`Worker`] checks
//! the next batch on a blocking thread while the one before it commits, and a batch's
//! signatures are checked together, [`SIGNATURE_GROUP`] at a time ([`verify_batch`]: a
//! third of the cost of one by one; one by one only when a group holds a bad one, to tell
//! which).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use acsgd_contract::envelope::{from_hex, verify_batch, Envelope, EnvelopeError, Signed, SCHEMA};
use ed25519_dalek::VerifyingKey;
use serde_json::Value;
use sqlx::AnyConnection;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::notify;
use crate::positions;
use crate::routing;
use crate::store::{self, OperatorAlert, Store, StoreError};
use crate::tracking::{self, Change, Flag, Seen, Sighting, State, Transit};

/// The largest message accepted; the appliance's events are a few kB.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One message as the broker delivered it.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Quarantined(String),
    /// A post's online/offline status.
    Link,
    /// A topic central does not consume (`key`).
    Ignored,
}

/// Limits of what is believed.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How far an event's `time` may be ahead of central's clock.
    pub max_clock_skew_ms: i64,
    /// How the posts' position events are judged against corridors.
    pub positions: crate::positions::PositionsConfig,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_clock_skew_ms: 300_000,
            positions: Default::default(),
        }
    }
}

/// Checks and applies batches of messages.
pub struct Ingestor {
    store: Store,
    verifier: Verifier,
    limits: Limits,
    corridors: positions::Corridors,
    /// The connection batches are committed on, kept between them: taking one from the pool
    /// for every batch cost a ping and a hand-off (1 – 2 ms a batch on SQLite), and SQLite
    /// keeps its page cache per connection. Given back to the pool (which checks it before
    /// lending it again) when a batch fails on it. (In a mutex only so that the ingestor is
    /// `Sync`: a connection is not; it is reached through `&mut self`, never locked.)
    conn: std::sync::Mutex<Option<sqlx::pool::PoolConnection<sqlx::Any>>>,
}

/// The most messages one batch (one transaction) takes.
pub const BATCH: usize = 512;

/// How many signatures are checked together ([`verify_batch`]). A group's cost an event falls
/// with its size (on the 2-core development VM, one core: 16 µs in groups of 64, 13 µs in
/// groups of 256, 35 µs one by one); a group with a bad signature in it is checked again one
/// by one, so a post sending bad ones costs at most that much more.
pub const SIGNATURE_GROUP: usize = 256;

/// The service's ingest loop as one piece, so that the bench measures what the service does:
/// it takes what has arrived (up to [`BATCH`]) and commits it while the batch after it, what
/// arrived meanwhile, is checked on a blocking thread (and when that is little, what came
/// after it joins it); a batch whose transaction fails is retried with backoff, and nothing
/// of it is given back until it committed.
pub struct Worker<T> {
    ingestor: Ingestor,
    next: Option<(Vec<T>, Pending)>,
}

impl<T> Worker<T> {
    pub fn new(ingestor: Ingestor) -> Worker<T> {
        Worker {
            ingestor,
            next: None,
        }
    }

    /// The next batch, committed, with each message's outcome; `None` once `rx` is closed and
    /// empty.
    pub async fn next(
        &mut self,
        rx: &mut tokio::sync::mpsc::Receiver<T>,
        message: impl Fn(&T) -> Message,
    ) -> Option<(Vec<T>, Vec<Outcome>)> {
        let (mut batch, mut pending) = match self.next.take() {
            Some(n) => n,
            None => {
                let mut batch = Vec::with_capacity(BATCH);
                if rx.recv_many(&mut batch, BATCH).await == 0 {
                    return None;
                }
                let messages = batch.iter().map(&message).collect();
                let pending = self.ingestor.begin(messages, store::now_ms()).await;
                (batch, pending)
            }
        };
        // When little is arriving (this batch and what came since fit in half a batch), what
        // came since joins this batch instead of waiting for the commit after it: checking it
        // now costs this commit a little, where waiting would cost its events a whole commit.
        if !rx.is_empty() && batch.len() + rx.len() <= BATCH / 2 {
            let mut late = Vec::with_capacity(rx.len());
            while late.len() + batch.len() < BATCH / 2 {
                match rx.try_recv() {
                    Ok(m) => late.push(m),
                    Err(_) => break,
                }
            }
            let messages = late.iter().map(&message).collect();
            let checking = self.ingestor.begin(messages, store::now_ms()).await;
            pending = Pending::join(vec![pending, checking]).await;
            batch.extend(late);
        }
        let mut more = Vec::with_capacity(BATCH);
        while more.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => more.push(m),
                Err(_) => break,
            }
        }
        if !more.is_empty() {
            let messages = more.iter().map(&message).collect();
            let pending = self.ingestor.begin(messages, store::now_ms()).await;
            self.next = Some((more, pending));
        }
        let mut backoff = std::time::Duration::from_millis(250);
        let mut conflicts = 0;
        loop {
            match self.ingestor.commit(&mut pending, store::now_ms()).await {
                Ok(out) => return Some((batch, out)),
                // Another writer (the feed, the scheduler, another worker) came first to a row
                // the batch read: at once again, from a fresh read, a few times.
                Err(e) if e.is_conflict() && conflicts < 3 => {
                    conflicts += 1;
                    tracing::warn!(error = %e, "a batch done again, nothing acknowledged yet");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot store a batch; retrying, nothing acknowledged");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                }
            }
        }
    }
}

/// What checks a message without the database: the pinned keys as last read, and the clock
/// skew allowed. Cheap to clone, so a batch can be checked on a blocking thread while the one
/// before it commits.
#[derive(Clone)]
pub struct Verifier {
    keys: Arc<HashMap<String, VerifyingKey>>,
    max_clock_skew_ms: i64,
}

/// A batch's messages checked (topic, size, signature, schema, clock), in the batch's order.
pub struct Verified(Vec<Result<Checked, Refusal>>);

/// A batch taken from the broker and being checked off the async threads
/// ([`Ingestor::begin`]) until [`Ingestor::commit`] applies it.
pub struct Pending {
    batch: Arc<Vec<Message>>,
    checking: Checking,
}

enum Checking {
    Running(tokio::task::JoinHandle<Verified>),
    /// Checked already: parts joined into one batch ([`Pending::join`]).
    Checked(Verified),
    /// Not started (the keys could not be read) or used by a commit that failed: checked
    /// again, inline, by the next commit.
    Again,
}

impl Checking {
    /// What the check came to; `None` when it must be done again (not started, or cancelled).
    async fn done(self) -> Option<Verified> {
        match self {
            Checking::Running(h) => match h.await {
                Ok(v) => Some(v),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => None,
            },
            Checking::Checked(v) => Some(v),
            Checking::Again => None,
        }
    }
}

impl Pending {
    /// One batch of `parts`, in order, their checks awaited; checked again by the commit when
    /// one of them was not.
    async fn join(parts: Vec<Pending>) -> Pending {
        let mut batch = Vec::new();
        let mut verified = Some(Vec::new());
        for p in parts {
            let done = p.checking.done().await;
            match (done, verified.as_mut()) {
                (Some(v), Some(all)) => all.extend(v.0),
                _ => verified = None,
            }
            // The check is over, so its copy of the batch is gone.
            match Arc::try_unwrap(p.batch) {
                Ok(b) => batch.extend(b),
                Err(shared) => batch.extend(shared.iter().cloned()),
            }
        }
        Pending {
            batch: Arc::new(batch),
            checking: match verified {
                Some(v) => Checking::Checked(Verified(v)),
                None => Checking::Again,
            },
        }
    }
}

impl Ingestor {
    pub async fn new(store: Store, limits: Limits) -> Result<Ingestor, StoreError> {
        let mut i = Ingestor {
            store,
            verifier: Verifier {
                keys: Arc::new(HashMap::new()),
                max_clock_skew_ms: limits.max_clock_skew_ms,
            },
            limits,
            corridors: Default::default(),
            conn: Default::default(),
        };
        i.reload_keys().await?;
        Ok(i)
    }

    /// Reads the pinned keys again (a post added while central runs is known at its first event).
    async fn reload_keys(&mut self) -> Result<(), StoreError> {
        let mut keys = HashMap::new();
        for p in self.store.posts().await? {
            match from_hex(&p.public_key)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .and_then(|b| VerifyingKey::from_bytes(&b).ok())
            {
                Some(k) => {
                    keys.insert(p.id, k);
                }
                None => tracing::error!(post = %p.id, "stored public key is not an Ed25519 key"),
            }
        }
        self.verifier.keys = Arc::new(keys);
        Ok(())
    }

    /// The verifier for `batch`: the keys read again first when it names a post they do not
    /// hold.
    async fn verifier_for(&mut self, batch: &[Message]) -> Result<Verifier, StoreError> {
        let unknown = batch.iter().any(|m| {
            post_of(&m.topic).is_some_and(|(p, t)| {
                !self.verifier.keys.contains_key(p) && !matches!(t, "status" | "key")
            })
        });
        if unknown {
            self.reload_keys().await?;
        }
        Ok(self.verifier.clone())
    }

    /// Applies a batch in one transaction. On `Err` nothing of the batch is stored and none of
    /// it may be acknowledged.
    pub async fn handle(
        &mut self,
        batch: &[Message],
        now_ms: i64,
    ) -> Result<Vec<Outcome>, StoreError> {
        let verified = self.verifier_for(batch).await?.check_all(batch, now_ms);
        self.apply(batch, verified, now_ms).await
    }

    /// Starts checking `batch` on a blocking thread, so that its signatures (the costly part,
    /// which needs no database) are checked while the batch before it commits. What follows
    /// is [`Ingestor::commit`].
    pub async fn begin(&mut self, batch: Vec<Message>, now_ms: i64) -> Pending {
        let batch = Arc::new(batch);
        let checking = match self.verifier_for(&batch).await {
            Ok(v) => {
                let b = batch.clone();
                Checking::Running(tokio::task::spawn_blocking(move || {
                    Verified(v.check_part(&b, now_ms))
                }))
            }
            // The database is away: the commit will check it (and fail until it is back).
            Err(_) => Checking::Again,
        };
        Pending { batch, checking }
    }

    /// Applies a batch [`Ingestor::begin`] started, in one transaction, as
    /// [`Ingestor::handle`] does. On `Err` nothing of it is stored and none of it may be
    /// acknowledged; calling `commit` again retries it.
    pub async fn commit(
        &mut self,
        pending: &mut Pending,
        now_ms: i64,
    ) -> Result<Vec<Outcome>, StoreError> {
        let done = std::mem::replace(&mut pending.checking, Checking::Again)
            .done()
            .await;
        let verified = match done {
            Some(v) => v,
            None => self
                .verifier_for(&pending.batch)
                .await?
                .check_all(&pending.batch, now_ms),
        };
        self.apply(&pending.batch, verified, now_ms).await
    }

    async fn apply(
        &mut self,
        batch: &[Message],
        verified: Verified,
        now_ms: i64,
    ) -> Result<Vec<Outcome>, StoreError> {
        let held = self
            .conn
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut conn = match held {
            Some(c) => c,
            None => self.store.pool().acquire().await?,
        };
        let out = self.apply_on(&mut conn, batch, verified, now_ms).await;
        if out.is_ok() {
            *self.conn.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        }
        out
    }

    async fn apply_on(
        &mut self,
        conn: &mut AnyConnection,
        batch: &[Message],
        verified: Verified,
        now_ms: i64,
    ) -> Result<Vec<Outcome>, StoreError> {
        let checked = verified.0;
        // Every event of the batch into the journal at once; the ids that went in come back.
        let rows: Vec<store::JournalRow> = batch
            .iter()
            .zip(&checked)
            .filter_map(|(m, c)| match c {
                Ok(Checked::Event(env, time_ms)) => Some(store::JournalRow {
                    id: &env.id,
                    post: &env.post,
                    seq: env.seq as i64,
                    kind: &env.kind,
                    time_ms: *time_ms,
                    mrn: mrn_of(env),
                    envelope: String::from_utf8_lossy(&m.payload).into_owned(),
                }),
                _ => None,
            })
            .collect();
        let mut tx = store::begin_batch(&mut *conn).await?;
        let fresh = match store::insert_new_journal(&mut tx, &rows, now_ms).await? {
            Some(fresh) => fresh,
            None => {
                // One of them was there already (a resend after a reconnect, the same event
                // twice): the failed insert ended the transaction, which had written nothing
                // else. Again, taking only what is new.
                tx.rollback().await?;
                tx = store::begin_batch(&mut *conn).await?;
                store::insert_journal(&mut tx, &rows, now_ms).await?
            }
        };
        drop(rows);
        let mut out = Vec::with_capacity(batch.len());
        let mut state = BatchState {
            fresh,
            seqs: HashMap::new(),
            positions: Vec::new(),
            transits: Transits::default(),
        };
        // The transits the batch's passages, overrides and alerts name, with their sightings,
        // at once.
        let named: Vec<&str> = checked
            .iter()
            .filter_map(|c| match c {
                Ok(Checked::Event(env, _)) if names_a_transit(env) => mrn_of(env),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        state.transits.prefetch(&mut tx, &named).await?;
        for (m, c) in batch.iter().zip(checked) {
            out.push(self.one(&mut tx, m, c, now_ms, &mut state).await?);
        }
        state.transits.flush(&mut tx).await?;
        positions::apply_batch(
            &mut tx,
            &state.positions,
            &mut self.corridors,
            &state.transits.moved,
            &self.limits.positions,
            now_ms,
        )
        .await?;
        store::note_seqs(&mut tx, state.seqs, now_ms).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn one(
        &self,
        conn: &mut AnyConnection,
        m: &Message,
        checked: Result<Checked, Refusal>,
        now_ms: i64,
        state: &mut BatchState,
    ) -> Result<Outcome, StoreError> {
        let refusal = match checked {
            Ok(Checked::Event(env, time_ms)) => {
                return self.accept(conn, m, env, time_ms, now_ms, state).await;
            }
            Ok(Checked::Link(post, link)) => {
                store::set_link(conn, &post, &link, now_ms).await?;
                if link == "online" {
                    // A broker may come back from a cold start without the retained
                    // messages it had (seen with a NATS cluster): what the post should hold
                    // is sent again whenever it connects.
                    routing::republish(conn, &post).await?;
                }
                return Ok(Outcome::Link);
            }
            Ok(Checked::Ignored) => return Ok(Outcome::Ignored),
            Err(r) => r,
        };
        quarantine_one(conn, &refusal, &m.payload, now_ms).await?;
        Ok(Outcome::Quarantined(refusal.reason))
    }

    async fn accept(
        &self,
        conn: &mut AnyConnection,
        m: &Message,
        env: Envelope,
        time_ms: i64,
        now_ms: i64,
        state: &mut BatchState,
    ) -> Result<Outcome, StoreError> {
        let mrn = mrn_of(&env).map(str::to_string);
        let seq = env.seq as i64;
        // The first occurrence of an id the batch's insert took; a second one in the same
        // batch is a duplicate like any other.
        if !state.fresh.remove(&env.id) {
            let same = sqlx::query("SELECT 1 FROM journal WHERE id = $1")
                .bind(&env.id)
                .fetch_optional(&mut *conn)
                .await?;
            if same.is_some() {
                return Ok(Outcome::Duplicate);
            }
            let r = Refusal {
                topic: m.topic.clone(),
                post: Some(env.post.clone()),
                reason: format!(
                    "seq reused: seq {} of {} already carried another event",
                    seq, env.post
                ),
            };
            quarantine_one(conn, &r, &m.payload, now_ms).await?;
            return Ok(Outcome::Quarantined(r.reason));
        }
        // The batch's seqs are noted together once it is through (`Ingestor::handle`).
        state.seqs.entry(env.post.clone()).or_default().push(seq);
        if env.kind == "health"
            && env.body.get("component").and_then(Value::as_str) == Some("replay")
        {
            // The post's answer to a resend request: what it no longer has is lost.
            let gone = env.body.pointer("/detail/gone").and_then(Value::as_array);
            for range in gone.into_iter().flatten() {
                let bound = |i: usize| range.get(i).and_then(Value::as_i64);
                if let (Some(a), Some(b)) = (bound(0), bound(1)) {
                    store::gap_lost(conn, &env.post, a, b, &env.id, now_ms).await?;
                }
            }
        }
        match mrn {
            Some(mrn) => apply(conn, &env, &mrn, time_ms, now_ms, &mut state.transits).await?,
            // A passage the post could not match to a declaration (it was not sent one: the
            // truck is off its itinerary, or came before it): followed by its plates.
            None if env.kind == "passage" => {
                let keys = read_plates(&env);
                for mrn in store::open_transits_by_plate(conn, &keys).await? {
                    apply(conn, &env, &mrn, time_ms, now_ms, &mut state.transits).await?;
                }
            }
            // A tracker's fixes, as a post received them: for the transits that declare it,
            // judged with the batch's other fixes once the batch's passages are through.
            None if env.kind == "position" => {
                if let Some(tracker) = env.body.get("device").and_then(Value::as_str) {
                    state.positions.push(positions::Fixes {
                        tracker: tracker.to_string(),
                        fixes: fixes_of(&env.body),
                        source: format!("post:{}", env.post),
                        cause: env.id.clone(),
                    });
                }
            }
            None => {}
        }
        Ok(Outcome::Accepted)
    }
}

impl Verifier {
    /// Checks a batch, split over the machine's cores when it is large enough to pay.
    pub fn check_all(&self, batch: &[Message], now_ms: i64) -> Verified {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores < 2 || batch.len() < 64 {
            return Verified(self.check_part(batch, now_ms));
        }
        let per = batch.len().div_ceil(cores);
        Verified(std::thread::scope(|scope| {
            let parts: Vec<_> = batch
                .chunks(per)
                .map(|part| scope.spawn(move || self.check_part(part, now_ms)))
                .collect();
            parts
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        }))
    }

    /// Checks messages on this thread: each parsed, their signatures checked together in
    /// groups of [`SIGNATURE_GROUP`] ([`verify_batch`]), then the rest.
    fn check_part(&self, part: &[Message], now_ms: i64) -> Vec<Result<Checked, Refusal>> {
        let mut out: Vec<Option<Result<Checked, Refusal>>> = Vec::with_capacity(part.len());
        let mut signed = Vec::new();
        for (i, m) in part.iter().enumerate() {
            match self.parse(m) {
                Step::Done(r) => out.push(Some(r)),
                Step::Sign(s, key) => {
                    out.push(None);
                    signed.push((i, Some(s), key));
                }
            }
        }
        for group in signed.chunks_mut(SIGNATURE_GROUP) {
            let items = group
                .iter_mut()
                .filter_map(|(_, s, key)| s.take().map(|s| (s, *key)))
                .collect();
            for ((i, _, _), r) in group.iter().zip(verify_batch(items)) {
                let m = &part[*i];
                out[*i] = Some(match r {
                    Ok(env) => self.after(m, env, now_ms),
                    Err(e) => Err(Refusal::of(
                        m,
                        post_of(&m.topic).map(|(p, _)| p),
                        format!("bad signature: {e}"),
                    )),
                });
            }
        }
        out.into_iter()
            .map(|r| r.expect("every message checked"))
            .collect()
    }

    /// A message's checks up to its signature: topic, size, status, known post, envelope.
    fn parse(&self, m: &Message) -> Step {
        match self.parse_or_refuse(m) {
            Ok(step) => step,
            Err(r) => Step::Done(Err(r)),
        }
    }

    fn parse_or_refuse(&self, m: &Message) -> Result<Step, Refusal> {
        let refuse = |post: Option<&str>, reason: String| Refusal::of(m, post, reason);
        let (post, kind) = topic_of(m)?;
        if m.payload.len() > MAX_PAYLOAD {
            return Err(refuse(
                Some(post),
                format!(
                    "oversized: {} bytes, at most {MAX_PAYLOAD}",
                    m.payload.len()
                ),
            ));
        }
        match kind {
            "status" => {
                // The appliance's retained `{"state": "online", …}` (its last will says
                // `offline`); a bare word is taken too.
                let state = serde_json::from_slice::<Value>(&m.payload)
                    .ok()
                    .and_then(|v| v.get("state").and_then(Value::as_str).map(str::to_string))
                    .or_else(|| std::str::from_utf8(&m.payload).ok().map(str::to_string));
                let link = match state.as_deref() {
                    Some("online") => "online",
                    Some("offline") => "offline",
                    Some("") => "unknown",
                    _ => {
                        return Err(refuse(
                            Some(post),
                            "malformed: status is not online or offline".into(),
                        ))
                    }
                };
                if !self.keys.contains_key(post) {
                    return Ok(Step::Done(Ok(Checked::Ignored)));
                }
                return Ok(Step::Done(Ok(Checked::Link(
                    post.to_string(),
                    link.to_string(),
                ))));
            }
            "key" => return Ok(Step::Done(Ok(Checked::Ignored))),
            _ => {}
        }
        let Some(key) = self.keys.get(post) else {
            return Err(refuse(
                Some(post),
                format!("unknown post: {post} is not in the registry"),
            ));
        };
        let signed = Envelope::parse_signed(&m.payload).map_err(|e| match e {
            EnvelopeError::Json(j) => refuse(Some(post), format!("malformed: {j}")),
            other => refuse(Some(post), format!("bad signature: {other}")),
        })?;
        Ok(Step::Sign(signed, *key))
    }

    /// A message's checks after its signature: the envelope against its topic, schema, seq,
    /// time.
    fn after(&self, m: &Message, env: Envelope, now_ms: i64) -> Result<Checked, Refusal> {
        let refuse = |post: Option<&str>, reason: String| Refusal::of(m, post, reason);
        let (post, kind) = topic_of(m)?;
        if env.post != post {
            return Err(refuse(
                Some(post),
                format!("post mismatch: envelope says {}", env.post),
            ));
        }
        if env.kind != kind {
            return Err(refuse(
                Some(post),
                format!("type mismatch: envelope says {}", env.kind),
            ));
        }
        if env.schema != SCHEMA {
            return Err(refuse(Some(post), format!("wrong schema: {}", env.schema)));
        }
        if env.seq == 0 || env.seq > i64::MAX as u64 {
            return Err(refuse(
                Some(post),
                format!("malformed: seq {} out of range", env.seq),
            ));
        }
        let time_ms = OffsetDateTime::parse(&env.time, &Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .map_err(|e| refuse(Some(post), format!("malformed: time {:?}: {e}", env.time)))?;
        if time_ms > now_ms + self.max_clock_skew_ms {
            return Err(refuse(
                Some(post),
                format!(
                    "from the future: time {} is {} s ahead of central's clock",
                    env.time,
                    (time_ms - now_ms) / 1000
                ),
            ));
        }
        Ok(Checked::Event(env, time_ms))
    }
}

/// Whether an event may change the transit it names: a passage, an override, an alert whose
/// rule is a transit's flag.
fn names_a_transit(env: &Envelope) -> bool {
    match env.kind.as_str() {
        "passage" | "override" => true,
        "alert" => env
            .body
            .get("rule")
            .and_then(Value::as_str)
            .and_then(Flag::of_rule)
            .is_some(),
        _ => false,
    }
}

/// The MRN an event's body names, if it is one.
fn mrn_of(env: &Envelope) -> Option<&str> {
    env.body
        .get("mrn")
        .and_then(Value::as_str)
        .filter(|s| acsgd_contract::mrn::valid_mrn(s))
}

/// The valid, timed fixes of a `position` event's body.
fn fixes_of(body: &Value) -> Vec<positions::Fix> {
    let all = body.get("fixes").and_then(Value::as_array);
    all.into_iter()
        .flatten()
        .filter(|f| f.get("valid").and_then(Value::as_bool) == Some(true))
        .filter_map(|f| {
            let time = f.get("time").and_then(Value::as_str)?;
            let t = OffsetDateTime::parse(time, &Rfc3339).ok()?;
            let lat = f.get("lat").and_then(Value::as_f64)?;
            let lon = f.get("lon").and_then(Value::as_f64)?;
            ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then(|| {
                positions::Fix {
                    time_ms: (t.unix_timestamp_nanos() / 1_000_000) as i64,
                    lat,
                    lon,
                    speed: f.get("speed").and_then(Value::as_f64),
                }
            })
        })
        .collect()
}

/// The plate reads of a passage, under the key transits' plates are indexed by.
fn read_plates(env: &Envelope) -> Vec<String> {
    let reads = env.body.get("plates").and_then(Value::as_array);
    let mut keys: Vec<String> = reads
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("text").and_then(Value::as_str))
        .map(acsgd_contract::plate::index_key)
        .filter(|k| k.len() >= 4)
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Applies a journaled event to the transit it names.
async fn apply(
    conn: &mut AnyConnection,
    env: &Envelope,
    mrn: &str,
    time_ms: i64,
    now_ms: i64,
    transits: &mut Transits,
) -> Result<(), StoreError> {
    let body = &env.body;
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    let sighting = match env.kind.as_str() {
        "passage" => Some(Seen::Passage {
            channel: text("channel").to_string(),
        }),
        "override" if text("from") == "red" && matches!(text("to"), "green" | "yellow") => {
            Some(Seen::Release)
        }
        "alert" => {
            if let Some(flag) = Flag::of_rule(text("rule")) {
                let note = format!("alert {} at {}", text("rule"), env.post);
                let flagged = transits.get(conn, mrn).await?.and_then(|(t, _)| {
                    Some((t.version, store::flagged(t, flag, true, &env.id, &note)?))
                });
                if let Some((was, (next, change))) = flagged {
                    transits.write(next, was);
                    transits.log(conn, mrn, &change, now_ms).await?;
                }
            }
            None
        }
        _ => None,
    };
    let Some(seen) = sighting else {
        return Ok(());
    };
    let Some((stored, all)) = transits.get(conn, mrn).await? else {
        return Ok(()); // not declared through central (yet): journaled, nothing to follow
    };
    if all.iter().any(|x| x.event_id == env.id) {
        return Ok(()); // already a sighting of it (a passage matched twice)
    }
    let s = Sighting {
        event_id: env.id.clone(),
        post: env.post.clone(),
        time_ms,
        seen,
    };
    all.push(s.clone());
    let stored = stored.clone();
    let settled = tracking::settle(&stored, all, &s);
    transits.new_sightings.push((mrn.to_string(), s));
    let Some((next, changes)) = settled else {
        return Ok(());
    };
    transits.write(next.clone(), stored.version);
    transits.moved.insert(mrn.to_string());
    for c in &changes {
        transits.log(conn, mrn, c, now_ms).await?;
    }
    if matches!(stored.state, State::Overdue | State::Enquiry) && next.leg > stored.leg {
        let note = changes.first().map(|c| c.note.as_str()).unwrap_or("");
        store::clear_alert(conn, &format!("overdue:{mrn}:{}", stored.leg), note, now_ms).await?;
    }
    if next.state == State::Diverted && stored.state != State::Diverted {
        store::raise_alert(
            conn,
            &OperatorAlert {
                id: format!("diverted:{mrn}:{}", env.id),
                kind: "diverted".into(),
                post: Some(env.post.clone()),
                mrn: Some(mrn.to_string()),
                cause: env.id.clone(),
                text: format!("{mrn} seen at {}, which is not on its itinerary", env.post),
            },
            now_ms,
        )
        .await?;
    }
    for (post, on) in routing::changed(&stored, &next) {
        transits.routes.insert((post, mrn.to_string()), on);
    }
    Ok(())
}

/// The transits a batch's events name, read once for the batch (the ones its passages,
/// overrides and alerts name by MRN up front, others as they come) and kept current as the
/// batch changes them. What the batch changes is written together at the end of the batch
/// ([`Transits::flush`]): the transits (each checked against the version it read), their
/// numbered changes, new sightings and routes. Nothing in the batch reads those rows back
/// before: plate matching reads only whether a transit is closed or cancelled, which no
/// post's event does.
#[derive(Default)]
struct Transits {
    /// By MRN: the transit and its sightings, or `None` when no such transit is stored.
    known: HashMap<String, Option<(Transit, Vec<Sighting>)>>,
    new_sightings: Vec<(String, Sighting)>,
    /// The transits the batch moved: a fix that came with them is still theirs.
    moved: HashSet<String>,
    /// The subscriptions that may want the batch's changes, read at the first change.
    candidates: Option<notify::Candidates>,
    /// The routes the batch's changes decided, the last state of each, written at the end.
    routes: BTreeMap<(String, String), bool>,
    /// The transits the batch changed, with the version each had when it was read.
    was: BTreeMap<String, i64>,
    /// The number of each transit's last journaled change, as far as the batch knows.
    last_n: HashMap<String, i64>,
    /// The changes to journal: (mrn, n, at_ms, change).
    logs: Vec<(String, i64, i64, Change)>,
}

impl Transits {
    async fn prefetch(
        &mut self,
        conn: &mut AnyConnection,
        mrns: &[&str],
    ) -> Result<(), StoreError> {
        let mut found = store::load_transits(conn, mrns).await?;
        for m in mrns {
            let (known, last) = match found.remove(*m) {
                Some((t, seen, last)) => (Some((t, seen)), last),
                None => (None, 0),
            };
            self.known.insert(m.to_string(), known);
            self.last_n.insert(m.to_string(), last);
        }
        Ok(())
    }

    /// The batch changed a transit it read at version `was` to `next`.
    fn write(&mut self, next: Transit, was: i64) {
        self.was.entry(next.mrn.clone()).or_insert(was);
        self.changed(next);
    }

    /// Numbers a change of a known transit and queues its notifications (now: they are keyed
    /// by the number); the change itself is journaled at the end of the batch.
    async fn log(
        &mut self,
        conn: &mut AnyConnection,
        mrn: &str,
        c: &Change,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let n = match self.last_n.get_mut(mrn) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => return Err(store::corrupt("transit log", format!("{mrn} was not read"))),
        };
        self.logs.push((mrn.to_string(), n, at_ms, c.clone()));
        let subs = self.candidates(conn).await?.of(mrn);
        notify::queue_change(conn, mrn, n, c, at_ms, subs).await
    }

    /// Writes what the batch changed.
    async fn flush(&mut self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        let rows: Vec<(&Transit, i64)> = self
            .was
            .iter()
            .filter_map(|(mrn, was)| match self.known.get(mrn) {
                Some(Some((t, _))) => Some((t, *was)),
                _ => None,
            })
            .collect();
        if !store::write_transits(conn, &rows).await? {
            return Err(store::conflict("transit", "one the batch changed"));
        }
        store::insert_logs(conn, &self.logs).await?;
        store::insert_sightings(conn, &self.new_sightings).await?;
        routing::set_many(conn, &self.routes).await
    }

    async fn get(
        &mut self,
        conn: &mut AnyConnection,
        mrn: &str,
    ) -> Result<Option<(&Transit, &mut Vec<Sighting>)>, StoreError> {
        if !self.known.contains_key(mrn) {
            self.prefetch(conn, &[mrn]).await?;
        }
        Ok(self
            .known
            .get_mut(mrn)
            .and_then(Option::as_mut)
            .map(|(t, s)| (&*t, s)))
    }

    /// The subscriptions for the transits known so far (read once; a transit met later
    /// reads its own).
    async fn candidates(
        &mut self,
        conn: &mut AnyConnection,
    ) -> Result<&notify::Candidates, StoreError> {
        if self.candidates.is_none() {
            let mrns: Vec<&str> = self.known.keys().map(String::as_str).collect();
            self.candidates = Some(notify::Candidates::read(conn, &mrns).await?);
        }
        Ok(self.candidates.as_ref().expect("just read"))
    }

    /// The batch wrote `next`.
    fn changed(&mut self, next: Transit) {
        if let Some(Some((t, _))) = self.known.get_mut(&next.mrn) {
            *t = next;
        }
    }
}

/// What a batch gathers on its way through.
struct BatchState {
    /// Ids the batch's journal insert took, not yet claimed by their first occurrence.
    fresh: HashSet<String>,
    /// Accepted seqs per post, noted together at the end.
    seqs: HashMap<String, Vec<i64>>,
    /// The position events' fixes, judged together at the end.
    positions: Vec<positions::Fixes>,
    /// The transits its events name.
    transits: Transits,
}

/// Where a message's check stands before its signature.
// Lives only within one `check_part` call, next to the message it describes: boxing would
// only add an allocation per message.
#[allow(clippy::large_enum_variant)]
enum Step {
    Done(Result<Checked, Refusal>),
    Sign(Signed, VerifyingKey),
}

pub(crate) enum Checked {
    Event(Envelope, i64),
    Link(String, String),
    Ignored,
}

pub(crate) struct Refusal {
    topic: String,
    post: Option<String>,
    reason: String,
}

impl Refusal {
    fn of(m: &Message, post: Option<&str>, reason: String) -> Refusal {
        Refusal {
            topic: m.topic.clone(),
            post: post.map(str::to_string),
            reason,
        }
    }
}

/// The post and the type a message's topic names, or why it is refused.
fn topic_of(m: &Message) -> Result<(&str, &str), Refusal> {
    post_of(&m.topic).ok_or_else(|| {
        Refusal::of(
            m,
            None,
            format!("topic {} is not acsgd/v1/{{post}}/{{type}}", m.topic),
        )
    })
}

async fn quarantine_one(
    conn: &mut AnyConnection,
    r: &Refusal,
    payload: &[u8],
    now_ms: i64,
) -> Result<(), StoreError> {
    // Keep at most 64 kB of what was refused: enough to see what it was.
    let kept = &payload[..payload.len().min(64 * 1024)];
    sqlx::query(
        "INSERT INTO quarantine (id, received_ms, topic, post, reason, payload) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(now_ms)
    .bind(&r.topic)
    .bind(r.post.clone())
    .bind(&r.reason)
    .bind(String::from_utf8_lossy(kept).into_owned())
    .execute(&mut *conn)
    .await?;
    let head = r.reason.split(':').next().unwrap_or("refused");
    // One open alert per post and kind of refusal, not one per message.
    let post = r.post.as_deref().unwrap_or("?");
    store::raise_alert(
        conn,
        &OperatorAlert {
            id: format!("quarantine:{post}:{head}"),
            kind: "quarantine".into(),
            post: r.post.clone(),
            mrn: None,
            cause: r.topic.clone(),
            text: format!("{post}: {}", r.reason),
        },
        now_ms,
    )
    .await?;
    tracing::warn!(topic = %r.topic, reason = %r.reason, "message quarantined");
    Ok(())
}

/// `acsgd/v1/{post}/{type}` → (post, type), for a valid post id.
pub fn post_of(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix("acsgd/v1/")?;
    let (post, kind) = rest.split_once('/')?;
    (acsgd_contract::declaration::valid_post_id(post) && !kind.is_empty() && !kind.contains('/'))
        .then_some((post, kind))
}
