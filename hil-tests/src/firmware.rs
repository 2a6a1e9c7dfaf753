//! The real lane-node firmware in the loop: the scenario's lane node is not played from the
//! trace but run, cross-built for the Cortex-M4F, in QEMU's mps2-an386. UART0 of the board is
//! relayed to the pseudo-terminal the appliance reads as its lane node, and the board samples
//! raw load-cell and loop signals rendered by `lane-node-sim` for the trucks the trace's
//! lane-node frames describe (their axles, loads, spacings and speed are the ground truth;
//! those frames themselves are not played). The passage at central must carry the loads the
//! firmware computed, within tolerance of that truth.
//!
//! Where a scenario has `command`s, the runner is the officer: it signs in to the appliance's
//! screen API and asks it to open or close the barrier at each command's time
//! ([`drive_barrier`] configures the lane's `[lanes.barrier]` and the account); the appliance
//! writes the commands down the node's line and answers with what the firmware acknowledged,
//! which must be what the scenario expects.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acsgd::mosquitto::free_port;
use acsgd_drivers::lane::{self, AckResult, Body, Receiver, Scan};
use acsgd_trace as trace;
use lane_node_sim::{board, Assumptions, AxleTruth, LoopFaultAt, Rng, Scene, Truck, Truth};
use serde::Deserialize;
use serde_json::Value;

use crate::HilError;

/// `[firmware]` in `expect.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The lane-node sensor the firmware replaces.
    pub sensor: String,
    /// Each axle load in the passage within this many percent of the truth.
    pub axle_tolerance_pct: f64,
    /// The gross mass within this many percent.
    pub gross_tolerance_pct: f64,
    /// The scale's verdict the passage must carry (`ok`, `sensor_fault`, ...).
    pub wim_status: String,
    #[serde(default)]
    pub loop_fault: Vec<LoopFault>,
    #[serde(default)]
    pub command: Vec<Cmd>,
    /// How many times the appliance must have closed the barrier by itself behind the truck
    /// (`close_after_loop = 2`, the loop under the barrier), each done by the firmware.
    #[serde(default)]
    pub auto_closes: usize,
}

/// A loop of the lane (1 = around the scale, 2 = under the barrier) opens at `at_ms` for
/// `for_ms`: the board's counter sees no oscillation.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoopFault {
    #[serde(rename = "loop")]
    pub loop_id: usize,
    pub at_ms: i64,
    pub for_ms: i64,
}

/// A barrier command on the bus at `at_ms`, and the `Ack` result it must get.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cmd {
    pub at_ms: i64,
    pub barrier: Barrier,
    pub ack: Ack,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Barrier {
    Open,
    Close,
}

/// The `Ack` results a scenario can expect.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Ack {
    Done,
    RefusedOccupied,
}

impl Ack {
    fn result(self) -> u8 {
        match self {
            Ack::Done => AckResult::DONE,
            Ack::RefusedOccupied => AckResult::REFUSED_OCCUPIED,
        }
    }
}

impl Ack {
    fn name(self) -> &'static str {
        match self {
            Ack::Done => "done",
            Ack::RefusedOccupied => "refused_occupied",
        }
    }
}

/// The officer at the appliance's screen API (see [`drive_barrier`]).
#[derive(Debug, Clone)]
pub struct Officer {
    port: u16,
    lane: String,
}

const OFFICER: &str = "hil-officer";
const OFFICER_PASSWORD: &str = "hil-officer-pass";

