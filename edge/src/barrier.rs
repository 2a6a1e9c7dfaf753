//! Lane control: the barrier and lights of every lane whose lane node drives them
//! (`[lanes.barrier]`). Officers open and close the barrier from the screen
//! ([`crate::display::barrier`]); once opened it closes by itself after a vehicle has come onto
//! the loop under the arm and left it (`close_after_loop`). The lights follow the arm: green
//! once it is open, red once it is down.
//!
//! One task per lane. A command is a lane-node frame written down the node's serial line
//! ([`Outgoing`], the sensor's transport writes it) and answered by the node's `Ack` carrying
//! the command's `seq`; with no answer within [`ACK_WAIT`] it is sent again under a new `seq`,
//! [`TRIES`] times in all (opening an open barrier, or closing a closed one, does nothing, so
//! a repeat is harmless). A command not written by then is dropped by the transport, so a line
//! that was away never moves a barrier late. The interlock is the node's: it refuses to lower
//! the arm while its barrier loop is occupied, whatever the appliance believes, and the
//! appliance reports the refusal. Every command, an officer's or the automatic close, is a
//! `barrier` event with the node's answer: the audit trail of who opened the lane and when.
//!
//! The node's address is learnt from its own frames (every frame a node sends carries it): a
//! command before the node has spoken waits for it as long as all its tries would take, then
//! is answered `no_node` (never broadcast: other nodes may share the bus).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acsgd_drivers::lane::{self, AckResult, Aspect, Body, Frame};
use acsgd_drivers::transport::Outgoing;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::display::barrier::{Actor, Answer, Outcome, Request};
use crate::envelope::{Event, Kind};
use crate::outbox::Outbox;

/// How long the node has to acknowledge a command before it is sent again. A lane node answers
/// within milliseconds (the frame is 9 bytes; at 9 600 baud about 10 ms each way).
pub const ACK_WAIT: Duration = Duration::from_millis(1500);
/// Sends of one command at most (the first and the repeats).
pub const TRIES: usize = 3;
/// Requests from screens waiting on one lane at most; more are refused at once (the officer
/// tries again) instead of moving the barrier later than asked.
const QUEUE: usize = 4;
/// Frames from the lane node waiting for the lane control at most; the sensors' store task
/// never waits on it (a full queue costs frames here, not readings there).
const FRAMES: usize = 256;

/// What the lane node last said of its outputs, and the last command; shown on the screens
/// and in the status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneOutputs {
    /// The lane node that drives them.
    pub node: String,
    /// `open`, `closed`, or `unknown` until the node has reported.
    pub barrier: String,
    /// `off`, `red`, `yellow`, `green`, or `unknown`.
    pub lights: String,
    /// The last command: action, result, who (`auto` for the automatic close), time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Value>,
}

/// The lanes' outputs as last reported, by lane.
pub type States = Arc<Mutex<BTreeMap<String, LaneOutputs>>>;

/// The started lane control.
pub struct Started {
    /// Per lane: where the screens send their requests.
    pub requests: HashMap<String, mpsc::Sender<Request>>,
    /// Per lane-node sensor: where the frames it reads go.
    pub frames: Taps,
    /// Per lane-node sensor: the outgoing side of its serial line, for its transport.
    pub lines: HashMap<String, mpsc::Receiver<Outgoing>>,
    pub states: States,
    /// One task per lane (the service watches them).
    pub tasks: Vec<(String, JoinHandle<()>)>,
}

/// Where the frames of each lane node that drives a barrier go.
#[derive(Clone, Default)]
pub struct Taps(Arc<HashMap<String, mpsc::Sender<Frame>>>);

impl Taps {
    /// Hands a sensor's frames to its lane's control, if it has one; never waits.
    pub fn offer(&self, sensor: &str, readings: &[acsgd_drivers::reading::Reading]) {
        let Some(tx) = self.0.get(sensor) else {
            return;
        };
        for r in readings {
            if let acsgd_drivers::reading::Reading::Lane(f) = r {
                if matches!(
                    f.body,
                    Body::Ack { .. }
                        | Body::Status { .. }
                        | Body::Loop { .. }
                        | Body::Health { .. }
                ) {
                    let _ = tx.try_send(*f);
                }
            }
        }
    }
}

