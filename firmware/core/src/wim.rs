//! Weigh-in-motion: load-cell samples to wheel hits, axles and vehicles.
//!
//! The lane has two load-cell platforms per wheel track, A then B, `platform_gap_m` apart,
//! each `platform_m` long in the driving direction and longer than a tyre's footprint. Each
//! wheel crossing a platform gives a trapezoid; the four channels are A left, A right,
//! B left, B right.
//!
//! 1. **Channel** ([`Channel`]): `w = (raw − zero) · gain` in kg. A *hit* starts above
//!    `on_kg` and ends after 10 ms under `off_kg`; shorter than `min_hit_ms` is noise. Per hit
//!    it keeps the area Σw, the load-weighted centroid time, the peak, the mean of the middle
//!    30 % (the *plateau*, where the whole footprint is on the plate) and whether the converter
//!    saturated. While the channel is idle and the scale loop free, the zero follows the mean of
//!    each still half second (its mean within `zero_band_kg` of the one before) by at most
//!    `zero_step_kg`.
//! 2. **Platform axle**: the left and right hits of one platform that overlap in time; a side
//!    with no hit is a wheel beside the plate.
//! 3. **Axle**: the k-th platform axle of A with the k-th of B. Speed `v = gap / (t_B − t_A)`
//!    from the centroids. Each wheel load is the area method `W = v · ∫w dt / platform_m`
//!    (exact for any footprint shape at constant speed), averaged over A and B, and checked
//!    against the plateau mean. Spacing `= v̄ · Δt_A` from the previous axle.
//! 4. **Vehicle**: the axles between the scale loop's detection and its release, closed when
//!    the loop is free and every channel idle (or, when the loop saw nothing or is faulted,
//!    `vehicle_timeout_s` after its last axle). Length `= v̄ · occupancy − loop_effective_m`.
//!    Its error code says why the record is not valid: speed out of range, acceleration,
//!    wheel off the plate, two vehicles (axles over `max_spacing_m` apart, or more than
//!    `max_axles`: the loop never released between two trucks), saturated converter or a
//!    faulted loop.
//!
//! Memory is fixed: a few hits and axles in flight per channel, 64 decimated samples per hit.

use acsgd_drivers::lane::{Body, WimError};

use crate::config::Config;
use crate::CELLS;

/// Converter counts at which a 24-bit channel is saturated.
pub const SATURATED: i32 = (1 << 23) - 2;

/// One wheel crossing one platform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// First tick over `on_kg`.
    pub start: u64,
    /// Ticks from `start` to the last over `off_kg`, inclusive.
    pub ticks: u32,
    /// Σ w over the hit, kg·tick.
    pub area: f32,
    /// Load-weighted mean time, ticks after `start`.
    pub centroid: f32,
    /// Mean load over the middle 30 % of the hit, kg (NaN when too short to say).
    pub plateau: f32,
    pub peak: f32,
    pub saturated: bool,
}

impl Hit {
    fn end(&self) -> u64 {
        self.start + self.ticks as u64
    }
    fn time(&self) -> f64 {
        self.start as f64 + self.centroid as f64
    }
}

const SLOTS: usize = 64;

/// The samples of a hit, decimated into at most 64 slots: when full, neighbours merge and
/// each slot covers twice the ticks. Enough to find the plateau of any crossing, in fixed RAM.
#[derive(Debug, Clone)]
struct Decimated {
    slots: [f32; SLOTS],
    used: usize,
    stride: u32,
    fill: u32,
    acc: f32,
}

impl Decimated {
    const fn new() -> Self {
        Decimated {
            slots: [0.0; SLOTS],
            used: 0,
            stride: 1,
            fill: 0,
            acc: 0.0,
        }
    }

