//! Arnavi trackers over TCP, both of their protocols on one connection: the binary Arnavi 4
//! protocol and the older `$AV` text lines.
//!
//! ## Binary
//! ```text
//! HEADER   FF │ version │ IMEI u64 LE [│ 8-byte extended id, version 24 only]
//!          22 = v1, 23 = v2, 24 = v3, 25 = v4
//!   server: v1  7B 00 00 7D
//!           v2+ 7B 04 00 │ CS │ server time u32 LE │ 7D       CS = sum of the time bytes mod 256
//! PACKAGE  5B │ number 01–FB │ packets … │ 5D
//!   packet: type │ length u16 LE │ time u32 LE │ data (length) │ CS
//!           CS = sum of the time and data bytes mod 256
//!   server: 7B 00 │ number │ 7D
//! ```
//! A data packet (type 01) is a list of 5-byte tags: id u8, value u32 LE. Tag 03 is latitude,
//! 04 longitude (IEEE-754 float LE, degrees), 05 course/2, altitude/10 m, satellites (GPS in the
//! low nibble, GLONASS in the high one; FE/FF mean a cell-tower or Wi-Fi position) and speed in
//! knots. Other packet types are ping (00), text (03), file (04) and binary (06).
//!
//! ## Text
//! `$AV,V<type>,<id>,<index>,<power>,<battery>,…,<time hhmmss>,<lat ddmm.mmmmN>,<lon>,<speed>,
//! <course>,<date ddmmyy>,…*CS` with an NMEA checksum (XOR of the bytes between `$` and `*`).
//! V2, V3 and V4 lines carry a position (V4 adds altitude and geoid height after the
//! satellites); other types (V3DI, V6SD, V3GSMINFO) are status lines. Text lines are not
//! answered.
//!
//! A checksum that disagrees leaves the message readable (structure first) but it is reported
//! in [`Decoded::integrity`] and never acknowledged.

use std::collections::BTreeMap;

use serde_json::json;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use crate::reading::{ddmm_to_degrees, Heartbeat, Login, Message, Position, Reading, Telemetry};

/// The longest package accepted (the device sends at most a few KiB; a file packet is bounded
/// by the u16 length of each packet).
pub const MAX_PACKAGE: usize = 64 * 1024;
/// The longest text line.
pub const MAX_LINE: usize = 512;

const HEADER: u8 = 0xFF;
const PACKAGE_START: u8 = 0x5B;
const PACKAGE_END: u8 = 0x5D;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArnaviError {
    #[error("byte 0x{0:02x} starts no Arnavi message (FF header, 5B package or $AV line)")]
    Start(u8),
    #[error("header version 0x{0:02x} unknown (22–25)")]
    Version(u8),
    #[error("package longer than {MAX_PACKAGE} bytes")]
    TooLong,
    #[error("text line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("packet type 0x{0:02x} unknown")]
    PacketType(u8),
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("{0} bytes after the message")]
    Trailing(usize),
    #[error("text line: {0}")]
    Text(String),
}

/// What was found at the start of a stream buffer.
#[derive(Debug, PartialEq)]
pub enum Scan {
    /// A header, package or text line (with its line ending) of this many bytes.
    Message(usize),
    Incomplete,
    /// Drop this many bytes and look again.
    Skip(usize, ArnaviError),
}

fn header_len(version: u8) -> Option<usize> {
    match version {
        0x22 | 0x23 | 0x25 => Some(10),
        0x24 => Some(18),
        _ => None,
    }
}

/// Cuts the next message from a TCP stream.
pub fn scan(buf: &[u8]) -> Scan {
    let Some(&first) = buf.first() else {
        return Scan::Incomplete;
    };
    match first {
        HEADER => {
            let Some(&version) = buf.get(1) else {
                return Scan::Incomplete;
            };
            match header_len(version) {
                Some(n) if buf.len() >= n => Scan::Message(n),
                Some(_) => Scan::Incomplete,
                None => Scan::Skip(1, ArnaviError::Version(version)),
            }
        }
        PACKAGE_START => {
            // Walk the packets by their lengths to the end byte.
            let mut i = 2;
            loop {
                if i > MAX_PACKAGE {
                    return Scan::Skip(1, ArnaviError::TooLong);
                }
                match buf.get(i) {
                    None => return Scan::Incomplete,
                    Some(&PACKAGE_END) => return Scan::Message(i + 1),
                    Some(_) => {}
                }
                let Some(len) = buf.get(i + 1..i + 3) else {
                    return Scan::Incomplete;
                };
                i += 8 + u16::from_le_bytes([len[0], len[1]]) as usize;
            }
        }
        b'$' => match buf.iter().take(MAX_LINE + 2).position(|&b| b == b'\n') {
            Some(end) => Scan::Message(end + 1),
            None if buf.len() > MAX_LINE + 1 => Scan::Skip(buf.len(), ArnaviError::LineTooLong),
            None => Scan::Incomplete,
        },
        b => Scan::Skip(1, ArnaviError::Start(b)),
    }
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    /// The IMEI a header carried.
    pub imei: Option<String>,
    pub readings: Vec<Reading>,
    /// The answer once the readings are accepted (empty: none is sent).
    pub ack: Vec<u8>,
    /// Why the message must not be acknowledged although it decoded (checksum).
    pub integrity: Option<String>,
}