/// Starts a task for every lane with a barrier.
pub fn start(config: &Config, outbox: Outbox, stop: watch::Receiver<bool>) -> Started {
    let states: States = Arc::default();
    let mut started = Started {
        requests: HashMap::new(),
        frames: Taps::default(),
        lines: HashMap::new(),
        states: states.clone(),
        tasks: Vec::new(),
    };
    let mut taps = HashMap::new();
    for lane in &config.lanes {
        let Some(b) = &lane.barrier else { continue };
        let (req_tx, requests) = mpsc::channel(QUEUE);
        let (frame_tx, frames) = mpsc::channel(FRAMES);
        let (line, line_rx) = mpsc::channel(TRIES * QUEUE);
        started.requests.insert(lane.id.clone(), req_tx);
        taps.insert(b.node.clone(), frame_tx);
        started.lines.insert(b.node.clone(), line_rx);
        states.lock().expect("states lock").insert(
            lane.id.clone(),
            LaneOutputs {
                node: b.node.clone(),
                barrier: "unknown".into(),
                lights: "unknown".into(),
                last: None,
            },
        );
        let control = Control::new(
            lane.id.clone(),
            b.close_after_loop,
            line,
            frames,
            requests,
            outbox.clone(),
            states.clone(),
        );
        let task = tokio::spawn(control.run(stop.clone()));
        started.tasks.push((format!("barrier/{}", lane.id), task));
    }
    started.frames = Taps(Arc::new(taps));
    started
}

/// One lane's control.
struct Control {
    lane: String,
    close_after_loop: Option<u8>,
    line: mpsc::Sender<Outgoing>,
    frames: mpsc::Receiver<Frame>,
    requests: mpsc::Receiver<Request>,
    outbox: Outbox,
    states: States,
    /// The node's address, from its frames.
    node: Option<u8>,
    seq: u8,
    /// Opened by a command the node carried out, not closed since.
    open: bool,
    /// Since that opening: `Some(false)` waiting for a vehicle on the barrier loop,
    /// `Some(true)` one is on it (the close follows when it leaves); `None` when no automatic
    /// close is configured or the barrier is not open.
    passed_under: Option<bool>,
    /// The vehicle has left the barrier loop: the automatic close is due.
    close_due: bool,
    /// The barrier loop is occupied, as the node last said.
    under_arm: bool,
}

