//! Galileosky tracker protocol over TCP: tagged records with a CRC-16/MODBUS, and the Iridium
//! SBD form the same devices send through a satellite gateway.
//!
//! ## Main packet
//! ```text
//! 01 │ length u16 LE │ tags … │ CRC-16/MODBUS LE
//!      bit 15: the device's archive holds more    CRC of every byte before it
//! server answers:  02 │ the packet's two CRC bytes, as received
//! ```
//! A tag is one byte and a value whose size the tag fixes ([`tag_len`]); only `E1` (a reply to
//! a command: u8 length, ASCII), `EA` (user array: u8 length, bytes) and `FE` (extended tags:
//! u16 LE length, bytes) carry their own length. Values are little-endian. A packet holds one
//! or more records back to back; a tag seen a second time starts the next record (records list
//! their tags in ascending order). The IMEI (tag `03`) comes in the first packet of a
//! connection and is kept for the packets that follow.
//!
//! ## Iridium SBD (DirectIP mobile-originated message)
//! ```text
//! 01 │ length u16 BE │ 01 00 1C MO header (CDR u32, IMEI 15, status, MOMSN, MTMSN, time u32 BE)
//!                    │ 03 00 0B MO location (flags, lat °, lat 1/1000′ u16, lon °, lon 1/1000′ u16, CEP km u32)
//!                    │ 02 len   payload: Galileosky tags
//! ```
//! Nothing is answered to the gateway. The location comes from the satellite system (accuracy
//! CEP, kilometres), so it is never a valid GNSS fix unless the payload holds tag `30`.
//!
//! A packet whose CRC fails is still read (structure first, as Traccar reads it) but reported
//! in [`Packet::integrity`] and never acknowledged, so the device sends it again. A tag this
//! table does not know makes the rest of the packet unreadable: the packet is refused whole.
//! Compressed (`08`) and photo (`07`) packets are cut from the stream and refused.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::crc::crc16_modbus;
use crate::reading::{Login, Message, Position, Reading, Telemetry};

/// The largest main packet: a 15-bit length plus header and CRC.
pub const MAX_PACKET: usize = 3 + 0x7FFF + 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GalileoError {
    #[error("packet header 0x{0:02x} is neither 01 (data) nor 07/08 (photo, compressed)")]
    Header(u8),
    #[error(
        "{0} packets (header 0x{1:02x}) are not accepted; set the device to the main protocol"
    )]
    Unsupported(&'static str, u8),
    #[error("unknown tag 0x{tag:02x} at byte {at}: the rest of the packet cannot be read")]
    UnknownTag { tag: u8, at: usize },
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("{0} bytes after the packet")]
    Trailing(usize),
    #[error("IMEI is not 15 ASCII digits")]
    BadImei,
}

/// What was found at the start of a stream buffer.
#[derive(Debug, PartialEq)]
pub enum Scan {
    /// A packet (main, compressed, photo or Iridium) of this many bytes.
    Packet(usize),
    Incomplete,
    /// Drop this many bytes and look again.
    Skip(usize, GalileoError),
}

/// Whether a packet starting `01` is an Iridium SBD message: its first information element is
/// the 28-byte MO header.
fn is_iridium(buf: &[u8]) -> bool {
    buf.len() >= 6 && buf[0] == 0x01 && buf[3..6] == [0x01, 0x00, 0x1C]
}

/// Cuts the next packet from a TCP stream.
pub fn scan(buf: &[u8]) -> Scan {
    let Some(&header) = buf.first() else {
        return Scan::Incomplete;
    };
    if !matches!(header, 0x01 | 0x07 | 0x08) {
        return Scan::Skip(1, GalileoError::Header(header));
    }
    if buf.len() < 6 {
        return Scan::Incomplete;
    }
    let total = if is_iridium(buf) {
        3 + u16::from_be_bytes([buf[1], buf[2]]) as usize
    } else {
        3 + (u16::from_le_bytes([buf[1], buf[2]]) & 0x7FFF) as usize + 2
    };
    if buf.len() < total {
        return Scan::Incomplete;
    }
    Scan::Packet(total)
}

/// One decoded packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// The IMEI the packet carried, if it carried one.
    pub imei: Option<String>,
    pub readings: Vec<Reading>,
    /// The answer to send once the readings are accepted (none for Iridium).
    pub ack: Vec<u8>,
    /// Why the packet must not be acknowledged although it decoded (CRC).
    pub integrity: Option<String>,
}

