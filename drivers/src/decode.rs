//! One entry point over every protocol, for `acsgd decode`, `replay` and the golden tests: a
//! captured packet (or a text line) in, readings or a one-line error out.
//!
//! The decoder keeps what a real connection would: the NMEA date, the Wialon login and
//! version, the Teltonika IMEI from the handshake. Binary captures that are not split into
//! packets (a raw EGTS, Teltonika or lane-node byte stream) are cut with each protocol's own
//! framing and resynchronisation.

use std::fmt;
use std::str::FromStr;

use crate::nmea::NmeaDecoder;
use crate::reading::Reading;
use crate::reading::Warning;
use crate::wialon::WialonDecoder;
use crate::{arnavi, egts, galileo, lane, rpm, teltonika};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Nmea,
    Egts,
    Wialon,
    Teltonika,
    Galileosky,
    Arnavi,
    Rpm,
    Lane,
}

impl Protocol {
    pub const ALL: [Protocol; 8] = [
        Protocol::Nmea,
        Protocol::Egts,
        Protocol::Wialon,
        Protocol::Teltonika,
        Protocol::Galileosky,
        Protocol::Arnavi,
        Protocol::Rpm,
        Protocol::Lane,
    ];

    /// Line-oriented text protocols (one message per line).
    pub fn is_text(self) -> bool {
        matches!(self, Protocol::Nmea | Protocol::Wialon | Protocol::Rpm)
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Nmea => "nmea",
            Protocol::Egts => "egts",
            Protocol::Wialon => "wialon",
            Protocol::Teltonika => "teltonika",
            Protocol::Galileosky => "galileosky",
            Protocol::Arnavi => "arnavi",
            Protocol::Rpm => "rpm",
            Protocol::Lane => "lane",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Protocol::ALL.iter().map(|p| p.name()).collect();
                format!("unknown protocol {s:?} (one of {})", all.join(", "))
            })
    }
}

/// Hex digits to bytes, as captures write packets; whitespace between byte pairs is allowed.
pub fn unhex(line: &[u8]) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = line
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    digits
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).map_err(|_| "not hex".to_string())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("not hex: {s:?}"))
        })
        .collect()
}

/// The outcome of one input: its readings, or why it was refused.
pub type Decoded = Result<Vec<Reading>, String>;

/// Stateful decoder for one device's capture.
pub struct Decoder {
    protocol: Protocol,
    nmea: NmeaDecoder,
    wialon: WialonDecoder,
    imei: Option<String>,
    /// A Teltonika stream got past its handshake (kept across [`Decoder::stream_part`]s).
    handshaken: bool,
    /// The reason of the last skipped run, so that a run split across parts is one entry.
    last_skip: Option<String>,
}

impl Decoder {
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            nmea: NmeaDecoder::new(),
            wialon: WialonDecoder::new(),
            imei: None,
            handshaken: false,
            last_skip: None,
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Decodes one captured packet, or one line of a text protocol.
    pub fn packet(&mut self, bytes: &[u8]) -> Decoded {
        match self.protocol {
            Protocol::Nmea => {
                let mut out = Vec::new();
                // A captured packet may hold several sentences.
                for line in bytes
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                {
                    if let Some(r) = self.nmea.decode_line(line).map_err(|e| e.to_string())? {
                        out.push(r);
                    }
                }
                Ok(out)
            }
            Protocol::Wialon => {
                let mut out = Vec::new();
                for line in bytes
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                {
                    out.extend(
                        self.wialon
                            .decode_line(line)
                            .map_err(|e| e.to_string())?
                            .readings,
                    );
                }
                Ok(out)
            }
            Protocol::Rpm => rpm::parse_line(bytes)
                .map(|l| vec![Reading::Radiation(l)])
                .map_err(|e| e.to_string()),
            Protocol::Egts => {
                let p = egts::parse_packet(bytes).map_err(|e| e.to_string())?;
                Ok(egts::readings(&p))
            }
            Protocol::Teltonika => {
                let (out, integrity) = teltonika::decode_packet(bytes, self.imei.as_deref())
                    .map_err(|e| e.to_string())?;
                if let [Reading::Login(l)] = out.as_slice() {
                    self.imei = Some(l.device.clone());
                }
                Ok(with_warning(out, integrity))
            }
            Protocol::Galileosky => {
                let p = galileo::parse(bytes, self.imei.as_deref()).map_err(|e| e.to_string())?;
                if p.imei.is_some() {
                    self.imei = p.imei;
                }
                Ok(with_warning(p.readings, p.integrity))
            }
            Protocol::Arnavi => {
                let d = arnavi::parse(bytes, self.imei.as_deref(), 0).map_err(|e| e.to_string())?;
                if d.imei.is_some() {
                    self.imei = d.imei;
                }
                Ok(with_warning(d.readings, d.integrity))
            }
            Protocol::Lane => match lane::scan(bytes) {
                lane::Scan::Frame(f, n) if n == bytes.len() => Ok(vec![Reading::Lane(f)]),
                lane::Scan::Frame(_, n) => {
                    Err(format!("{} bytes after the frame", bytes.len() - n))
                }
                lane::Scan::Incomplete => Err("truncated frame".into()),
                lane::Scan::Skip(_, e) => Err(e.to_string()),
            },
        }
    }

