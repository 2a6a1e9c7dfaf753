//! `cargo bench -p acsgd-central --bench day`: a simulated day of 50 posts through central's
//! ingest, to see that central's memory stays flat while what it has seen grows
//! (`ACSGD_BENCH_DB=sqlite|postgres|both`, default both).
//!
//! The day, in event time (it ended two hours ago, so nothing is from the future): each of 50
//! posts sends 20 trucks an hour for the first 20 hours to the next post on the ring, 2 hours
//! away, allowed 3 (`within_h`). Of every hundred trucks 90 arrive in time, 4 arrive late
//! (3.5 hours), 3 never arrive, 3 are seen at a post off their itinerary and never arrive.
//! While on the road each truck's seal reports a fix every 2 minutes (until its arrival, or 2
//! hours), forwarded by its departure post; each post also raises 10 alerts an hour. One post
//! (`post-07`) has its uplink down from hour 6 to hour 12: what it saw then arrives at noon,
//! in order, so trucks that reached it in time were made overdue meanwhile and must be
//! rescinded.
//!
//! The events are signed and fed through the service's own ingest loop ([`Worker`]) ten
//! simulated minutes at a time, each slice followed by the scheduler's scans (overdue, tracker
//! silence, seq gaps) at the slice's end, as the service runs them. Printed: the resident
//! memory at the end of each simulated hour, the ingest's rate, the final states. Checked: every
//! event in the journal, each truck's final state and history as the day was built, the
//! rescinds, no seq gap.

#[path = "../tests/it/common.rs"]
#[allow(dead_code)]
mod common;
mod support;

use std::collections::BTreeMap;
use std::time::Instant;

// The service's allocator (`src/main.rs`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use acsgd_central::declare;
use acsgd_central::ingest::{Ingestor, Limits, Message, Outcome, Worker};
use acsgd_central::positions::PositionsConfig;
use acsgd_central::store::{now_ms, Backend, Store, Table};
use serde_json::json;

use common::{passage, Box_, Ids};

const POSTS: usize = 50;
const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;
/// Trucks each post sends an hour, for the first `DEPARTING_HOURS` hours.
const PER_POST_HOUR: usize = 20;
const DEPARTING_HOURS: usize = 20;
const SLICE: i64 = 10 * MINUTE;
const FIX_EVERY: i64 = 2 * MINUTE;
const TRIP: i64 = 2 * HOUR;
const WITHIN_H: f64 = 3.0;
const LATE: i64 = 3 * HOUR + 30 * MINUTE;
/// The post whose uplink is down, and when (hours of the day).
const DOWN: usize = 7;
const DOWN_FROM: i64 = 6 * HOUR;
const DOWN_TO: i64 = 12 * HOUR;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fate {
    OnTime,
    Late,
    Never,
    Diverted,
}

struct Truck {
    from: usize,
    to: usize,
    declared: i64,
    departs: i64,
    fate: Fate,
}

fn mrn(i: usize) -> String {
    format!("26KZ77{:012}", i)
}

/// The day's trucks, the same every run (a fixed linear congruential sequence for the minutes).
fn trucks() -> Vec<Truck> {
    let mut seed: u64 = 0x2026_1205;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    let mut out = Vec::new();
    for h in 0..DEPARTING_HOURS {
        for i in 0..POSTS * PER_POST_HOUR {
            let t = out.len();
            let from = i % POSTS;
            out.push(Truck {
                from,
                to: (from + 1) % POSTS,
                declared: h as i64 * HOUR,
                // Within the hour, after its declaration.
                departs: h as i64 * HOUR
                    + MINUTE
                    + (next() % 55) as i64 * MINUTE
                    + (next() % 60_000) as i64,
                fate: match t % 100 {
                    0..=89 => Fate::OnTime,
                    90..=93 => Fate::Late,
                    94..=96 => Fate::Never,
                    _ => Fate::Diverted,
                },
            });
        }
    }
    out
}

/// One event of the day: when, which post sends it, what.
struct Planned {
    time: i64,
    post: usize,
    kind: &'static str,
    body: serde_json::Value,
}

