//! Running the drivers over real links: a TCP server for trackers, a UDP socket, serial ports.
//!
//! Readings leave through a [`Sink`]: a channel of [`Batch`]es, each answered `true` only once
//! its readings are accepted downstream (on the appliance: durably in the outbox). A tracker is
//! acknowledged only after that answer, so what it is told we have, we have; a frame with a bad
//! CRC, or a batch that was not accepted, is not acknowledged and the device sends it again.
//!
//! TCP: one task per connection, a connection limit (connections over it are closed at once
//! and counted), an optional allowlist of device ids (IMEI, EGTS terminal or object id, Wialon
//! login; a device not on it is refused at login and disconnected), and an idle timeout.
//! Serial: the port is reopened with capped backoff whenever it disappears (USB adapters
//! re-enumerate, RS-485 converters lose power); what the appliance sends down the line (lane-node
//! commands, [`Outgoing`]) is written between reads, and dropped unsent once its deadline has
//! passed, so a command queued while the port was gone never moves a barrier minutes late.
//! Bad input costs one frame: counted in
//! [`Stats`] and logged at most once per [`LOG_EVERY`] per link, with the number suppressed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::codec::FramedRead;

use crate::codec::{Cut, FrameCodec};
use crate::decode::{Decoder, Protocol};
use crate::reading::{Heartbeat, Reading};
use crate::wialon::WialonDecoder;
use crate::{arnavi, egts, galileo, teltonika, wialon};

/// At most one warning per link per this interval.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Readings of one frame, waiting for the verdict of whoever stores them.
#[derive(Debug)]
pub struct Batch {
    pub sensor: Arc<str>,
    pub readings: Vec<Reading>,
    /// `true` once accepted (durably); `false` or dropped: not accepted.
    pub accepted: oneshot::Sender<bool>,
}

pub type Sink = mpsc::Sender<Batch>;

/// Sends readings downstream and waits for the verdict.
pub async fn deliver(sink: &Sink, sensor: &Arc<str>, readings: Vec<Reading>) -> bool {
    if readings.is_empty() {
        return true;
    }
    let (tx, rx) = oneshot::channel();
    if sink
        .send(Batch {
            sensor: sensor.clone(),
            readings,
            accepted: tx,
        })
        .await
        .is_err()
    {
        return false;
    }
    rx.await.unwrap_or(false)
}

/// Counters per sensor, read by the health report and the tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub refused_connections: AtomicU64,
    pub frames: AtomicU64,
    pub bad_frames: AtomicU64,
    pub readings: AtomicU64,
    pub acknowledged: AtomicU64,
    /// Frames whose readings were not accepted downstream (not acknowledged).
    pub not_accepted: AtomicU64,
    pub reconnects: AtomicU64,
    /// Commands written to the device (serial lane nodes).
    pub commands: AtomicU64,
    /// Commands dropped unsent because their time had passed (the port was away).
    pub expired_commands: AtomicU64,
}

impl Stats {
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Logs at most once per [`LOG_EVERY`], saying how many were suppressed.
struct Limiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl Limiter {
    fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }
    fn warn(&mut self, link: &str, what: &str) {
        if self.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        let s = std::mem::take(&mut self.suppressed);
        tracing::warn!(link, suppressed = s, "bad input: {what}");
        self.last = Some(Instant::now());
    }
}

/// TCP server options.
#[derive(Debug, Clone)]
pub struct TcpOptions {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// Device ids allowed to connect; `None`: any.
    pub allow: Option<HashSet<String>>,
}

/// Serves trackers on `listener` until `shutdown` turns true.
pub async fn serve_tcp(
    listener: TcpListener,
    protocol: Protocol,
    sensor: Arc<str>,
    opts: TcpOptions,
    sink: Sink,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(opts.max_connections));
    let opts = Arc::new(opts);
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(sensor = &*sensor, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            Stats::inc(&stats.refused_connections);
            tracing::warn!(sensor = &*sensor, %peer, "connection limit {} reached; closing", opts.max_connections);
            drop(sock);
            continue;
        };
        Stats::inc(&stats.connections);
        let (sensor, opts, sink, stats, shutdown) = (
            sensor.clone(),
            opts.clone(),
            sink.clone(),
            stats.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            connection(sock, peer, protocol, sensor, opts, sink, stats, shutdown).await;
            drop(permit);
        });
    }
}