/// Decodes one message. `device` is the IMEI from the connection's header; `now` is the server
/// time a v2+ header answer carries.
pub fn parse(buf: &[u8], device: Option<&str>, now: u32) -> Result<Decoded, ArnaviError> {
    // A text line may come without its line ending (a capture, the last line of a file).
    if buf.first() == Some(&b'$') {
        if buf.len() > MAX_LINE + 2 {
            return Err(ArnaviError::LineTooLong);
        }
        return text(buf);
    }
    match scan(buf) {
        Scan::Message(n) if n == buf.len() => {}
        Scan::Message(n) => return Err(ArnaviError::Trailing(buf.len() - n)),
        Scan::Incomplete => return Err(ArnaviError::Truncated("message")),
        Scan::Skip(_, e) => return Err(e),
    }
    match buf[0] {
        HEADER => Ok(header(buf, now)),
        PACKAGE_START => package(buf, device),
        _ => text(buf),
    }
}

fn header(buf: &[u8], now: u32) -> Decoded {
    let version = buf[1];
    let imei = u64::from_le_bytes(buf[2..10].try_into().expect("8 bytes")).to_string();
    let ack = if version == 0x22 {
        vec![0x7B, 0x00, 0x00, 0x7D]
    } else {
        let t = now.to_le_bytes();
        let cs = t.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        vec![0x7B, 0x04, 0x00, cs, t[0], t[1], t[2], t[3], 0x7D]
    };
    Decoded {
        imei: Some(imei.clone()),
        readings: vec![Reading::Login(Login {
            device: imei,
            protocol_version: Some(format!("{version:02x}")),
            attributes: BTreeMap::new(),
        })],
        ack,
        integrity: None,
    }
}

fn package(buf: &[u8], device: Option<&str>) -> Result<Decoded, ArnaviError> {
    let number = buf[1];
    let device = device.map(str::to_string);
    let mut readings = Vec::new();
    let mut problems = Vec::new();
    let mut i = 2;
    while buf[i] != PACKAGE_END {
        let kind = buf[i];
        let len = u16::from_le_bytes([buf[i + 1], buf[i + 2]]) as usize;
        let body = &buf[i + 3..i + 7 + len];
        let stated = buf[i + 7 + len];
        let computed = body.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        if stated != computed {
            problems.push(format!(
                "packet at byte {i}: checksum says {stated:02x}, bytes give {computed:02x}"
            ));
        }
        let t = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
        let time = OffsetDateTime::from_unix_timestamp(t as i64).ok();
        let data = &body[4..];
        match kind {
            0x00 => readings.push(Reading::Heartbeat(Heartbeat {
                device: device.clone(),
            })),
            0x01 => readings.push(data_packet(data, time, &device)),
            0x03 => readings.push(Reading::Message(Message {
                source: "text",
                device: device.clone(),
                text: String::from_utf8_lossy(data).trim().to_string(),
            })),
            0x04 | 0x06 => {} // files and binary blobs: acknowledged, not forwarded
            k => return Err(ArnaviError::PacketType(k)),
        }
        i += 8 + len;
    }
    Ok(Decoded {
        imei: None,
        readings,
        ack: vec![0x7B, 0x00, number, 0x7D],
        integrity: (!problems.is_empty()).then(|| problems.join("; ")),
    })
}

