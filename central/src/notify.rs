//! Notifications: who is told about which transits and posts (subscriptions), the durable
//! outbox of what is to be told, and the notifier that sends it.
//!
//! * **Subscriptions** (`POST /api/subscriptions`): a recipient (carrier, broker, operator,
//!   another agency), a channel (`email`, `webhook`, `bot`) and its address, a language
//!   (kk/ru/en/zh), and what: one MRN, the transits whose itinerary has one post (and that
//!   post's operator alerts), or everything; optionally only some kinds (`arrived`,
//!   `overdue`, …, `flag`, `alert`, `alert:{kind}`).
//! * **Queued with the change.** [`queue_change`] and [`queue_alert`] run inside the
//!   transaction that journals a transit's change or raises an operator alert, and write one
//!   `notification` row per matching subscription, keyed `{change or alert}/{subscription}`.
//!   So a change is queued exactly once per recipient and channel, or not at all when its
//!   transaction rolls back.
//! * **Sent by the notifier** ([`Notifier::step`]): due rows are claimed with a
//!   compare-and-set on their `next_ms` (a lease: two centrals never send the same row at
//!   once, and a central that died mid-send leaves it to be retried after the lease), sent,
//!   and marked `sent` with the peer's answer. A failure is retried with exponential backoff
//!   (1 s doubling to 10 min); after `max_attempts` the row is `dead` (kept, listed at
//!   `GET /api/notifications?state=dead`) with an operator alert; a channel address that fails
//!   `alert_after` times in a row raises `notify:{channel}:{address}`, cleared by its next
//!   success. The only duplicate possible is a send whose peer took it while central died
//!   before recording it: it is sent again with the same key (webhook `Idempotency-Key`, email
//!   `Message-ID`) for the receiver to drop.
//! * **Late events are told, not dropped**: a notification carries when its cause was observed
//!   (event time) and when central received it, and says both when they are far apart.
//! * **Rate limit per subscription** (`rate_per_hour`): over it, rows wait (`next_ms` a minute
//!   on, noted) rather than being dropped, so a flapping flag cannot flood a carrier's phone.

pub mod channels;
pub mod text;

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{AnyConnection, Row};

use crate::store::{self, OperatorAlert, Store, StoreError};
use crate::tracking::Change;
use channels::{Channels, Outgoing};

pub use channels::{BotConfig, EmailConfig};

/// `[notify]` in central.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Attempts before a notification is a dead letter.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Failed attempts in a row to one address before operators are alerted.
    #[serde(default = "default_alert_after")]
    pub alert_after: u32,
    /// The default for a subscription that names none.
    #[serde(default = "default_rate")]
    pub rate_per_hour: u32,
    #[serde(default)]
    pub email: Option<EmailConfig>,
    #[serde(default)]
    pub bot: Option<BotConfig>,
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            max_attempts: default_max_attempts(),
            alert_after: default_alert_after(),
            rate_per_hour: default_rate(),
            email: None,
            bot: None,
        }
    }
}

fn default_max_attempts() -> u32 {
    8
}
fn default_alert_after() -> u32 {
    3
}
fn default_rate() -> u32 {
    30
}

pub const PARTIES: [&str; 4] = ["carrier", "broker", "operator", "agency"];
pub const CHANNELS: [&str; 3] = ["email", "webhook", "bot"];

/// A subscription as stored (the webhook's secret is shown once, when it is made).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subscription {
    #[serde(default)]
    pub id: String,
    pub recipient: String,
    pub party: String,
    pub channel: String,
    pub address: String,
    pub lang: String,
    #[serde(default)]
    pub mrn: Option<String>,
    #[serde(default)]
    pub post: Option<String>,
    /// Empty: every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub rate_per_hour: Option<u32>,
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
}

/// A notification row, as operators list them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NotificationRow {
    pub id: String,
    pub subscription: String,
    pub kind: String,
    pub mrn: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub next_ms: i64,
    pub last_error: Option<String>,
    pub sent_ms: Option<i64>,
    pub observed_ms: i64,
    pub received_ms: i64,
}

/// What a change is, for subscriptions' `kinds`: the state it entered, `flag`, or `note`.
fn change_kind(c: &Change) -> (&'static str, Option<String>) {
    if c.from != c.to || c.note == "declared" {
        return (c.to.as_str(), None);
    }
    match c
        .note
        .strip_prefix("flag ")
        .and_then(|r| r.split(':').next())
    {
        Some(flag) => ("flag", Some(flag.to_string())),
        None => ("note", None),
    }
}

