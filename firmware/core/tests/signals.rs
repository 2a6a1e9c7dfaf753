//! The node's algorithms on hand-made signals: each test states its signal and what a correct
//! node must make of it.

use acsgd_drivers::lane::{AckResult, Aspect, Body, Fault, Frame, WimError};
use lane_node_core::node::{BARRIER_LOOP, SCALE_LOOP};
use lane_node_core::wim::Channel;
use lane_node_core::{Config, Frames, Node, Sample, LOOPS};

const HZ: f64 = 2000.0;
const C0: u32 = 250_000;
/// Counts per kg with the default gain.
fn counts(kg: f64) -> i32 {
    (kg / Config::default().gain_kg[0] as f64).round() as i32
}

/// A wheel of `kg` crossing a platform of `p` m with a uniform footprint of `l` m at `v` m/s,
/// starting `x0` m before the platform: the load on the platform at `t` s.
fn trapezoid(kg: f64, p: f64, l: f64, v: f64, x0: f64, t: f64) -> f64 {
    let x = -x0 + v * t;
    let on = (x + l / 2.0).min(p) - (x - l / 2.0).max(0.0);
    kg * (on.max(0.0) / l)
}

#[test]
fn a_channel_finds_one_hit_per_wheel_with_the_right_area() {
    let cfg = Config::default();
    let mut ch = Channel::new();
    let offset = 123_456;
    let mut hits = Vec::new();
    let (kg, v) = (4000.0, 3.0);
    for tick in 0..(4.0 * HZ) as u64 {
        let t = tick as f64 / HZ - 1.0;
        let w = if t > 0.0 {
            trapezoid(kg, 0.75, 0.3, v, 0.5, t)
        } else {
            0.0
        };
        if let Some(h) = ch.step(offset + counts(w), tick, true, cfg.gain_kg[0], &cfg) {
            hits.push(h);
        }
    }
    assert_eq!(ch.zero(), Some(offset as f32));
    assert_eq!(hits.len(), 1, "{hits:?}");
    let h = hits[0];
    // Area method: W = v · ∫w dt / platform.
    let w = v as f32 * (h.area / HZ as f32) / 0.75;
    assert!((w - 4000.0).abs() < 4000.0 * 0.01, "{w}");
    assert!((h.plateau - 4000.0).abs() < 40.0, "{}", h.plateau);
    assert!(!h.saturated);
}

#[test]
fn a_short_spike_is_noise_not_a_wheel() {
    let cfg = Config::default();
    let mut ch = Channel::new();
    let mut hits = 0;
    for tick in 0..(3.0 * HZ) as u64 {
        let spike = (2000..2020).contains(&tick);
        let raw = if spike { counts(3000.0) } else { 0 };
        hits += ch.step(raw, tick, true, cfg.gain_kg[0], &cfg).is_some() as u32;
    }
    assert_eq!(hits, 0);
    assert_eq!(ch.noise_hits, 1);
}

#[test]
fn the_zero_follows_slow_drift_only_while_the_lane_is_free() {
    let cfg = Config::default();
    let mut ch = Channel::new();
    // 0.5 kg/s drift for a minute, lane free: the zero follows.
    for tick in 0..(60.0 * HZ) as u64 {
        let kg = 0.5 * tick as f64 / HZ;
        ch.step(counts(kg), tick, true, cfg.gain_kg[0], &cfg);
    }
    let zero_kg = ch.zero().unwrap() as f64 * cfg.gain_kg[0] as f64;
    assert!((zero_kg - 30.0).abs() < 1.0, "{zero_kg}");
    // A vehicle on the lane (loop occupied) freezes it, whatever the cells say.
    let before = ch.zero();
    for tick in (60.0 * HZ) as u64..(70.0 * HZ) as u64 {
        ch.step(counts(60.0), tick, false, cfg.gain_kg[0], &cfg);
    }
    assert_eq!(ch.zero(), before);
}

/// A lane with one truck: the four channels and the two loops, tick by tick.
struct Lane {
    axles: Vec<(f64, f64)>, // (load kg, spacing m from previous)
    v: f64,
    /// m/s² from the moment it arrives.
    accel: f64,
    left: f64,
    /// Platform B's share multiplier (0 drops the right wheel off platform B).
    right_on_b: f64,
    loop_fault_from_s: Option<f64>,
}

