//! A traffic simulator that writes physically plausible traces (DESIGN.md trace format) where
//! no field recording exists yet: trucks of 2–6 axles crossing a lane at 5–15 km/h (loops,
//! axle loads with WIM noise, plates front and rear), the radiation portal's background and
//! scans with Poisson noise, vehicle shadowing, sources and NORM cargo, and electronic seals
//! (EGTS) driving the corridor to the post with a fix every 10 s, some tampered, silent or off
//! route. Deterministic from its seed: the same seed gives the same trace, byte for byte, so a
//! generated trace can be committed and tests do not depend on randomness.
//!
//! Sensors it writes for lane `L`: `node-L` (lane node: loops and WIM, at 0 m), `rpm-L` (portal,
//! at 4 m), `cam-L-front` (at −3 m) and `cam-L-rear` (at 2 m); post-wide `seals` (EGTS).
//! [`config`] is the matching configuration.

use std::fmt::Write as _;

use acsgd_drivers::lane::{self, Body, Frame};

use acsgd_contract::envelope::to_hex as hex;
use acsgd_fusion::radiation::ln_factorial;

/// Khorgos, the post; the corridor runs from it towards Almaty.
pub const POST: [f64; 2] = [44.2125, 80.4089];
/// The declared corridor of every simulated transit.
pub const CORRIDOR: [[f64; 2]; 4] = [
    [44.2125, 80.4089],
    [44.0500, 79.9000],
    [43.6000, 78.5000],
    [43.2389, 76.8897],
];

/// Portal background per detector, counts per second (gamma) and summed neutron.
pub const GAMMA_BG: f64 = 300.0;
pub const NEUTRON_BG: f64 = 2.0;

/// A deterministic generator (xorshift64*), with the distributions the simulation needs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }

    /// An exact Poisson sample: multiplication for small means, Hörmann's PTRS otherwise.
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda < 10.0 {
            let l = (-lambda).exp();
            let (mut k, mut p) = (0u64, 1.0);
            loop {
                p *= self.unit();
                if p <= l {
                    return k;
                }
                k += 1;
            }
        }
        let slam = lambda.sqrt();
        let loglam = lambda.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let invalpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.unit() - 0.5;
            let v = self.unit();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            if v.ln() + invalpha.ln() - (a / (us * us) + b).ln()
                <= -lambda + k * loglam - ln_factorial(k as u64)
            {
                return k as u64;
            }
        }
    }
}

/// What is special about a simulated truck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    None,
    OverweightAxle,
    UnderDeclared,
    GammaSource,
    NeutronSource,
    Norm,
    SealTampered,
    SealSilent,
    RouteDeviation,
    PlateUnread,
    NoDeclaration,
    Watchlisted,
}

/// One truck of a simulation.
#[derive(Debug, Clone)]
pub struct Truck {
    pub lane: String,
    /// When its front reaches the entry loop, ms from the trace start.
    pub arrival_ms: i64,
    pub speed_kmh: f64,
    pub plate_front: String,
    pub plate_rear: String,
    /// Axle loads (kg) and spacing from the previous axle (m).
    pub axles: Vec<(f64, f64)>,
    pub length_m: f64,
    pub mrn: String,
    pub seal: u32,
    pub special: Special,
}

impl Truck {
    pub fn gross_kg(&self) -> f64 {
        self.axles.iter().map(|a| a.0).sum()
    }
    fn occupancy_s(&self) -> f64 {
        (self.length_m + 2.0) / (self.speed_kmh / 3.6)
    }
}

const LETTERS: &[u8] = b"ABCEHKMOPTXY";

