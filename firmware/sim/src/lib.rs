//! Raw lane signals: what the lane node's sensors themselves give while simulated trucks cross
//! the lane, written as a raw-sample trace ([`lane_node_core::raw`]) with the ground truth
//! beside it, to test and measure the firmware on signals it did not make.
//!
//! The physics here is written independently of the firmware's estimators, and its assumptions
//! are drawn from wide ranges ([`Assumptions`]):
//!
//! - **Load cells**: each wheel presses a footprint 0.15–0.35 m long, with a uniform or a
//!   parabolic pressure profile, onto platforms 0.75 m long; the load on a platform is the
//!   part of the footprint on it. Axle loads bounce with the body (1.5–4 Hz) and hop
//!   (8–15 Hz), left/right shares differ, the truck accelerates or brakes. Each channel has its
//!   own gain, a temperature offset, a slow drift and Gaussian noise, and clips at 24 bits.
//! - **Loops**: period counts over a 10 ms gate, `C = C₀·(1 − ½ ΔL/L)`, ΔL/L from how much
//!   of the loop (plus its fringe) each part of the body covers (tractor 1.2–3 %, coupling gap
//!   0.05–0.3 %, trailer 0.5–1.5 %), with drift, noise, and injected open or shorted loops.

use std::f64::consts::PI;

use lane_node_core::raw::Header;
use lane_node_core::{CELLS, LOOPS};
use serde::Serialize;

pub mod board;

/// Deterministic random numbers (SplitMix64), so a seed is a trace.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, (lo, hi): (f64, f64)) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (2.0 * PI * self.unit()).cos()
    }
}

/// Where things are on the lane, metres from the scale loop's entry edge.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Lane {
    pub platform_a_m: f64,
    pub platform_m: f64,
    pub platform_gap_m: f64,
    pub scale_loop: (f64, f64),
    pub barrier_loop: (f64, f64),
    /// How far beyond its wires a loop still sees metal.
    pub fringe_m: f64,
}

impl Default for Lane {
    fn default() -> Self {
        Lane {
            platform_a_m: 1.0,
            platform_m: 0.75,
            platform_gap_m: 1.0,
            scale_loop: (0.0, 4.5),
            barrier_loop: (8.0, 10.0),
            fringe_m: 0.3,
        }
    }
}

/// The ranges every random choice is drawn from.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Assumptions {
    pub speed_kmh: (f64, f64),
    /// m/s², negative brakes.
    pub accel: (f64, f64),
    pub bounce: (f64, f64),
    pub bounce_hz: (f64, f64),
    pub hop: (f64, f64),
    pub hop_hz: (f64, f64),
    pub footprint_m: (f64, f64),
    /// Probability of a parabolic pressure profile (else uniform).
    pub parabolic: f64,
    pub left_share: (f64, f64),
    pub noise_kg: (f64, f64),
    pub drift_kg_per_min: (f64, f64),
    pub offset_kg: (f64, f64),
    /// Relative error of the calibration the node is configured with.
    pub calibration_error: f64,
    /// Probability that a truck is loaded over the axle limit.
    pub overweight: f64,
}

impl Assumptions {
    /// The study's ranges: every assumption as wide as a control post plausibly sees.
    pub fn wide() -> Assumptions {
        Assumptions {
            speed_kmh: (5.0, 15.0),
            accel: (-0.15, 0.15),
            bounce: (0.0, 0.06),
            bounce_hz: (1.5, 4.0),
            hop: (0.0, 0.03),
            hop_hz: (8.0, 15.0),
            footprint_m: (0.15, 0.35),
            parabolic: 0.5,
            left_share: (0.44, 0.56),
            noise_kg: (0.5, 3.0),
            drift_kg_per_min: (-10.0, 10.0),
            offset_kg: (-300.0, 300.0),
            calibration_error: 0.003,
            overweight: 0.1,
        }
    }

