//! Positions between posts: what a transit's tracker fixes say about it, judged against its
//! declared corridor. The judgement is a fold of the fixes in fix time ([`Fold`]), kept with
//! the transit's track so that a fix newer than the ones before extends it; a fix that arrives
//! late or out of order makes the stored fixes be folded again, so it is judged where it
//! belongs, not dropped. The scheduler asks [`silent`] with the wall clock.
//!
//! * **Route deviation**, with hysteresis: raised when `fixes` consecutive fixes, or fixes for
//!   `seconds`, lie farther than the corridor's `width_m` from its line; cleared only by a fix
//!   within 80 % of `width_m`, so a truck riding the edge does not flap.
//! * **Stopped too long**: fixes under 5 km/h (or, without speed, within 100 m of each other)
//!   spanning more than `stop_max_s`; cleared by the next moving fix.
//! * **Tracker silent**: no fix for `silent_after_s` while the transit is on the road.
//!
//! [`apply_batch`] stores a batch's fixes for every open transit that declares their tracker
//! and raises or clears the flags in the same transaction (journaled like every change, so
//! notifications follow), each event judged in turn; only the fixes clear what the fixes
//! raised. A judgement from the history reads the transit's last [`JUDGED_FIXES`] fixes, so
//! its cost stays bounded on a long transit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use acsgd_contract::declaration::Corridor;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use crate::store::{self, Store, StoreError};
use crate::tracking::Flag;

/// `[positions]` in central.toml: the judging thresholds and the seal operator's feed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionsConfig {
    /// Where central takes the seal operator's EGTS retranslation feed (none: not at all).
    #[serde(default)]
    pub egts_listen: Option<std::net::SocketAddr>,
    #[serde(default = "default_fixes")]
    pub deviation_fixes: u32,
    #[serde(default = "default_deviation_s")]
    pub deviation_s: u32,
    #[serde(default = "default_stop_max_s")]
    pub stop_max_s: u32,
    #[serde(default = "default_silent_after_s")]
    pub silent_after_s: u32,
}

impl Default for PositionsConfig {
    fn default() -> PositionsConfig {
        PositionsConfig {
            egts_listen: None,
            deviation_fixes: default_fixes(),
            deviation_s: default_deviation_s(),
            stop_max_s: default_stop_max_s(),
            silent_after_s: default_silent_after_s(),
        }
    }
}

fn default_fixes() -> u32 {
    3
}
fn default_deviation_s() -> u32 {
    120
}
fn default_stop_max_s() -> u32 {
    4 * 3600
}
fn default_silent_after_s() -> u32 {
    3600
}

/// A tracker fix as judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    pub time_ms: i64,
    pub lat: f64,
    pub lon: f64,
    /// km/h, where the tracker says.
    pub speed: Option<f64>,
}

/// What the fixes say, as of the last one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Verdict {
    /// Off the corridor, since the first fix of the run that made it so.
    pub deviating_since: Option<i64>,
    /// The farthest from the corridor's line in that run, metres.
    pub farthest_m: f64,
    /// Stopped too long, since the first fix of the stop.
    pub stopped_since: Option<i64>,
    pub last_fix_ms: Option<i64>,
}

/// Below this a fix is not moving.
const STOP_KMH: f64 = 5.0;
/// Without speed, fixes this close are one place.
const STOP_RADIUS_M: f64 = 100.0;
/// A deviation clears within this share of the corridor's width.
const CLEAR_SHARE: f64 = 0.8;

/// The fold of a transit's fixes in fix time: the verdict and what the next fix needs to
/// extend it. It is kept in the transit's `track` row, so a fix newer than every fix before
/// it costs no reading of the history; only a late fix makes the history be judged again.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Fold {
    pub verdict: Verdict,
    /// The run of fixes outside the corridor not yet long enough: (first fix time, count,
    /// farthest).
    run: Option<(i64, u32, f64)>,
    /// The first fix of the current stop.
    stop_from: Option<(i64, f64, f64)>,
}

