//! Teltonika AVL protocol: Codec 8, 8 Extended and 16 (plus GH3000's Codec 7 and the text
//! Codecs 12/13/14), over TCP and UDP.
//!
//! ## TCP
//! ```text
//! IMEI handshake:  00 0F  "356307042441013"        server answers 01 (accept) or 00
//! AVL packet:      00 00 00 00 │ len u32 │ codec │ N1 │ records … │ N2 │ CRC u32
//!                  preamble      codec…N2  8/8E/16  count            count  CRC-16/IBM of codec…N2
//!                                                                           (low 2 bytes)
//! server answers:  N u32 (the number of records accepted)
//! ```
//! ## UDP
//! ```text
//! len u16 │ packet id u16 │ 01 │ AVL packet id u8 │ IMEI len u16 │ IMEI │ codec │ N1 │ records │ N2
//! server answers:  00 05 │ packet id │ 01 │ AVL packet id │ N
//! ```
//! ## Record (Codec 8; 8E widens IO ids and counts to u16 and adds variable-length IO;
//! 16 has u16 ids, u8 counts and a generation type)
//! ```text
//! timestamp u64 ms │ priority │ lon i32 │ lat i32 (×10⁻⁷ °) │ alt i16 m │ angle u16 │ sats u8 │ speed u16 km/h
//! │ event IO id │ total IO │ N1 × (id, u8) │ N2 × (id, u16) │ N4 × (id, u32) │ N8 × (id, u64)
//! ```
//! The records are read by their structure, as Traccar reads them; then counts, length and CRC
//! are checked against the bytes. A record count that disagrees refuses the packet; a length
//! field or CRC that disagrees (or a CRC cut short, as in captures) leaves the records readable
//! but the packet is never acknowledged, so the device sends it again. After the handshake a
//! lone `FF` byte is the device's keep-alive: a heartbeat, not noise, and not answered.

use std::collections::BTreeMap;

use serde_json::json;
use time::OffsetDateTime;

use crate::crc::crc16_arc;
use crate::reading::{hex, Heartbeat, Login, Message, Position, Reading};

/// The largest AVL packet accepted. Devices send at most a few KiB of records; Codec 12/13
/// camera and file transfers can be larger, so leave room without letting a garbage length
/// claim gigabytes.
pub const MAX_PACKET: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TeltonikaError {
    #[error("IMEI packet is not 15–17 ASCII digits")]
    BadImei,
    #[error("no 00000000 preamble")]
    Preamble,
    #[error("data length {0} exceeds {MAX_PACKET}")]
    TooLong(usize),
    #[error("CRC mismatch: packet says {stated:04x}, bytes give {computed:04x}")]
    Crc { stated: u32, computed: u16 },
    #[error("codec 0x{0:02x} not supported")]
    Codec(u8),
    #[error("record counts disagree: {0} at the start, {1} at the end")]
    Counts(u8, u8),
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("{0} bytes left after the last record")]
    Trailing(usize),
    #[error("not a Teltonika packet (neither IMEI, TCP AVL nor UDP AVL)")]
    Unrecognised,
}

/// What was found at the start of a TCP stream buffer.
#[derive(Debug, PartialEq)]
pub enum Scan {
    /// An IMEI handshake of this many bytes.
    Imei(usize),
    /// An AVL packet of this many bytes.
    Avl(usize),
    /// The one-byte `FF` keep-alive devices send over an idle TCP connection (not answered).
    KeepAlive,
    Incomplete,
    /// Drop this many bytes and look again.
    Skip(usize, TeltonikaError),
}

/// The keep-alive byte: FMB/FMC devices send it alone between AVL packets to hold the
/// connection open through NAT; it is never the first byte of a packet (the preamble is zero).
pub const KEEP_ALIVE: u8 = 0xFF;

