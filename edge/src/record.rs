//! `acsgd record`: captures what a real device sends on a port into the trace format
//! (`offset_ms <TAB> sensor <TAB> text|hex <TAB> payload`), so a field recording becomes a
//! replay or HIL scenario without code.
//!
//! The bytes are cut into frames with the protocol's own framing (the drivers' codec: one
//! NMEA/RPM/Wialon line per trace line, one EGTS/Teltonika packet or lane-node frame per hex
//! line), so the trace replays frame by frame. Bytes the codec skips are kept as a comment
//! line saying why (`# noise: …`), not silently dropped. Sources: a serial port, a TCP
//! listener (each connection recorded as it comes; the recorder answers nothing, so record
//! trackers that wait for acknowledgements from a mirror port of the real server) or a UDP
//! socket (one datagram per line). It stops after `--duration` or on Ctrl-C, flushing what it
//! has.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::envelope::to_hex as hex;
use acsgd_drivers::codec::{Cut, FrameCodec};
use acsgd_drivers::decode::Protocol;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio_util::codec::Decoder;

/// Where the device is.
#[derive(Debug, Clone)]
pub enum Source {
    Serial { path: String, baud: u32 },
    Tcp(std::net::SocketAddr),
    Udp(std::net::SocketAddr),
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot open {what}: {source}")]
    Open {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot write the trace: {0}")]
    Write(std::io::Error),
}

/// What a recording captured.
#[derive(Debug, Default)]
pub struct Summary {
    pub frames: u64,
    pub noise: u64,
    pub connections: u64,
}

struct Writer<W: Write> {
    out: W,
    sensor: String,
    text: bool,
    start: Instant,
    summary: Summary,
}

impl<W: Write> Writer<W> {
    fn cut(&mut self, cut: Cut) -> Result<(), RecordError> {
        let ms = self.start.elapsed().as_millis();
        let line = match cut {
            Cut::Frame(f) => {
                self.summary.frames += 1;
                if self.text {
                    let t = String::from_utf8_lossy(&f);
                    // A tab or newline inside would break the line: such a frame goes as hex.
                    if t.contains(['\t', '\n']) || t.contains('\u{FFFD}') {
                        format!("{ms}\t{}\thex\t{}\n", self.sensor, hex(&f))
                    } else {
                        format!(
                            "{ms}\t{}\ttext\t{}\n",
                            self.sensor,
                            t.trim_end_matches('\r')
                        )
                    }
                } else {
                    format!("{ms}\t{}\thex\t{}\n", self.sensor, hex(&f))
                }
            }
            Cut::Noise(why) => {
                self.summary.noise += 1;
                format!("# {ms} {}: noise: {why}\n", self.sensor)
            }
        };
        self.out
            .write_all(line.as_bytes())
            .and_then(|_| self.out.flush())
            .map_err(RecordError::Write)
    }
}

/// Says on stderr that the source is open: what the device sends from now on is recorded
/// (a serial port's input before its opening is flushed by the opening).
fn ready(what: &str) {
    eprintln!("acsgd record: recording {what} (Ctrl-C stops)");
}

/// Records until `duration` passes (or forever), writing trace lines to `out`.
pub async fn run<W: Write>(
    sensor: &str,
    protocol: Protocol,
    source: Source,
    duration: Option<Duration>,
    out: W,
) -> Result<Summary, RecordError> {
    let mut w = Writer {
        out,
        sensor: sensor.to_string(),
        text: protocol.is_text(),
        start: Instant::now(),
        summary: Summary::default(),
    };
    let header = format!(
        "# recorded by acsgd record: sensor {sensor}, protocol {protocol}, from {source:?}\n# start {}\n",
        crate::envelope::rfc3339_ms(time::OffsetDateTime::now_utc())
    );
    w.out
        .write_all(header.as_bytes())
        .map_err(RecordError::Write)?;
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let stop = crate::service::wait_for_signal();
    tokio::pin!(stop);
    match source {
        Source::Serial { path, baud } => {
            use tokio_serial::SerialPortBuilderExt;
            let mut port = tokio_serial::new(&path, baud)
                .open_native_async()
                .map_err(|e| RecordError::Open {
                    what: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            ready(&path);
            let mut codec = FrameCodec::new(protocol);
            let mut buf = BytesMut::with_capacity(4096);
            loop {
                tokio::select! {
                    r = port.read_buf(&mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            while let Ok(Some(cut)) = codec.decode(&mut buf) {
                                w.cut(cut)?;
                            }
                        }
                    },
                    _ = &mut deadline => break,
                    _ = &mut stop => break,
                }
            }
        }
        Source::Udp(addr) => {
            let sock =
                tokio::net::UdpSocket::bind(addr)
                    .await
                    .map_err(|source| RecordError::Open {
                        what: addr.to_string(),
                        source,
                    })?;
            ready(&addr.to_string());
            let mut buf = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    r = sock.recv_from(&mut buf) => if let Ok((n, _)) = r {
                        w.cut(Cut::Frame(BytesMut::from(&buf[..n])))?;
                    },
                    _ = &mut deadline => break,
                    _ = &mut stop => break,
                }
            }
        }
        Source::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| RecordError::Open {
                    what: addr.to_string(),
                    source,
                })?;
            ready(&addr.to_string());
            // Connections one after another: a device reconnecting is recorded on.
            'accept: loop {
                let mut conn = tokio::select! {
                    r = listener.accept() => match r { Ok((c, _)) => c, Err(_) => continue },
                    _ = &mut deadline => break,
                    _ = &mut stop => break,
                };
                w.summary.connections += 1;
                let mut codec = FrameCodec::new(protocol);
                let mut buf = BytesMut::with_capacity(4096);
                loop {
                    tokio::select! {
                        r = conn.read_buf(&mut buf) => match r {
                            Ok(0) | Err(_) => continue 'accept,
                            Ok(_) => while let Ok(Some(cut)) = codec.decode(&mut buf) {
                                w.cut(cut)?;
                            },
                        },
                        _ = &mut deadline => break 'accept,
                        _ = &mut stop => break 'accept,
                    }
                }
            }
        }
    }
    w.out.flush().map_err(RecordError::Write)?;
    Ok(w.summary)
}