    fn push(&mut self, w: f32) {
        self.acc += w;
        self.fill += 1;
        if self.fill < self.stride {
            return;
        }
        self.slots[self.used] = self.acc / self.stride as f32;
        self.used += 1;
        self.acc = 0.0;
        self.fill = 0;
        if self.used == SLOTS {
            for i in 0..SLOTS / 2 {
                self.slots[i] = (self.slots[2 * i] + self.slots[2 * i + 1]) / 2.0;
            }
            self.used = SLOTS / 2;
            self.stride *= 2;
        }
    }

    /// Mean of the slots whose middle lies in `[lo, hi)` ticks; NaN when none does.
    fn mean_between(&self, lo: f32, hi: f32) -> f32 {
        let (mut sum, mut n) = (0.0f32, 0u32);
        for (i, v) in self.slots[..self.used].iter().enumerate() {
            let mid = (i as f32 + 0.5) * self.stride as f32;
            if mid >= lo && mid < hi {
                sum += v;
                n += 1;
            }
        }
        if n == 0 {
            f32::NAN
        } else {
            sum / n as f32
        }
    }
}

/// A hit being accumulated.
#[derive(Debug, Clone)]
struct Open {
    start: u64,
    /// Ticks seen since `start`.
    n: u32,
    /// Offset of the last sample over `off_kg`.
    last_above: u32,
    area: f32,
    moment: f32,
    /// Area and moment of the samples after `last_above`, dropped if the hit ends there.
    tail_area: f32,
    tail_moment: f32,
    peak: f32,
    saturated: bool,
    samples: Decimated,
}

/// A small fixed-capacity FIFO (the node allocates nothing).
#[derive(Debug, Clone)]
pub struct Fifo<T: Copy, const N: usize> {
    items: [Option<T>; N],
    head: usize,
    len: usize,
}

