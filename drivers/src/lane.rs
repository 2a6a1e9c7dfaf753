//! The lane-node protocol: binary frames between the lane-node firmware (WIM load cells, loop
//! detectors, pulse counters, barrier and lights) and the appliance over RS-485.
//!
//! `no_std`, no allocation: the firmware in `firmware/` builds this module with
//! `default-features = false` and speaks exactly what the appliance parses.
//!
//! ## Frame
//! ```text
//!  byte 0    1     2      3     4      5       6 … 6+len-1     6+len  7+len
//! ┌──────┬──────┬──────┬─────┬──────┬──────┬─────────────────┬──────┬──────┐
//! │ 0xA5 │ 0x5A │ addr │ seq │ type │ len  │ payload (len)   │ crc lo│crc hi│
//! └──────┴──────┴──────┴─────┴──────┴──────┴─────────────────┴──────┴──────┘
//!  sync (2)      node   frame  what   0…MAX_PAYLOAD           CRC-16/CCITT-FALSE over
//!               address counter                               addr … end of payload, LE
//! ```
//! All multi-byte fields are little-endian. `addr` 0 is the appliance, 1–247 lane nodes, 255
//! broadcast. `seq` counts frames per sender (wrapping) so the receiver sees losses; a command's
//! acknowledgement carries the command's `seq`.
//!
//! ## Payloads
//! | type | frame | direction | payload |
//! |---|---|---|---|
//! | 0x01 | `Axle` | node → appliance | t_ms u32, vehicle u16, index u8, left_kg u16, right_kg u16, spacing_mm u16, speed_dkmh u16 |
//! | 0x02 | `Vehicle` | node → appliance | t_ms u32, vehicle u16, axles u8, gross_kg u32, speed_dkmh u16, length_cm u16, class u8, error u8 |
//! | 0x03 | `Loop` | node → appliance | t_ms u32, loop u8, occupied u8 (0/1) |
//! | 0x04 | `Pulses` | node → appliance | t_ms u32, channel u8, count u32 (running total) |
//! | 0x05 | `Health` | node → appliance | t_ms u32, uptime_s u32, supply_mv u16, temp_dc i16, faults u16, rx_errors u16 |
//! | 0x06 | `Status` | node → appliance | t_ms u32, barrier_open u8 (0/1), aspect u8, samples u32 (taken, running), dropped u32 (running) |
//! | 0x10 | `Barrier` | appliance → node | open u8 (0 close, 1 open) |
//! | 0x11 | `Lights` | appliance → node | aspect u8 (0 off, 1 red, 2 yellow, 3 green) |
//! | 0x12 | `Ack` | node → appliance | seq u8 (of the command), result u8 (0 done, else [`AckResult`]) |
//!
//! `t_ms` is the node's own millisecond clock (wrapping); the appliance timestamps frames on
//! arrival and uses `t_ms` only for intervals between frames of one node. Speeds are in
//! tenths of km/h (`dkmh`), temperatures in tenths of °C (`dc`).
//!
//! ## Resynchronisation
//! A receiver looks for `A5 5A`. If the length is out of range, the type unknown, the payload
//! length wrong for the type, or the CRC wrong, it drops the first sync byte only and searches
//! again, so a frame that began inside the bad one's bytes is still found. Noise costs the bytes
//! it occupies, and the bad frame is counted.

/// Start of every frame.
pub const SYNC: [u8; 2] = [0xA5, 0x5A];
/// Bytes before the payload: sync, addr, seq, type, len.
pub const HEADER: usize = 6;
/// The largest payload any frame type has, with room to grow.
pub const MAX_PAYLOAD: usize = 64;
/// The largest frame on the wire.
pub const MAX_FRAME: usize = HEADER + MAX_PAYLOAD + 2;
/// Node address of the appliance.
pub const APPLIANCE: u8 = 0;
/// Broadcast address (commands to every node on the bus).
pub const BROADCAST: u8 = 255;