    /// A steady truck on a clean lane: for golden traces and the HIL scenarios.
    pub fn calm() -> Assumptions {
        Assumptions {
            accel: (0.0, 0.0),
            bounce: (0.0, 0.02),
            hop: (0.0, 0.01),
            noise_kg: (1.0, 1.0),
            drift_kg_per_min: (0.0, 0.0),
            calibration_error: 0.0,
            overweight: 0.0,
            ..Assumptions::wide()
        }
    }
}

/// One axle as it really is.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AxleTruth {
    pub load_kg: f64,
    pub left_kg: f64,
    pub right_kg: f64,
    /// From the previous axle (0 for the first).
    pub spacing_m: f64,
}

/// A part of the body and how strongly the loop sees it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Segment {
    /// Metres from the front of the vehicle.
    pub from_m: f64,
    pub to_m: f64,
    /// ΔL/L when it covers the whole loop.
    pub depth: f64,
}

/// A simulated truck: what it is and how it moves.
#[derive(Debug, Clone, Serialize)]
pub struct Truck {
    pub axles: Vec<AxleTruth>,
    pub front_m: f64,
    pub rear_m: f64,
    pub speed_kmh: f64,
    pub accel: f64,
    pub body: Vec<Segment>,
    pub bounce: (f64, f64, f64),
    pub hop: (f64, f64),
    pub footprint_m: f64,
    pub parabolic: bool,
}

impl Truck {
    pub fn length_m(&self) -> f64 {
        self.front_m + self.axles.iter().map(|a| a.spacing_m).sum::<f64>() + self.rear_m
    }
    pub fn gross_kg(&self) -> f64 {
        self.axles.iter().map(|a| a.load_kg).sum()
    }
}

/// A random truck of 2–6 axles (rigid or tractor and semitrailer).
pub fn truck(rng: &mut Rng, a: &Assumptions) -> Truck {
    let n = match rng.unit() {
        u if u < 0.10 => 2,
        u if u < 0.20 => 3,
        u if u < 0.35 => 4,
        u if u < 0.80 => 5,
        _ => 6,
    };
    let jitter = |rng: &mut Rng, m: f64| m * rng.range((0.9, 1.1));
    let tandem = |rng: &mut Rng| rng.range((1.31, 1.45));
    let spacings: Vec<f64> = match n {
        2 => vec![0.0, jitter(rng, 4.2)],
        3 => vec![0.0, jitter(rng, 3.9), tandem(rng)],
        4 => vec![0.0, jitter(rng, 3.6), jitter(rng, 6.0), tandem(rng)],
        5 => vec![
            0.0,
            jitter(rng, 3.6),
            jitter(rng, 6.5),
            tandem(rng),
            tandem(rng),
        ],
        _ => vec![
            0.0,
            jitter(rng, 3.6),
            tandem(rng),
            jitter(rng, 6.0),
            tandem(rng),
            tandem(rng),
        ],
    };
    let limit = [18.0, 25.0, 32.0, 38.0, 44.0][n - 2] * 1000.0;
    let over = rng.chance(a.overweight);
    let fill = if over {
        rng.range((1.0, 1.25))
    } else {
        rng.range((0.3, 0.95))
    };
    let steer = rng.range((4500.0, 7500.0));
    let rest = ((limit * fill - steer) / (n - 1) as f64).max(1500.0);
    let axles = spacings
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let load = if i == 0 {
                steer
            } else {
                rest * rng.range((0.9, 1.1))
            };
            let share = rng.range(a.left_share);
            AxleTruth {
                load_kg: load,
                left_kg: load * share,
                right_kg: load * (1.0 - share),
                spacing_m: *s,
            }
        })
        .collect();
    let front_m = rng.range((1.2, 1.6));
    let rear_m = rng.range((0.8, 2.0));
    let speed_kmh = rng.range(a.speed_kmh);
    Truck::build(axles, front_m, rear_m, speed_kmh, rng, a)
}

