//! Test harness: the real `acsgd` binary, a real mosquitto, a subscriber standing in for
//! central, and an ingest client. Everything on loopback, on free ports, killed by PID.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use acsgd::mosquitto::{free_port, Mosquitto};
use acsgd_drivers::lane::{self, Body, Frame};
use acsgd_testkit::Process;

pub const POST: &str = "test-post";

pub use acsgd_testkit::Central;

/// The edge tests' ways to make central: for [`POST`], or on a broker that is down.
pub trait CentralExt: Sized {
    /// Connects, subscribes to everything [`POST`] publishes and waits for the SUBACK.
    fn connect(port: u16, client_id: &str) -> Self;
    /// Like [`CentralExt::connect`], for another post's topics.
    fn connect_post(port: u16, client_id: &str, post: &str) -> Self;
    /// A broker on `port`, stopped, that already holds this central's persistent session: for
    /// a test whose appliance starts while the broker is down. Once [`Mosquitto::restart`]ed,
    /// the broker queues for central whatever the uplink forwards, even if the uplink
    /// reconnects before central does (as it may on a loaded machine, where a broker without
    /// the session would drop those events for want of a subscriber).
    fn registered_on_stopped_broker(dir: &Path, port: u16, client_id: &str) -> Mosquitto;
}

impl CentralExt for Central {
    fn connect(port: u16, client_id: &str) -> Central {
        Central::connect_post(port, client_id, POST)
    }

    fn connect_post(port: u16, client_id: &str, post: &str) -> Central {
        Central::subscribe(port, client_id, post).unwrap()
    }

    fn registered_on_stopped_broker(dir: &Path, port: u16, client_id: &str) -> Mosquitto {
        let mut broker = Mosquitto::start_with(dir, port, "").expect("mosquitto starts");
        drop(Central::connect(port, client_id));
        broker.stop();
        broker
    }
}

/// A config for the appliance under test.
pub struct Setup {
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub ingest_port: u16,
}

impl Setup {
    /// Writes `config.toml` in `dir` for a plain broker on `broker_port`; `uplink_extra` goes
    /// in `[uplink]` and `storage_extra` in `[storage]`.
    pub fn new(dir: &Path, broker_port: u16, uplink_extra: &str, storage_extra: &str) -> Setup {
        Setup::with(
            dir,
            &format!("mqtt://127.0.0.1:{broker_port}"),
            uplink_extra,
            "",
            storage_extra,
        )
    }

    /// Like [`Setup::new`] with any broker URL and an `[uplink.tls]` table body.
    pub fn with(
        dir: &Path,
        broker: &str,
        uplink_extra: &str,
        tls: &str,
        storage_extra: &str,
    ) -> Setup {
        let ingest_port = free_port().unwrap();
        let data_dir = dir.join("data");
        let config = dir.join("config.toml");
        let tls = if tls.is_empty() {
            String::new()
        } else {
            format!("[uplink.tls]\n{tls}\n")
        };
        std::fs::write(
            &config,
            format!(
                "post = \"{POST}\"\n[[lanes]]\nid = \"1\"\n\
                 [uplink]\nbroker = \"{broker}\"\nbackoff_initial_ms = 100\nbackoff_max_s = 1\n{uplink_extra}\n{tls}\
                 [storage]\ndata_dir = \"{}\"\n{storage_extra}\n\
                 [ingest]\nlisten = \"127.0.0.1:{ingest_port}\"\n",
                data_dir.display()
            ),
        )
        .unwrap();
        Setup {
            dir: dir.to_path_buf(),
            data_dir,
            config,
            ingest_port,
        }
    }

    /// Appends TOML (sensors, sections) to the config.
    pub fn add(&self, toml: &str) {
        let mut cfg = std::fs::read_to_string(&self.config).unwrap();
        cfg.push_str(toml);
        std::fs::write(&self.config, cfg).unwrap();
    }