fn wants(kinds: &str, kind: &str) -> bool {
    kinds.is_empty()
        || kinds
            .split(',')
            .any(|k| k == kind || (k == "alert" && kind.starts_with("alert:")))
}

/// A subscription that may match a change: (id, post, kinds).
pub(crate) type Candidate = (String, Option<String>, String);

/// The active subscriptions that may match the changes of a set of MRNs, read once (a batch
/// of events changes many transits; reading them per change was a statement each).
#[derive(Default)]
pub(crate) struct Candidates {
    any_mrn: Vec<Candidate>,
    by_mrn: HashMap<String, Vec<Candidate>>,
    covered: HashSet<String>,
}

impl Candidates {
    pub(crate) async fn read(
        conn: &mut AnyConnection,
        mrns: &[&str],
    ) -> Result<Candidates, StoreError> {
        let mut c = Candidates::default();
        let mut rows = Vec::new();
        if mrns.is_empty() {
            rows = sqlx::query(ANY_MRN_SUBSCRIPTIONS)
                .fetch_all(&mut *conn)
                .await?;
        }
        for (i, chunk) in mrns.chunks(store::rows_per_statement(conn, 1)).enumerate() {
            let sql = mrn_subscriptions(&store::placeholders(conn, 1, chunk.len()));
            let mut q = store::multi_row(conn, &sql);
            for m in chunk {
                q = q.bind(*m);
            }
            // Every chunk's rows hold those to every transit: the first's are taken (a row
            // that does not decode is kept, to fail below).
            rows.extend(
                q.fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .filter(|r| i == 0 || !matches!(r.try_get::<Option<String>, _>(3), Ok(None))),
            );
        }
        for r in &rows {
            let candidate = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            match r.try_get::<Option<String>, _>(3)? {
                None => c.any_mrn.push(candidate),
                Some(mrn) => c.by_mrn.entry(mrn).or_default().push(candidate),
            }
        }
        c.covered = mrns.iter().map(|m| m.to_string()).collect();
        Ok(c)
    }

    /// The candidates for `mrn`, or `None` when it was not among those read.
    pub(crate) fn of(&self, mrn: &str) -> Option<Vec<Candidate>> {
        self.covered.contains(mrn).then(|| {
            let mut all = self.any_mrn.clone();
            all.extend(self.by_mrn.get(mrn).into_iter().flatten().cloned());
            all
        })
    }
}

