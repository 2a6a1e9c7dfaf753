//! `cargo bench -p acsgd --bench spine`: the spine's throughput against a local mosquitto.
//!
//! 1. raw rumqttc QoS 1 publish rate of real signed envelopes (same window as the uplink),
//! 2. outbox → broker drain rate through the real uplink (target ≥ 0.8 × raw),
//! 3. durable append rate with group commit and the append latency percentiles
//!    (target ≥ 50 000 events/s on 2 cores), for concurrent single-event producers and for
//!    producers appending 100 at a time (as the ingest does with a pipelined connection).
//!
//! Set `ACSGD_BENCH_N` to change the event count (default 50 000), and `ACSGD_BENCH_ONLY` to a
//! comma-separated list of `raw`, `drain`, `seal`, `append` (or one of `append-64x1`, `append-256x1`,
//! `append-8x100`) to run only those parts (to
//! profile one of them with `perf record`).
//!
//! The figures move between machines of one kind, so the bench first prints what they depend
//! on: the CPU features AWS-LC picks its Ed25519 and SHA-512 code paths by at run time (BMI2
//! and ADX for the curve arithmetic, AVX2 and AVX-512 for SHA-512), the cost of the fdatasync every accepted batch waits for on the file system
//! the bench writes to, and the load the machine carried when the bench started.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use acsgd::config::Config;
use acsgd::envelope::{Event, Signer};
use acsgd::health::Health;
use acsgd::mosquitto::Mosquitto;
use acsgd::outbox::{OpenMode, Outbox, Store};
use acsgd::uplink::{self, UplinkConfig, UplinkState};
use serde_json::json;

const WINDOW: u16 = 256;

fn event(i: usize) -> Event {
    Event::now(
        "position",
        json!({"tracker": format!("seal-{:04}", i % 500), "protocol": "egts", "mrn": "26KZ5500000001001A",
               "lat": 44.212_5 + i as f64 * 1e-6, "lon": 80.408_9, "speed_kmh": 61.5, "course": 258,
               "valid": true, "seal": "closed", "satellites": 11}),
    )
}

fn main() {
    let n: usize = std::env::var("ACSGD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&tmp.path().join("broker")).expect("mosquitto for the bench");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "machine: {} cores, {cpu}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("events: {n}, window {WINDOW}, broker mosquitto on loopback");
    depends_on(tmp.path());

    let signer = Signer::load_or_create(tmp.path(), "bench").unwrap();
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|i| signer.seal(&event(i), i as u64 + 1))
        .collect();
    let avg = payloads.iter().map(Vec::len).sum::<usize>() / n;
    println!("envelope size: {avg} B average\n");

    let only = std::env::var("ACSGD_BENCH_ONLY").unwrap_or_default();
    let runs = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    let steal_at_start = cpu_times();
    let mut raw = None;
    if runs("raw") {
        let r = rt.block_on(raw_publish(broker.port(), &payloads));
        println!("raw rumqttc QoS 1 publish     {:>9.0} msg/s", r);
        raw = Some(r);
    }
    if runs("drain") {
        let drain = rt.block_on(outbox_drain(&tmp.path().join("drain"), &broker.url(), n));
        match raw {
            Some(raw) => println!(
                "outbox -> broker drain        {:>9.0} msg/s  ({:.2} x raw; target >= 0.80)",
                drain,
                drain / raw
            ),
            None => println!("outbox -> broker drain        {:>9.0} msg/s", drain),
        }
    }

    if runs("seal") {
        let t = Instant::now();
        let m = 20_000;
        for i in 0..m {
            std::hint::black_box(signer.seal(&event(i), i as u64));
        }
        println!(
            "seal (canonical JSON + Ed25519) {:>7.0} events/s on one core",
            m as f64 / t.elapsed().as_secs_f64()
        );
    }

    let appends = [(64usize, 1usize), (256, 1), (8, 100)];
    let appends = appends
        .into_iter()
        .filter(|(p, c)| runs("append") || runs(&format!("append-{p}x{c}")));
    for (producers, per_call) in appends {
        let cpu_before = process_cpu_s();
        let wall = Instant::now();
        let (rate, p50, p99) = rt.block_on(append(
            &tmp.path().join(format!("append-{producers}-{per_call}")),
            n,
            producers,
            per_call,
        ));
        println!(
            "durable append, {producers:>2} producers x {per_call:>3}/call {:>9.0} events/s  latency p50 {:.2} ms, p99 {:.2} ms (target >= 50000/s)",
            rate, p50, p99
        );
        if let (Some(a), Some(b)) = (cpu_before, process_cpu_s()) {
            println!(
                "    cpu used by the process meanwhile: {:.2} cores",
                (b - a) / wall.elapsed().as_secs_f64()
            );
        }
    }
    if let (Some((steal0, all0)), Some((steal1, all1))) = (steal_at_start, cpu_times()) {
        println!(
            "cpu steal during the bench: {:.1} % (time the VM's cores were runnable but the host ran something else)",
            100.0 * (steal1 - steal0) as f64 / (all1 - all0).max(1) as f64
        );
    }
}

/// CPU seconds this process has used (user + system), from /proc/self/stat.
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks / 100.0)
}

