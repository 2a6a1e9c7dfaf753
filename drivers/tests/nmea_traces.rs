//! Every gpsd regression log in `../shared/traces/nmea` decodes, and our positions agree with
//! gpsd's own decoding (the `.chk` files) to 1e-6 degrees.
//!
//! gpsd reports a TPV at the end of a reporting cycle and merges the cycle's sentences, so the
//! TPV that follows a sentence may carry another sentence's position from the same cycle (an
//! RMC's TPV with the GGA's more precise coordinates). A TPV is therefore compared with the
//! positions we decoded from the sentences since gpsd's previous report and from every earlier
//! sentence with the same time of day; it must match one of them. A TPV with no such sentence
//! (one emitted after a GSA or VTG, carrying an older cycle) is not the sentence's own and is
//! not compared.

mod common;
use common::traces;
use std::path::PathBuf;

use std::collections::{HashMap, HashSet};

use acsgd_drivers::nmea::NmeaDecoder;
use acsgd_drivers::Reading;

fn logs() -> Vec<PathBuf> {
    let dir = traces().join("nmea");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (is ../shared beside the checkout?)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    assert!(v.len() >= 20, "expected the gpsd logs in {}", dir.display());
    v
}

/// Latitude and longitude in degrees.
type LatLon = (f64, f64);

fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
}

/// Every log yields positions, and no sentence we refuse is one gpsd reported on (they are
/// missing from gpsd's `.chk` or produced no report there): firefly-II's GGA checksums are off
/// by a firmware bug, et-332 has terminal escapes in a line, holux-gm-210 ends mid-sentence.
#[test]
fn every_gpsd_log_decodes_and_only_sentences_gpsd_refused_are_refused() {
    let mut report = String::new();
    for log in logs() {
        let bytes = std::fs::read(&log).unwrap();
        let chk = std::fs::read(log.with_extension("log.chk")).unwrap();
        // Sentences gpsd reported on: the line after them in the .chk is a JSON report.
        let chk_lines: Vec<&[u8]> = chk.split(|&b| b == b'\n').map(trim).collect();
        let accepted_by_gpsd: HashSet<&[u8]> = chk_lines
            .windows(2)
            .filter(|w| w[0].first() != Some(&b'{') && w[1].first() == Some(&b'{'))
            .map(|w| w[0])
            .collect();
        let name = log.file_name().unwrap().to_string_lossy().into_owned();
        let mut d = NmeaDecoder::new();
        let (mut sentences, mut positions, mut errors) = (0, 0, 0);
        for line in lines(&bytes) {
            if acsgd_drivers::nmea::sentence_start(line).is_none() {
                continue; // a line of binary or text noise, not a sentence
            }
            sentences += 1;
            match d.decode_line(line) {
                Ok(Some(Reading::Position(_))) => positions += 1,
                Ok(_) => {}
                Err(e) => {
                    errors += 1;
                    assert!(
                        !accepted_by_gpsd.contains(trim(line)),
                        "{name}: we refuse a sentence gpsd decoded ({e}): {}",
                        String::from_utf8_lossy(line)
                    );
                }
            }
        }
        report.push_str(&format!(
            "{name}: {sentences} sentences, {positions} positions, {errors} refused\n"
        ));
        assert!(positions > 0, "{name}: no positions\n{report}");
    }
    eprintln!("{report}");
}

fn trim(l: &[u8]) -> &[u8] {
    let mut l = l;
    while let [rest @ .., b'\r' | b' '] = l {
        l = rest;
    }
    l
}

#[test]
fn positions_agree_with_gpsd_to_a_millionth_of_a_degree() {
    let (mut compared, mut skipped) = (0usize, 0usize);
    let mut mismatches = Vec::new();
    for log in logs() {
        let chk = log.with_extension("log.chk");
        let text = std::fs::read(&chk).unwrap();
        let name = chk.file_name().unwrap().to_string_lossy().into_owned();
        let mut d = NmeaDecoder::new();
        let mut by_tod: HashMap<i64, Vec<(f64, f64)>> = HashMap::new();
        let mut block: Vec<(Option<i64>, Option<LatLon>)> = Vec::new();
        let mut after_report = false;
        for (n, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.first() == Some(&b'{') {
                after_report = true;
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                if v["class"] != "TPV" || !v["lat"].is_number() {
                    continue;
                }
                let (lat, lon) = (v["lat"].as_f64().unwrap(), v["lon"].as_f64().unwrap());
                let mut candidates: Vec<(f64, f64)> =
                    block.iter().filter_map(|(_, p)| *p).collect();
                for (tod, _) in &block {
                    if let Some(same) = tod.and_then(|t| by_tod.get(&t)) {
                        candidates.extend(same);
                    }
                }
                if candidates.is_empty() {
                    skipped += 1;
                    continue;
                }
                compared += 1;
                if !candidates
                    .iter()
                    .any(|(a, o)| (a - lat).abs() <= 1e-6 && (o - lon).abs() <= 1e-6)
                {
                    mismatches.push(format!(
                        "{name}:{}: gpsd {lat},{lon}; ours {candidates:?}",
                        n + 1
                    ));
                }
                continue;
            }
            if after_report {
                block.clear();
                after_report = false;
            }
            let Ok(Some(r)) = d.decode_line(line) else {
                continue;
            };
            let (tod, pos) = match &r {
                Reading::Position(p) => {
                    let tod = p.time_of_day.or(p.time.map(|t| {
                        let t = t.time();
                        t.hour() as f64 * 3600.0
                            + t.minute() as f64 * 60.0
                            + t.second() as f64
                            + t.nanosecond() as f64 / 1e9
                    }));
                    (
                        tod.map(|t| (t * 1000.0).round() as i64),
                        Some((p.lat, p.lon)),
                    )
                }
                _ => (None, None),
            };
            if let (Some(t), Some(p)) = (tod, pos) {
                by_tod.entry(t).or_default().push(p);
            }
            block.push((tod, pos));
        }
    }
    eprintln!("compared {compared} TPV reports, {skipped} not a sentence's own");
    assert!(compared > 500, "only {compared} TPVs compared");
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
