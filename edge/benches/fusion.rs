//! Fusion throughput and memory over a long simulated trace:
//! `cargo bench -p acsgd --bench fusion` (24 h of two lanes; `ACSGD_BENCH_HOURS` to change).
//!
//! 1. Throughput: the trace is generated (not timed), then replayed line by line through the
//!    real drivers, fusion, rules and envelope serialisation into a sink on one thread,
//!    unsigned (the fusion figure) and signed (what `acsgd replay` costs by default).
//! 2. Memory: what fusion holds (buffered readings, trackers, track points, declarations) at
//!    every simulated hour, and the resident memory of the real binary (`acsgd replay
//!    --unsigned` streaming the trace from a file) sampled as it reads through it.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use acsgd::config::Config;
use acsgd::replay::Replayer;
use acsgd_testkit::simulate::{self, Options};

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    let hours: u64 = std::env::var("ACSGD_BENCH_HOURS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let o = Options {
        seed: 9,
        duration_s: hours * 3600,
        mean_gap_s: 12.0,
        special_rate: 0.15,
        ..Options::default()
    };
    let t = Instant::now();
    let (trucks, trace) = simulate::session(&o);
    println!(
        "trace: {hours} h, {} trucks, {} lines, {:.1} MB, generated in {:.1} s",
        trucks.len(),
        trace.lines().count(),
        trace.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let toml = simulate::config("korgas", &o.lanes, "mqtt://127.0.0.1:1883", "/tmp/unused");
    let config = Config::parse(Path::new("bench.toml"), &toml).unwrap();
    replay(&config, &trace, false, true);
    replay(&config, &trace, true, false);
    binary_memory(&toml, &trace);
}

fn replay(config: &Config, trace: &str, sign: bool, memory: bool) {
    let mut r = Replayer::new(config.clone(), std::io::sink(), sign).unwrap();
    let mut next_hour = 1;
    let mut samples = Vec::new();
    let t = Instant::now();
    for (i, line) in trace.lines().enumerate() {
        if let Some(off) = line.split('\t').next().and_then(|o| o.parse::<u64>().ok()) {
            if off >= next_hour * 3_600_000 {
                samples.push((next_hour, r.held()));
                next_hour += 1;
            }
        }
        r.line(line, i as u64 + 1).unwrap();
    }
    let s = r.finish().unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "replay {}: {} readings, {} events ({} passages) in {:.2} s: {:.0} readings/s, {:.0} events/s",
        if sign { "signed" } else { "--unsigned" },
        s.fusion.readings,
        s.events,
        s.fusion.passages,
        secs,
        s.fusion.readings as f64 / secs,
        s.events as f64 / secs
    );
    if memory {
        println!("hour | readings buffered | trackers | track points | declarations");
        for (h, held) in &samples {
            println!(
                "{h:>4} | {:>17} | {:>8} | {:>12} | {:>12}",
                held.readings, held.trackers, held.track_points, held.declarations
            );
        }
    }
}

/// Runs the real binary over the trace file and samples its resident memory against how
/// far into the trace it has read.
fn binary_memory(toml: &str, trace: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, tsv) = (dir.path().join("c.toml"), dir.path().join("t.tsv"));
    std::fs::write(&cfg, toml).unwrap();
    std::fs::File::create(&tsv)
        .unwrap()
        .write_all(trace.as_bytes())
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_acsgd"))
        .args(["replay", "--unsigned", "--config"])
        .arg(&cfg)
        .arg(&tsv)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let total = trace.len() as f64;
    let mut samples: Vec<(f64, u64)> = Vec::new();
    while child.try_wait().unwrap().is_none() {
        if let (Some(rss), Some(read)) = (
            proc_field(pid, "status", "VmRSS:"),
            proc_field(pid, "io", "rchar:"),
        ) {
            samples.push((read as f64 / total, rss));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let at = |f: f64| {
        samples
            .iter()
            .find(|(p, _)| *p >= f)
            .map(|(_, r)| *r as f64 / 1024.0)
            .unwrap_or(f64::NAN)
    };
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0) as f64 / 1024.0;
    println!(
        "acsgd replay --unsigned RSS (MiB) at 10/25/50/75/95 % of the trace: {:.1} / {:.1} / {:.1} / {:.1} / {:.1}, peak {peak:.1}",
        at(0.10),
        at(0.25),
        at(0.50),
        at(0.75),
        at(0.95)
    );
}
