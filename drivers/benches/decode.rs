//! Decoder throughput on the real captures in `../shared/traces`.
//!
//! `cargo bench -p acsgd-drivers --bench decode`: NMEA MB/s of our decoder and of the `nmea`
//! crate over the same sentences in the same run, then EGTS and Teltonika records per second
//! (full decode: framing, CRCs, records, readings). Each figure is the median of 7 rounds.

#[path = "../tests/common/mod.rs"]
mod common;
use common::{traces, unhex};

use std::hint::black_box;
use std::time::{Duration, Instant};

use acsgd_drivers::nmea::NmeaDecoder;
use acsgd_drivers::{egts, teltonika};

/// Runs `f` (which processes `units` items) for about half a second per round; returns the
/// median rate in units per second.
fn rate(units: f64, mut f: impl FnMut()) -> f64 {
    let mut rates = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_millis(500) {
            f();
            n += 1;
        }
        rates.push(units * n as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    rates[3]
}

fn main() {
    // Every sentence line of every gpsd log, as the receiver sent it (without the line end).
    let mut sentences: Vec<String> = Vec::new();
    let mut dir: Vec<_> = std::fs::read_dir(traces().join("nmea"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dir.sort();
    for p in dir
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
    {
        let bytes = std::fs::read(p).unwrap();
        for line in bytes.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.first() == Some(&b'$') {
                if let Ok(s) = std::str::from_utf8(line) {
                    sentences.push(s.to_string());
                }
            }
        }
    }
    // The nmea crate panics on some real sentences (a GSA from these logs unwraps a None);
    // those are left out of both sides so the comparison runs on identical input.
    std::panic::set_hook(Box::new(|_| {}));
    let before = sentences.len();
    sentences.retain(|s| std::panic::catch_unwind(|| nmea::parse_str(s).is_ok()).is_ok());
    let _ = std::panic::take_hook();
    let panicking = before - sentences.len();
    let bytes: usize = sentences.iter().map(|s| s.len() + 2).sum();
    let mb = bytes as f64 / 1e6;

    let ours = rate(mb, || {
        let mut d = NmeaDecoder::new();
        for s in &sentences {
            let _ = black_box(d.decode_line(black_box(s.as_bytes())));
        }
    });
    let theirs = rate(mb, || {
        for s in &sentences {
            let _ = black_box(nmea::parse_str(black_box(s)));
        }
    });
    println!("nmea: {} sentences, {:.2} MB per pass ({panicking} left out: the nmea crate panics on them)", sentences.len(), mb);
    println!("nmea decode, acsgd-drivers: {ours:.1} MB/s");
    println!("nmea decode, nmea 0.7 crate: {theirs:.1} MB/s");
    println!("nmea ratio (ours / nmea crate): {:.2}x", ours / theirs);

    let packets = |file: &str| -> Vec<Vec<u8>> {
        let text = std::fs::read_to_string(traces().join("trackers").join(file)).unwrap();
        text.lines()
            .skip(1)
            .map(|l| unhex(l.split('\t').nth(4).unwrap()))
            .collect()
    };

    let egts: Vec<Vec<u8>> = packets("egts.tsv");
    let egts_records: usize = egts
        .iter()
        .filter_map(|p| egts::parse_packet(p).ok())
        .map(|p| p.records.len())
        .sum();
    let egts_rate = rate(egts_records as f64, || {
        for p in &egts {
            if let Ok(pk) = egts::parse_packet(black_box(p)) {
                black_box(egts::readings(&pk));
            }
        }
    });
    println!(
        "egts: {} packets, {egts_records} records per pass: {egts_rate:.0} records/s",
        egts.len()
    );

    let tel: Vec<Vec<u8>> = packets("teltonika.tsv")
        .into_iter()
        .filter(|p| p.starts_with(&[0, 0, 0, 0]))
        .collect();
    let tel_records: usize = tel
        .iter()
        .filter_map(|p| teltonika::parse_avl(p, None).ok())
        .map(|a| a.readings.iter().filter(|r| r.position().is_some()).count())
        .sum();
    let tel_rate = rate(tel_records as f64, || {
        for p in &tel {
            let _ = black_box(teltonika::parse_avl(black_box(p), Some("356307042441013")));
        }
    });
    println!(
        "teltonika: {} packets, {tel_records} records per pass: {tel_rate:.0} records/s",
        tel.len()
    );
}