/// A plausible truck; `special` decides what is wrong with it.
pub fn truck(rng: &mut Rng, lane: &str, arrival_ms: i64, n: u32, special: Special) -> Truck {
    let axle_count = match rng.unit() {
        u if u < 0.05 => 2,
        u if u < 0.12 => 3,
        u if u < 0.25 => 4,
        u if u < 0.80 => 5,
        _ => 6,
    };
    // Spacing of each axle from the previous one: tractor (steer, drive or tandem drive), then
    // the semitrailer's group behind the kingpin.
    let layout: &[f64] = match axle_count {
        2 => &[0.0, 3.8],
        3 => &[0.0, 3.6, 1.35],
        4 => &[0.0, 3.6, 6.0, 1.31],
        5 => &[0.0, 3.6, 6.5, 1.31, 1.31],
        _ => &[0.0, 3.6, 1.35, 6.0, 1.31, 1.31],
    };
    // Loaded to 65–90 % of the gross limit, no axle over 9 t.
    let fill = rng.range(0.65, 0.90);
    let limit = [18.0, 25.0, 32.0, 38.0, 44.0][axle_count.min(6) - 2] * 1000.0;
    let steer = rng.range(5500.0, 7000.0);
    let rest = ((limit * fill - steer) / (axle_count - 1) as f64).min(9000.0);
    let mut axles: Vec<(f64, f64)> = layout
        .iter()
        .enumerate()
        .map(|(i, &sp)| {
            let sp = if sp > 0.0 {
                sp + rng.range(-0.05, 0.05)
            } else {
                0.0
            };
            (
                if i == 0 {
                    steer
                } else {
                    rest * rng.range(0.95, 1.05)
                },
                sp,
            )
        })
        .collect();
    if special == Special::OverweightAxle {
        axles[1].0 = rng.range(11_600.0, 12_800.0);
    }
    let len: f64 = axles.iter().map(|a| a.1).sum::<f64>() + 1.4 + 1.6;
    let region = 1 + rng.next_u64() % 17;
    // Digits from the truck's number, so no two trucks of a session share a plate.
    let l = |rng: &mut Rng| LETTERS[(rng.next_u64() % LETTERS.len() as u64) as usize] as char;
    let plate_front = format!(
        "{:03}{}{}{}{region:02}",
        (n as u64 * 7919) % 1000,
        l(rng),
        l(rng),
        l(rng)
    );
    let plate_rear = format!("{:04}AP{region:02}", n % 10_000);
    Truck {
        lane: lane.to_string(),
        arrival_ms,
        speed_kmh: rng.range(5.0, 15.0),
        plate_front,
        plate_rear,
        axles,
        length_m: len.max(8.0),
        mrn: format!("26KZ55{:011}{}", 1000 + n, (b'A' + (n % 26) as u8) as char),
        seal: 7_000_000 + n,
        special,
    }
}

/// The trace being written: lines with their offsets, sorted at the end.
#[derive(Default)]
pub struct Trace {
    lines: Vec<(i64, u32, String)>,
    serial: u32,
}

impl Trace {
    fn push(&mut self, at_ms: i64, sensor: &str, hex: bool, payload: &str) {
        self.serial += 1;
        self.lines.push((
            at_ms.max(0),
            self.serial,
            format!(
                "{}\t{sensor}\t{}\t{payload}",
                at_ms.max(0),
                if hex { "hex" } else { "text" }
            ),
        ));
    }

    /// The trace text, lines in offset order (ties in writing order).
    pub fn render(mut self, header: &str) -> String {
        self.lines.sort_by_key(|l| (l.0, l.1));
        let mut out = String::with_capacity(self.lines.len() * 48 + header.len());
        out.push_str(header);
        for (_, _, l) in self.lines {
            out.push_str(&l);
            out.push('\n');
        }
        out
    }
}

fn lane_frame(seq: &mut u8, body: Body) -> String {
    let mut buf = [0u8; lane::MAX_FRAME];
    *seq = seq.wrapping_add(1);
    let n = lane::encode(
        &Frame {
            addr: 1,
            seq: *seq,
            body,
        },
        &mut buf,
    )
    .expect("frames fit");
    hex(&buf[..n])
}

/// Per-lane simulation state.
struct LaneSim {
    id: String,
    seq: u8,
    vehicle: u16,
    /// Portal occupancies, ms.
    occupied: Vec<(i64, i64)>,
}

