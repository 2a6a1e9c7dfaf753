//! The lane node: the load cells, the loops and the outputs stepped together, tick by tick,
//! answering with lane-node frames.
//!
//! Frames go out as they happen: `Loop` on each change, `Axle` as each axle leaves the scale,
//! `Vehicle` when the vehicle's record is complete, `Ack` for each command, `Health` every
//! `health_s` and at once when the faults change, `Status` (outputs, samples taken and
//! dropped) every `status_s`.

use acsgd_drivers::lane::{self, Body, Fault, Frame};

use crate::config::Config;
use crate::loops::LoopDetector;
use crate::outputs::Outputs;
use crate::raw::Sample;
use crate::wim::Wim;
use crate::LOOPS;

/// The loop around the scale (index into the loops; frames number loops from 1).
pub const SCALE_LOOP: usize = 0;
/// The loop under the barrier.
pub const BARRIER_LOOP: usize = 1;

/// Frames from one call, in order. Fixed capacity; a step makes at most a handful.
#[derive(Debug, Clone)]
pub struct Frames {
    items: [Frame; Frames::CAPACITY],
    len: usize,
    /// Frames that did not fit, since the board made this buffer (never expected).
    pub overflows: u32,
}

impl Default for Frames {
    fn default() -> Self {
        Self::new()
    }
}

impl Frames {
    pub const CAPACITY: usize = 16;

    pub const fn new() -> Self {
        const BLANK: Frame = Frame {
            addr: 0,
            seq: 0,
            body: Body::Barrier { open: false },
        };
        Frames {
            items: [BLANK; Frames::CAPACITY],
            len: 0,
            overflows: 0,
        }
    }

