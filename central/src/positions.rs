//! Positions between posts: what a transit's tracker fixes say about it, judged against its
//! declared corridor. Pure: the store folds every stored fix of a transit through [`judge`]
//! in fix time (so a fix that arrives late or out of order is judged where it belongs, not
//! dropped), and the scheduler asks [`silent`] with the wall clock.
//!
//! * **Route deviation**, with hysteresis: raised when `fixes` consecutive fixes, or fixes for
//!   `seconds`, lie farther than the corridor's `width_m` from its line; cleared only by a fix
//!   within 80 % of `width_m`, so a truck riding the edge does not flap.
//! * **Stopped too long**: fixes under 5 km/h (or, without speed, within 100 m of each other)
//!   spanning more than `stop_max_s`; cleared by the next moving fix.
//! * **Tracker silent**: no fix for `silent_after_s` while the transit is on the road.
//!
//! [`apply_fixes`] stores a tracker's fixes for every open transit that declares it and
//! raises or clears the flags in the same transaction (journaled like every change, so
//! notifications follow); only the fixes clear what the fixes raised. Each judgement reads the
//! transit's last [`JUDGED_FIXES`] fixes, so its cost stays bounded on a long transit.

use acsgd_contract::declaration::Corridor;
use serde::Deserialize;
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    pub time_ms: i64,
    pub lat: f64,
    pub lon: f64,
    /// km/h, where the tracker says.
    pub speed: Option<f64>,
}

/// What the fixes say, as of the last one.
#[derive(Debug, Clone, PartialEq, Default)]
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

/// Folds `fixes` (any order) over the corridor.
pub fn judge(corridor: &Corridor, fixes: &[Fix], c: &PositionsConfig) -> Verdict {
    let mut fixes: Vec<&Fix> = fixes.iter().collect();
    fixes.sort_by_key(|f| f.time_ms);
    let mut v = Verdict::default();
    // The run of fixes outside the corridor not yet long enough: (first fix time, count, max).
    let mut run: Option<(i64, u32, f64)> = None;
    let mut stop_from: Option<&Fix> = None;
    for f in fixes {
        let d = distance_to_line_m(&corridor.points, f.lat, f.lon);
        if v.deviating_since.is_some() {
            v.farthest_m = v.farthest_m.max(d);
            if d < corridor.width_m * CLEAR_SHARE {
                v.deviating_since = None;
                v.farthest_m = 0.0;
            }
        } else if d > corridor.width_m {
            let (from, n, far) = run.unwrap_or((f.time_ms, 0, 0.0));
            let (n, far) = (n + 1, far.max(d));
            if n >= c.deviation_fixes || f.time_ms - from >= i64::from(c.deviation_s) * 1000 {
                v.deviating_since = Some(from);
                v.farthest_m = far;
                run = None;
            } else {
                run = Some((from, n, far));
            }
        } else {
            run = None;
        }
        let still = match (f.speed, stop_from) {
            (Some(s), _) => s < STOP_KMH,
            (None, Some(s)) => distance_m(s.lat, s.lon, f.lat, f.lon) < STOP_RADIUS_M,
            (None, None) => false,
        };
        if still {
            let from = *stop_from.get_or_insert(f);
            if f.time_ms - from.time_ms > i64::from(c.stop_max_s) * 1000 {
                v.stopped_since = Some(from.time_ms);
            }
        } else {
            stop_from = None;
            v.stopped_since = None;
        }
        v.last_fix_ms = Some(f.time_ms);
    }
    v
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

/// What the fixes had made of a transit: (deviating_since, stopped_since, silent).
async fn track_of(
    conn: &mut AnyConnection,
    mrn: &str,
) -> Result<(Option<i64>, Option<i64>, bool), StoreError> {
    let r = sqlx::query("SELECT deviating_since, stopped_since, silent FROM track WHERE mrn = $1")
        .bind(mrn)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match r {
        Some(r) => (r.try_get(0)?, r.try_get(1)?, r.try_get::<i64, _>(2)? != 0),
        None => (None, None, false),
    })
}

async fn save_track(
    conn: &mut AnyConnection,
    mrn: &str,
    v: &Verdict,
    silent: bool,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO track (mrn, last_fix_ms, deviating_since, stopped_since, silent) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (mrn) DO UPDATE SET last_fix_ms = $2, deviating_since = $3, stopped_since = $4, silent = $5",
    )
    .bind(mrn)
    .bind(v.last_fix_ms)
    .bind(v.deviating_since)
    .bind(v.stopped_since)
    .bind(i64::from(silent))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores `fixes` of `tracker` for each open transit that declares it and re-judges them,
