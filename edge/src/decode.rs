//! `acsgd decode`: a capture to JSON lines, one object per decoded message, through the same
//! drivers the service runs.
//!
//! Input numbering (`"input": N`) is the 1-based line for text protocols and for `--hex`
//! captures (one packet per line), and the 1-based packet for raw binary streams. An input
//! that does not decode prints `{"input": N, "kind": "error", "error": "…"}` and decoding goes
//! on; only an unreadable input is an error of the command.

use std::io::{BufRead, BufWriter, Read, Write};
use std::path::Path;

use acsgd_drivers::decode::{unhex, Decoded, Decoder, Protocol};
use serde_json::{json, Map, Value};

/// Decodes `input` (a file, or stdin for `-`/`None`) and writes JSON lines to `out`.
pub fn run(
    protocol: Protocol,
    hex: bool,
    input: Option<&Path>,
    out: impl Write,
) -> Result<(), String> {
    // The input is read a part at a time: a capture of any size decodes in the memory of
    // its largest frame or line.
    let (mut reader, name): (Box<dyn Read>, String) = match input {
        Some(p) if p != Path::new("-") => (
            Box::new(
                std::fs::File::open(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
            ),
            p.display().to_string(),
        ),
        _ => (Box::new(std::io::stdin().lock()), "standard input".into()),
    };
    let read_err = |e: std::io::Error| format!("cannot read {name}: {e}");
    let mut out = BufWriter::new(out);
    let mut d = Decoder::new(protocol);
    let mut emit = |n: usize, decoded: Decoded| -> std::io::Result<()> {
        match decoded {
            Ok(readings) => {
                for r in readings {
                    let mut m = Map::new();
                    m.insert("input".into(), json!(n));
                    if let Ok(Value::Object(fields)) = serde_json::to_value(&r) {
                        m.extend(fields);
                    }
                    serde_json::to_writer(&mut out, &m)?;
                    out.write_all(b"\n")?;
                }
            }
            Err(e) => {
                serde_json::to_writer(&mut out, &json!({"input": n, "kind": "error", "error": e}))?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    };
    // A closed pipe (`acsgd decode … | head`) ends the output quietly, as other tools do.
    let write_err = |e: std::io::Error| format!("cannot write output: {e}");
    let result = (|| -> Result<(), Failure> {
        if hex || protocol.is_text() {
            let mut r = std::io::BufReader::with_capacity(PART, &mut reader);
            let mut line = Vec::new();
            for i in 1.. {
                line.clear();
                let n = (&mut r)
                    .take(MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .map_err(|e| Failure::Read(read_err(e)))?;
                if n == 0 {
                    break;
                }
                if n > MAX_LINE && line.last() != Some(&b'\n') {
                    // Too long to be one message: the rest of the line goes unread.
                    skip_line(&mut r).map_err(|e| Failure::Read(read_err(e)))?;
                    emit(i, Err(format!("line longer than {MAX_LINE} bytes")))?;
                    continue;
                }
                let trimmed = trim(line.strip_suffix(b"\n").unwrap_or(&line));
                // Blank lines and comments are not inputs. NMEA and RPM captures (gpsd's logs)
                // mark comments with '#'; Wialon packets start with '#', so only a hex capture
                // or a line protocol whose messages never start with '#' may have comments.
                let comment =
                    trimmed.first() == Some(&b'#') && (hex || protocol != Protocol::Wialon);
                if trimmed.is_empty() || comment {
                    continue;
                }
                let decoded = if hex {
                    match unhex(trimmed) {
                        Ok(packet) => d.packet(&packet),
                        Err(e) => Err(e),
                    }
                } else {
                    d.packet(trimmed)
                };
                emit(i, decoded)?;
            }
        } else {
            let mut buf: Vec<u8> = Vec::with_capacity(2 * PART);
            let mut n = 0;
            loop {
                let start = buf.len();
                buf.resize(start + PART, 0);
                let got = loop {
                    match reader.read(&mut buf[start..]) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        r => break r.map_err(|e| Failure::Read(read_err(e)))?,
                    }
                };
                buf.truncate(start + got);
                let eof = got == 0;
                let (decoded, used) = d.stream_part(&buf, eof);
                for item in decoded {
                    n += 1;
                    emit(n, item)?;
                }
                buf.drain(..used);
                if eof {
                    break;
                }
            }
        }
        Ok(())
    })();
    match result.and_then(|()| out.flush().map_err(Failure::Write)) {
        Err(Failure::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(Failure::Write(e)) => Err(write_err(e)),
        Err(Failure::Read(e)) => Err(e),
        Ok(()) => Ok(()),
    }
}

/// Bytes read at a time.
const PART: usize = 64 * 1024;

/// The longest line of a text or hex capture: a hex line of the largest binary frame (64 KiB)
/// and then some.
pub const MAX_LINE: usize = 256 * 1024;

/// Why decoding stopped.
enum Failure {
    Read(String),
    Write(std::io::Error),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Write(e)
    }
}

/// Reads and drops the rest of an over-long line.
fn skip_line(r: &mut impl std::io::BufRead) -> std::io::Result<()> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

fn trim(mut l: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b' ' | b'\t'] = l {
        l = rest;
    }
    while let [b' ' | b'\t', rest @ ..] = l {
        l = rest;
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(protocol: Protocol, hex: bool, input: &str) -> Vec<Value> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, input).unwrap();
        let mut out = Vec::new();
        run(protocol, hex, Some(&path), &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn nmea_lines_become_numbered_positions_and_errors() {
        let out = decode(
            Protocol::Nmea,
            false,
            "# a comment\n$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76\r\n$GNRMC,bad*00\n$GLGSV,3,3,10,83,27,309,29,84,01,353,*63\n",
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["input"], 2);
        assert_eq!(out[0]["kind"], "position");
        assert_eq!(out[0]["time"], "2015-03-18T17:19:26Z");
        assert_eq!(out[0]["valid"], true);
        assert!((out[0]["lon"].as_f64().unwrap() + 121.314246333).abs() < 1e-9);
        assert_eq!(out[1]["input"], 3);
        assert_eq!(out[1]["kind"], "error");
        assert!(out[1]["error"].as_str().unwrap().contains("checksum"));
    }

    #[test]
    fn hex_lines_are_packets_even_for_text_protocols() {
        let line: String = b"#SD#270413;205601;5544.6025;N;03739.6834;E;1;2;3;4"
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let out = decode(Protocol::Wialon, true, &format!("{line}\nzz\n"));
        assert_eq!(out[0]["kind"], "position");
        assert_eq!(out[0]["satellites"], 4);
        assert_eq!(
            out[1],
            json!({"input": 2, "kind": "error", "error": "not hex: \"zz\""})
        );
    }

    #[test]
    fn a_raw_lane_stream_is_cut_into_frames_with_noise_reported_once() {
        use acsgd_drivers::lane::{encode, Body, Frame, MAX_FRAME};
        let mut bytes = b"noise!".to_vec();
        for seq in 0..3u8 {
            let mut buf = [0u8; MAX_FRAME];
            let f = Frame {
                addr: 1,
                seq,
                body: Body::Loop {
                    t_ms: 5,
                    loop_id: 1,
                    occupied: seq % 2 == 0,
                },
            };
            let n = encode(&f, &mut buf).unwrap();
            bytes.extend_from_slice(&buf[..n]);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, &bytes).unwrap();
        let mut out = Vec::new();
        run(Protocol::Lane, false, Some(&path), &mut out).unwrap();
        let v: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0]["kind"], "error");
        assert_eq!(
            (
                v[1]["kind"].as_str(),
                v[1]["frame"].as_str(),
                v[3]["seq"].as_u64()
            ),
            (Some("lane"), Some("loop"), Some(2))
        );
    }

    #[test]
    fn galileosky_and_arnavi_decode_from_hex_and_from_a_raw_stream() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut tags = vec![0x03];
        tags.extend(b"868204001549087");
        tags.push(0x20);
        tags.extend(1_700_000_000u32.to_le_bytes());
        tags.extend([0x30, 0x07]);
        tags.extend(43_238_949i32.to_le_bytes());
        tags.extend(76_889_709i32.to_le_bytes());
        let mut g = vec![0x01];
        g.extend((tags.len() as u16).to_le_bytes());
        g.extend(&tags);
        g.extend(acsgd_drivers::crc::crc16_modbus(&g).to_le_bytes());
        let out = decode(Protocol::Galileosky, true, &hex(&g));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0]["kind"].as_str(), out[0]["device"].as_str()),
            (Some("position"), Some("868204001549087"))
        );
        assert!((out[0]["lat"].as_f64().unwrap() - 43.238949).abs() < 1e-9);

        // Arnavi: a header in hex, then a text line in a raw capture.
        let mut header = vec![0xFF, 0x23];
        header.extend(861_785_007_918_323u64.to_le_bytes());
        let out = decode(Protocol::Arnavi, true, &hex(&header));
        assert_eq!(
            (out[0]["kind"].as_str(), out[0]["device"].as_str()),
            (Some("login"), Some("861785007918323"))
        );
        let body = "AV,V2,32768,12487,2277,203,-1,0,0,193,0,0,1,13,200741,5950.6773N,03029.1043E,0.0,0.0,121012,";
        let cs = body.bytes().fold(0u8, |a, b| a ^ b);
        let out = decode(
            Protocol::Arnavi,
            false,
            &format!("${body}*{cs:02X}\r\n${body}*00"),
        );
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0]["kind"], "position");
        // The second line's checksum is wrong: read, with the warning that it is not acknowledged.
        assert_eq!(
            (out[1]["kind"].as_str(), out[2]["kind"].as_str()),
            (Some("position"), Some("warning"))
        );
    }

    #[test]
    fn an_unreadable_input_is_an_error_of_the_command() {
        let e = run(
            Protocol::Nmea,
            false,
            Some(Path::new("/nonexistent/capture")),
            Vec::new(),
        )
        .unwrap_err();
        assert!(e.starts_with("cannot read /nonexistent/capture"), "{e}");
    }
}