/// Subscriptions that may match: active, for this MRN or none.
async fn candidates(
    conn: &mut AnyConnection,
    mrn: Option<&str>,
) -> Result<Vec<Candidate>, StoreError> {
    let rows = sqlx::query(CANDIDATES)
        .bind(mrn.unwrap_or(""))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn insert(
    conn: &mut AnyConnection,
    id: &str,
    subscription: &str,
    kind: &str,
    mrn: Option<&str>,
    observed_ms: i64,
    received_ms: i64,
    payload: &Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO notification (id, subscription, kind, mrn, observed_ms, received_ms, payload, \
         state, attempts, next_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(subscription)
    .bind(kind)
    .bind(mrn.map(str::to_string))
    .bind(observed_ms)
    .bind(received_ms)
    .bind(payload.to_string())
    .bind(received_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Queues the notifications of a transit's journaled change `n` (in its transaction); `known`:
/// the subscriptions that may want it, when the caller has read them already.
pub(crate) async fn queue_change(
    conn: &mut AnyConnection,
    mrn: &str,
    n: i64,
    c: &Change,
    now_ms: i64,
    known: Option<Vec<Candidate>>,
) -> Result<(), StoreError> {
    let subs = match known {
        Some(subs) => subs,
        None => candidates(conn, Some(mrn)).await?,
    };
    if subs.is_empty() {
        return Ok(());
    }
    let (kind, flag) = change_kind(c);
    if kind == "note" {
        return Ok(());
    }
    // When and where it happened: the causing event's, or now for the scheduler and operators.
    let cause = sqlx::query("SELECT time_ms, post FROM journal WHERE id = $1")
        .bind(&c.cause)
        .fetch_optional(&mut *conn)
        .await?;
    let (observed_ms, post): (i64, Option<String>) = match cause {
        Some(r) => (r.try_get(0)?, Some(r.try_get(1)?)),
        None => (now_ms, None),
    };
    let mut itinerary: Option<BTreeSet<String>> = None;
    let payload = json!({"mrn": mrn, "from": c.from.as_str(), "to": c.to.as_str(), "note": c.note,
        "cause": c.cause, "flag": flag, "post": post});
    for (id, sub_post, kinds) in subs {
        if !wants(&kinds, kind) {
            continue;
        }
        if let Some(p) = &sub_post {
            if itinerary.is_none() {
                let t = store::load_transit(conn, mrn).await?;
                itinerary = Some(
                    t.map(|t| {
                        t.declaration
                            .itinerary
                            .into_iter()
                            .map(|s| s.post)
                            .collect()
                    })
                    .unwrap_or_default(),
                );
            }
            let on_route = itinerary.as_ref().is_some_and(|i| i.contains(p));
            if !on_route && post.as_deref() != Some(p.as_str()) {
                continue;
            }
        }
        let key = format!("{mrn}/{n}/{id}");
        insert(
            conn,
            &key,
            &id,
            kind,
            Some(mrn),
            observed_ms,
            now_ms,
            &payload,
        )
        .await?;
    }
    Ok(())
}

/// Queues the notifications of an operator alert just raised (in its transaction).
pub(crate) async fn queue_alert(
    conn: &mut AnyConnection,
    a: &OperatorAlert,
    now_ms: i64,
) -> Result<(), StoreError> {
    let subs = candidates(conn, a.mrn.as_deref()).await?;
    let kind = format!("alert:{}", a.kind);
    let payload = json!({"mrn": a.mrn, "post": a.post, "text": a.text, "alert": a.id});
    for (id, sub_post, kinds) in subs {
        if !wants(&kinds, &kind)
            || sub_post
                .as_ref()
                .is_some_and(|p| a.post.as_ref() != Some(p))
        {
            continue;
        }
        let key = format!("alert/{}/{id}", a.id);
        insert(
            conn,
            &key,
            &id,
            &kind,
            a.mrn.as_deref(),
            now_ms,
            now_ms,
            &payload,
        )
        .await?;
    }
    Ok(())
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("subscription: {0}")]
pub struct Invalid(pub String);

/// The subscriptions to every transit's events (`Candidates` of a batch naming no transit),
/// those to every transit's and to some transits' (the statement made for their list, one
/// round trip a batch), and those to one transit's or all (`candidates`): read, with every
/// batch of events, from index `subscription_mrn` (migration 8), not among every transit's
/// subscriptions ever made.
pub(crate) const ANY_MRN_SUBSCRIPTIONS: &str =
    "SELECT id, post, kinds, mrn FROM subscription WHERE active = 1 AND mrn IS NULL";
pub(crate) fn mrn_subscriptions(list: &str) -> String {
    format!(
        "SELECT id, post, kinds, mrn FROM subscription \
         WHERE active = 1 AND (mrn IS NULL OR mrn IN ({list}))"
    )
}
pub(crate) const CANDIDATES: &str =
    "SELECT id, post, kinds FROM subscription WHERE active = 1 AND (mrn IS NULL OR mrn = $1)";

/// The sender's reads: what is due (index `notification_due`), when the next is due, and how
/// many a subscription was sent in the last hour (index `notification_sent`).
pub(crate) const DUE: &str = "SELECT n.id, n.kind, n.payload, n.observed_ms, n.received_ms, \
     n.attempts, n.next_ms, s.id, s.channel, s.address, s.lang, s.secret, s.rate_per_hour, \
     s.recipient FROM notification n JOIN subscription s ON s.id = n.subscription \
     WHERE n.state = 'pending' AND n.next_ms <= $1 ORDER BY n.next_ms, n.id LIMIT 100";
pub(crate) const NEXT_DUE: &str = "SELECT MIN(next_ms) FROM notification WHERE state = 'pending'";
pub(crate) const SENT_LATELY: &str =
    "SELECT COUNT(*) FROM notification WHERE subscription = $1 AND sent_ms > $2";

/// Notifications in a state, newest first: read from index `notification_listed` (migration 8),
/// however many were sent before them.
pub(crate) const NOTIFICATIONS: &str = "SELECT id, subscription, kind, mrn, state, attempts, \
     next_ms, last_error, sent_ms, observed_ms, received_ms FROM notification WHERE state = $1 \
     ORDER BY received_ms DESC, id LIMIT $2";

impl Store {
    /// Checks and stores a subscription; returns it with its id and (webhook) secret.
    pub async fn subscribe(
        &self,
        mut s: Subscription,
        channels_ready: &(dyn Fn(&str) -> bool + Sync),
        default_rate: u32,
        by: &str,
        now_ms: i64,
    ) -> Result<Result<Subscription, Invalid>, StoreError> {
        let bad = |m: String| Ok(Err(Invalid(m)));
        if s.recipient.trim().is_empty() || s.recipient.len() > 200 {
            return bad("recipient: a name of 1 to 200 characters".into());
        }
        if !PARTIES.contains(&s.party.as_str()) {
            return bad(format!(
                "party: {:?} is not one of {}",
                s.party,
                PARTIES.join(", ")
            ));
        }
        if !CHANNELS.contains(&s.channel.as_str()) {
            return bad(format!(
                "channel: {:?} is not one of {}",
                s.channel,
                CHANNELS.join(", ")
            ));
        }
        if !channels_ready(&s.channel) {
            return bad(format!(
                "channel: {} is not configured at central ([notify.{}])",
                s.channel, s.channel
            ));
        }
        if !text::LANGS.contains(&s.lang.as_str()) {
            return bad(format!("lang: {:?} is not one of kk, ru, en, zh", s.lang));
        }
        let address_ok = match s.channel.as_str() {
            "email" => s.address.parse::<lettre::message::Mailbox>().is_ok(),
            "webhook" => reqwest::Url::parse(&s.address)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some()),
            _ => {
                !s.address.is_empty()
                    && s.address.len() <= 64
                    && !s.address.contains(char::is_whitespace)
            }
        };
        if !address_ok {
            return bad(format!(
                "address: {:?} is not a {} address",
                s.address, s.channel
            ));
        }
        if let Some(m) = &s.mrn {
            if !acsgd_contract::mrn::valid_mrn(m) {
                return bad(format!("mrn: {m:?} is not an MRN"));
            }
        }
        if let Some(p) = &s.post {
            if !self.posts().await?.iter().any(|x| &x.id == p) {
                return bad(format!("post: {p} is not a registered post"));
            }
        }
        for k in &s.kinds {
            let known = crate::tracking::State::parse(k).is_some()
                || matches!(k.as_str(), "flag" | "alert")
                || k.strip_prefix("alert:").is_some_and(|a| !a.is_empty());
            if !known {
                return bad(format!(
                    "kinds: {k:?} is not a state, flag, alert or alert:KIND"
                ));
            }
        }
        s.id = uuid::Uuid::new_v4().to_string();
        s.secret = (s.channel == "webhook").then(|| {
            let mut raw = [0u8; 24];
            getrandom::getrandom(&mut raw).expect("the OS has randomness");
            acsgd_contract::envelope::to_hex(&raw)
        });
        let rate = s.rate_per_hour.unwrap_or(default_rate).max(1);
        s.rate_per_hour = Some(rate);
        sqlx::query(
            "INSERT INTO subscription (id, recipient, party, channel, address, lang, mrn, post, kinds, \
             secret, rate_per_hour, active, created_ms, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $13)",
        )
        .bind(&s.id)
        .bind(&s.recipient)
        .bind(&s.party)
        .bind(&s.channel)
        .bind(&s.address)
        .bind(&s.lang)
        .bind(s.mrn.clone())
        .bind(s.post.clone())
        .bind(s.kinds.join(","))
        .bind(s.secret.clone())
        .bind(i64::from(rate))
        .bind(now_ms)
        .bind(by)
        .execute(self.pool())
        .await?;
        Ok(Ok(s))
    }

    /// The active subscriptions (without their secrets).
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, recipient, party, channel, address, lang, mrn, post, kinds, rate_per_hour \
             FROM subscription WHERE active = 1 ORDER BY created_ms, id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let kinds: String = r.try_get(8)?;
                let rate: i64 = r.try_get(9)?;
                Ok(Subscription {
                    id: r.try_get(0)?,
                    recipient: r.try_get(1)?,
                    party: r.try_get(2)?,
                    channel: r.try_get(3)?,
                    address: r.try_get(4)?,
                    lang: r.try_get(5)?,
                    mrn: r.try_get(6)?,
                    post: r.try_get(7)?,
                    kinds: kinds
                        .split(',')
                        .filter(|k| !k.is_empty())
                        .map(str::to_string)
                        .collect(),
                    rate_per_hour: u32::try_from(rate).ok(),
                    secret: None,
                })
            })
            .collect()
    }

    /// Ends a subscription; what it still had queued is withdrawn (kept, marked so).
    pub async fn unsubscribe(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("UPDATE subscription SET active = 0 WHERE id = $1 AND active = 1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE notification SET state = 'withdrawn' WHERE subscription = $1 AND state = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Notifications in a state (`pending`, `sent`, `dead`, `withdrawn`), newest first.
    pub async fn notifications(
        &self,
        state: &str,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let rows = sqlx::query(NOTIFICATIONS)
            .bind(state)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(NotificationRow {
                    id: r.try_get(0)?,
                    subscription: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    mrn: r.try_get(3)?,
                    state: r.try_get(4)?,
                    attempts: r.try_get(5)?,
                    next_ms: r.try_get(6)?,
                    last_error: r.try_get(7)?,
                    sent_ms: r.try_get(8)?,
                    observed_ms: r.try_get(9)?,
                    received_ms: r.try_get(10)?,
                })
            })
            .collect()
    }
}