/// raising or clearing flags with `cause` (an event id, or `egts:{peer}`). Returns the
/// transits it touched. Runs in the caller's transaction.
pub(crate) async fn apply_fixes(
    conn: &mut AnyConnection,
    tracker: &str,
    fixes: &[Fix],
    source: &str,
    cause: &str,
    c: &PositionsConfig,
    now_ms: i64,
) -> Result<Vec<String>, StoreError> {
    if fixes.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&format!(
        "SELECT k.mrn FROM transit_tracker k JOIN transit t ON t.mrn = k.mrn \
         WHERE k.tracker = $1 AND t.state IN {ON_THE_ROAD}"
    ))
    .bind(tracker)
    .fetch_all(&mut *conn)
    .await?;
    let mrns: Vec<String> = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    for mrn in &mrns {
        for f in fixes {
            sqlx::query(
                "INSERT INTO fix (mrn, time_ms, lat, lon, speed, source, received_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (mrn, time_ms) DO NOTHING",
            )
            .bind(mrn)
            .bind(f.time_ms)
            .bind(f.lat)
            .bind(f.lon)
            .bind(f.speed)
            .bind(source)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
        }
        judge_stored(conn, mrn, cause, c, now_ms).await?;
    }
    Ok(mrns)
}

/// Judges a transit's stored fixes and brings its flags in line with them.
async fn judge_stored(
    conn: &mut AnyConnection,
    mrn: &str,
    cause: &str,
    c: &PositionsConfig,
    now_ms: i64,
) -> Result<(), StoreError> {
    let Some(t) = store::load_transit(conn, mrn).await? else {
        return Ok(());
    };
    let Some(corridor) = t.declaration.corridor.clone() else {
        // No corridor declared: nothing to deviate from, but a fix still ends a silence.
        let v = Verdict {
            last_fix_ms: last_fix(conn, mrn).await?,
            ..Verdict::default()
        };
        return settle(conn, mrn, &v, cause, now_ms).await;
    };
    let rows = sqlx::query(
        "SELECT time_ms, lat, lon, speed FROM fix WHERE mrn = $1 ORDER BY time_ms DESC LIMIT $2",
    )
    .bind(mrn)
    .bind(JUDGED_FIXES)
    .fetch_all(&mut *conn)
    .await?;
    let fixes: Vec<Fix> = rows
        .iter()
        .map(|r| {
            Ok(Fix {
                time_ms: r.try_get(0)?,
                lat: r.try_get(1)?,
                lon: r.try_get(2)?,
                speed: r.try_get(3)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let v = judge(&corridor, &fixes, c);
    settle(conn, mrn, &v, cause, now_ms).await
}

async fn last_fix(conn: &mut AnyConnection, mrn: &str) -> Result<Option<i64>, StoreError> {
    let r = sqlx::query("SELECT MAX(time_ms) FROM fix WHERE mrn = $1")
        .bind(mrn)
        .fetch_one(&mut *conn)
        .await?;
    Ok(r.try_get(0)?)
}

/// Raises or clears the flags the verdict changes, and records it.
async fn settle(
    conn: &mut AnyConnection,
    mrn: &str,
    v: &Verdict,
    cause: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (was_deviating, was_stopped, was_silent) = track_of(conn, mrn).await?;
    let time = |ms: Option<i64>| ms.map(crate::tracking::time_text).unwrap_or_default();
    match (was_deviating, v.deviating_since) {
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
    match (was_stopped, v.stopped_since) {
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
    save_track(conn, mrn, v, false).await
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
        let mut tx = self.pool().begin().await?;
        let mut touched = 0;
        for (tracker, fixes) in by_tracker {
            touched += apply_fixes(&mut tx, tracker, fixes, source, cause, c, now_ms)
                .await?
                .len();
        }
        tx.commit().await?;
        Ok(touched)
    }

    /// Raises `tracker_silent` on every transit on the road whose tracker has not been heard
    /// of (no fix, or none since its last passage) for `silent_after_s`. Each once: the track
    /// row remembers it, in the transaction that raises it.
    pub async fn scan_silent(&self, now_ms: i64, c: &PositionsConfig) -> Result<usize, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT t.mrn, t.last_seen_ms, k.last_fix_ms, k.silent FROM transit t \
             JOIN transit_tracker r ON r.mrn = t.mrn LEFT JOIN track k ON k.mrn = t.mrn \
             WHERE t.state IN {ON_THE_ROAD}"
        ))
        .fetch_all(self.pool())
        .await?;
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
            let mut tx = self.pool().begin().await?;
            let (dev, stop, already) = track_of(&mut tx, &mrn).await?;
            if already {
                continue; // another scheduler came first
            }
            let note = format!(
                "no fix of its tracker since {}",
                crate::tracking::time_text(last)
            );
            store::set_flag(
                &mut tx,
                &mrn,
                Flag::TrackerSilent,
                true,
                "scheduler",
                &note,
                now_ms,
            )
            .await?;
            let v = Verdict {
                deviating_since: dev,
                stopped_since: stop,
                last_fix_ms: fix,
                farthest_m: 0.0,
            };
            save_track(&mut tx, &mrn, &v, true).await?;
            tx.commit().await?;
            raised += 1;
        }
        Ok(raised)
    }

    pub async fn track(&self, mrn: &str) -> Result<Track, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let rows = sqlx::query(
            "SELECT time_ms, lat, lon FROM fix WHERE mrn = $1 ORDER BY time_ms LIMIT 20000",
        )
        .bind(mrn)
        .fetch_all(&mut *conn)
        .await?;
        let fixes = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        let (deviating_since, stopped_since, silent) = track_of(&mut conn, mrn).await?;
        Ok(Track {
            fixes,
            deviating_since,
            stopped_since,
            silent,
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