/// What a lane frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize))]
#[cfg_attr(feature = "std", serde(tag = "frame", rename_all = "snake_case"))]
pub enum Body {
    /// One axle crossed the scale.
    Axle {
        t_ms: u32,
        vehicle: u16,
        index: u8,
        left_kg: u16,
        right_kg: u16,
        /// From the previous axle; 0 for the first.
        spacing_mm: u16,
        speed_dkmh: u16,
    },
    /// A vehicle finished crossing the scale (sent after its axles).
    Vehicle {
        t_ms: u32,
        vehicle: u16,
        axles: u8,
        gross_kg: u32,
        speed_dkmh: u16,
        length_cm: u16,
        class: u8,
        /// 0 valid; see [`WimError`] for the others.
        error: u8,
    },
    /// An inductive loop changed state.
    Loop {
        t_ms: u32,
        #[cfg_attr(feature = "std", serde(rename = "loop"))]
        loop_id: u8,
        occupied: bool,
    },
    /// Running total of a pulse input (axle counter, light curtain).
    Pulses { t_ms: u32, channel: u8, count: u32 },
    /// Periodic node health.
    Health {
        t_ms: u32,
        uptime_s: u32,
        supply_mv: u16,
        temp_dc: i16,
        faults: u16,
        rx_errors: u16,
    },
    /// Periodic state of the outputs and of the sampling: what the barrier and lights are doing,
    /// how many sample ticks the node has processed and how many it missed (running totals).
    Status {
        t_ms: u32,
        barrier_open: bool,
        aspect: Aspect,
        samples: u32,
        dropped: u32,
    },
    /// Command: open or close the barrier.
    Barrier { open: bool },
    /// Command: set the lane lights.
    Lights { aspect: Aspect },
    /// The node carried out (or refused) the command with this `seq`.
    Ack { seq: u8, result: u8 },
}

/// Lane light aspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize))]
#[cfg_attr(feature = "std", serde(rename_all = "snake_case"))]
pub enum Aspect {
    Off = 0,
    Red = 1,
    Yellow = 2,
    Green = 3,
}

/// `Vehicle.error` codes (the usual WIM record error codes).
pub struct WimError;
impl WimError {
    pub const OK: u8 = 0;
    pub const SPEED_OUT_OF_RANGE: u8 = 1;
    pub const ACCELERATION: u8 = 2;
    pub const OFF_SCALE: u8 = 3;
    pub const TWO_VEHICLES: u8 = 4;
    pub const SENSOR_FAULT: u8 = 5;
}

/// `Ack.result` codes.
pub struct AckResult;
impl AckResult {
    pub const DONE: u8 = 0;
    pub const REFUSED_OCCUPIED: u8 = 1;
    pub const ACTUATOR_FAULT: u8 = 2;
    pub const UNKNOWN_COMMAND: u8 = 3;
}

/// `Health.faults` bits.
pub struct Fault;
impl Fault {
    pub const LOAD_CELL: u16 = 1 << 0;
    pub const LOOP: u16 = 1 << 1;
    pub const WATCHDOG_RESET: u16 = 1 << 2;
    pub const SUPPLY_LOW: u16 = 1 << 3;
    pub const BARRIER: u16 = 1 << 4;
}

/// One frame: who sent it, its counter, and what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize))]
pub struct Frame {
    pub addr: u8,
    pub seq: u8,
    #[cfg_attr(feature = "std", serde(flatten))]
    pub body: Body,
}

/// Why bytes were not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneError {
    /// Bytes before a sync pattern were skipped.
    Noise { skipped: usize },
    /// The length byte exceeds [`MAX_PAYLOAD`].
    TooLong { len: u8 },
    /// Frame type not in the table.
    UnknownType { kind: u8 },
    /// The payload length does not match the type.
    BadLength { kind: u8, len: u8 },
    /// CRC mismatch.
    BadCrc { stated: u16, computed: u16 },
    /// A field value outside its range (a bool that is neither 0 nor 1, an unknown aspect).
    BadValue { kind: u8 },
    /// An encode buffer too small.
    BufferTooSmall,
}

