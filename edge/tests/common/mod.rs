//! Test harness: the real `acsgd` binary, a real mosquitto, a subscriber standing in for
//! central, and an ingest client. Everything on loopback, on free ports, killed by PID.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use acsgd::mosquitto::{free_port, Mosquitto};
use acsgd_drivers::lane::{self, Body, Frame};
use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};

pub const POST: &str = "test-post";

/// One message central received.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

/// A subscriber with a persistent session, so that it misses nothing while it or the broker
/// is away (the broker keeps its queue across a clean restart).
pub struct Central {
    pub got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Central {
    /// Connects, subscribes to everything the post publishes and waits for the SUBACK.
    pub fn connect(port: u16, client_id: &str) -> Central {
        Central::connect_post(port, client_id, POST)
    }

    /// A broker on `port`, stopped, that already holds this central's persistent session: for a
    /// test whose appliance starts while the broker is down. Once [`Mosquitto::restart`]ed, the
    /// broker queues for central whatever the uplink forwards, even if the uplink reconnects
    /// before central does (as it may on a loaded machine, where a broker without the session
    /// would drop those events for want of a subscriber).
    pub fn registered_on_stopped_broker(dir: &Path, port: u16, client_id: &str) -> Mosquitto {
        let mut broker = Mosquitto::start_with(dir, port, "").expect("mosquitto starts");
        drop(Central::connect(port, client_id));
        broker.stop();
        broker
    }

    /// Like [`Central::connect`], for another post's topics.
    pub fn connect_post(port: u16, client_id: &str, post: &str) -> Central {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5))
            // Room for what central itself publishes to the post (a test sends 5 MiB).
            .set_max_packet_size(64 << 20, 4 << 20);
        let (client, conn) = Client::new(o, 100);
        client
            .subscribe(format!("acsgd/v1/{post}/#"), QoS::AtLeastOnce)
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let got = got.clone();
            let stop = stop.clone();
            std::thread::spawn(move || pump(client, conn, got, stop, ready_tx))
        };
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("central subscribed");
        Central {
            got,
            stop,
            thread: Some(thread),
        }
    }

    /// Event envelopes received (not status or key), in arrival order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| !r.topic.ends_with("/status") && !r.topic.ends_with("/key"))
            .map(Received::json)
            .collect()
    }

    /// Waits until `pred` holds for the events, or panics after `secs`.
    pub fn wait_for(
        &self,
        secs: u64,
        what: &str,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let ev = self.events();
            if pred(&ev) {
                return ev;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; central has {} events",
                    ev.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pump(
    client: Client,
    mut conn: Connection,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                let _ = ready.send(());
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => got.lock().unwrap().push(Received {
                topic: p.topic.clone(),
                payload: p.payload.to_vec(),
            }),
            Ok(Ok(_)) | Err(_) => {}
            // Broker away: rumqttc reconnects on the next poll; the session is resumed.
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let _ = client.disconnect();
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
        let child = Command::new(env!("CARGO_BIN_EXE_acsgd"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Appliance { child: Some(child) }
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
            if let Some(status) = a.child.as_mut().unwrap().try_wait().unwrap() {
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

/// The running `acsgd` process.
pub struct Appliance {
    child: Option<Child>,
}

impl Appliance {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, and the exit status.
    #[allow(unsafe_code)] // libc calls std does not offer (see SAFETY)
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        c.wait().unwrap()
    }

    /// Waits for the process to exit by itself; panics after `secs`.
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let c = self.child.as_mut().expect("a running appliance");
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "acsgd still runs after {secs} s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill();
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
    let mut o = MqttOptions::new("central-publisher", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(o, 10);
    client
        .publish(topic, QoS::AtLeastOnce, true, payload.as_bytes().to_vec())
        .unwrap();
    for ev in conn.iter() {
        if let Ok(Event::Incoming(Packet::PubAck(_))) = ev {
            break;
        }
    }
    let _ = client.disconnect();
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