impl Fold {
    /// Extends the fold by a fix newer than every fix it holds. Without a corridor there is
    /// nothing to deviate from or stop on: the fix only ends a silence.
    pub fn push(&mut self, corridor: Option<&Corridor>, f: &Fix, c: &PositionsConfig) {
        let v = &mut self.verdict;
        v.last_fix_ms = Some(f.time_ms);
        let Some(corridor) = corridor else {
            return;
        };
        let d = distance_to_line_m(&corridor.points, f.lat, f.lon);
        if v.deviating_since.is_some() {
            v.farthest_m = v.farthest_m.max(d);
            if d < corridor.width_m * CLEAR_SHARE {
                v.deviating_since = None;
                v.farthest_m = 0.0;
            }
        } else if d > corridor.width_m {
            let (from, n, far) = self.run.unwrap_or((f.time_ms, 0, 0.0));
            let (n, far) = (n + 1, far.max(d));
            if n >= c.deviation_fixes || f.time_ms - from >= i64::from(c.deviation_s) * 1000 {
                v.deviating_since = Some(from);
                v.farthest_m = far;
                self.run = None;
            } else {
                self.run = Some((from, n, far));
            }
        } else {
            self.run = None;
        }
        let still = match (f.speed, self.stop_from) {
            (Some(s), _) => s < STOP_KMH,
            (None, Some((_, lat, lon))) => distance_m(lat, lon, f.lat, f.lon) < STOP_RADIUS_M,
            (None, None) => false,
        };
        if still {
            let (from, ..) = *self.stop_from.get_or_insert((f.time_ms, f.lat, f.lon));
            if f.time_ms - from > i64::from(c.stop_max_s) * 1000 {
                v.stopped_since = Some(from);
            }
        } else {
            self.stop_from = None;
            v.stopped_since = None;
        }
    }

    /// Folds `fixes` (any order) from nothing.
    fn of(corridor: Option<&Corridor>, fixes: &[Fix], c: &PositionsConfig) -> Fold {
        let mut fixes: Vec<&Fix> = fixes.iter().collect();
        fixes.sort_by_key(|f| f.time_ms);
        let mut fold = Fold::default();
        for f in fixes {
            fold.push(corridor, f, c);
        }
        fold
    }
}

/// Folds `fixes` (any order) over the corridor.
pub fn judge(corridor: &Corridor, fixes: &[Fix], c: &PositionsConfig) -> Verdict {
    Fold::of(Some(corridor), fixes, c).verdict
}

/// True when a transit on the road last heard of its tracker at `last_ms` and `now_ms` is past
/// the silence allowed.
pub fn silent(last_ms: i64, now_ms: i64, c: &PositionsConfig) -> bool {
    now_ms - last_ms > i64::from(c.silent_after_s) * 1000
}

/// The most recent fixes one judgement reads (5.5 h at one fix every 10 s).
pub const JUDGED_FIXES: i64 = 2000;

/// States in which a transit is between posts, so its fixes are judged.
const ON_THE_ROAD: &str = "('departed', 'en_route', 'at_post', 'diverted', 'overdue', 'enquiry')";

/// The transits on the road with their trackers, for the silence scan: found through index
/// `transit_state` (migration 8), not among every transit ever declared.
pub(crate) fn silent_sql() -> String {
    format!(
        "SELECT t.mrn, t.last_seen_ms, k.last_fix_ms, k.silent FROM transit t \
         JOIN transit_tracker r ON r.mrn = t.mrn LEFT JOIN track k ON k.mrn = t.mrn \
         WHERE t.state IN {ON_THE_ROAD}"
    )
}
const ON_THE_ROAD_STATES: [&str; 6] = [
    "departed", "en_route", "at_post", "diverted", "overdue", "enquiry",
];

/// What the fixes had made of a transit, as its track row says.
#[derive(Debug, Default)]
struct TrackRow {
    deviating_since: Option<i64>,
    stopped_since: Option<i64>,
    silent: bool,
    last_fix_ms: Option<i64>,
    /// 0: no row yet.
    version: i64,
}

async fn track_of(conn: &mut AnyConnection, mrn: &str) -> Result<TrackRow, StoreError> {
    let r = sqlx::query(
        "SELECT deviating_since, stopped_since, silent, last_fix_ms, version FROM track WHERE mrn = $1",
    )
    .bind(mrn)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match r {
        Some(r) => TrackRow {
            deviating_since: r.try_get(0)?,
            stopped_since: r.try_get(1)?,
            silent: r.try_get::<i64, _>(2)? != 0,
            last_fix_ms: r.try_get(3)?,
            version: r.try_get(4)?,
        },
        None => TrackRow::default(),
    })
}

