//! Every row of `../shared/traces/trackers/*.tsv` for the protocols we speak (EGTS, Wialon IPS,
//! Teltonika, Galileosky, Arnavi): `position(s)` rows give at least one fix, `null` rows give
//! none and no error, and rows with expectations match to 1e-5 degrees and the second. Rows of
//! one file go through one decoder in order, as they would over one connection.

mod common;
use common::{traces, unhex};

use acsgd_drivers::decode::{Decoder, Protocol};
use acsgd_drivers::Reading;

/// Teltonika Codec 12/13 rows that Traccar's tests mark `positions` because Traccar attaches
/// the last known location to a command response. The packet carries no coordinates, so the
/// honest reading is the text message itself; these rows must decode to that and nothing else.
const TEXT_ONLY: &[&str] = &["0c01", "0d01"];

/// A Galileosky packet that answers a command (tag E0, the command number, then E1, the
/// reply): Traccar counts it as a position because it attaches the last known location; the
/// honest reading is the reply text alone (the check below also requires that no fix came).
fn is_galileo_reply(packet: &[u8]) -> bool {
    packet.windows(6).any(|w| w[0] == 0xE0 && w[5] == 0xE1)
}

fn check_file(name: &str, protocol: Protocol) -> (usize, usize) {
    let path = traces().join("trackers").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut d = Decoder::new(protocol);
    let (mut rows, mut checked) = (0, 0);
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let (check, encoding, payload) = (cols[2], cols[3], cols[4]);
        let bytes = if encoding == "hex" {
            unhex(payload)
        } else {
            payload.as_bytes().to_vec()
        };
        let at = format!("{name}:{}", n + 1);
        rows += 1;
        let result = d.packet(&bytes);
        let fixes: Vec<_> = match &result {
            Ok(r) => r.iter().filter_map(Reading::position).cloned().collect(),
            Err(_) => vec![],
        };
        match check {
            "null" => {
                assert!(result.is_ok(), "{at}: null row gave an error: {result:?}");
                assert!(fixes.is_empty(), "{at}: null row gave a fix: {fixes:?}");
            }
            "position" | "positions" => {
                let codec = payload.get(16..20).unwrap_or("");
                if protocol == Protocol::Teltonika && TEXT_ONLY.contains(&codec) {
                    let r = result.unwrap_or_else(|e| panic!("{at}: {e}"));
                    assert!(
                        r.iter().any(|r| matches!(r, Reading::Message(_))),
                        "{at}: {r:?}"
                    );
                    assert!(
                        r.iter()
                            .all(|r| matches!(r, Reading::Message(_) | Reading::Warning(_))),
                        "{at}: {r:?}"
                    );
                    continue;
                }
                if protocol == Protocol::Galileosky && is_galileo_reply(&bytes) {
                    let r = result.unwrap_or_else(|e| panic!("{at}: {e}"));
                    assert!(
                        r.iter().any(|r| matches!(r, Reading::Message(_))) && fixes.is_empty(),
                        "{at}: {r:?}"
                    );
                    continue;
                }
                assert!(!fixes.is_empty(), "{at}: no fix: {result:?}");
            }
            _ => {} // attributes: telemetry rows; decoding them is covered by the fuzz tests
        }
        if cols.len() > 8 && !cols[5].is_empty() {
            let f = &fixes[0];
            let time = f.time.unwrap_or_else(|| panic!("{at}: no time"));
            let want = time::PrimitiveDateTime::parse(
                cols[5],
                time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"
                ),
            )
            .unwrap()
            .assume_utc();
            assert_eq!(time.unix_timestamp(), want.unix_timestamp(), "{at}: time");
            assert_eq!(f.valid.to_string(), cols[6], "{at}: valid");
            let (lat, lon): (f64, f64) = (cols[7].parse().unwrap(), cols[8].parse().unwrap());
            assert!((f.lat - lat).abs() <= 1e-5, "{at}: lat {} vs {lat}", f.lat);
            assert!((f.lon - lon).abs() <= 1e-5, "{at}: lon {} vs {lon}", f.lon);
            checked += 1;
        }
    }
    (rows, checked)
}

#[test]
fn egts_captures_decode_as_traccar_expects() {
    let (rows, checked) = check_file("egts.tsv", Protocol::Egts);
    assert_eq!((rows, checked), (10, 1));
}

#[test]
fn wialon_captures_decode_as_traccar_expects() {
    let (rows, checked) = check_file("wialon.tsv", Protocol::Wialon);
    assert_eq!((rows, checked), (16, 1));
}

#[test]
fn teltonika_captures_decode_as_traccar_expects() {
    let (rows, _) = check_file("teltonika.tsv", Protocol::Teltonika);
    assert_eq!(rows, 31);
}

#[test]
fn galileosky_captures_decode_as_traccar_expects() {
    let (rows, _) = check_file("galileo.tsv", Protocol::Galileosky);
    assert_eq!(rows, 9);
}

#[test]
fn arnavi_captures_decode_as_traccar_expects() {
    let (rows, checked) = check_file("arnavi-binary.tsv", Protocol::Arnavi);
    assert_eq!((rows, checked), (9, 1));
    // The text capture file holds no rows today; any it gains are checked the same way.
    check_file("arnavi-text.tsv", Protocol::Arnavi);
}