fn data_packet(data: &[u8], time: Option<OffsetDateTime>, device: &Option<String>) -> Reading {
    let (mut lat, mut lon, mut nav) = (None, None, None);
    let mut attributes = BTreeMap::new();
    // A trailing partial tag (length not a multiple of 5) is ignored, as Traccar does.
    for tag in data.chunks_exact(5) {
        let v = [tag[1], tag[2], tag[3], tag[4]];
        match tag[0] {
            0x03 => lat = Some(f32::from_le_bytes(v) as f64),
            0x04 => lon = Some(f32::from_le_bytes(v) as f64),
            0x05 => nav = Some(v),
            0x01 => {
                let (bat, ext) = (
                    u16::from_le_bytes([v[0], v[1]]),
                    u16::from_le_bytes([v[2], v[3]]),
                );
                attributes.insert("battery_v".into(), json!(bat as f64 / 1000.0));
                attributes.insert("power_v".into(), json!(ext as f64 / 1000.0));
            }
            id => {
                attributes.insert(format!("tag_{id:02x}"), json!(u32::from_le_bytes(v)));
            }
        }
    }
    let (Some(lat), Some(lon)) = (lat, lon) else {
        return Reading::Telemetry(Telemetry {
            device: device.clone(),
            source: "arnavi",
            time,
            seal: None,
            attributes,
        });
    };
    let mut p = Position {
        device: device.clone(),
        source: "arnavi",
        time,
        lat,
        lon,
        attributes,
        ..Position::default()
    };
    if let Some([course, alt, sats, knots]) = nav {
        p.course = Some(course as f64 * 2.0);
        p.altitude = Some(alt as f64 * 10.0);
        p.speed = Some(knots as f64 * 1.852);
        // FE and FF: the position came from cell towers or Wi-Fi, not satellites.
        if sats < 0xFE {
            p.satellites = Some((sats & 0x0F) as u16 + (sats >> 4) as u16);
        }
    }
    p.valid = p.satellites.is_some_and(|s| s > 0)
        && lat.is_finite()
        && lon.is_finite()
        && lat.abs() <= 90.0
        && lon.abs() <= 180.0
        && (lat, lon) != (0.0, 0.0);
    Reading::Position(p)
}

fn text(buf: &[u8]) -> Result<Decoded, ArnaviError> {
    let line = String::from_utf8_lossy(buf);
    let line = line.trim_end();
    let bad = |why: &str| ArnaviError::Text(why.to_string());
    let (body, stated) = line.rsplit_once('*').ok_or_else(|| bad("no *checksum"))?;
    let body = body.strip_prefix('$').ok_or_else(|| bad("no $"))?;
    let computed = body.bytes().fold(0u8, |a, b| a ^ b);
    let integrity = match u8::from_str_radix(stated, 16) {
        Ok(s) if s == computed => None,
        _ => Some(format!("checksum says {stated}, bytes give {computed:02X}")),
    };
    let f: Vec<&str> = body.split(',').collect();
    if f.first() != Some(&"AV") || f.len() < 3 {
        return Err(bad("not an $AV line"));
    }
    let kind = f[1];
    let device = f[2].to_string();
    let mut readings = Vec::new();
    if matches!(kind, "V2" | "V3" | "V4") {
        readings.push(text_position(kind, &f, &device)?);
    } else {
        // Status lines (device info, SD card, GSM cells): kept as text.
        readings.push(Reading::Message(Message {
            source: "status",
            device: Some(device),
            text: body.to_string(),
        }));
    }
    Ok(Decoded {
        imei: None,
        readings,
        ack: Vec::new(),
        integrity,
    })
}