impl core::fmt::Display for LaneError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LaneError::Noise { skipped } => write!(f, "{skipped} bytes of noise before a frame"),
            LaneError::TooLong { len } => write!(f, "payload length {len} exceeds {MAX_PAYLOAD}"),
            LaneError::UnknownType { kind } => write!(f, "unknown frame type 0x{kind:02x}"),
            LaneError::BadLength { kind, len } => {
                write!(
                    f,
                    "frame type 0x{kind:02x} cannot have a {len}-byte payload"
                )
            }
            LaneError::BadCrc { stated, computed } => {
                write!(
                    f,
                    "CRC mismatch: frame says {stated:04x}, bytes give {computed:04x}"
                )
            }
            LaneError::BadValue { kind } => {
                write!(f, "frame type 0x{kind:02x} has a field out of range")
            }
            LaneError::BufferTooSmall => write!(f, "buffer too small for the frame"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for LaneError {}

/// The result of looking at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// A frame, and how many bytes it used.
    Frame(Frame, usize),
    /// Not enough bytes yet for a whole frame.
    Incomplete,
    /// Drop this many bytes (noise, or the first byte of a bad frame) and look again.
    Skip(usize, LaneError),
}

impl Body {
    fn kind(&self) -> u8 {
        match self {
            Body::Axle { .. } => 0x01,
            Body::Vehicle { .. } => 0x02,
            Body::Loop { .. } => 0x03,
            Body::Pulses { .. } => 0x04,
            Body::Health { .. } => 0x05,
            Body::Status { .. } => 0x06,
            Body::Barrier { .. } => 0x10,
            Body::Lights { .. } => 0x11,
            Body::Ack { .. } => 0x12,
        }
    }

    /// Payload length of each type.
    fn payload_len(kind: u8) -> Option<usize> {
        Some(match kind {
            0x01 => 15,
            0x02 => 17,
            0x03 => 6,
            0x04 => 9,
            0x05 => 16,
            0x06 => 14,
            0x10 | 0x11 => 1,
            0x12 => 2,
            _ => return None,
        })
    }
}

/// Little-endian reader over a payload whose length was already checked.
struct Rd<'a>(&'a [u8]);
impl Rd<'_> {
    fn u8(&mut self) -> u8 {
        let v = self.0[0];
        self.0 = &self.0[1..];
        v
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn aspect(&mut self, kind: u8) -> Result<Aspect, LaneError> {
        Ok(match self.u8() {
            0 => Aspect::Off,
            1 => Aspect::Red,
            2 => Aspect::Yellow,
            3 => Aspect::Green,
            _ => return Err(LaneError::BadValue { kind }),
        })
    }
    fn flag(&mut self, kind: u8) -> Result<bool, LaneError> {
        match self.u8() {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(LaneError::BadValue { kind }),
        }
    }
}

fn parse_body(kind: u8, p: &[u8]) -> Result<Body, LaneError> {
    let mut r = Rd(p);
    Ok(match kind {
        0x01 => Body::Axle {
            t_ms: r.u32(),
            vehicle: r.u16(),
            index: r.u8(),
            left_kg: r.u16(),
            right_kg: r.u16(),
            spacing_mm: r.u16(),
            speed_dkmh: r.u16(),
        },
        0x02 => Body::Vehicle {
            t_ms: r.u32(),
            vehicle: r.u16(),
            axles: r.u8(),
            gross_kg: r.u32(),
            speed_dkmh: r.u16(),
            length_cm: r.u16(),
            class: r.u8(),
            error: r.u8(),
        },
        0x03 => Body::Loop {
            t_ms: r.u32(),
            loop_id: r.u8(),
            occupied: r.flag(kind)?,
        },
        0x04 => Body::Pulses {
            t_ms: r.u32(),
            channel: r.u8(),
            count: r.u32(),
        },
        0x05 => Body::Health {
            t_ms: r.u32(),
            uptime_s: r.u32(),
            supply_mv: r.u16(),
            temp_dc: r.u16() as i16,
            faults: r.u16(),
            rx_errors: r.u16(),
        },
        0x06 => Body::Status {
            t_ms: r.u32(),
            barrier_open: r.flag(kind)?,
            aspect: r.aspect(kind)?,
            samples: r.u32(),
            dropped: r.u32(),
        },
        0x10 => Body::Barrier {
            open: r.flag(kind)?,
        },
        0x11 => Body::Lights {
            aspect: r.aspect(kind)?,
        },
        0x12 => Body::Ack {
            seq: r.u8(),
            result: r.u8(),
        },
        _ => return Err(LaneError::UnknownType { kind }),
    })
}

