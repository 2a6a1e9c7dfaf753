//! `cargo bench -p acsgd-central --bench ingest`: events/s through central's ingest with
//! signature check, de-duplication, seq tracking and transit updates, on SQLite and on a
//! PostgreSQL cluster the bench starts itself (`ACSGD_BENCH_DB=sqlite|postgres|both`,
//! default both).
//!
//! The events are signed beforehand by 50 stand-in posts (signing is the appliance's cost, not
//! central's) and fed through the service's own ingest loop ([`Worker`]: batches of up to
//! 512, each committed while the next is checked; as many of them as the service has writers
//! on the backend, `[store] writers`, each fed its part of the posts): what is measured is
//! verification plus the database. Mix per post: 70 % positions (each a fix of a departed
//! transit's seal, stored and judged against its corridor, forwarded by the post the truck is
//! heading for), 20 % passages of declared transits (the first half each seen at its
//! departure post, the second half at its destination), 10 % alerts.
//! `ACSGD_BENCH_WRITERS` sets the writers (1 to 4).
//! `ACSGD_BENCH_N` sets the event count (default 100 000).
//!
//! The first half of the events wait all at once: printed, events/s and the time of a batch
//! (p50, p99, max). The second half (the arrivals, with every transit on the road by then, so
//! each batch's positions touch hundreds of transits) is offered at `ACSGD_BENCH_RATE` events/s
//! (default 20 000), as a broker would deliver it: printed, the rate taken and each event's time
//! from its arrival to its commit (p50, p99, max). A rate above what central takes shows as
//! latency growing with the queue; a very high one (`ACSGD_BENCH_RATE=1000000`) measures the
//! second half's events/s. For each half, the CPU time an event of this process (central)
//! and, on PostgreSQL, of the server's processes: what the two cores were busy with.

#[path = "../tests/it/common.rs"]
#[allow(dead_code)]
mod common;
mod support;

use std::time::Instant;

// The service's allocator (`src/main.rs`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use acsgd_central::config::MAX_WRITERS;
use acsgd_central::declare;
use acsgd_central::ingest::{Ingestor, Limits, Message, Outcome, Worker, BATCH, SIGNATURE_GROUP};
use acsgd_central::store::{now_ms, Store, Table};
use serde_json::json;

use common::{passage, Box_, Ids};

const POSTS: usize = 50;

fn mrn(i: usize) -> String {
    format!("26KZ55{:012}", i)
}