/// How long a claimed row is left to its sender before another may retry it (longer than a
/// send may take: the channels give up after 20 s).
const LEASE_MS: i64 = 30_000;
/// The longest wait between two attempts.
const MAX_BACKOFF_MS: i64 = 600_000;
/// How long a row over its subscription's rate waits before it is looked at again.
const RATE_WAIT_MS: i64 = 60_000;

/// The wait after the `attempts`-th failed attempt: 1 s, 2 s, 4 s, … up to 10 min.
pub fn backoff_ms(attempts: i64) -> i64 {
    (1000i64 << attempts.clamp(1, 20).saturating_sub(1)).min(MAX_BACKOFF_MS)
}

/// What one [`Notifier::step`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stepped {
    pub sent: usize,
    pub failed: usize,
    pub dead: usize,
    pub deferred: usize,
}

/// Sends what is due.
pub struct Notifier {
    store: Store,
    channels: Channels,
    config: NotifyConfig,
    /// Set when the service stops: [`Notifier::step`] finishes the send in flight (and
    /// records it) and starts no other.
    stopping: std::sync::atomic::AtomicBool,
}

impl Notifier {
    pub fn new(store: Store, config: NotifyConfig) -> Result<Notifier, String> {
        let channels = Channels::new(config.email.as_ref(), config.bot.as_ref())?;
        Ok(Notifier {
            store,
            channels,
            config,
            stopping: Default::default(),
        })
    }

