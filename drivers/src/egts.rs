//! EGTS, the EAEU transport-telematics protocol (Order 285 of the Russian Ministry of
//! Transport, GOST 33472/33465), as electronic navigation seals and seal operators send it:
//! transport layer, AUTH (service 1) and TELEDATA (service 2).
//!
//! ## Transport packet
//! ```text
//! ┌─────┬──────┬───────┬────┬────┬─────────┬─────────┬────┬─────────────┬─────┬──────────────┬────────┐
//! │ PRV │ SKID │ flags │ HL │ HE │ FDL u16 │ PID u16 │ PT │[PRA RCA TTL]│ HCS │ SFRD (FDL)   │ SFRCS  │
//! └─────┴──────┴───────┴────┴────┴─────────┴─────────┴────┴─────────────┴─────┴──────────────┴────────┘
//!  1      key   PRF RTE  11/16 0   body len  packet    0 response        CRC-8  records or     CRC-16
//!               ENA CMP PR        (LE)     id (LE)   1 app data       (0x31,  response+      CCITT-FALSE
//!                                                   2 signed data     init FF) records        (LE)
//! ```
//! The header CRC covers PRV…(TTL); the body CRC covers SFRD. A bad header costs one byte (the
//! next packet is searched from the following byte); a bad body costs the packet and is not
//! acknowledged.
//!
//! ## Service record and subrecords
//! ```text
//! RL u16 │ RN u16 │ RFL │ [OID u32] [EVID u32] [TM u32] │ SST │ RST │ subrecords: SRT u8, SRL u16, SRD
//! ```
//! RFL: bit 0 OID present, bit 1 EVID present, bit 2 TM present. Subrecords decoded here:
//! RECORD_RESPONSE (0), TERM_IDENTITY (1), DISPATCHER_IDENTITY (5), RESULT_CODE (9) in AUTH;
//! POS_DATA (16), EXT_POS_DATA (17), AD_SENSORS_DATA (18), COUNTERS_DATA (19), STATE_DATA (20),
//! LIQUID_LEVEL_SENSOR (27) in TELEDATA. Others are skipped by their length.
//!
//! POS_DATA coordinates are `|degrees| / 90 × 0xFFFFFFFF` (longitude `/ 180`) with hemisphere
//! flags; time is seconds since 2010-01-01 00:00:00 UTC. The seal-relevant state is the record's
//! source code (SRC: 10 case opened, 13 alarm button, 11 external power lost, 6 peripheral
//! disconnected, 22/25 navigation module or antenna fault), the black-box flag and STATE_DATA's
//! backup-battery bits.
//!
//! Known decoders skip both CRCs and acknowledge before storing; this one checks both, and
//! [`response`] is only called by the transport once the readings are durably accepted.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::crc::{crc16_ccitt_false, crc8_egts};
use crate::reading::{Login, Position, Reading, Response, Seal, Telemetry};

/// FDL is a u16, but no real packet comes near it; a bound keeps a garbage length from holding
/// 64 KiB of a stream hostage.
pub const MAX_BODY: usize = 16 * 1024;
/// Unix time of the EGTS epoch, 2010-01-01T00:00:00Z.
pub const EPOCH_2010: i64 = 1_262_304_000;

pub const PT_RESPONSE: u8 = 0;
pub const PT_APPDATA: u8 = 1;
pub const PT_SIGNED_APPDATA: u8 = 2;
pub const SERVICE_AUTH: u8 = 1;
pub const SERVICE_TELEDATA: u8 = 2;
/// EGTS_PC_OK.
pub const PC_OK: u8 = 0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgtsError {
    #[error("protocol version {0} (expected 1)")]
    Version(u8),
    #[error("header length {0} (expected 11 or 16)")]
    HeaderLength(u8),
    #[error("header CRC mismatch: packet says {stated:02x}, bytes give {computed:02x}")]
    HeaderCrc { stated: u8, computed: u8 },
    #[error("body length {0} exceeds {MAX_BODY}")]
    TooLong(usize),
    #[error("body CRC mismatch: packet says {stated:04x}, bytes give {computed:04x}")]
    BodyCrc { stated: u16, computed: u16 },
    #[error("encrypted or compressed packets are not supported (flags {0:02x})")]
    Encrypted(u8),
    #[error("packet type {0} unknown")]
    PacketType(u8),
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("{0} bytes left after the packet")]
    Trailing(usize),
}

