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
}

impl Decoder {
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            nmea: NmeaDecoder::new(),
            wialon: WialonDecoder::new(),
            imei: None,
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
                let out = teltonika::decode_packet(bytes, self.imei.as_deref())
                    .map_err(|e| e.to_string())?;
                if let [Reading::Login(l)] = out.as_slice() {
                    self.imei = Some(l.device.clone());
                }
                Ok(out)
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

    /// Cuts a raw binary stream into packets and decodes each; noise between packets is one
    /// error entry per skipped run.
    pub fn stream(&mut self, mut bytes: &[u8]) -> Vec<Decoded> {
        let mut out = Vec::new();
        let mut handshaken = self.imei.is_some();
        while !bytes.is_empty() {
            let (used, item) = match self.protocol {
                Protocol::Egts => match egts::scan(bytes) {
                    egts::Scan::Packet(n) => (n, Some(self.packet(&bytes[..n]))),
                    egts::Scan::Incomplete => (
                        bytes.len(),
                        Some(Err("truncated packet at end of input".into())),
                    ),
                    egts::Scan::Skip(n, e) => (n, Some(Err(e.to_string()))),
                },
                Protocol::Teltonika => match teltonika::scan(bytes, handshaken) {
                    teltonika::Scan::Imei(n) | teltonika::Scan::Avl(n) => {
                        handshaken = true;
                        (n, Some(self.packet(&bytes[..n])))
                    }
                    teltonika::Scan::KeepAlive => (1, Some(self.packet(&bytes[..1]))),
                    teltonika::Scan::Incomplete => (
                        bytes.len(),
                        Some(Err("truncated packet at end of input".into())),
                    ),
                    teltonika::Scan::Skip(n, e) => (n, Some(Err(e.to_string()))),
                },
                Protocol::Galileosky => match galileo::scan(bytes) {
                    galileo::Scan::Packet(n) => (n, Some(self.packet(&bytes[..n]))),
                    galileo::Scan::Incomplete => (
                        bytes.len(),
                        Some(Err("truncated packet at end of input".into())),
                    ),
                    galileo::Scan::Skip(n, e) => (n, Some(Err(e.to_string()))),
                },
                Protocol::Arnavi => match arnavi::scan(bytes) {
                    arnavi::Scan::Message(n) => (n, Some(self.packet(&bytes[..n]))),
                    // The last text line of a file may lack its line ending.
                    arnavi::Scan::Incomplete if bytes[0] == b'$' => {
                        (bytes.len(), Some(self.packet(bytes)))
                    }
                    arnavi::Scan::Incomplete => (
                        bytes.len(),
                        Some(Err("truncated message at end of input".into())),
                    ),
                    arnavi::Scan::Skip(n, e) => (n, Some(Err(e.to_string()))),
                },
                Protocol::Lane => match lane::scan(bytes) {
                    lane::Scan::Frame(f, n) => (n, Some(Ok(vec![Reading::Lane(f)]))),
                    lane::Scan::Incomplete => (
                        bytes.len(),
                        Some(Err("truncated frame at end of input".into())),
                    ),
                    lane::Scan::Skip(n, e) => (n, Some(Err(e.to_string()))),
                },
                _ => {
                    let end = bytes
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(bytes.len(), |i| i + 1);
                    let line = &bytes[..end];
                    let blank = line.iter().all(u8::is_ascii_whitespace);
                    (end, (!blank).then(|| self.packet(line)))
                }
            };
            // Merge consecutive noise skips into one entry so a burst of garbage is one error.
            if let Some(item) = item {
                let merge = matches!((&item, out.last()), (Err(a), Some(Err(b))) if a == b && a.contains("noise"));
                if !merge {
                    out.push(item);
                }
            }
            bytes = &bytes[used.max(1).min(bytes.len())..];
        }
        out
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