/// What one frame asks of the connection.
#[derive(Default)]
struct Step {
    readings: Vec<Reading>,
    /// Sent once the readings are accepted (or at once when there are none).
    ack: Vec<u8>,
    /// Sent when they are not accepted.
    nack: Vec<u8>,
    /// A refusal to send and then hang up (allowlist).
    refuse: Option<(Vec<u8>, String)>,
    /// The frame was bad (CRC, structure): count it.
    bad: Option<String>,
}

/// Per-connection protocol state.
struct Session {
    protocol: Protocol,
    opts: Arc<TcpOptions>,
    device: Option<String>,
    wialon: WialonDecoder,
    /// Line and lane protocols: the decoder keeps its state (the NMEA date) across frames.
    plain: Decoder,
    egts_pid: u16,
}

impl Session {
    fn allowed(&self, id: &str) -> bool {
        self.opts.allow.as_ref().is_none_or(|a| a.contains(id))
    }

    fn step(&mut self, frame: &[u8]) -> Step {
        match self.protocol {
            Protocol::Teltonika => self.teltonika(frame),
            Protocol::Egts => self.egts(frame),
            Protocol::Wialon => self.wialon(frame),
            Protocol::Galileosky => self.galileo(frame),
            Protocol::Arnavi => self.arnavi(frame),
            _ => {
                // Line and lane protocols over TCP (serial servers): no acknowledgements.
                match self.plain.packet(frame) {
                    Ok(readings) => Step {
                        readings,
                        ..Step::default()
                    },
                    Err(e) => Step {
                        bad: Some(e),
                        ..Step::default()
                    },
                }
            }
        }
    }

    fn teltonika(&mut self, frame: &[u8]) -> Step {
        if self.device.is_none() {
            return match teltonika::parse_imei(frame) {
                Ok(imei) if self.allowed(&imei) => {
                    self.device = Some(imei);
                    Step {
                        ack: vec![0x01],
                        ..Step::default()
                    }
                }
                Ok(imei) => Step {
                    refuse: Some((vec![0x00], format!("IMEI {imei} not on the allowlist"))),
                    ..Step::default()
                },
                Err(e) => Step {
                    bad: Some(e.to_string()),
                    ..Step::default()
                },
            };
        }
        if frame == [teltonika::KEEP_ALIVE] {
            // Keeps the connection open; the device expects no answer.
            return Step {
                readings: vec![Reading::Heartbeat(Heartbeat {
                    device: self.device.clone(),
                })],
                ..Step::default()
            };
        }
        match teltonika::parse_avl(frame, self.device.as_deref()) {
            Ok(avl) if avl.integrity.is_none() => Step {
                ack: teltonika::tcp_ack(avl.count).to_vec(),
                nack: teltonika::tcp_ack(0).to_vec(),
                readings: avl.readings,
                ..Step::default()
            },
            // Decodable but failing its CRC: acknowledge nothing, so the device resends.
            Ok(avl) => Step {
                ack: teltonika::tcp_ack(0).to_vec(),
                bad: avl.integrity,
                ..Step::default()
            },
            Err(e) => Step {
                ack: teltonika::tcp_ack(0).to_vec(),
                bad: Some(e.to_string()),
                ..Step::default()
            },
        }
    }

