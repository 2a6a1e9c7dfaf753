//! NMEA 0183 sentences from a GNSS receiver: RMC, GGA, GNS, GLL, VTG, GSA and ZDA, any talker.
//!
//! ```text
//! $GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76\r\n
//! │└┬┘└┬┘ └───┬───┘ │ └───┬────┘ │ └────┬────┘ │ └─┬─┘└┘└─┬─┘└┘│ │└┤
//! │ │  │    time  status  lat   N/S    lon    E/W speed │  date  │  │ │ checksum: XOR of the
//! │ │  sentence   (A ok, V void)            (knots) course   magvar mode  bytes between $ and *
//! │ talker (GP GL GA GB BD GN …)
//! start
//! ```
//!
//! A line is one sentence; anything before its last `$` is noise from the serial line and is
//! skipped. The checksum is mandatory: a sentence without one, or with a wrong one, costs that
//! sentence and nothing else. Fields the receiver leaves empty stay `None`; they are never read
//! as zero. Sentences of other types (GSV, GST, TXT, proprietary `$P…`, AIS `!…`) are valid input
//! and yield nothing.
//!
//! The decoder keeps the last date it saw (RMC or ZDA) so that GGA, GNS and GLL, which carry only
//! the time of day, get a full timestamp too, rolling over at midnight.

use time::{Date, Month, OffsetDateTime, Time};

use crate::reading::{ddmm_to_degrees, Dop, Motion, NoFix, Position, Reading};

/// NMEA 0183 says 82 characters; real receivers exceed it with proprietary sentences, so allow
/// some room while still bounding what one line can cost.
pub const MAX_SENTENCE: usize = 256;

/// Knots to km/h.
const KNOT_KMH: f64 = 1.852;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NmeaError {
    #[error("no sentence start ('$' or '!')")]
    NoStart,
    #[error("sentence longer than {MAX_SENTENCE} bytes")]
    TooLong,
    #[error("non-ASCII byte in sentence")]
    NotAscii,
    #[error("no checksum")]
    NoChecksum,
    #[error("checksum mismatch: sentence says {stated:02X}, bytes give {computed:02X}")]
    BadChecksum { stated: u8, computed: u8 },
    #[error("{sentence}: field {field} ({name}) is not valid: {value:?}")]
    BadField {
        sentence: &'static str,
        field: usize,
        name: &'static str,
        value: String,
    },
    #[error("{sentence}: only {got} fields, at least {need} needed")]
    TooFewFields {
        sentence: &'static str,
        got: usize,
        need: usize,
    },
}

/// Stateful sentence decoder (the state is the last date seen).
#[derive(Debug, Default, Clone)]
pub struct NmeaDecoder {
    date: Option<Date>,
    /// Time of day of the sentence that last set or used `date`, to notice midnight.
    date_tod: f64,
}

/// The fields of one checksum-verified sentence.
struct Fields<'a> {
    /// Talker + sentence type, e.g. `GNRMC`.
    address: &'a str,
    f: [&'a str; 40],
    n: usize,
}

impl<'a> Fields<'a> {
    /// Field `i` (1-based after the address), empty when missing.
    fn get(&self, i: usize) -> &'a str {
        if i < self.n {
            self.f[i]
        } else {
            ""
        }
    }
}

