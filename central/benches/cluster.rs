//! `cargo bench -p acsgd-central --bench cluster`: the load test of central at scale. 200
//! simulated posts (`ACSGD_LOAD_POSTS`), each with its own broker account, publish signed
//! envelopes at QoS 1 to a 3-node NATS cluster (JetStream, MQTT on every node, posts spread
//! over the nodes), beside two real `acsgd` appliances fed through their ingest; central
//! commits into PostgreSQL, as one worker with the wildcard filter or (`ACSGD_LOAD_WORKERS=2`)
//! two workers sharing the posts: by `[broker] share` (the wildcard each, the other share's
//! messages acknowledged unread) or, with `ACSGD_LOAD_SHARING=list`, by `[broker] posts`, one
//! filter per post (on NATS each filter is a JetStream consumer, and that costs the brokers
//! dearly: the comparison is the point). `ACSGD_LOAD_WRITERS` sets each worker's `[store]
//! writers` (default 2 on PostgreSQL). Run twice from
//! scratch: undisturbed, then with one NATS node killed (SIGKILL) when the brokers have
//! acknowledged a third of the events.
//!
//! Needs the release `acsgd` beside the bench's `acsgd-central` (`cargo build --release -p
//! acsgd`), the nats-server `.ci/setup` fetches, and Debian's PostgreSQL.
//!
//! The load generator is open-loop per post: each post keeps up to 100 messages in flight
//! (as the appliance's uplink does) and, when its node goes away, connects to the next node
//! with the same client id and sends again everything not yet acknowledged (central drops
//! the doubles on `id`). What is checked at the end, so that a fast run that loses events
//! fails: every event of every post is in central's journal, each post's seqs contiguous,
//! with no gap; the appliances' outboxes drained and all their events at central.
//!
//! Printed: events/s acknowledged by the brokers and committed by central (whole run, and the
//! steadiest 10 s); in the undisturbed run, the CPU time each kind of process (brokers,
//! central, PostgreSQL, the generator, the appliances) spent per event, which says what the
//! rate would need on machines of their own; after the kill, how long until the killed
//! node's posts were acknowledged again, and until central's commit rate was back to what
//! it was before.

#[path = "../tests/it/common.rs"]
#[allow(dead_code)]
mod common;

#[path = "../tests/it/cluster.rs"]
#[allow(dead_code)]
mod cluster;
mod support;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acsgd_central::store::Store;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::json;

use cluster::{appliance, post_key, secret, start_worker, worker_config, Auth, Cluster, Take};
use common::{alerts, free_port, outbox_stat, wait, Box_, Pg};

/// Messages one simulated post keeps in flight.
const WINDOW: usize = 100;
/// The real appliances, and how many alerts each is fed.
const APPLIANCES: [&str; 2] = ["korgas", "kordai"];
const APPLIANCE_ALERTS: usize = 2000;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let posts = env_num("ACSGD_LOAD_POSTS", 200);
    let per_post = env_num("ACSGD_LOAD_PER_POST", 500);
    println!(
        "central load: {posts} simulated posts x {per_post} events + {} appliances x {APPLIANCE_ALERTS} alerts; 3 NATS nodes, PostgreSQL; {} cores",
        APPLIANCES.len(),
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let which = std::env::var("ACSGD_LOAD_RUNS").unwrap_or_else(|_| "both".into());
    let one_worker = env_num("ACSGD_LOAD_WORKERS", 1) == 1;
    let by_list = std::env::var("ACSGD_LOAD_SHARING").is_ok_and(|s| s == "list");
    if one_worker {
        println!("one worker, subscribed to every post with one wildcard filter");
    } else if by_list {
        println!("two workers, each with a list of half the posts, one filter per post");
    } else {
        println!("two workers, each with a share of the posts by hash (share = \"K/2\"), one wildcard filter each");
    }
    for kill in [false, true] {
        if which == "both" || (which == "kill") == kill {
            run(posts, per_post, kill, one_worker, by_list);
        }
    }
}

/// One post of the generator: its client id, account, and signed events.
struct Sim {
    post: String,
    events: Vec<Vec<u8>>,
}