    /// Galileosky: the first packet names the device (tag 03); each packet is answered with
    /// its own CRC once accepted. There is no negative answer: a packet not answered is sent
    /// again.
    fn galileo(&mut self, frame: &[u8]) -> Step {
        let p = match galileo::parse(frame, self.device.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                return Step {
                    bad: Some(e.to_string()),
                    ..Step::default()
                }
            }
        };
        self.admit("Galileosky", p.imei, p.readings, p.ack, p.integrity)
    }

    /// Arnavi: the header names the device and is answered with the server's time; each
    /// package is answered with its number once accepted; `$AV` lines carry their own device
    /// id and are not answered.
    fn arnavi(&mut self, frame: &[u8]) -> Step {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        let d = match arnavi::parse(frame, self.device.as_deref(), now) {
            Ok(d) => d,
            Err(e) => {
                return Step {
                    bad: Some(e.to_string()),
                    ..Step::default()
                }
            }
        };
        let id = d.imei.clone().or_else(|| {
            // A text line names its device in every line.
            (frame.first() == Some(&b'$'))
                .then(|| d.readings.iter().find_map(reading_device))
                .flatten()
        });
        self.admit("Arnavi", id, d.readings, d.ack, d.integrity)
    }

    /// A decoded message of a protocol without a negative answer: refused with its
    /// connection when its identity is not allowed, counted and left unanswered when it
    /// failed its integrity check (the device sends it again), else delivered and answered.
    fn admit(
        &mut self,
        protocol: &str,
        id: Option<String>,
        readings: Vec<Reading>,
        ack: Vec<u8>,
        integrity: Option<String>,
    ) -> Step {
        if let Some(refused) = self.identify(id, protocol) {
            return refused;
        }
        if integrity.is_some() {
            return Step {
                bad: integrity,
                ..Step::default()
            };
        }
        Step {
            readings,
            ack,
            ..Step::default()
        }
    }

    /// Takes the identity a message carried; refuses the connection when the allowlist does
    /// not hold it, or when data comes before any identity while an allowlist is set.
    fn identify(&mut self, id: Option<String>, protocol: &str) -> Option<Step> {
        if let Some(id) = id {
            if !self.allowed(&id) {
                return Some(Step {
                    refuse: Some((
                        Vec::new(),
                        format!("{protocol} device {id} not on the allowlist"),
                    )),
                    ..Step::default()
                });
            }
            self.device = Some(id);
        } else if self.opts.allow.is_some() && self.device.is_none() {
            return Some(Step {
                refuse: Some((
                    Vec::new(),
                    format!("{protocol} data before the device named itself"),
                )),
                ..Step::default()
            });
        }
        None
    }

    fn egts(&mut self, frame: &[u8]) -> Step {
        let packet = match egts::parse_packet(frame) {
            Ok(p) => p,
            Err(e) => {
                return Step {
                    bad: Some(e.to_string()),
                    ..Step::default()
                }
            }
        };
        let pid = self.egts_pid;
        self.egts_pid = self.egts_pid.wrapping_add(1);
        let readings = egts::readings(&packet);
        // Identity: a TERM_IDENTITY or DISPATCHER_IDENTITY login, else each record's object id.
        let mut login_rn = None;
        for r in &readings {
            if let Reading::Login(l) = r {
                let imei = l
                    .attributes
                    .get("imei")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                let ok =
                    self.allowed(&l.device) || imei.as_deref().is_some_and(|i| self.allowed(i));
                if !ok {
                    let refuse = egts::result_code(pid, 0, 151); // EGTS_PC_AUTH_DENIED
                    return Step {
                        refuse: Some((
                            refuse,
                            format!("EGTS terminal {} not on the allowlist", l.device),
                        )),
                        ..Step::default()
                    };
                }
                self.device = Some(l.device.clone());
                login_rn = packet.records.first().map(|r| r.number);
            }
        }
        if self.opts.allow.is_some() {
            // Every record, not only the login: a terminal admitted as one id must not pass
            // records off as another object's. A record for the terminal's own id, or for an
            // object on the allowlist, is accepted; one without an object id is the terminal's
            // own, so it needs a login first.
            let strangers: Vec<String> = packet
                .records
                .iter()
                .filter_map(|r| r.object_id.map(|o| o.to_string()))
                .filter(|o| !self.allowed(o) && self.device.as_deref() != Some(o.as_str()))
                .collect();
            let anonymous = self.device.is_none()
                && packet
                    .records
                    .iter()
                    .any(|r| r.object_id.is_none() && r.source_service != egts::SERVICE_AUTH);
            if !strangers.is_empty() || anonymous {
                return Step {
                    refuse: Some((
                        Vec::new(),
                        format!("EGTS data from unknown objects {strangers:?}"),
                    )),
                    ..Step::default()
                };
            }
        }
        let mut ack = egts::response(pid, &packet, egts::PC_OK);
        if let Some(rn) = login_rn {
            self.egts_pid = self.egts_pid.wrapping_add(1);
            ack.extend(egts::result_code(pid.wrapping_add(1), rn, egts::PC_OK));
        }
        // Logins and responses are bookkeeping, not readings for downstream.
        let readings = readings
            .into_iter()
            .filter(|r| !matches!(r, Reading::Login(_) | Reading::Response(_)))
            .collect();
        Step {
            readings,
            ack,
            ..Step::default()
        }
    }

    fn wialon(&mut self, frame: &[u8]) -> Step {
        match self.wialon.decode_line(frame) {
            Ok(p) if p.kind == wialon::PacketType::Login => {
                let Some(Reading::Login(l)) = p.readings.first() else {
                    return Step::default();
                };
                if l.attributes.contains_key("refused") {
                    return Step {
                        ack: wialon::answer(&p),
                        bad: Some("login checksum mismatch".into()),
                        ..Step::default()
                    };
                }
                if !self.allowed(&l.device) {
                    return Step {
                        refuse: Some((
                            b"#AL#0\r\n".to_vec(),
                            format!("Wialon device {} not on the allowlist", l.device),
                        )),
                        ..Step::default()
                    };
                }
                self.device = Some(l.device.clone());
                Step {
                    ack: wialon::answer(&p),
                    ..Step::default()
                }
            }
            Ok(p) => {
                let known = self
                    .wialon
                    .device
                    .as_deref()
                    .is_some_and(|d| self.allowed(d));
                if self.opts.allow.is_some() && !known {
                    return Step {
                        refuse: Some((Vec::new(), "Wialon data before an allowed login".into())),
                        ..Step::default()
                    };
                }
                let ack = wialon::answer(&p);
                let readings = p
                    .readings
                    .into_iter()
                    .filter(|r| !matches!(r, Reading::Heartbeat(_)))
                    .collect();
                Step {
                    readings,
                    ack,
                    ..Step::default()
                }
            }
            Err(e) => Step {
                ack: wialon::error_answer(frame, &e)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default(),
                bad: Some(e.to_string()),
                ..Step::default()
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    sock: TcpStream,
    peer: SocketAddr,
    protocol: Protocol,
    sensor: Arc<str>,
    opts: Arc<TcpOptions>,
    sink: Sink,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let link = format!("{sensor} {peer}");
    let (rd, mut wr) = sock.into_split();
    let mut frames = FramedRead::new(rd, FrameCodec::new(protocol));
    let mut session = Session {
        protocol,
        opts: opts.clone(),
        device: None,
        wialon: WialonDecoder::new(),
        plain: Decoder::new(protocol),
        egts_pid: 0,
    };
    let mut limiter = Limiter::new();
    // Only a frame that decodes keeps the connection alive: a garbage byte every few seconds
    // must not hold a slot past the idle timeout.
    let mut alive_until = tokio::time::Instant::now() + opts.idle_timeout;
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout_at(alive_until, frames.next()) => r,
            _ = stopped(&mut shutdown) => break,
        };
        let cut = match next {
            Err(_) => {
                tracing::info!(link, "idle for {:?}; closing", opts.idle_timeout);
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::info!(link, "connection lost: {e}");
                break;
            }
            Ok(Some(Ok(cut))) => cut,
        };
        let frame = match cut {
            Cut::Noise(what) => {
                Stats::inc(&stats.bad_frames);
                limiter.warn(&link, &what);
                continue;
            }
            Cut::Frame(f) => f,
        };
        alive_until = tokio::time::Instant::now() + opts.idle_timeout;
        Stats::inc(&stats.frames);
        let step = session.step(&frame);
        if let Some((answer, why)) = step.refuse {
            Stats::inc(&stats.refused_connections);
            tracing::warn!(link, "refused: {why}");
            let _ = wr.write_all(&answer).await;
            break;
        }
        if let Some(why) = &step.bad {
            Stats::inc(&stats.bad_frames);
            limiter.warn(&link, why);
        }
        let n = step.readings.len() as u64;
        let accepted = deliver(&sink, &sensor, step.readings).await;
        let answer = if accepted {
            stats.readings.fetch_add(n, Ordering::Relaxed);
            if step.bad.is_none() && !step.ack.is_empty() {
                Stats::inc(&stats.acknowledged);
            }
            step.ack
        } else {
            Stats::inc(&stats.not_accepted);
            step.nack
        };
        if !answer.is_empty() && wr.write_all(&answer).await.is_err() {
            break;
        }
    }
}