/// Looks for a frame at the start of `buf`. Pure: the tokio codec, the firmware's receive
/// loop and the fuzz tests all call this.
pub fn scan(buf: &[u8]) -> Scan {
    // Find the sync pattern; everything before it is noise.
    let start = match buf.windows(2).position(|w| w == SYNC) {
        Some(0) => 0,
        Some(n) => return Scan::Skip(n, LaneError::Noise { skipped: n }),
        None => {
            // Keep a trailing 0xA5: it may be the first half of the next sync.
            let keep = usize::from(buf.last() == Some(&SYNC[0]));
            let n = buf.len() - keep;
            return if n == 0 {
                Scan::Incomplete
            } else {
                Scan::Skip(n, LaneError::Noise { skipped: n })
            };
        }
    };
    let b = &buf[start..];
    if b.len() < HEADER {
        return Scan::Incomplete;
    }
    let (addr, seq, kind, len) = (b[2], b[3], b[4], b[5]);
    if len as usize > MAX_PAYLOAD {
        return Scan::Skip(1, LaneError::TooLong { len });
    }
    match Body::payload_len(kind) {
        None => return Scan::Skip(1, LaneError::UnknownType { kind }),
        Some(n) if n != len as usize => return Scan::Skip(1, LaneError::BadLength { kind, len }),
        Some(_) => {}
    }
    let total = HEADER + len as usize + 2;
    if b.len() < total {
        return Scan::Incomplete;
    }
    let computed = crate::crc::crc16_ccitt_false(&b[2..HEADER + len as usize]);
    let stated = u16::from_le_bytes([b[total - 2], b[total - 1]]);
    if stated != computed {
        return Scan::Skip(1, LaneError::BadCrc { stated, computed });
    }
    match parse_body(kind, &b[HEADER..HEADER + len as usize]) {
        Ok(body) => Scan::Frame(Frame { addr, seq, body }, total),
        Err(e) => Scan::Skip(1, e),
    }
}

