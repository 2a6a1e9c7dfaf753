//! Inductive loop detection by period counting: each gate the board counts its reference clock
//! over a fixed number of the loop oscillator's cycles. A vehicle lowers the loop's inductance,
//! the oscillator speeds up and the count falls: `ΔC/C = −Δf/f = ½ ΔL/L`.
//!
//! - **Detect** when the count is below the reference by half the sensitivity (ΔL/L) for
//!   `loop_detect_gates` gates; **release** when it is back within `loop_boost` of that for
//!   `loop_release_gates` gates (the boost keeps the call over a tractor–trailer gap).
//! - **Reference**: tuned as the mean of `loop_tune_gates` gates at start; while free it follows
//!   the count slowly (1/2^`loop_track_shift` per gate) and jumps to it when the count stays on
//!   the no-call side for `loop_nocall_gates` gates (drift that would hide a vehicle, US
//!   5,028,921); while occupied it is held.
//! - **Faults**: no oscillator edge in a gate (count 0, an open loop) or a count outside
//!   `loop_band` of the tuned one (a shorted loop or lead-in) is a fault, and a faulted loop is
//!   reported **occupied**, so that a barrier never closes on a vehicle it cannot see. Once the
//!   count is sane again for a tuning period the loop is tuned afresh.

use crate::config::Config;

/// Why a loop cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopFault {
    /// No oscillator edges: the loop or its lead-in is open.
    Open,
    /// The count left the tuned band: a shorted loop or lead-in, or a broken oscillator.
    OutOfBand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Tuning { gates: u32, sum: u64 },
    Free,
    Occupied,
}

/// One loop's detector.
#[derive(Debug, Clone)]
pub struct LoopDetector {
    state: State,
    /// The reference count in 48.16 fixed point: the slow tracking moves it by far less than
    /// one count per gate, which an `f32` near 250 000 would round away.
    reference: u64,
    /// The count at the last tuning, for the fault band (0 before the first).
    tuned: u32,
    /// Consecutive gates towards a change of state.
    run: u32,
    nocall: u32,
    fault: Option<LoopFault>,
    /// Consecutive sane gates while faulted.
    sane: u32,
    /// What the node reports.
    reported: bool,
}

impl Default for LoopDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl LoopDetector {
    pub const fn new() -> Self {
        LoopDetector {
            state: State::Tuning { gates: 0, sum: 0 },
            reference: 0,
            tuned: 0,
            run: 0,
            nocall: 0,
            fault: None,
            sane: 0,
            reported: false,
        }
    }

    /// What the node reports: a vehicle, or a fault.
    pub fn occupied(&self) -> bool {
        self.reported
    }

    /// True while the loop cannot say the lane is clear: occupied, faulted or not yet tuned.
    /// The barrier interlock uses this, not [`Self::occupied`].
    pub fn blocks(&self) -> bool {
        self.reported || matches!(self.state, State::Tuning { .. })
    }

    pub fn fault(&self) -> Option<LoopFault> {
        self.fault
    }

    /// The reference count (for tests and the status of a technician's tool).
    pub fn reference(&self) -> f32 {
        (self.reference >> 16) as f32 + (self.reference & 0xffff) as f32 / 65536.0
    }

    /// One gate's count. Returns the new reported state when it changed.
    pub fn gate(&mut self, count: u32, cfg: &Config) -> Option<bool> {
        let was = self.reported;
        self.update(count, cfg);
        (self.reported != was).then_some(self.reported)
    }

    fn update(&mut self, count: u32, cfg: &Config) {
        let band = cfg.loop_band * self.tuned as f32;
        let fault = if count == 0 {
            Some(LoopFault::Open)
        } else if self.tuned != 0 && (count as f32 - self.tuned as f32).abs() > band {
            Some(LoopFault::OutOfBand)
        } else {
            None
        };
        if let Some(f) = fault {
            self.fault = Some(f);
            self.sane = 0;
            self.reported = true;
            return;
        }
        if self.fault.is_some() {
            self.sane += 1;
            if self.sane < cfg.loop_tune_gates {
                return;
            }
            // Sane for a whole tuning period: tune afresh (the vehicle it may have hidden
            // is tuned out, as on any detector after a fault; reported occupied until then).
            self.fault = None;
            self.tuned = 0;
            self.state = State::Tuning { gates: 0, sum: 0 };
        }
        let on = cfg.loop_sensitivity / 2.0;
        match self.state {
            State::Tuning { gates, sum } => {
                let (gates, sum) = (gates + 1, sum + count as u64);
                if gates >= cfg.loop_tune_gates {
                    let mean = sum / gates as u64;
                    self.reference = mean << 16;
                    self.tuned = mean as u32;
                    self.state = State::Free;
                    self.reported = false;
                    self.run = 0;
                    self.nocall = 0;
                } else {
                    self.state = State::Tuning { gates, sum };
                }
            }
            State::Free => {
                let d = self.shift(count);
                if d >= on {
                    self.run += 1;
                    self.nocall = 0;
                    if self.run >= cfg.loop_detect_gates {
                        self.state = State::Occupied;
                        self.reported = true;
                        self.run = 0;
                    }
                    return;
                }
                self.run = 0;
                if d < -on / 4.0 {
                    self.nocall += 1;
                    if self.nocall >= cfg.loop_nocall_gates {
                        self.reference = (count as u64) << 16;
                        self.nocall = 0;
                    }
                } else {
                    self.nocall = 0;
                    let target = (count as i64) << 16;
                    let r = self.reference as i64;
                    self.reference = (r + ((target - r) >> cfg.loop_track_shift)) as u64;
                }
            }
            State::Occupied => {
                if self.shift(count) < on * cfg.loop_boost {
                    self.run += 1;
                    if self.run >= cfg.loop_release_gates {
                        self.state = State::Free;
                        self.reported = false;
                        self.run = 0;
                    }
                } else {
                    self.run = 0;
                }
            }
        }
    }