/// Serves a UDP socket: each datagram is one packet, answered to its sender once accepted.
pub async fn serve_udp(
    socket: UdpSocket,
    protocol: Protocol,
    sensor: Arc<str>,
    allow: Option<HashSet<String>>,
    sink: Sink,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut limiter = Limiter::new();
    let allowed = |id: &str| allow.as_ref().is_none_or(|a| a.contains(id));
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    limiter.warn(&sensor, &format!("receive failed: {e}"));
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let dg = &buf[..n];
        Stats::inc(&stats.frames);
        let (readings, ack, bad): (Vec<Reading>, Vec<u8>, Option<String>) = match protocol {
            Protocol::Teltonika => match teltonika::parse_udp(dg) {
                Ok(p) if !allowed(&p.imei) => (
                    vec![],
                    vec![],
                    Some(format!("IMEI {} not on the allowlist", p.imei)),
                ),
                Ok(p) if p.avl.integrity.is_none() => {
                    let ack = teltonika::udp_ack(&p, p.avl.count).to_vec();
                    (p.avl.readings, ack, None)
                }
                Ok(p) => (vec![], teltonika::udp_ack(&p, 0).to_vec(), p.avl.integrity),
                Err(e) => (vec![], vec![], Some(e.to_string())),
            },
            Protocol::Egts => match egts::parse_packet(dg) {
                Ok(p) => {
                    let ack = egts::response(0, &p, egts::PC_OK);
                    let r = egts::readings(&p)
                        .into_iter()
                        .filter(|r| !matches!(r, Reading::Login(_) | Reading::Response(_)))
                        .collect();
                    (r, ack, None)
                }
                Err(e) => (vec![], vec![], Some(e.to_string())),
            },
            Protocol::Wialon => {
                // Wialon over UDP carries `2.0;imei` in every datagram.
                let mut d = WialonDecoder::new();
                match d.decode_line(dg) {
                    Ok(_)
                        if d.device.as_deref().is_none_or(|id| !allowed(id)) && allow.is_some() =>
                    {
                        (
                            vec![],
                            vec![],
                            Some("Wialon datagram from a device not on the allowlist".into()),
                        )
                    }
                    Ok(p) => {
                        let answer = wialon::answer(&p);
                        (p.readings, answer, None)
                    }
                    Err(e) => (vec![], vec![], Some(e.to_string())),
                }
            }
            other => match Decoder::new(other).packet(dg) {
                Ok(r) => (r, vec![], None),
                Err(e) => (vec![], vec![], Some(e)),
            },
        };
        if let Some(why) = &bad {
            Stats::inc(&stats.bad_frames);
            limiter.warn(&sensor, why);
        }
        let count = readings.len() as u64;
        if !deliver(&sink, &sensor, readings).await {
            Stats::inc(&stats.not_accepted);
            continue;
        }
        stats.readings.fetch_add(count, Ordering::Relaxed);
        if !ack.is_empty() {
            if bad.is_none() {
                Stats::inc(&stats.acknowledged);
            }
            let _ = socket.send_to(&ack, peer).await;
        }
    }
}

