//! Hardware-in-the-loop runner: one scenario folder (`config.toml`, `trace.tsv`,
//! `expect.toml`) against the real `acsgd` binary.
//!
//! For a scenario the runner
//! 1. starts its own mosquitto on a free loopback port and a subscriber standing in for central;
//! 2. rewrites the scenario's config: every serial sensor gets a pseudo-terminal (reached
//!    through a symlink, so it can be unplugged and replugged), every TCP/UDP sensor a free
//!    loopback port, the uplink this broker, storage a fresh directory, and every time
//!    setting of fusion and the rules is divided by the speed factor (the trace is played
//!    `speed` times faster than it was recorded);
//! 3. starts the binary, publishes what central sends (`@declarations`, `@watchlist` lines,
//!    retained, as central does), and plays every trace line on its sensor's port at its
//!    offset: serial bytes (text lines with CR LF), tracker packets over TCP whose
//!    acknowledgements it waits for and checks (EGTS RESPONSE for the packet id), plate reads
//!    over TCP;
//! 4. injects the scenario's fault (broker down for the whole trace, SIGKILL and restart,
//!    line noise on a serial line, a serial device unplugged and replugged);
//! 5. waits until the outbox is empty, stops the appliance with SIGTERM, and checks the
//!    outcome against `expect.toml` and the invariants every scenario has: every accepted
//!    event reached central under a gapless `seq` (none lost), every tracker packet was
//!    acknowledged, every injected bad frame was counted.

pub mod firmware;
pub mod scenarios;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acsgd::mosquitto::{free_port, Mosquitto};
use acsgd_testkit::{Central, Process};
use acsgd_trace as trace;
use serde::Deserialize;
use serde_json::Value;

/// What went wrong setting a scenario up (a failed expectation is a [`Report`] failure).
#[derive(Debug, thiserror::Error)]
pub enum HilError {
    #[error("{path}: {problem}")]
    Scenario { path: PathBuf, problem: String },
    #[error("{0}")]
    Setup(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> HilError + '_ {
    move |e| HilError::Setup(format!("{what}: {e}"))
}

/// The fault a scenario injects.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    #[default]
    None,
    /// The broker is stopped before the trace and started again after it.
    BrokerDown,
    /// The broker is stopped when the trace reaches `at_ms` and started again `for_ms` later.
    BrokerOutage { at_ms: i64, for_ms: i64 },
    /// The appliance is SIGKILLed when the trace reaches `at_ms` and started again.
    Sigkill { at_ms: i64 },
    /// Random bytes, truncated frames and frames with a bad CRC between the frames of
    /// `sensor` (a binary lane-node line).
    Noise { sensor: String },
    /// `sensor`'s serial device disappears at `at_ms` for `for_ms`; what it sends meanwhile
    /// is lost on the wire, as on a real unplugged cable.
    Unplug {
        sensor: String,
        at_ms: i64,
        for_ms: i64,
    },
    /// The uplink goes through a proxy that passes `bytes_per_s` each way and drops every
    /// connection every `drop_every_ms` (trace time), as a satellite channel does.
    SlowUplink {
        bytes_per_s: u64,
        drop_every_ms: i64,
    },
}

/// One expected passage, matched by its front plate (or, without one, by order).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedPassage {
    pub lane: String,
    /// The tractor's plate; absent when the truck shows none.
    #[serde(default)]
    pub plate: Option<String>,
    pub channel: String,
    /// Exactly these rules fail.
    pub reasons: Vec<String>,
    /// The truck was on the lane when the appliance was killed: its passage must come back
    /// from the lane journal, marked `recovered` (and no other passage may be).
    #[serde(default)]
    pub recovered: bool,
}

/// `expect.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// What the scenario shows, for the report.
    pub description: String,
    /// The trace is played this many times faster than recorded.
    #[serde(default = "one")]
    pub speed: f64,
    #[serde(default)]
    pub fault: Fault,
    #[serde(default)]
    pub passage: Vec<ExpectedPassage>,
    /// At least this many position fixes reach central (over all `position` events).
    #[serde(default)]
    pub positions_min: usize,
    /// The lane node is the real firmware in QEMU, fed raw signals (see [`firmware`]).
    #[serde(default)]
    pub firmware: Option<firmware::Spec>,
}

fn one() -> f64 {
    1.0
}

/// A scenario folder.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub dir: PathBuf,
    pub config: String,
    pub trace: String,
    pub expect: Expect,
}

impl Scenario {
    pub fn load(dir: &Path) -> Result<Scenario, HilError> {
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f)).map_err(|e| HilError::Scenario {
                path: dir.join(f),
                problem: e.to_string(),
            })
        };
        let expect_text = read("expect.toml")?;
        let expect: Expect = toml::from_str(&expect_text).map_err(|e| HilError::Scenario {
            path: dir.join("expect.toml"),
            problem: e.message().to_string(),
        })?;
        Ok(Scenario {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir: dir.to_path_buf(),
            config: read("config.toml")?,
            trace: read("trace.tsv")?,
            expect,
        })
    }
}