/// The size of a tag's value, for the tags with a fixed size.
pub fn tag_len(tag: u8) -> Option<usize> {
    Some(match tag {
        0x01 | 0x02 | 0x35 | 0x43 | 0x49 | 0x88..=0x8C | 0xA0..=0xAF | 0xC4..=0xD2 | 0xD5 => 1,
        0x04
        | 0x10
        | 0x21
        | 0x34
        | 0x40..=0x42
        | 0x45
        | 0x46
        | 0x48
        | 0x50..=0x59
        | 0x60..=0x62
        | 0x70..=0x79
        | 0xB0..=0xB9
        | 0xD6..=0xDA => 2,
        0x5D | 0x63..=0x6F | 0x80..=0x87 | 0xFA => 3,
        0x20
        | 0x33
        | 0x44
        | 0x47
        | 0x5A
        | 0x90
        | 0xC0..=0xC3
        | 0xD3
        | 0xD4
        | 0xDB..=0xDF
        | 0xE0
        | 0xE2..=0xE9
        | 0xF0..=0xF9 => 4,
        0x5B => 7,
        0xFD => 8,
        0x03 => 15,
        0x30 => 9,
        0x5C => 68,
        _ => return None,
    })
}

/// Decodes one packet. `device` is the IMEI the connection already knows (from an earlier
/// packet), used for records of a packet that does not repeat it.
pub fn parse(buf: &[u8], device: Option<&str>) -> Result<Packet, GalileoError> {
    match scan(buf) {
        Scan::Packet(n) if n == buf.len() => {}
        Scan::Packet(n) => return Err(GalileoError::Trailing(buf.len() - n)),
        Scan::Incomplete => return Err(GalileoError::Truncated("packet")),
        Scan::Skip(_, e) => return Err(e),
    }
    match buf[0] {
        0x07 => return Err(GalileoError::Unsupported("photo", 0x07)),
        0x08 => return Err(GalileoError::Unsupported("compressed", 0x08)),
        _ => {}
    }
    if is_iridium(buf) {
        return iridium(buf);
    }
    let body = &buf[3..buf.len() - 2];
    let stated = u16::from_le_bytes([buf[buf.len() - 2], buf[buf.len() - 1]]);
    let computed = crc16_modbus(&buf[..buf.len() - 2]);
    let integrity = (stated != computed)
        .then(|| format!("CRC mismatch: packet says {stated:04x}, bytes give {computed:04x}"));
    let records = records(body, 3)?;
    let imei = records.iter().find_map(|r| r.imei.clone());
    let device = imei.clone().or_else(|| device.map(str::to_string));
    let readings = records
        .into_iter()
        .filter_map(|r| r.reading(&device, "galileosky", None))
        .collect();
    Ok(Packet {
        imei,
        readings,
        ack: vec![0x02, buf[buf.len() - 2], buf[buf.len() - 1]],
        integrity,
    })
}

/// The tags of one record, as read.
#[derive(Default)]
struct Record {
    imei: Option<String>,
    time: Option<OffsetDateTime>,
    /// (valid, satellites, lat, lon) from tag 30.
    fix: Option<(bool, u16, f64, f64)>,
    speed: Option<f64>,
    course: Option<f64>,
    altitude: Option<f64>,
    hdop: Option<f64>,
    reply: Option<String>,
    attributes: BTreeMap<String, Value>,
}

impl Record {
    fn is_empty(&self) -> bool {
        self.imei.is_none()
            && self.time.is_none()
            && self.fix.is_none()
            && self.reply.is_none()
            && self.attributes.is_empty()
    }