/// Cuts the next frame from a TCP stream. Before the handshake only an IMEI is valid, after it
/// only AVL packets.
pub fn scan(buf: &[u8], handshaken: bool) -> Scan {
    if !handshaken {
        if buf.len() < 2 {
            return Scan::Incomplete;
        }
        let n = u16::from_be_bytes([buf[0], buf[1]]) as usize;
        if !(15..=17).contains(&n) {
            // Skip to the next place a handshake could start (00 0F…00 11), in one step: a
            // burst of garbage costs one error, not one per byte.
            let next = buf[1..]
                .windows(2)
                .position(|w| w[0] == 0 && (15..=17).contains(&w[1]))
                .map_or(buf.len() - 1, |p| p + 1);
            return Scan::Skip(next.max(1), TeltonikaError::BadImei);
        }
        if buf.len() < 2 + n {
            return Scan::Incomplete;
        }
        if !buf[2..2 + n].iter().all(u8::is_ascii_digit) {
            return Scan::Skip(1, TeltonikaError::BadImei);
        }
        return Scan::Imei(2 + n);
    }
    if buf[0] == KEEP_ALIVE {
        return Scan::KeepAlive;
    }
    // Resynchronise on the next run of four zero bytes.
    let zeros = buf.iter().take_while(|&&b| b == 0).count();
    if zeros < 4 {
        if zeros == buf.len() {
            return Scan::Incomplete;
        }
        let next = buf
            .windows(4)
            .position(|w| w == [0, 0, 0, 0])
            .unwrap_or(buf.len().saturating_sub(3));
        return Scan::Skip(next.max(1), TeltonikaError::Preamble);
    }
    if buf.len() < 8 {
        return Scan::Incomplete;
    }
    let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if len == 0 || len > MAX_PACKET {
        return Scan::Skip(1, TeltonikaError::TooLong(len));
    }
    let total = 8 + len + 4;
    if buf.len() < total {
        return Scan::Incomplete;
    }
    Scan::Avl(total)
}

/// Decodes the IMEI handshake.
pub fn parse_imei(buf: &[u8]) -> Result<String, TeltonikaError> {
    match scan(buf, false) {
        Scan::Imei(n) if n == buf.len() => Ok(String::from_utf8_lossy(&buf[2..]).into_owned()),
        _ => Err(TeltonikaError::BadImei),
    }
}

/// One AVL data packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Avl {
    pub codec: u8,
    /// How many records the packet declared (what the server acknowledges).
    pub count: u8,
    pub readings: Vec<Reading>,
    /// Why the packet must not be acknowledged although its records decoded (CRC or length).
    pub integrity: Option<String>,
}

/// A UDP datagram.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpAvl {
    pub packet_id: u16,
    pub avl_packet_id: u8,
    pub imei: String,
    pub avl: Avl,
}