impl Truck {
    /// A truck of these axles moving at `speed_kmh`: its motion, dynamics, tyres and body
    /// (what the loops see) drawn from `a`.
    pub fn build(
        axles: Vec<AxleTruth>,
        front_m: f64,
        rear_m: f64,
        speed_kmh: f64,
        rng: &mut Rng,
        a: &Assumptions,
    ) -> Truck {
        let n = axles.len();
        let mut t = Truck {
            axles,
            front_m,
            rear_m,
            speed_kmh,
            accel: rng.range(a.accel),
            body: Vec::new(),
            bounce: (
                rng.range(a.bounce),
                rng.range(a.bounce_hz),
                rng.range((0.0, 2.0 * PI)),
            ),
            hop: (rng.range(a.hop), rng.range(a.hop_hz)),
            footprint_m: rng.range(a.footprint_m),
            parabolic: rng.chance(a.parabolic),
        };
        let len = t.length_m();
        t.body = if n >= 4 {
            // Tractor to just behind its drive axles, the coupling gap, then the trailer.
            let drive = t.axles[1].spacing_m + if n == 6 { t.axles[2].spacing_m } else { 0.0 };
            let cab_end = (front_m + drive + 1.0).min(len);
            let gap_end = (cab_end + rng.range((0.4, 1.0))).min(len);
            vec![
                Segment {
                    from_m: 0.0,
                    to_m: cab_end,
                    depth: rng.range((0.012, 0.03)),
                },
                Segment {
                    from_m: cab_end,
                    to_m: gap_end,
                    depth: rng.range((0.0005, 0.003)),
                },
                Segment {
                    from_m: gap_end,
                    to_m: len,
                    depth: rng.range((0.005, 0.015)),
                },
            ]
        } else {
            vec![Segment {
                from_m: 0.0,
                to_m: len,
                depth: rng.range((0.008, 0.025)),
            }]
        };
        t
    }
}

/// What a channel adds to the load: its own gain, offset, drift and noise.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ChannelModel {
    /// kg per count, as the converter really is.
    pub gain_kg: f64,
    /// kg per count, as the node is configured (calibration error included).
    pub configured_gain_kg: f64,
    pub offset_kg: f64,
    pub drift_kg_per_s: f64,
    pub noise_kg: f64,
}

/// A loop fault to inject: `open` (no oscillation) or shorted (the count drops to half).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LoopFaultAt {
    pub loop_index: usize,
    pub from_s: f64,
    pub to_s: f64,
    pub open: bool,
}

/// A truck on the lane: when its front is 5 m before the scale loop.
#[derive(Debug, Clone, Serialize)]
pub struct Arrival {
    pub at_s: f64,
    pub truck: Truck,
}

/// What the study compares against.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    pub at_s: f64,
    pub axles: Vec<AxleTruth>,
    pub gross_kg: f64,
    pub speed_kmh: f64,
    pub length_m: f64,
    /// When the rear leaves the barrier loop.
    pub gone_s: f64,
}

/// A whole trace to render.
#[derive(Debug, Clone)]
pub struct Scene {
    pub lane: Lane,
    pub sample_hz: u32,
    pub gate_ticks: u32,
    pub duration_s: f64,
    pub arrivals: Vec<Arrival>,
    pub channels: [ChannelModel; CELLS],
    /// Loop counts when free, and their drift per second (relative).
    pub loop_counts: [f64; LOOPS],
    pub loop_drift_per_s: [f64; LOOPS],
    pub faults: Vec<LoopFaultAt>,
}

/// The nominal converter gain: ±10 t per wheel over 2^23 counts.
pub const NOMINAL_GAIN: f64 = 10_000.0 / 8_388_608.0;