/// Verifies the checksum and splits a sentence (from `$`/`!` up to the end of the line) into
/// fields. Pure; exposed for the fuzz tests and the benchmark.
fn split(sentence: &[u8]) -> Result<Fields<'_>, NmeaError> {
    let body_end = sentence
        .iter()
        .rposition(|&b| b == b'*')
        .ok_or(NmeaError::NoChecksum)?;
    let body = &sentence[1..body_end];
    let tail = &sentence[body_end + 1..];
    if tail.len() < 2 {
        return Err(NmeaError::NoChecksum);
    }
    let stated = hex_byte(tail[0], tail[1]).ok_or(NmeaError::NoChecksum)?;
    if tail[2..].iter().any(|&b| !b.is_ascii_whitespace()) {
        return Err(NmeaError::NoChecksum);
    }
    let mut computed = 0u8;
    for &b in body {
        if b >= 0x80 {
            return Err(NmeaError::NotAscii);
        }
        computed ^= b;
    }
    if computed != stated {
        return Err(NmeaError::BadChecksum { stated, computed });
    }
    // All bytes are ASCII, so this cannot fail; no unsafe needed for the speed it would buy.
    let body = std::str::from_utf8(body).map_err(|_| NmeaError::NotAscii)?;
    let mut f = [""; 40];
    let mut n = 0;
    for part in body.split(',') {
        if n == f.len() {
            break;
        }
        f[n] = part;
        n += 1;
    }
    Ok(Fields {
        address: f[0],
        f,
        n,
    })
}

fn hex_byte(h: u8, l: u8) -> Option<u8> {
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'A'..=b'F' => Some(c - b'A' + 10),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    Some(nib(h)? << 4 | nib(l)?)
}

/// Where the sentence in a line starts: its last `$` or `!` (noise before it is dropped).
pub fn sentence_start(line: &[u8]) -> Option<usize> {
    line.iter().rposition(|&b| b == b'$' || b == b'!')
}