/// Gives the firmware's lane a barrier the appliance drives through that node, the appliance a
/// screen on a free port, and an officer account to sign in with.
pub fn drive_barrier(
    config: &mut toml::Table,
    spec: &Spec,
    dir: &std::path::Path,
) -> Result<Officer, HilError> {
    let bad = |what: &str| HilError::Setup(format!("barrier: {what}"));
    let lane = config
        .get("sensors")
        .and_then(toml::Value::as_array)
        .and_then(|s| {
            s.iter()
                .find(|t| t.get("id").and_then(toml::Value::as_str) == Some(&spec.sensor))
        })
        .and_then(|t| t.get("lane"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| bad("the firmware's sensor has no lane"))?
        .to_string();
    let lanes = config
        .get_mut("lanes")
        .and_then(toml::Value::as_array_mut)
        .ok_or_else(|| bad("no [[lanes]]"))?;
    let entry = lanes
        .iter_mut()
        .filter_map(toml::Value::as_table_mut)
        .find(|l| l.get("id").and_then(toml::Value::as_str) == Some(&lane))
        .ok_or_else(|| bad("the firmware's lane is not configured"))?;
    let mut barrier = toml::Table::new();
    barrier.insert("node".into(), spec.sensor.clone().into());
    // Loop 2 of the simulated lane lies under the barrier (`firmware/README.md`).
    barrier.insert("close_after_loop".into(), 2.into());
    entry.insert("barrier".into(), barrier.into());
    let port = free_port().map_err(|e| bad(&e.to_string()))?;
    let accounts = dir.join("accounts.toml");
    acsgd::accounts::add(
        &accounts,
        acsgd::accounts::NewAccount {
            user: OFFICER.into(),
            name: Some("HIL officer".into()),
            role: acsgd::config::Role::Officer,
            lang: None,
            replace: false,
        },
        OFFICER_PASSWORD,
    )
    .map_err(|e| bad(&e.to_string()))?;
    let mut display = toml::Table::new();
    display.insert("bind".into(), format!("127.0.0.1:{port}").into());
    display.insert(
        "accounts_file".into(),
        accounts.display().to_string().into(),
    );
    config.insert("display".into(), display.into());
    Ok(Officer { port, lane })
}

/// One HTTP/1.1 request to the appliance's screen API: status, session cookie, JSON body.
fn http(
    port: u16,
    path: &str,
    cookie: &str,
    body: &Value,
) -> std::io::Result<(u16, String, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.to_string();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !cookie.is_empty() {
        req.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let cookie = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            k.eq_ignore_ascii_case("set-cookie")
                .then(|| v.split(';').next().unwrap_or("").to_string())
        })
        .unwrap_or_default();
    Ok((
        code,
        cookie,
        serde_json::from_str(rest).unwrap_or(Value::Null),
    ))
}

/// The officer's answers from the appliance, command by command, once the thread ends.
type Answers = std::thread::JoinHandle<Vec<Result<String, String>>>;

/// The officer's thread: signs in (waiting for the screen to come up), then asks for each
/// barrier command as it arrives, in order; returns the appliance's answers.
fn officer_at_the_screen(
    officer: Officer,
    commands: std::sync::mpsc::Receiver<Barrier>,
) -> Answers {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let cookie = loop {
            let r = http(
                officer.port,
                "/api/login",
                "",
                &serde_json::json!({"user": OFFICER, "password": OFFICER_PASSWORD}),
            );
            match r {
                Ok((200, c, _)) if !c.is_empty() => break Ok(c),
                _ if Instant::now() > deadline => break Err(format!("no sign-in: {r:?}")),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        commands
            .iter()
            .map(|b| {
                let cookie = cookie.as_ref().map_err(Clone::clone)?;
                let open = b == Barrier::Open;
                match http(
                    officer.port,
                    &format!("/api/lanes/{}/barrier", officer.lane),
                    cookie,
                    &serde_json::json!({ "open": open }),
                ) {
                    Ok((200, _, a)) => a["result"]
                        .as_str()
                        .map(String::from)
                        .ok_or_else(|| format!("answer {a}")),
                    other => Err(format!("{other:?}")),
                }
            })
            .collect()
    })
}

/// The firmware running for a scenario.
pub struct Firmware {
    child: Child,
    seen: Arc<Mutex<Seen>>,
    /// The board → pty relay; it ends when QEMU closes UART0.
    from_board: Option<std::thread::JoinHandle<()>>,
    pub truths: Vec<Truth>,
    commands_sent: usize,
    /// Where the commands go when due, and the officer's answers at the end.
    officer: Option<(std::sync::mpsc::Sender<Barrier>, Answers)>,
    _dir: tempfile::TempDir,
}