/// Writes one truck's readings on its lane.
fn drive(tr: &mut Trace, rng: &mut Rng, lane: &mut LaneSim, t: &Truck) {
    let v = t.speed_kmh / 3.6;
    let at = |x_m: f64| t.arrival_ms + (x_m / v * 1000.0).round() as i64;
    let node = format!("node-{}", lane.id);
    let t_ms = |ms: i64| ms as u32;
    lane.vehicle = lane.vehicle.wrapping_add(1);
    // Loop (2 m) at 0 m, the scale inside it.
    tr.push(
        t.arrival_ms,
        &node,
        true,
        &lane_frame(
            &mut lane.seq,
            Body::Loop {
                t_ms: t_ms(t.arrival_ms),
                loop_id: 1,
                occupied: true,
            },
        ),
    );
    let mut front = 1.4;
    let mut measured = Vec::new();
    for (i, (load, spacing)) in t.axles.iter().enumerate() {
        front += spacing;
        // WIM class 5 axle noise: about ±4 % per axle at these speeds.
        let kg = (load * (1.0 + 0.02 * rng.normal())).max(500.0);
        measured.push(kg);
        let left = (kg * rng.range(0.48, 0.52)).round();
        let ts = at(front + 1.0);
        tr.push(
            ts,
            &node,
            true,
            &lane_frame(
                &mut lane.seq,
                Body::Axle {
                    t_ms: t_ms(ts),
                    vehicle: lane.vehicle,
                    index: i as u8 + 1,
                    left_kg: left as u16,
                    right_kg: (kg - left).round() as u16,
                    spacing_mm: (spacing * 1000.0).round() as u16,
                    speed_dkmh: (t.speed_kmh * 10.0).round() as u16,
                },
            ),
        );
    }
    let done = at(front + 1.0) + 500;
    tr.push(
        done,
        &node,
        true,
        &lane_frame(
            &mut lane.seq,
            Body::Vehicle {
                t_ms: t_ms(done),
                vehicle: lane.vehicle,
                axles: t.axles.len() as u8,
                gross_kg: measured.iter().sum::<f64>().round() as u32,
                speed_dkmh: (t.speed_kmh * 10.0).round() as u16,
                length_cm: (t.length_m * 100.0).round() as u16,
                class: if t.axles.len() >= 5 { 11 } else { 8 },
                error: 0,
            },
        ),
    );
    let off = at(t.length_m + 2.0);
    tr.push(
        off,
        &node,
        true,
        &lane_frame(
            &mut lane.seq,
            Body::Loop {
                t_ms: t_ms(off),
                loop_id: 1,
                occupied: false,
            },
        ),
    );
    // Cameras: the front one upstream reads the tractor, the rear one the trailer.
    let conf = |rng: &mut Rng| (rng.range(0.82, 0.99) * 100.0).round() / 100.0;
    if t.special != Special::PlateUnread {
        let mut front_text = t.plate_front.clone();
        if rng.chance(0.1) {
            front_text = front_text.replacen('0', "O", 1); // a typical OCR confusion
        }
        let c = conf(rng);
        tr.push(
            at(-3.0),
            &format!("cam-{}-front", lane.id),
            false,
            &format!("{{\"plate\":\"{front_text}\",\"confidence\":{c}}}"),
        );
        let c = conf(rng);
        tr.push(
            at(t.length_m + 2.0),
            &format!("cam-{}-rear", lane.id),
            false,
            &format!("{{\"plate\":\"{}\",\"confidence\":{c}}}", t.plate_rear),
        );
    }
    // Portal at 4 m: occupied while any part of the truck is within a metre of it.
    let (p0, p1) = (at(3.0), at(5.0 + t.length_m));
    lane.occupied.push((p0, p1));
    let rpm = format!("rpm-{}", lane.id);
    let shadow = rng.range(0.75, 0.92);
    let source_at = rng.range(3.0, t.length_m - 1.0);
    let (gamma_src, neutron_src, norm) = match t.special {
        Special::GammaSource => (rng.range(900.0, 1600.0), 0.0, 1.0),
        Special::NeutronSource => (0.0, rng.range(25.0, 40.0), 1.0),
        Special::Norm => (0.0, 0.0, rng.range(1.10, 1.16)),
        _ => (0.0, 0.0, 1.0),
    };
    let mut ts = p0;
    while ts < p1 {
        let front_m = (ts + 100 - t.arrival_ms) as f64 / 1000.0 * v;
        let g = gamma_counts(rng, front_m, shadow, norm, gamma_src, source_at);
        let dx = front_m - 4.0 - source_at;
        let code = "GS";
        tr.push(
            ts,
            &rpm,
            false,
            &format!("{code},{:06},{:06},{:06},{:06}", g[0], g[1], g[2], g[3]),
        );
        let nsrc = neutron_src * 2.25 / (2.25 + dx * dx);
        let n: Vec<u64> = (0..4)
            .map(|_| rng.poisson(0.2 * (NEUTRON_BG / 4.0 + nsrc / 4.0)))
            .collect();
        tr.push(
            ts,
            &rpm,
            false,
            &format!("NS,{:06},{:06},{:06},{:06}", n[0], n[1], n[2], n[3]),
        );
        ts += 200;
    }
    tr.push(
        p1,
        &rpm,
        false,
        &format!(
            "GX,{:06},{:06}",
            lane.occupied.len(),
            (NEUTRON_BG * 1000.0) as u64
        ),
    );
}

