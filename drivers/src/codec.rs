//! `tokio_util` codecs over the pure parsers: they only cut a byte stream into frames, with each
//! protocol's maximum frame size and resynchronisation. Decoding the frame is the parser's job.
//!
//! Garbage never ends the stream: it comes out as [`Cut::Noise`] (to be counted and logged) and
//! the codec goes on at the next plausible frame start. Memory is bounded by the protocol's
//! maximum frame: a text line longer than that is discarded up to its end.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use crate::decode::Protocol;
use crate::{arnavi, egts, galileo, lane, teltonika};

/// What the codec cut from the stream.
#[derive(Debug, PartialEq)]
pub enum Cut {
    /// One whole frame (for text protocols: one line without its line ending).
    Frame(BytesMut),
    /// Bytes that were skipped, and why.
    Noise(String),
}

/// The longest line a text protocol may send before it counts as garbage.
pub fn max_line(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Nmea => crate::nmea::MAX_SENTENCE,
        Protocol::Rpm => crate::rpm::MAX_LINE,
        _ => crate::wialon::MAX_LINE,
    }
}

/// Frame cutter for one connection or serial port.
#[derive(Debug)]
pub struct FrameCodec {
    protocol: Protocol,
    /// Teltonika: the IMEI handshake has been seen.
    handshaken: bool,
    /// Text: inside an over-long line, dropping bytes until its end.
    discarding: bool,
}

impl FrameCodec {
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            handshaken: false,
            discarding: false,
        }
    }

    fn text(&mut self, src: &mut BytesMut) -> Option<Cut> {
        let max = max_line(self.protocol);
        loop {
            match src.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let mut line = src.split_to(i + 1);
                    if std::mem::take(&mut self.discarding) {
                        continue; // the tail of a line already reported as too long
                    }
                    line.truncate(i);
                    if line.last() == Some(&b'\r') {
                        line.truncate(i - 1);
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some(Cut::Frame(line));
                }
                None if src.len() > max => {
                    src.clear();
                    let first = !self.discarding;
                    self.discarding = true;
                    if first {
                        return Some(Cut::Noise(format!("line longer than {max} bytes dropped")));
                    }
                    return None;
                }
                None => return None,
            }
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Cut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Cut>, Self::Error> {
        if src.is_empty() {
            return Ok(None);
        }
        Ok(match self.protocol {
            Protocol::Egts => match egts::scan(src) {
                egts::Scan::Packet(n) => Some(Cut::Frame(src.split_to(n))),
                egts::Scan::Incomplete => None,
                egts::Scan::Skip(n, e) => {
                    src.advance(n);
                    Some(Cut::Noise(e.to_string()))
                }
            },
            Protocol::Teltonika => match teltonika::scan(src, self.handshaken) {
                teltonika::Scan::Imei(n) => {
                    self.handshaken = true;
                    Some(Cut::Frame(src.split_to(n)))
                }
                teltonika::Scan::Avl(n) => Some(Cut::Frame(src.split_to(n))),
                teltonika::Scan::KeepAlive => Some(Cut::Frame(src.split_to(1))),
                teltonika::Scan::Incomplete => None,
                teltonika::Scan::Skip(n, e) => {
                    src.advance(n);
                    Some(Cut::Noise(e.to_string()))
                }
            },
            Protocol::Galileosky => match galileo::scan(src) {
                galileo::Scan::Packet(n) => Some(Cut::Frame(src.split_to(n))),
                galileo::Scan::Incomplete => None,
                galileo::Scan::Skip(n, e) => {
                    src.advance(n);
                    Some(Cut::Noise(e.to_string()))
                }
            },
            Protocol::Arnavi => match arnavi::scan(src) {
                arnavi::Scan::Message(n) => Some(Cut::Frame(src.split_to(n))),
                arnavi::Scan::Incomplete => None,
                arnavi::Scan::Skip(n, e) => {
                    src.advance(n);
                    Some(Cut::Noise(e.to_string()))
                }
            },
            Protocol::Lane => match lane::scan(src) {
                lane::Scan::Frame(_, n) => Some(Cut::Frame(src.split_to(n))),
                lane::Scan::Incomplete => None,
                lane::Scan::Skip(n, e) => {
                    src.advance(n);
                    Some(Cut::Noise(e.to_string()))
                }
            },
            Protocol::Nmea | Protocol::Wialon | Protocol::Rpm => self.text(src),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuts(protocol: Protocol, chunks: &[&[u8]]) -> Vec<Cut> {
        let mut c = FrameCodec::new(protocol);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(cut) = c.decode(&mut buf).unwrap() {
                out.push(cut);
            }
        }
        out
    }

    #[test]
    fn lines_are_cut_across_reads_without_their_endings() {
        let out = cuts(Protocol::Rpm, &[b"GS,1,2", b",3,4\r\n\r\nGB,1,1,1,1\n"]);
        assert_eq!(
            out,
            vec![
                Cut::Frame(BytesMut::from(&b"GS,1,2,3,4"[..])),
                Cut::Frame(BytesMut::from(&b"GB,1,1,1,1"[..]))
            ]
        );
    }

    #[test]
    fn an_endless_line_costs_one_noise_report_and_bounded_memory() {
        let junk = vec![b'x'; 300];
        let out = cuts(Protocol::Nmea, &[&junk, &junk, &junk, b"tail\n$GPGGA*00\n"]);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(&out[0], Cut::Noise(m) if m.contains("longer than")));
        assert_eq!(out[1], Cut::Frame(BytesMut::from(&b"$GPGGA*00"[..])));
    }

    #[test]
    fn teltonika_handshake_then_packets() {
        let mut stream = b"\x00\x0f356307042441013".to_vec();
        stream.extend_from_slice(b"junk");
        let out = cuts(Protocol::Teltonika, &[&stream]);
        assert!(matches!(&out[0], Cut::Frame(f) if f.len() == 17));
        assert!(matches!(&out[1], Cut::Noise(_)));
    }
}