/// What the relay saw the board send.
#[derive(Debug, Default)]
struct Seen {
    frames: usize,
    acks: Vec<(u8, u8)>,
    last_status: Option<Body>,
    /// Every fault bit any `Health` frame carried.
    faults: u16,
}

/// The trucks the trace's lane-node frames describe, as raw-signal trucks: loop 1 detection
/// time, speed, and each axle's loads and spacing.
fn trucks(trace: &str, sensor: &str) -> Result<Vec<(f64, Truck)>, HilError> {
    let mut rng = Rng::new(0x0048_494c);
    let mut out = Vec::new();
    let mut on_ms = None;
    let mut axles: Vec<AxleTruth> = Vec::new();
    let mut speed = 0.0;
    for l in trace
        .lines()
        .filter_map(|l| trace::parse_line(l).ok().flatten())
    {
        if l.sensor != sensor {
            continue;
        }
        let bytes = trace::payload(&l).map_err(HilError::Setup)?;
        let Scan::Frame(f, _) = lane::scan(&bytes) else {
            return Err(HilError::Setup(format!(
                "{sensor}: a trace line is not a lane frame"
            )));
        };
        match f.body {
            Body::Loop {
                loop_id: 1,
                occupied: true,
                ..
            } => on_ms = Some(l.offset_ms),
            Body::Axle {
                left_kg,
                right_kg,
                spacing_mm,
                speed_dkmh,
                ..
            } => {
                axles.push(AxleTruth {
                    load_kg: (left_kg as u32 + right_kg as u32) as f64,
                    left_kg: left_kg as f64,
                    right_kg: right_kg as f64,
                    spacing_m: spacing_mm as f64 / 1000.0,
                });
                speed = speed_dkmh as f64 / 10.0;
            }
            Body::Vehicle { .. } => {
                let on = on_ms.take().ok_or_else(|| {
                    HilError::Setup(format!(
                        "{sensor}: a vehicle with no loop detection before it"
                    ))
                })?;
                // The trace's trucks have 1.4 m before the first axle and 1.6 m behind the
                // last (`acsgd_testkit::simulate`).
                let truck = Truck::build(
                    std::mem::take(&mut axles),
                    1.4,
                    1.6,
                    speed,
                    &mut rng,
                    &Assumptions::calm(),
                );
                // Its front is 5 m before the scale loop on arrival; at the loop at `on`.
                out.push((on as f64 / 1000.0 - 5.0 / (speed / 3.6), truck));
            }
            _ => {}
        }
    }
    Ok(out)
}

