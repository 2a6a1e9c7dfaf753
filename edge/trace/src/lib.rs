//! The trace format (DESIGN.md): what a recording of the post's sensors is on disk, read by
//! `acsgd replay`, the demo's player and the HIL rig, written by `acsgd record` and the
//! simulator.
//!
//! UTF-8 TSV, one reading per line: `offset_ms <TAB> sensor_id <TAB> encoding <TAB> payload`,
//! encoding `text` (the line as the sensor sent it, without its line ending) or `hex` (raw
//! bytes). `#` starts a comment; `# start 2026-05-14T08:00:00Z` sets the wall-clock time of
//! offset 0 (default [`DEFAULT_START`]). What a payload means is its sensor's protocol, not
//! this crate's.

use acsgd_drivers::decode::unhex;

/// Default wall-clock time of offset 0.
pub const DEFAULT_START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// A trace line.
#[derive(Debug, PartialEq)]
pub struct Line<'a> {
    pub offset_ms: i64,
    pub sensor: &'a str,
    pub hex: bool,
    pub payload: &'a str,
}

/// Parses one line; `Ok(None)` for blank lines and comments.
pub fn parse_line(line: &str) -> Result<Option<Line<'_>>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut f = line.splitn(4, '\t');
    let (Some(off), Some(sensor), Some(enc), Some(payload)) =
        (f.next(), f.next(), f.next(), f.next())
    else {
        return Err("expected offset_ms, sensor, encoding and payload separated by tabs".into());
    };
    let offset_ms: i64 = off
        .trim()
        .parse()
        .map_err(|_| format!("offset {off:?} is not a whole number of milliseconds"))?;
    let hex = match enc {
        "text" => false,
        "hex" => true,
        other => return Err(format!("encoding {other:?} is neither text nor hex")),
    };
    Ok(Some(Line {
        offset_ms,
        sensor,
        hex,
        payload,
    }))
}

/// The `# start …` comment's time, if `line` is one.
pub fn start_comment(line: &str) -> Option<Result<i64, String>> {
    let rest = line
        .strip_prefix('#')?
        .trim()
        .strip_prefix("start ")?
        .trim();
    Some(
        time::OffsetDateTime::parse(rest, &time::format_description::well_known::Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .map_err(|e| format!("start time {rest:?}: {e}")),
    )
}

/// A trace line's payload bytes (hex decoded).
pub fn payload(l: &Line) -> Result<Vec<u8>, String> {
    if l.hex {
        unhex(l.payload.as_bytes())
    } else {
        Ok(l.payload.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_lines_parse_or_say_why_not() {
        assert_eq!(
            parse_line("1500\trpm-1\ttext\tGS,000061,000058,000064,000059\r").unwrap(),
            Some(Line {
                offset_ms: 1500,
                sensor: "rpm-1",
                hex: false,
                payload: "GS,000061,000058,000064,000059"
            })
        );
        assert_eq!(parse_line("# a comment").unwrap(), None);
        assert_eq!(parse_line("").unwrap(), None);
        assert!(parse_line("x\ta\ttext\tb").unwrap_err().contains("offset"));
        assert!(parse_line("1\ta\tbase64\tb")
            .unwrap_err()
            .contains("encoding"));
        assert!(parse_line("1\ta\ttext")
            .unwrap_err()
            .contains("separated by tabs"));
        // A payload may itself contain tabs.
        assert_eq!(
            parse_line("1\ta\ttext\tb\tc").unwrap().unwrap().payload,
            "b\tc"
        );
    }

    #[test]
    fn start_comment_sets_the_clock() {
        assert_eq!(
            start_comment("# start 2026-01-01T00:00:00Z")
                .unwrap()
                .unwrap(),
            DEFAULT_START
        );
        assert!(start_comment("# start of shift").unwrap().is_err());
        assert!(start_comment("# started by hand").is_none());
        assert!(start_comment("# nothing").is_none());
    }

    #[test]
    fn payloads_are_text_or_hex() {
        let l = parse_line("0\tnode-1\thex\t02ff").unwrap().unwrap();
        assert_eq!(payload(&l).unwrap(), vec![0x02, 0xff]);
        let l = parse_line("0\trpm-1\ttext\tGB,1").unwrap().unwrap();
        assert_eq!(payload(&l).unwrap(), b"GB,1");
        let l = parse_line("0\tnode-1\thex\t0g").unwrap().unwrap();
        assert!(payload(&l).is_err());
    }
}