    pub fn channel_ready(&self, channel: &str) -> bool {
        self.channels.has(channel)
    }

    /// Asks [`Notifier::step`] to stop after the send in flight.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends every row due at `now_ms` (up to 100), one at a time.
    pub async fn step(&self, now_ms: i64) -> Result<Stepped, StoreError> {
        let pool = self.store.pool();
        let rows = sqlx::query(DUE).bind(now_ms).fetch_all(pool).await?;
        let mut out = Stepped::default();
        for r in rows {
            if self.stopping() {
                break;
            }
            let id: String = r.try_get(0)?;
            let kind: String = r.try_get(1)?;
            let payload: String = r.try_get(2)?;
            let observed_ms: i64 = r.try_get(3)?;
            let received_ms: i64 = r.try_get(4)?;
            let attempts: i64 = r.try_get(5)?;
            let next_ms: i64 = r.try_get(6)?;
            let sub: String = r.try_get(7)?;
            let channel: String = r.try_get(8)?;
            let address: String = r.try_get(9)?;
            let lang: String = r.try_get(10)?;
            let secret: Option<String> = r.try_get(11)?;
            let rate: i64 = r.try_get(12)?;
            let recipient: String = r.try_get(13)?;
            // Over the subscription's rate: it waits, noted; nothing is dropped.
            let recent: i64 = sqlx::query(SENT_LATELY)
                .bind(&sub)
                .bind(now_ms - 3_600_000)
                .fetch_one(pool)
                .await?
                .try_get(0)?;
            if recent >= rate {
                sqlx::query(
                    "UPDATE notification SET next_ms = $1, last_error = $2 WHERE id = $3 AND next_ms = $4",
                )
                .bind(now_ms + RATE_WAIT_MS)
                .bind(format!("waiting: {recipient} had {recent} notifications in the last hour (rate {rate})"))
                .bind(&id)
                .bind(next_ms)
                .execute(pool)
                .await?;
                out.deferred += 1;
                continue;
            }
            // Claim it: whoever moves next_ms first sends it.
            let claimed = sqlx::query(
                "UPDATE notification SET next_ms = $1 WHERE id = $2 AND state = 'pending' AND next_ms = $3",
            )
            .bind(now_ms + LEASE_MS)
            .bind(&id)
            .bind(next_ms)
            .execute(pool)
            .await?;
            if claimed.rows_affected() != 1 {
                continue;
            }
            let p: Value = serde_json::from_str(&payload).unwrap_or_default();
            let (subject, body) = text::render(&lang, &kind, &p, received_ms, observed_ms);
            let late = received_ms - observed_ms > text::LATE_MS;
            let document = json!({
                "id": id, "kind": kind, "mrn": p.get("mrn"), "from": p.get("from"), "to": p.get("to"),
                "flag": p.get("flag"), "post": p.get("post"), "note": p.get("note"), "alert": p.get("text"),
                "observed_at": crate::tracking::time_text(observed_ms),
                "received_at": crate::tracking::time_text(received_ms), "late": late,
                "lang": lang, "subject": subject, "text": body,
            });
            let sent = self
                .channels
                .send(
                    &channel,
                    &Outgoing {
                        id: &id,
                        address: &address,
                        subject: &subject,
                        body: &body,
                        document: &document,
                        secret: secret.as_deref(),
                    },
                )
                .await;
            let alert_id = format!("notify:{channel}:{address}");
            let mut tx = pool.begin().await?;
            match sent {
                Ok(answer) => {
                    sqlx::query(
                        "UPDATE notification SET state = 'sent', sent_ms = $1, attempts = attempts + 1, \
                         response = $2, last_error = NULL WHERE id = $3",
                    )
                    .bind(now_ms)
                    .bind(answer)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                    store::clear_alert(&mut tx, &alert_id, "delivered again", now_ms).await?;
                    out.sent += 1;
                }
                Err(e) => {
                    let tries = attempts + 1;
                    let why = e.to_string();
                    tracing::warn!(%id, %channel, %address, tries, error = %why, "notification not delivered");
                    let dead = tries >= i64::from(self.config.max_attempts);
                    sqlx::query(
                        "UPDATE notification SET state = $1, attempts = $2, next_ms = $3, last_error = $4 WHERE id = $5",
                    )
                    .bind(if dead { "dead" } else { "pending" })
                    .bind(tries)
                    .bind(now_ms + backoff_ms(tries))
                    .bind(&why)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                    if tries >= i64::from(self.config.alert_after) {
                        store::raise_alert(
                            &mut tx,
                            &OperatorAlert {
                                id: alert_id,
                                kind: "notify".into(),
                                post: None,
                                mrn: None,
                                cause: id.clone(),
                                text: format!(
                                    "{channel} to {recipient} ({address}) keeps failing: {why}"
                                ),
                            },
                            now_ms,
                        )
                        .await?;
                    }
                    if dead {
                        store::raise_alert(
                            &mut tx,
                            &OperatorAlert {
                                id: format!("notify-dead:{id}"),
                                kind: "notify_dead".into(),
                                post: None,
                                mrn: p.get("mrn").and_then(Value::as_str).map(str::to_string),
                                cause: id.clone(),
                                text: format!(
                                    "a {kind} notification to {recipient} by {channel} was given up after {tries} attempts: {why}"
                                ),
                            },
                            now_ms,
                        )
                        .await?;
                        out.dead += 1;
                    } else {
                        out.failed += 1;
                    }
                }
            }
            tx.commit().await?;
        }
        Ok(out)
    }