/// Writes `frame` into `out`, returning the number of bytes used.
pub fn encode(frame: &Frame, out: &mut [u8]) -> Result<usize, LaneError> {
    let kind = frame.body.kind();
    let len = Body::payload_len(kind).unwrap_or(0);
    let total = HEADER + len + 2;
    if out.len() < total {
        return Err(LaneError::BufferTooSmall);
    }
    out[..2].copy_from_slice(&SYNC);
    out[2] = frame.addr;
    out[3] = frame.seq;
    out[4] = kind;
    out[5] = len as u8;
    let mut w = HEADER;
    let mut put = |bytes: &[u8]| {
        out[w..w + bytes.len()].copy_from_slice(bytes);
        w += bytes.len();
    };
    match frame.body {
        Body::Axle {
            t_ms,
            vehicle,
            index,
            left_kg,
            right_kg,
            spacing_mm,
            speed_dkmh,
        } => {
            put(&t_ms.to_le_bytes());
            put(&vehicle.to_le_bytes());
            put(&[index]);
            put(&left_kg.to_le_bytes());
            put(&right_kg.to_le_bytes());
            put(&spacing_mm.to_le_bytes());
            put(&speed_dkmh.to_le_bytes());
        }
        Body::Vehicle {
            t_ms,
            vehicle,
            axles,
            gross_kg,
            speed_dkmh,
            length_cm,
            class,
            error,
        } => {
            put(&t_ms.to_le_bytes());
            put(&vehicle.to_le_bytes());
            put(&[axles]);
            put(&gross_kg.to_le_bytes());
            put(&speed_dkmh.to_le_bytes());
            put(&length_cm.to_le_bytes());
            put(&[class, error]);
        }
        Body::Loop {
            t_ms,
            loop_id,
            occupied,
        } => {
            put(&t_ms.to_le_bytes());
            put(&[loop_id, occupied as u8]);
        }
        Body::Pulses {
            t_ms,
            channel,
            count,
        } => {
            put(&t_ms.to_le_bytes());
            put(&[channel]);
            put(&count.to_le_bytes());
        }
        Body::Health {
            t_ms,
            uptime_s,
            supply_mv,
            temp_dc,
            faults,
            rx_errors,
        } => {
            put(&t_ms.to_le_bytes());
            put(&uptime_s.to_le_bytes());
            put(&supply_mv.to_le_bytes());
            put(&temp_dc.to_le_bytes());
            put(&faults.to_le_bytes());
            put(&rx_errors.to_le_bytes());
        }
        Body::Status {
            t_ms,
            barrier_open,
            aspect,
            samples,
            dropped,
        } => {
            put(&t_ms.to_le_bytes());
            put(&[barrier_open as u8, aspect as u8]);
            put(&samples.to_le_bytes());
            put(&dropped.to_le_bytes());
        }
        Body::Barrier { open } => put(&[open as u8]),
        Body::Lights { aspect } => put(&[aspect as u8]),
        Body::Ack { seq, result } => put(&[seq, result]),
    }
    let crc = crate::crc::crc16_ccitt_false(&out[2..HEADER + len]);
    out[HEADER + len..total].copy_from_slice(&crc.to_le_bytes());
    Ok(total)
}

/// Byte-at-a-time receiver for the firmware's UART interrupt: a fixed buffer, no allocation.
pub struct Receiver {
    buf: [u8; MAX_FRAME],
    len: usize,
    /// Frames refused (bad CRC, bad length, unknown type) since start.
    pub errors: u32,
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}