fn run(posts: usize, per_post: usize, kill: bool, one_worker: bool, by_list: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names: Vec<String> = (0..posts).map(|i| format!("sim-{i:03}")).collect();
    let mut accounts: Vec<&str> = names.iter().map(String::as_str).collect();
    accounts.extend(APPLIANCES);
    // One filter per post in a worker's session: at most 64 unacknowledged each, so that a
    // session's 65 535 hold a hundred posts and more (see `Cluster::start_with`).
    let mut cluster = Cluster::start_with(d, &accounts, if one_worker { 1024 } else { 64 });
    let pg = Pg::start();
    let db = pg.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(Store::open(&db)).unwrap();

    // The posts' keys pinned at central, the events signed up front (the posts' cost).
    let now = acsgd_central::store::now_ms();
    let mut sims = Vec::with_capacity(posts);
    for name in &names {
        let mut b = Box_::new(name);
        rt.block_on(store.put_post(&b.registry_entry())).unwrap();
        let events = (0..per_post)
            .map(|k| {
                let t = now - 600_000 + k as i64 * 10;
                if k % 2 == 0 {
                    b.event(
                        "alert",
                        t,
                        json!({"severity": "low", "rule": "plate_unread", "channel": "green", "lane": "1",
                               "message": {"key": "alert.plate_unread", "params": {}}}),
                    )
                } else {
                    let time = acsgd_central::tracking::time_text(t);
                    b.event(
                        "position",
                        t,
                        json!({"device": format!("seal-{name}"), "sensor": "seals", "fixes": [{
                            "source": "POS_DATA", "valid": true, "speed": 60.0, "time": time,
                            "lat": 44.0, "lon": 79.0 + k as f64 * 1e-4}]}),
                    )
                }
            })
            .collect();
        sims.push(Sim {
            post: name.clone(),
            events,
        });
    }
    for post in APPLIANCES {
        let entry = acsgd_central::store::Post {
            id: post.into(),
            name: post.into(),
            public_key: post_key(d, post),
            lat: None,
            lon: None,
        };
        rt.block_on(store.put_post(&entry)).unwrap();
    }

    // One worker on node 0, or two with the posts split between them on nodes 0 and 1;
    // their sessions exist before anything is published.
    let (mut share_a, mut share_b): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
    for (i, p) in accounts.iter().enumerate() {
        if i % 2 == 0 {
            share_a.push(p)
        } else {
            share_b.push(p)
        }
    }
    let mut workers = Vec::new();
    let layout = if one_worker {
        vec![("a", 0, Take::Every)]
    } else if by_list {
        vec![
            ("a", 0, Take::Posts(&share_a)),
            ("b", 1, Take::Posts(&share_b)),
        ]
    } else {
        vec![("a", 0, Take::Share("1/2")), ("b", 1, Take::Share("2/2"))]
    };
    for (name, node, share) in layout {
        let http = free_port();
        let client = format!("central-{name}");
        let cfg = worker_config(
            d,
            name,
            &db,
            cluster.mqtt(node),
            http,
            &client,
            share,
            Auth::Password,
        );
        // `ACSGD_LOAD_WRITERS`: each worker's `[store] writers` (PostgreSQL's default, 2,
        // when unset).
        if let Ok(w) = std::env::var("ACSGD_LOAD_WRITERS") {
            let text = std::fs::read_to_string(&cfg).unwrap();
            let text = text.replacen("[broker]", &format!("writers = {w}\n[broker]"), 1);
            std::fs::write(&cfg, text).unwrap();
        }
        workers.push(start_worker(&cfg, &d.join(format!("{name}.log")), http));
    }
    // The appliances: Korgas on node 1, Kordai on node 2 (the one killed).
    let boxes: Vec<_> = APPLIANCES
        .iter()
        .zip([1usize, 2])
        .map(|(post, node)| appliance(d, post, cluster.mqtt(node)))
        .collect();

    let total = posts * per_post;
    let ports: Vec<u16> = (0..3).map(|i| cluster.mqtt(i)).collect();
    let acked = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_by_role(pg.postmaster());
    // When the killed node's posts were acknowledged again (ms since the start), per post.
    let start_at = Instant::now();
    let feeders: Vec<_> = boxes
        .iter()
        .map(|(_, ingest, _)| {
            let ingest = *ingest;
            std::thread::spawn(move || {
                for _ in 0..APPLIANCE_ALERTS / 100 {
                    alerts(ingest, 100);
                }
            })
        })
        .collect();
    let killed_node = 2usize;
    let gen = {
        let acked = acked.clone();
        let ports = ports.clone();
        rt.spawn(async move {
            let mut tasks = Vec::new();
            for (i, sim) in sims.into_iter().enumerate() {
                let acked = acked.clone();
                let ports = ports.clone();
                tasks.push(tokio::spawn(async move {
                    publish_post(sim, i % 3, &ports, &acked, start_at).await
                }));
            }
            let mut outages = Vec::new();
            for t in tasks {
                outages.push(t.await.unwrap());
            }
            outages
        })
    };

    // Central's progress, sampled every 500 ms: (seconds, events committed, events acked).
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    let mut killed_at: Option<f64> = None;
    let want = total as u64;
    let deadline = Instant::now() + Duration::from_secs(1200);
    let cpu_after = loop {
        std::thread::sleep(Duration::from_millis(500));
        // The simulated posts' events (the appliances add their own health and status).
        let committed: i64 = rt
            .block_on(
                sqlx::query_scalar("SELECT COUNT(*) FROM journal WHERE post LIKE 'sim-%'")
                    .fetch_one(store.pool()),
            )
            .unwrap();
        let t = start_at.elapsed().as_secs_f64();
        samples.push((t, committed as u64, acked.load(Ordering::Relaxed)));
        // A third of the events in: by the brokers' acknowledgements, so that the kill lands
        // while the posts are still publishing whichever of the brokers and central is ahead.
        if kill && killed_at.is_none() && acked.load(Ordering::Relaxed) as usize >= total / 3 {
            cluster.kill(killed_node);
            killed_at = Some(start_at.elapsed().as_secs_f64());
        }
        if committed as u64 >= want {
            break cpu_by_role(pg.postmaster());
        }
        assert!(
            Instant::now() < deadline,
            "not all committed in 20 min: {committed} of {want}"
        );
    };
    let outages: Vec<Vec<(f64, f64)>> = rt.block_on(gen).unwrap();
    if killed_at.is_some() {
        // The node comes back, and the appliance that knows only it drains what it kept.
        cluster.start_node(killed_node);
        cluster.wait_healthy(killed_node);
    }
    for f in feeders {
        f.join().unwrap();
    }

    // Nothing lost: every post's seqs contiguous to its last, no gap; the appliances drained.
    let progress: Vec<(String, i64, i64)> = rt
        .block_on(
            sqlx::query_as("SELECT post, contiguous_seq, highest_seq FROM post_state")
                .fetch_all(store.pool()),
        )
        .unwrap();
    for name in &names {
        let p = progress.iter().find(|p| &p.0 == name).expect("a post seen");
        assert_eq!((p.1, p.2), (per_post as i64, per_post as i64), "{name}");
    }
    for post in APPLIANCES {
        let (last, _) = wait(300, &format!("{post}'s outbox drained"), || {
            let (last, backlog) = outbox_stat(&d.join(post));
            (last as usize >= APPLIANCE_ALERTS && backlog == 0).then_some((last, backlog))
        });
        wait(300, &format!("central has all of {post}"), || {
            let p: Option<(i64, i64)> = rt
                .block_on(
                    sqlx::query_as(
                        "SELECT contiguous_seq, highest_seq FROM post_state WHERE post = $1",
                    )
                    .bind(post)
                    .fetch_optional(store.pool()),
                )
                .unwrap();
            (p == Some((last, last))).then_some(())
        });
    }
    let gaps: i64 = rt
        .block_on(sqlx::query_scalar("SELECT COUNT(*) FROM seq_gap").fetch_one(store.pool()))
        .unwrap();
    assert_eq!(gaps, 0);
    let quarantined: i64 = rt
        .block_on(sqlx::query_scalar("SELECT COUNT(*) FROM quarantine").fetch_one(store.pool()))
        .unwrap();
    assert_eq!(quarantined, 0);

    let secs = samples.last().map_or(0.0, |s| s.0);
    let acked_all = samples
        .iter()
        .find(|s| s.2 as usize >= total)
        .map_or(secs, |s| s.0);
    let label = if kill { "node killed" } else { "undisturbed" };
    println!(
        "{label:12} the simulated posts' {total} events committed in {secs:.1} s: {:.0} events/s; acknowledged by the brokers in {acked_all:.1} s: {:.0} events/s",
        want as f64 / secs,
        total as f64 / acked_all,
    );
    println!(
        "{label:12} commit rate over the steadiest 10 s: {}; generator connections lost and resumed: {}",
        best_window(&samples, 10.0, |s| s.1).map_or("the run was shorter".into(), |r| format!("{r:.0} events/s")),
        outages.iter().map(Vec::len).sum::<usize>()
    );
    // Where the two cores went, per event committed: what the 20 000 events/s would take. Not
    // after a kill: the killed node's CPU time went with it.
    if killed_at.is_none() {
        let per_event: Vec<(&str, f64)> = ROLES
            .iter()
            .filter_map(|role| {
                let s = cpu_after.get(role)? - cpu_before.get(role).unwrap_or(&0.0);
                Some((*role, 1e6 * s / total as f64))
            })
            .collect();
        let all: f64 = per_event.iter().map(|(_, us)| us).sum();
        println!(
            "{label:12} CPU per event, from the first publish to the last commit: {}; all {all:.0} µs, {:.1} cores at 20 000 events/s",
            per_event
                .iter()
                .map(|(role, us)| format!("{role} {us:.0} µs"))
                .collect::<Vec<_>>()
                .join(", "),
            all * 20_000.0 / 1e6,
        );
    }
    if let Some(k) = killed_at {
        let before = rate_between(&samples, k - 10.0, k, |s| s.1);
        let back = samples
            .windows(5)
            .filter(|w| w[0].0 > k)
            .find(|w| {
                let (a, b) = (w[0], w[4]);
                (b.1 - a.1) as f64 / (b.0 - a.0) >= 0.8 * before
            })
            .map(|w| w[0].0 - k);
        // The posts whose connection the kill broke: how long until they were acknowledged.
        let reacked: Vec<f64> = outages
            .iter()
            .flatten()
            .filter(|(lost, _)| *lost >= k)
            .map(|(_, back)| back - k)
            .collect();
        println!(
            "{label:12} node {killed_node} killed at {k:.1} s ({:.0} events/s before); its posts acknowledged again after {:.1} s (the last of {}); commit rate back to 80 % after {}",
            before,
            reacked.iter().copied().fold(0.0, f64::max),
            reacked.len(),
            back.map_or("never (in the run)".to_string(), |b| format!("{b:.1} s")),
        );
    }
    for mut w in workers {
        w.terminate();
    }
}

