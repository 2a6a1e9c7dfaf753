//! Wialon IPS 1.1 and 2.0 (Gurtam's text protocol for trackers), over TCP or UDP.
//!
//! ```text
//! #SD#270413;205601;5544.6025;N;03739.6834;E;1;2;3;4\r\n
//! └┬─┘└─┬──┘ └─┬──┘ └───┬───┘ │ └───┬────┘ │ │ │ │ └ satellites
//!  type date   time    lat   N/S   lon   E/W │ │ └ altitude m
//!      ddmmyy  hhmmss  ddmm.mmmm   dddmm.mmmm │ └ course °
//!                                             └ speed km/h
//! #D#<the SD fields>;hdop;inputs;outputs;adc1,adc2…;ibutton;name:type:value,…[;CRC16]\r\n
//! #B#<SD or D fields>|<SD or D fields>|…[|CRC16]\r\n         (a batch of stored messages)
//! #L#[2.0;]imei;password[;CRC16]\r\n      #P#\r\n  (login, ping)
//! 2.0;imei#D#…;CRC16                      (2.0 over UDP: version and id before the type)
//! ```
//! Fields the device does not have are `NA`; param types are 1 integer, 2 float, 3 string.
//! Version 2.0 appends a CRC-16/ARC (as hex) over everything after the type up to and
//! including the separator before it. A message is 2.0 when the login said so, when it carries
//! the `2.0;` prefix, or when it has one field more than 1.1 allows; a 2.0 message with a wrong
//! CRC is refused and answered with the protocol's checksum-error code.
//!
//! Server answers: `#AL#1` login accepted (`#AL#10` checksum error), `#ASD#1`, `#AD#1`
//! (`#ASD#13`/`#AD#16` checksum error, `-1` malformed), `#AB#n` messages accepted, `#AP#`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use time::{OffsetDateTime, Time};

use crate::crc::crc16_arc;
use crate::reading::{ddmm_to_degrees, Heartbeat, Login, Message, Position, Reading, Telemetry};

/// No Wialon message of ours comes near this (a batch of stored positions does not exceed a few
/// KiB); it bounds the line a connection may hold.
pub const MAX_LINE: usize = 64 * 1024;
/// A batch holds at most this many messages.
pub const MAX_BATCH: usize = 5000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WialonError {
    #[error("not a Wialon IPS packet (no #TYPE#)")]
    NoType,
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("not UTF-8 text")]
    NotText,
    #[error("unknown packet type {0:?}")]
    UnknownType(String),
    #[error("CRC mismatch: packet says {stated}, bytes give {computed:04X}")]
    Crc { stated: String, computed: u16 },
    #[error("{what}: {fields} fields, expected {expected}")]
    FieldCount {
        what: &'static str,
        fields: usize,
        expected: &'static str,
    },
    #[error("field {name} is not valid: {value:?}")]
    BadField { name: &'static str, value: String },
    #[error("batch of more than {MAX_BATCH} messages")]
    BatchTooLong,
}

/// What kind of packet a line was, for choosing the server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Login,
    ShortData,
    Data,
    Batch,
    Ping,
    Message,
}

/// One decoded packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub kind: PacketType,
    pub readings: Vec<Reading>,
}

/// Per-connection state: the device's login and protocol version.
#[derive(Debug, Default, Clone)]
pub struct WialonDecoder {
    pub device: Option<String>,
    /// From the login: `Some(true)` for 2.0.
    pub v2: Option<bool>,
}

