//! What the drivers produce: typed readings, one enum for every protocol.
//!
//! A reading serialises to one JSON object tagged by `kind`; `acsgd decode` prints exactly that
//! (plus `input`), and the edge turns readings into events. Units are fixed here so no consumer
//! has to know which protocol a value came from: degrees (WGS-84, south and west negative),
//! km/h, metres, UTC.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reading {
    /// A position fix (NMEA RMC/GGA/GNS/GLL, EGTS POS_DATA, Wialon SD/D/B, Teltonika records).
    Position(Position),
    /// A navigation sentence that says the receiver has no fix (position fields left empty).
    NoFix(NoFix),
    /// Course and speed over ground without a position (NMEA VTG).
    Motion(Motion),
    /// Fix mode, satellites in use and dilution of precision (NMEA GSA).
    Dop(Dop),
    /// A tracker identified itself (EGTS TERM_IDENTITY, Wialon `#L#`, Teltonika IMEI).
    Login(Login),
    /// A keep-alive without data (Wialon `#P#`, Teltonika empty packets).
    Heartbeat(Heartbeat),
    /// Sensor values that came without a position (EGTS telemetry records, Wialon `#D#` with
    /// no coordinates).
    Telemetry(Telemetry),
    /// An acknowledgement the device sent us (EGTS RESPONSE / RECORD_RESPONSE).
    Response(Response),
    /// Free text from or to the device (Teltonika Codec 12/13/14, EGTS commands).
    Message(Message),
    /// A line from a radiation portal monitor.
    Radiation(crate::rpm::RpmLine),
    /// A frame from a lane node.
    Lane(crate::lane::Frame),
    /// The message decoded but failed an integrity check (CRC, length); its readings are shown
    /// and the transport will not acknowledge it.
    Warning(Warning),
}

impl Reading {
    /// The position this reading carries, if any.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Reading::Position(p) => Some(p),
            _ => None,
        }
    }
}

/// A position fix. `time` is absent only when the source gave no date (an NMEA GGA before any
/// RMC or ZDA); `time_of_day` then still says when.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Position {
    /// Device identity (IMEI, EGTS object id, Wialon login) where the protocol carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Which message of the protocol this came from (`RMC`, `POS_DATA`, `codec8E`, …).
    pub source: &'static str,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub time: Option<OffsetDateTime>,
    /// Seconds since UTC midnight, for NMEA sentences that carry no date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_of_day: Option<f64>,
    /// Degrees, south negative.
    pub lat: f64,
    /// Degrees, west negative.
    pub lon: f64,
    /// The receiver called the fix valid.
    pub valid: bool,
    /// km/h over ground.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// Degrees true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub course: Option<f64>,
    /// Metres above mean sea level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub altitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub satellites: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdop: Option<f64>,
    /// Electronic-seal state where the protocol reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seal: Option<Seal>,
    /// Everything else the message carried (IO elements, sensor values, parameters).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Value>,
}

/// What a tracker says about the seal and its own integrity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Seal {
    /// The device reports its case or the seal wire opened.
    pub tamper: bool,
    /// The panic/alarm input fired.
    pub alarm: bool,
    /// External power lost; running on the backup battery.
    pub power_lost: bool,
    /// The GNSS module or antenna reported a fault (typical of jamming or a cut antenna).
    pub gnss_fault: bool,
    /// The record was stored while offline and sent later ("black box").
    pub from_memory: bool,
    /// The protocol's own name of the event that produced the record, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

impl Seal {
    /// True when anything here deserves an officer's attention.
    pub fn is_alarm(&self) -> bool {
        self.tamper || self.alarm || self.power_lost || self.gnss_fault
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct NoFix {
    pub source: &'static str,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub time: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_of_day: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Motion {
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub course: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Dop {
    pub source: &'static str,
    /// 1 no fix, 2 2D, 3 3D.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u8>,
    pub used: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdop: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdop: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vdop: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Login {
    pub device: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Heartbeat {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Telemetry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub source: &'static str,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub time: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seal: Option<Seal>,
    pub attributes: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Response {
    pub source: &'static str,
    /// The packet or record number acknowledged.
    pub confirmed: u32,
    /// The protocol's result code (0 is success in EGTS).
    pub result: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub text: String,
}

/// Degrees from a fixed-point NMEA/Wialon `DDDMM.MMMM` field, computed from the digits so that no
/// binary rounding of the whole value creeps in before the division.
pub(crate) fn ddmm_to_degrees(field: &str) -> Option<f64> {
    let v: f64 = field.parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let deg = (v / 100.0).trunc();
    // Minutes of 60 or more are invalid, but some trackers send them (Traccar's Wialon captures
    // have 5364.0167); gpsd and Traccar both read them as deg + min/60, and so do we. The caller
    // still bounds the result to ±90/±180.
    Some(deg + (v - deg * 100.0) / 60.0)
}

/// Bytes as lower-case hex, for values a protocol carries as opaque bytes.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