    /// `fallback`: a location from outside the tags (Iridium), used when there is no tag 30.
    fn reading(
        self,
        device: &Option<String>,
        source: &'static str,
        fallback: Option<(OffsetDateTime, f64, f64)>,
    ) -> Option<Reading> {
        if let Some(text) = self.reply {
            return Some(Reading::Message(Message {
                source: "reply",
                device: device.clone(),
                text,
            }));
        }
        let (valid, satellites, lat, lon) = match (self.fix, fallback) {
            (Some((v, s, lat, lon)), _) => (v, Some(s), lat, lon),
            (None, Some((_, lat, lon))) => (false, None, lat, lon),
            (None, None) if self.time.is_none() && self.imei.is_some() => {
                // The head packet a device sends first on a connection: who it is.
                return Some(Reading::Login(Login {
                    device: self.imei.unwrap_or_default(),
                    protocol_version: None,
                    attributes: self.attributes,
                }));
            }
            (None, None) => {
                // A record without coordinates (sensor values only): telemetry, unless it says
                // nothing at all.
                if self.attributes.is_empty() && self.time.is_none() {
                    return None;
                }
                return Some(Reading::Telemetry(Telemetry {
                    device: device.clone(),
                    source,
                    time: self.time,
                    seal: None,
                    attributes: self.attributes,
                }));
            }
        };
        let time = self.time.or(fallback.map(|f| f.0));
        Some(Reading::Position(Position {
            device: device.clone(),
            source,
            time,
            lat,
            lon,
            valid: valid && lat.abs() <= 90.0 && lon.abs() <= 180.0,
            speed: self.speed,
            course: self.course,
            altitude: self.altitude,
            satellites,
            hdop: self.hdop,
            attributes: self.attributes,
            ..Position::default()
        }))
    }
}

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |a, &x| a << 8 | x as u64)
}

/// Reads the tags of `body` into records. `base` is the offset of `body` in the packet, for
/// error messages.
fn records(body: &[u8], base: usize) -> Result<Vec<Record>, GalileoError> {
    let mut out = Vec::new();
    let mut rec = Record::default();
    let mut seen = [false; 256];
    let mut i = 0;
    while i < body.len() {
        let tag = body[i];
        let at = base + i;
        i += 1;
        if seen[tag as usize] {
            out.push(std::mem::take(&mut rec));
            seen = [false; 256];
        }
        seen[tag as usize] = true;
        let len = match tag {
            0xE1 | 0xEA => 1 + *body.get(i).ok_or(GalileoError::Truncated("tag length"))? as usize,
            0xFE => {
                let n = body
                    .get(i..i + 2)
                    .ok_or(GalileoError::Truncated("tag length"))?;
                2 + u16::from_le_bytes([n[0], n[1]]) as usize
            }
            t => tag_len(t).ok_or(GalileoError::UnknownTag { tag, at })?,
        };
        let v = body
            .get(i..i + len)
            .ok_or(GalileoError::Truncated("tag value"))?;
        i += len;
        match tag {
            0x03 => {
                if !v.iter().all(u8::is_ascii_digit) {
                    return Err(GalileoError::BadImei);
                }
                rec.imei = Some(String::from_utf8_lossy(v).into_owned());
            }
            0x20 => rec.time = OffsetDateTime::from_unix_timestamp(le(v) as i64).ok(),
            0x30 => {
                // High nibble: 0 = a valid GNSS fix (2 = from cell towers); low nibble: satellites.
                let lat = i32::from_le_bytes([v[1], v[2], v[3], v[4]]) as f64 / 1e6;
                let lon = i32::from_le_bytes([v[5], v[6], v[7], v[8]]) as f64 / 1e6;
                rec.fix = Some((v[0] >> 4 == 0, (v[0] & 0x0F) as u16, lat, lon));
            }
            0x33 => {
                rec.speed = Some(le(&v[..2]) as f64 / 10.0);
                rec.course = Some(le(&v[2..]) as f64 / 10.0);
            }
            0x34 => rec.altitude = Some(i16::from_le_bytes([v[0], v[1]]) as f64),
            0x35 => rec.hdop = Some(v[0] as f64 / 10.0),
            0xE1 => rec.reply = Some(String::from_utf8_lossy(&v[1..]).trim().to_string()),
            0x41 => {
                rec.attributes
                    .insert("power_v".into(), json!(le(v) as f64 / 1000.0));
            }
            0x42 => {
                rec.attributes
                    .insert("battery_v".into(), json!(le(v) as f64 / 1000.0));
            }
            0x43 => {
                rec.attributes
                    .insert("device_temp_c".into(), json!(v[0] as i8));
            }
            _ => {
                let value = if len <= 8 {
                    json!(le(v))
                } else {
                    json!(crate::reading::hex(v))
                };
                rec.attributes.insert(format!("tag_{tag:02x}"), value);
            }
        }
    }
    if !rec.is_empty() {
        out.push(rec);
    }
    Ok(out)
}