/// One 200 ms scan interval of the portal at 4 m with the truck's front at `front_m`: the
/// background shadowed by the cargo (and raised by NORM cargo), plus a point source at
/// `source_at` metres behind the front whose rate falls with the square of the distance (1.5 m
/// to the near detectors 1–2, the far side sees 30 %).
fn gamma_counts(
    rng: &mut Rng,
    front_m: f64,
    shadow: f64,
    norm: f64,
    source_cps: f64,
    source_at: f64,
) -> [u64; 4] {
    let dx = front_m - 4.0 - source_at;
    let near = source_cps * 2.25 / (2.25 + dx * dx);
    let in_cargo = front_m - 4.0 > 1.5;
    let factor = if in_cargo { shadow * norm } else { shadow };
    let mut g = [0; 4];
    for (d, c) in g.iter_mut().enumerate() {
        let src = if d < 2 { near } else { near * 0.3 };
        *c = rng.poisson(0.2 * (GAMMA_BG * factor + src));
    }
    g
}

/// One occupancy for the radiation study: a truck of 10–18 m at 5–15 km/h, shadowing
/// 8–25 %, optionally a source (`source_cps` at 1.5 m) or NORM cargo (`norm` > 1), and the
/// background as the portal's 60 one-second lines before it give it.
pub struct Occupancy {
    pub background: [f64; 4],
    pub gamma: Vec<[u32; 4]>,
}

pub fn occupancy(rng: &mut Rng, source_cps: f64, norm: f64) -> Occupancy {
    let mut background = [0.0; 4];
    for _ in 0..60 {
        for b in background.iter_mut() {
            *b += rng.poisson(GAMMA_BG) as f64 / 60.0;
        }
    }
    let length = rng.range(10.0, 18.0);
    let v = rng.range(5.0, 15.0) / 3.6;
    let shadow = rng.range(0.75, 0.92);
    let source_at = rng.range(2.0, length - 1.0);
    let mut gamma = Vec::new();
    let mut front = 3.0;
    while front < 5.0 + length {
        let g = gamma_counts(rng, front, shadow, norm, source_cps, source_at);
        gamma.push(g.map(|c| c as u32));
        front += 0.2 * v;
    }
    Occupancy { background, gamma }
}