/// What [`cpu_by_role`] tells apart, in the order printed.
const ROLES: [&str; 6] = [
    "brokers",
    "central",
    "PostgreSQL",
    "generator",
    "appliances",
    "other",
];

/// CPU seconds (user and system) used so far by the processes of this run, by role: the NATS
/// servers, central's workers, PostgreSQL (the postmaster and its backends), the appliances,
/// and this process (the load generator and the progress queries). A process that has exited
/// (a killed node) is no longer counted.
fn cpu_by_role(postmaster: Option<u32>) -> HashMap<&'static str, f64> {
    let procs = support::processes();
    let me = std::process::id();
    let roots: Vec<u32> = std::iter::once(me).chain(postmaster).collect();
    let mut by_role = HashMap::new();
    // Only this run's processes: descendants of this process or of the postmaster.
    for (&pid, p) in procs
        .iter()
        .filter(|(pid, _)| support::descends(&procs, **pid, &roots))
    {
        let role = match p.comm.as_str() {
            _ if pid == me => "generator",
            "nats-server" => "brokers",
            "acsgd-central" => "central",
            "postgres" => "PostgreSQL",
            "acsgd" => "appliances",
            _ => "other",
        };
        *by_role.entry(role).or_insert(0.0) += p.cpu_s();
    }
    by_role
}

