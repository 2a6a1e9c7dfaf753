//! The converters of this board: a raw-sample trace (`lane_node_core::raw`) read through
//! semihosting, one loop gate at a time, behind the same [`LoadCellAdc`] and
//! [`PeriodCounter`] traits a real board implements on its ADC and timer captures.

use lane_node_core::raw::{Header, HEADER_LEN};
use lane_node_core::{Sample, CELLS, LOOPS};
use lane_node_hal::{LoadCellAdc, PeriodCounter};

use crate::board::HostFile;

/// The longest loop gate this board buffers, in sample ticks (100 ms at 1 kHz).
pub const MAX_GATE: usize = 100;
const MAX_BLOCK: usize = MAX_GATE * CELLS * 4 + LOOPS * 4;

/// The trace ended: there is no next sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended;

pub struct TraceSource {
    file: HostFile,
    pub header: Header,
    bytes: [u8; MAX_BLOCK],
    samples: [Sample; MAX_GATE],
    len: usize,
    next: usize,
    /// The loop counts of the sample last given, if it ended a gate.
    gate: Option<[u32; LOOPS]>,
}

impl TraceSource {
    /// Opens the trace and reads its header.
    pub fn open(name: &[u8]) -> Result<TraceSource, &'static str> {
        let mut file = HostFile::open(name).ok_or("raw.bin: cannot open")?;
        let mut head = [0u8; HEADER_LEN];
        if file.read(&mut head) < HEADER_LEN {
            return Err("raw.bin: shorter than its header");
        }
        let header =
            Header::parse(&head).map_err(|_| "raw.bin: not a raw lane trace for this node")?;
        if header.gate_ticks as usize > MAX_GATE {
            return Err("raw.bin: loop gate longer than this board buffers (100 ticks)");
        }
        Ok(TraceSource {
            file,
            header,
            bytes: [0; MAX_BLOCK],
            samples: [Sample::default(); MAX_GATE],
            len: 0,
            next: 0,
            gate: None,
        })
    }

    fn refill(&mut self) -> bool {
        let want = self.header.block_len();
        if self.file.read(&mut self.bytes[..want]) < want {
            return false;
        }
        let mut n = 0;
        let samples = &mut self.samples;
        self.header.samples(&self.bytes[..want], |s| {
            samples[n] = s;
            n += 1;
        });
        self.len = n;
        self.next = 0;
        n > 0
    }
}

impl LoadCellAdc for TraceSource {
    type Error = Ended;

    /// The file always has the next sample ready (pacing is the timer's job); at its end,
    /// [`Ended`].
    fn sample(&mut self) -> Result<Option<[i32; CELLS]>, Ended> {
        if self.next == self.len && !self.refill() {
            return Err(Ended);
        }
        let s = self.samples[self.next];
        self.next += 1;
        self.gate = s.loops;
        Ok(Some(s.cells))
    }
}

impl PeriodCounter for TraceSource {
    type Error = Ended;

    /// The loop counts when the sample just taken ended a gate.
    fn gate(&mut self) -> Result<Option<[u32; LOOPS]>, Ended> {
        Ok(self.gate.take())
    }
}