/// Background lines (every second) wherever the portal is not occupied.
fn background(tr: &mut Trace, rng: &mut Rng, lane: &LaneSim, duration_ms: i64) {
    let rpm = format!("rpm-{}", lane.id);
    let mut t = 0;
    let mut occ = lane.occupied.iter().peekable();
    while t < duration_ms {
        while occ.peek().is_some_and(|(_, e)| *e < t) {
            occ.next();
        }
        let busy = occ.peek().is_some_and(|(s, e)| *s <= t && t <= *e);
        if !busy {
            let g: Vec<u64> = (0..4).map(|_| rng.poisson(GAMMA_BG)).collect();
            tr.push(
                t,
                &rpm,
                false,
                &format!("GB,{:06},{:06},{:06},{:06}", g[0], g[1], g[2], g[3]),
            );
            let n: Vec<u64> = (0..4).map(|_| rng.poisson(NEUTRON_BG / 4.0)).collect();
            tr.push(
                t,
                &rpm,
                false,
                &format!("NB,{:06},{:06},{:06},{:06}", n[0], n[1], n[2], n[3]),
            );
        }
        t += 1000;
    }
}

/// Point at `d` metres along the corridor from the post, and the bearing of travel.
fn along(d: f64) -> [f64; 2] {
    let mut left = d;
    for w in CORRIDOR.windows(2) {
        let seg = acsgd_fusion::transit::distance_m(w[0], w[1]);
        if left <= seg {
            let f = left / seg;
            return [
                w[0][0] + (w[1][0] - w[0][0]) * f,
                w[0][1] + (w[1][1] - w[0][1]) * f,
            ];
        }
        left -= seg;
    }
    CORRIDOR[CORRIDOR.len() - 1]
}

/// A seal's fixes (every 10 s) for the 10 minutes before its truck reaches the post.
fn seal(tr: &mut Trace, rng: &mut Rng, t: &Truck, start_unix: i64, pid: &mut u16) {
    if t.special == Special::SealSilent {
        return;
    }
    let from = (t.arrival_ms - 600_000).max(0);
    // Every seal reports at least once before its truck arrives, even at the trace's start.
    let first = 10_000.min((t.arrival_ms - from) / 2).max(1);
    let mut ts = from + (rng.next_u64() % first as u64) as i64;
    let mut record = 0u16;
    // The finding sits in the middle of whatever track the trace holds: the deviation over
    // its first half, the tamper report at its middle fix.
    let fixes = (t.arrival_ms - ts + 9_999) / 10_000;
    let mut i = 0;
    while ts < t.arrival_ms {
        let to_go_m = (t.arrival_ms - ts) as f64 / 1000.0 * 16.0; // ~58 km/h on the road
        let mut p = along(to_go_m);
        if t.special == Special::RouteDeviation && (i < fixes / 2 || fixes == 1) {
            p[0] += 0.06; // about 6.7 km north of the corridor
        }
        let src = if t.special == Special::SealTampered && i == fixes / 2 {
            10
        } else {
            0
        };
        i += 1;
        *pid = pid.wrapping_add(1);
        record = record.wrapping_add(1);
        let fix_unix = start_unix + ts / 1000;
        let bytes = acsgd_drivers::egts::encode_position(
            *pid,
            record,
            t.seal,
            fix_unix,
            p[0] + 0.00002 * rng.normal(),
            p[1] + 0.00002 * rng.normal(),
            58.0,
            250,
            src,
        );
        tr.push(ts + 300, "seals", true, &hex(&bytes));
        ts += 10_000;
    }
}

/// Options of a simulated session at the post.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub duration_s: u64,
    pub lanes: Vec<String>,
    /// Mean gap between trucks on a lane, seconds (at least 2 s are always left).
    pub mean_gap_s: f64,
    /// Probability that a truck has something wrong with it (the kinds take turns).
    pub special_rate: f64,
    /// Start of the trace (Unix seconds).
    pub start_unix: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 1,
            duration_s: 600,
            lanes: vec!["1".into(), "2".into()],
            mean_gap_s: 12.0,
            special_rate: 0.15,
            start_unix: 1_795_161_600, // 2026-11-20T08:00:00Z
        }
    }
}

impl Options {
    /// The bundled demo trace (`edge/traces/demo.tsv`): two lanes, ten minutes.
    pub fn demo() -> Options {
        Options {
            seed: 2026,
            duration_s: 600,
            mean_gap_s: 10.0,
            special_rate: 0.2,
            ..Options::default()
        }
    }
}