/// Result of looking at the start of a stream buffer.
#[derive(Debug, PartialEq)]
pub enum Scan {
    /// A whole packet with valid header CRC is at the start; this many bytes long.
    Packet(usize),
    Incomplete,
    /// Drop this many bytes and look again.
    Skip(usize, EgtsError),
}

/// Finds the packet boundary at the start of `buf` from the header alone (header CRC checked),
/// so a stream codec can cut packets without trusting their bodies.
pub fn scan(buf: &[u8]) -> Scan {
    let Some(&prv) = buf.first() else {
        return Scan::Incomplete;
    };
    if prv != 1 {
        let n = buf.iter().position(|&b| b == 1).unwrap_or(buf.len());
        return Scan::Skip(n.max(1), EgtsError::Version(prv));
    }
    if buf.len() < 4 {
        return Scan::Incomplete;
    }
    let hl = buf[3];
    if hl != 11 && hl != 16 {
        return Scan::Skip(1, EgtsError::HeaderLength(hl));
    }
    let hl = hl as usize;
    if buf.len() < hl {
        return Scan::Incomplete;
    }
    let computed = crc8_egts(&buf[..hl - 1]);
    if computed != buf[hl - 1] {
        return Scan::Skip(
            1,
            EgtsError::HeaderCrc {
                stated: buf[hl - 1],
                computed,
            },
        );
    }
    let fdl = u16::from_le_bytes([buf[5], buf[6]]) as usize;
    if fdl > MAX_BODY {
        return Scan::Skip(1, EgtsError::TooLong(fdl));
    }
    let total = hl + if fdl > 0 { fdl + 2 } else { 0 };
    if buf.len() < total {
        return Scan::Incomplete;
    }
    Scan::Packet(total)
}

/// A decoded transport packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub pid: u16,
    pub packet_type: u8,
    /// For a RESPONSE: the acknowledged packet id and its result.
    pub response_to: Option<(u16, u8)>,
    pub records: Vec<Record>,
}