impl Lane {
    fn sample(&self, tick: u64) -> Sample {
        let t = tick as f64 / HZ;
        let tau = (t - 2.0).max(0.0);
        let front = -5.0 + self.v * tau + 0.5 * self.accel * tau * tau;
        let mut cells = [0i32; 4];
        let mut x = front - 1.4;
        for (kg, sp) in &self.axles {
            x -= sp;
            for p in 0..2 {
                let p0 = 1.0 + p as f64;
                let w = trapezoid(*kg, 0.75, 0.3, 1.0, -(x - p0), 0.0);
                let right_share = if p == 1 { self.right_on_b } else { 1.0 };
                cells[2 * p] += counts(w * self.left);
                cells[2 * p + 1] += counts(w * (1.0 - self.left) * right_share);
            }
        }
        let gate = (tick + 1) % 20 == 0;
        let len = 1.4 + self.axles.iter().map(|a| a.1).sum::<f64>() + 1.5;
        let covers = |a: f64, b: f64| front > a - 0.3 && front - len < b + 0.3;
        let loops = gate.then(|| {
            let mut l = [C0; LOOPS];
            if covers(0.0, 4.5) {
                l[SCALE_LOOP] = C0 - C0 / 200;
            }
            if covers(8.0, 10.0) {
                l[BARRIER_LOOP] = C0 - C0 / 200;
            }
            if self.loop_fault_from_s.is_some_and(|f| t >= f) {
                l[SCALE_LOOP] = 0;
            }
            l
        });
        Sample { cells, loops }
    }

    fn run(&self, seconds: f64) -> Vec<Frame> {
        let mut node = Node::new(config());
        let mut out = Frames::new();
        let mut frames = Vec::new();
        for tick in 0..(seconds * HZ) as u64 {
            node.step(&self.sample(tick), &mut out);
            frames.extend_from_slice(out.as_slice());
            out.clear();
        }
        frames
    }
}

/// This file's loops switch fully at 0.3 m beyond their wires, so a vehicle occupies the scale
/// loop over its length plus 4.5 + 0.6 m.
fn config() -> Config {
    Config {
        loop_effective_m: 5.1,
        ..Config::default()
    }
}

fn truck() -> Lane {
    Lane {
        axles: vec![
            (6000.0, 0.0),
            (9000.0, 3.6),
            (7000.0, 6.5),
            (7000.0, 1.31),
            (7000.0, 1.31),
        ],
        v: 10.0 / 3.6,
        accel: 0.0,
        left: 0.5,
        right_on_b: 1.0,
        loop_fault_from_s: None,
    }
}

fn bodies(frames: &[Frame]) -> Vec<Body> {
    frames
        .iter()
        .map(|f| f.body)
        .filter(|b| !matches!(b, Body::Health { .. } | Body::Status { .. }))
        .collect()
}