struct Rd<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TeltonikaError> {
        if self.b.len() < n {
            return Err(TeltonikaError::Truncated(self.what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, TeltonikaError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, TeltonikaError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, TeltonikaError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn uint(&mut self, n: usize) -> Result<u64, TeltonikaError> {
        Ok(self.take(n)?.iter().fold(0u64, |a, &b| a << 8 | b as u64))
    }
}

/// Decodes a TCP AVL packet (preamble, length, data, CRC). The records are decoded by their
/// own structure; a CRC that does not match, or a length field that disagrees with the packet,
/// is reported in [`Avl::integrity`] and the transport does not acknowledge such a packet (the
/// device sends it again). Traccar's test captures include packets edited by hand whose CRC was
/// never recomputed, which is why this is a finding and not a refusal to read.
pub fn parse_avl(buf: &[u8], imei: Option<&str>) -> Result<Avl, TeltonikaError> {
    if buf.len() < 4 || buf[..4] != [0, 0, 0, 0] {
        return Err(TeltonikaError::Preamble);
    }
    if buf.len() < 8 + 2 + 4 {
        return Err(TeltonikaError::Truncated("packet"));
    }
    if buf.len() > 8 + MAX_PACKET + 4 {
        return Err(TeltonikaError::TooLong(buf.len()));
    }
    let declared = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    // Where the records end is decided by their structure, as Traccar reads them: first the
    // layout of a whole packet (data, then a four-byte CRC), then the end the length field
    // gives, which is what a packet cut short inside its CRC still has right. Either way a
    // length or CRC that disagrees is an integrity finding, never a silent acceptance.
    let whole = buf.len() - 4;
    let (mut avl, end) = match parse_data(&buf[8..whole], imei) {
        Ok(avl) => (avl, whole),
        Err(first) => {
            let end = 8 + declared;
            if declared < 2 || end == whole || end > buf.len() {
                return Err(first);
            }
            (parse_data(&buf[8..end], imei).map_err(|_| first)?, end)
        }
    };
    let data = &buf[8..end];
    let mut problems = Vec::new();
    if declared != data.len() {
        problems.push(format!(
            "length field says {declared}, packet has {}",
            data.len()
        ));
    }
    let crc = &buf[end..];
    if crc.len() != 4 {
        problems.push(format!("CRC field has {} bytes, not 4", crc.len()));
    } else {
        let stated = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = crc16_arc(data);
        if stated != computed as u32 {
            problems.push(TeltonikaError::Crc { stated, computed }.to_string());
        }
    }
    problems.extend(avl.integrity.take());
    avl.integrity = (!problems.is_empty()).then(|| problems.join("; "));
    Ok(avl)
}

/// Decodes a UDP datagram.
pub fn parse_udp(buf: &[u8]) -> Result<UdpAvl, TeltonikaError> {
    let mut r = Rd {
        b: buf,
        what: "UDP header",
    };
    let len = r.u16()? as usize;
    if len != buf.len() - 2 {
        return Err(TeltonikaError::Unrecognised);
    }
    let packet_id = r.u16()?;
    let _packet_type = r.u8()?;
    let avl_packet_id = r.u8()?;
    let imei_len = r.u16()? as usize;
    let imei = r.take(imei_len)?;
    if !(15..=17).contains(&imei_len) || !imei.iter().all(u8::is_ascii_digit) {
        return Err(TeltonikaError::BadImei);
    }
    let imei = String::from_utf8_lossy(imei).into_owned();
    let avl = parse_data(r.b, Some(&imei))?;
    Ok(UdpAvl {
        packet_id,
        avl_packet_id,
        imei,
        avl,
    })
}

/// The UDP acknowledgement for a datagram.
pub fn udp_ack(p: &UdpAvl, accepted: u8) -> [u8; 7] {
    let id = p.packet_id.to_be_bytes();
    [0x00, 0x05, id[0], id[1], 0x01, p.avl_packet_id, accepted]
}

/// The TCP acknowledgement: the number of records accepted.
pub fn tcp_ack(accepted: u8) -> [u8; 4] {
    (accepted as u32).to_be_bytes()
}

/// Codec id, N1, records, N2.
fn parse_data(data: &[u8], imei: Option<&str>) -> Result<Avl, TeltonikaError> {
    let mut r = Rd {
        b: data,
        what: "codec header",
    };
    let codec = r.u8()?;
    let count = r.u8()?;
    let device = imei.map(str::to_string);
    let mut readings = Vec::with_capacity(count as usize);
    let mut integrity = None;
    match codec {
        0x08 | 0x8E | 0x10 => {
            // Some firmware adds a group of 16-byte IO values after the 8-byte group (Traccar
            // calls this the "extended" variant). The packet does not say which it is, so try
            // the standard layout and fall back when it does not fit the bytes exactly.
            let start = r.b;
            let parse = |r: &mut Rd, ext16: bool| -> Result<Vec<Reading>, TeltonikaError> {
                let mut v = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    v.push(record(r, codec, &device, ext16)?);
                }
                if r.b.len() != 1 {
                    return Err(TeltonikaError::Trailing(r.b.len().saturating_sub(1)));
                }
                Ok(v)
            };
            match parse(&mut r, false) {
                Ok(v) => readings = v,
                Err(first) => {
                    r.b = start;
                    readings = parse(&mut r, true).map_err(|_| first)?;
                }
            }
        }
        0x07 => {
            for _ in 0..count {
                if let Some(p) = gh3000_record(&mut r, &device)? {
                    readings.push(p);
                }
            }
        }
        0x0C..=0x0E if count == 1 && r.b.len() >= 6 => {
            // One message is what devices send. Its size field is checked against the bytes
            // up to N2, and the bytes win: captures exist whose size field excludes the
            // Codec 13 timestamp.
            let kind = r.b[0];
            let size = u32::from_be_bytes([r.b[1], r.b[2], r.b[3], r.b[4]]) as usize;
            let body = &r.b[5..r.b.len() - 1];
            if size != body.len() {
                integrity = Some(format!(
                    "message size field says {size}, message has {}",
                    body.len()
                ));
            }
            readings.push(text_message(codec, kind, body, &device));
            r.b = &r.b[r.b.len() - 1..];
        }
        0x0C..=0x0E => {
            for _ in 0..count {
                r.what = "text message";
                let kind = r.u8()?;
                let size = r.u32()? as usize;
                let body = r.take(size)?;
                readings.push(text_message(codec, kind, body, &device));
            }
        }
        c => return Err(TeltonikaError::Codec(c)),
    }
    r.what = "record count";
    let n2 = r.u8()?;
    if n2 != count {
        return Err(TeltonikaError::Counts(count, n2));
    }
    if !r.b.is_empty() {
        return Err(TeltonikaError::Trailing(r.b.len()));
    }
    if readings.is_empty() {
        readings.push(Reading::Heartbeat(Heartbeat { device }));
    }
    Ok(Avl {
        codec,
        count,
        readings,
        integrity,
    })
}

fn record(
    r: &mut Rd,
    codec: u8,
    device: &Option<String>,
    ext16: bool,
) -> Result<Reading, TeltonikaError> {
    r.what = "record";
    let ms = r.uint(8)?;
    let priority = r.u8()?;
    let lon = r.u32()? as i32 as f64 / 1e7;
    let lat = r.u32()? as i32 as f64 / 1e7;
    let altitude = r.u16()? as i16 as f64;
    let angle = r.u16()? as f64;
    let satellites = r.u8()? as u16;
    let speed = r.u16()? as f64;
    let mut attributes = BTreeMap::new();
    attributes.insert("priority".into(), json!(priority));
    r.what = "IO elements";
    let (wide_id, wide_count) = match codec {
        0x08 => (false, false),
        0x8E => (true, true),
        _ => (true, false), // Codec 16
    };
    let id = |r: &mut Rd| -> Result<u16, TeltonikaError> {
        if wide_id {
            r.u16()
        } else {
            Ok(r.u8()? as u16)
        }
    };
    let count = |r: &mut Rd| -> Result<u16, TeltonikaError> {
        if wide_count {
            r.u16()
        } else {
            Ok(r.u8()? as u16)
        }
    };
    let event = id(r)?;
    attributes.insert("event_io".into(), json!(event));
    if codec == 0x10 {
        attributes.insert("generation".into(), json!(r.u8()?));
    }
    let _total = count(r)?;
    for size in [1usize, 2, 4, 8] {
        for _ in 0..count(r)? {
            let io = id(r)?;
            attributes.insert(format!("io{io}"), json!(r.uint(size)?));
        }
    }
    if ext16 {
        for _ in 0..count(r)? {
            let io = id(r)?;
            attributes.insert(format!("io{io}"), json!(hex(r.take(16)?)));
        }
    }
    if codec == 0x8E {
        for _ in 0..r.u16()? {
            let io = r.u16()?;
            let len = r.u16()? as usize;
            attributes.insert(format!("io{io}"), json!(hex(r.take(len)?)));
        }
    }
    let time = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok();
    Ok(Reading::Position(Position {
        device: device.clone(),
        source: match codec {
            0x08 => "codec8",
            0x8E => "codec8E",
            _ => "codec16",
        },
        time,
        lat,
        lon,
        // Teltonika sends zero satellites (and zero coordinates) for a record without a fix.
        valid: satellites > 0,
        speed: Some(speed),
        course: Some(angle),
        altitude: Some(altitude),
        satellites: Some(satellites),
        attributes,
        ..Position::default()
    }))
}

/// GH3000 (Codec 7): time in seconds since 2007-01-01 with the priority in the top two bits,
/// then masks that say which parts follow.
fn gh3000_record(r: &mut Rd, device: &Option<String>) -> Result<Option<Reading>, TeltonikaError> {
    const EPOCH_2007: i64 = 1_167_609_600;
    r.what = "codec 7 record";
    let t = r.u32()?;
    let priority = t >> 30;
    let time = OffsetDateTime::from_unix_timestamp(EPOCH_2007 + (t & 0x3FFF_FFFF) as i64).ok();
    let global = r.u8()?;
    let mut attributes = BTreeMap::new();
    attributes.insert("priority".into(), json!(priority));
    let mut pos = None;
    if global & 0x01 != 0 {
        let mask = r.u8()?;
        let (mut lat, mut lon) = (None, None);
        if mask & 0x01 != 0 {
            lat = Some(f32::from_bits(r.u32()?) as f64);
            lon = Some(f32::from_bits(r.u32()?) as f64);
        }
        let altitude = if mask & 0x02 != 0 {
            Some(r.u16()? as f64)
        } else {
            None
        };
        let course = if mask & 0x04 != 0 {
            Some(r.u8()? as f64 * 360.0 / 256.0)
        } else {
            None
        };
        let speed = if mask & 0x08 != 0 {
            Some(r.u8()? as f64)
        } else {
            None
        };
        let satellites = if mask & 0x10 != 0 {
            Some(r.u8()? as u16)
        } else {
            None
        };
        if mask & 0x20 != 0 {
            attributes.insert("lac".into(), json!(r.u16()?));
            attributes.insert("cell".into(), json!(r.u16()?));
        }
        if mask & 0x40 != 0 {
            attributes.insert("gsm_signal".into(), json!(r.u8()?));
        }
        if mask & 0x80 != 0 {
            attributes.insert("operator".into(), json!(r.u32()?));
        }
        if let (Some(lat), Some(lon)) = (lat, lon) {
            let valid =
                lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0;
            pos = Some((
                if valid { lat } else { 0.0 },
                if valid { lon } else { 0.0 },
                valid,
                altitude,
                course,
                speed,
                satellites,
            ));
        }
    }
    for (bit, size) in [(0x02u8, 1usize), (0x04, 2), (0x08, 4)] {
        if global & bit != 0 {
            for _ in 0..r.u8()? {
                let io = r.u8()?;
                attributes.insert(format!("io{io}"), json!(r.uint(size)?));
            }
        }
    }
    Ok(
        pos.map(|(lat, lon, valid, altitude, course, speed, satellites)| {
            Reading::Position(Position {
                device: device.clone(),
                source: "codec7",
                time,
                lat,
                lon,
                valid: valid && satellites.is_none_or(|s| s > 0),
                speed,
                course,
                altitude,
                satellites,
                attributes,
                ..Position::default()
            })
        }),
    )
}

/// Codec 12 (command/response), 13 (with a timestamp) and 14 (with the IMEI): text.
fn text_message(codec: u8, kind: u8, mut body: &[u8], device: &Option<String>) -> Reading {
    let mut device = device.clone();
    match codec {
        0x0D if body.len() >= 4 => body = &body[4..], // timestamp
        0x0E if body.len() >= 8 => {
            device = Some(hex(&body[..8]).trim_start_matches('0').to_string());
            body = &body[8..];
        }
        _ => {}
    }
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .collect();
    Reading::Message(Message {
        source: match kind {
            0x05 => "command",
            0x06 => "response",
            _ => "text",
        },
        device,
        text: text.trim().to_string(),
    })
}

/// Decodes one captured packet of any kind (for `acsgd decode`): an IMEI handshake, a TCP AVL
/// packet or a UDP datagram; with the integrity finding that would keep it unacknowledged.
pub fn decode_packet(
    buf: &[u8],
    imei: Option<&str>,
) -> Result<(Vec<Reading>, Option<String>), TeltonikaError> {
    if buf == [KEEP_ALIVE] {
        let beat = Reading::Heartbeat(Heartbeat {
            device: imei.map(str::to_string),
        });
        return Ok((vec![beat], None));
    }
    let avl = if buf.len() >= 4 && buf[..4] == [0, 0, 0, 0] {
        parse_avl(buf, imei)?
    } else if let Ok(imei) = parse_imei(buf) {
        let login = Reading::Login(Login {
            device: imei,
            protocol_version: None,
            attributes: BTreeMap::new(),
        });
        return Ok((vec![login], None));
    } else {
        parse_udp(buf)?.avl
    };
    Ok((avl.readings, avl.integrity))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Teltonika's own Codec 8 example (wiki "Codec"), one record.
    const CODEC8: &str = concat!(
        "00000000",         // preamble
        "00000036",         // data length 54
        "08",               // codec 8
        "01",               // 1 record
        "0000016B40D8EA30", // timestamp 2019-06-10T10:04:46Z
        "01",               // priority
        "00000000",         // longitude 0
        "00000000",         // latitude 0
        "0000",             // altitude
        "0000",             // angle
        "00",               // satellites: no fix
        "0000",             // speed
        "01",               // event IO id 1
        "05",               // 5 IO elements
        "02",
        "15",
        "03",
        "01",
        "01", // two 1-byte: id 21 = 3, id 1 = 1
        "01",
        "42",
        "5E0F", // one 2-byte: id 66 = 24079
        "01",
        "F1",
        "0000601A", // one 4-byte: id 241 = 24602
        "01",
        "4E",
        "0000000000000000", // one 8-byte: id 78 = 0
        "01",               // 1 record
        "0000C7CF",         // CRC
    );

    #[test]
    fn codec8_decodes_field_by_field() {
        let avl = parse_avl(&unhex(CODEC8), Some("356307042441013")).unwrap();
        assert_eq!((avl.codec, avl.count), (8, 1));
        let p = avl.readings[0].position().unwrap();
        assert_eq!(p.time.unwrap().unix_timestamp(), 1_560_161_086);
        assert!(!p.valid, "no satellites: no fix");
        assert_eq!(p.attributes["io66"], json!(24079));
        assert_eq!(p.attributes["io241"], json!(24602));
        assert_eq!(p.device.as_deref(), Some("356307042441013"));
    }

    #[test]
    fn a_wrong_crc_is_an_integrity_finding_and_a_wrong_count_refuses_the_packet() {
        let mut b = unhex(CODEC8);
        let n = b.len();
        b[n - 1] ^= 1;
        let avl = parse_avl(&b, None).unwrap();
        assert!(avl.integrity.unwrap().contains("CRC mismatch"));
        let mut b = unhex(CODEC8);
        b[n - 5] = 2; // N2 = 2 but N1 = 1
        assert_eq!(parse_avl(&b, None), Err(TeltonikaError::Counts(1, 2)));
    }

    #[test]
    fn a_packet_cut_inside_its_crc_is_read_by_its_structure_and_not_acknowledged() {
        let whole = unhex(CODEC8);
        for cut in 1..=3 {
            let b = &whole[..whole.len() - cut];
            let avl = parse_avl(b, None).unwrap();
            assert_eq!((avl.codec, avl.count, avl.readings.len()), (8, 1, 1));
            let why = avl.integrity.unwrap();
            assert!(
                why.contains(&format!("CRC field has {} bytes", 4 - cut)),
                "{why}"
            );
        }
        // Cut into the records themselves, nothing is made up.
        assert!(parse_avl(&whole[..whole.len() - 6], None).is_err());
    }

    #[test]
    fn a_gh3000_packet_cut_inside_its_crc_gives_its_positions() {
        // Codec 7, two records: time (s since 2007, priority in the top bits), global mask
        // 0x01 (location only), location mask 0x11 (lat/lon floats and satellites).
        let mut data = vec![0x07, 0x02];
        for (t, lat, lon) in [
            (0x41bf_9db0u32, 43.21f32, 76.95f32),
            (0x41bf_9dceu32, 43.22, 76.96),
        ] {
            data.extend(t.to_be_bytes());
            data.extend([0x01, 0x11]);
            data.extend(lat.to_bits().to_be_bytes());
            data.extend(lon.to_bits().to_be_bytes());
            data.push(7);
        }
        data.push(0x02);
        let mut b = vec![0, 0, 0, 0];
        b.extend((data.len() as u32).to_be_bytes());
        b.extend(&data);
        b.extend(crc16_arc(&data).to_be_bytes()); // two of the CRC's four bytes
        let avl = parse_avl(&b, None).unwrap();
        let fixes: Vec<_> = avl.readings.iter().filter_map(Reading::position).collect();
        assert_eq!(fixes.len(), 2);
        assert!((fixes[1].lat - 43.22).abs() < 1e-5 && (fixes[1].lon - 76.96).abs() < 1e-5);
        assert_eq!(
            fixes[0].time.unwrap().unix_timestamp(),
            1_167_609_600 + 0x01bf_9db0
        );
        assert!(avl.integrity.unwrap().contains("CRC field has 2 bytes"));
        // Whole, with its CRC, the same packet is clean.
        let n = b.len();
        b.truncate(n - 2);
        b.extend((crc16_arc(&data) as u32).to_be_bytes());
        assert_eq!(parse_avl(&b, None).unwrap().integrity, None);
    }

    #[test]
    fn the_keep_alive_byte_is_cut_alone_and_read_as_a_heartbeat() {
        let mut b = vec![KEEP_ALIVE];
        b.extend(unhex(CODEC8));
        assert_eq!(scan(&b, true), Scan::KeepAlive);
        assert_eq!(scan(&b[1..], true), Scan::Avl(b.len() - 1));
        // Before the handshake it is no IMEI.
        assert!(matches!(
            scan(&b, false),
            Scan::Skip(_, TeltonikaError::BadImei)
        ));
        assert_eq!(
            decode_packet(&[KEEP_ALIVE], Some("356307042441013"))
                .unwrap()
                .0,
            vec![Reading::Heartbeat(Heartbeat {
                device: Some("356307042441013".into())
            })]
        );
    }

    #[test]
    fn the_handshake_and_acks_are_as_specified() {
        let imei = unhex("000F333536333037303432343431303133");
        assert_eq!(scan(&imei, false), Scan::Imei(17));
        assert_eq!(parse_imei(&imei).unwrap(), "356307042441013");
        assert_eq!(tcp_ack(1), [0, 0, 0, 1]);
        assert_eq!(scan(&imei[..5], false), Scan::Incomplete);
    }

    #[test]
    fn stream_noise_before_a_preamble_is_skipped() {
        let mut b = b"\x13\x37xx".to_vec();
        b.extend(unhex(CODEC8));
        assert_eq!(scan(&b, true), Scan::Skip(4, TeltonikaError::Preamble));
        assert_eq!(scan(&b[4..], true), Scan::Avl(b.len() - 4));
    }

    #[test]
    fn udp_datagram_and_its_ack() {
        // len, packet id 0xCAFE, type 01, AVL packet id 0x05, IMEI, then codec 8 data
        let data = &unhex(CODEC8)[8..unhex(CODEC8).len() - 4];
        let mut d = Vec::new();
        d.extend_from_slice(&0xCAFEu16.to_be_bytes());
        d.push(0x01);
        d.push(0x05);
        d.extend_from_slice(&15u16.to_be_bytes());
        d.extend_from_slice(b"352093081452251");
        d.extend_from_slice(data);
        let mut dg = (d.len() as u16).to_be_bytes().to_vec();
        dg.extend(d);
        let u = parse_udp(&dg).unwrap();
        assert_eq!(u.imei, "352093081452251");
        assert_eq!(udp_ack(&u, 1), [0x00, 0x05, 0xCA, 0xFE, 0x01, 0x05, 0x01]);
    }
}
