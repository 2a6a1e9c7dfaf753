//! The lane node's logic: everything the microcontroller at a lane decides, with no HAL, no
//! executor and no allocation, so that the same code runs on the host under `cargo test` and
//! on the Cortex-M4 board (`firmware/qemu`).
//!
//! The board calls [`Node::step`] once per sample tick with what its converters gave (four
//! load-cell channels, and at the end of each loop gate the two loops' period counts) and
//! [`Node::command`] with each frame the appliance sent; the node answers with lane-node
//! frames ([`acsgd_drivers::lane`], the codec the appliance parses with) that the board writes
//! to the RS-485 line.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the node's settings and their `key = value` file |
//! | [`raw`] | the raw-sample trace format (what the sensors give, tick by tick) |
//! | [`wim`] | load cells to wheel hits, axles and vehicles (weigh-in-motion) |
//! | [`loops`] | loop oscillator period counts to presence and faults |
//! | [`outputs`] | barrier and lights, with the interlock |
//! | [`node`] | the lane node: the above stepped together, frames out |
//!
//! Arithmetic is `f32` (the M4F has a single-precision FPU; `f64` would be soft-float) and uses
//! only `+ − × ÷`, which IEEE 754 rounds the same on every machine: the host and the board
//! compute bit-identical frames from the same samples.
#![cfg_attr(not(test), no_std)]

pub mod config;
pub mod loops;
pub mod node;
pub mod outputs;
pub mod raw;
pub mod wim;

/// The lane-node frame codec the node speaks (the appliance's own, from `drivers/`).
pub use acsgd_drivers::lane;
pub use config::Config;
pub use node::{Frames, Node};
pub use raw::Sample;

/// Load-cell channels: platform A left, A right, B right after A: B left, B right.
pub const CELLS: usize = 4;
/// Loop detectors: the loop around the scale and the loop under the barrier.
pub const LOOPS: usize = 2;