impl Control {
    /// A lane's control before its node has spoken: no address, barrier taken as closed.
    fn new(
        lane: String,
        close_after_loop: Option<u8>,
        line: mpsc::Sender<Outgoing>,
        frames: mpsc::Receiver<Frame>,
        requests: mpsc::Receiver<Request>,
        outbox: Outbox,
        states: States,
    ) -> Control {
        Control {
            lane,
            close_after_loop,
            line,
            frames,
            requests,
            outbox,
            states,
            node: None,
            seq: 0,
            open: false,
            passed_under: None,
            close_due: false,
            under_arm: false,
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                Some(r) = self.requests.recv() => {
                    // A screen that stopped waiting (its request queued behind others) has told
                    // the officer to try again: its request must not move the barrier later.
                    if r.reply.is_closed() {
                        tracing::warn!(lane = %self.lane, "barrier request dropped: the screen stopped waiting");
                        continue;
                    }
                    let a = self.carry_out(r.open, Some(&r.by)).await;
                    let _ = r.reply.send(a);
                }
                f = self.frames.recv() => match f {
                    Some(f) => self.observe(&f),
                    None => return,
                },
                _ = stop.changed() => return,
            }
            if std::mem::take(&mut self.close_due) && self.open {
                self.carry_out(false, None).await;
            }
        }
    }

    /// Takes in a frame of the node: its address, the outputs it reports, the barrier loop.
    fn observe(&mut self, f: &Frame) {
        if f.addr != lane::APPLIANCE && f.addr != lane::BROADCAST {
            self.node = Some(f.addr);
        }
        match f.body {
            Body::Status {
                barrier_open,
                aspect,
                ..
            } => {
                self.set_state(|s| {
                    s.barrier = if barrier_open { "open" } else { "closed" }.into();
                    s.lights = aspect_name(aspect).into();
                });
                // The node is the truth: an arm it reports down (closed by hand, a reset) needs
                // no automatic close.
                if !barrier_open && self.open {
                    self.open = false;
                    self.passed_under = None;
                }
            }
            Body::Loop {
                loop_id, occupied, ..
            } if Some(loop_id) == self.close_after_loop => {
                self.under_arm = occupied;
                match (self.open, self.passed_under, occupied) {
                    (true, Some(_), true) => self.passed_under = Some(true),
                    (true, Some(true), false) => {
                        self.passed_under = Some(false);
                        self.close_due = true;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Moves the barrier (and then the lights) and records it: `by` an officer, or the
    /// automatic close when `None`.
    async fn carry_out(&mut self, open: bool, by: Option<&Actor>) -> Answer {
        let result = self.command(Body::Barrier { open }).await;
        let lights = if result == Outcome::Done {
            self.open = open;
            // A vehicle already under the arm when it opens counts: its leaving closes it.
            self.passed_under = (open && self.close_after_loop.is_some()).then_some(self.under_arm);
            self.close_due = false;
            let aspect = if open { Aspect::Green } else { Aspect::Red };
            Some(self.command(Body::Lights { aspect }).await)
        } else {
            None
        };
        let action = if open { "open" } else { "close" };
        let mut body = json!({
            "lane": self.lane,
            "action": action,
            "result": result,
            "by": if by.is_some() { "officer" } else { "auto" },
        });
        if let Some(l) = lights {
            body["lights"] = json!(l);
        }
        if let Some(a) = by {
            body["officer"] = json!(a.officer);
            body["officer_name"] = json!(a.officer_name);
            body["role"] = json!(a.role);
        }
        let last = json!({"action": action, "result": result, "by": by.map_or("auto", |a| a.officer.as_str()),
                          "time": crate::envelope::rfc3339_ms(time::OffsetDateTime::now_utc())});
        self.set_state(|s| s.last = Some(last));
        let event = match self.outbox.append(Event::now(Kind::Barrier, body)).await {
            Ok(acc) => Some(acc.id),
            Err(e) => {
                tracing::error!(lane = %self.lane, error = %e, "barrier command not recorded");
                None
            }
        };
        match result {
            Outcome::Done => tracing::info!(lane = %self.lane, action, "barrier moved"),
            other => {
                tracing::warn!(lane = %self.lane, action, result = other.as_str(), "barrier did not move")
            }
        }
        Answer {
            result,
            lights,
            event,
        }
    }

    /// Sends one command until the node acknowledges it, [`TRIES`] times at most.
    async fn command(&mut self, body: Body) -> Outcome {
        // A node that is up reports its status every second or so: one not heard since the
        // start (the appliance just started, or the node did) is given the time of every try.
        let until = Instant::now() + ACK_WAIT * TRIES as u32;
        while self.node.is_none() {
            let f = tokio::select! {
                f = self.frames.recv() => f,
                _ = tokio::time::sleep_until(until) => None,
            };
            match f {
                Some(f) => self.observe(&f),
                None => return Outcome::NoNode,
            }
        }
        let Some(addr) = self.node else {
            return Outcome::NoNode;
        };
        for _ in 0..TRIES {
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            let mut buf = [0u8; lane::MAX_FRAME];
            let Ok(n) = lane::encode(&Frame { addr, seq, body }, &mut buf) else {
                return Outcome::Refused;
            };
            let until = Instant::now() + ACK_WAIT;
            let out = Outgoing {
                bytes: buf[..n].to_vec(),
                until: until.into_std(),
            };
            if self.line.try_send(out).is_err() {
                // The line's queue is full of commands not yet written: the port is away.
                tokio::time::sleep_until(until).await;
                continue;
            }
            loop {
                let f = tokio::select! {
                    f = self.frames.recv() => f,
                    _ = tokio::time::sleep_until(until) => break,
                };
                let Some(f) = f else {
                    return Outcome::NoAnswer;
                };
                if let Body::Ack { seq: s, result } = f.body {
                    if s == seq {
                        return of_ack(result);
                    }
                }
                // Status and loops keep their meaning while a command waits.
                self.observe(&f);
            }
        }
        Outcome::NoAnswer
    }

    fn set_state(&self, change: impl FnOnce(&mut LaneOutputs)) {
        if let Some(s) = self.states.lock().expect("states lock").get_mut(&self.lane) {
            change(s);
        }
    }
}

/// The node's `Ack` result as an outcome.
pub fn of_ack(result: u8) -> Outcome {
    match result {
        AckResult::DONE => Outcome::Done,
        AckResult::REFUSED_OCCUPIED => Outcome::RefusedOccupied,
        AckResult::ACTUATOR_FAULT => Outcome::ActuatorFault,
        _ => Outcome::Refused,
    }
}

fn aspect_name(a: Aspect) -> &'static str {
    match a {
        Aspect::Off => "off",
        Aspect::Red => "red",
        Aspect::Yellow => "yellow",
        Aspect::Green => "green",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::display::settings::Role;
    use crate::outbox::{OpenMode, Store};
    use acsgd_contract::envelope::Signer;
    use tokio::sync::oneshot;

    /// A lane control on channels: the test is its node (reads the line, sends frames) and its
    /// screen. Time is paused (it moves only when every task waits), so no answer is late.
    struct Rig {
        requests: mpsc::Sender<Request>,
        frames: mpsc::Sender<Frame>,
        line: mpsc::Receiver<Outgoing>,
        outbox: Outbox,
        _stop: watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    fn rig(close_after_loop: Option<u8>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), 64 << 20, OpenMode::Service).unwrap();
        let signer = Signer::load_or_create(dir.path(), "t").unwrap();
        let outbox = Outbox::start(Arc::new(store), signer, 16);
        let (req_tx, requests) = mpsc::channel(QUEUE);
        let (frame_tx, frames) = mpsc::channel(FRAMES);
        let (line, line_rx) = mpsc::channel(TRIES * QUEUE);
        let (stop_tx, stop) = watch::channel(false);
        let states: States = Arc::default();
        states.lock().unwrap().insert(
            "1".into(),
            LaneOutputs {
                node: "node-1".into(),
                barrier: "unknown".into(),
                lights: "unknown".into(),
                last: None,
            },
        );
        let control = Control::new(
            "1".into(),
            close_after_loop,
            line,
            frames,
            requests,
            outbox.clone(),
            states,
        );
        tokio::spawn(control.run(stop));
        Rig {
            requests: req_tx,
            frames: frame_tx,
            line: line_rx,
            outbox,
            _stop: stop_tx,
            _dir: dir,
        }
    }

    fn officer() -> Actor {
        Actor {
            officer: "off".into(),
            officer_name: "Officer".into(),
            role: Role::Officer,
        }
    }

    impl Rig {
        /// The node at `addr` says something (its address is all the control learns here).
        async fn hello(&self, addr: u8) {
            self.node(
                addr,
                Body::Loop {
                    t_ms: 0,
                    loop_id: 1,
                    occupied: false,
                },
            )
            .await;
        }

        async fn node(&self, addr: u8, body: Body) {
            self.frames
                .send(Frame { addr, seq: 0, body })
                .await
                .unwrap();
        }

        /// The node acknowledges command `seq` with `result`.
        async fn ack(&self, addr: u8, seq: u8, result: u8) {
            self.node(addr, Body::Ack { seq, result }).await;
        }

        /// An officer's request; the answer comes on the receiver.
        async fn ask(&self, open: bool) -> oneshot::Receiver<Answer> {
            let (reply, answer) = oneshot::channel();
            self.requests
                .send(Request {
                    open,
                    by: officer(),
                    reply,
                })
                .await
                .unwrap();
            answer
        }
    }

    /// The next command on the line, decoded.
    async fn next_command(line: &mut mpsc::Receiver<Outgoing>) -> Frame {
        let out = line.recv().await.expect("a command");
        match lane::scan(&out.bytes) {
            lane::Scan::Frame(f, n) if n == out.bytes.len() => f,
            other => panic!("not one frame: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn commands_go_to_the_node_that_spoke_and_only_its_answer_to_that_seq_counts() {
        let mut r = rig(None);
        r.hello(7).await;
        let answer = r.ask(true).await;
        let cmd = next_command(&mut r.line).await;
        assert_eq!((cmd.addr, cmd.body), (7, Body::Barrier { open: true }));
        // An answer to another command changes nothing; the one to this command does.
        r.ack(7, cmd.seq.wrapping_add(9), AckResult::REFUSED_OCCUPIED)
            .await;
        r.ack(7, cmd.seq, AckResult::DONE).await;
        let lights = next_command(&mut r.line).await;
        assert_eq!(
            lights.body,
            Body::Lights {
                aspect: Aspect::Green
            }
        );
        assert_eq!(lights.seq, cmd.seq.wrapping_add(1));
        r.ack(7, lights.seq, AckResult::DONE).await;
        let a = answer.await.unwrap();
        assert_eq!((a.result, a.lights), (Outcome::Done, Some(Outcome::Done)));
        assert!(a.event.is_some(), "recorded");
        assert_eq!(r.outbox.store().last_seq(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_command_is_tried_three_times_then_reported() {
        let mut r = rig(None);
        r.hello(1).await;
        let answer = r.ask(false).await;
        let mut seqs = Vec::new();
        for _ in 0..TRIES {
            let c = next_command(&mut r.line).await;
            assert_eq!(c.body, Body::Barrier { open: false });
            seqs.push(c.seq);
        }
        let a = answer.await.unwrap();
        assert_eq!((a.result, a.lights), (Outcome::NoAnswer, None));
        seqs.dedup();
        assert_eq!(seqs.len(), TRIES, "each try under a new seq");
        assert!(r.line.try_recv().is_err(), "nothing more");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_the_screen_stopped_waiting_for_never_moves_the_barrier() {
        let mut r = rig(None);
        r.hello(1).await;
        drop(r.ask(true).await);
        // A later request that is waited for goes through; the stale one never did.
        let answer = r.ask(false).await;
        let c = next_command(&mut r.line).await;
        assert_eq!(c.body, Body::Barrier { open: false });
        r.ack(1, c.seq, AckResult::REFUSED_OCCUPIED).await;
        assert_eq!(answer.await.unwrap().result, Outcome::RefusedOccupied);
        assert!(r.line.try_recv().is_err());
    }
}
