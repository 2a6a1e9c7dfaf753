//! Property tests that stand in for a fuzzer in the normal test run: every parser, fed random
//! bytes and real captures with random damage, returns readings or an error and never panics,
//! and stream cutting always makes progress. `PROPTEST_CASES` scales the run: the default 256
//! cases per parser in every test run, `PROPTEST_CASES=100000` for a long fuzzing session.

mod common;
use common::{traces, unhex};

use acsgd_drivers::decode::{Decoder, Protocol};
use acsgd_drivers::lane;
use proptest::prelude::*;

/// Real frames to mutate: the tracker captures and a few NMEA sentences.
fn corpus(protocol: Protocol) -> Vec<Vec<u8>> {
    let file = match protocol {
        Protocol::Egts => "egts.tsv",
        Protocol::Wialon => "wialon.tsv",
        Protocol::Teltonika => "teltonika.tsv",
        Protocol::Galileosky => "galileo.tsv",
        Protocol::Arnavi => {
            // Binary captures, and text lines (the text capture file has no rows yet).
            let mut frames = tracker_file("arnavi-binary.tsv");
            frames.push(
                b"$AV,V4,85164,20451,1146,418,-1,1,1,192,0,0,0,0,1,9,412.5,-34.0,104340,\
                  4314.3369N,07653.3825E,12.0,270.5,060219,11,0,32767,,SF*47\r\n"
                    .to_vec(),
            );
            return frames;
        }
        Protocol::Nmea => {
            let log = std::fs::read(traces().join("nmea/neo-m8n.log")).unwrap();
            return log
                .split(|&b| b == b'\n')
                .filter(|l| l.first() == Some(&b'$'))
                .map(<[u8]>::to_vec)
                .collect();
        }
        Protocol::Rpm => {
            return [
                "GS,000061,000058,000064,000059",
                "GX,000012,002125",
                "SG1,000150,000800,06.0",
                "TT",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect()
        }
        Protocol::Lane => {
            let mut buf = [0u8; lane::MAX_FRAME];
            let f = lane::Frame {
                addr: 1,
                seq: 2,
                body: lane::Body::Loop {
                    t_ms: 3,
                    loop_id: 1,
                    occupied: true,
                },
            };
            let n = lane::encode(&f, &mut buf).unwrap();
            return vec![buf[..n].to_vec()];
        }
    };
    tracker_file(file)
}

/// The packets of one tracker capture file.
fn tracker_file(file: &str) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(traces().join("trackers").join(file)).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            if c[3] == "hex" {
                unhex(c[4])
            } else {
                c[4].as_bytes().to_vec()
            }
        })
        .collect()
}

/// A real frame with random bytes overwritten, inserted or cut off.
fn damaged(protocol: Protocol) -> impl Strategy<Value = Vec<u8>> {
    let corpus = corpus(protocol);
    (
        0..corpus.len(),
        prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..8),
    )
        .prop_map(move |(i, edits)| {
            let mut f = corpus[i].clone();
            for (at, byte, op) in edits {
                let at = at as usize % (f.len() + 1);
                match op {
                    0 if at < f.len() => f[at] = byte,
                    1 => f.insert(at, byte),
                    _ => f.truncate(at),
                }
            }
            f
        })
}

fn exercise(protocol: Protocol, bytes: &[u8]) {
    let mut d = Decoder::new(protocol);
    let _ = d.packet(bytes);
    // Stream cutting must terminate and account for every byte.
    let items = d.stream(bytes);
    assert!(items.len() <= bytes.len() + 1);
}

macro_rules! fuzz_protocol {
    ($name:ident, $protocol:expr) => {
        proptest! {
            #[test]
            fn $name(random in prop::collection::vec(any::<u8>(), 0..600), real in damaged($protocol)) {
                exercise($protocol, &random);
                exercise($protocol, &real);
            }
        }
    };
}

fuzz_protocol!(nmea_never_panics, Protocol::Nmea);
fuzz_protocol!(egts_never_panics, Protocol::Egts);
fuzz_protocol!(wialon_never_panics, Protocol::Wialon);
fuzz_protocol!(teltonika_never_panics, Protocol::Teltonika);
fuzz_protocol!(galileosky_never_panics, Protocol::Galileosky);
fuzz_protocol!(arnavi_never_panics, Protocol::Arnavi);
fuzz_protocol!(rpm_never_panics, Protocol::Rpm);
fuzz_protocol!(lane_never_panics, Protocol::Lane);

fn any_body() -> impl Strategy<Value = lane::Body> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u16>(),
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(
                |(t_ms, vehicle, index, left_kg, right_kg, spacing_mm, speed_dkmh)| {
                    lane::Body::Axle {
                        t_ms,
                        vehicle,
                        index,
                        left_kg,
                        right_kg,
                        spacing_mm,
                        speed_dkmh,
                    }
                }
            ),
        (any::<u32>(), any::<u8>(), any::<bool>()).prop_map(|(t_ms, loop_id, occupied)| {
            lane::Body::Loop {
                t_ms,
                loop_id,
                occupied,
            }
        }),
        (any::<u32>(), any::<u8>(), any::<u32>()).prop_map(|(t_ms, channel, count)| {
            lane::Body::Pulses {
                t_ms,
                channel,
                count,
            }
        }),
        (
            any::<u32>(),
            any::<bool>(),
            0u8..4,
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(t_ms, barrier_open, aspect, samples, dropped)| {
                lane::Body::Status {
                    t_ms,
                    barrier_open,
                    aspect: [
                        lane::Aspect::Off,
                        lane::Aspect::Red,
                        lane::Aspect::Yellow,
                        lane::Aspect::Green,
                    ][aspect as usize],
                    samples,
                    dropped,
                }
            }),
        any::<bool>().prop_map(|open| lane::Body::Barrier { open }),
        (any::<u8>(), any::<u8>()).prop_map(|(seq, result)| lane::Body::Ack { seq, result }),
    ]
}

proptest! {
    /// Frames survive any noise between them: the receiver finds every one whose bytes are
    /// intact, in order, and counts nothing as a frame that was not sent.
    #[test]
    fn lane_frames_are_found_between_random_noise(
        frames in prop::collection::vec((any::<u8>(), any::<u8>(), any_body()), 1..20),
        noise in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 20),
    ) {
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for (i, (addr, seq, body)) in frames.into_iter().enumerate() {
            // Noise made only of bytes that cannot start a sync, so every frame stays findable.
            wire.extend(noise[i].iter().map(|b| if *b == 0xA5 { 0 } else { *b }));
            let f = lane::Frame { addr, seq, body };
            let mut buf = [0u8; lane::MAX_FRAME];
            let n = lane::encode(&f, &mut buf).unwrap();
            wire.extend_from_slice(&buf[..n]);
            sent.push(f);
        }
        let mut rx = lane::Receiver::new();
        let got: Vec<lane::Frame> = wire.iter().filter_map(|&b| rx.push(b)).collect();
        prop_assert_eq!(got, sent);
    }
}