/// Marks the track silent, over the version `was` read in the same transaction (see
/// [`apply_batch`]'s write of the track rows).
async fn save_silent(
    conn: &mut AnyConnection,
    mrn: &str,
    was: &TrackRow,
) -> Result<(), StoreError> {
    let written = sqlx::query(
        "INSERT INTO track (mrn, last_fix_ms, deviating_since, stopped_since, silent, version) \
         VALUES ($1, $2, $3, $4, 1, $5) \
         ON CONFLICT (mrn) DO UPDATE SET silent = 1, version = excluded.version \
         WHERE track.version = excluded.version - 1",
    )
    .bind(mrn)
    .bind(was.last_fix_ms)
    .bind(was.deviating_since)
    .bind(was.stopped_since)
    .bind(was.version + 1)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if written != 1 {
        return Err(store::conflict("track", format!("{mrn}'s, marked silent")));
    }
    Ok(())
}

/// The transits of a batch's trackers among `keys` ([`store::keys`]), with their track rows
/// (NULL where a transit has none yet).
pub(crate) fn trackers_of(keys: &str) -> String {
    format!(
        "SELECT k.tracker, k.mrn, t.state, t.declared_ms, r.deviating_since, r.stopped_since, \
         r.silent, r.fold, r.last_fix_ms, r.version FROM {keys} \
         JOIN transit_tracker k ON k.tracker = v.column1 JOIN transit t ON t.mrn = k.mrn \
         LEFT JOIN track r ON r.mrn = k.mrn"
    )
}

/// One event's (or one feed packet's) fixes of one tracker.
pub(crate) struct Fixes {
    pub tracker: String,
    pub fixes: Vec<Fix>,
    /// Where they came from: `post:{id}` or `egts`.
    pub source: String,
    /// What a flag they raise or clear is journaled with: an event id, or `egts:{peer}`.
    pub cause: String,
}