/// The folder holding the committed scenarios.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// The `acsgd` binary cargo built beside the running test.
pub fn acsgd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ACSGD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/acsgd
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("acsgd"))
        .expect("target directory")
}

/// A pseudo-terminal: the master the runner writes to, the slave the appliance opens
/// through `link`.
struct Pty {
    master: File,
    _slave: File,
    link: PathBuf,
}

/// Creates a pty whose slave is reachable at `link`, for tests outside the runner; returns the
/// master and the link. The runner's own slave descriptor is kept open (deliberately leaked)
/// for the life of the process, so the line does not hang up between a reader's opens.
pub fn pty_at(link: &Path) -> Result<(File, PathBuf), HilError> {
    let p = pty(link)?;
    std::mem::forget(p._slave);
    Ok((p.master, p.link))
}

/// A pty of the test kit with a symlink at `link` to its slave (the path the scenario's
/// config names).
fn pty(link: &Path) -> Result<Pty, HilError> {
    let p = acsgd_testkit::pty().map_err(setup("openpty"))?;
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&p.path, link).map_err(setup("symlink to the pty"))?;
    Ok(Pty {
        master: p.master,
        _slave: p.slave,
        link: link.to_path_buf(),
    })
}

fn publish_retained(port: u16, topic: &str, payload: &str) -> Result<(), HilError> {
    acsgd_testkit::publish_retained(port, topic, payload.as_bytes()).map_err(HilError::Setup)
}

/// How a sensor is reached in this run.
enum Port {
    Serial {
        pty: Option<Pty>,
        text: bool,
        /// While unplugged, until this instant.
        gone_until: Option<Instant>,
    },
    Tcp {
        addr: String,
        conn: Option<TcpStream>,
        protocol: String,
        /// Teltonika: the IMEI handshake, said again on every new connection.
        hello: Option<Vec<u8>>,
    },
    Udp {
        socket: std::net::UdpSocket,
        target: String,
        protocol: String,
    },
}

/// The appliance process, its output appended to `log`.
struct App {
    process: Process,
    log: PathBuf,
}

impl App {
    fn start(config: &Path, log: &Path) -> Result<App, HilError> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(setup("log file"))?;
        let process = Process::spawn(
            Command::new(acsgd_binary())
                .args(["run", "--config"])
                .arg(config)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out.try_clone().map_err(setup("log file"))?)
                .stderr(out),
        )
        .map_err(setup("starting acsgd"))?;
        Ok(App {
            process,
            log: log.to_path_buf(),
        })
    }

    fn kill(&mut self) {
        self.process.kill();
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.process.terminate()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's last `n` lines.
    fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: String,
    pub lines_played: usize,
    pub events: usize,
    pub passages: Vec<Value>,
    pub tracker_packets: usize,
    pub tracker_acks: usize,
    pub bad_frames_injected: u64,
    pub bad_frames_counted: BTreeMap<String, u64>,
    /// Times the unplugged device was reopened by the appliance.
    pub reopened: u64,
    /// Connection directions the lossy uplink cut.
    pub uplink_drops: u64,
    /// Position fixes central received.
    pub fixes: usize,
    /// Frames the firmware in QEMU sent (scenarios with a `[firmware]`).
    pub firmware_frames: usize,
    pub failures: Vec<String>,
    pub log_tail: String,
}

impl Report {
    fn fail(&mut self, what: String) {
        self.failures.push(what);
    }
}

/// The sub-table `key` of `t`, created when absent.
fn sub<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    let v = t
        .entry(key.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !v.is_table() {
        *v = toml::Value::Table(toml::Table::new());
    }
    v.as_table_mut().expect("made a table above")
}

/// Divides `t[key]` (or `default`) by `by`.
fn scale(t: &mut toml::Table, key: &str, default: f64, by: f64) {
    let v = t
        .get(key)
        .and_then(toml::Value::as_float)
        .unwrap_or(default);
    t.insert(key.into(), toml::Value::Float(v / by));
}

/// Time settings divided by the speed factor (and the nominal speed multiplied by it).
fn scale_times(config: &mut toml::Table, speed: f64) {
    let f = sub(config, "fusion");
    for (k, default) in [
        ("window_before_s", 2.0),
        ("window_after_s", 3.0),
        ("merge_gap_s", 0.8),
        ("lateness_s", 2.0),
        ("max_presence_s", 600.0),
        ("sensor_silent_s", 120.0),
        ("tracker_forget_s", 43_200.0),
    ] {
        scale(f, k, default, speed);
    }
    scale(f, "nominal_speed_kmh", 10.0, 1.0 / speed);
    let rules = sub(config, "rules");
    scale(sub(rules, "radiation"), "background_s", 60.0, speed);
    scale(sub(rules, "seal"), "silent_s", 900.0, speed);
}

