//! `cargo bench -p acsgd-central --bench ingest`: events/s through central's ingest with
//! signature check, de-duplication, seq tracking and transit updates, on SQLite and on a
//! PostgreSQL cluster the bench starts itself (`ACSGD_BENCH_DB=sqlite|postgres|both`,
//! default both).
//!
//! The events are signed beforehand by 50 stand-in posts (signing is the appliance's cost, not
//! central's) and fed to [`Ingestor::handle`] in batches of 512, as the service's worker takes
//! them from the broker: what is measured is verification plus the database. Mix per post: 70 %
//! positions (each a fix of a departed transit's seal, stored and judged against its corridor),
//! 20 % passages of declared transits (each seen at its departure post, then at
//! its destination), 10 % alerts. `ACSGD_BENCH_N` sets the event count (default 100 000).
//!
//! Printed: events/s, and the commit time of a batch (p50, p99, max): an event waits at most one
//! batch behind the one being committed, so its delivery-to-commit latency is under two batch
//! times at full load.

#[path = "../tests/it/common.rs"]
#[allow(dead_code)]
mod common;

use std::time::Instant;

use acsgd_central::declare;
use acsgd_central::ingest::{Ingestor, Limits, Message, Outcome};
use acsgd_central::store::{now_ms, Store, Table};
use serde_json::json;

use common::{passage, Box_, Pg};

const POSTS: usize = 50;
const BATCH: usize = 512;

fn mrn(i: usize) -> String {
    format!("26KZ55{:012}", i)
}

fn main() {
    let n: usize = std::env::var("ACSGD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let which = std::env::var("ACSGD_BENCH_DB").unwrap_or_else(|_| "both".into());
    let passages_pct: usize = std::env::var("ACSGD_BENCH_PASSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|p| *p <= 90)
        .unwrap_or(20);
    println!(
        "central ingest bench: {n} events from {POSTS} posts, batches of {BATCH}; {} cores",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    if which == "sqlite" || which == "both" {
        let url = format!("sqlite:{}", dir.path().join("bench.db").display());
        rt.block_on(run("sqlite", &url, n, passages_pct));
    }
    if which == "postgres" || which == "both" {
        let pg = Pg::start();
        rt.block_on(run("postgres", &pg.url(), n, passages_pct));
    }
}

async fn run(name: &str, url: &str, n: usize, passages_pct: usize) {
    let store = Store::open(url).await.unwrap();
    let mut posts: Vec<Box_> = (0..POSTS)
        .map(|i| Box_::new(&format!("post-{i:02}")))
        .collect();
    for p in &posts {
        store.put_post(&p.registry_entry()).await.unwrap();
    }
    let now = now_ms();
    // Each transit is seen twice: at its departure post, then at its destination.
    let transits = (n * passages_pct / 100).div_ceil(2).max(1);
    for t in 0..transits {
        let from = &posts[t % POSTS].post;
        let to = &posts[(t + 1) % POSTS].post;
        let d = json!({"mrn": mrn(t), "plates": [format!("{t:03}ABC02")], "tracker": format!("seal-{t}"),
            "corridor": {"points": [[44.2125, 80.4089], [43.2389, 76.8897]], "width_m": 5000},
            "itinerary": [{"post": from}, {"post": to, "within_h": 24}]});
        declare::submit(&store, &d, "operator:bench", now)
            .await
            .unwrap()
            .unwrap();
    }
    // The events, signed up front, in the order a broker would interleave the posts.
    let mut msgs = Vec::with_capacity(n);
    let mut passages = 0usize;
    for i in 0..n {
        let mut k = i % POSTS;
        let t = now - 3_600_000 + (i as i64);
        let roll = i % 100;
        let (kind, body) = match roll {
            r if r < passages_pct => {
                // The first half of the passages are departures (transit p at post p % POSTS),
                // the second half the arrivals at the next post, in the same order.
                let (tr, arriving) = if passages < transits {
                    (passages, false)
                } else {
                    ((passages - transits) % transits, true)
                };
                k = (tr + usize::from(arriving)) % POSTS;
                passages += 1;
                ("passage", passage(&mrn(tr), "green", t))
            }
            r if r < passages_pct + 10 => (
                "alert",
                json!({"severity": "low", "rule": "plate_unread", "channel": "green", "lane": "1",
                       "message": {"key": "alert.plate_unread", "params": {}}}),
            ),
            // A fix of the seal of a transit on the road (departed, not yet arrived), as a
            // post's seal listener forwards it: stored and judged against its corridor.
            _ => {
                let departed = passages.min(transits);
                let arrived = passages.saturating_sub(transits).min(transits);
                let tr = if departed > arrived {
                    arrived + i % (departed - arrived)
                } else {
                    i % transits
                };
                let f = (i % 1000) as f64 / 1000.0;
                let time = acsgd_central::tracking::time_text(t);
                (
                    "position",
                    json!({"device": format!("seal-{tr}"), "sensor": "seals", "fixes": [{
                        "source": "POS_DATA", "valid": true, "speed": 60.0, "time": time,
                        "lat": 44.2125 - 0.9736 * f, "lon": 80.4089 - 3.5192 * f}]}),
                )
            }
        };
        let p = &mut posts[k];
        msgs.push(Message {
            topic: p.topic(kind),
            payload: p.event(kind, t, body),
        });
    }
    // What the signatures alone cost, on one core: the part of the work that needs no database.
    let keys: std::collections::HashMap<String, ed25519_dalek::VerifyingKey> = posts
        .iter()
        .map(|p| (p.post.clone(), p.signer.verifying_key()))
        .collect();
    let t0 = Instant::now();
    for m in &msgs {
        let post = m.topic.split('/').nth(2).unwrap();
        acsgd_contract::envelope::Envelope::verify(&m.payload, &keys[post]).unwrap();
    }
    println!(
        "{name:8} signature check alone: {:>8.0} events/s on one core",
        n as f64 / t0.elapsed().as_secs_f64()
    );
    let mut ingestor = Ingestor::new(store.clone(), Limits::default())
        .await
        .unwrap();
    let mut batch_ms = Vec::new();
    let start = Instant::now();
    let mut accepted = 0usize;
    // The process's resident memory through the run: central must not grow with what it has
    // seen (everything it keeps is in the database).
    let mut rss = Vec::new();
    let chunks = msgs.len().div_ceil(BATCH);
    for (k, chunk) in msgs.chunks(BATCH).enumerate() {
        let t0 = Instant::now();
        let out = ingestor.handle(chunk, now_ms()).await.unwrap();
        batch_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        accepted += out.iter().filter(|o| **o == Outcome::Accepted).count();
        if k == chunks / 10 || k == chunks / 2 || k + 1 == chunks {
            rss.push(rss_mib());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    batch_ms.sort_by(f64::total_cmp);
    let pct = |q: f64| batch_ms[((batch_ms.len() - 1) as f64 * q) as usize];
    assert_eq!(accepted, n, "every event accepted");
    assert_eq!(store.count(Table::Journal).await.unwrap() as usize, n);
    // The positions were fixes of transits on the road, each stored and judged.
    let fixes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM fix")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(fixes as usize > n / 2, "{fixes} fixes stored");
    println!(
        "{name:8} {:>8.0} events/s ({n} in {secs:.1} s); batch commit p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        n as f64 / secs,
        pct(0.5),
        pct(0.99),
        batch_ms.last().copied().unwrap_or(0.0)
    );
    println!(
        "{name:8} resident memory at 10 %, 50 %, 100 % of the events: {} MiB",
        rss.iter()
            .map(|m| format!("{m:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// This process's resident set, MiB (Linux).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