impl Receiver {
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_FRAME],
            len: 0,
            errors: 0,
        }
    }

    /// Feeds one byte; returns a frame when this byte completes one.
    pub fn push(&mut self, byte: u8) -> Option<Frame> {
        if self.len == self.buf.len() {
            // Cannot happen with a correct scan (a frame is at most MAX_FRAME), but never
            // overflow: drop the oldest byte.
            self.buf.copy_within(1.., 0);
            self.len -= 1;
        }
        self.buf[self.len] = byte;
        self.len += 1;
        loop {
            match scan(&self.buf[..self.len]) {
                Scan::Incomplete => return None,
                Scan::Frame(f, used) => {
                    self.consume(used);
                    return Some(f);
                }
                Scan::Skip(n, e) => {
                    if !matches!(e, LaneError::Noise { .. }) {
                        self.errors = self.errors.wrapping_add(1);
                    }
                    self.consume(n);
                }
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOP_ON: [u8; 14] = [
        0xA5, 0x5A, // sync
        0x03, // addr: lane node 3
        0x07, // seq 7
        0x03, // type: Loop
        0x06, // len 6
        0x10, 0x27, 0x00, 0x00, // t_ms = 10000
        0x01, // loop 1
        0x01, // occupied
        0x00, 0x00, // CRC (filled in by the test)
    ];

    fn with_crc(mut f: [u8; 14]) -> [u8; 14] {
        let crc = crate::crc::crc16_ccitt_false(&f[2..12]);
        f[12..].copy_from_slice(&crc.to_le_bytes());
        f
    }

    #[test]
    fn a_loop_frame_decodes_field_by_field() {
        let f = with_crc(LOOP_ON);
        let Scan::Frame(frame, used) = scan(&f) else {
            panic!()
        };
        assert_eq!(used, 14);
        assert_eq!(
            frame,
            Frame {
                addr: 3,
                seq: 7,
                body: Body::Loop {
                    t_ms: 10_000,
                    loop_id: 1,
                    occupied: true
                }
            }
        );
    }

    #[test]
    fn every_body_round_trips() {
        let bodies = [
            Body::Axle {
                t_ms: 1,
                vehicle: 2,
                index: 3,
                left_kg: 4100,
                right_kg: 4050,
                spacing_mm: 3600,
                speed_dkmh: 123,
            },
            Body::Vehicle {
                t_ms: 9,
                vehicle: 2,
                axles: 5,
                gross_kg: 39_800,
                speed_dkmh: 118,
                length_cm: 1650,
                class: 11,
                error: 0,
            },
            Body::Loop {
                t_ms: u32::MAX,
                loop_id: 2,
                occupied: false,
            },
            Body::Pulses {
                t_ms: 5,
                channel: 1,
                count: 123_456,
            },
            Body::Health {
                t_ms: 5,
                uptime_s: 86_400,
                supply_mv: 24_100,
                temp_dc: -153,
                faults: Fault::LOOP,
                rx_errors: 2,
            },
            Body::Barrier { open: true },
            Body::Lights {
                aspect: Aspect::Yellow,
            },
            Body::Ack {
                seq: 200,
                result: AckResult::REFUSED_OCCUPIED,
            },
        ];
        for body in bodies {
            let frame = Frame {
                addr: 9,
                seq: 1,
                body,
            };
            let mut out = [0u8; MAX_FRAME];
            let n = encode(&frame, &mut out).unwrap();
            assert_eq!(scan(&out[..n]), Scan::Frame(frame, n));
            assert_eq!(scan(&out[..n - 1]), Scan::Incomplete);
        }
    }

    #[test]
    fn a_bad_crc_costs_one_byte_and_the_next_frame_is_found() {
        let good = with_crc(LOOP_ON);
        let mut bad = good;
        bad[10] = 2; // a different loop number: CRC no longer matches
        let mut rx = Receiver::new();
        let mut got = heapless_collect(&mut rx, &[&b"\x00\xff noise"[..], &bad, &good]);
        assert_eq!(rx.errors, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got.pop().unwrap().body,
            Body::Loop {
                t_ms: 10_000,
                loop_id: 1,
                occupied: true
            }
        );
    }

    #[test]
    fn a_frame_hidden_inside_a_truncated_one_is_found() {
        let good = with_crc(LOOP_ON);
        // A frame cut off after its header, then a whole one: the cut frame's claimed length
        // swallows the start of the good one, whose sync must still be found.
        let mut bytes = [0u8; 20];
        bytes[..6].copy_from_slice(&good[..6]);
        bytes[6..].copy_from_slice(&good);
        let mut rx = Receiver::new();
        let got = heapless_collect(&mut rx, &[&bytes]);
        assert_eq!(got.len(), 1);
        assert_eq!(rx.errors, 1);
    }

    #[test]
    fn bad_field_values_are_refused() {
        let mut f = LOOP_ON;
        f[11] = 7; // occupied must be 0 or 1
        let f = with_crc(f);
        assert_eq!(scan(&f), Scan::Skip(1, LaneError::BadValue { kind: 3 }));
    }

    fn heapless_collect(rx: &mut Receiver, chunks: &[&[u8]]) -> std::vec::Vec<Frame> {
        let mut out = std::vec::Vec::new();
        for c in chunks {
            for &b in *c {
                if let Some(f) = rx.push(b) {
                    out.push(f);
                }
            }
        }
        out
    }
}