const SPECIALS: [Special; 11] = [
    Special::OverweightAxle,
    Special::UnderDeclared,
    Special::GammaSource,
    Special::NeutronSource,
    Special::Norm,
    Special::SealTampered,
    Special::SealSilent,
    Special::RouteDeviation,
    Special::PlateUnread,
    Special::NoDeclaration,
    Special::Watchlisted,
];

/// Trucks for a session (by lane, in arrival order).
pub fn schedule(o: &Options, rng: &mut Rng) -> Vec<Truck> {
    let mut trucks = Vec::new();
    let mut n = 0;
    let mut turn = 0;
    for lane in &o.lanes {
        let mut t = (rng.range(2.0, o.mean_gap_s) * 1000.0) as i64;
        while t < o.duration_s as i64 * 1000 - 60_000 {
            n += 1;
            // Findings take turns, so even a short session shows every kind.
            let special = if rng.chance(o.special_rate) {
                turn += 1;
                SPECIALS[(turn - 1) % SPECIALS.len()]
            } else {
                Special::None
            };
            let tr = truck(rng, lane, t, n, special);
            let gap = 2.0 + (-rng.unit().ln()) * (o.mean_gap_s - 2.0).max(0.5);
            t += ((tr.occupancy_s() + gap) * 1000.0) as i64;
            trucks.push(tr);
        }
    }
    trucks
}

/// Writes a whole trace for given trucks: declarations first, then every sensor.
pub fn trace(o: &Options, trucks: &[Truck], rng: &mut Rng) -> String {
    write(o, trucks, rng, true)
}

/// A trace of the post's own sensors only: no declarations or watchlist (the real central
/// sends those) and no seals. Central's demo gives each post of a route one.
pub fn sensor_trace(o: &Options, trucks: &[Truck], rng: &mut Rng) -> String {
    write(o, trucks, rng, false)
}

fn write(o: &Options, trucks: &[Truck], rng: &mut Rng, with_central: bool) -> String {
    let mut tr = Trace::default();
    if with_central {
        central_lines(&mut tr, trucks, rng);
    }
    let mut pid = 0u16;
    for lane_id in &o.lanes {
        let mut lane = LaneSim {
            id: lane_id.clone(),
            seq: 0,
            vehicle: 0,
            occupied: Vec::new(),
        };
        for t in trucks.iter().filter(|t| &t.lane == lane_id) {
            drive(&mut tr, rng, &mut lane, t);
            if with_central {
                seal(&mut tr, rng, t, o.start_unix, &mut pid);
            }
        }
        background(&mut tr, rng, &lane, o.duration_s as i64 * 1000);
    }
    tr.render(&header(o, trucks))
}

/// What central would send, as `@declarations` and `@watchlist` lines at offset 0.
fn central_lines(tr: &mut Trace, trucks: &[Truck], rng: &mut Rng) {
    let decls: Vec<serde_json::Value> = trucks
        .iter()
        .filter(|t| t.special != Special::NoDeclaration)
        .map(|t| {
            let factor = if t.special == Special::UnderDeclared {
                0.72
            } else {
                rng.range(0.97, 1.03)
            };
            serde_json::json!({
                "mrn": t.mrn,
                "plates": [t.plate_front, t.plate_rear],
                "tracker": t.seal.to_string(),
                "gross_kg": (t.gross_kg() * factor / 10.0).round() * 10.0,
                "goods": [{"hs": "850440", "description": "static converters"}],
                "corridor": {"points": CORRIDOR, "width_m": 5000},
                "destination": "KZ551100",
            })
        })
        .collect();
    for chunk in decls.chunks(50) {
        tr.push(
            0,
            "@declarations",
            false,
            &serde_json::Value::Array(chunk.to_vec()).to_string(),
        );
    }
    let watch: Vec<&str> = trucks
        .iter()
        .filter(|t| t.special == Special::Watchlisted)
        .map(|t| t.plate_front.as_str())
        .collect();
    tr.push(
        0,
        "@watchlist",
        false,
        &serde_json::json!({"plates": watch}).to_string(),
    );
}