impl Firmware {
    /// Renders the raw signals for the trace's trucks and starts the board on them, its
    /// UART0 a TCP server the runner relays to `pty_master`. The board waits for the relay,
    /// so its time 0 is the moment [`Firmware::start`] returns.
    pub fn start(
        spec: &Spec,
        trace: &str,
        duration_ms: i64,
        pty_master: &File,
        officer: Option<Officer>,
    ) -> Result<Firmware, HilError> {
        let dir = tempfile::Builder::new()
            .prefix("hil-firmware-")
            .tempdir()
            .map_err(|e| HilError::Setup(e.to_string()))?;
        let mut rng = Rng::new(0x4c41_4e45);
        let mut scene = Scene::new(
            &mut rng,
            &Assumptions::calm(),
            duration_ms as f64 / 1000.0 + 5.0,
        );
        for (at_s, truck) in trucks(trace, &spec.sensor)? {
            scene.arrivals.push(lane_node_sim::Arrival { at_s, truck });
        }
        if scene.arrivals.is_empty() {
            return Err(HilError::Setup(format!(
                "the trace has no vehicle on {}",
                spec.sensor
            )));
        }
        for f in &spec.loop_fault {
            scene.faults.push(LoopFaultAt {
                loop_index: f.loop_id.saturating_sub(1),
                from_s: f.at_ms as f64 / 1000.0,
                to_s: (f.at_ms + f.for_ms) as f64 / 1000.0,
                open: true,
            });
        }
        let raw = scene.render(&mut rng);
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.path().join(name), bytes)
                .map_err(|e| HilError::Setup(format!("{name}: {e}")))
        };
        write("raw.bin", &raw)?;
        write("node.cfg", scene.node_cfg().as_bytes())?;
        let port = free_port().map_err(|e| HilError::Setup(e.to_string()))?;
        let limit = (duration_ms / 1000 + 120) as u32;
        let child = board::start(dir.path(), board::Uart0::TcpServer(port), limit)
            .map_err(|e| HilError::Setup(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let to_board = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(HilError::Setup(format!(
                        "QEMU's UART0 on port {port} never opened: {e}"
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let from_board = relay(&to_board, pty_master, Arc::clone(&seen))?;
        let officer = officer.map(|o| {
            let (tx, rx) = std::sync::mpsc::channel();
            (tx, officer_at_the_screen(o, rx))
        });
        Ok(Firmware {
            child,
            seen,
            from_board: Some(from_board),
            truths: scene.truths(),
            commands_sent: 0,
            officer,
            _dir: dir,
        })
    }

    /// Asks the officer for the commands due before trace time `before_ms`, each at its own
    /// time; the trace started at `start` and plays `speed` times faster than recorded.
    pub fn send_commands_before(
        &mut self,
        spec: &Spec,
        start: Instant,
        speed: f64,
        before_ms: i64,
    ) {
        while let Some(c) = spec
            .command
            .get(self.commands_sent)
            .filter(|c| c.at_ms < before_ms)
        {
            let when = start + Duration::from_secs_f64(c.at_ms.max(0) as f64 / 1000.0 / speed);
            std::thread::sleep(when.saturating_duration_since(Instant::now()));
            if let Some((tx, _)) = &self.officer {
                let _ = tx.send(c.barrier);
            }
            self.commands_sent += 1;
        }
    }

    /// Waits for the board to reach the end of its raw trace and exit, then checks what it
    /// said and sent; returns the failures.
    pub fn finish(mut self, spec: &Spec, passages: &[Value], events: &[Value]) -> Vec<String> {
        let mut failures = Vec::new();
        let status = self.child.wait();
        let mut said = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut said);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut said);
        }
        match status {
            Ok(s) if s.success() => {}
            other => failures.push(format!(
                "the firmware did not exit cleanly ({other:?}): {said}"
            )),
        }
        if !said.contains(" 0 dropped") {
            failures.push(format!("the firmware dropped samples: {said}"));
        }
        // QEMU has exited and closed UART0: the relay has passed its last frame when it ends.
        if let Some(relay) = self.from_board.take() {
            let _ = relay.join();
        }
        let seen = self.seen.lock().expect("relay alive");
        match seen.last_status {
            Some(Body::Status { dropped: 0, .. }) => {}
            ref other => failures.push(format!("the last Status frame reports drops: {other:?}")),
        }
        if !spec.loop_fault.is_empty() && seen.faults & lane::Fault::LOOP == 0 {
            failures.push("a loop was opened but no Health frame reported a loop fault".into());
        }
        // On the wire: the firmware refused exactly as often as the scenario expects.
        let refusals = |acks: &mut dyn Iterator<Item = u8>| {
            acks.filter(|r| *r == AckResult::REFUSED_OCCUPIED).count()
        };
        let (seen_refusals, want_refusals) = (
            refusals(&mut seen.acks.iter().map(|(_, r)| *r)),
            refusals(&mut spec.command.iter().map(|c| c.ack.result())),
        );
        if seen_refusals != want_refusals {
            failures.push(format!(
                "the firmware refused {seen_refusals} commands, expected {want_refusals}: {:?}",
                seen.acks
            ));
        }
        drop(seen);
        // At the screen: what the appliance answered the officer, command by command.
        if let Some((tx, officer)) = self.officer.take() {
            drop(tx);
            let got = officer.join().unwrap_or_default();
            let want: Vec<Result<String, String>> = spec
                .command
                .iter()
                .map(|c| Ok(c.ack.name().to_string()))
                .collect();
            if got != want {
                failures.push(format!("the barrier answers {got:?}, expected {want:?}"));
            }
        }
        // At central: the automatic closes behind the truck, each done by the firmware.
        let mut ids = std::collections::BTreeSet::new();
        let autos: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "barrier" && e["body"]["by"] == "auto")
            .filter(|e| ids.insert(e["id"].to_string()))
            .map(|e| &e["body"])
            .collect();
        if autos.len() != spec.auto_closes || autos.iter().any(|b| b["result"] != "done") {
            failures.push(format!(
                "{} automatic closes at central, {} expected, each done: {autos:?}",
                autos.len(),
                spec.auto_closes
            ));
        }
        // The passages carry what the firmware weighed, within tolerance of the truth.
        for (i, truth) in self.truths.iter().enumerate() {
            let Some(p) = passages.get(i) else {
                failures.push(format!("no passage for truck {}", i + 1));
                continue;
            };
            let wim = &p["wim"];
            if wim["status"] != spec.wim_status.as_str() {
                failures.push(format!(
                    "truck {}: wim status {}, expected {}",
                    i + 1,
                    wim["status"],
                    spec.wim_status
                ));
            }
            let axles = wim["axles"].as_array().cloned().unwrap_or_default();
            if axles.len() != truth.axles.len() {
                failures.push(format!(
                    "truck {}: {} axles weighed, {} crossed",
                    i + 1,
                    axles.len(),
                    truth.axles.len()
                ));
                continue;
            }
            for (k, (a, t)) in axles.iter().zip(&truth.axles).enumerate() {
                let kg = a["load_kg"].as_f64().unwrap_or(0.0);
                if (kg - t.load_kg).abs() > t.load_kg * spec.axle_tolerance_pct / 100.0 {
                    failures.push(format!(
                        "truck {} axle {}: {kg} kg weighed, {} kg true",
                        i + 1,
                        k + 1,
                        t.load_kg
                    ));
                }
            }
            let gross = wim["gross_kg"].as_f64().unwrap_or(0.0);
            if (gross - truth.gross_kg).abs() > truth.gross_kg * spec.gross_tolerance_pct / 100.0 {
                failures.push(format!(
                    "truck {}: gross {gross} kg weighed, {} kg true",
                    i + 1,
                    truth.gross_kg
                ));
            }
        }
        failures
    }

    /// Frames the board sent so far.
    pub fn frames(&self) -> usize {
        self.seen.lock().map(|s| s.frames).unwrap_or(0)
    }
}