impl WialonDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one line (its `\r\n` may be present).
    pub fn decode_line(&mut self, line: &[u8]) -> Result<Packet, WialonError> {
        if line.len() > MAX_LINE {
            return Err(WialonError::TooLong);
        }
        let text = std::str::from_utf8(line).map_err(|_| WialonError::NotText)?;
        let text = text.trim_end_matches(['\r', '\n']);
        // `2.0;imei#D#…`: version and device before the first '#'.
        let (prefix, rest) = match text.find('#') {
            Some(0) => ("", text),
            Some(i) => (&text[..i], &text[i..]),
            None => return Err(WialonError::NoType),
        };
        let mut v2 = self.v2;
        if let Some((ver, imei)) = prefix.split_once(';') {
            v2 = Some(ver == "2.0");
            self.device = Some(imei.to_string());
        }
        let rest = &rest[1..];
        let (kind, body) = rest.split_once('#').ok_or(WialonError::NoType)?;
        match kind {
            "L" => self.login(body),
            "P" => Ok(Packet {
                kind: PacketType::Ping,
                readings: vec![Reading::Heartbeat(Heartbeat {
                    device: self.device.clone(),
                })],
            }),
            "SD" | "D" => {
                // D is SD plus six fields: 10 or 16 fields in 1.1, one more (the CRC) in 2.0.
                let full = kind == "D";
                let fields: Vec<&str> = body.split(';').collect();
                let fields = check_crc(body, fields, if full { 16 } else { 10 }, v2)?;
                let r = self.message(&fields, full)?;
                Ok(Packet {
                    kind: if full {
                        PacketType::Data
                    } else {
                        PacketType::ShortData
                    },
                    readings: r.into_iter().collect(),
                })
            }
            "B" => self.batch(body, v2),
            "M" => {
                let text = body
                    .rsplit_once(';')
                    .filter(|(_, c)| is_crc(c))
                    .map_or(body, |(t, _)| t);
                Ok(Packet {
                    kind: PacketType::Message,
                    readings: vec![Reading::Message(Message {
                        source: "M",
                        device: self.device.clone(),
                        text: text.to_string(),
                    })],
                })
            }
            other => Err(WialonError::UnknownType(other.chars().take(8).collect())),
        }
    }

    fn login(&mut self, body: &str) -> Result<Packet, WialonError> {
        let fields: Vec<&str> = body.split(';').collect();
        let mut attributes = BTreeMap::new();
        let (version, imei) = match fields.as_slice() {
            // 2.0: version;imei;password;crc
            [ver, imei, _password, crc] if ver.contains('.') => {
                let signed = &body[..body.len() - crc.len()];
                let computed = crc16_arc(signed.as_bytes());
                if !crc_matches(crc, computed) {
                    // The device is known, but the login is refused: it gets `#AL#10` and
                    // nothing it sends is accepted until it logs in again.
                    attributes.insert("refused".into(), json!("checksum mismatch"));
                }
                (Some(ver.to_string()), *imei)
            }
            // 1.1: imei;password
            [imei, _password] => (None, *imei),
            [imei] => (None, *imei),
            _ => {
                return Err(WialonError::FieldCount {
                    what: "login",
                    fields: fields.len(),
                    expected: "2 or 4",
                })
            }
        };
        if imei.is_empty() {
            return Err(WialonError::BadField {
                name: "imei",
                value: String::new(),
            });
        }
        if attributes.is_empty() {
            self.device = Some(imei.to_string());
            self.v2 = Some(version.as_deref() == Some("2.0"));
        }
        Ok(Packet {
            kind: PacketType::Login,
            readings: vec![Reading::Login(Login {
                device: imei.to_string(),
                protocol_version: version,
                attributes,
            })],
        })
    }

    fn batch(&mut self, body: &str, v2: Option<bool>) -> Result<Packet, WialonError> {
        let mut parts: Vec<&str> = body.split('|').collect();
        if parts.len() > MAX_BATCH + 1 {
            return Err(WialonError::BatchTooLong);
        }
        // 2.0 ends the batch with `|CRC`.
        if parts.len() > 1 && is_crc(parts[parts.len() - 1]) && v2 != Some(false) {
            let crc = parts.pop().unwrap_or_default();
            let signed = &body[..body.len() - crc.len()];
            let computed = crc16_arc(signed.as_bytes());
            if !crc_matches(crc, computed) {
                return Err(WialonError::Crc {
                    stated: crc.to_string(),
                    computed,
                });
            }
        }
        let mut readings = Vec::new();
        for part in parts.iter().filter(|p| !p.is_empty()) {
            let fields: Vec<&str> = part.split(';').collect();
            let full = fields.len() >= 16;
            if fields.len() < 10 {
                return Err(WialonError::FieldCount {
                    what: "batch message",
                    fields: fields.len(),
                    expected: "10 or 16",
                });
            }
            readings.extend(self.message(&fields, full)?);
        }
        Ok(Packet {
            kind: PacketType::Batch,
            readings,
        })
    }

    /// An SD (10 fields) or D (16 fields) message.
    fn message(&self, f: &[&str], full: bool) -> Result<Option<Reading>, WialonError> {
        let need = if full { 16 } else { 10 };
        if f.len() < need {
            return Err(WialonError::FieldCount {
                what: if full { "D" } else { "SD" },
                fields: f.len(),
                expected: if full { "16" } else { "10" },
            });
        }
        let time = datetime(f[0], f[1])?;
        let lat = coord(f[2], f[3], "N", "S", 90.0, "lat")?;
        let lon = coord(f[4], f[5], "E", "W", 180.0, "lon")?;
        let speed = opt_num(f[6], "speed")?;
        let course = opt_num(f[7], "course")?;
        let altitude = opt_num(f[8], "altitude")?;
        let satellites = opt_num(f[9], "satellites")?.map(|s| s.clamp(0.0, 999.0) as u16);
        let mut attributes = BTreeMap::new();
        let mut hdop = None;
        if full {
            hdop = opt_num(f[10], "hdop")?;
            if let Some(v) = opt_num(f[11], "inputs")? {
                attributes.insert("inputs".into(), json!(v));
            }
            if let Some(v) = opt_num(f[12], "outputs")? {
                attributes.insert("outputs".into(), json!(v));
            }
            if !na(f[13]) {
                for (i, a) in f[13].split(',').enumerate() {
                    if let Some(v) = opt_num(a, "adc")? {
                        attributes.insert(format!("adc{}", i + 1), json!(v));
                    }
                }
            }
            if !na(f[14]) {
                attributes.insert("ibutton".into(), json!(f[14]));
            }
            for p in f[15].split(',').filter(|p| !p.is_empty() && !na(p)) {
                let (name, value) = param(p)?;
                attributes.insert(name, value);
            }
        }
        let device = self.device.clone();
        match (lat, lon) {
            (Some(lat), Some(lon)) => Ok(Some(Reading::Position(Position {
                device,
                source: if full { "D" } else { "SD" },
                time,
                lat,
                lon,
                // The protocol has no validity flag; a fix with satellites reported as 0 is not one.
                valid: satellites.is_none_or(|s| s > 0),
                speed,
                course,
                altitude,
                satellites,
                hdop,
                attributes,
                ..Position::default()
            }))),
            _ if !attributes.is_empty() => Ok(Some(Reading::Telemetry(Telemetry {
                device,
                source: "D",
                time,
                seal: None,
                attributes,
            }))),
            _ => Ok(None),
        }
    }
}