impl NmeaDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one line. `Ok(None)` for a valid sentence of a type that carries nothing we use.
    pub fn decode_line(&mut self, line: &[u8]) -> Result<Option<Reading>, NmeaError> {
        let start = sentence_start(line).ok_or(NmeaError::NoStart)?;
        let mut s = &line[start..];
        while let [rest @ .., b'\r' | b'\n'] = s {
            s = rest;
        }
        if s.len() > MAX_SENTENCE {
            return Err(NmeaError::TooLong);
        }
        let fields = split(s)?;
        if s[0] == b'!' || fields.address.len() != 5 || fields.address.starts_with('P') {
            return Ok(None); // AIS, proprietary or odd addresses: valid, not ours
        }
        match &fields.address[2..] {
            "RMC" => self.rmc(&fields).map(Some),
            "GGA" => self.gga(&fields).map(Some),
            "GNS" => self.gns(&fields).map(Some),
            "GLL" => self.gll(&fields).map(Some),
            "VTG" => vtg(&fields).map(Some),
            "GSA" => gsa(&fields).map(Some),
            "ZDA" => self.zda(&fields),
            _ => Ok(None),
        }
    }

    fn rmc(&mut self, f: &Fields) -> Result<Reading, NmeaError> {
        const S: &str = "RMC";
        need(S, f, 10)?;
        let tod = tod(S, f, 1)?;
        let date = date_ddmmyy(S, f, 9)?;
        if let Some(d) = date {
            self.date = Some(d);
            self.date_tod = tod.unwrap_or(0.0);
        }
        let mode = f.get(12);
        let valid = f.get(2) == "A" && mode != "N";
        let time = match (date, tod) {
            (Some(d), Some(t)) => Some(stamp(d, t)),
            _ => None,
        };
        // A void sentence may carry nonsense coordinates (tn200 sends 36000.0000): no fix.
        let Some((lat, lon)) =
            latlon(S, f, 3).or_else(|e| if valid { Err(e) } else { Ok(None) })?
        else {
            return Ok(Reading::NoFix(NoFix {
                source: S,
                time,
                time_of_day: tod,
            }));
        };
        Ok(Reading::Position(Position {
            source: S,
            time,
            time_of_day: if time.is_none() { tod } else { None },
            lat,
            lon,
            valid,
            speed: num(S, f, 7, "speed")?.map(|k| k * KNOT_KMH),
            course: num(S, f, 8, "course")?,
            ..Position::default()
        }))
    }

    fn gga(&mut self, f: &Fields) -> Result<Reading, NmeaError> {
        const S: &str = "GGA";
        need(S, f, 10)?;
        let tod = tod(S, f, 1)?;
        let (time, time_of_day) = self.complete(tod);
        let quality = int(S, f, 6, "quality")?;
        let void = quality == Some(0);
        let Some((lat, lon)) = latlon(S, f, 2).or_else(|e| if void { Ok(None) } else { Err(e) })?
        else {
            return Ok(Reading::NoFix(NoFix {
                source: S,
                time,
                time_of_day,
            }));
        };
        Ok(Reading::Position(Position {
            source: S,
            time,
            time_of_day,
            lat,
            lon,
            valid: quality.is_some_and(|q| q > 0),
            satellites: int(S, f, 7, "satellites")?.map(|n| n.min(u16::MAX as u64) as u16),
            hdop: num(S, f, 8, "hdop")?,
            altitude: num(S, f, 9, "altitude")?,
            ..Position::default()
        }))
    }

    fn gns(&mut self, f: &Fields) -> Result<Reading, NmeaError> {
        const S: &str = "GNS";
        need(S, f, 10)?;
        let tod = tod(S, f, 1)?;
        let (time, time_of_day) = self.complete(tod);
        let Some((lat, lon)) = latlon(S, f, 2)? else {
            return Ok(Reading::NoFix(NoFix {
                source: S,
                time,
                time_of_day,
            }));
        };
        // One mode letter per constellation; N means no fix from that one.
        let valid = f.get(6).bytes().any(|m| m != b'N');
        Ok(Reading::Position(Position {
            source: S,
            time,
            time_of_day,
            lat,
            lon,
            valid,
            satellites: int(S, f, 7, "satellites")?.map(|n| n.min(u16::MAX as u64) as u16),
            hdop: num(S, f, 8, "hdop")?,
            altitude: num(S, f, 9, "altitude")?,
            ..Position::default()
        }))
    }

    fn gll(&mut self, f: &Fields) -> Result<Reading, NmeaError> {
        const S: &str = "GLL";
        need(S, f, 5)?;
        let tod = tod(S, f, 5)?;
        let (time, time_of_day) = self.complete(tod);
        let Some((lat, lon)) = latlon(S, f, 1)? else {
            return Ok(Reading::NoFix(NoFix {
                source: S,
                time,
                time_of_day,
            }));
        };
        // Old receivers send GLL without the status field; treat that as valid like gpsd does.
        let status = f.get(6);
        let valid = (status.is_empty() || status == "A") && f.get(7) != "N";
        Ok(Reading::Position(Position {
            source: S,
            time,
            time_of_day,
            lat,
            lon,
            valid,
            ..Position::default()
        }))
    }

    fn zda(&mut self, f: &Fields) -> Result<Option<Reading>, NmeaError> {
        const S: &str = "ZDA";
        need(S, f, 5)?;
        let tod = tod(S, f, 1)?;
        let (d, m, y) = (
            int(S, f, 2, "day")?,
            int(S, f, 3, "month")?,
            int(S, f, 4, "year")?,
        );
        if let (Some(d), Some(m), Some(y)) = (d, m, y) {
            let month = u8::try_from(m).ok().and_then(|m| Month::try_from(m).ok());
            let date = month.and_then(|mo| Date::from_calendar_date(y as i32, mo, d as u8).ok());
            let date = date.ok_or_else(|| bad(S, 2, "date", f.get(2)))?;
            self.date = Some(date);
            self.date_tod = tod.unwrap_or(0.0);
        }
        Ok(None)
    }

    /// A full timestamp from a time of day and the last date seen, or the time of day alone.
    fn complete(&mut self, tod: Option<f64>) -> (Option<OffsetDateTime>, Option<f64>) {
        let (Some(t), Some(mut d)) = (tod, self.date) else {
            return (None, tod);
        };
        // A time of day well before the one the date came with means midnight has passed.
        if t + 43_200.0 < self.date_tod {
            if let Some(next) = d.next_day() {
                d = next;
                self.date = Some(d);
                self.date_tod = t;
            }
        }
        (Some(stamp(d, t)), None)
    }
}