fn header(o: &Options, trucks: &[Truck]) -> String {
    let start = time::OffsetDateTime::from_unix_timestamp(o.start_unix)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "# ACSGD simulated trace: seed {}, {} s, lanes {}, {} trucks ({} with a finding)\n# start {}\n",
        o.seed,
        o.duration_s,
        o.lanes.join(","),
        trucks.len(),
        trucks.iter().filter(|t| t.special != Special::None).count(),
        acsgd_contract::envelope::rfc3339_ms(start),
    )
}

/// A whole session: schedule and trace.
pub fn session(o: &Options) -> (Vec<Truck>, String) {
    let mut rng = Rng::new(o.seed);
    let trucks = schedule(o, &mut rng);
    let text = trace(o, &trucks, &mut rng);
    (trucks, text)
}

/// The configuration matching what the simulator writes (uplink and storage are
/// placeholders for `replay`, which uses neither).
pub fn config(post: &str, lanes: &[String], broker: &str, data_dir: &str) -> String {
    let mut c = format!(
        "post = \"{post}\"\n\n[uplink]\nbroker = \"{broker}\"\n\n[storage]\ndata_dir = \"{data_dir}\"\n\n[rules.seal]\npost_location = [{}, {}]\n\n",
        POST[0], POST[1]
    );
    for l in lanes {
        let _ = write!(
            c,
            "[[lanes]]\nid = \"{l}\"\n\n\
             [[sensors]]\nid = \"node-{l}\"\nlane = \"{l}\"\nprotocol = \"lane\"\ntransport = {{ kind = \"serial\", path = \"/dev/null\" }}\n\n\
             [[sensors]]\nid = \"rpm-{l}\"\nlane = \"{l}\"\nprotocol = \"rpm\"\nposition_m = 4.0\ntransport = {{ kind = \"serial\", path = \"/dev/null\" }}\n\n\
             [[sensors]]\nid = \"cam-{l}-front\"\nlane = \"{l}\"\nprotocol = \"camera\"\nview = \"front\"\nposition_m = -3.0\ntransport = {{ kind = \"url\", url = \"rtsp://127.0.0.1/{l}/front\" }}\n\n\
             [[sensors]]\nid = \"cam-{l}-rear\"\nlane = \"{l}\"\nprotocol = \"camera\"\nview = \"rear\"\nposition_m = 2.0\ntransport = {{ kind = \"url\", url = \"rtsp://127.0.0.1/{l}/rear\" }}\n\n"
        );
    }
    c.push_str("[[sensors]]\nid = \"seals\"\nprotocol = \"egts\"\ntransport = { kind = \"tcp\", listen = \"127.0.0.1:0\" }\n");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_samples_have_the_right_mean_and_variance() {
        let mut rng = Rng::new(7);
        for lambda in [0.5, 4.0, 60.0, 300.0] {
            let n = 40_000;
            let xs: Vec<f64> = (0..n).map(|_| rng.poisson(lambda) as f64).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let se = (lambda / n as f64).sqrt();
            assert!((mean - lambda).abs() < 5.0 * se, "λ {lambda}: mean {mean}");
            assert!(
                (var / lambda - 1.0).abs() < 0.05,
                "λ {lambda}: variance {var}"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_trace() {
        let o = Options {
            duration_s: 180,
            ..Options::default()
        };
        assert_eq!(session(&o).1, session(&o).1);
        let other = Options { seed: 2, ..o };
        assert_ne!(
            session(&other).1,
            session(&Options {
                duration_s: 180,
                ..Options::default()
            })
            .1
        );
    }

    #[test]
    fn corridor_points_lie_on_the_corridor() {
        for d in [0.0, 10_000.0, 50_000.0, 400_000.0] {
            let p = along(d);
            assert!(
                acsgd_fusion::transit::distance_to_line_m(p, &CORRIDOR) < 1.0,
                "{d} {p:?}"
            );
        }
    }
}