/// The events of `[from, to)` of the day, in time order.
fn slice(trucks: &[Truck], from: i64, to: i64) -> Vec<Planned> {
    let mut out = Vec::new();
    let mut at = |time: i64, post: usize, kind: &'static str, body: serde_json::Value| {
        if time >= from && time < to {
            out.push(Planned {
                time,
                post,
                kind,
                body,
            });
        }
    };
    for (t, k) in trucks.iter().enumerate() {
        // Only trucks on the road in the slice (a late one is out for 3.5 hours).
        if k.departs >= to || k.departs + LATE < from {
            continue;
        }
        let m = mrn(t);
        at(
            k.departs,
            k.from,
            "passage",
            passage(&m, "green", k.departs),
        );
        let (ends, arrival) = match k.fate {
            Fate::OnTime => (k.departs + TRIP, Some((k.to, k.departs + TRIP))),
            Fate::Late => (k.departs + LATE, Some((k.to, k.departs + LATE))),
            Fate::Never => (k.departs + TRIP, None),
            // Seen at a post far off its route, then never again.
            Fate::Diverted => {
                let off = (k.from + POSTS / 2) % POSTS;
                let seen = k.departs + TRIP * 3 / 4;
                at(seen, off, "passage", passage(&m, "green", seen));
                (seen, None)
            }
        };
        if let Some((post, time)) = arrival {
            at(time, post, "passage", passage(&m, "green", time));
        }
        let mut f = k.departs + FIX_EVERY;
        while f < ends {
            if f >= from && f < to {
                let x = ((f - k.departs) as f64 / TRIP as f64).min(1.0);
                let time = acsgd_central::tracking::time_text(f);
                at(
                    f,
                    k.from,
                    "position",
                    json!({"device": format!("seal-{t}"), "sensor": "seals", "fixes": [{
                        "source": "POS_DATA", "valid": true, "speed": 60.0, "time": time,
                        "lat": 44.2125 - 0.9736 * x, "lon": 80.4089 - 3.5192 * x}]}),
                );
            }
            f += FIX_EVERY;
        }
    }
    // Ten alerts an hour at each post, six minutes apart, each post at its own minute.
    for p in 0..POSTS {
        let mut a = (p as i64 * 7_919) % (6 * MINUTE);
        while a < to {
            at(
                a,
                p,
                "alert",
                json!({"severity": "low", "rule": "plate_unread", "channel": "green", "lane": "1",
                       "message": {"key": "alert.plate_unread", "params": {}}}),
            );
            a += 6 * MINUTE;
        }
    }
    out.sort_by_key(|e| e.time);
    out
}