impl<T: Copy, const N: usize> Fifo<T, N> {
    pub const fn new() -> Self {
        Fifo {
            items: [None; N],
            head: 0,
            len: 0,
        }
    }
    /// Appends; when full the oldest is dropped and returned false.
    pub fn push(&mut self, v: T) -> bool {
        let full = self.len == N;
        if full {
            self.pop();
        }
        self.items[(self.head + self.len) % N] = Some(v);
        self.len += 1;
        !full
    }
    pub fn front(&self) -> Option<T> {
        if self.len == 0 {
            None
        } else {
            self.items[self.head]
        }
    }
    pub fn pop(&mut self) -> Option<T> {
        let v = self.front()?;
        self.items[self.head] = None;
        self.head = (self.head + 1) % N;
        self.len -= 1;
        Some(v)
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: Copy, const N: usize> Default for Fifo<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

/// One load-cell channel: zero tracking and hit detection.
#[derive(Debug, Clone)]
pub struct Channel {
    zero: f32,
    zeroed: bool,
    block_n: u32,
    block_sum: i64,
    block_quiet: bool,
    /// The previous still block's mean, counts.
    last_mean: Option<f32>,
    open: Option<Open>,
    below: u32,
    /// Hits shorter than `min_hit_ms`, since start.
    pub noise_hits: u32,
}

impl Default for Channel {
    fn default() -> Self {
        Self::new()
    }
}

impl Channel {
    pub const fn new() -> Self {
        Channel {
            zero: 0.0,
            zeroed: false,
            block_n: 0,
            block_sum: 0,
            block_quiet: true,
            last_mean: None,
            open: None,
            below: 0,
            noise_hits: 0,
        }
    }

    /// The zero, in converter counts (None until the first still half second).
    pub fn zero(&self) -> Option<f32> {
        self.zeroed.then_some(self.zero)
    }

    pub fn is_idle(&self) -> bool {
        self.open.is_none()
    }

    /// One sample. `quiet`: the scale loop is free, so the zero may be tracked.
    pub fn step(
        &mut self,
        raw: i32,
        tick: u64,
        quiet: bool,
        gain: f32,
        cfg: &Config,
    ) -> Option<Hit> {
        let hit = if self.zeroed {
            self.detect(raw, tick, gain, cfg)
        } else {
            None
        };
        if self.open.is_none() {
            self.track_zero(raw, quiet, gain, cfg);
        } else {
            self.reset_block();
            self.last_mean = None;
        }
        hit
    }

    fn reset_block(&mut self) {
        self.block_n = 0;
        self.block_sum = 0;
        self.block_quiet = true;
    }

    /// Still means two half-second means in a row within `zero_band_kg` of each other: noise
    /// averages out over a block, a wheel or a person on the plate does not.
    fn track_zero(&mut self, raw: i32, quiet: bool, gain: f32, cfg: &Config) {
        self.block_n += 1;
        self.block_sum += raw as i64;
        self.block_quiet &= quiet;
        if self.block_n < cfg.sample_hz / 2 {
            return;
        }
        let mean = (self.block_sum as f64 / self.block_n as f64) as f32;
        let quiet = self.block_quiet;
        self.reset_block();
        if !quiet {
            self.last_mean = None;
            return;
        }
        let still = self
            .last_mean
            .is_some_and(|last| (mean - last).abs() * gain < cfg.zero_band_kg);
        self.last_mean = Some(mean);
        if !still {
            return;
        }
        if self.zeroed {
            let step = cfg.zero_step_kg / gain;
            self.zero += (mean - self.zero).clamp(-step, step);
        } else {
            self.zero = mean;
            self.zeroed = true;
        }
    }

    fn detect(&mut self, raw: i32, tick: u64, gain: f32, cfg: &Config) -> Option<Hit> {
        let w = (raw as f32 - self.zero) * gain;
        let saturated = raw >= SATURATED || raw <= -SATURATED;
        let Some(o) = self.open.as_mut() else {
            if w > cfg.on_kg {
                let mut samples = Decimated::new();
                samples.push(w);
                self.open = Some(Open {
                    start: tick,
                    n: 1,
                    last_above: 0,
                    area: w,
                    moment: 0.0,
                    tail_area: 0.0,
                    tail_moment: 0.0,
                    peak: w,
                    saturated,
                    samples,
                });
                self.below = 0;
            }
            return None;
        };
        let k = o.n;
        o.n = o.n.saturating_add(1);
        o.samples.push(w);
        o.saturated |= saturated;
        o.peak = o.peak.max(w);
        if w >= cfg.off_kg {
            o.area += o.tail_area + w;
            o.moment += o.tail_moment + w * k as f32;
            o.tail_area = 0.0;
            o.tail_moment = 0.0;
            o.last_above = k;
            self.below = 0;
            return None;
        }
        o.tail_area += w;
        o.tail_moment += w * k as f32;
        self.below += 1;
        if self.below < (cfg.sample_hz / 100).max(1) {
            return None;
        }
        let o = self.open.take()?;
        let ticks = o.last_above + 1;
        if (ticks as u64) * 1000 < cfg.min_hit_ms as u64 * cfg.sample_hz as u64 {
            self.noise_hits = self.noise_hits.wrapping_add(1);
            return None;
        }
        let n = ticks as f32;
        Some(Hit {
            start: o.start,
            ticks,
            area: o.area,
            centroid: if o.area > 0.0 {
                o.moment / o.area
            } else {
                n / 2.0
            },
            plateau: o.samples.mean_between(0.35 * n, 0.65 * n),
            peak: o.peak,
            saturated: o.saturated,
        })
    }
}

/// Both sides of one platform for one axle.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PlatformAxle {
    left: Option<Hit>,
    right: Option<Hit>,
}

impl PlatformAxle {
    fn time(&self) -> f64 {
        match (self.left, self.right) {
            (Some(l), Some(r)) => (l.time() + r.time()) / 2.0,
            (Some(h), None) | (None, Some(h)) => h.time(),
            (None, None) => 0.0,
        }
    }
}

/// An axle as measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axle {
    /// When it crossed platform A, ticks (centroid).
    pub at: f64,
    pub left_kg: f32,
    pub right_kg: f32,
    /// m/s.
    pub speed: f32,
    /// [`WimError`] this axle makes its vehicle carry, 0 for none.
    pub error: u8,
}