fn vtg(f: &Fields) -> Result<Reading, NmeaError> {
    const S: &str = "VTG";
    // NMEA 2.0+: course,T,course,M,knots,N,kmh,K[,mode]; NMEA 1.5: course,course,knots,kmh.
    if f.get(2) == "T" {
        need(S, f, 8)?;
        let kmh = match num(S, f, 7, "speed km/h")? {
            Some(v) => Some(v),
            None => num(S, f, 5, "speed knots")?.map(|k| k * KNOT_KMH),
        };
        Ok(Reading::Motion(Motion {
            source: S,
            speed: kmh,
            course: num(S, f, 1, "course")?,
        }))
    } else {
        need(S, f, 5)?;
        Ok(Reading::Motion(Motion {
            source: S,
            speed: num(S, f, 4, "speed km/h")?,
            course: num(S, f, 1, "course")?,
        }))
    }
}

fn gsa(f: &Fields) -> Result<Reading, NmeaError> {
    const S: &str = "GSA";
    need(S, f, 18)?;
    let mut used = Vec::new();
    for i in 3..15 {
        if let Some(prn) = int(S, f, i, "prn")? {
            used.push(prn.min(u16::MAX as u64) as u16);
        }
    }
    Ok(Reading::Dop(Dop {
        source: S,
        mode: int(S, f, 2, "mode")?.map(|m| m.min(9) as u8),
        used,
        pdop: num(S, f, 15, "pdop")?,
        hdop: num(S, f, 16, "hdop")?,
        vdop: num(S, f, 17, "vdop")?,
    }))
}

fn need(sentence: &'static str, f: &Fields, n: usize) -> Result<(), NmeaError> {
    if f.n < n {
        return Err(NmeaError::TooFewFields {
            sentence,
            got: f.n.saturating_sub(1),
            need: n - 1,
        });
    }
    Ok(())
}

fn bad(sentence: &'static str, field: usize, name: &'static str, value: &str) -> NmeaError {
    NmeaError::BadField {
        sentence,
        field,
        name,
        value: value.chars().take(32).collect(),
    }
}

fn num(
    s: &'static str,
    f: &Fields,
    i: usize,
    name: &'static str,
) -> Result<Option<f64>, NmeaError> {
    let v = f.get(i);
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(bad(s, i, name, v)),
    }
}

fn int(
    s: &'static str,
    f: &Fields,
    i: usize,
    name: &'static str,
) -> Result<Option<u64>, NmeaError> {
    let v = f.get(i);
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<u64>().map(Some).map_err(|_| bad(s, i, name, v))
}

/// `hhmmss[.sss]` to seconds since midnight.
fn tod(s: &'static str, f: &Fields, i: usize) -> Result<Option<f64>, NmeaError> {
    let v = f.get(i);
    if v.is_empty() {
        return Ok(None);
    }
    let b = v.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut n = 0u32;
        for &c in b.get(r)? {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + (c - b'0') as u32;
        }
        Some(n)
    };
    let parsed = (|| {
        let (h, m) = (digits(0..2)?, digits(2..4)?);
        let sec: f64 = v.get(4..)?.parse().ok()?;
        // 60 is a leap second.
        (h < 24 && m < 60 && (0.0..61.0).contains(&sec)).then(|| (h * 3600 + m * 60) as f64 + sec)
    })();
    parsed.map(Some).ok_or_else(|| bad(s, i, "time", v))
}

/// `ddmmyy` to a date; two-digit years are 1980–2079.
fn date_ddmmyy(s: &'static str, f: &Fields, i: usize) -> Result<Option<Date>, NmeaError> {
    let v = f.get(i);
    if v.is_empty() {
        return Ok(None);
    }
    ddmmyy(v).map(Some).ok_or_else(|| bad(s, i, "date", v))
}