/// Reads one EGTS packet from `conn`.
fn read_egts(conn: &mut TcpStream) -> Result<acsgd_drivers::egts::Packet, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match acsgd_drivers::egts::scan(&buf) {
            acsgd_drivers::egts::Scan::Packet(n) => {
                return acsgd_drivers::egts::parse_packet(&buf[..n]).map_err(|e| e.to_string())
            }
            acsgd_drivers::egts::Scan::Skip(_, e) => return Err(e.to_string()),
            acsgd_drivers::egts::Scan::Incomplete => {}
        }
        let n = conn.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one CR LF-terminated line.
fn read_line(conn: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 256 {
        match conn.read(&mut b) {
            Ok(1) if b[0] == b'\n' => {
                return Some(String::from_utf8_lossy(&line).trim().to_string())
            }
            Ok(1) => line.push(b[0]),
            _ => return None,
        }
    }
    None
}

/// Reads the answer to a device's opening message: Teltonika's `01`, Arnavi's `7B … 7D` (4
/// bytes for a version-22 header, 9 with the server's time for later versions).
fn greeted(c: &mut TcpStream, protocol: &str, hello: &[u8]) -> bool {
    if protocol == "arnavi" {
        let n = if hello.get(1) == Some(&0x22) { 4 } else { 9 };
        let mut b = vec![0u8; n];
        return c.read_exact(&mut b).is_ok() && b[0] == 0x7B && b[n - 1] == 0x7D;
    }
    let mut ok = [0u8; 1];
    c.read_exact(&mut ok).is_ok() && ok == [1]
}