/// Stores a batch's fixes (in the caller's transaction) for every transit on the road that
/// declares their tracker, or that `touched` names (a transit the same batch moved, so a fix
/// that came with its arrival is still its own), and brings the transits' flags in line.
/// Returns how many transits it touched.
///
/// Each item is judged in turn, as if it had come alone: a deviation that began and ended
/// inside a backlog is raised and cleared, each with the event that did it. The work is done
/// per batch, not per event: one read of the trackers with their track rows, one insert of
/// the fixes and one write of the track rows; a transit's history is read only when a fix is
/// not newer than all its fixes before (out of order, or a row folded before migration 6).
pub(crate) async fn apply_batch(
    conn: &mut AnyConnection,
    items: &[Fixes],
    corridors: &mut Corridors,
    touched: &HashSet<String>,
    c: &PositionsConfig,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let trackers: BTreeSet<&str> = items
        .iter()
        .filter(|i| !i.fixes.is_empty())
        .map(|i| i.tracker.as_str())
        .collect();
    if trackers.is_empty() {
        return Ok(0);
    }
    // The transits of these trackers, with their corridors, and what the fixes had made of
    // them (their track rows, read in the same statement: one round trip less a batch).
    let mut by_tracker: HashMap<String, Vec<usize>> = HashMap::new();
    let mut transits: Vec<Judged> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let trackers: Vec<&str> = trackers.into_iter().collect();
    for chunk in trackers.chunks(store::rows_per_statement(conn, 1)) {
        let sql = trackers_of(&store::keys(conn, chunk.len()));
        let mut q = store::multi_row(conn, &sql);
        for t in chunk {
            q = q.bind(*t);
        }
        for r in q.fetch_all(&mut *conn).await? {
            let tracker: String = r.try_get(0)?;
            let mrn: String = r.try_get(1)?;
            let state: String = r.try_get(2)?;
            if !ON_THE_ROAD_STATES.contains(&state.as_str()) && !touched.contains(&mrn) {
                continue;
            }
            let k = match index.get(&mrn) {
                Some(&k) => k,
                None => {
                    let mut t = Judged::new(mrn.clone());
                    // No track row yet (all NULL): nothing folded, version 0.
                    if let Some(version) = r.try_get::<Option<i64>, _>(9)? {
                        t.read_track(&r, version)?;
                    }
                    index.insert(mrn, transits.len());
                    transits.push(t);
                    transits.len() - 1
                }
            };
            if transits[k].corridor.is_none() {
                let declared_ms: i64 = r.try_get(3)?;
                transits[k].corridor = corridors.get(&transits[k].mrn, declared_ms);
            }
            by_tracker.entry(tracker).or_default().push(k);
        }
    }
    // The corridors not known yet: their declarations read and parsed, once for as long as
    // they stay in `corridors`.
    let missing: Vec<&str> = transits
        .iter()
        .filter(|t| t.corridor.is_none())
        .map(|t| t.mrn.as_str())
        .collect();
    let mut found = Vec::new();
    for chunk in missing.chunks(store::rows_per_statement(conn, 1)) {
        let sql = format!(
            "SELECT mrn, declared_ms, declaration FROM {} JOIN transit ON transit.mrn = v.column1",
            store::keys(conn, chunk.len())
        );
        let mut q = store::multi_row(conn, &sql);
        for m in chunk {
            q = q.bind(*m);
        }
        for r in q.fetch_all(&mut *conn).await? {
            let mrn: String = r.try_get(0)?;
            let declared_ms: i64 = r.try_get(1)?;
            let decl: String = r.try_get(2)?;
            let corridor = serde_json::from_str::<CorridorOf>(&decl)
                .map_err(|e| store::corrupt("declaration", e.to_string()))?
                .corridor
                .map(Arc::new);
            found.push((mrn, declared_ms, corridor));
        }
    }
    for (mrn, declared_ms, corridor) in found {
        if let Some(&k) = index.get(&mrn) {
            transits[k].corridor = Some(corridor.clone());
        }
        corridors.put(mrn, declared_ms, corridor);
    }
    if transits.is_empty() {
        return Ok(0);
    }
    // Each transit's items in the batch's order, each item's fixes in fix time.
    for (n, item) in items.iter().enumerate() {
        for &k in by_tracker.get(&item.tracker).into_iter().flatten() {
            transits[k].items.push(n);
        }
    }
    // A transit whose fixes do not all come after what it had is judged from its history,
    // read before this batch's fixes go in.
    for t in &mut transits {
        let mut last = t
            .fold
            .as_ref()
            .map_or(Some(i64::MAX), |f| f.verdict.last_fix_ms);
        let mut in_order = true;
        for &n in &t.items {
            let mut times: Vec<i64> = items[n].fixes.iter().map(|f| f.time_ms).collect();
            times.sort_unstable();
            for time in times {
                in_order &= last.is_none_or(|l| time > l);
                last = Some(time);
            }
        }
        if !in_order {
            t.fold = None;
            t.history = Some(stored_fixes(conn, &t.mrn).await?);
        }
    }
    // Every fix in, a few hundred per statement (the first one of a time stays).
    let rows: Vec<(&str, &Fix, &str)> = transits
        .iter()
        .flat_map(|t| {
            t.items.iter().flat_map(move |&n| {
                items[n]
                    .fixes
                    .iter()
                    .map(move |f| (t.mrn.as_str(), f, items[n].source.as_str()))
            })
        })
        .collect();
    for chunk in rows.chunks(store::rows_per_statement(conn, 7)) {
        let sql = format!(
            "INSERT INTO fix (mrn, time_ms, lat, lon, speed, source, received_ms) VALUES {} \
             ON CONFLICT (mrn, time_ms) DO NOTHING",
            store::value_rows(conn, chunk.len(), 7)
        );
        let mut q = store::multi_row(conn, &sql);
        for (mrn, f, source) in chunk {
            q = q
                .bind(*mrn)
                .bind(f.time_ms)
                .bind(f.lat)
                .bind(f.lon)
                .bind(f.speed)
                .bind(*source)
                .bind(now_ms);
        }
        q.execute(&mut *conn).await?;
    }
    // Each item judged in turn; the flags follow the verdicts.
    for t in &mut transits {
        let corridor = t.corridor.clone().flatten();
        let corridor = corridor.as_deref();
        let mut was = (t.was_deviating, t.was_stopped);
        for &n in &t.items {
            let item = &items[n];
            let fold = match &mut t.history {
                Some(history) => {
                    for f in &item.fixes {
                        history.entry(f.time_ms).or_insert(*f);
                    }
                    let all: Vec<Fix> = history.values().copied().collect();
                    Fold::of(corridor, &all, c)
                }
                None => {
                    let fold = t.fold.get_or_insert_with(Fold::default);
                    let mut fixes = item.fixes.clone();
                    fixes.sort_by_key(|f| f.time_ms);
                    for f in &fixes {
                        fold.push(corridor, f, c);
                    }
                    fold.clone()
                }
            };
            let silent = std::mem::take(&mut t.was_silent);
            settle(
                conn,
                &t.mrn,
                was,
                silent,
                &fold.verdict,
                &item.cause,
                now_ms,
            )
            .await?;
            was = (fold.verdict.deviating_since, fold.verdict.stopped_since);
            t.fold = Some(fold);
        }
    }
    // The track rows, a few hundred per statement, each only over the version read above
    // (none read: version 0, and a row someone inserted meanwhile is at 1 or more). The read
    // takes no lock, so a writer on another connection (the feed, another worker, the silence
    // scan) may have written a row since; its write would otherwise be lost under this one.
    let per = store::rows_per_statement(conn, 7);
    for chunk in transits.chunks(per) {
        let sql = format!(
            "INSERT INTO track (mrn, last_fix_ms, deviating_since, stopped_since, silent, fold, version) \
             VALUES {} ON CONFLICT (mrn) DO UPDATE SET last_fix_ms = excluded.last_fix_ms, \
             deviating_since = excluded.deviating_since, stopped_since = excluded.stopped_since, \
             silent = excluded.silent, fold = excluded.fold, version = excluded.version \
             WHERE track.version = excluded.version - 1",
            store::value_rows(conn, chunk.len(), 7)
        );
        let mut q = store::multi_row(conn, &sql);
        for t in chunk {
            let fold = t.fold.clone().unwrap_or_default();
            let text = serde_json::to_string(&fold)
                .map_err(|e| store::corrupt("track fold", e.to_string()))?;
            q = q
                .bind(&t.mrn)
                .bind(fold.verdict.last_fix_ms)
                .bind(fold.verdict.deviating_since)
                .bind(fold.verdict.stopped_since)
                .bind(0_i64)
                .bind(text)
                .bind(t.version + 1);
        }
        if q.execute(&mut *conn).await?.rows_affected() != chunk.len() as u64 {
            return Err(store::conflict(
                "track",
                "one whose fixes this transaction judged",
            ));
        }
    }
    Ok(transits.len())
}