/// A service-layer record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub number: u16,
    pub object_id: Option<u32>,
    pub time: Option<u32>,
    pub source_service: u8,
    pub recipient_service: u8,
    pub subrecords: Vec<Subrecord>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Subrecord {
    RecordResponse {
        confirmed: u16,
        status: u8,
    },
    TermIdentity {
        terminal_id: u32,
        imei: Option<String>,
        imsi: Option<String>,
    },
    DispatcherIdentity {
        dispatcher_type: u8,
        dispatcher_id: u32,
        description: String,
    },
    ResultCode(u8),
    PosData(PosData),
    ExtPosData {
        vdop: Option<f64>,
        hdop: Option<f64>,
        pdop: Option<f64>,
        satellites: Option<u8>,
    },
    AdSensors {
        digital_inputs: Vec<(u8, u8)>,
        digital_outputs: u8,
        analog: Vec<(u8, u32)>,
    },
    Counters(Vec<(u8, u32)>),
    State {
        state: u8,
        main_power_dv: u8,
        backup_dv: u8,
        internal_dv: u8,
        flags: u8,
    },
    LiquidLevel {
        sensor: u8,
        error: bool,
        unit: u8,
        address: u16,
        level: u32,
    },
    Other {
        kind: u8,
        len: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct PosData {
    /// Seconds since 2010-01-01 UTC.
    pub ntm: u32,
    pub lat: f64,
    pub lon: f64,
    pub flags: u8,
    /// km/h.
    pub speed: f64,
    pub course: u16,
    /// 0.1 km.
    pub odometer: u32,
    pub inputs: u8,
    pub source: u8,
    pub altitude: Option<i32>,
}

impl PosData {
    pub fn valid(&self) -> bool {
        self.flags & 0x01 != 0
    }
    pub fn from_memory(&self) -> bool {
        self.flags & 0x08 != 0
    }
}

/// Little-endian reader that fails instead of panicking.
struct Rd<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EgtsError> {
        if self.b.len() < n {
            return Err(EgtsError::Truncated(self.what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, EgtsError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, EgtsError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Result<u32, EgtsError> {
        let b = self.take(3)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }
    fn u32(&mut self) -> Result<u32, EgtsError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Decodes one whole packet (as cut by [`scan`], or one captured datagram), checking both CRCs.
pub fn parse_packet(buf: &[u8]) -> Result<Packet, EgtsError> {
    let total = match scan(buf) {
        Scan::Packet(n) => n,
        Scan::Incomplete => return Err(EgtsError::Truncated("packet")),
        Scan::Skip(_, e) => return Err(e),
    };
    if total < buf.len() {
        return Err(EgtsError::Trailing(buf.len() - total));
    }
    let flags = buf[2];
    // ENA (bits 4-3) and CMP (bit 2): nobody sends these to a customs post; refuse clearly.
    if flags & 0x1C != 0 {
        return Err(EgtsError::Encrypted(flags));
    }
    let hl = buf[3] as usize;
    let pid = u16::from_le_bytes([buf[7], buf[8]]);
    let packet_type = buf[9];
    let body = &buf[hl..total.saturating_sub(2).max(hl)];
    if !body.is_empty() {
        let stated = u16::from_le_bytes([buf[total - 2], buf[total - 1]]);
        let computed = crc16_ccitt_false(body);
        if stated != computed {
            return Err(EgtsError::BodyCrc { stated, computed });
        }
    }
    let mut r = Rd {
        b: body,
        what: "response header",
    };
    let response_to = match packet_type {
        PT_RESPONSE => Some((r.u16()?, r.u8()?)),
        PT_APPDATA => None,
        PT_SIGNED_APPDATA => {
            // Signature length and signature precede the records.
            r.what = "signature";
            let n = r.u16()? as usize;
            r.take(n)?;
            None
        }
        t => return Err(EgtsError::PacketType(t)),
    };
    let mut records = Vec::new();
    while !r.b.is_empty() {
        records.push(parse_record(&mut r)?);
    }
    Ok(Packet {
        pid,
        packet_type,
        response_to,
        records,
    })
}

fn parse_record(r: &mut Rd) -> Result<Record, EgtsError> {
    r.what = "record header";
    let len = r.u16()? as usize;
    let number = r.u16()?;
    let rfl = r.u8()?;
    let object_id = if rfl & 0x01 != 0 {
        Some(r.u32()?)
    } else {
        None
    };
    if rfl & 0x02 != 0 {
        r.u32()?; // EVID: event id, not used
    }
    let time = if rfl & 0x04 != 0 {
        Some(r.u32()?)
    } else {
        None
    };
    let source_service = r.u8()?;
    let recipient_service = r.u8()?;
    r.what = "record data";
    let mut data = Rd {
        b: r.take(len)?,
        what: "subrecord header",
    };
    let mut subrecords = Vec::new();
    while !data.b.is_empty() {
        data.what = "subrecord header";
        let kind = data.u8()?;
        let len = data.u16()? as usize;
        data.what = "subrecord data";
        let body = data.take(len)?;
        subrecords.push(parse_subrecord(source_service, kind, body)?);
    }
    Ok(Record {
        number,
        object_id,
        time,
        source_service,
        recipient_service,
        subrecords,
    })
}

fn ascii(b: &[u8]) -> String {
    b.iter()
        .filter(|c| c.is_ascii_graphic() || **c == b' ')
        .map(|&c| c as char)
        .collect::<String>()
}

fn parse_subrecord(service: u8, kind: u8, body: &[u8]) -> Result<Subrecord, EgtsError> {
    let mut r = Rd {
        b: body,
        what: "subrecord",
    };
    Ok(match (service, kind) {
        (_, 0) => {
            r.what = "RECORD_RESPONSE";
            Subrecord::RecordResponse {
                confirmed: r.u16()?,
                status: r.u8()?,
            }
        }
        (SERVICE_AUTH, 1) => {
            r.what = "TERM_IDENTITY";
            let terminal_id = r.u32()?;
            let flags = r.u8()?;
            if flags & 0x01 != 0 {
                r.u16()?; // HDID: home dispatcher id
            }
            let imei = if flags & 0x02 != 0 {
                Some(ascii(r.take(15)?))
            } else {
                None
            };
            let imsi = if flags & 0x04 != 0 {
                Some(ascii(r.take(16)?))
            } else {
                None
            };
            Subrecord::TermIdentity {
                terminal_id,
                imei,
                imsi,
            }
        }
        (SERVICE_AUTH, 5) => {
            r.what = "DISPATCHER_IDENTITY";
            let dispatcher_type = r.u8()?;
            let dispatcher_id = r.u32()?;
            Subrecord::DispatcherIdentity {
                dispatcher_type,
                dispatcher_id,
                description: ascii(r.b),
            }
        }
        (SERVICE_AUTH, 9) => {
            r.what = "RESULT_CODE";
            Subrecord::ResultCode(r.u8()?)
        }
        (SERVICE_TELEDATA, 16) => {
            r.what = "POS_DATA";
            let ntm = r.u32()?;
            let lat_raw = r.u32()?;
            let lon_raw = r.u32()?;
            let flags = r.u8()?;
            let spd = r.u16()?;
            let dir = r.u8()?;
            let odometer = r.u24()?;
            let inputs = r.u8()?;
            let source = r.u8()?;
            let mut lat = lat_raw as f64 * 90.0 / 0xFFFF_FFFFu32 as f64;
            let mut lon = lon_raw as f64 * 180.0 / 0xFFFF_FFFFu32 as f64;
            if flags & 0x20 != 0 {
                lat = -lat;
            }
            if flags & 0x40 != 0 {
                lon = -lon;
            }
            // ALTE (flag bit 7): three bytes of altitude, sign in SPD bit 14.
            let altitude = if flags & 0x80 != 0 {
                let a = r.u24()? as i32;
                Some(if spd & 0x4000 != 0 { -a } else { a })
            } else {
                None
            };
            Subrecord::PosData(PosData {
                ntm,
                lat,
                lon,
                flags,
                speed: (spd & 0x3FFF) as f64 / 10.0,
                course: dir as u16 | ((spd >> 15) << 8),
                odometer,
                inputs,
                source,
                altitude,
            })
        }
        (SERVICE_TELEDATA, 17) => {
            r.what = "EXT_POS_DATA";
            let flags = r.u8()?;
            let mut dop = |bit: u8| -> Result<Option<f64>, EgtsError> {
                Ok(if flags & bit != 0 {
                    Some(r.u16()? as f64 / 100.0)
                } else {
                    None
                })
            };
            let vdop = dop(0x01)?;
            let hdop = dop(0x02)?;
            let pdop = dop(0x04)?;
            let satellites = if flags & 0x08 != 0 {
                Some(r.u8()?)
            } else {
                None
            };
            Subrecord::ExtPosData {
                vdop,
                hdop,
                pdop,
                satellites,
            }
        }
        (SERVICE_TELEDATA, 18) => {
            r.what = "AD_SENSORS_DATA";
            let dioe = r.u8()?;
            let digital_outputs = r.u8()?;
            let asfe = r.u8()?;
            let mut digital_inputs = Vec::new();
            for i in 0..8 {
                if dioe & (1 << i) != 0 {
                    digital_inputs.push((i + 1, r.u8()?));
                }
            }
            let mut analog = Vec::new();
            for i in 0..8 {
                if asfe & (1 << i) != 0 {
                    analog.push((i + 1, r.u24()?));
                }
            }
            Subrecord::AdSensors {
                digital_inputs,
                digital_outputs,
                analog,
            }
        }
        (SERVICE_TELEDATA, 19) => {
            r.what = "COUNTERS_DATA";
            let cfe = r.u8()?;
            let mut counters = Vec::new();
            for i in 0..8 {
                if cfe & (1 << i) != 0 {
                    counters.push((i + 1, r.u24()?));
                }
            }
            Subrecord::Counters(counters)
        }
        (SERVICE_TELEDATA, 20) => {
            r.what = "STATE_DATA";
            Subrecord::State {
                state: r.u8()?,
                main_power_dv: r.u8()?,
                backup_dv: r.u8()?,
                internal_dv: r.u8()?,
                flags: r.u8()?,
            }
        }
        (SERVICE_TELEDATA, 27) => {
            r.what = "LIQUID_LEVEL_SENSOR";
            let flags = r.u8()?;
            let address = r.u16()?;
            // RDF (bit 3) says the rest is raw sensor data; otherwise a u32 level.
            let level = if flags & 0x08 != 0 { 0 } else { r.u32()? };
            Subrecord::LiquidLevel {
                sensor: (flags & 0x07) + 1,
                error: flags & 0x40 != 0,
                unit: (flags >> 4) & 0x03,
                address,
                level,
            }
        }
        _ => Subrecord::Other {
            kind,
            len: body.len(),
        },
    })
}

/// The name of a POS_DATA source code, where it matters for a seal.
fn source_event(src: u8) -> Option<&'static str> {
    Some(match src {
        6 => "peripheral_disconnected",
        10 => "case_opened",
        11 => "external_power_lost",
        13 => "alarm_button",
        15 => "emergency_call",
        22 => "navigation_module_fault",
        25 => "navigation_antenna_fault",
        28 => "moved_with_ignition_off",
        _ => return None,
    })
}

fn epoch(ntm: u32) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(EPOCH_2010 + ntm as i64).ok()
}

/// Turns a packet into readings: one per record (a position when the record has POS_DATA,
/// telemetry when it has only sensors), plus logins and acknowledgements.
pub fn readings(packet: &Packet) -> Vec<Reading> {
    let mut out = Vec::new();
    if let Some((pid, result)) = packet.response_to {
        out.push(Reading::Response(Response {
            source: "RESPONSE",
            confirmed: pid as u32,
            result,
        }));
    }
    for rec in &packet.records {
        let device = rec.object_id.map(|o| o.to_string());
        let mut pos: Option<Position> = None;
        let mut attrs: BTreeMap<String, Value> = BTreeMap::new();
        let mut seal = Seal::default();
        let mut has_seal_info = false;
        for sub in &rec.subrecords {
            match sub {
                Subrecord::RecordResponse { confirmed, status } => {
                    out.push(Reading::Response(Response {
                        source: "RECORD_RESPONSE",
                        confirmed: *confirmed as u32,
                        result: *status,
                    }))
                }
                Subrecord::TermIdentity {
                    terminal_id,
                    imei,
                    imsi,
                } => {
                    let mut attributes = BTreeMap::new();
                    if let Some(i) = imei.as_ref().filter(|i| !i.is_empty()) {
                        attributes.insert("imei".into(), json!(i));
                    }
                    if let Some(i) = imsi.as_ref().filter(|i| !i.is_empty()) {
                        attributes.insert("imsi".into(), json!(i));
                    }
                    out.push(Reading::Login(Login {
                        device: terminal_id.to_string(),
                        protocol_version: None,
                        attributes,
                    }))
                }
                Subrecord::DispatcherIdentity {
                    dispatcher_type,
                    dispatcher_id,
                    description,
                } => {
                    let mut attributes = BTreeMap::new();
                    attributes.insert("dispatcher_type".into(), json!(dispatcher_type));
                    attributes.insert("description".into(), json!(description));
                    out.push(Reading::Login(Login {
                        device: format!("dispatcher:{dispatcher_id}"),
                        protocol_version: None,
                        attributes,
                    }))
                }
                Subrecord::ResultCode(code) => out.push(Reading::Response(Response {
                    source: "RESULT_CODE",
                    confirmed: rec.number as u32,
                    result: *code,
                })),
                Subrecord::PosData(p) => {
                    has_seal_info = true;
                    seal.from_memory = p.from_memory();
                    if let Some(ev) = source_event(p.source) {
                        seal.event = Some(ev.to_string());
                        seal.tamper |= p.source == 10;
                        seal.alarm |= p.source == 13 || p.source == 15;
                        seal.power_lost |= p.source == 11;
                        seal.gnss_fault |= p.source == 22 || p.source == 25;
                    }
                    attrs.insert("odometer_km".into(), json!(p.odometer as f64 / 10.0));
                    attrs.insert("inputs".into(), json!(p.inputs));
                    attrs.insert("event_source".into(), json!(p.source));
                    pos = Some(Position {
                        source: "POS_DATA",
                        time: epoch(p.ntm),
                        lat: p.lat,
                        lon: p.lon,
                        valid: p.valid(),
                        speed: Some(p.speed),
                        course: Some(p.course as f64),
                        altitude: p.altitude.map(|a| a as f64),
                        ..Position::default()
                    });
                }
                Subrecord::ExtPosData {
                    vdop,
                    hdop,
                    pdop,
                    satellites,
                } => {
                    if let Some(p) = pos.as_mut() {
                        p.hdop = *hdop;
                        p.satellites = satellites.map(u16::from);
                    } else if let Some(h) = hdop {
                        attrs.insert("hdop".into(), json!(h));
                    }
                    if let Some(v) = vdop {
                        attrs.insert("vdop".into(), json!(v));
                    }
                    if let Some(v) = pdop {
                        attrs.insert("pdop".into(), json!(v));
                    }
                }
                Subrecord::AdSensors {
                    digital_inputs,
                    digital_outputs,
                    analog,
                } => {
                    for (i, v) in digital_inputs {
                        attrs.insert(format!("din{i}"), json!(v));
                    }
                    attrs.insert("dout".into(), json!(digital_outputs));
                    for (i, v) in analog {
                        attrs.insert(format!("adc{i}"), json!(v));
                    }
                }
                Subrecord::Counters(cs) => {
                    for (i, v) in cs {
                        attrs.insert(format!("counter{i}"), json!(v));
                    }
                }
                Subrecord::State {
                    state,
                    main_power_dv,
                    backup_dv,
                    internal_dv,
                    flags,
                } => {
                    has_seal_info = true;
                    // BBU (bit 0) / IBU (bit 1): running on backup or internal battery.
                    seal.power_lost |= flags & 0x03 != 0;
                    attrs.insert("state".into(), json!(state));
                    attrs.insert("power_v".into(), json!(*main_power_dv as f64 / 10.0));
                    attrs.insert("backup_v".into(), json!(*backup_dv as f64 / 10.0));
                    attrs.insert("internal_v".into(), json!(*internal_dv as f64 / 10.0));
                }
                Subrecord::LiquidLevel {
                    sensor,
                    error,
                    unit,
                    address,
                    level,
                } => {
                    attrs.insert(
                        format!("liquid{sensor}"),
                        json!({ "level": level, "unit": unit, "address": address, "error": error }),
                    );
                }
                Subrecord::Other { .. } => {}
            }
        }
        let seal = has_seal_info.then_some(seal);
        if let Some(mut p) = pos {
            p.device = device;
            p.seal = seal;
            p.attributes = attrs;
            out.push(Reading::Position(p));
        } else if !attrs.is_empty() {
            out.push(Reading::Telemetry(Telemetry {
                device,
                source: "TELEDATA",
                time: rec.time.and_then(epoch),
                seal,
                attributes: attrs,
            }));
        }
    }
    out
}

/// Builds the RESPONSE packet that acknowledges `packet`: PR for the transport packet and a
/// RECORD_RESPONSE for each of its records. `pid` is our own packet counter.
pub fn response(pid: u16, packet: &Packet, result: u8) -> Vec<u8> {
    let mut body = Vec::with_capacity(3 + packet.records.len() * 14);
    body.extend_from_slice(&packet.pid.to_le_bytes()); // RPID
    body.push(result); // PR
    for rec in &packet.records {
        let rn = rec.number;
        body.extend_from_slice(&6u16.to_le_bytes()); // RL: one 6-byte subrecord
        body.extend_from_slice(&rn.to_le_bytes()); // RN (echoing theirs is what servers do)
        body.push(0x00); // RFL: no OID, EVID or TM
        body.push(rec.source_service); // SST: answer from the service that was addressed
        body.push(rec.source_service); // RST
        body.push(0); // SRT: RECORD_RESPONSE
        body.extend_from_slice(&3u16.to_le_bytes()); // SRL
        body.extend_from_slice(&rn.to_le_bytes()); // CRN
        body.push(result); // RST: processing status
    }
    frame(pid, PT_RESPONSE, &body)
}

/// An AUTH RESULT_CODE packet (sent after acknowledging TERM_IDENTITY).
pub fn result_code(pid: u16, record_number: u16, code: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&4u16.to_le_bytes()); // RL: one 4-byte subrecord
    body.extend_from_slice(&record_number.to_le_bytes()); // RN
    body.push(0x00); // RFL
    body.push(SERVICE_AUTH); // SST
    body.push(SERVICE_AUTH); // RST
    body.push(9); // SRT: RESULT_CODE
    body.extend_from_slice(&1u16.to_le_bytes()); // SRL
    body.push(code); // RCD
    frame(pid, PT_APPDATA, &body)
}

/// A TELEDATA packet with one POS_DATA record, as a seal sends it: for simulators and tests
/// that need real frames. `src` is the record's source code (0 timer, 10 case opened, …).
#[allow(clippy::too_many_arguments)]
pub fn encode_position(
    pid: u16,
    record: u16,
    object_id: u32,
    unix_time: i64,
    lat: f64,
    lon: f64,
    speed_kmh: f64,
    course: u16,
    src: u8,
) -> Vec<u8> {
    let mut sub = Vec::with_capacity(21);
    sub.extend_from_slice(&((unix_time - EPOCH_2010).max(0) as u32).to_le_bytes()); // NTM
    let lat_raw = (lat.abs() / 90.0 * 0xFFFF_FFFFu32 as f64).round() as u32;
    let lon_raw = (lon.abs() / 180.0 * 0xFFFF_FFFFu32 as f64).round() as u32;
    sub.extend_from_slice(&lat_raw.to_le_bytes()); // LAT
    sub.extend_from_slice(&lon_raw.to_le_bytes()); // LONG
                                                   // FLG: valid, south (0x20) / west (0x40) hemispheres.
    sub.push(0x01 | if lat < 0.0 { 0x20 } else { 0 } | if lon < 0.0 { 0x40 } else { 0 });
    let course = course % 360;
    let spd = ((speed_kmh * 10.0).round() as u16).min(0x3FFF) | ((course >> 8) << 15);
    sub.extend_from_slice(&spd.to_le_bytes()); // SPD (14 bits), DIRH (bit 15)
    sub.push((course & 0xFF) as u8); // DIR
    sub.extend_from_slice(&[0, 0, 0]); // ODM
    sub.push(0); // DIN
    sub.push(src); // SRC
    let mut rec = Vec::with_capacity(32);
    rec.extend_from_slice(&((3 + sub.len()) as u16).to_le_bytes()); // RL
    rec.extend_from_slice(&record.to_le_bytes()); // RN
    rec.push(0x01); // RFL: OID present
    rec.extend_from_slice(&object_id.to_le_bytes()); // OID
    rec.push(SERVICE_TELEDATA); // SST
    rec.push(SERVICE_TELEDATA); // RST
    rec.push(16); // SRT POS_DATA
    rec.extend_from_slice(&(sub.len() as u16).to_le_bytes()); // SRL
    rec.extend_from_slice(&sub);
    frame(pid, PT_APPDATA, &rec)
}

/// Wraps a body in a transport header with both CRCs.
pub fn frame(pid: u16, packet_type: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(11 + body.len() + 2);
    out.push(1); // PRV
    out.push(0); // SKID
    out.push(0x00); // PRF 00, RTE 0, ENA 00, CMP 0, PR 00 (highest priority)
    out.push(11); // HL
    out.push(0); // HE
    out.extend_from_slice(&(body.len() as u16).to_le_bytes()); // FDL
    out.extend_from_slice(&pid.to_le_bytes()); // PID
    out.push(packet_type); // PT
    let hcs = crc8_egts(&out);
    out.push(hcs);
    if !body.is_empty() {
        out.extend_from_slice(body);
        out.extend_from_slice(&crc16_ccitt_false(body).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A POS_DATA record as a seal sends it, built field by field.
    fn pos_packet(src: u8) -> Vec<u8> {
        let mut sub = Vec::new();
        sub.extend_from_slice(&260_000_000u32.to_le_bytes()); // NTM: 2018-03-28T...
        let lat = (51.67569f64 / 90.0 * 0xFFFF_FFFFu32 as f64) as u32;
        let lon = (55.59189f64 / 180.0 * 0xFFFF_FFFFu32 as f64) as u32;
        sub.extend_from_slice(&lat.to_le_bytes()); // LAT
        sub.extend_from_slice(&lon.to_le_bytes()); // LONG
        sub.push(0x01 | 0x08 | 0x40 | 0x80); // FLG: valid, from black box, west, altitude present
        sub.extend_from_slice(&(0x8000u16 | 0x4000 | 654).to_le_bytes()); // SPD 65.4 km/h, ALTS -, DIRH
        sub.push(44); // DIR: 256 + 44 = 300°
        sub.extend_from_slice(&[0x10, 0x27, 0x00]); // ODM 10000 × 0.1 km
        sub.push(0b0000_0101); // DIN
        sub.push(src); // SRC
        sub.extend_from_slice(&[0x0c, 0x00, 0x00]); // ALT 12 m (negative per ALTS)
        let mut rec = Vec::new();
        rec.extend_from_slice(&((3 + sub.len()) as u16).to_le_bytes()); // RL
        rec.extend_from_slice(&7u16.to_le_bytes()); // RN
        rec.push(0x01); // RFL: OID present
        rec.extend_from_slice(&42u32.to_le_bytes()); // OID
        rec.push(SERVICE_TELEDATA); // SST
        rec.push(SERVICE_TELEDATA); // RST
        rec.push(16); // SRT POS_DATA
        rec.extend_from_slice(&(sub.len() as u16).to_le_bytes()); // SRL
        rec.extend_from_slice(&sub);
        frame(9, PT_APPDATA, &rec)
    }

    #[test]
    fn encoded_positions_decode_to_what_was_encoded() {
        let bytes = encode_position(
            5,
            1,
            77,
            EPOCH_2010 + 500_000_000,
            43.2389,
            -76.8897,
            54.3,
            300,
            10,
        );
        let r = readings(&parse_packet(&bytes).unwrap());
        let Reading::Position(p) = &r[0] else {
            panic!("{r:?}")
        };
        assert_eq!(p.device.as_deref(), Some("77"));
        assert!((p.lat - 43.2389).abs() < 1e-6 && (p.lon + 76.8897).abs() < 1e-6);
        assert_eq!((p.speed, p.course), (Some(54.3), Some(300.0)));
        assert!(p.seal.as_ref().unwrap().tamper);
    }

    #[test]
    fn pos_data_decodes_every_field() {
        let p = parse_packet(&pos_packet(10)).unwrap();
        assert_eq!(p.pid, 9);
        let r = readings(&p);
        let Reading::Position(pos) = &r[0] else {
            panic!("{r:?}")
        };
        assert_eq!(pos.device.as_deref(), Some("42"));
        assert!((pos.lat - 51.67569).abs() < 1e-6);
        assert!((pos.lon + 55.59189).abs() < 1e-6, "west is negative");
        assert_eq!(pos.speed, Some(65.4));
        assert_eq!(pos.course, Some(300.0));
        assert_eq!(pos.altitude, Some(-12.0));
        assert_eq!(pos.time.unwrap().unix_timestamp(), EPOCH_2010 + 260_000_000);
        let seal = pos.seal.as_ref().unwrap();
        assert!(seal.tamper && seal.from_memory);
        assert_eq!(seal.event.as_deref(), Some("case_opened"));
    }

    #[test]
    fn a_flipped_body_bit_fails_the_body_crc() {
        let mut b = pos_packet(0);
        b[20] ^= 0x01;
        assert!(matches!(parse_packet(&b), Err(EgtsError::BodyCrc { .. })));
    }

    #[test]
    fn a_flipped_header_bit_costs_one_byte() {
        let mut b = pos_packet(0);
        b[7] ^= 0x01; // PID
        assert!(matches!(
            scan(&b),
            Scan::Skip(1, EgtsError::HeaderCrc { .. })
        ));
    }

    #[test]
    fn the_response_acknowledges_the_packet_and_each_record() {
        let p = parse_packet(&pos_packet(0)).unwrap();
        let bytes = response(100, &p, PC_OK);
        let back = parse_packet(&bytes).unwrap();
        assert_eq!(back.packet_type, PT_RESPONSE);
        assert_eq!(back.response_to, Some((9, PC_OK)));
        assert_eq!(
            back.records[0].subrecords,
            vec![Subrecord::RecordResponse {
                confirmed: 7,
                status: 0
            }]
        );
    }

    #[test]
    fn result_code_is_a_valid_auth_packet() {
        let back = parse_packet(&result_code(5, 1, 0)).unwrap();
        assert_eq!(back.records[0].source_service, SERVICE_AUTH);
        assert_eq!(back.records[0].subrecords, vec![Subrecord::ResultCode(0)]);
    }

    #[test]
    fn a_subrecord_longer_than_its_record_is_truncated_not_a_panic() {
        let mut b = pos_packet(0);
        // SRL is at header 11 + RL 2 + RN 2 + RFL 1 + OID 4 + SST 1 + RST 1 + SRT 1 = 23
        b[23] = 0xFF;
        let body_end = b.len() - 2;
        let crc = crc16_ccitt_false(&b[11..body_end]);
        b[body_end..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            parse_packet(&b),
            Err(EgtsError::Truncated("subrecord data"))
        );
    }
}