/// A V2/V3/V4 line. Fields are found from the latitude (`ddmm.mmmm` + N/S), which sits at
/// different places depending on the version and on how many inputs the device reports.
fn text_position(kind: &str, f: &[&str], device: &str) -> Result<Reading, ArnaviError> {
    let bad = |why: String| ArnaviError::Text(why);
    let j = f
        .iter()
        .position(|x| x.ends_with('N') || x.ends_with('S'))
        .filter(|&j| j >= 6 && j + 4 < f.len())
        .ok_or_else(|| bad(format!("{kind} line without a latitude")))?;
    let hemi = |s: &str, neg: char| -> Result<f64, ArnaviError> {
        let mut chars = s.chars();
        let h = chars.next_back();
        let v =
            ddmm_to_degrees(chars.as_str()).ok_or_else(|| bad(format!("bad coordinate {s:?}")))?;
        Ok(if h == Some(neg) { -v } else { v })
    };
    let lat = hemi(f[j], 'S')?;
    let lon = hemi(f[j + 1], 'W')?;
    let num = |s: &str| -> Option<u32> { s.parse().ok() };
    let hms = f[j - 1];
    let dmy = f[j + 4];
    let time = (|| {
        let six_digits = |s: &str| s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit());
        if !six_digits(hms) || !six_digits(dmy) {
            return None;
        }
        let t = Time::from_hms(
            num(&hms[..2])? as u8,
            num(&hms[2..4])? as u8,
            num(&hms[4..])? as u8,
        )
        .ok()?;
        let d = Date::from_calendar_date(
            2000 + num(&dmy[4..])? as i32,
            Month::try_from(num(&dmy[2..4])? as u8).ok()?,
            num(&dmy[..2])? as u8,
        )
        .ok()?;
        Some(PrimitiveDateTime::new(d, t).assume_utc())
    })()
    .ok_or_else(|| bad(format!("bad time {hms:?} or date {dmy:?}")))?;
    // V4 puts altitude and geoid height between the satellites and the time.
    let (fix, sats, altitude) = if kind == "V4" {
        (f[j - 5], f[j - 4], f[j - 3].parse().ok())
    } else {
        (f[j - 3], f[j - 2], None)
    };
    let satellites = sats.parse().ok();
    let mut attributes = BTreeMap::new();
    attributes.insert("index".into(), json!(f[3]));
    if let Some(v) = f.get(4).and_then(|v| v.parse::<f64>().ok()) {
        attributes.insert("power_v".into(), json!(v / 100.0));
    }
    if let Some(v) = f.get(5).and_then(|v| v.parse::<f64>().ok()) {
        attributes.insert("battery_v".into(), json!(v / 100.0));
    }
    Ok(Reading::Position(Position {
        device: Some(device.to_string()),
        source: "arnavi_text",
        time: Some(time),
        lat,
        lon,
        valid: fix == "1" && satellites.is_some_and(|s: u16| s > 0),
        speed: f[j + 2].parse::<f64>().ok().map(|kn| kn * 1.852),
        course: f[j + 3].parse().ok(),
        altitude,
        satellites,
        attributes,
        ..Position::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package_of(number: u8, packets: &[(u8, u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![PACKAGE_START, number];
        for (kind, time, data) in packets {
            b.push(*kind);
            b.extend((data.len() as u16).to_le_bytes());
            let mut body = time.to_le_bytes().to_vec();
            body.extend(data);
            let cs = body.iter().fold(0u8, |a, &x| a.wrapping_add(x));
            b.extend(body);
            b.push(cs);
        }
        b.push(PACKAGE_END);
        b
    }

    fn fix(lat: f32, lon: f32) -> Vec<u8> {
        let mut d = vec![0x03];
        d.extend(lat.to_le_bytes());
        d.push(0x04);
        d.extend(lon.to_le_bytes());
        d.extend([0x05, 84, 2, 0x78, 30]); // 168°, 20 m, 8 GPS + 7 GLONASS, 30 kn
        d.extend([0x09, 0, 0xF0, 0xC5, 0x21]);
        d
    }

    #[test]
    fn a_header_is_a_login_and_is_answered_with_the_server_time() {
        let mut h = vec![HEADER, 0x23];
        h.extend(860_906_040_000_123u64.to_le_bytes());
        let d = parse(&h, None, 0x5F17_A300).unwrap();
        assert_eq!(d.imei.as_deref(), Some("860906040000123"));
        assert_eq!(
            d.ack,
            [0x7B, 0x04, 0x00, 0x19, 0x00, 0xA3, 0x17, 0x5F, 0x7D]
        );
        h[1] = 0x22;
        assert_eq!(parse(&h, None, 0).unwrap().ack, [0x7B, 0x00, 0x00, 0x7D]);
        // Version 24 carries eight more bytes.
        h[1] = 0x24;
        assert_eq!(scan(&h), Scan::Incomplete);
        h.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(scan(&h), Scan::Message(18));
    }

    #[test]
    fn a_package_gives_each_fix_and_is_answered_with_its_number() {
        let b = package_of(
            0x2A,
            &[
                (0x01, 1_499_404_195, fix(45.055_97, 39.033_47)),
                (0x00, 1_499_404_196, vec![]),
                (0x01, 1_499_404_200, fix(-1.5, -2.5)),
            ],
        );
        assert_eq!(scan(&b), Scan::Message(b.len()));
        let d = parse(&b, Some("860906040000123"), 0).unwrap();
        assert_eq!(d.ack, [0x7B, 0x00, 0x2A, 0x7D]);
        assert_eq!(d.integrity, None);
        let fixes: Vec<_> = d.readings.iter().filter_map(Reading::position).collect();
        assert_eq!(fixes.len(), 2);
        let f = fixes[0];
        assert_eq!(f.time.unwrap().unix_timestamp(), 1_499_404_195);
        assert!((f.lat - 45.05597).abs() < 1e-5 && (f.lon - 39.03347).abs() < 1e-5);
        assert_eq!(
            (f.course, f.altitude, f.satellites),
            (Some(168.0), Some(20.0), Some(15))
        );
        assert!((f.speed.unwrap() - 55.56).abs() < 1e-9);
        assert!(f.valid);
        assert_eq!(f.device.as_deref(), Some("860906040000123"));
        assert!(fixes[1].lat < 0.0 && fixes[1].lon < 0.0);
    }

    #[test]
    fn a_wrong_checksum_is_read_but_flagged_and_a_cut_package_waits() {
        let mut b = package_of(1, &[(0x01, 1_499_404_195, fix(45.0, 39.0))]);
        let n = b.len();
        b[n - 2] ^= 0xFF;
        let d = parse(&b, None, 0).unwrap();
        assert!(d.integrity.unwrap().contains("checksum"));
        assert_eq!(d.readings.len(), 1);
        assert_eq!(scan(&b[..n - 1]), Scan::Incomplete);
        assert_eq!(scan(&b[..5]), Scan::Incomplete);
        assert!(matches!(
            scan(b"\x00\x01"),
            Scan::Skip(1, ArnaviError::Start(0))
        ));
    }

    #[test]
    fn a_cell_tower_position_is_not_a_valid_fix() {
        let mut d = fix(45.0, 39.0);
        d[13] = 0xFE; // satellites byte of tag 05
        let b = package_of(1, &[(0x01, 1, d)]);
        let p = parse(&b, None, 0).unwrap();
        assert!(!p.readings[0].position().unwrap().valid);
    }

    fn with_checksum(body: &str) -> String {
        let cs = body.bytes().fold(0u8, |a, b| a ^ b);
        format!("${body}*{cs:02X}\r\n")
    }

    #[test]
    fn text_lines_of_each_version_give_their_position() {
        let v4 = with_checksum(
            "AV,V4,85164,20451,1146,418,-1,1,1,192,0,0,0,0,1,9,412.5,-34.0,104340,4314.3369N,07653.3825E,12.0,270.5,060219,11,0,32767,,SF",
        );
        let d = parse(v4.as_bytes(), None, 0).unwrap();
        assert_eq!(d.integrity, None);
        assert!(d.ack.is_empty());
        let p = d.readings[0].position().unwrap();
        assert_eq!(p.device.as_deref(), Some("85164"));
        assert!((p.lat - (43.0 + 14.3369 / 60.0)).abs() < 1e-9);
        assert!((p.lon - (76.0 + 53.3825 / 60.0)).abs() < 1e-9);
        assert_eq!(
            (p.satellites, p.altitude, p.course),
            (Some(9), Some(412.5), Some(270.5))
        );
        assert!(p.valid);
        assert_eq!(
            p.time.unwrap(),
            time::macros::datetime!(2019-02-06 10:43:40 UTC)
        );
        let v2 = with_checksum(
            "AV,V2,32768,12487,2277,203,-1,0,0,193,0,0,1,13,200741,5950.6773S,03029.1043W,0.0,0.0,121012,",
        );
        let p = parse(v2.as_bytes(), None, 0).unwrap().readings[0]
            .position()
            .unwrap()
            .clone();
        assert!(p.lat < -59.0 && p.lon < -30.0 && p.valid);
        assert_eq!(p.satellites, Some(13));
        // No fix: read, but not valid.
        let nofix = with_checksum(
            "AV,V4,85164,20709,1148,418,-1,0,1,192,0,0,0,0,0,0,,,000023,0000.0000N,00000.0000E,0.0,0.0,060180,0,0,32767,",
        );
        assert!(
            !parse(nofix.as_bytes(), None, 0).unwrap().readings[0]
                .position()
                .unwrap()
                .valid
        );
    }

    #[test]
    fn a_status_line_is_text_and_a_bad_checksum_is_flagged() {
        let s = with_checksum("AV,V6SD,85164,20708,-1,3,6,37,33,");
        let d = parse(s.as_bytes(), None, 0).unwrap();
        assert!(matches!(&d.readings[..], [Reading::Message(m)] if m.source == "status"));
        let bad = s.replace("*", "0*");
        assert!(parse(bad.as_bytes(), None, 0).unwrap().integrity.is_some());
        assert!(parse(b"$AV,V2,1,2*00\n", None, 0).is_err());
    }
}