/// A transit whose fixes a batch judges.
struct Judged {
    mrn: String,
    /// Read from its declaration: `Some(None)` when it declares no corridor.
    corridor: Option<Option<Arc<Corridor>>>,
    /// The batch's items that carry its tracker, in order.
    items: Vec<usize>,
    was_deviating: Option<i64>,
    was_stopped: Option<i64>,
    was_silent: bool,
    /// The track row's version as read (0: no row yet).
    version: i64,
    /// What its fixes folded to; `None` when it must be judged from `history`.
    fold: Option<Fold>,
    /// Its stored fixes by time, when the batch's fixes are not all newer than them.
    history: Option<BTreeMap<i64, Fix>>,
}

impl Judged {
    /// What its track row says (columns 4 – 9 of [`apply_batch`]'s read: deviating since,
    /// stopped since, silent, fold, last fix, and `version`, read already).
    fn read_track(&mut self, r: &sqlx::any::AnyRow, version: i64) -> Result<(), StoreError> {
        self.was_deviating = r.try_get(4)?;
        self.was_stopped = r.try_get(5)?;
        self.was_silent = r.try_get::<i64, _>(6)? != 0;
        self.version = version;
        let fold: Option<String> = r.try_get(7)?;
        let last: Option<i64> = r.try_get(8)?;
        self.fold = match fold {
            Some(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| store::corrupt("track fold", e.to_string()))?,
            ),
            // Fixes folded before the fold was kept: judged again from the history.
            None if last.is_some() => None,
            None => Some(Fold::default()),
        };
        Ok(())
    }

    fn new(mrn: String) -> Judged {
        Judged {
            mrn,
            corridor: None,
            items: Vec::new(),
            was_deviating: None,
            was_stopped: None,
            was_silent: false,
            version: 0,
            fold: Some(Fold::default()),
            history: None,
        }
    }
}

/// The corridors of the transits whose fixes were judged lately, by MRN and the time the
/// transit was declared (a declaration is never changed once stored; the time tells a
/// transit declared again apart). A batch's positions name hundreds of transits, and each
/// declaration's JSON parsed again cost a sixth of judging them. At most [`Corridors::MOST`];
/// when full it starts again empty (a miss costs one read of the declaration).
#[derive(Default)]
pub struct Corridors {
    known: HashMap<String, (i64, Option<Arc<Corridor>>)>,
}

