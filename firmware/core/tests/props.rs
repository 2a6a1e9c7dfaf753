//! Whatever the sensors and the bus give, the node does not panic, stays in its fixed memory,
//! and every frame it sends is one the appliance's parser reads back as sent.

use acsgd_drivers::lane::{self, Aspect, Body, Frame, Scan};
use lane_node_core::{Config, Frames, Node, Sample};
use proptest::prelude::*;

fn sample() -> impl Strategy<Value = Sample> {
    let cell = prop_oneof![
        4 => -20_000i32..400_000,
        1 => any::<i32>(),
        1 => Just(8_388_607i32),
        1 => Just(-8_388_608i32),
    ];
    let count = prop_oneof![4 => 240_000u32..260_000, 1 => any::<u32>(), 1 => Just(0u32)];
    (
        prop::array::uniform4(cell),
        prop::option::weighted(0.1, prop::array::uniform2(count)),
    )
        .prop_map(|(cells, loops)| Sample { cells, loops })
}

fn command() -> impl Strategy<Value = Frame> {
    (any::<u8>(), any::<u8>(), 0u8..5).prop_map(|(addr, seq, k)| Frame {
        addr: addr % 3,
        seq,
        body: match k {
            0 => Body::Barrier { open: true },
            1 => Body::Barrier { open: false },
            2 => Body::Lights {
                aspect: Aspect::Green,
            },
            3 => Body::Lights {
                aspect: Aspect::Red,
            },
            _ => Body::Ack { seq, result: 0 },
        },
    })
}

/// Runs of the same sample make hits and vehicles; pure noise makes nothing.
fn stream() -> impl Strategy<Value = Vec<(Sample, u16)>> {
    prop::collection::vec((sample(), 1u16..3000), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_samples_and_commands_give_decodable_frames(
        runs in stream(),
        commands in prop::collection::vec((0usize..60, command()), 0..10),
        hz in prop_oneof![Just(500u32), Just(2000u32), Just(8000u32)],
    ) {
        let cfg = Config { sample_hz: hz, ..Config::default() };
        let mut node = Node::new(cfg);
        let mut out = Frames::new();
        let mut sent = 0usize;
        let mut buf = [0u8; lane::MAX_FRAME];
        for (i, (s, n)) in runs.iter().enumerate() {
            for (at, c) in &commands {
                if *at == i {
                    node.command(c, &mut out);
                }
            }
            for _ in 0..*n {
                node.step(s, &mut out);
                for f in out.as_slice() {
                    let len = lane::encode(f, &mut buf).unwrap();
                    prop_assert_eq!(lane::scan(&buf[..len]), Scan::Frame(*f, len));
                    sent += 1;
                }
                prop_assert_eq!(out.overflows, 0);
                out.clear();
            }
        }
        // Status frames at least, once a second of samples has gone by.
        let ticks: u64 = runs.iter().map(|r| r.1 as u64).sum();
        prop_assert!(sent as u64 >= ticks / hz as u64);
    }
}

#[test]
fn the_node_fits_in_a_small_microcontroller() {
    // The whole state is one fixed-size value: no heap, nothing that grows with the input.
    let size = std::mem::size_of::<Node>();
    assert!(size < 8 * 1024, "{size} bytes");
}