    /// When the next row is due (for the service's loop to sleep until).
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let r = sqlx::query(NEXT_DUE).fetch_one(self.store.pool()).await?;
        Ok(r.try_get::<Option<i64>, _>(0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::State;

    #[test]
    fn backoff_doubles_to_ten_minutes() {
        let waits: Vec<i64> = (1..=12).map(backoff_ms).collect();
        assert_eq!(&waits[..4], &[1000, 2000, 4000, 8000]);
        assert_eq!(waits[11], MAX_BACKOFF_MS);
    }

    #[test]
    fn changes_are_kinds() {
        let c = |from, to, note: &str| Change {
            from,
            to,
            cause: "x".into(),
            note: note.into(),
        };
        assert_eq!(
            change_kind(&c(State::Departed, State::Overdue, "late")).0,
            "overdue"
        );
        assert_eq!(
            change_kind(&c(
                State::Diverted,
                State::Diverted,
                "flag off_itinerary: seen at x"
            )),
            ("flag", Some("off_itinerary".into()))
        );
        assert_eq!(
            change_kind(&c(State::Declared, State::Declared, "declared")).0,
            "declared"
        );
        assert!(wants("", "alert:gap"));
        assert!(wants("arrived,alert", "alert:gap"));
        assert!(!wants("arrived", "overdue"));
    }
}