impl Scene {
    /// An empty lane with channels drawn from `a`.
    pub fn new(rng: &mut Rng, a: &Assumptions, duration_s: f64) -> Scene {
        let channels = std::array::from_fn(|_| {
            let gain = NOMINAL_GAIN * rng.range((0.97, 1.03));
            ChannelModel {
                gain_kg: gain,
                configured_gain_kg: gain * (1.0 + a.calibration_error * rng.normal()),
                offset_kg: rng.range(a.offset_kg),
                drift_kg_per_s: rng.range(a.drift_kg_per_min) / 60.0,
                noise_kg: rng.range(a.noise_kg),
            }
        });
        Scene {
            lane: Lane::default(),
            sample_hz: 2000,
            gate_ticks: 20,
            duration_s,
            arrivals: Vec::new(),
            channels,
            loop_counts: [
                rng.range((200_000.0, 300_000.0)),
                rng.range((200_000.0, 300_000.0)),
            ],
            loop_drift_per_s: [rng.range((-2e-6, 2e-6)), rng.range((-2e-6, 2e-6))],
            faults: Vec::new(),
        }
    }

    /// A scene of `n` trucks one after the other, each arriving when the previous one has
    /// left both loops and a gap of 1–6 s has passed; 2 s of empty lane at the start.
    pub fn queue(rng: &mut Rng, a: &Assumptions, n: usize) -> Scene {
        let mut s = Scene::new(rng, a, 0.0);
        let mut at = 2.0;
        for _ in 0..n {
            let truck = truck(rng, a);
            let gone = s.lane.gone_s(&truck);
            s.arrivals.push(Arrival { at_s: at, truck });
            at += gone + rng.range((1.0, 6.0));
        }
        s.duration_s = at + 2.0;
        s
    }

    /// The node settings that match this scene (its calibration).
    pub fn node_cfg(&self) -> String {
        let g: Vec<String> = self
            .channels
            .iter()
            .map(|c| format!("{:.9e}", c.configured_gain_kg))
            .collect();
        format!(
            "# lane-node settings for a simulated lane\naddr = 1\nsample_hz = {}\ngate_ticks = {}\ngain_kg = {}\nplatform_m = {}\nplatform_gap_m = {}\n",
            self.sample_hz,
            self.gate_ticks,
            g.join(", "),
            self.lane.platform_m,
            self.lane.platform_gap_m
        )
    }

    pub fn truths(&self) -> Vec<Truth> {
        self.arrivals
            .iter()
            .map(|a| Truth {
                at_s: a.at_s,
                axles: a.truck.axles.clone(),
                gross_kg: a.truck.gross_kg(),
                speed_kmh: self.lane.speed_at_scale(&a.truck) * 3.6,
                length_m: a.truck.length_m(),
                gone_s: a.at_s + self.lane.gone_s(&a.truck),
            })
            .collect()
    }

    /// Renders the raw-sample trace.
    pub fn render(&self, rng: &mut Rng) -> Vec<u8> {
        let h = Header {
            sample_hz: self.sample_hz,
            gate_ticks: self.gate_ticks,
        };
        let ticks = (self.duration_s * self.sample_hz as f64) as u64;
        let blocks = ticks / self.gate_ticks as u64;
        let mut out = Vec::with_capacity(16 + blocks as usize * h.block_len());
        out.extend_from_slice(&h.to_bytes());
        let mut cells = vec![[0i32; CELLS]; self.gate_ticks as usize];
        let mut block = vec![0u8; h.block_len()];
        let dt = 1.0 / self.sample_hz as f64;
        let mut tick = 0u64;
        for _ in 0..blocks {
            for c in cells.iter_mut() {
                let t = tick as f64 * dt;
                let loads = self.loads(t);
                for (i, m) in self.channels.iter().enumerate() {
                    let kg =
                        m.offset_kg + m.drift_kg_per_s * t + loads[i] + m.noise_kg * rng.normal();
                    c[i] = (kg / m.gain_kg).round().clamp(-8_388_608.0, 8_388_607.0) as i32;
                }
                tick += 1;
            }
            let t = (tick - 1) as f64 * dt;
            let loops = std::array::from_fn(|l| self.loop_count(l, t, rng));
            h.write_block(&cells, loops, &mut block);
            out.extend_from_slice(&block);
        }
        out
    }