/// Bytes for the device at the other end of a serial line (an encoded lane-node command),
/// written only until `until`.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub bytes: Vec<u8>,
    pub until: Instant,
}

/// Reads a serial device for as long as `shutdown` is false, reopening it whenever it
/// disappears, with backoff from 250 ms to 30 s; writes what `outgoing` brings (when given) to
/// the same port.
#[allow(clippy::too_many_arguments)]
pub async fn serve_serial(
    path: PathBuf,
    baud: u32,
    protocol: Protocol,
    sensor: Arc<str>,
    sink: Sink,
    stats: Arc<Stats>,
    mut outgoing: Option<mpsc::Receiver<Outgoing>>,
    mut shutdown: watch::Receiver<bool>,
) {
    use tokio_serial::SerialPortBuilderExt;
    let mut backoff = Duration::from_millis(250);
    let mut limiter = Limiter::new();
    let link = format!("{sensor} {}", path.display());
    loop {
        if *shutdown.borrow() {
            return;
        }
        let port = match tokio_serial::new(path.to_string_lossy(), baud).open_native_async() {
            Ok(p) => p,
            Err(e) => {
                limiter.warn(&link, &format!("cannot open: {e}; retrying in {backoff:?}"));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped(&mut shutdown) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        tracing::info!(link, "serial port open");
        backoff = Duration::from_millis(250);
        let (rd, mut wr) = tokio::io::split(port);
        let mut frames = FramedRead::new(rd, FrameCodec::new(protocol));
        let mut decoder = Decoder::new(protocol);
        loop {
            let next = tokio::select! {
                r = frames.next() => r,
                Some(out) = next_outgoing(&mut outgoing) => {
                    if Instant::now() > out.until {
                        Stats::inc(&stats.expired_commands);
                        continue;
                    }
                    let written = async {
                        wr.write_all(&out.bytes).await?;
                        wr.flush().await
                    };
                    match written.await {
                        Ok(()) => {
                            Stats::inc(&stats.commands);
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(link, "serial device lost while writing: {e}; reopening");
                            break;
                        }
                    }
                }
                _ = stopped(&mut shutdown) => return,
            };
            let frame = match next {
                Some(Ok(Cut::Frame(f))) => f,
                Some(Ok(Cut::Noise(what))) => {
                    Stats::inc(&stats.bad_frames);
                    limiter.warn(&link, &what);
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(link, "serial device lost: {e}; reopening");
                    break;
                }
                None => {
                    tracing::warn!(link, "serial device closed; reopening");
                    break;
                }
            };
            Stats::inc(&stats.frames);
            match decoder.packet(&frame) {
                Ok(readings) => {
                    let n = readings.len() as u64;
                    if deliver(&sink, &sensor, readings).await {
                        stats.readings.fetch_add(n, Ordering::Relaxed);
                    } else {
                        Stats::inc(&stats.not_accepted);
                    }
                }
                Err(e) => {
                    Stats::inc(&stats.bad_frames);
                    limiter.warn(&link, &e);
                }
            }
        }
        Stats::inc(&stats.reconnects);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// The next thing to write, if the link has an outgoing side (pending forever otherwise, and
/// once its sender is gone).
async fn next_outgoing(rx: &mut Option<mpsc::Receiver<Outgoing>>) -> Option<Outgoing> {
    match rx {
        Some(r) => match r.recv().await {
            Some(o) => Some(o),
            None => {
                *rx = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Resolves once shutdown is requested (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// The device a reading names, if it names one.
fn reading_device(r: &Reading) -> Option<String> {
    match r {
        Reading::Position(p) => p.device.clone(),
        Reading::Telemetry(t) => t.device.clone(),
        Reading::Message(m) => m.device.clone(),
        Reading::Login(l) => Some(l.device.clone()),
        _ => None,
    }
}