fn main() {
    let n: usize = std::env::var("ACSGD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let passages_pct: usize = std::env::var("ACSGD_BENCH_PASSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|p| *p <= 90)
        .unwrap_or(20);
    println!(
        "central ingest bench: {n} events from {POSTS} posts, batches of {BATCH}; {} cores",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    support::on_backends("bench.db", |name, url| async move {
        run(name, &url, n, passages_pct).await
    });
}

async fn run(name: &str, url: &str, n: usize, passages_pct: usize) {
    // The appliance's event ids (UUIDv7) unless told otherwise: `ACSGD_BENCH_IDS=v4` for the
    // random ones it made before, `readable` for `post-00-alert-00000001`.
    let ids = match std::env::var("ACSGD_BENCH_IDS").as_deref() {
        Ok("v4") => Ids::V4,
        Ok("readable") => Ids::Readable,
        _ => Ids::V7,
    };
    let store = Store::open(url).await.unwrap();
    // PostgreSQL's server (a backend's parent is the postmaster): the CPU time of its
    // processes is measured beside this process's, since the two share the cores.
    let server = if name == "postgres" {
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
        support::process(&backend.to_string()).map(|p| p.parent)
    } else {
        None
    };
    let server_cpu = || server.map_or(0.0, support::tree_cpu_s);
    let mut posts: Vec<Box_> = (0..POSTS)
        .map(|i| Box_ {
            ids,
            ..Box_::new(&format!("post-{i:02}"))
        })
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
                // Forwarded by the post the truck is heading for (its seal is heard there
                // before the truck arrives), so that a transit's fixes come from one post,
                // as its arrival does: with workers sharing the posts, one worker writes
                // each track.
                k = (tr + 1) % POSTS;
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
    // As central checks them: parsed, then in groups of SIGNATURE_GROUP.
    let t0 = Instant::now();
    for chunk in msgs.chunks(SIGNATURE_GROUP) {
        let items = chunk
            .iter()
            .map(|m| {
                let post = m.topic.split('/').nth(2).unwrap();
                (
                    acsgd_contract::envelope::Envelope::parse_signed(&m.payload).unwrap(),
                    keys[post],
                )
            })
            .collect();
        for r in acsgd_contract::envelope::verify_batch(items) {
            r.unwrap();
        }
    }
    println!(
        "{name:8} signature check in groups of {SIGNATURE_GROUP}: {:>8.0} events/s on one core",
        n as f64 / t0.elapsed().as_secs_f64()
    );
    // The statistics autovacuum keeps a running database in: its tables were filled a moment
    // ago, and PostgreSQL plans by what it last measured.
    sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
    let rate: f64 = std::env::var("ACSGD_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|r: &f64| *r > 0.0)
        .unwrap_or(20_000.0);
    let offered = msgs.split_off(msgs.len() / 2);
    let closed = msgs.len();
    // As many writers as the service has on this backend (`[store] writers`: 1 on SQLite, 2
    // on PostgreSQL), or `ACSGD_BENCH_WRITERS`: each its own ingestor (its own connection for
    // the commits) and its part of the posts ([`writer_of`]), fed as the service feeds them.
    let writers: u32 = std::env::var("ACSGD_BENCH_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|w| (1..=MAX_WRITERS).contains(w))
        .unwrap_or_else(|| {
            acsgd_central::config::StoreConfig {
                url: url.to_string(),
                writers: None,
                keep_positions_days: 0,
            }
            .writers()
        });
    println!("{name:8} writers: {writers}");
    let writer =
        move |m: &Message| -> usize { acsgd_central::config::writer_of(&m.topic, None, writers) };
    let mut workers = Vec::new();
    for _ in 0..writers {
        workers.push(Worker::new(
            Ingestor::new(store.clone(), Limits::default())
                .await
                .unwrap(),
        ));
    }
    let message = |m: &(Instant, Message)| m.1.clone();
    // The process's resident memory through the run: central must not grow with what it
    // has seen (everything it keeps is in the database).
    let mut rss = Vec::new();
    // The first half as fast as central takes them: all waiting before the workers start,
    // each on a worker thread of the runtime, through the service's own loop ([`Worker`]).
    let mut parts: Vec<Vec<Message>> = vec![Vec::new(); writers as usize];
    for m in msgs {
        parts[writer(&m)].push(m);
    }
    let cpu0 = cpu_s();
    let server0 = server_cpu();
    let start = Instant::now();
    let tasks: Vec<_> = workers
        .into_iter()
        .zip(parts)
        .enumerate()
        .map(|(w, (mut worker, part))| {
            tokio::spawn(async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel(part.len().max(1));
                let now = Instant::now();
                let fifth = part.len() / 5;
                for m in part {
                    tx.try_send((now, m)).unwrap();
                }
                drop(tx);
                let mut batch_ms = Vec::new();
                let mut t0 = Instant::now();
                let (mut done, mut accepted, mut rss) = (0, 0usize, None);
                while let Some((batch, out)) = worker.next(&mut rx, message).await {
                    batch_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                    t0 = Instant::now();
                    accepted += out.iter().filter(|o| **o == Outcome::Accepted).count();
                    let before = done;
                    done += batch.len();
                    if w == 0 && before < fifth && done >= fifth {
                        rss = Some(support::rss_mib());
                    }
                }
                (worker, batch_ms, accepted, rss)
            })
        })
        .collect();
    let mut workers = Vec::new();
    let mut batch_ms = Vec::new();
    let mut accepted = 0;
    for t in tasks {
        let (worker, ms, n, r) = t.await.unwrap();
        workers.push(worker);
        batch_ms.extend(ms);
        accepted += n;
        rss.extend(r);
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_s();
    let cpu = (cpu.0 - cpu0.0, cpu.1 - cpu0.1);
    let server_s = server_cpu() - server0;
    rss.push(support::rss_mib());
    let statements_wanted =
        std::env::var_os("ACSGD_BENCH_STATEMENTS").is_some() && name == "postgres";
    if statements_wanted {
        reset_statements(&store).await;
    }
    // The second half offered at `rate`, as a broker would deliver it (into a channel per
    // worker as deep as the service's); each event's latency from its arrival to its commit.
    let offered_n = offered.len();
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..writers)
        .map(|_| tokio::sync::mpsc::channel::<(Instant, Message)>(4096))
        .unzip();
    let feeder = tokio::spawn(async move {
        let t0 = tokio::time::Instant::now();
        for (i, m) in offered.into_iter().enumerate() {
            let at = t0 + std::time::Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(at).await;
            if txs[writer(&m)].send((at.into_std(), m)).await.is_err() {
                return;
            }
        }
    });
    let (cpu_offered0, server_offered0) = (cpu_s(), server_cpu());
    let start = Instant::now();
    let tasks: Vec<_> = workers
        .into_iter()
        .zip(rxs)
        .map(|(mut worker, mut rx)| {
            tokio::spawn(async move {
                // Each event's arrival (seconds into the run) and its wait to its commit.
                let mut arrivals = Vec::with_capacity(offered_n);
                let (mut accepted, mut batches) = (0usize, 0usize);
                while let Some((batch, out)) = worker.next(&mut rx, message).await {
                    batches += 1;
                    let now = Instant::now();
                    arrivals.extend(batch.iter().map(|(at, _)| {
                        (
                            at.saturating_duration_since(start).as_secs_f64(),
                            (now - *at).as_secs_f64() * 1000.0,
                        )
                    }));
                    accepted += out.iter().filter(|o| **o == Outcome::Accepted).count();
                }
                (arrivals, accepted, batches)
            })
        })
        .collect();
    let mut arrivals = Vec::with_capacity(offered_n);
    let mut offered_batches = 0;
    for t in tasks {
        let (l, n, b) = t.await.unwrap();
        arrivals.extend(l);
        accepted += n;
        offered_batches += b;
    }
    let offered_secs = start.elapsed().as_secs_f64();
    let cpu_offered = cpu_s();
    let cpu_offered = cpu_offered.0 + cpu_offered.1 - cpu_offered0.0 - cpu_offered0.1;
    let server_offered = server_cpu() - server_offered0;
    feeder.await.unwrap();
    rss.push(support::rss_mib());
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v.get(((v.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    // Where in the run the slow commits were: one stall of the machine and a slow regime
    // give the same p99 over the whole run, not the same p99 over its half seconds.
    let mut halves: Vec<Vec<f64>> = Vec::new();
    for &(at_s, ms) in &arrivals {
        let k = (at_s * 2.0) as usize;
        if halves.len() <= k {
            halves.resize_with(k + 1, Vec::new);
        }
        halves[k].push(ms);
    }
    let by_half: Vec<String> = halves
        .iter_mut()
        .map(|h| format!("{:.0}", pct(h, 0.99)))
        .collect();
    let mut latency_ms: Vec<f64> = arrivals.iter().map(|a| a.1).collect();
    assert_eq!(accepted, n, "every event accepted");
    assert_eq!(store.count(Table::Journal).await.unwrap() as usize, n);
    // The positions were fixes of transits on the road, each stored and judged.
    let fixes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM fix")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(fixes as usize > n / 2, "{fixes} fixes stored");
    println!(
        "{name:8} {:>8.0} events/s ({closed} as fast as taken, in {secs:.1} s); batch p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        closed as f64 / secs,
        pct(&mut batch_ms, 0.5),
        pct(&mut batch_ms, 0.99),
        pct(&mut batch_ms, 1.0),
    );
    println!(
        "{name:8} this process's CPU: {:.1} µs an event ({:.2} of {secs:.1} s on the cores: user {:.2}, system {:.2} s){}",
        (cpu.0 + cpu.1) * 1e6 / closed as f64,
        cpu.0 + cpu.1,
        cpu.0,
        cpu.1,
        server.map_or(String::new(), |_| format!(
            "; the server's: {:.1} µs an event",
            server_s * 1e6 / closed as f64
        ))
    );
    println!(
        "{name:8} {} offered at {rate:.0}/s: taken at {:.0}/s; arrival to commit p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latency_ms.len(),
        latency_ms.len() as f64 / offered_secs,
        pct(&mut latency_ms, 0.5),
        pct(&mut latency_ms, 0.99),
        pct(&mut latency_ms, 1.0),
    );
    println!(
        "{name:8} arrival to commit p99 by half second of arrival: {} ms",
        by_half.join(" ")
    );
    // How busy the cores were while the events were offered: a queue's wait grows as they
    // fill, whatever the batches do.
    let offered_events = latency_ms.len().max(1) as f64;
    println!(
        "{name:8} CPU while offered: this process {:.1} µs an event{}; {:.2} cores busy; {offered_batches} batches of {:.0} events on average",
        cpu_offered * 1e6 / offered_events,
        server.map_or(String::new(), |_| format!(
            ", the server {:.1} µs",
            server_offered * 1e6 / offered_events
        )),
        (cpu_offered + server_offered) / offered_secs,
        offered_events / offered_batches.max(1) as f64,
    );
    if statements_wanted {
        statements(&store).await;
    }
    println!(
        "{name:8} resident memory at 10 %, 50 %, 100 % of the events: {} MiB",
        support::mib(&rss, ", ")
    );
}

/// Forgets what PostgreSQL counted so far (statements, scans, WAL), so that [`statements`]
/// says what the second half, the arrivals, cost: not the declarations and departures.
async fn reset_statements(store: &Store) {
    for q in [
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        "SELECT pg_stat_statements_reset()",
        "SELECT pg_stat_reset()",
        "SELECT pg_stat_reset_shared('wal')",
    ] {
        // Without the library loaded these fail, and `statements` says so.
        let _ = sqlx::query(q).execute(store.pool()).await;
    }
}

/// PostgreSQL's statements by the server time they took in the second half (the arrivals;
/// `ACSGD_BENCH_STATEMENTS=1` with `ACSGD_PG_OPTS="-c shared_preload_libraries=pg_stat_statements"`):
/// where the backend's core goes; then the tables read whole, and what the commits waited
/// for the disk (its time with `-c track_wal_io_timing=on`, else 0).
async fn statements(store: &Store) {
    if sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(store.pool())
        .await
        .is_err()
    {
        println!("pg_stat_statements is not loaded (ACSGD_PG_OPTS)");
        return;
    }
    // The extension can be created without the library loaded; only reading it says so.
    // A statement with a different number of rows is another text to the server: those are
    // summed as one (parameters as `$`, lists of them and repeated rows cut to the first).
    let rows: Vec<(f64, f64, i64, i64, String)> = match sqlx::query_as(
        r"SELECT SUM(total_exec_time + total_plan_time)::float8, SUM(total_plan_time)::float8, SUM(calls)::int8, SUM(rows)::int8, q FROM (
            SELECT total_exec_time, total_plan_time, calls, rows, LEFT(
                regexp_replace(regexp_replace(regexp_replace(regexp_replace(query, '\s+', ' ', 'g'),
                    '\$\d+', '$', 'g'), '\$(, \$)+', '$…', 'g'), '(\([^()]*\))(, \([^()]*\))+', '\1, …', 'g'),
                150) AS q
            FROM pg_stat_statements) s
         GROUP BY q ORDER BY 1 DESC",
    )
    .fetch_all(store.pool())
    .await
    {
        Ok(rows) => rows,
        Err(e) => {
            println!("pg_stat_statements cannot be read ({e}): start the bench with ACSGD_PG_OPTS=\"-c shared_preload_libraries=pg_stat_statements\"");
            return;
        }
    };
    let (all, planned) = rows.iter().fold((0.0, 0.0), |(a, p), r| (a + r.0, p + r.1));
    println!("statements: {all:.0} ms, of it planning {planned:.0} ms; the 20 that took longest:");
    for (ms, plan_ms, calls, n, q) in rows.into_iter().take(20) {
        println!("{ms:>9.0} ms (planning {plan_ms:>4.0}) {calls:>7} calls {n:>8} rows  {q}");
    }
    // The tables read whole: a plan that scans where it should look up grows with the table.
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, seq_scan, seq_tup_read, COALESCE(idx_scan, 0) FROM pg_stat_user_tables \
         WHERE seq_tup_read > 0 ORDER BY seq_tup_read DESC LIMIT 8",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    for (table, scans, read, idx) in rows {
        println!("{table:>16}: {scans:>6} scans read {read:>9} rows; {idx:>7} index scans");
    }
    // What the commits waited for the disk (with `-c track_wal_io_timing=on`).
    let (syncs, sync_ms, written_mib): (i64, f64, f64) = sqlx::query_as(
        "SELECT wal_sync, wal_sync_time, wal_bytes::float8 / 1048576 FROM pg_stat_wal",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    println!("WAL: {written_mib:.0} MiB, {syncs} syncs taking {sync_ms:.0} ms");
}

/// This process's CPU time so far, user and system, seconds.
fn cpu_s() -> (f64, f64) {
    support::process("self").map_or((0.0, 0.0), |p| (p.user_s, p.system_s))
}