    /// Load on each channel at `t`, kg.
    fn loads(&self, t: f64) -> [f64; CELLS] {
        let mut w = [0.0; CELLS];
        let lane = &self.lane;
        for a in &self.arrivals {
            let tau = t - a.at_s;
            if tau < 0.0 {
                continue;
            }
            let tr = &a.truck;
            let front = lane.front_at(tr, tau);
            // Far from the scale: nothing to add.
            if front < lane.platform_a_m - 1.0
                || front - tr.length_m()
                    > lane.platform_a_m + lane.platform_gap_m + lane.platform_m + 1.0
            {
                continue;
            }
            let mut x = front - tr.front_m;
            for (i, ax) in tr.axles.iter().enumerate() {
                x -= ax.spacing_m;
                let dynamic = 1.0
                    + tr.bounce.0
                        * (2.0 * PI * tr.bounce.1 * t + tr.bounce.2 + 0.9 * i as f64).sin()
                    + tr.hop.0 * (2.0 * PI * tr.hop.1 * t + 1.7 * i as f64).sin();
                for p in 0..2 {
                    let p0 = lane.platform_a_m + p as f64 * lane.platform_gap_m;
                    let f = footprint_on(x, tr.footprint_m, p0, p0 + lane.platform_m, tr.parabolic);
                    if f > 0.0 {
                        w[2 * p] += ax.left_kg * dynamic * f;
                        w[2 * p + 1] += ax.right_kg * dynamic * f;
                    }
                }
            }
        }
        w
    }

    fn loop_count(&self, l: usize, t: f64, rng: &mut Rng) -> u32 {
        for f in &self.faults {
            if f.loop_index == l && (f.from_s..f.to_s).contains(&t) {
                return if f.open {
                    0
                } else {
                    (self.loop_counts[l] * 0.5) as u32
                };
            }
        }
        let (a, b) = if l == 0 {
            self.lane.scale_loop
        } else {
            self.lane.barrier_loop
        };
        let (a, b) = (a - self.lane.fringe_m, b + self.lane.fringe_m);
        let mut dl = 0.0;
        for arr in &self.arrivals {
            let tau = t - arr.at_s;
            if tau < 0.0 {
                continue;
            }
            let front = self.lane.front_at(&arr.truck, tau);
            for s in &arr.truck.body {
                let (s0, s1) = (front - s.to_m, front - s.from_m);
                let cover = (s1.min(b) - s0.max(a)).max(0.0);
                dl += s.depth * cover / (b - a);
            }
        }
        let c = self.loop_counts[l] * (1.0 - dl / 2.0 + self.loop_drift_per_s[l] * t)
            + 0.5 * rng.normal();
        c.round().max(1.0) as u32
    }
}

impl Lane {
    /// Where the truck's front is `tau` s after its arrival (5 m before the scale loop).
    pub fn front_at(&self, t: &Truck, tau: f64) -> f64 {
        let v0 = t.speed_kmh / 3.6;
        // Braking stops at 1 m/s: a truck does not stop or reverse on this lane here.
        let a = t.accel;
        let t_min = if a < 0.0 {
            (v0 - 1.0) / -a
        } else {
            f64::INFINITY
        };
        let d = if tau <= t_min {
            v0 * tau + 0.5 * a * tau * tau
        } else {
            v0 * t_min + 0.5 * a * t_min * t_min + (tau - t_min)
        };
        -5.0 + d
    }

    /// Speed when the first axle is at the middle between the platforms.
    pub fn speed_at_scale(&self, t: &Truck) -> f64 {
        let target = self.platform_a_m + (self.platform_gap_m + self.platform_m) / 2.0 + t.front_m;
        let tau = self.time_to(t, target);
        (t.speed_kmh / 3.6 + t.accel * tau).max(1.0)
    }