    /// `(R − C) / R`: positive when a vehicle is over the loop.
    fn shift(&self, count: u32) -> f32 {
        let r = self.reference();
        (r - count as f32) / r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C0: u32 = 250_000;

    /// A count for a ΔL/L over the loop.
    fn count(dl: f32) -> u32 {
        (C0 as f32 * (1.0 - dl / 2.0)) as u32
    }

    fn tuned(cfg: &Config) -> LoopDetector {
        let mut d = LoopDetector::new();
        assert!(d.blocks());
        for _ in 0..cfg.loop_tune_gates {
            assert_eq!(d.gate(C0, cfg), None);
        }
        assert!(!d.blocks());
        d
    }

    #[test]
    fn a_vehicle_is_detected_held_over_a_gap_and_released() {
        let cfg = Config::default();
        let mut d = tuned(&cfg);
        // One gate over the threshold is not yet a vehicle.
        assert_eq!(d.gate(count(0.01), &cfg), None);
        assert_eq!(d.gate(count(0.01), &cfg), Some(true));
        // The hitch gap is far under the detect threshold but over the boosted one.
        for _ in 0..20 {
            assert_eq!(d.gate(count(0.0006), &cfg), None);
        }
        for _ in 0..cfg.loop_release_gates - 1 {
            assert_eq!(d.gate(C0, &cfg), None);
        }
        assert_eq!(d.gate(C0, &cfg), Some(false));
    }

    #[test]
    fn a_small_change_is_not_a_vehicle() {
        let cfg = Config::default();
        let mut d = tuned(&cfg);
        for _ in 0..100 {
            assert_eq!(d.gate(count(0.0012), &cfg), None);
        }
    }

    #[test]
    fn slow_drift_is_tracked_and_drift_away_from_a_call_resets_at_once() {
        let cfg = Config::default();
        let mut d = tuned(&cfg);
        // Temperature lowers the frequency slowly (count rises): 0.3 % over 10 minutes.
        let mut c = C0 as f32;
        for _ in 0..60_000 {
            c += C0 as f32 * 0.003 / 60_000.0;
            assert_eq!(d.gate(c as u32, &cfg), None);
        }
        assert!(
            (d.reference() - c).abs() < c * 0.0005,
            "{} vs {c}",
            d.reference()
        );
        // A step of the no-call kind is taken at once after the no-call time.
        let step = (c * 1.002) as u32;
        for _ in 0..cfg.loop_nocall_gates {
            d.gate(step, &cfg);
        }
        assert_eq!(d.reference(), step as f32);
        // And a vehicle is still seen against the new reference.
        assert_eq!(d.gate(step - step / 100, &cfg), None);
        assert_eq!(d.gate(step - step / 100, &cfg), Some(true));
    }

    #[test]
    fn an_open_or_shorted_loop_is_a_fault_and_reported_occupied() {
        let cfg = Config::default();
        let mut d = tuned(&cfg);
        assert_eq!(d.gate(0, &cfg), Some(true));
        assert_eq!(d.fault(), Some(LoopFault::Open));
        assert!(d.blocks());
        // Back, but not trusted until sane for a tuning period, then tuned afresh.
        for _ in 0..cfg.loop_tune_gates * 2 - 2 {
            assert_eq!(d.gate(C0, &cfg), None);
        }
        assert_eq!(d.gate(C0, &cfg), Some(false));
        assert_eq!(d.fault(), None);
        // A shorted lead-in: the frequency jumps far out of the band.
        assert_eq!(d.gate(C0 / 2, &cfg), Some(true));
        assert_eq!(d.fault(), Some(LoopFault::OutOfBand));
    }
}