/// The vehicle on the scale.
#[derive(Debug, Clone, Copy)]
struct Vehicle {
    number: u16,
    axles: u8,
    gross_kg: u32,
    speed_sum: f32,
    first: (f64, f32),
    last: (f64, f32),
    error: u8,
    loop_on: Option<u64>,
    loop_off: Option<u64>,
    /// When its last axle was heard of (any hit), for the timeout.
    last_activity: u64,
}

/// The error code a vehicle keeps: the most serious of those found.
fn worse(a: u8, b: u8) -> u8 {
    let rank = |e: u8| match e {
        WimError::SENSOR_FAULT => 5,
        WimError::TWO_VEHICLES => 4,
        WimError::OFF_SCALE => 3,
        WimError::SPEED_OUT_OF_RANGE => 2,
        WimError::ACCELERATION => 1,
        _ => 0,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// The most axles one vehicle record carries; more is two vehicles.
pub const MAX_AXLES: u8 = 16;

/// The weigh-in-motion part of the node.
#[derive(Debug, Clone)]
pub struct Wim {
    pub channels: [Channel; CELLS],
    hits: [Fifo<Hit, 4>; CELLS],
    platforms: [Fifo<PlatformAxle, 4>; 2],
    vehicle: Option<Vehicle>,
    /// The scale loop's detection not yet claimed by a vehicle.
    loop_on: Option<u64>,
    loop_occupied: bool,
    /// The scale loop faulted while no vehicle was open: the next one inherits it.
    fault_pending: bool,
    /// Vehicle counter (wrapping), as frames carry it.
    number: u16,
    /// Hits or axles lost to a full queue, since start (a fault if ever non-zero).
    pub overflows: u32,
    /// Samples at which a converter saturated, since start.
    pub saturations: u32,
}

impl Default for Wim {
    fn default() -> Self {
        Self::new()
    }
}

impl Wim {
    pub const fn new() -> Self {
        Wim {
            channels: [
                Channel::new(),
                Channel::new(),
                Channel::new(),
                Channel::new(),
            ],
            hits: [Fifo::new(), Fifo::new(), Fifo::new(), Fifo::new()],
            platforms: [Fifo::new(), Fifo::new()],
            vehicle: None,
            loop_on: None,
            loop_occupied: false,
            fault_pending: false,
            number: 0,
            overflows: 0,
            saturations: 0,
        }
    }

    /// The scale loop changed (occupied includes a faulted loop).
    pub fn scale_loop(&mut self, occupied: bool, tick: u64) {
        self.loop_occupied = occupied;
        if occupied {
            match self.vehicle.as_mut() {
                // A new detection while the vehicle is on the scale and its loop released:
                // the next vehicle; it claims the detection when its first axle comes.
                Some(v) if v.loop_off.is_some() => self.loop_on = Some(tick),
                Some(_) => {}
                None => self.loop_on = Some(tick),
            }
        } else if let Some(v) = self.vehicle.as_mut() {
            if v.loop_on.is_some() && v.loop_off.is_none() {
                v.loop_off = Some(tick);
            }
        } else {
            // Released with no axle: something that did not cross the scale (or a fault that
            // cleared with nothing on the lane).
            self.loop_on = None;
            self.fault_pending = false;
        }
    }

    /// The scale loop is faulted: the vehicle on the scale (or the next one) has no trusted
    /// presence, so its record is marked `SENSOR_FAULT`.
    pub fn scale_loop_faulted(&mut self) {
        match self.vehicle.as_mut() {
            Some(v) => v.error = worse(v.error, WimError::SENSOR_FAULT),
            None => self.fault_pending = true,
        }
    }

    /// One sample of the four channels. `emit` receives `Axle` and `Vehicle` bodies.
    pub fn step(
        &mut self,
        cells: &[i32; CELLS],
        tick: u64,
        cfg: &Config,
        emit: &mut impl FnMut(Body),
    ) {
        let quiet = !self.loop_occupied;
        for (c, raw) in cells.iter().enumerate() {
            if *raw >= SATURATED || *raw <= -SATURATED {
                self.saturations = self.saturations.wrapping_add(1);
            }
            if let Some(hit) = self.channels[c].step(*raw, tick, quiet, cfg.gain_kg[c], cfg) {
                if !self.hits[c].push(hit) {
                    self.overflows += 1;
                }
                if let Some(v) = self.vehicle.as_mut() {
                    v.last_activity = tick;
                }
            }
        }
        for p in 0..2 {
            while let Some(pa) = self.pair_platform(p, tick, cfg) {
                if !self.platforms[p].push(pa) {
                    self.overflows += 1;
                }
            }
        }
        while let Some(axle) = self.pair_axle(tick, cfg) {
            self.add_axle(axle, tick, cfg, emit);
        }
        self.maybe_close(tick, cfg, emit);
    }

    /// The next platform axle of platform `p`, once it is known whether both sides hit.
    fn pair_platform(&mut self, p: usize, tick: u64, cfg: &Config) -> Option<PlatformAxle> {
        let (l, r) = (2 * p, 2 * p + 1);
        let guard = cfg.sample_hz as u64 / 10;
        let overlap = |a: &Hit, b: &Hit| a.start <= b.end() && b.start <= a.end();
        match (self.hits[l].front(), self.hits[r].front()) {
            (Some(a), Some(b)) if overlap(&a, &b) => {
                self.hits[l].pop();
                self.hits[r].pop();
                Some(PlatformAxle {
                    left: Some(a),
                    right: Some(b),
                })
            }
            (Some(a), Some(b)) => {
                if a.end() < b.start {
                    self.hits[l].pop();
                    Some(PlatformAxle {
                        left: Some(a),
                        right: None,
                    })
                } else {
                    self.hits[r].pop();
                    Some(PlatformAxle {
                        left: None,
                        right: Some(b),
                    })
                }
            }
            (Some(a), None) if self.alone(r, &a, tick, guard) => {
                self.hits[l].pop();
                Some(PlatformAxle {
                    left: Some(a),
                    right: None,
                })
            }
            (None, Some(b)) if self.alone(l, &b, tick, guard) => {
                self.hits[r].pop();
                Some(PlatformAxle {
                    left: None,
                    right: Some(b),
                })
            }
            _ => None,
        }
    }

    /// True when channel `other` will not give a hit overlapping `h`: it is not in a hit that
    /// began before `h` ended, and `guard` ticks have passed since `h` ended.
    fn alone(&self, other: usize, h: &Hit, tick: u64, guard: u64) -> bool {
        let active_overlapping = self.channels[other]
            .open
            .as_ref()
            .is_some_and(|o| o.start <= h.end());
        !active_overlapping && tick > h.end() + guard
    }

    /// The next axle: A's oldest platform axle with B's, or one alone when the other cannot
    /// come any more.
    fn pair_axle(&mut self, tick: u64, cfg: &Config) -> Option<Axle> {
        let hz = cfg.sample_hz as f64;
        // Slowest plausible crossing from A to B, in ticks.
        let slowest = cfg.platform_gap_m as f64 / (cfg.speed_min_kmh as f64 / 3.6 / 2.0) * hz;
        let a = self.platforms[0].front();
        let b = self.platforms[1].front();
        match (a, b) {
            (Some(a), Some(b)) => {
                let dt = b.time() - a.time();
                if dt <= 0.0 {
                    // B saw an axle A never did.
                    self.platforms[1].pop();
                    Some(self.axle(None, Some(b), cfg))
                } else if dt > slowest {
                    self.platforms[0].pop();
                    Some(self.axle(Some(a), None, cfg))
                } else {
                    self.platforms[0].pop();
                    self.platforms[1].pop();
                    Some(self.axle(Some(a), Some(b), cfg))
                }
            }
            (Some(a), None) if tick as f64 - a.time() > slowest => {
                self.platforms[0].pop();
                Some(self.axle(Some(a), None, cfg))
            }
            (None, Some(b)) => {
                // B before any A: A missed it.
                self.platforms[1].pop();
                Some(self.axle(None, Some(b), cfg))
            }
            _ => None,
        }
    }

    fn axle(&self, a: Option<PlatformAxle>, b: Option<PlatformAxle>, cfg: &Config) -> Axle {
        let hz = cfg.sample_hz as f32;
        let mut error = WimError::OK;
        let speed = match (a, b) {
            (Some(a), Some(b)) => {
                (cfg.platform_gap_m as f64 / ((b.time() - a.time()) / hz as f64)) as f32
            }
            // One platform only: the vehicle's speed so far, or the slowest plausible.
            _ => {
                error = worse(error, WimError::OFF_SCALE);
                self.vehicle
                    .map(|v| v.last.1)
                    .unwrap_or(cfg.speed_min_kmh / 3.6)
            }
        };
        let at = match (a, b) {
            (Some(a), _) => a.time(),
            (None, Some(b)) => b.time() - (cfg.platform_gap_m / speed * hz) as f64,
            (None, None) => 0.0,
        };
        // Wheel load by the area method, checked against the plateau.
        let wheel = |h: Option<Hit>, error: &mut u8| -> Option<f32> {
            let h = h?;
            let w = speed * (h.area / hz) / cfg.platform_m;
            if h.saturated {
                *error = worse(*error, WimError::SENSOR_FAULT);
            }
            if h.plateau.is_finite()
                && h.plateau > cfg.on_kg
                && (w - h.plateau).abs() > cfg.plateau_tolerance * h.plateau
            {
                *error = worse(*error, WimError::ACCELERATION);
            }
            Some(w)
        };
        let mut side = |pick: fn(&PlatformAxle) -> Option<Hit>| -> f32 {
            let wa = a.and_then(|a| wheel(pick(&a), &mut error));
            let wb = b.and_then(|b| wheel(pick(&b), &mut error));
            match (wa, wb) {
                (Some(x), Some(y)) => (x + y) / 2.0,
                (Some(x), None) | (None, Some(x)) => {
                    error = worse(error, WimError::OFF_SCALE);
                    x
                }
                (None, None) => {
                    error = worse(error, WimError::OFF_SCALE);
                    0.0
                }
            }
        };
        let left_kg = side(|p| p.left);
        let right_kg = side(|p| p.right);
        let total = left_kg + right_kg;
        if total > 0.0 && (left_kg < cfg.side_min * total || right_kg < cfg.side_min * total) {
            error = worse(error, WimError::OFF_SCALE);
        }
        let kmh = speed * 3.6;
        if !(cfg.speed_min_kmh..=cfg.speed_max_kmh).contains(&kmh) {
            error = worse(error, WimError::SPEED_OUT_OF_RANGE);
        }
        Axle {
            at,
            left_kg,
            right_kg,
            speed,
            error,
        }
    }

    fn add_axle(&mut self, axle: Axle, tick: u64, cfg: &Config, emit: &mut impl FnMut(Body)) {
        let t_ms = cfg.t_ms(tick);
        let hz = cfg.sample_hz as f64;
        let v = match self.vehicle.as_mut() {
            Some(v) => v,
            None => {
                self.number = self.number.wrapping_add(1);
                self.vehicle.insert(Vehicle {
                    number: self.number,
                    axles: 0,
                    gross_kg: 0,
                    speed_sum: 0.0,
                    first: (axle.at, axle.speed),
                    last: (axle.at, axle.speed),
                    error: if core::mem::take(&mut self.fault_pending) {
                        WimError::SENSOR_FAULT
                    } else {
                        WimError::OK
                    },
                    loop_on: self.loop_on.take(),
                    loop_off: None,
                    last_activity: tick,
                })
            }
        };
        let mut spacing_mm = 0u16;
        if v.axles > 0 {
            let m = (v.last.1 + axle.speed) as f64 / 2.0 * (axle.at - v.last.0) / hz;
            if m > cfg.max_spacing_m as f64 {
                v.error = worse(v.error, WimError::TWO_VEHICLES);
            }
            spacing_mm = (m * 1000.0).clamp(0.0, u16::MAX as f64) as u16;
        }
        if v.axles >= MAX_AXLES {
            v.error = worse(v.error, WimError::TWO_VEHICLES);
            return;
        }
        v.axles += 1;
        if v.axles > cfg.max_axles {
            v.error = worse(v.error, WimError::TWO_VEHICLES);
        }
        v.error = worse(v.error, axle.error);
        let left = (axle.left_kg + 0.5).clamp(0.0, u16::MAX as f32) as u16;
        let right = (axle.right_kg + 0.5).clamp(0.0, u16::MAX as f32) as u16;
        v.gross_kg += left as u32 + right as u32;
        v.speed_sum += axle.speed;
        v.last = (axle.at, axle.speed);
        v.last_activity = tick;
        emit(Body::Axle {
            t_ms,
            vehicle: v.number,
            index: v.axles,
            left_kg: left,
            right_kg: right,
            spacing_mm,
            speed_dkmh: dkmh(axle.speed),
        });
    }

    fn everything_idle(&self) -> bool {
        self.channels.iter().all(Channel::is_idle)
            && self.hits.iter().all(Fifo::is_empty)
            && self.platforms.iter().all(Fifo::is_empty)
    }

    fn maybe_close(&mut self, tick: u64, cfg: &Config, emit: &mut impl FnMut(Body)) {
        let Some(v) = self.vehicle else { return };
        let released = v.loop_off.is_some();
        let timed_out = tick.saturating_sub(v.last_activity)
            > cfg.vehicle_timeout_s as u64 * cfg.sample_hz as u64;
        if !(self.everything_idle() && (released || timed_out)) {
            return;
        }
        self.vehicle = None;
        let hz = cfg.sample_hz as f64;
        let mut error = v.error;
        let speed = v.speed_sum / v.axles.max(1) as f32;
        let length_m = match (v.loop_on, v.loop_off) {
            (Some(on), Some(off)) => {
                (speed as f64 * (off - on) as f64 / hz - cfg.loop_effective_m as f64).max(0.0)
            }
            _ => {
                // The loop missed it, or is faulted: no length, and the record says why.
                error = worse(error, WimError::SENSOR_FAULT);
                0.0
            }
        };
        let dt = (v.last.0 - v.first.0) / hz;
        if v.axles > 1
            && dt > 0.0
            && ((v.last.1 - v.first.1) as f64 / dt).abs() > cfg.accel_max as f64
        {
            error = worse(error, WimError::ACCELERATION);
        }
        let kmh = speed * 3.6;
        if !(cfg.speed_min_kmh..=cfg.speed_max_kmh).contains(&kmh) {
            error = worse(error, WimError::SPEED_OUT_OF_RANGE);
        }
        emit(Body::Vehicle {
            t_ms: cfg.t_ms(tick),
            vehicle: v.number,
            axles: v.axles,
            gross_kg: v.gross_kg,
            speed_dkmh: dkmh(speed),
            length_cm: (length_m * 100.0).clamp(0.0, u16::MAX as f64) as u16,
            class: class(v.axles),
            error,
        });
    }
}

/// m/s to tenths of km/h, rounded.
fn dkmh(speed: f32) -> u16 {
    (speed * 36.0 + 0.5).clamp(0.0, u16::MAX as f32) as u16
}

/// FHWA-style class by axle count: 5 two-axle, 6 three-axle single unit, 8 four-axle,
/// 9 five-axle, 10 six or more.
fn class(axles: u8) -> u8 {
    match axles {
        0..=2 => 5,
        3 => 6,
        4 => 8,
        5 => 9,
        _ => 10,
    }
}
