//! The lane node's hardware layer, generic over embedded-hal 1.0.
//!
//! embedded-hal 1.0 has no ADC, input-capture or timer traits (they were removed in 1.0 with
//! no replacement), so the few the node needs are defined here, as small as the node uses
//! them: [`LoadCellAdc`] (a simultaneous-sampling converter giving all four load cells at
//! once), [`PeriodCounter`] (the loop oscillators' period counts, one gate at a time) and
//! [`Clock`] (a monotonic tick count). A board implements them on its peripherals; the QEMU
//! board implements them on a raw-sample trace read through semihosting.
//!
//! Where embedded-hal 1.0 does have traits this crate uses them: [`ads131m04`] is a driver for
//! TI's ADS131M04 over `SpiDevice` with its data-ready line on an `InputPin`, and
//! [`outputs::OutputPins`] drives the barrier relay and the lights on `OutputPin`s.
#![no_std]

pub mod ads131m04;
pub mod outputs;

use lane_node_core::{CELLS, LOOPS};

/// A converter sampling the four load cells together.
pub trait LoadCellAdc {
    type Error;
    /// The next sample of every channel, in converter counts, or `None` when no new one is
    /// ready yet.
    fn sample(&mut self) -> Result<Option<[i32; CELLS]>, Self::Error>;
}

/// The loop detectors' period counters: reference-clock counts over a fixed number of each
/// loop oscillator's cycles (0 when the oscillator gave no edge: an open loop).
pub trait PeriodCounter {
    type Error;
    /// The counts of the gate that just ended, or `None` while it runs.
    fn gate(&mut self) -> Result<Option<[u32; LOOPS]>, Self::Error>;
}

/// A monotonic clock.
pub trait Clock {
    /// Ticks per second.
    const HZ: u32;
    /// Ticks since start; never goes back.
    fn ticks(&mut self) -> u64;
}
