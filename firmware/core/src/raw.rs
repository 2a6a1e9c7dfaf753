//! The raw-sample trace: what the lane's sensors give, tick by tick, before any processing.
//! The simulator (`firmware/sim`) writes it, the QEMU board reads it through semihosting in
//! place of its converters, and the host tests feed it to [`crate::Node`].
//!
//! ```text
//! header (16 bytes)  "LNRAW1" | cells u8 | loops u8 | sample_hz u32 | gate_ticks u32
//! block (one loop gate, repeated to the end of the file):
//!     gate_ticks × (cells × i32)   load-cell ADC counts, tick by tick (24-bit, sign-extended)
//!     loops × u32                  each loop's period count over the gate just ended
//! ```
//! All little-endian. A loop count of 0 means the counter saw no oscillator edge in the gate
//! (an open loop).

use crate::{CELLS, LOOPS};

pub const MAGIC: [u8; 6] = *b"LNRAW1";
pub const HEADER_LEN: usize = 16;

/// One sample tick: the four load cells, and the loops' counts when a gate ends at this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    pub cells: [i32; CELLS],
    pub loops: Option<[u32; LOOPS]>,
}

/// The trace's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub sample_hz: u32,
    pub gate_ticks: u32,
}

/// Why bytes are not a raw trace this firmware reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawError {
    /// Shorter than a header, or the magic is wrong.
    NotATrace,
    /// A channel layout other than this node's (cells, loops).
    Layout { cells: u8, loops: u8 },
    /// A sample rate or gate of zero.
    BadTiming,
}

impl core::fmt::Display for RawError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RawError::NotATrace => write!(f, "not a raw lane trace (magic LNRAW1 missing)"),
            RawError::Layout { cells, loops } => write!(
                f,
                "trace has {cells} load cells and {loops} loops, the node has {CELLS} and {LOOPS}"
            ),
            RawError::BadTiming => write!(f, "trace has a zero sample rate or gate"),
        }
    }
}

impl Header {
    pub fn parse(b: &[u8]) -> Result<Header, RawError> {
        if b.len() < HEADER_LEN || b[..6] != MAGIC {
            return Err(RawError::NotATrace);
        }
        if b[6] as usize != CELLS || b[7] as usize != LOOPS {
            return Err(RawError::Layout {
                cells: b[6],
                loops: b[7],
            });
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let h = Header {
            sample_hz: u32_at(8),
            gate_ticks: u32_at(12),
        };
        if h.sample_hz == 0 || h.gate_ticks == 0 {
            return Err(RawError::BadTiming);
        }
        Ok(h)
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..6].copy_from_slice(&MAGIC);
        b[6] = CELLS as u8;
        b[7] = LOOPS as u8;
        b[8..12].copy_from_slice(&self.sample_hz.to_le_bytes());
        b[12..16].copy_from_slice(&self.gate_ticks.to_le_bytes());
        b
    }

    /// Bytes of one block (one gate).
    pub fn block_len(&self) -> usize {
        self.gate_ticks as usize * CELLS * 4 + LOOPS * 4
    }

    /// Calls `f` with each tick of a whole block, the loop counts on its last tick.
    /// `block` must be [`Header::block_len`] bytes; a shorter one (the end of a cut file)
    /// yields nothing.
    pub fn samples(&self, block: &[u8], mut f: impl FnMut(Sample)) {
        if block.len() < self.block_len() {
            return;
        }
        let word = |i: usize| [block[i], block[i + 1], block[i + 2], block[i + 3]];
        let ticks = self.gate_ticks as usize;
        let loops_at = ticks * CELLS * 4;
        for t in 0..ticks {
            let mut s = Sample::default();
            for (c, cell) in s.cells.iter_mut().enumerate() {
                *cell = i32::from_le_bytes(word((t * CELLS + c) * 4));
            }
            if t + 1 == ticks {
                let mut l = [0u32; LOOPS];
                for (i, v) in l.iter_mut().enumerate() {
                    *v = u32::from_le_bytes(word(loops_at + i * 4));
                }
                s.loops = Some(l);
            }
            f(s);
        }
    }

    /// Writes one block from its ticks' cells and the gate's loop counts into `out`, which
    /// must be [`Header::block_len`] bytes.
    pub fn write_block(&self, cells: &[[i32; CELLS]], loops: [u32; LOOPS], out: &mut [u8]) {
        let mut w = 0;
        for tick in cells.iter().take(self.gate_ticks as usize) {
            for v in tick {
                out[w..w + 4].copy_from_slice(&v.to_le_bytes());
                w += 4;
            }
        }
        for v in loops {
            out[w..w + 4].copy_from_slice(&v.to_le_bytes());
            w += 4;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_round_trips() {
        let h = Header {
            sample_hz: 2000,
            gate_ticks: 3,
        };
        let hb = h.to_bytes();
        assert_eq!(Header::parse(&hb), Ok(h));
        let cells = [[1, -2, 3, -8_388_608], [5, 6, 7, 8], [9, 10, 11, 8_388_607]];
        let mut block = std::vec![0u8; h.block_len()];
        h.write_block(&cells, [250_000, 0], &mut block);
        let mut got = std::vec::Vec::new();
        h.samples(&block, |s| got.push(s));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].cells, cells[0]);
        assert_eq!(got[0].loops, None);
        assert_eq!(got[2].cells, cells[2]);
        assert_eq!(got[2].loops, Some([250_000, 0]));
    }

    #[test]
    fn wrong_files_are_refused() {
        assert_eq!(Header::parse(b"LNRAW1"), Err(RawError::NotATrace));
        let mut b = Header {
            sample_hz: 2000,
            gate_ticks: 20,
        }
        .to_bytes();
        b[6] = 8;
        assert_eq!(
            Header::parse(&b),
            Err(RawError::Layout { cells: 8, loops: 2 })
        );
        b[6] = 4;
        b[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(Header::parse(&b), Err(RawError::BadTiming));
    }
}