fn is_crc(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn crc_matches(stated: &str, computed: u16) -> bool {
    u16::from_str_radix(stated, 16).is_ok_and(|s| s == computed)
}

/// Strips and checks the 2.0 CRC when the message has one field more than 1.1 (or the login
/// said 2.0).
fn check_crc<'a>(
    body: &str,
    mut fields: Vec<&'a str>,
    n11: usize,
    v2: Option<bool>,
) -> Result<Vec<&'a str>, WialonError> {
    let has_crc = match v2 {
        Some(true) => fields.len() > n11,
        Some(false) => false,
        None => fields.len() == n11 + 1 && is_crc(fields[n11]),
    };
    if has_crc {
        let crc = fields.pop().unwrap_or_default();
        let signed = &body[..body.len() - crc.len()];
        let computed = crc16_arc(signed.as_bytes());
        if !crc_matches(crc, computed) {
            return Err(WialonError::Crc {
                stated: crc.to_string(),
                computed,
            });
        }
    }
    Ok(fields)
}

fn na(s: &str) -> bool {
    s.is_empty() || s == "NA"
}

fn opt_num(s: &str, name: &'static str) -> Result<Option<f64>, WialonError> {
    if na(s) {
        return Ok(None);
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(WialonError::BadField {
            name,
            value: s.chars().take(32).collect(),
        }),
    }
}