    fn push(&mut self, f: Frame) {
        if self.len == Self::CAPACITY {
            self.overflows = self.overflows.wrapping_add(1);
            return;
        }
        self.items[self.len] = f;
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[Frame] {
        &self.items[..self.len]
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The lane node's whole state.
#[derive(Debug, Clone)]
pub struct Node {
    cfg: Config,
    tick: u64,
    seq: u8,
    wim: Wim,
    loops: [LoopDetector; LOOPS],
    outputs: Outputs,
    dropped: u32,
    faults: u16,
    /// Set by the board: a watchdog reset, supply low, a barrier that did not move.
    board_faults: u16,
    supply_mv: u16,
    temp_dc: i16,
    rx_errors: u16,
    next_health: u64,
    next_status: u64,
}

impl Node {
    pub fn new(cfg: Config) -> Node {
        Node {
            next_health: cfg.health_s as u64 * cfg.sample_hz as u64,
            next_status: cfg.status_s as u64 * cfg.sample_hz as u64,
            cfg,
            tick: 0,
            seq: 0,
            wim: Wim::new(),
            loops: [LoopDetector::new(), LoopDetector::new()],
            outputs: Outputs::new(),
            dropped: 0,
            faults: 0,
            board_faults: 0,
            supply_mv: 0,
            temp_dc: 0,
            rx_errors: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn outputs(&self) -> Outputs {
        self.outputs
    }

    pub fn loops(&self) -> &[LoopDetector; LOOPS] {
        &self.loops
    }

    pub fn wim(&self) -> &Wim {
        &self.wim
    }

    /// Sample ticks processed.
    pub fn ticks(&self) -> u64 {
        self.tick
    }

    /// The board missed `n` sample ticks (it was late); counted and reported in `Status`.
    pub fn dropped(&mut self, n: u32) {
        self.dropped = self.dropped.wrapping_add(n);
    }

    /// Board measurements for `Health`.
    pub fn set_board(&mut self, supply_mv: u16, temp_dc: i16, faults: u16, rx_errors: u16) {
        self.supply_mv = supply_mv;
        self.temp_dc = temp_dc;
        self.board_faults = faults;
        self.rx_errors = rx_errors;
    }

    fn frame(&mut self, body: Body, out: &mut Frames) {
        self.seq = self.seq.wrapping_add(1);
        out.push(Frame {
            addr: self.cfg.addr,
            seq: self.seq,
            body,
        });
    }

    /// One sample tick.
    pub fn step(&mut self, s: &Sample, out: &mut Frames) {
        let tick = self.tick;
        self.tick += 1;
        let t_ms = self.cfg.t_ms(tick);
        if let Some(counts) = s.loops {
            for (i, count) in counts.iter().enumerate() {
                if let Some(occupied) = self.loops[i].gate(*count, &self.cfg) {
                    if i == SCALE_LOOP {
                        self.wim.scale_loop(occupied, tick);
                    }
                    self.frame(
                        Body::Loop {
                            t_ms,
                            loop_id: i as u8 + 1,
                            occupied,
                        },
                        out,
                    );
                }
            }
        }
        if s.loops.is_some() && self.loops[SCALE_LOOP].fault().is_some() {
            self.wim.scale_loop_faulted();
        }
        // Axle and vehicle bodies straight into `out` (whose own capacity counts any
        // overflow), numbered as every frame is.
        let (addr, seq) = (self.cfg.addr, &mut self.seq);
        self.wim.step(&s.cells, tick, &self.cfg, &mut |body| {
            *seq = seq.wrapping_add(1);
            out.push(Frame {
                addr,
                seq: *seq,
                body,
            });
        });
        let faults = self.faults_now();
        if faults != self.faults || tick + 1 >= self.next_health {
            self.faults = faults;
            self.next_health = tick + 1 + self.cfg.health_s as u64 * self.cfg.sample_hz as u64;
            self.health(out);
        }
        if tick + 1 >= self.next_status {
            self.next_status += self.cfg.status_s as u64 * self.cfg.sample_hz as u64;
            self.status(out);
        }
    }

    fn faults_now(&self) -> u16 {
        let mut f = self.board_faults;
        if self.loops.iter().any(|l| l.fault().is_some()) {
            f |= Fault::LOOP;
        }
        let unzeroed = self.wim.channels.iter().any(|c| c.zero().is_none());
        if self.wim.overflows > 0 || (unzeroed && self.tick > 10 * self.cfg.sample_hz as u64) {
            // Lost hits, or a channel that has not been still for ten seconds since start.
            f |= Fault::LOAD_CELL;
        }
        f
    }

    fn health(&mut self, out: &mut Frames) {
        let body = Body::Health {
            t_ms: self.cfg.t_ms(self.tick),
            uptime_s: (self.tick / self.cfg.sample_hz as u64) as u32,
            supply_mv: self.supply_mv,
            temp_dc: self.temp_dc,
            faults: self.faults,
            rx_errors: self.rx_errors,
        };
        self.frame(body, out);
    }

    /// A `Status` frame now (the board sends one at the end of a trace, with the final counts).
    pub fn status(&mut self, out: &mut Frames) {
        let body = Body::Status {
            t_ms: self.cfg.t_ms(self.tick),
            barrier_open: self.outputs.barrier_open,
            aspect: self.outputs.aspect,
            samples: self.tick as u32,
            dropped: self.dropped,
        };
        self.frame(body, out);
    }

    /// A frame from the appliance. Commands addressed to this node (or broadcast) are carried
    /// out and acknowledged with their `seq`; anything else is ignored.
    pub fn command(&mut self, f: &Frame, out: &mut Frames) {
        if f.addr != self.cfg.addr && f.addr != lane::BROADCAST {
            return;
        }
        if !matches!(f.body, Body::Barrier { .. } | Body::Lights { .. }) {
            return;
        }
        let blocked = self.loops[BARRIER_LOOP].blocks();
        let result = self.outputs.command(&f.body, blocked);
        self.frame(Body::Ack { seq: f.seq, result }, out);
        // The outputs changed (or were refused): say so now, not at the next period.
        self.status(out);
    }
}

/// A frame the node sent, with the tick it was sent at (for hosts that replay traces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub tick: u64,
    pub frame: Frame,
}
