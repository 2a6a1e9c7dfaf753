//! Radiation portal monitor line protocol (Rapiscan-style, as OpenSensorHub's OSCAR drivers parse
//! it): one CSV line per message, the first field a code.
//!
//! ```text
//! GS,000061,000058,000064,000059\r\n
//! └┤ └─┬──┘ └─┬──┘ └─┬──┘ └─┬──┘
//!  │  detector 1 … 4 counts, zero-padded
//!  code
//! ```
//!
//! | code | meaning | fields |
//! |---|---|---|
//! | `GB` / `NB` | gamma / neutron background, lane empty | 4 counts per second |
//! | `GS` / `NS` | gamma / neutron scan, lane occupied | 4 counts per 200 ms |
//! | `GA` / `NA` | the same while the portal itself is in alarm | 4 counts per 200 ms |
//! | `GX` | occupancy ended | occupancy count, neutron background × 1000, … |
//! | `TC` / `TT` | tamper cleared / tamper | — |
//! | `SP` | vehicle speed | as sent |
//! | `SG1`–`SG3`, `SN1`–`SN2` | gamma / neutron setup (the portal's nσ among them) | as sent |
//! | `GH` / `GL` / `NH` | fault: gamma high, gamma low, neutron high background | counts |
//!
//! Count lines must carry exactly four unsigned counts; other codes keep their fields as
//! numbers where they are numbers and as text where not. An unknown code or a malformed count
//! costs that line.

use serde::Serialize;

/// No RPM line is anywhere near this; it bounds what noise on the line can cost.
pub const MAX_LINE: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpmError {
    #[error("empty line")]
    Empty,
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("line is not ASCII text")]
    NotText,
    #[error("unknown message code {0:?}")]
    UnknownCode(String),
    #[error("{code}: expected 4 detector counts, got {got} fields")]
    CountFields { code: &'static str, got: usize },
    #[error("{code}: detector {detector} count is not an unsigned number: {value:?}")]
    BadCount {
        code: &'static str,
        detector: usize,
        value: String,
    },
}

/// What a line means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RpmCode {
    GammaBackground,
    NeutronBackground,
    GammaScan,
    NeutronScan,
    GammaAlarm,
    NeutronAlarm,
    OccupancyEnd,
    TamperClear,
    Tamper,
    Speed,
    GammaSetup,
    NeutronSetup,
    FaultGammaHigh,
    FaultGammaLow,
    FaultNeutronHigh,
}

impl RpmCode {
    fn from_wire(code: &str) -> Option<(&'static str, RpmCode)> {
        use RpmCode::*;
        Some(match code {
            "GB" => ("GB", GammaBackground),
            "NB" => ("NB", NeutronBackground),
            "GS" => ("GS", GammaScan),
            "NS" => ("NS", NeutronScan),
            "GA" => ("GA", GammaAlarm),
            "NA" => ("NA", NeutronAlarm),
            "GX" => ("GX", OccupancyEnd),
            "TC" => ("TC", TamperClear),
            "TT" => ("TT", Tamper),
            "SP" => ("SP", Speed),
            "SG1" => ("SG1", GammaSetup),
            "SG2" => ("SG2", GammaSetup),
            "SG3" => ("SG3", GammaSetup),
            "SN1" => ("SN1", NeutronSetup),
            "SN2" => ("SN2", NeutronSetup),
            "GH" => ("GH", FaultGammaHigh),
            "GL" => ("GL", FaultGammaLow),
            "NH" => ("NH", FaultNeutronHigh),
            _ => return None,
        })
    }

    /// Lines that carry exactly four detector counts.
    pub fn has_counts(self) -> bool {
        use RpmCode::*;
        matches!(
            self,
            GammaBackground
                | NeutronBackground
                | GammaScan
                | NeutronScan
                | GammaAlarm
                | NeutronAlarm
        )
    }

    /// The portal itself is signalling an alarm.
    pub fn is_portal_alarm(self) -> bool {
        matches!(self, RpmCode::GammaAlarm | RpmCode::NeutronAlarm)
    }
}

/// A field of a non-count line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Number(f64),
    Text(String),
}

/// One decoded line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpmLine {
    /// The code as sent (`GS`, `SG2`, …).
    pub code: &'static str,
    pub meaning: RpmCode,
    /// The four detector counts of a count line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<[u32; 4]>,
    /// The fields of any other line, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Value>,
}