    /// Cuts a raw binary stream into packets and decodes each; a run of skipped bytes with
    /// one reason is one error entry.
    pub fn stream(&mut self, bytes: &[u8]) -> Vec<Decoded> {
        self.stream_part(bytes, true).0
    }

    /// Like [`Decoder::stream`] for input that arrives in parts: decodes the whole frames at
    /// the start of `bytes` and returns them with how many bytes they took. Unless `eof`, an
    /// incomplete frame at the end is left for the caller to present again with more bytes
    /// (its size is bounded by the protocol's largest frame). A run of skipped bytes that
    /// spans parts is still one error entry.
    pub fn stream_part(&mut self, mut bytes: &[u8], eof: bool) -> (Vec<Decoded>, usize) {
        let start = bytes.len();
        let mut out = Vec::new();
        let mut handshaken = self.imei.is_some() || self.handshaken;
        let incomplete = |what: &str| Some(Err(format!("truncated {what} at end of input")));
        while !bytes.is_empty() {
            // (bytes used, what they gave, whether they were skipped as garbage); `None` for
            // an incomplete frame that waits for more input.
            let step: Option<(usize, Option<Decoded>, bool)> = match self.protocol {
                Protocol::Egts => match egts::scan(bytes) {
                    egts::Scan::Packet(n) => Some((n, Some(self.packet(&bytes[..n])), false)),
                    egts::Scan::Incomplete => {
                        eof.then(|| (bytes.len(), incomplete("packet"), false))
                    }
                    egts::Scan::Skip(n, e) => Some((n, Some(Err(e.to_string())), true)),
                },
                Protocol::Teltonika => match teltonika::scan(bytes, handshaken) {
                    teltonika::Scan::Imei(n) | teltonika::Scan::Avl(n) => {
                        handshaken = true;
                        Some((n, Some(self.packet(&bytes[..n])), false))
                    }
                    teltonika::Scan::KeepAlive => Some((1, Some(self.packet(&bytes[..1])), false)),
                    teltonika::Scan::Incomplete => {
                        eof.then(|| (bytes.len(), incomplete("packet"), false))
                    }
                    teltonika::Scan::Skip(n, e) => Some((n, Some(Err(e.to_string())), true)),
                },
                Protocol::Galileosky => match galileo::scan(bytes) {
                    galileo::Scan::Packet(n) => Some((n, Some(self.packet(&bytes[..n])), false)),
                    galileo::Scan::Incomplete => {
                        eof.then(|| (bytes.len(), incomplete("packet"), false))
                    }
                    galileo::Scan::Skip(n, e) => Some((n, Some(Err(e.to_string())), true)),
                },
                Protocol::Arnavi => match arnavi::scan(bytes) {
                    arnavi::Scan::Message(n) => Some((n, Some(self.packet(&bytes[..n])), false)),
                    // The last text line of a file may lack its line ending.
                    arnavi::Scan::Incomplete if eof && bytes[0] == b'$' => {
                        Some((bytes.len(), Some(self.packet(bytes)), false))
                    }
                    arnavi::Scan::Incomplete => {
                        eof.then(|| (bytes.len(), incomplete("message"), false))
                    }
                    arnavi::Scan::Skip(n, e) => Some((n, Some(Err(e.to_string())), true)),
                },
                Protocol::Lane => match lane::scan(bytes) {
                    lane::Scan::Frame(f, n) => Some((n, Some(Ok(vec![Reading::Lane(f)])), false)),
                    lane::Scan::Incomplete => {
                        eof.then(|| (bytes.len(), incomplete("frame"), false))
                    }
                    lane::Scan::Skip(n, e) => Some((n, Some(Err(e.to_string())), true)),
                },
                _ => match bytes.iter().position(|&b| b == b'\n') {
                    None if !eof => None,
                    end => {
                        let end = end.map_or(bytes.len(), |i| i + 1);
                        let line = &bytes[..end];
                        let blank = line.iter().all(u8::is_ascii_whitespace);
                        Some((end, (!blank).then(|| self.packet(line)), false))
                    }
                },
            };
            let Some((used, item, skipped)) = step else {
                break;
            };
            if let Some(item) = item {
                // Consecutive skips for one reason are one burst of garbage: one entry.
                let repeat =
                    skipped && matches!((&item, &self.last_skip), (Err(a), Some(b)) if a == b);
                if !repeat {
                    self.last_skip = match (&item, skipped) {
                        (Err(e), true) => Some(e.clone()),
                        _ => None,
                    };
                    out.push(item);
                }
            }
            bytes = &bytes[used.max(1).min(bytes.len())..];
        }
        self.handshaken = handshaken;
        (out, start - bytes.len())
    }
}