impl Corridors {
    pub const MOST: usize = 50_000;

    fn get(&self, mrn: &str, declared_ms: i64) -> Option<Option<Arc<Corridor>>> {
        match self.known.get(mrn) {
            Some((at, c)) if *at == declared_ms => Some(c.clone()),
            _ => None,
        }
    }

    fn put(&mut self, mrn: String, declared_ms: i64, corridor: Option<Arc<Corridor>>) {
        if self.known.len() >= Self::MOST {
            self.known.clear();
        }
        self.known.insert(mrn, (declared_ms, corridor));
    }
}

/// The part of a stored declaration the fixes are judged against.
#[derive(Deserialize)]
struct CorridorOf {
    #[serde(default)]
    corridor: Option<Corridor>,
}

/// A transit's newest fixes (those a batch whose fixes come out of order is judged with), and
/// its track for the board's map: each from the fix table's primary key, in its order.
pub(crate) const RECENT_FIXES: &str =
    "SELECT time_ms, lat, lon, speed FROM fix WHERE mrn = $1 ORDER BY time_ms DESC LIMIT $2";
pub(crate) const TRACK_FIXES: &str =
    "SELECT time_ms, lat, lon FROM fix WHERE mrn = $1 ORDER BY time_ms LIMIT 20000";

/// A transit's most recent [`JUDGED_FIXES`] stored fixes, by time.
async fn stored_fixes(
    conn: &mut AnyConnection,
    mrn: &str,
) -> Result<BTreeMap<i64, Fix>, StoreError> {
    let rows = sqlx::query(RECENT_FIXES)
        .bind(mrn)
        .bind(JUDGED_FIXES)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            let f = Fix {
                time_ms: r.try_get(0)?,
                lat: r.try_get(1)?,
                lon: r.try_get(2)?,
                speed: r.try_get(3)?,
            };
            Ok((f.time_ms, f))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Raises or clears the flags that change from `was` (deviating since, stopped since) to the
/// verdict; a fix ends a silence.
async fn settle(
    conn: &mut AnyConnection,
    mrn: &str,
    was: (Option<i64>, Option<i64>),
    was_silent: bool,
    v: &Verdict,
    cause: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let time = |ms: Option<i64>| ms.map(crate::tracking::time_text).unwrap_or_default();
    match (was.0, v.deviating_since) {
        (None, Some(since)) => {
            let note = format!(
                "off the declared corridor since {}, up to {:.1} km from its line",
                time(Some(since)),
                v.farthest_m / 1000.0
            );
            store::set_flag(conn, mrn, Flag::RouteDeviation, true, cause, &note, now_ms).await?;
        }
        (Some(_), None) => {
            let note = format!("back within the corridor at {}", time(v.last_fix_ms));
            store::set_flag(conn, mrn, Flag::RouteDeviation, false, cause, &note, now_ms).await?;
        }
        _ => {}
    }
    match (was.1, v.stopped_since) {
        (None, Some(since)) => {
            let note = format!("standing still since {}", time(Some(since)));
            store::set_flag(conn, mrn, Flag::Stopped, true, cause, &note, now_ms).await?;
        }
        (Some(_), None) => {
            let note = format!("moving again at {}", time(v.last_fix_ms));
            store::set_flag(conn, mrn, Flag::Stopped, false, cause, &note, now_ms).await?;
        }
        _ => {}
    }
    if was_silent {
        let note = format!("a fix of {} came in", time(v.last_fix_ms));
        store::set_flag(conn, mrn, Flag::TrackerSilent, false, cause, &note, now_ms).await?;
    }
    Ok(())
}

/// A transit's track for the board: its fixes (time, lat, lon), oldest first, and what they
/// say.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Track {
    pub fixes: Vec<(i64, f64, f64)>,
    pub deviating_since: Option<i64>,
    pub stopped_since: Option<i64>,
    pub silent: bool,
}