fn datetime(date: &str, time: &str) -> Result<Option<OffsetDateTime>, WialonError> {
    if na(date) || na(time) {
        return Ok(None);
    }
    let d = crate::nmea::ddmmyy(date).ok_or_else(|| WialonError::BadField {
        name: "date",
        value: date.into(),
    })?;
    let bad = || WialonError::BadField {
        name: "time",
        value: time.chars().take(16).collect(),
    };
    if time.len() < 6 || !time.is_char_boundary(6) {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| time.get(r).and_then(|s| s.parse::<u8>().ok());
    let t = match (n(0..2), n(2..4), n(4..6)) {
        (Some(h), Some(m), Some(s)) => Time::from_hms(h, m, s).map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    Ok(Some(d.with_time(t).assume_utc()))
}

fn coord(
    v: &str,
    hemi: &str,
    pos: &str,
    neg: &str,
    max: f64,
    name: &'static str,
) -> Result<Option<f64>, WialonError> {
    if na(v) || na(hemi) {
        return Ok(None);
    }
    let d = ddmm_to_degrees(v)
        .filter(|d| *d <= max)
        .ok_or_else(|| WialonError::BadField {
            name,
            value: v.chars().take(16).collect(),
        })?;
    if hemi == pos {
        Ok(Some(d))
    } else if hemi == neg {
        Ok(Some(-d))
    } else {
        Err(WialonError::BadField {
            name,
            value: hemi.chars().take(4).collect(),
        })
    }
}

/// `name:type:value` with type 1 integer, 2 float, 3 string.
fn param(p: &str) -> Result<(String, Value), WialonError> {
    let mut it = p.splitn(3, ':');
    let (Some(name), Some(kind), Some(value)) = (it.next(), it.next(), it.next()) else {
        return Err(WialonError::BadField {
            name: "param",
            value: p.chars().take(32).collect(),
        });
    };
    let v = match kind {
        "1" => value
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(value)),
        "2" => value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Value::from)
            .unwrap_or_else(|| json!(value)),
        _ => json!(value),
    };
    Ok((name.to_string(), v))
}

/// The server's answer to a decoded packet.
pub fn answer(packet: &Packet) -> Vec<u8> {
    let s = match packet.kind {
        PacketType::Login => {
            let refused = packet
                .readings
                .iter()
                .any(|r| matches!(r, Reading::Login(l) if l.attributes.contains_key("refused")));
            if refused {
                "#AL#10\r\n".to_string()
            } else {
                "#AL#1\r\n".to_string()
            }
        }
        PacketType::ShortData => "#ASD#1\r\n".to_string(),
        PacketType::Data => "#AD#1\r\n".to_string(),
        PacketType::Batch => format!("#AB#{}\r\n", packet.readings.len()),
        PacketType::Ping => "#AP#\r\n".to_string(),
        PacketType::Message => "#AM#1\r\n".to_string(),
    };
    s.into_bytes()
}