#[test]
fn a_clean_truck_gives_loops_axles_and_one_valid_vehicle() {
    let frames = truck().run(20.0);
    let b = bodies(&frames);
    let axles: Vec<_> = b
        .iter()
        .filter_map(|b| match b {
            Body::Axle {
                index,
                left_kg,
                right_kg,
                spacing_mm,
                speed_dkmh,
                ..
            } => Some((
                *index,
                *left_kg as u32 + *right_kg as u32,
                *spacing_mm,
                *speed_dkmh,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(axles.len(), 5, "{b:?}");
    for ((i, kg, sp, v), (want_kg, want_sp)) in axles.iter().zip(truck().axles) {
        assert!(
            (*kg as f64 - want_kg).abs() < want_kg * 0.01,
            "axle {i}: {kg}"
        );
        assert!(
            (*sp as f64 / 1000.0 - want_sp).abs() < 0.02,
            "axle {i}: {sp}"
        );
        assert!((*v as i32 - 100).abs() <= 1, "axle {i}: {v}");
    }
    let Some(Body::Vehicle {
        axles: 5,
        gross_kg,
        speed_dkmh,
        length_cm,
        class,
        error,
        ..
    }) = b
        .iter()
        .find(|b| matches!(b, Body::Vehicle { .. }))
        .copied()
    else {
        panic!("no vehicle: {b:?}")
    };
    assert!((gross_kg as f64 - 36_000.0).abs() < 360.0, "{gross_kg}");
    assert_eq!((speed_dkmh, class, error), (100, 9, WimError::OK));
    let len = 1.4 + 3.6 + 6.5 + 2.62 + 1.5;
    assert!((length_cm as f64 / 100.0 - len).abs() < 0.5, "{length_cm}");
    // Loop 1 on, loop 2 on, loop 1 off, loop 2 off; the vehicle after loop 1's release.
    let loops: Vec<_> = b
        .iter()
        .filter_map(|b| match b {
            Body::Loop {
                loop_id, occupied, ..
            } => Some((*loop_id, *occupied)),
            _ => None,
        })
        .collect();
    assert_eq!(loops, [(1, true), (2, true), (1, false), (2, false)]);
    let pos = |want: &dyn Fn(&Body) -> bool| b.iter().position(want).unwrap();
    assert!(
        pos(&|b| matches!(b, Body::Vehicle { .. }))
            > pos(&|b| matches!(
                b,
                Body::Loop {
                    loop_id: 1,
                    occupied: false,
                    ..
                }
            ))
    );
}

#[test]
fn a_wheel_beside_the_plate_makes_the_record_invalid() {
    let mut lane = truck();
    lane.right_on_b = 0.0;
    let b = bodies(&lane.run(20.0));
    assert!(
        b.iter().any(|b| matches!(
            b,
            Body::Vehicle {
                axles: 5,
                error: WimError::OFF_SCALE,
                ..
            }
        )),
        "{b:?}"
    );
}

#[test]
fn a_truck_too_fast_for_the_scale_is_flagged() {
    let mut lane = truck();
    lane.v = 25.0 / 3.6;
    let b = bodies(&lane.run(15.0));
    assert!(
        b.iter().any(|b| matches!(
            b,
            Body::Vehicle {
                axles: 5,
                error: WimError::SPEED_OUT_OF_RANGE,
                ..
            }
        )),
        "{b:?}"
    );
}

#[test]
fn a_truck_accelerating_hard_over_the_scale_is_flagged() {
    // From 4 km/h at 0.6 m/s²: about 19 km/h by the last axle.
    let mut lane = truck();
    lane.v = 4.0 / 3.6;
    lane.accel = 0.6;
    let b = bodies(&lane.run(25.0));
    assert!(
        b.iter().any(|b| matches!(
            b,
            Body::Vehicle {
                axles: 5,
                error: WimError::ACCELERATION,
                ..
            }
        )),
        "{b:?}"
    );
}

#[test]
fn two_trucks_so_close_the_loop_never_releases_are_one_record_flagged_two_vehicles() {
    // A second five-axle truck 2 m behind the first: the 4.5 m loop stays occupied.
    let mut lane = truck();
    let first = lane.axles.clone();
    lane.axles.push((6000.0, 1.5 + 2.0 + 1.4));
    lane.axles.extend_from_slice(&first[1..]);
    let b = bodies(&lane.run(30.0));
    let vehicles: Vec<_> = b
        .iter()
        .filter(|b| matches!(b, Body::Vehicle { .. }))
        .collect();
    assert_eq!(vehicles.len(), 1, "{b:?}");
    assert!(
        matches!(
            vehicles[0],
            Body::Vehicle {
                axles: 10,
                error: WimError::TWO_VEHICLES,
                ..
            }
        ),
        "{vehicles:?}"
    );
}

#[test]
fn an_open_scale_loop_is_a_fault_reported_occupied_and_the_vehicle_still_closes() {
    let mut lane = truck();
    lane.loop_fault_from_s = Some(4.0);
    let frames = lane.run(40.0);
    let b = bodies(&frames);
    // Loop 1 stays occupied from the vehicle on; it never reports free again.
    assert!(!b.iter().any(|b| matches!(
        b,
        Body::Loop {
            loop_id: 1,
            occupied: false,
            ..
        }
    )));
    assert!(frames
        .iter()
        .any(|f| matches!(f.body, Body::Health { faults, .. } if faults & Fault::LOOP != 0)));
    assert!(
        b.iter().any(|b| matches!(
            b,
            Body::Vehicle {
                axles: 5,
                error: WimError::SENSOR_FAULT,
                ..
            }
        )),
        "{b:?}"
    );
}

#[test]
fn the_barrier_is_refused_while_its_loop_is_occupied_and_acknowledged_after() {
    let lane = truck();
    let mut node = Node::new(config());
    let mut out = Frames::new();
    let mut acks = Vec::new();
    let cmd = |seq, open| Frame {
        addr: 1,
        seq,
        body: Body::Barrier { open },
    };
    for tick in 0..(25.0 * HZ) as u64 {
        if tick == 100 {
            // Lights and barrier to open the lane: done.
            node.command(
                &Frame {
                    addr: 1,
                    seq: 1,
                    body: Body::Lights {
                        aspect: Aspect::Green,
                    },
                },
                &mut out,
            );
            node.command(&cmd(2, true), &mut out);
        }
        let occupied = node.loops()[BARRIER_LOOP].occupied();
        if occupied && node.outputs().barrier_open && acks.len() == 2 {
            node.command(&cmd(3, false), &mut out);
        }
        if tick == (24.0 * HZ) as u64 {
            node.command(&cmd(4, false), &mut out);
        }
        // Addressed to another node: ignored.
        if tick == 200 {
            node.command(
                &Frame {
                    addr: 9,
                    seq: 5,
                    body: Body::Barrier { open: false },
                },
                &mut out,
            );
        }
        node.step(&lane.sample(tick), &mut out);
        for f in out.as_slice() {
            if let Body::Ack { seq, result } = f.body {
                acks.push((seq, result));
            }
        }
        out.clear();
    }
    assert_eq!(
        acks,
        [
            (1, AckResult::DONE),
            (2, AckResult::DONE),
            (3, AckResult::REFUSED_OCCUPIED),
            (4, AckResult::DONE)
        ]
    );
    assert!(!node.outputs().barrier_open);
    assert_eq!(node.outputs().aspect, Aspect::Green);
}