impl Store {
    /// Stores fixes from outside the posts (the seal operator's feed) in one transaction.
    pub async fn apply_fixes(
        &self,
        by_tracker: &[(String, Vec<Fix>)],
        source: &str,
        cause: &str,
        c: &PositionsConfig,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let items: Vec<Fixes> = by_tracker
            .iter()
            .map(|(tracker, fixes)| Fixes {
                tracker: tracker.clone(),
                fixes: fixes.clone(),
                source: source.to_string(),
                cause: cause.to_string(),
            })
            .collect();
        // A packet of the feed names few trackers: their corridors read every time.
        let mut corridors = Corridors::default();
        // Done again from a fresh read when a post's event (or another packet) wrote one of
        // the same tracks first; after a few tries the caller leaves the packet
        // unacknowledged, to be sent again.
        let mut tries = 0;
        loop {
            let mut tx = self.begin_write().await?;
            let done = match apply_batch(
                &mut tx,
                &items,
                &mut corridors,
                &HashSet::new(),
                c,
                now_ms,
            )
            .await
            {
                Ok(n) => tx.commit().await.map(|()| n).map_err(StoreError::from),
                Err(e) => Err(e),
            };
            match done {
                Err(e) if e.is_conflict() && tries < 5 => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "feed fixes done again");
                }
                done => return done,
            }
        }
    }

    /// Raises `tracker_silent` on every transit on the road whose tracker has not been heard
    /// of (no fix, or none since its last passage) for `silent_after_s`. Each once: the track
    /// row remembers it, in the transaction that raises it.
    pub async fn scan_silent(&self, now_ms: i64, c: &PositionsConfig) -> Result<usize, StoreError> {
        let rows = sqlx::query(&silent_sql()).fetch_all(self.pool()).await?;
        let mut raised = 0;
        for r in rows {
            let mrn: String = r.try_get(0)?;
            let seen: Option<i64> = r.try_get(1)?;
            let fix: Option<i64> = r.try_get(2)?;
            let was: Option<i64> = r.try_get(3)?;
            let Some(last) = seen.max(fix) else { continue };
            if was == Some(1) || !silent(last, now_ms, c) {
                continue;
            }
            match self.silence_one(&mrn, seen, now_ms, c).await {
                Ok(true) => {}
                Ok(false) => continue,
                // A fix, a passage or another scheduler came first; the next scan looks again.
                Err(e) if e.is_conflict() => {
                    tracing::debug!(%mrn, error = %e, "silence not raised");
                    continue;
                }
                Err(e) => return Err(e),
            }
            raised += 1;
        }
        Ok(raised)
    }

    /// Raises one transit's silence, judged again on what its transaction reads: whether it
    /// did.
    async fn silence_one(
        &self,
        mrn: &str,
        seen: Option<i64>,
        now_ms: i64,
        c: &PositionsConfig,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let was = track_of(&mut tx, mrn).await?;
        let Some(last) = seen.max(was.last_fix_ms) else {
            return Ok(false);
        };
        if was.silent || !silent(last, now_ms, c) {
            return Ok(false); // another scheduler came first, or a fix since the scan's read
        }
        let note = format!(
            "no fix of its tracker since {}",
            crate::tracking::time_text(last)
        );
        store::set_flag(
            &mut tx,
            mrn,
            Flag::TrackerSilent,
            true,
            "scheduler",
            &note,
            now_ms,
        )
        .await?;
        save_silent(&mut tx, mrn, &was).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn track(&self, mrn: &str) -> Result<Track, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let rows = sqlx::query(TRACK_FIXES)
            .bind(mrn)
            .fetch_all(&mut *conn)
            .await?;
        let fixes = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        let row = track_of(&mut conn, mrn).await?;
        Ok(Track {
            fixes,
            deviating_since: row.deviating_since,
            stopped_since: row.stopped_since,
            silent: row.silent,
        })
    }
}

/// Distance from a point to a polyline, metres: the geometry the posts' seal rules use.
pub fn distance_to_line_m(points: &[[f64; 2]], lat: f64, lon: f64) -> f64 {
    acsgd_contract::geo::distance_to_line_m([lat, lon], points)
}