/// Two threads: board → pty (noting `Ack` and `Status` frames on the way; returned, so the
/// runner can wait for its end) and pty → board.
fn relay(
    board: &TcpStream,
    pty_master: &File,
    seen: Arc<Mutex<Seen>>,
) -> Result<std::thread::JoinHandle<()>, HilError> {
    let err = |e: std::io::Error| HilError::Setup(format!("relay: {e}"));
    let (mut from_board, mut to_board) = (
        board.try_clone().map_err(err)?,
        board.try_clone().map_err(err)?,
    );
    let (mut to_pty, mut from_pty) = (
        pty_master.try_clone().map_err(err)?,
        pty_master.try_clone().map_err(err)?,
    );
    let from_board_thread = std::thread::spawn(move || {
        let mut rx = Receiver::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = from_board.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = to_pty.write_all(&buf[..n]);
            let mut s = seen.lock().expect("one relay");
            for b in &buf[..n] {
                if let Some(f) = rx.push(*b) {
                    s.frames += 1;
                    match f.body {
                        Body::Ack { seq, result } => s.acks.push((seq, result)),
                        st @ Body::Status { .. } => s.last_status = Some(st),
                        Body::Health { faults, .. } => s.faults |= faults,
                        _ => {}
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = from_pty.read(&mut buf) {
            if n == 0 || to_board.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    Ok(from_board_thread)
}