/// The commit (or ack) rate between two moments.
fn rate_between(
    s: &[(f64, u64, u64)],
    from: f64,
    to: f64,
    f: impl Fn(&(f64, u64, u64)) -> u64,
) -> f64 {
    let a = s.iter().find(|x| x.0 >= from);
    let b = s.iter().rev().find(|x| x.0 <= to);
    match (a, b) {
        (Some(a), Some(b)) if b.0 > a.0 => (f(b) - f(a)) as f64 / (b.0 - a.0),
        _ => 0.0,
    }
}

/// The best rate over any `secs` window of the samples.
/// The best rate over `secs`; `None` when the run was shorter.
fn best_window(
    s: &[(f64, u64, u64)],
    secs: f64,
    f: impl Fn(&(f64, u64, u64)) -> u64,
) -> Option<f64> {
    let mut best = None;
    for (i, a) in s.iter().enumerate() {
        if let Some(b) = s[i..].iter().find(|b| b.0 - a.0 >= secs) {
            let r = (f(b) - f(a)) as f64 / (b.0 - a.0);
            best = Some(r.max(best.unwrap_or(0.0)));
        }
    }
    best
}

/// Publishes one post's events with up to [`WINDOW`] in flight; when its node goes away,
/// connects to the next one with the same session and sends again what was not
/// acknowledged. Returns, for each lost connection, when (seconds after `began`) it was lost
/// and when the next acknowledgement came.
async fn publish_post(
    sim: Sim,
    first_node: usize,
    ports: &[u16],
    acked: &AtomicU64,
    began: Instant,
) -> Vec<(f64, f64)> {
    let topic_of = |e: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(e).unwrap();
        format!("acsgd/v1/{}/{}", sim.post, v["type"].as_str().unwrap())
    };
    let topics: Vec<String> = sim.events.iter().map(|e| topic_of(e)).collect();
    let mut done = vec![false; sim.events.len()];
    let mut left = sim.events.len();
    let mut node = first_node;
    let mut outages: Vec<(f64, f64)> = Vec::new();
    let mut lost_at: Option<f64> = None;
    while left > 0 {
        let mut o = MqttOptions::new(format!("gen-{}", sim.post), "127.0.0.1", ports[node]);
        o.set_credentials(&sim.post, secret(&sim.post));
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(10));
        o.set_inflight(WINDOW as u16);
        let (client, mut ev) = AsyncClient::new(o, WINDOW * 2);
        // Sent on this connection, in order, awaiting their packet id: message indexes.
        let mut queued: VecDeque<usize> = VecDeque::new();
        let mut in_flight: HashMap<u16, usize> = HashMap::new();
        let mut next = 0usize; // next message to consider sending
        let mut connected = false;
        loop {
            // Keep the window full.
            while connected && queued.len() + in_flight.len() < WINDOW && next < done.len() {
                if !done[next] {
                    client
                        .try_publish(
                            &topics[next],
                            QoS::AtLeastOnce,
                            false,
                            sim.events[next].clone(),
                        )
                        .unwrap();
                    queued.push_back(next);
                }
                next += 1;
            }
            match tokio::time::timeout(Duration::from_secs(30), ev.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => connected = true,
                Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(k) = queued.pop_front() {
                        in_flight.insert(pkid, k);
                    }
                }
                Ok(Ok(Event::Incoming(Packet::PubAck(a)))) => {
                    if let Some(k) = in_flight.remove(&a.pkid) {
                        if !done[k] {
                            done[k] = true;
                            left -= 1;
                            acked.fetch_add(1, Ordering::Relaxed);
                            if let Some(lost) = lost_at.take() {
                                outages.push((lost, began.elapsed().as_secs_f64()));
                            }
                        }
                    }
                    if left == 0 {
                        let _ = client.disconnect().await;
                        break;
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => {
                    // The node is gone (or silent): the next node, everything unacknowledged again.
                    lost_at.get_or_insert(began.elapsed().as_secs_f64());
                    node = (node + 1) % ports.len();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
    outages
}