/// Great-circle distance, metres.
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    acsgd_contract::geo::distance_m([lat1, lon1], [lat2, lon2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corridor_is_known_by_its_transit_and_declaration_time_and_the_cache_stays_bounded() {
        let mut c = Corridors::default();
        c.put("26KZ1".into(), 1_000, Some(Arc::new(corridor())));
        c.put("26KZ2".into(), 1_000, None);
        assert_eq!(
            c.get("26KZ1", 1_000).unwrap().unwrap().width_m,
            corridor().width_m
        );
        // Declared without a corridor: known, and known to have none.
        assert!(c.get("26KZ2", 1_000).unwrap().is_none());
        // Another declaration under the same MRN is not taken for the one seen before.
        assert!(c.get("26KZ1", 2_000).is_none());
        assert!(c.get("26KZ3", 1_000).is_none());
        for i in 0..Corridors::MOST + 10 {
            c.put(format!("M{i}"), 0, None);
        }
        assert!(c.known.len() <= Corridors::MOST);
        assert!(c.get(&format!("M{}", Corridors::MOST + 9), 0).is_some());
    }

    fn corridor() -> Corridor {
        Corridor {
            points: vec![[44.2125, 80.4089], [43.2389, 76.8897]],
            width_m: 5000.0,
        }
    }

    /// A point `off_m` north of the corridor's line at fraction `t` of it.
    fn at(t: f64, off_m: f64, time_s: i64, speed: f64) -> Fix {
        let (a, b) = ([44.2125, 80.4089], [43.2389, 76.8897]);
        Fix {
            time_ms: time_s * 1000,
            lat: a[0] + t * (b[0] - a[0]) + off_m / 111_195.0,
            lon: a[1] + t * (b[1] - a[1]),
            speed: Some(speed),
        }
    }

    #[test]
    fn distances_are_right_to_a_few_metres() {
        let c = corridor();
        // On the line, and 3 km north of it (the line runs west-south-west, so a northward
        // offset is about 0.93 of it across the line).
        assert!(
            distance_to_line_m(
                &c.points,
                at(0.5, 0.0, 0, 60.0).lat,
                at(0.5, 0.0, 0, 60.0).lon
            ) < 5.0
        );
        let f = at(0.5, 3000.0, 0, 60.0);
        let d = distance_to_line_m(&c.points, f.lat, f.lon);
        assert!((d - 3000.0 * 0.934).abs() < 30.0, "{d}");
        // Khorgos to Almaty, about 300 km.
        let km = distance_m(44.2125, 80.4089, 43.2389, 76.8897) / 1000.0;
        assert!((km - 300.0).abs() < 10.0, "{km}");
    }

    #[test]
    fn a_deviation_needs_several_fixes_and_clears_well_inside() {
        let c = PositionsConfig::default();
        let k = corridor();
        let mut fixes = vec![
            at(0.1, 0.0, 0, 60.0),
            at(0.12, 9000.0, 60, 60.0),
            at(0.14, 0.0, 120, 60.0),
        ];
        // One stray fix outside is not a deviation.
        assert_eq!(judge(&k, &fixes, &c).deviating_since, None);
        fixes.extend([
            at(0.16, 9000.0, 180, 60.0),
            at(0.17, 10000.0, 200, 60.0),
            at(0.18, 9000.0, 220, 60.0),
        ]);
        let v = judge(&k, &fixes, &c);
        assert_eq!(v.deviating_since, Some(180_000));
        assert!(v.farthest_m > 8000.0);
        // Back to the edge (90 % of the width): still deviating; well inside: cleared.
        fixes.push(at(0.2, 5.2 * 1000.0, 240, 60.0));
        assert!(judge(&k, &fixes, &c).deviating_since.is_some());
        fixes.push(at(0.22, 1000.0, 300, 60.0));
        assert_eq!(judge(&k, &fixes, &c).deviating_since, None);
        // The same fixes in another order are judged the same.
        let mut shuffled = fixes.clone();
        shuffled.reverse();
        assert_eq!(judge(&k, &shuffled, &c), judge(&k, &fixes, &c));
    }

    #[test]
    fn a_long_stop_and_a_silence() {
        let c = PositionsConfig::default();
        let k = corridor();
        let mut fixes: Vec<Fix> = (0..=50).map(|i| at(0.3, 0.0, i * 600, 0.0)).collect();
        assert_eq!(
            judge(&k, &fixes, &c).stopped_since,
            Some(0),
            "500 min at 0 km/h"
        );
        fixes.push(at(0.31, 0.0, 51 * 600, 50.0));
        assert_eq!(judge(&k, &fixes, &c).stopped_since, None);
        assert!(!silent(1000, 1000 + 3_600_000, &c));
        assert!(silent(1000, 1001 + 3_600_000, &c));
    }
}