    /// Seconds after arrival until the front reaches `x`.
    pub fn time_to(&self, t: &Truck, x: f64) -> f64 {
        let (mut lo, mut hi) = (0.0, 3600.0);
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if self.front_at(t, mid) < x {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }

    /// Seconds after arrival until the rear has left the barrier loop and its fringe.
    pub fn gone_s(&self, t: &Truck) -> f64 {
        self.time_to(t, self.barrier_loop.1 + self.fringe_m + t.length_m() + 0.5)
    }
}

/// The part of a wheel's load on a platform `[p0, p1]` when its footprint of length `l` is
/// centred at `x`: uniform pressure, or parabolic (heavier in the middle).
pub fn footprint_on(x: f64, l: f64, p0: f64, p1: f64, parabolic: bool) -> f64 {
    let z = |u: f64| (2.0 * (u - x) / l).clamp(-1.0, 1.0);
    let cdf = |z: f64| {
        if parabolic {
            (2.0 + 3.0 * z - z * z * z) / 4.0
        } else {
            (z + 1.0) / 2.0
        }
    };
    (cdf(z(p1)) - cdf(z(p0))).max(0.0)
}

/// Runs the firmware's logic on the host over a raw trace, as the board would, and returns
/// every frame it sent. `commands` are frames from the appliance, each at a sample tick.
pub fn replay(
    cfg: lane_node_core::Config,
    raw: &[u8],
    commands: &[(u64, lane_node_core::lane::Frame)],
) -> Result<Vec<lane_node_core::node::Sent>, lane_node_core::raw::RawError> {
    let h = Header::parse(raw)?;
    let mut node = lane_node_core::Node::new(cfg);
    // What the QEMU board reports: it has no supply or temperature sensor.
    node.set_board(24_000, 215, 0, 0);
    let mut out = lane_node_core::Frames::new();
    let mut sent = Vec::new();
    let mut next = 0;
    for block in raw[lane_node_core::raw::HEADER_LEN..].chunks(h.block_len()) {
        h.samples(block, |s| {
            while next < commands.len() && commands[next].0 <= node.ticks() {
                node.command(&commands[next].1, &mut out);
                next += 1;
            }
            node.step(&s, &mut out);
            for f in out.as_slice() {
                sent.push(lane_node_core::node::Sent {
                    tick: node.ticks() - 1,
                    frame: *f,
                });
            }
            out.clear();
        });
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_footprint_wholly_on_a_platform_puts_all_its_load_there() {
        for parabolic in [false, true] {
            assert!((footprint_on(0.5, 0.3, 0.0, 1.0, parabolic) - 1.0).abs() < 1e-12);
            assert_eq!(footprint_on(2.0, 0.3, 0.0, 1.0, parabolic), 0.0);
            let half = footprint_on(1.0, 0.3, 0.0, 1.0, parabolic);
            assert!((half - 0.5).abs() < 1e-12, "{half}");
        }
    }

    #[test]
    fn the_area_under_a_crossing_is_load_times_platform_over_speed() {
        // The identity the firmware's area method rests on, checked on this simulator's
        // own footprint model (not on the firmware).
        for parabolic in [false, true] {
            let (l, p, v) = (0.3, 0.75, 3.0);
            let dt = 1e-4;
            let mut area = 0.0;
            let mut t = 0.0;
            while t < 1.0 {
                area += footprint_on(-0.5 + v * t, l, 0.0, p, parabolic) * dt;
                t += dt;
            }
            assert!((area - p / v).abs() < 1e-3, "{area} vs {}", p / v);
        }
    }

    #[test]
    fn a_queue_of_trucks_does_not_overlap() {
        let mut rng = Rng::new(7);
        let s = Scene::queue(&mut rng, &Assumptions::wide(), 20);
        let truths = s.truths();
        for w in truths.windows(2) {
            assert!(w[1].at_s > w[0].gone_s);
        }
        assert!(s.duration_s > truths.last().unwrap().gone_s);
    }
}