/// An Iridium SBD mobile-originated message carrying Galileosky tags.
fn iridium(buf: &[u8]) -> Result<Packet, GalileoError> {
    let mut i = 3;
    let (mut imei, mut fallback_time, mut location, mut payload) = (None, None, None, None);
    while i < buf.len() {
        let ie = buf
            .get(i..i + 3)
            .ok_or(GalileoError::Truncated("Iridium element"))?;
        let len = u16::from_be_bytes([ie[1], ie[2]]) as usize;
        let v = buf
            .get(i + 3..i + 3 + len)
            .ok_or(GalileoError::Truncated("Iridium element"))?;
        match ie[0] {
            0x01 if len >= 28 => {
                let id = &v[4..19];
                if !id.iter().all(u8::is_ascii_digit) {
                    return Err(GalileoError::BadImei);
                }
                imei = Some(String::from_utf8_lossy(id).into_owned());
                let t = u32::from_be_bytes([v[24], v[25], v[26], v[27]]);
                fallback_time = OffsetDateTime::from_unix_timestamp(t as i64).ok();
            }
            0x03 if len >= 7 => {
                // Degrees and thousandths of a minute; flag bit 1 = south, bit 0 = west.
                let flags = v[0];
                let lat = v[1] as f64 + u16::from_be_bytes([v[2], v[3]]) as f64 / 60_000.0;
                let lon = v[4] as f64 + u16::from_be_bytes([v[5], v[6]]) as f64 / 60_000.0;
                let lat = if flags & 0x02 != 0 { -lat } else { lat };
                let lon = if flags & 0x01 != 0 { -lon } else { lon };
                let cep = v
                    .get(7..11)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                location = Some((lat, lon, cep));
            }
            0x02 => payload = Some((v, i + 3)),
            _ => {} // MO confirmation and elements we do not use
        }
        i += 3 + len;
    }
    let device = imei.clone();
    let mut readings = Vec::new();
    if let Some((data, at)) = payload {
        for mut r in records(data, at)? {
            let fallback = match (fallback_time, location) {
                (Some(t), Some((lat, lon, cep))) => {
                    if let Some(cep) = cep {
                        r.attributes.insert("iridium_cep_km".into(), json!(cep));
                    }
                    Some((t, lat, lon))
                }
                _ => None,
            };
            readings.extend(r.reading(&device, "galileosky_iridium", fallback));
        }
    }
    if readings.is_empty() {
        if let (Some(t), Some((lat, lon, _))) = (fallback_time, location) {
            readings.push(Reading::Position(Position {
                device: device.clone(),
                source: "galileosky_iridium",
                time: Some(t),
                lat,
                lon,
                valid: false,
                ..Position::default()
            }));
        }
    }
    Ok(Packet {
        imei,
        readings,
        ack: Vec::new(),
        integrity: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a main packet around `tags` with a correct CRC.
    fn packet(tags: &[u8]) -> Vec<u8> {
        let mut b = vec![0x01];
        b.extend((tags.len() as u16).to_le_bytes());
        b.extend(tags);
        let crc = crc16_modbus(&b);
        b.extend(crc.to_le_bytes());
        b
    }

    fn record(index: u16, time: u32, lat: i32, lon: i32) -> Vec<u8> {
        let mut t = vec![0x10];
        t.extend(index.to_le_bytes());
        t.push(0x20);
        t.extend(time.to_le_bytes());
        t.extend([0x30, 0x09]); // valid, 9 satellites
        t.extend(lat.to_le_bytes());
        t.extend(lon.to_le_bytes());
        t.push(0x33);
        t.extend(725u16.to_le_bytes()); // 72.5 km/h
        t.extend(1800u16.to_le_bytes()); // 180.0°
        t
    }

    #[test]
    fn a_head_packet_then_records_decode_field_by_field_and_the_ack_echoes_the_crc() {
        let mut head = vec![0x01, 0x82, 0x02, 0x17, 0x03];
        head.extend(b"868204001549087");
        head.extend([0x04, 0x32, 0x00]);
        let p = parse(&packet(&head), None).unwrap();
        assert_eq!(p.imei.as_deref(), Some("868204001549087"));
        assert!(
            matches!(&p.readings[..], [Reading::Login(l)] if l.device == "868204001549087"),
            "{:?}",
            p.readings
        );
        let mut tags = record(7, 1_700_000_000, 43_238_949, 76_889_709);
        tags.extend(record(8, 1_700_000_030, -33_734_600, -69_297_400));
        let b = packet(&tags);
        let p = parse(&b, Some("868204001549087")).unwrap();
        assert_eq!(p.integrity, None);
        assert_eq!(p.ack, [0x02, b[b.len() - 2], b[b.len() - 1]]);
        let fixes: Vec<_> = p.readings.iter().filter_map(Reading::position).collect();
        assert_eq!(fixes.len(), 2);
        let f = fixes[0];
        assert_eq!(f.device.as_deref(), Some("868204001549087"));
        assert_eq!(f.time.unwrap().unix_timestamp(), 1_700_000_000);
        assert!((f.lat - 43.238949).abs() < 1e-9 && (f.lon - 76.889709).abs() < 1e-9);
        assert_eq!(
            (f.speed, f.course, f.satellites),
            (Some(72.5), Some(180.0), Some(9))
        );
        assert!(f.valid);
        assert!(fixes[1].lat < 0.0 && fixes[1].lon < 0.0);
        assert_eq!(f.attributes["tag_10"], json!(7));
    }

    #[test]
    fn a_bad_crc_is_read_but_flagged_and_an_unknown_tag_refuses_the_packet() {
        let mut b = packet(&record(1, 1_700_000_000, 1, 2));
        let n = b.len();
        b[n - 1] ^= 0x55;
        let p = parse(&b, None).unwrap();
        assert!(p.integrity.unwrap().contains("CRC mismatch"));
        assert_eq!(p.readings.len(), 1);
        let mut tags = record(1, 1_700_000_000, 1, 2);
        let at = 3 + tags.len();
        tags.extend([0x0B, 0x00]); // no such tag
        assert_eq!(
            parse(&packet(&tags), None),
            Err(GalileoError::UnknownTag { tag: 0x0B, at })
        );
    }

    #[test]
    fn a_command_reply_is_a_message_and_a_cell_tower_fix_is_not_valid() {
        let mut tags = vec![0xE0, 1, 0, 0, 0, 0xE1, 5];
        tags.extend(b"OK 42");
        let p = parse(&packet(&tags), Some("1")).unwrap();
        assert_eq!(
            p.readings,
            vec![Reading::Message(Message {
                source: "reply",
                device: Some("1".into()),
                text: "OK 42".into()
            })]
        );
        let mut tags = record(1, 1_700_000_000, 1, 2);
        tags[9] = 0x20; // tag 30's first byte: source = cell towers, 0 satellites
        let p = parse(&packet(&tags), None).unwrap();
        assert!(!p.readings[0].position().unwrap().valid);
    }

    #[test]
    fn the_stream_is_cut_at_packet_boundaries_and_garbage_is_skipped() {
        let a = packet(&record(1, 1, 1, 1));
        let mut s = vec![0x55, 0xAA];
        s.extend(&a);
        assert!(matches!(
            scan(&s),
            Scan::Skip(1, GalileoError::Header(0x55))
        ));
        assert_eq!(scan(&s[2..]), Scan::Packet(a.len()));
        assert_eq!(scan(&a[..a.len() - 1]), Scan::Incomplete);
        // The archive flag (bit 15 of the length) is not part of the length.
        let mut flagged = a.clone();
        flagged[2] |= 0x80;
        assert_eq!(scan(&flagged), Scan::Packet(a.len()));
    }

    #[test]
    fn an_iridium_message_gives_the_satellite_location_as_an_invalid_fix() {
        let mut m = vec![0x01, 0x00, 0x00];
        m.extend([0x01, 0x00, 0x1C, 0, 0, 0, 1]);
        m.extend(b"300234069604590");
        m.extend([0x02, 0x00, 0x21, 0x00, 0x00]);
        m.extend(1_674_680_860u32.to_be_bytes());
        m.extend([0x03, 0x00, 0x0B, 0x03, 33]);
        m.extend(44_076u16.to_be_bytes());
        m.push(69);
        m.extend(17_842u16.to_be_bytes());
        m.extend(159u32.to_be_bytes());
        m.extend([0x02, 0x00, 0x05, 0xC2, 1, 0, 0, 0]);
        let len = (m.len() - 3) as u16;
        m[1..3].copy_from_slice(&len.to_be_bytes());
        let p = parse(&m, None).unwrap();
        assert!(p.ack.is_empty());
        let f = p.readings[0].position().unwrap();
        assert_eq!(f.device.as_deref(), Some("300234069604590"));
        assert!((f.lat + 33.7346).abs() < 1e-4 && (f.lon + 69.297_366).abs() < 1e-4);
        assert!(!f.valid);
        assert_eq!(f.time.unwrap().unix_timestamp(), 1_674_680_860);
        assert_eq!(f.attributes["iridium_cep_km"], json!(159));
    }
}