/// Readings of a message that decoded, with its integrity finding (CRC, checksum) appended as a
/// warning: shown by `acsgd decode`, and the reason the transport does not acknowledge it.
fn with_warning(mut readings: Vec<Reading>, integrity: Option<String>) -> Vec<Reading> {
    if let Some(problem) = integrity {
        readings.push(Reading::Warning(Warning {
            problem: format!("{problem}: would not be acknowledged"),
        }));
    }
    readings
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `bytes` presented in parts of `part` bytes, as `acsgd decode` reads a stream.
    fn in_parts(protocol: Protocol, bytes: &[u8], part: usize) -> Vec<Decoded> {
        let mut d = Decoder::new(protocol);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut chunks = bytes.chunks(part).peekable();
        loop {
            let chunk = chunks.next();
            buf.extend_from_slice(chunk.unwrap_or(&[]));
            let eof = chunk.is_none();
            let (items, used) = d.stream_part(&buf, eof);
            out.extend(items);
            buf.drain(..used);
            if eof {
                return out;
            }
        }
    }

    #[test]
    fn a_stream_decodes_the_same_whole_or_in_parts() {
        let mut bytes = unhex(b"000F333536333037303432343431303133").unwrap();
        bytes.extend_from_slice(b"garbage!");
        bytes.extend(
            unhex(b"000000000000003608010000016B40D8EA30010000000000000000000000000000000105021503010101425E0F01F10000601A014E0000000000000000010000C7CF")
                .unwrap(),
        );
        let whole = Decoder::new(Protocol::Teltonika).stream(&bytes);
        assert_eq!(whole.len(), 3, "{whole:?}"); // login, one noise entry, the packet
        for part in [1, 2, 3, 7, 16, 64] {
            assert_eq!(
                in_parts(Protocol::Teltonika, &bytes, part),
                whole,
                "parts of {part}"
            );
        }
        // A text protocol's last line without its ending is still read at the end.
        let nmea = b"$GPZDA,201530.00,04,07,2002,00,00*60\n$GPZDA,201531.00,04,07,2002,00,00*61";
        let whole = Decoder::new(Protocol::Nmea).stream(nmea);
        assert_eq!(in_parts(Protocol::Nmea, nmea, 5), whole);
        assert_eq!(whole.len(), 2);
    }
}