impl RpmLine {
    /// Sum of the four detectors.
    pub fn total(&self) -> Option<u64> {
        self.counts.map(|c| c.iter().map(|&n| n as u64).sum())
    }
}

/// Decodes one line (its line ending may be present).
pub fn parse_line(line: &[u8]) -> Result<RpmLine, RpmError> {
    if line.len() > MAX_LINE {
        return Err(RpmError::TooLong);
    }
    let text = std::str::from_utf8(line).map_err(|_| RpmError::NotText)?;
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
    if text.is_empty() {
        return Err(RpmError::Empty);
    }
    if !text.is_ascii() {
        return Err(RpmError::NotText);
    }
    let mut fields = text.split(',').map(str::trim);
    let raw = fields.next().unwrap_or_default();
    let (code, meaning) = RpmCode::from_wire(raw)
        .ok_or_else(|| RpmError::UnknownCode(raw.chars().take(16).collect()))?;
    let rest: Vec<&str> = fields.collect();
    if meaning.has_counts() {
        // Some firmware ends the line with a comma; an empty last field is not a count.
        let rest: Vec<&str> = match rest.as_slice() {
            [head @ .., ""] => head.to_vec(),
            _ => rest,
        };
        if rest.len() != 4 {
            return Err(RpmError::CountFields {
                code,
                got: rest.len(),
            });
        }
        let mut counts = [0u32; 4];
        for (i, f) in rest.iter().enumerate() {
            counts[i] = f
                .parse()
                .ok()
                .filter(|_| f.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| RpmError::BadCount {
                    code,
                    detector: i + 1,
                    value: f.to_string(),
                })?;
        }
        return Ok(RpmLine {
            code,
            meaning,
            counts: Some(counts),
            values: Vec::new(),
        });
    }
    let values = rest
        .iter()
        .filter(|f| !f.is_empty())
        .map(|f| match f.parse::<f64>() {
            Ok(n) if n.is_finite() => Value::Number(n),
            _ => Value::Text(f.to_string()),
        })
        .collect();
    Ok(RpmLine {
        code,
        meaning,
        counts: None,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_line_gives_four_counts() {
        // GS: gamma scan; detectors 1..4 counted 61, 58, 64 and 59 in this 200 ms interval
        let l = parse_line(b"GS,000061,000058,000064,000059\r\n").unwrap();
        assert_eq!(l.meaning, RpmCode::GammaScan);
        assert_eq!(l.counts, Some([61, 58, 64, 59]));
        assert_eq!(l.total(), Some(242));
    }

    #[test]
    fn alarm_lines_are_marked_as_the_portals_own_alarm() {
        let l = parse_line(b"GA,000900,000880,000410,000395").unwrap();
        assert!(l.meaning.is_portal_alarm());
    }

    #[test]
    fn occupancy_end_keeps_its_numbers() {
        // GX: occupancy 12 ended; neutron background 2.125 cps (sent × 1000)
        let l = parse_line(b"GX,000012,002125").unwrap();
        assert_eq!(l.meaning, RpmCode::OccupancyEnd);
        assert_eq!(l.values, vec![Value::Number(12.0), Value::Number(2125.0)]);
    }

    #[test]
    fn setup_lines_keep_text_and_numbers() {
        let l = parse_line(b"SG1,000150,000800,06.0,0.2,RAPISCAN").unwrap();
        assert_eq!(l.code, "SG1");
        assert_eq!(l.values[2], Value::Number(6.0));
        assert_eq!(l.values[4], Value::Text("RAPISCAN".into()));
    }

    #[test]
    fn tamper_has_no_fields() {
        assert_eq!(parse_line(b"TT").unwrap().meaning, RpmCode::Tamper);
        assert_eq!(parse_line(b"TC\r\n").unwrap().meaning, RpmCode::TamperClear);
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert_eq!(
            parse_line(b"XX,1,2,3,4").unwrap_err(),
            RpmError::UnknownCode("XX".into())
        );
        assert_eq!(
            parse_line(b"GS,1,2,3").unwrap_err(),
            RpmError::CountFields { code: "GS", got: 3 }
        );
        assert!(matches!(
            parse_line(b"GB,000061,-00058,000064,000059").unwrap_err(),
            RpmError::BadCount { detector: 2, .. }
        ));
        assert_eq!(parse_line(b"\r\n").unwrap_err(), RpmError::Empty);
    }
}