/// `ddmmyy` to a date; two-digit years are 1980–2079. Shared with Wialon IPS.
pub(crate) fn ddmmyy(v: &str) -> Option<Date> {
    if v.len() != 6 || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| v[r].parse::<u8>().ok();
    let (d, m, y) = (n(0..2)?, n(2..4)?, n(4..6)? as i32);
    let year = if y < 80 { 2000 + y } else { 1900 + y };
    Date::from_calendar_date(year, Month::try_from(m).ok()?, d).ok()
}

fn stamp(d: Date, tod: f64) -> OffsetDateTime {
    let whole = tod.trunc() as u32;
    let nanos = ((tod - tod.trunc()) * 1e9).round().min(999_999_999.0) as u32;
    // A leap second (60) is folded into :59.999 rather than refused.
    let (h, m, s) = (
        (whole / 3600) as u8,
        ((whole / 60) % 60) as u8,
        (whole % 60).min(59) as u8,
    );
    let t = Time::from_hms_nano(h, m, s, nanos).unwrap_or(Time::MIDNIGHT);
    d.with_time(t).assume_utc()
}

/// Latitude and longitude from four fields starting at `i`; `None` when the receiver left them
/// empty (no fix).
fn latlon(s: &'static str, f: &Fields, i: usize) -> Result<Option<(f64, f64)>, NmeaError> {
    let (la, ns, lo, ew) = (f.get(i), f.get(i + 1), f.get(i + 2), f.get(i + 3));
    if la.is_empty() || lo.is_empty() {
        return Ok(None);
    }
    let lat = ddmm_to_degrees(la)
        .filter(|d| *d <= 90.0)
        .ok_or_else(|| bad(s, i, "latitude", la))?;
    let lon = ddmm_to_degrees(lo)
        .filter(|d| *d <= 180.0)
        .ok_or_else(|| bad(s, i + 2, "longitude", lo))?;
    let lat = match ns {
        "N" => lat,
        "S" => -lat,
        _ => return Err(bad(s, i + 1, "N/S", ns)),
    };
    let lon = match ew {
        "E" => lon,
        "W" => -lon,
        _ => return Err(bad(s, i + 3, "E/W", ew)),
    };
    Ok(Some((lat, lon)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Reading {
        NmeaDecoder::new()
            .decode_line(line.as_bytes())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn rmc_gives_a_dated_position_in_signed_degrees() {
        // time 17:19:26.00, status A, 44°04.14063' N, 121°18.85478' W, 0.117 kn, no course,
        // date 18 March 2015, no magnetic variation, mode A (autonomous)
        let r = one("$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76");
        let p = r.position().unwrap();
        assert_eq!(p.source, "RMC");
        assert!((p.lat - 44.069010500).abs() < 1e-9);
        assert!((p.lon - -121.314246333).abs() < 1e-9);
        assert!(p.valid);
        assert_eq!(
            p.time.unwrap().to_string(),
            "2015-03-18 17:19:26.0 +00:00:00"
        );
        assert!((p.speed.unwrap() - 0.117 * 1.852).abs() < 1e-9);
        assert_eq!(p.course, None, "an empty course stays absent");
    }

    #[test]
    fn gga_takes_its_date_from_the_last_rmc_and_keeps_empty_fields_absent() {
        let mut d = NmeaDecoder::new();
        d.decode_line(b"$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76")
            .unwrap();
        // time, lat, N, lon, W, quality 1 (GPS fix), 12 satellites, hdop 0.91, 1147.2 m MSL,
        // geoid separation -21.3 m, no DGPS age, no station
        let r = d
            .decode_line(
                b"$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44",
            )
            .unwrap()
            .unwrap();
        let p = r.position().unwrap();
        assert_eq!(
            p.time.unwrap().to_string(),
            "2015-03-18 17:19:26.0 +00:00:00"
        );
        assert_eq!(
            (p.satellites, p.hdop, p.altitude),
            (Some(12), Some(0.91), Some(1147.2))
        );
        assert!(p.valid);
        assert_eq!(p.speed, None);
    }

    #[test]
    fn gga_without_a_date_carries_the_time_of_day() {
        let r = one("$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44");
        let p = r.position().unwrap();
        assert_eq!((p.time, p.time_of_day), (None, Some(62366.0)));
    }

    #[test]
    fn an_empty_position_is_no_fix_not_zero() {
        // quality 0, everything empty: a receiver still searching
        let r = one("$GPGGA,,,,,,0,00,99.99,,,,,,*48");
        assert!(matches!(r, Reading::NoFix(_)), "{r:?}");
    }

    #[test]
    fn a_void_rmc_is_an_invalid_position() {
        let r = one("$GPRMC,225446,V,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E*7F");
        let p = r.position().unwrap();
        assert!(!p.valid);
        assert!((p.lat - (49.0 + 16.45 / 60.0)).abs() < 1e-12);
    }

    #[test]
    fn a_wrong_checksum_is_refused_and_names_both_values() {
        let e = NmeaDecoder::new()
            .decode_line(b"$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*77")
            .unwrap_err();
        assert_eq!(
            e,
            NmeaError::BadChecksum {
                stated: 0x77,
                computed: 0x76
            }
        );
    }

    #[test]
    fn noise_before_the_dollar_is_skipped() {
        let r =
            one("r\u{1}x$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76\r\n");
        assert!(r.position().is_some());
    }

    #[test]
    fn gsa_lists_the_satellites_in_use() {
        // auto, 3D fix, PRNs 01 11 31 14 22 32 04 25 03, PDOP 1.56 HDOP 0.91 VDOP 1.27
        let r = one("$GNGSA,A,3,01,11,31,14,22,32,04,25,03,,,,1.56,0.91,1.27*15");
        let Reading::Dop(d) = r else { panic!("{r:?}") };
        assert_eq!(d.mode, Some(3));
        assert_eq!(d.used, vec![1, 11, 31, 14, 22, 32, 4, 25, 3]);
        assert_eq!(
            (d.pdop, d.hdop, d.vdop),
            (Some(1.56), Some(0.91), Some(1.27))
        );
    }

    #[test]
    fn vtg_prefers_the_kmh_field() {
        // no true course, no magnetic, 0.117 kn, 0.216 km/h, mode A
        let Reading::Motion(m) = one("$GNVTG,,T,,M,0.117,N,0.216,K,A*3F") else {
            panic!()
        };
        assert_eq!((m.speed, m.course), (Some(0.216), None));
    }

    #[test]
    fn gns_mode_letters_decide_validity() {
        let line = "$GNGNS,014035.00,4332.69262,S,17235.48549,E,RR,13,0.9,25.63,11.24,,*70";
        let p = one(line);
        let p = p.position().unwrap();
        assert!(p.valid);
        assert!(p.lat < 0.0 && p.lon > 0.0);
    }

    #[test]
    fn zda_dates_the_following_sentences_and_midnight_rolls_over() {
        let mut d = NmeaDecoder::new();
        assert_eq!(
            d.decode_line(b"$GPZDA,235959.00,31,12,2023,00,00*65")
                .unwrap(),
            None
        );
        let r = d
            .decode_line(b"$GPGLL,4404.14063,N,12118.85478,W,000001.00,A,A*73")
            .unwrap()
            .unwrap();
        assert_eq!(
            r.position().unwrap().time.unwrap().to_string(),
            "2024-01-01 0:00:01.0 +00:00:00"
        );
    }

    #[test]
    fn other_sentences_are_valid_and_yield_nothing() {
        let mut d = NmeaDecoder::new();
        assert_eq!(
            d.decode_line(b"$GLGSV,3,3,10,83,27,309,29,84,01,353,*63")
                .unwrap(),
            None
        );
        assert_eq!(d.decode_line(b"$PGRMZ,246,f,3*1B").unwrap(), None);
    }
}