    /// Starts `acsgd run` with more environment (`ACSGD_FAULT`), and waits for nothing.
    pub fn spawn_with_env(&self, env: &[(&str, &str)]) -> Appliance {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("acsgd.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_acsgd"));
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        Appliance(Process::spawn(&mut cmd).unwrap())
    }

    /// Starts `acsgd run` and waits until it has started: its log says `service started`
    /// once more than before, which it writes after every listener (ingest, sensors,
    /// display) is bound. (The ingest port alone answers before the sensors listen.)
    pub fn start(&self) -> Appliance {
        const STARTED: &str = "service started";
        let before = self.log().matches(STARTED).count();
        let mut a = self.spawn_with_env(&[]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log().matches(STARTED).count() <= before {
            if let Some(status) = a.0.wait_exit(Duration::ZERO) {
                panic!("acsgd exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "acsgd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        a
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("acsgd.log")).unwrap_or_default()
    }

    /// Waits until the appliance's log holds `needle`; panics with the log after `secs`.
    pub fn wait_for_log(&self, secs: u64, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log after {secs} s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `needle` is in the appliance's log `n` times; panics with the log after
    /// `secs`.
    pub fn wait_for_log_count(&self, secs: u64, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.log().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not {n} times in the log after {secs} s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn ingest(&self) -> Ingest {
        Ingest::connect(self.ingest_port)
    }

    /// `acsgd outbox --data-dir … stat --json`.
    pub fn stat(&self) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_acsgd"))
            .args(["outbox", "--data-dir"])
            .arg(&self.data_dir)
            .args(["stat", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stat failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Polls `acsgd outbox ... stat --json` until `ready` holds (the running service publishes
/// its status every second); panics with the last status after 60 s.
pub fn wait_for_stat(
    setup: &Setup,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = setup.stat();
        if ready(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "status never as expected: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The running `acsgd` process (the test kit's [`Process`], with the tests' expectations).
pub struct Appliance(Process);

impl Appliance {
    pub fn pid(&self) -> u32 {
        self.0.pid().expect("a running appliance")
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.0.terminate().expect("a running appliance")
    }

    /// Waits for the process to exit by itself; panics after `secs`.
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        self.0
            .wait_exit(Duration::from_secs(secs))
            .unwrap_or_else(|| panic!("acsgd still runs after {secs} s"))
    }

    pub fn is_running(&mut self) -> bool {
        self.0.is_running()
    }
}

/// An ingest connection.
pub struct Ingest {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

/// The answer to one event.
#[derive(Debug, Clone)]
pub enum Answer {
    Ok { seq: u64, id: String },
    Err(String),
}

impl Ingest {
    pub fn connect(port: u16) -> Ingest {
        let w = TcpStream::connect(("127.0.0.1", port)).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Ingest {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        }
    }

    /// Sends events (type, body) pipelined and reads one answer each. Err if the connection
    /// broke (the appliance was killed): answers already read are returned in `partial`.
    pub fn send(
        &mut self,
        events: &[(&str, serde_json::Value)],
        partial: &mut Vec<Answer>,
    ) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for (kind, body) in events {
            serde_json::to_writer(&mut buf, &serde_json::json!({"type": kind, "body": body}))
                .unwrap();
            buf.push(b'\n');
        }
        self.w.write_all(&buf)?;
        for _ in events {
            let mut line = String::new();
            if self.r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            partial.push(if v["ok"] == true {
                Answer::Ok {
                    seq: v["seq"].as_u64().unwrap(),
                    id: v["id"].as_str().unwrap().to_string(),
                }
            } else {
                Answer::Err(v["error"].as_str().unwrap_or("").to_string())
            });
        }
        Ok(())
    }
}

/// The acknowledged events among `answers`: id → seq.
pub fn acked_ids(answers: &[Answer]) -> HashMap<String, u64> {
    answers
        .iter()
        .filter_map(|a| match a {
            Answer::Ok { seq, id } => Some((id.clone(), *seq)),
            Answer::Err(_) => None,
        })
        .collect()
}

/// Checks what central received against what the appliance acknowledged: every acknowledged
/// id arrived with its seq; seqs form 1..=max with no gap; no seq carries two ids; first
/// arrivals come in seq order. Returns (unique events, duplicates).
pub fn check_delivery(
    received: &[serde_json::Value],
    acked: &HashMap<String, u64>,
) -> (usize, usize) {
    let mut by_seq: BTreeMap<u64, String> = BTreeMap::new();
    let mut first_seen = Vec::new();
    let mut dups = 0;
    for e in received {
        let seq = e["seq"].as_u64().expect("seq");
        let id = e["id"].as_str().expect("id").to_string();
        match by_seq.get(&seq) {
            Some(prev) => {
                assert_eq!(prev, &id, "seq {seq} was used for two different events");
                dups += 1;
            }
            None => {
                by_seq.insert(seq, id);
                first_seen.push(seq);
            }
        }
    }
    assert!(
        first_seen.windows(2).all(|w| w[0] < w[1]),
        "events first arrived out of seq order"
    );
    let max = *by_seq.keys().last().expect("central received nothing");
    let missing: Vec<u64> = (1..=max)
        .filter(|s| !by_seq.contains_key(s))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "seq has gaps, first missing: {missing:?}"
    );
    let ids: HashSet<&String> = by_seq.values().collect();
    for (id, seq) in acked {
        assert!(
            ids.contains(id),
            "acknowledged event {id} (seq {seq}) never arrived"
        );
        assert_eq!(
            by_seq.get(seq),
            Some(id),
            "event {id} arrived under another seq"
        );
    }
    (by_seq.len(), dups)
}

/// A pty pair: the master we write to, and the slave's path the appliance opens. The slave
/// stays open here too, so the line does not hang up between the appliance's opens.
pub use acsgd_testkit::Pty;

/// A pseudo-terminal for a serial device (see [`acsgd_testkit::pty`]).
pub fn pty() -> Pty {
    acsgd_testkit::pty().expect("openpty")
}

pub fn frame(seq: &mut u8, body: Body) -> Vec<u8> {
    let mut buf = [0u8; lane::MAX_FRAME];
    *seq = seq.wrapping_add(1);
    let n = lane::encode(
        &Frame {
            addr: 1,
            seq: *seq,
            body,
        },
        &mut buf,
    )
    .unwrap();
    buf[..n].to_vec()
}

/// Fusion windows short enough for a test, and the lane node `node-1` of lane 1 on a serial
/// port: the start of a lane's config.
pub fn fast_lane_with_node(node_path: &Path) -> String {
    format!(
        "[fusion]\nwindow_before_s = 1.0\nwindow_after_s = 1.0\nlateness_s = 0.5\nmerge_gap_s = 0.5\n\
         [[sensors]]\nid = \"node-1\"\nlane = \"1\"\nprotocol = \"lane\"\n\
         transport = {{ kind = \"serial\", path = \"{}\", baud = 115200 }}\n",
        node_path.display()
    )
}

/// Central declares truck `123ABC02` (MRN 26KZ5500000000001A, 24 t), retained.
pub fn declare_123abc02(port: u16) {
    publish_retained(
        port,
        &format!("acsgd/v1/{POST}/in/declarations"),
        r#"[{"mrn": "26KZ5500000000001A", "plates": ["123ABC02"], "gross_kg": 24000}]"#,
    );
}

/// Publishes what central sends, retained, and waits for the broker's PUBACK.
pub fn publish_retained(port: u16, topic: &str, payload: &str) {
    acsgd_testkit::publish_retained(port, topic, payload.as_bytes()).unwrap();
}

/// Reads until the peer closes, sending `byte` every 200 ms; true if it closed within `secs`.
pub fn closes_while_trickling(c: &mut TcpStream, byte: &[u8], secs: u64) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    while started.elapsed() < Duration::from_secs(secs) {
        if c.write_all(byte).is_err() {
            return true;
        }
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}