fn main() {
    println!(
        "central day bench: {POSTS} posts, {} trucks, slices of {} simulated minutes; {} cores",
        POSTS * PER_POST_HOUR * DEPARTING_HOURS,
        SLICE / MINUTE,
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    support::on_backends("day.db", |name, url| async move { run(name, &url).await });
}

async fn run(name: &str, url: &str) {
    let store = Store::open(url).await.unwrap();
    let mut posts: Vec<Box_> = (0..POSTS)
        .map(|i| Box_ {
            ids: Ids::V7,
            ..Box_::new(&format!("post-{i:02}"))
        })
        .collect();
    for p in &posts {
        store.put_post(&p.registry_entry()).await.unwrap();
    }
    let trucks = trucks();
    // The day ended two hours ago (whole hours, so that its hours are the clock's).
    let day = (now_ms() / HOUR - 26) * HOUR;
    let positions = PositionsConfig::default();
    let mut worker: Worker<Message> = Worker::new(
        Ingestor::new(store.clone(), Limits::default())
            .await
            .unwrap(),
    );
    let mut held: Vec<Message> = Vec::new();
    let mut rss = Vec::new();
    let (mut events, mut ingest_s, mut accepted) = (0usize, 0f64, 0usize);
    let mut overdue_raised = 0usize;
    let mut declared = 0usize;
    let started = Instant::now();
    let mut from = 0;
    while from < 24 * HOUR {
        let to = from + SLICE;
        // The hour's declarations at its start, as the national system submits them.
        if from % HOUR == 0 {
            let h = from / HOUR;
            for (t, k) in trucks
                .iter()
                .enumerate()
                .filter(|(_, k)| k.declared == h * HOUR)
            {
                let d = json!({"mrn": mrn(t), "plates": [format!("{:03}ABC02", t % 1000)],
                    "tracker": format!("seal-{t}"),
                    "corridor": {"points": [[44.2125, 80.4089], [43.2389, 76.8897]], "width_m": 5000},
                    "itinerary": [{"post": posts[k.from].post}, {"post": posts[k.to].post, "within_h": WITHIN_H}]});
                declare::submit(&store, &d, "operator:bench", day + k.declared)
                    .await
                    .unwrap()
                    .unwrap();
                declared += 1;
            }
        }
        // What the post that was down kept comes first once it is back, in its order.
        let mut msgs: Vec<Message> = if from >= DOWN_TO {
            std::mem::take(&mut held)
        } else {
            Vec::new()
        };
        for e in slice(&trucks, from, to) {
            let p = &mut posts[e.post];
            let m = Message {
                topic: p.topic(e.kind),
                payload: p.event(e.kind, day + e.time, e.body),
            };
            if e.post == DOWN && (DOWN_FROM..DOWN_TO).contains(&e.time) {
                held.push(m);
            } else {
                msgs.push(m);
            }
        }
        events += msgs.len();
        let t0 = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::channel(msgs.len().max(1));
        for m in msgs {
            tx.try_send(m).unwrap();
        }
        drop(tx);
        while let Some((_, out)) = worker.next(&mut rx, Clone::clone).await {
            accepted += out.iter().filter(|o| **o == Outcome::Accepted).count();
        }
        ingest_s += t0.elapsed().as_secs_f64();
        // The scheduler at the slice's end.
        let now = day + to;
        overdue_raised += store.scan_overdue(now).await.unwrap().len();
        store.scan_silent(now, &positions).await.unwrap();
        assert!(
            store.due_gaps(now, 10 * MINUTE).await.unwrap().is_empty(),
            "no seq gap"
        );
        if to % HOUR == 0 {
            rss.push(support::rss_mib());
        }
        from = to;
    }
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(accepted, events, "every event accepted");
    assert_eq!(store.count(Table::Journal).await.unwrap() as usize, events);

    // Each truck's end as the day was built.
    let states: BTreeMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT state, COUNT(*) FROM transit GROUP BY state")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    let count = |f: Fate| trucks.iter().filter(|k| k.fate == f).count() as i64;
    let expected: BTreeMap<String, i64> = [
        (
            "arrived".to_string(),
            count(Fate::OnTime) + count(Fate::Late),
        ),
        (
            "overdue".to_string(),
            count(Fate::Never) + count(Fate::Diverted),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(states, expected, "final states");
    let logged = |sql: &'static str| {
        let store = store.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(store.pool())
                .await
                .unwrap()
        }
    };
    let diverted =
        logged("SELECT COUNT(DISTINCT mrn) FROM transit_log WHERE to_state = 'diverted'").await;
    assert_eq!(
        diverted,
        count(Fate::Diverted),
        "each diverted truck was diverted"
    );
    let rescinded =
        logged("SELECT COUNT(DISTINCT mrn) FROM transit_log WHERE note LIKE '%overdue rescinded%'")
            .await;
    // In time at the post that was down, due before it came back: overdue meanwhile (for sure
    // when due a whole slice before; maybe when due in the last slice, by the scan at its
    // end), rescinded once what the post kept arrived.
    let due_before = |by: i64| {
        trucks
            .iter()
            .filter(|k| {
                k.fate == Fate::OnTime
                    && k.to == DOWN
                    && (DOWN_FROM..DOWN_TO).contains(&(k.departs + TRIP))
                    && k.departs + (WITHIN_H * HOUR as f64) as i64 <= by
            })
            .count() as i64
    };
    let due_while_down = due_before(DOWN_TO - SLICE);
    assert!(
        (due_while_down..=due_before(DOWN_TO)).contains(&rescinded),
        "{rescinded} rescinded, {due_while_down} due while the post was down"
    );

    println!(
        "{name:8} {events} events of a day in {wall:.0} s ({ingest_s:.0} s in the ingest: {:.0} events/s); {declared} declarations",
        events as f64 / ingest_s
    );
    println!(
        "{name:8} final states {states:?}; overdue raised {overdue_raised}, diverted {diverted}, rescinded by late proof {rescinded} ({due_while_down} due while post-07 was down)"
    );
    println!(
        "{name:8} resident memory at the end of each simulated hour, MiB: {}",
        support::mib(&rss, " ")
    );
    let after = &rss[3..];
    println!(
        "{name:8} from hour 4 to 24: min {:.0}, max {:.0}, last {:.0} MiB",
        after.iter().copied().fold(f64::MAX, f64::min),
        after.iter().copied().fold(0.0, f64::max),
        rss.last().copied().unwrap_or(0.0)
    );
    // What a day of posts costs on disk: the database as the backend counts it (SQLite's
    // pages, WAL not included: it is checkpointed back; PostgreSQL's files of this database).
    let size_sql = match store.backend() {
        Backend::Sqlite => {
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
        }
        Backend::Postgres => "SELECT pg_database_size(current_database())",
    };
    let size = || async {
        sqlx::query_scalar::<_, i64>(size_sql)
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    let bytes = size().await;
    println!(
        "{name:8} database at the end of the day: {:.0} MiB, {:.0} bytes an event",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / events as f64
    );
    // What of the day stays for good: retention forgets it once it is `keep_positions_days`
    // old, as if that were now; then the files compacted (central never does that itself:
    // the space freed is used again by the next days' rows), so the size is what is kept.
    let t = Instant::now();
    let gone = store
        .prune_position_events(i64::MAX, u64::MAX)
        .await
        .unwrap();
    let tracks = store.prune_tracks(i64::MAX, u64::MAX).await.unwrap();
    let prune_s = t.elapsed().as_secs_f64();
    let compact = match store.backend() {
        Backend::Sqlite => "VACUUM",
        Backend::Postgres => "VACUUM FULL",
    };
    sqlx::raw_sql(compact).execute(store.pool()).await.unwrap();
    let kept = size().await;
    println!(
        "{name:8} after retention ({gone} position events and the fixes of {} transits off the road, {} fixes, forgotten in {prune_s:.1} s): {:.0} MiB kept for good, {:.0} bytes an event",
        tracks.transits,
        tracks.fixes,
        kept as f64 / (1 << 20) as f64,
        kept as f64 / events as f64
    );
}