/// The answer to a line that could not be decoded, where the protocol has one.
pub fn error_answer(line: &[u8], err: &WialonError) -> Option<&'static [u8]> {
    let text = std::str::from_utf8(line).ok()?;
    let kind = text.split('#').nth(1)?;
    let crc = matches!(err, WialonError::Crc { .. });
    Some(match (kind, crc) {
        ("SD", true) => b"#ASD#13\r\n",
        ("SD", false) => b"#ASD#-1\r\n",
        ("D", true) => b"#AD#16\r\n",
        ("D", false) => b"#AD#-1\r\n",
        ("B", _) => b"#AB#0\r\n",
        ("L", _) => b"#AL#0\r\n",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(line: &str) -> Result<Packet, WialonError> {
        WialonDecoder::new().decode_line(line.as_bytes())
    }

    #[test]
    fn short_data_gives_a_position_with_its_fields() {
        // 27 Apr 2013 20:56:01, 55°44.6025' N, 37°39.6834' E, 1 km/h, course 2°, 3 m, 4 satellites
        let p = decode("#SD#270413;205601;5544.6025;N;03739.6834;E;1;2;3;4\r\n").unwrap();
        assert_eq!(p.kind, PacketType::ShortData);
        let pos = p.readings[0].position().unwrap();
        assert!((pos.lat - 55.74338).abs() < 1e-5 && (pos.lon - 37.66139).abs() < 1e-5);
        assert_eq!(pos.time.unwrap().unix_timestamp(), 1_367_096_161);
        assert_eq!(
            (pos.speed, pos.course, pos.altitude, pos.satellites),
            (Some(1.0), Some(2.0), Some(3.0), Some(4))
        );
        assert_eq!(answer(&p), b"#ASD#1\r\n");
    }

    #[test]
    fn data_2_0_checks_its_crc_and_keeps_params() {
        let line = "#D#220323;114150;2234.80479;N;11354.87786;E;0;NA;59;11;NA;NA;NA;;NA;d_battr:1:94,d_csq:1:21,di_light:1:1;E7C9";
        let p = decode(line).unwrap();
        let pos = p.readings[0].position().unwrap();
        assert_eq!(pos.course, None, "NA stays absent");
        assert_eq!(pos.attributes["d_battr"], json!(94));
        let bad = line.replace("E7C9", "E7C8");
        assert!(matches!(decode(&bad), Err(WialonError::Crc { .. })));
        assert_eq!(
            error_answer(bad.as_bytes(), &decode(&bad).unwrap_err()),
            Some(&b"#AD#16\r\n"[..])
        );
    }

    #[test]
    fn a_2_0_login_sets_the_version_and_a_bad_crc_refuses_it() {
        let mut d = WialonDecoder::new();
        let body = "2.0;865905021234567;secret;";
        let ok = format!("#L#{body}{:04X}", crc16_arc(body.as_bytes()));
        let p = d.decode_line(ok.as_bytes()).unwrap();
        assert_eq!(answer(&p), b"#AL#1\r\n");
        assert_eq!(
            (d.device.as_deref(), d.v2),
            (Some("865905021234567"), Some(true))
        );
        let p = WialonDecoder::new()
            .decode_line(b"#L#2.0;42001300083;;CE45")
            .unwrap();
        assert_eq!(answer(&p), b"#AL#10\r\n");
    }

    #[test]
    fn a_batch_answers_with_its_message_count() {
        let p = decode("#B#080914;073235;5027.50625;N;03026.19321;E;0.700;0.000;NA;4;NA;NA;NA;;NA;|080914;073420;5027.50845;N;03026.18854;E;1.996;292.540;NA;4;NA;NA;NA;;NA;").unwrap();
        assert_eq!(p.readings.len(), 2);
        assert_eq!(answer(&p), b"#AB#2\r\n");
    }

    #[test]
    fn southern_and_western_coordinates_are_negative() {
        let p = decode("#SD#021214;065947;2237.7552;S;11404.8851;W;0.000;;170.9;5").unwrap();
        let pos = p.readings[0].position().unwrap();
        assert!(pos.lat < 0.0 && pos.lon < 0.0);
    }

    #[test]
    fn ping_and_garbage() {
        assert_eq!(answer(&decode("#P#\r\n").unwrap()), b"#AP#\r\n");
        assert_eq!(decode("hello"), Err(WialonError::NoType));
        assert!(matches!(
            decode("#SD#270413;205601;55x4.6025;N;03739.6834;E;1;2;3;4"),
            Err(WialonError::BadField { name: "lat", .. })
        ));
    }
}