fn connect(addr: &str) -> Option<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = connect_once(addr) {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One connection attempt, with the read timeout every sensor connection here uses.
fn connect_once(addr: &str) -> Option<TcpStream> {
    let s = TcpStream::connect(addr).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    Some(s)
}

/// Waits for the appliance to listen on `addr` at its start. Not against a clock: a loaded
/// machine (the firmware scenarios' QEMU beside it) can take longer than any fixed wait to
/// load the models, and that is not a failure; the appliance exiting is, and says why in its
/// log. A start that hangs is given up after three minutes.
fn wait_listening(app: &mut App, addr: &str, protocol: &str) -> Result<TcpStream, HilError> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(s) = connect_once(addr) {
            return Ok(s);
        }
        let gone = !app.process.is_running();
        if gone || Instant::now() > deadline {
            let why = if gone { "acsgd exited" } else { "3 min passed" };
            return Err(HilError::Setup(format!(
                "{protocol} port {addr} never opened ({why}); the log's end:\n{}",
                app.log_tail(20)
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Sends one tracker packet and waits for its acknowledgement; on a broken connection
/// (the appliance was killed) reconnects and sends again, as a device does.
fn send_tracker(port: &mut Port, bytes: &[u8], report: &mut Report) {
    let Port::Tcp {
        addr,
        conn,
        protocol,
        hello,
    } = port
    else {
        return;
    };
    report.tracker_packets += 1;
    // A Teltonika device opens with its IMEI (`00 0F` + 15 digits), an Arnavi device with its
    // header (`FF`, version, IMEI): each connection starts with it again.
    let opening = match protocol.as_str() {
        "teltonika" => bytes.len() == 17 && bytes[..2] == [0, 15],
        "arnavi" => bytes.first() == Some(&0xFF),
        _ => false,
    };
    if opening {
        *hello = Some(bytes.to_vec());
        *conn = None;
    }
    for _attempt in 0..5 {
        if conn.is_none() {
            *conn = connect(addr);
            if let (Some(c), Some(h)) = (conn.as_mut(), hello.as_ref()) {
                if !(c.write_all(h).is_ok() && greeted(c, protocol, h)) {
                    *conn = None;
                    continue;
                }
                if h == bytes {
                    report.tracker_acks += 1;
                    return;
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            break;
        };
        if c.write_all(bytes).is_err() {
            *conn = None;
            continue;
        }
        let acked = match protocol.as_str() {
            "egts" => {
                let pid = acsgd_drivers::egts::parse_packet(bytes).map(|p| p.pid).ok();
                match read_egts(c) {
                    Ok(r) => r.response_to.map(|(id, _)| id) == pid,
                    Err(_) => false,
                }
            }
            // One answer line per packet (`#AL#1`, `#AD#1`, `#AB#3`…).
            "wialon" => read_line(c).is_some_and(|l| l.starts_with("#A")),
            // The record count it took (0 for a packet it could not use: still an answer).
            "teltonika" => {
                let mut count = [0u8; 4];
                c.read_exact(&mut count).is_ok()
            }
            // 02 and the packet's own CRC bytes.
            "galileosky" => {
                let mut a = [0u8; 3];
                c.read_exact(&mut a).is_ok() && a[0] == 0x02 && a[1..] == bytes[bytes.len() - 2..]
            }
            // 7B 00 <package number> 7D; `$AV` text lines are not answered.
            "arnavi" if bytes.first() == Some(&b'$') => true,
            "arnavi" => {
                let mut a = [0u8; 4];
                c.read_exact(&mut a).is_ok() && a == [0x7B, 0x00, bytes[1], 0x7D]
            }
            _ => true,
        };
        if acked {
            report.tracker_acks += 1;
            return;
        }
        *conn = None;
        std::thread::sleep(Duration::from_millis(200));
    }
    report.fail(format!("a {protocol} packet was never acknowledged"));
}

/// Sends one datagram and, for Teltonika, waits for the acknowledgement of its packet id
/// (resending as a device does when none comes).
fn send_datagram(
    socket: &std::net::UdpSocket,
    target: &str,
    protocol: &str,
    bytes: &[u8],
    report: &mut Report,
) {
    report.tracker_packets += 1;
    for _attempt in 0..5 {
        if socket.send_to(bytes, target).is_err() {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        if protocol != "teltonika" {
            report.tracker_acks += 1;
            return;
        }
        let mut ack = [0u8; 64];
        if let Ok(n) = socket.recv(&mut ack) {
            // length 5, the datagram's packet id, type 01, its AVL packet id, records taken
            if n == 7 && ack[2..4] == bytes[2..4] && ack[5] == bytes[5] {
                report.tracker_acks += 1;
                return;
            }
        }
    }
    report.fail(format!("a {protocol} datagram was never acknowledged"));
}

/// A deterministic noise source for the noise fault.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Bytes to put on the line before a frame, and how many bad frames they hold for the
    /// receiver to count (random bytes without a sync pattern count as none).
    fn burst(&mut self, frame: &[u8]) -> (Vec<u8>, u64) {
        match self.next() % 4 {
            // Random bytes (never the sync pattern).
            0 => (
                (0..(self.next() % 24 + 1))
                    .map(|_| (self.next() % 0xA0) as u8)
                    .collect(),
                0,
            ),
            // The frame with one payload bit flipped: its CRC fails.
            1 => {
                let mut f = frame.to_vec();
                let i = 6 + (self.next() as usize % (f.len() - 8).max(1));
                f[i] ^= 0x10;
                (f, 1)
            }
            // A truncated copy, then the line goes on.
            2 => (frame[..frame.len() / 2].to_vec(), 1),
            _ => (Vec::new(), 0),
        }
    }
}

/// A throttling, connection-dropping TCP proxy to the broker (the slow, lossy uplink).
struct Proxy {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Set when the fault is over: no more drops, full speed.
    calm: Arc<std::sync::atomic::AtomicBool>,
    /// Connection directions cut so far.
    drops: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    fn start(upstream: u16, bytes_per_s: u64, drop_every: Duration) -> Result<Proxy, HilError> {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(setup("proxy"))?;
        let port = listener.local_addr().map_err(setup("proxy"))?.port();
        listener.set_nonblocking(true).map_err(setup("proxy"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let calm = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let drops = Arc::new(AtomicU64::new(0));
        {
            let (stop, calm, generation) = (stop.clone(), calm.clone(), generation.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(drop_every);
                    if !calm.load(Ordering::Relaxed) {
                        generation.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        {
            let (stop, calm, generation, drops) = (
                stop.clone(),
                calm.clone(),
                generation.clone(),
                drops.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((down, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let _ = down.set_nonblocking(false);
                    let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    let born = generation.load(Ordering::Relaxed);
                    for (from, to) in [
                        (down.try_clone(), up.try_clone()),
                        (up.try_clone(), down.try_clone()),
                    ] {
                        let (Ok(from), Ok(to)) = (from, to) else {
                            continue;
                        };
                        let link = Link {
                            bytes_per_s,
                            born,
                            stop: stop.clone(),
                            calm: calm.clone(),
                            generation: generation.clone(),
                            drops: drops.clone(),
                        };
                        std::thread::spawn(move || pump(from, to, &link));
                    }
                }
            });
        }
        Ok(Proxy {
            port,
            stop,
            calm,
            drops,
        })
    }

    /// Ends the fault: the link stops dropping and throttling.
    fn calm(&self) {
        self.calm.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One proxied connection's view of the link.
struct Link {
    bytes_per_s: u64,
    /// The generation it was made in; a newer one means it is dropped.
    born: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
    calm: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    drops: Arc<std::sync::atomic::AtomicU64>,
}

/// Copies one direction at `bytes_per_s` until the connection's generation ends.
fn pump(mut from: TcpStream, mut to: TcpStream, link: &Link) {
    use std::sync::atomic::Ordering;
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; (link.bytes_per_s / 20).max(1) as usize];
    let close = |from: &TcpStream, to: &TcpStream| {
        let _ = from.shutdown(std::net::Shutdown::Both);
        let _ = to.shutdown(std::net::Shutdown::Both);
    };
    loop {
        if link.generation.load(Ordering::Relaxed) != link.born {
            link.drops.fetch_add(1, Ordering::Relaxed);
            return close(&from, &to);
        }
        if link.stop.load(Ordering::Relaxed) {
            return close(&from, &to);
        }
        match from.read(&mut buf) {
            Ok(0) => return close(&from, &to),
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return close(&from, &to);
                }
                // The channel's rate: this chunk's share of a second.
                if !link.calm.load(Ordering::Relaxed) {
                    let share = n as f64 / link.bytes_per_s as f64;
                    std::thread::sleep(Duration::from_secs_f64(share));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return close(&from, &to),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs a scenario (see the module docs).
pub fn run(s: &Scenario) -> Result<Report, HilError> {
    let mut report = Report {
        scenario: s.name.clone(),
        ..Report::default()
    };
    let speed = s.expect.speed.max(0.1);
    let tmp = tempfile::Builder::new()
        .prefix(&format!("hil-{}-", s.name))
        .tempdir()
        .map_err(setup("temp dir"))?;
    let mut broker = Mosquitto::start(&tmp.path().join("broker")).map_err(setup("mosquitto"))?;
    let mut config: toml::Table = toml::from_str(&s.config).map_err(|e| HilError::Scenario {
        path: s.dir.join("config.toml"),
        problem: e.message().to_string(),
    })?;
    let post = config
        .get("post")
        .and_then(toml::Value::as_str)
        .unwrap_or("hil")
        .to_string();
    let central = Central::subscribe(
        broker.port(),
        &format!("hil-central-{}", broker.port()),
        &post,
    )
    .map_err(HilError::Setup)?;
    // Rewire the config to this run's broker, directory and ports.
    let data_dir = tmp.path().join("data");
    let uplink = config
        .entry("uplink")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| HilError::Setup("uplink is not a table".into()))?;
    let proxy = match &s.expect.fault {
        Fault::SlowUplink {
            bytes_per_s,
            drop_every_ms,
        } => Some(Proxy::start(
            broker.port(),
            *bytes_per_s,
            Duration::from_secs_f64(*drop_every_ms as f64 / 1000.0 / speed),
        )?),
        _ => None,
    };
    let uplink_port = proxy.as_ref().map_or(broker.port(), |p| p.port);
    uplink.insert(
        "broker".into(),
        format!("mqtt://127.0.0.1:{uplink_port}").into(),
    );
    uplink.insert("backoff_initial_ms".into(), 100.into());
    uplink.insert("backoff_max_s".into(), 1.into());
    config
        .entry("storage")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| HilError::Setup("storage is not a table".into()))?
        .insert("data_dir".into(), data_dir.display().to_string().into());
    scale_times(&mut config, speed);
    let dev = tmp.path().join("dev");
    std::fs::create_dir_all(&dev).map_err(setup("dev dir"))?;
    let mut ports: HashMap<String, Port> = HashMap::new();
    if let Some(sensors) = config
        .get_mut("sensors")
        .and_then(toml::Value::as_array_mut)
    {
        for sensor in sensors {
            let Some(t) = sensor.as_table_mut() else {
                continue;
            };
            let id = t
                .get("id")
                .and_then(toml::Value::as_str)
                .unwrap_or("")
                .to_string();
            let protocol = t
                .get("protocol")
                .and_then(toml::Value::as_str)
                .unwrap_or("")
                .to_string();
            let Some(tr) = t.get_mut("transport").and_then(toml::Value::as_table_mut) else {
                continue;
            };
            match tr.get("kind").and_then(toml::Value::as_str) {
                Some("serial") => {
                    let link = dev.join(&id);
                    let p = pty(&link)?;
                    tr.insert("path".into(), link.display().to_string().into());
                    ports.insert(
                        id,
                        Port::Serial {
                            pty: Some(p),
                            text: matches!(protocol.as_str(), "rpm" | "nmea" | "wialon"),
                            gone_until: None,
                        },
                    );
                }
                Some("udp") => {
                    let port = free_port().map_err(setup("free port"))?;
                    tr.insert("listen".into(), format!("127.0.0.1:{port}").into());
                    let socket =
                        std::net::UdpSocket::bind("127.0.0.1:0").map_err(setup("udp socket"))?;
                    socket
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .map_err(setup("udp socket"))?;
                    ports.insert(
                        id,
                        Port::Udp {
                            socket,
                            target: format!("127.0.0.1:{port}"),
                            protocol,
                        },
                    );
                }
                Some("tcp") => {
                    let port = free_port().map_err(setup("free port"))?;
                    tr.insert("listen".into(), format!("127.0.0.1:{port}").into());
                    ports.insert(
                        id,
                        Port::Tcp {
                            addr: format!("127.0.0.1:{port}"),
                            conn: None,
                            protocol,
                            hello: None,
                        },
                    );
                }
                _ => {}
            }
        }
    }
    // A scenario that moves the barrier does it as an officer would: through the screen's API
    // of the appliance, which drives the barrier through the lane node's line.
    let officer = match s.expect.firmware.as_ref().filter(|f| !f.command.is_empty()) {
        Some(spec) => Some(firmware::drive_barrier(&mut config, spec, tmp.path())?),
        None => None,
    };
    let config_path = tmp.path().join("config.toml");
    std::fs::write(
        &config_path,
        toml::to_string(&config).map_err(setup("config"))?,
    )
    .map_err(setup("config"))?;
    let log = tmp.path().join("acsgd.log");

    // Central's documents first, as central would have published them (retained).
    let lines: Vec<trace::Line> = s
        .trace
        .lines()
        .filter_map(|l| trace::parse_line(l).ok().flatten())
        .collect();
    for l in lines.iter().filter(|l| l.sensor.starts_with('@')) {
        let topic = format!("acsgd/v1/{post}/in/{}", &l.sensor[1..]);
        publish_retained(broker.port(), &topic, l.payload)?;
    }
    let mut app = App::start(&config_path, &log)?;
    // Ready when every TCP sensor port answers.
    for p in ports.values_mut() {
        if let Port::Tcp {
            addr,
            conn,
            protocol,
            ..
        } = p
        {
            *conn = Some(wait_listening(&mut app, addr, protocol)?);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    if s.expect.fault == Fault::BrokerDown {
        broker.stop();
    }

    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let mut killed = false;
    let mut broker_back: Option<Instant> = None;
    // The firmware's lane node, when the scenario has one: started last, so that its time 0
    // is the trace's.
    let fw_spec = s.expect.firmware.as_ref();
    let mut fw = match fw_spec {
        Some(spec) => {
            let Some(Port::Serial { pty: Some(p), .. }) = ports.get(&spec.sensor) else {
                return Err(HilError::Setup(format!(
                    "firmware sensor {} is not a serial sensor of the config",
                    spec.sensor
                )));
            };
            let duration = lines.last().map_or(0, |l| l.offset_ms);
            Some(firmware::Firmware::start(
                spec,
                &s.trace,
                duration,
                &p.master,
                officer.clone(),
            )?)
        }
        None => None,
    };
    let start = Instant::now();
    for l in lines.iter().filter(|l| !l.sensor.starts_with('@')) {
        if fw_spec.is_some_and(|f| f.sensor == l.sensor) {
            // The firmware speaks for this sensor; its trace frames are only the truth.
            continue;
        }
        let due = start + Duration::from_secs_f64(l.offset_ms.max(0) as f64 / 1000.0 / speed);
        if let (Some(fw), Some(spec)) = (fw.as_mut(), fw_spec) {
            // Commands on the bus at their own times, between the lines.
            fw.send_commands_before(spec, start, speed, l.offset_ms);
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        match &s.expect.fault {
            Fault::Sigkill { at_ms } if !killed && l.offset_ms >= *at_ms => {
                killed = true;
                app.kill();
                app = App::start(&config_path, &log)?;
                for p in ports.values_mut() {
                    if let Port::Tcp { conn, .. } = p {
                        *conn = None;
                    }
                }
            }
            Fault::BrokerOutage { at_ms, for_ms }
                if l.offset_ms >= *at_ms && broker_back.is_none() =>
            {
                broker.stop();
                broker_back =
                    Some(Instant::now() + Duration::from_secs_f64(*for_ms as f64 / 1000.0 / speed));
            }
            Fault::Unplug {
                sensor,
                at_ms,
                for_ms,
            } if l.offset_ms >= *at_ms => {
                if let Some(Port::Serial {
                    pty: p, gone_until, ..
                }) = ports.get_mut(sensor)
                {
                    if gone_until.is_none() && p.is_some() {
                        // The device disappears: its node is gone and the line hangs up.
                        if let Some(old) = p.take() {
                            let _ = std::fs::remove_file(&old.link);
                        }
                        *gone_until = Some(
                            Instant::now()
                                + Duration::from_secs_f64(*for_ms as f64 / 1000.0 / speed),
                        );
                    }
                }
            }
            _ => {}
        }
        if broker_back.is_some_and(|t| Instant::now() >= t) && broker.pid().is_none() {
            broker.restart().map_err(setup("restarting mosquitto"))?;
        }
        // A device comes back when its time is up.
        for (id, p) in ports.iter_mut() {
            if let Port::Serial {
                pty: slot,
                gone_until: Some(until),
                ..
            } = p
            {
                if Instant::now() >= *until && slot.is_none() {
                    *slot = Some(pty(&dev.join(id))?);
                }
            }
        }
        let bytes = match trace::payload(l) {
            Ok(b) => b,
            Err(e) => {
                report.fail(format!("trace line for {}: {e}", l.sensor));
                continue;
            }
        };
        report.lines_played += 1;
        let Some(port) = ports.get_mut(l.sensor) else {
            report.fail(format!(
                "trace names sensor {} that the config lacks",
                l.sensor
            ));
            continue;
        };
        match port {
            Port::Serial {
                pty: Some(p), text, ..
            } => {
                let mut out = Vec::with_capacity(bytes.len() + 64);
                if matches!(&s.expect.fault, Fault::Noise { sensor } if sensor == l.sensor) {
                    let (burst, bad) = noise.burst(&bytes);
                    out.extend_from_slice(&burst);
                    report.bad_frames_injected += bad;
                }
                out.extend_from_slice(&bytes);
                if *text {
                    out.extend_from_slice(b"\r\n");
                }
                let _ = p.master.write_all(&out);
            }
            Port::Serial { pty: None, .. } => {}
            Port::Tcp {
                protocol,
                conn,
                addr,
                ..
            } if protocol == "camera" => {
                let mut line = bytes.clone();
                line.push(b'\n');
                if conn.as_mut().is_none_or(|c| c.write_all(&line).is_err()) {
                    *conn = connect(addr);
                    if let Some(c) = conn.as_mut() {
                        let _ = c.write_all(&line);
                    }
                }
            }
            Port::Tcp { protocol, .. } if protocol == "wialon" => {
                let mut line = bytes.clone();
                line.extend_from_slice(b"\r\n");
                send_tracker(port, &line, &mut report)
            }
            Port::Tcp { .. } => send_tracker(port, &bytes, &mut report),
            Port::Udp {
                socket,
                target,
                protocol,
            } => send_datagram(socket, target, protocol, &bytes, &mut report),
        }
    }
    // Commands due after the last line of the trace.
    if let (Some(fw), Some(spec)) = (fw.as_mut(), fw_spec) {
        fw.send_commands_before(spec, start, speed, i64::MAX);
    }
    // Devices unplugged to the end come back now.
    for (id, p) in ports.iter_mut() {
        if let Port::Serial {
            pty: slot @ None,
            gone_until: Some(_),
            ..
        } = p
        {
            *slot = Some(pty(&dev.join(id))?);
        }
    }
    if s.expect.fault == Fault::BrokerDown || broker.pid().is_none() {
        std::thread::sleep(Duration::from_millis(500));
        broker.restart().map_err(setup("restarting mosquitto"))?;
    }

    // Settle: passages close a few (scaled) seconds after their vehicle; then the outbox
    // drains. Wait for the expected passages and an empty backlog.
    let want = s.expect.passage.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let passages = central
            .events()
            .iter()
            .filter(|e| e["type"] == "passage")
            .count();
        let backlog = stat(&data_dir)
            .map(|v| v["outbox"]["backlog_events"].as_u64().unwrap_or(1))
            .unwrap_or(1);
        if (passages >= want && backlog == 0) || Instant::now() > deadline {
            break;
        }
    }
    // The fault is over; one more fusion settle, so anything unexpected has a chance to show
    // up too, and what it made (health events of the lossy link, say) is delivered.
    if let Some(p) = &proxy {
        p.calm();
    }
    std::thread::sleep(Duration::from_secs_f64((8.0 / speed).max(1.0)));
    let drained = Instant::now() + Duration::from_secs(30);
    while stat(&data_dir)
        .map(|v| v["outbox"]["backlog_events"].as_u64().unwrap_or(1))
        .unwrap_or(1)
        > 0
        && Instant::now() < drained
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let live = stat(&data_dir);
    match app.terminate() {
        Some(st) if st.success() => {}
        other => report.fail(format!("acsgd did not stop cleanly: {other:?}")),
    }
    std::thread::sleep(Duration::from_millis(500));
    report.log_tail = app.log_tail(40);
    let final_stat = stat(&data_dir);

    // Invariant: every accepted event reached central, under a gapless seq.
    let events = central.events();
    report.events = events.len();
    let seqs: BTreeSet<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    let accepted = final_stat
        .as_ref()
        .ok()
        .and_then(|v| v["outbox"]["counters"]["accepted"].as_u64())
        .unwrap_or(0);
    let last = final_stat
        .as_ref()
        .ok()
        .and_then(|v| v["outbox"]["last_seq"].as_u64())
        .unwrap_or(0);
    let backlog = final_stat
        .as_ref()
        .ok()
        .and_then(|v| v["outbox"]["backlog_events"].as_u64())
        .unwrap_or(u64::MAX);
    if backlog != 0 {
        report.fail(format!("{backlog} events still in the outbox at the end"));
    }
    let missing: Vec<u64> = (1..=last).filter(|q| !seqs.contains(q)).collect();
    if !missing.is_empty() {
        report.fail(format!(
            "{} of {last} accepted events never reached central (first: seq {:?})",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    if accepted < last.saturating_sub(1) && !killed {
        report.fail(format!("accepted counter {accepted} below last seq {last}"));
    }
    // Invariant: every injected bad frame was counted.
    if let Ok(v) = &live {
        if let Some(m) = v["sensors"].as_object() {
            for (id, c) in m {
                report
                    .bad_frames_counted
                    .insert(id.clone(), c["bad_frames"].as_u64().unwrap_or(0));
            }
        }
    }
    if let Fault::Noise { sensor } = &s.expect.fault {
        let counted = report.bad_frames_counted.get(sensor).copied().unwrap_or(0);
        if counted < report.bad_frames_injected {
            report.fail(format!(
                "{} bad frames injected on {sensor}, {counted} counted",
                report.bad_frames_injected
            ));
        }
    }
    if let Fault::Unplug { sensor, .. } = &s.expect.fault {
        let reopened = live
            .as_ref()
            .ok()
            .and_then(|v| v["sensors"][sensor]["reconnects"].as_u64())
            .unwrap_or(0);
        if reopened == 0 {
            report.fail(format!("{sensor} was unplugged but never reopened"));
        }
        report.reopened = reopened;
    }
    if let Some(p) = &proxy {
        report.uplink_drops = p.drops.load(std::sync::atomic::Ordering::Relaxed);
        if report.uplink_drops == 0 {
            report.fail("the uplink proxy never dropped a connection".into());
        }
    }
    if report.tracker_acks != report.tracker_packets {
        report.fail(format!(
            "{} of {} tracker packets acknowledged",
            report.tracker_acks, report.tracker_packets
        ));
    }
    // The expected passages, no more and no less.
    let mut passages: Vec<Value> = Vec::new();
    let mut seen_ids = BTreeSet::new();
    for e in events.iter().filter(|e| e["type"] == "passage") {
        if seen_ids.insert(e["body"]["id"].as_str().unwrap_or("").to_string()) {
            passages.push(e["body"].clone());
        }
    }
    passages.sort_by_key(|p| p["start"].as_str().unwrap_or("").to_string());
    check_passages(&s.expect.passage, &passages, &mut report);
    if let (Some(fw), Some(spec)) = (fw, fw_spec) {
        report.firmware_frames = fw.frames();
        for f in fw.finish(spec, &passages, &events) {
            report.fail(f);
        }
    }
    report.fixes = events
        .iter()
        .filter(|e| e["type"] == "position")
        .map(|e| e["body"]["fixes"].as_array().map_or(0, Vec::len))
        .sum();
    if report.fixes < s.expect.positions_min {
        report.fail(format!(
            "{} position fixes reached central, at least {} expected",
            report.fixes, s.expect.positions_min
        ));
    }
    report.passages = passages;
    drop(broker);
    Ok(report)
}

fn front_plate(p: &Value) -> Option<String> {
    p["plates"]
        .as_array()?
        .iter()
        .find(|r| r["view"] == "front")
        .and_then(|r| r["text"].as_str())
        .map(acsgd::fusion::plates::normalise)
}

fn check_passages(expected: &[ExpectedPassage], got: &[Value], report: &mut Report) {
    let mut used = vec![false; got.len()];
    for (i, want) in expected.iter().enumerate() {
        // By plate where the truck shows one (tolerating OCR confusions), else the first
        // unused passage without a front plate on its lane.
        let found = got.iter().enumerate().position(|(j, p)| {
            !used[j]
                && p["lane"] == want.lane.as_str()
                && match &want.plate {
                    Some(pl) => front_plate(p)
                        .is_some_and(|f| acsgd::fusion::plates::compare(&f, pl).is_some()),
                    None => front_plate(p).is_none(),
                }
        });
        let Some(j) = found else {
            report.fail(format!(
                "expected passage {} ({:?} on lane {}) not received",
                i + 1,
                want.plate,
                want.lane
            ));
            continue;
        };
        used[j] = true;
        let p = &got[j];
        let reasons: BTreeSet<String> = p["reasons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let want_reasons: BTreeSet<String> = want.reasons.iter().cloned().collect();
        let recovered = p["recovered"] == true;
        if recovered != want.recovered {
            report.fail(format!(
                "passage {:?}: recovered {recovered}, expected {}",
                want.plate, want.recovered
            ));
        }
        if p["channel"] != want.channel.as_str() || reasons != want_reasons {
            report.fail(format!(
                "passage {:?}: channel {} reasons {:?}, expected {} {:?}",
                want.plate, p["channel"], reasons, want.channel, want_reasons
            ));
        }
    }
    let extra = used.iter().filter(|u| !**u).count();
    if extra > 0 {
        report.fail(format!(
            "{} passages received that no truck explains: {:?}",
            extra,
            got.iter()
                .zip(&used)
                .filter(|(_, u)| !**u)
                .map(|(p, _)| (p["id"].clone(), front_plate(p)))
                .collect::<Vec<_>>()
        ));
    }
}

/// `acsgd outbox --data-dir DIR stat --json`.
fn stat(data_dir: &Path) -> Result<Value, String> {
    let out = Command::new(acsgd_binary())
        .args(["outbox", "--data-dir"])
        .arg(data_dir)
        .args(["stat", "--json"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}