/// (steal, total) jiffies of all cores, from /proc/stat.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    Some((*v.get(7)?, v.iter().take(8).sum()))
}

/// Publishes every payload at QoS 1 with `WINDOW` in flight and waits for every PUBACK.
async fn raw_publish(port: u16, payloads: &[Vec<u8>]) -> f64 {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let mut o = MqttOptions::new("bench-raw", "127.0.0.1", port);
    o.set_inflight(WINDOW + 8)
        .set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut events) = AsyncClient::new(o, usize::from(WINDOW) + 16);
    loop {
        if let Ok(Event::Incoming(Packet::ConnAck(_))) = events.poll().await {
            break;
        }
    }
    let start = Instant::now();
    let (mut sent, mut acked, mut outstanding) = (0usize, 0usize, 0usize);
    while acked < payloads.len() {
        while outstanding < usize::from(WINDOW) && sent < payloads.len() {
            client
                .try_publish(
                    "acsgd/v1/bench/raw",
                    QoS::AtLeastOnce,
                    false,
                    payloads[sent].clone(),
                )
                .unwrap();
            sent += 1;
            outstanding += 1;
        }
        match events.poll().await.unwrap() {
            Event::Incoming(Packet::PubAck(_)) => {
                acked += 1;
                outstanding -= 1;
            }
            Event::Outgoing(Outgoing::Publish(_)) | Event::Incoming(_) | Event::Outgoing(_) => {}
        }
    }
    let rate = payloads.len() as f64 / start.elapsed().as_secs_f64();
    let _ = client.disconnect().await;
    rate
}

/// Fills an outbox with `n` events while no uplink runs, then times the real uplink draining
/// it to the broker (PUBACK and removal included).
async fn outbox_drain(dir: &std::path::Path, url: &str, n: usize) -> f64 {
    let text = format!(
        "post = \"bench\"\n[uplink]\nbroker = \"{url}\"\nwindow = {WINDOW}\n[storage]\ndata_dir = \"{}\"\nquota_mb = 4096\n",
        dir.display()
    );
    let config = Config::parse(std::path::Path::new("<bench>"), &text).unwrap();
    let (store, _) = Store::open(dir, config.quota_bytes(), OpenMode::Service).unwrap();
    let signer = Signer::load_or_create(dir, "bench").unwrap();
    let announce = signer.key_announcement();
    let outbox = Outbox::start(Arc::new(store), signer, 4096);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        for r in outbox
            .append_many(chunk.iter().map(|&i| event(i)).collect())
            .await
        {
            r.unwrap();
        }
    }
    let state = Arc::new(UplinkState::default());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let task = tokio::spawn(uplink::run(
        UplinkConfig::new(&config.post, &config.uplink).unwrap(),
        outbox.clone(),
        announce,
        Arc::new(Health::new(outbox.clone())),
        state.clone(),
        stop_rx,
    ));
    while state.forwarded.load(Ordering::Relaxed) < n as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let _ = task.await;
    outbox.close().await;
    rate
}

/// `producers` tasks append `n` events in all, `per_call` per request; returns the rate and
/// the p50/p99 latency of a request in ms (submit to durable answer).
async fn append(
    dir: &std::path::Path,
    n: usize,
    producers: usize,
    per_call: usize,
) -> (f64, f64, f64) {
    let (store, _) = Store::open(dir, u64::MAX, OpenMode::Service).unwrap();
    let outbox = Outbox::start(
        Arc::new(store),
        Signer::load_or_create(dir, "bench").unwrap(),
        4096,
    );
    let calls_each = n / producers / per_call;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let outbox = outbox.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(calls_each);
            for c in 0..calls_each {
                let evs: Vec<Event> = (0..per_call)
                    .map(|k| event(p * 1_000_000 + c * per_call + k))
                    .collect();
                let t = Instant::now();
                for r in outbox.append_many(evs).await {
                    r.unwrap();
                }
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let total = calls_each * producers * per_call;
    let rate = total as f64 / start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct =
        |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    outbox.close().await;
    (rate, pct(0.50), pct(0.99))
}

/// Prints what the figures below depend on (see the module docs).
fn depends_on(dir: &std::path::Path) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .map(|l| {
            l.split(':')
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .collect()
        })
        .unwrap_or_default();
    let has = |f: &str| if flags.contains(&f) { "yes" } else { "no" };
    println!(
        "signing paths: bmi2 {}, adx {}, avx2 {}, avx512f {} (AWS-LC picks its Ed25519 and SHA-512 code by these at run time)",
        has("bmi2"),
        has("adx"),
        has("avx2"),
        has("avx512f")
    );
    // The fsync the outbox waits for: 4 KiB appended and fdatasynced, 200 times.
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    let mut lat = Vec::with_capacity(200);
    for _ in 0..200 {
        use std::io::Write;
        let t = Instant::now();
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    let _ = std::fs::remove_file(&path);
    let fs = std::process::Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE,SOURCE", "-T"])
        .arg(dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "fdatasync of a 4 KiB append on {} ({fs}): p50 {:.3} ms, p99 {:.3} ms",
        dir.display(),
        lat[100],
        lat[198]
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "load average at start: {}; kernel {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        kernel.trim()
    );
}
