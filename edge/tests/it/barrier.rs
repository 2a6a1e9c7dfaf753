//! The barrier through the real binary: an officer opens it from the screen's API, the lane
//! node (played here on a pseudo-terminal, answering as the firmware does) acknowledges the
//! barrier and lights commands written down its serial line, the barrier closes by itself once
//! the truck has left the loop under it, a close onto an occupied loop is refused by the node
//! and reported as such, a silent node is tried again and then reported, a vehicle already
//! under the arm when it opens closes it by leaving, and every command is a `barrier` event at
//! central as its schema says.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::display::{add_account, browser, http, login, LaneScreen};
use acsgd_drivers::lane::{AckResult, Aspect, Body, Receiver};
use serde_json::{json, Value};

/// The lane node's side: answers `Barrier` and `Lights` commands addressed to it as the
/// firmware does (refusing to lower the arm while `occupied`), unless `silent`; keeps what it
/// was sent.
struct Node {
    occupied: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    commands: Arc<Mutex<Vec<(u8, Body)>>>,
    out: Arc<Mutex<std::fs::File>>,
    seq: Mutex<u8>,
}

impl Node {
    fn start(pty: &Pty) -> Arc<Node> {
        let node = Arc::new(Node {
            occupied: Arc::default(),
            silent: Arc::default(),
            commands: Arc::default(),
            out: Arc::new(Mutex::new(pty.master.try_clone().unwrap())),
            seq: Mutex::new(0),
        });
        let mut from = pty.master.try_clone().unwrap();
        let n = node.clone();
        std::thread::spawn(move || {
            let mut rx = Receiver::new();
            let mut open = false;
            let mut buf = [0u8; 256];
            while let Ok(k) = from.read(&mut buf) {
                if k == 0 {
                    return;
                }
                for b in &buf[..k] {
                    let Some(f) = rx.push(*b) else { continue };
                    n.commands.lock().unwrap().push((f.addr, f.body));
                    if f.addr != 1 || n.silent.load(Ordering::SeqCst) {
                        continue;
                    }
                    let result = match f.body {
                        Body::Barrier { open: false } if n.occupied.load(Ordering::SeqCst) => {
                            AckResult::REFUSED_OCCUPIED
                        }
                        Body::Barrier { open: o } => {
                            open = o;
                            AckResult::DONE
                        }
                        Body::Lights { .. } => AckResult::DONE,
                        _ => AckResult::UNKNOWN_COMMAND,
                    };
                    n.send(Body::Ack { seq: f.seq, result });
                    n.send(Body::Status {
                        t_ms: 0,
                        barrier_open: open,
                        aspect: if open { Aspect::Green } else { Aspect::Red },
                        samples: 0,
                        dropped: 0,
                    });
                }
            }
        });
        node
    }

    fn send(&self, body: Body) {
        let mut seq = self.seq.lock().unwrap();
        let f = frame(&mut seq, body);
        let mut out = self.out.lock().unwrap();
        out.write_all(&f).unwrap();
        out.flush().unwrap();
    }

    fn barrier_loop(&self, occupied: bool) {
        self.occupied.store(occupied, Ordering::SeqCst);
        self.send(Body::Loop {
            t_ms: 0,
            loop_id: 2,
            occupied,
        });
    }

    fn commands(&self) -> Vec<(u8, Body)> {
        self.commands.lock().unwrap().clone()
    }
}

fn wait_until(secs: u64, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn officers_open_the_barrier_it_closes_behind_the_truck_and_the_node_has_the_last_word() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&tmp.path().join("broker")).unwrap();
    let central = Central::connect(broker.port(), "central-barrier");
    let setup = Setup::new(tmp.path(), broker.port(), "", "");
    let pty = pty();
    add_account(
        &tmp.path().join("accounts.toml"),
        "off",
        "officer",
        "officer-pass",
    );
    add_account(
        &tmp.path().join("accounts.toml"),
        "tech",
        "technician",
        "tech-pass-1",
    );
    let port = acsgd::mosquitto::free_port().unwrap();
    setup.add(&format!(
        "{}[display]\nbind = \"127.0.0.1:{port}\"\naccounts_file = \"accounts.toml\"\nlang = \"en\"\n\
         [lanes.barrier]\nnode = \"node-1\"\nclose_after_loop = 2\n",
        fast_lane_with_node(&pty.path)
    ));
    let node = Node::start(&pty);
    let _app = setup.start();
    wait_until(10, "the display listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let (_, off, _) = login(port, "off", "officer-pass");
    let (_, tech, _) = login(port, "tech", "tech-pass-1");
    let barrier = |cookie: &str, lane: &str, open: bool| {
        http(
            port,
            "POST",
            &format!("/api/lanes/{lane}/barrier"),
            cookie,
            &[],
            Some(json!({ "open": open })),
        )
    };

    // Before the node has said a word there is nobody to address: said so, nothing sent.
    let (code, _, a) = barrier(&off, "1", true);
    assert_eq!((code, a["result"].as_str()), (200, Some("no_node")), "{a}");
    assert!(node.commands().is_empty());
    // Not a technician's to move; no barrier on a lane that has none.
    assert_eq!(barrier(&tech, "1", true).0, 403);
    assert_eq!(barrier(&off, "2", true).2["error"], "no_barrier");

    // The node speaks (its periodic status): now it can be commanded.
    node.send(Body::Status {
        t_ms: 0,
        barrier_open: false,
        aspect: Aspect::Red,
        samples: 0,
        dropped: 0,
    });
    wait_until(10, "the node's status reaches the screen", || {
        http(port, "GET", "/api/state", &off, &[], None).2["status"]["barriers"]["1"]["barrier"]
            == "closed"
    });
    // The officer opens it on the screen, in a real headless Chromium.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let b = browser().await;
        b.sign_in(&format!("http://127.0.0.1:{port}/"), "off", "officer-pass")
            .await;
        b.until(
            15,
            "lane 1's barrier shown closed, with its buttons",
            r#"document.querySelector('.barrier[data-lane="1"][data-barrier="closed"] .barrier-open')"#,
        )
        .await;
        b.click(r#".barrier[data-lane="1"] .barrier-open"#).await;
        b.until(
            15,
            "the node's answer on the screen, the arm open and the lights green",
            r#"(() => { const e = document.querySelector('.barrier[data-lane="1"]');
                 return e && e.dataset.barrier === 'open' && e.dataset.lights === 'green'
                   && e.querySelector('.barrier-said').textContent === 'Done'; })()"#,
        )
        .await;
        // Every screen shows who moved it last (from the status, not from its own click).
        b.until(
            15,
            "the last command, with the officer who gave it",
            r#"(() => { const l = document.querySelector('.barrier[data-lane="1"] .barrier-last');
                 return l && l.textContent.startsWith('Last: opened by off at ')
                   && l.textContent.endsWith(': Done'); })()"#,
        )
        .await;
    });
    assert_eq!(
        node.commands(),
        vec![
            (1, Body::Barrier { open: true }),
            (
                1,
                Body::Lights {
                    aspect: Aspect::Green
                }
            )
        ],
        "the barrier, then the lights, each addressed to the node"
    );
    // The technician's `acsgd outbox ... stat` says the same, by the status file.
    wait_until(10, "the status file shows it open", || {
        setup.stat()["barriers"]["1"]["barrier"] == "open"
    });
    let human = std::process::Command::new(env!("CARGO_BIN_EXE_acsgd"))
        .args(["outbox", "--data-dir"])
        .arg(&setup.data_dir)
        .arg("stat")
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("barrier 1     open, lights green (lane node node-1)"),
        "{human}"
    );
    wait_until(10, "the screen shows it open", || {
        let s = http(port, "GET", "/api/state", &off, &[], None).2;
        s["status"]["barriers"]["1"]["barrier"] == "open"
            && s["status"]["barriers"]["1"]["lights"] == "green"
    });

    // The truck drives under the arm and away: the barrier closes by itself, lights red.
    node.barrier_loop(true);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        node.commands().len(),
        2,
        "nothing while the truck is under it"
    );
    node.barrier_loop(false);
    wait_until(10, "the automatic close and red lights", || {
        node.commands().len() == 4
    });
    assert_eq!(
        node.commands()[2..],
        [
            (1, Body::Barrier { open: false }),
            (
                1,
                Body::Lights {
                    aspect: Aspect::Red
                }
            )
        ]
    );

    // An officer opens it again; a vehicle stops under it; closing is the node's call: refused.
    assert_eq!(barrier(&off, "1", true).2["result"], "done");
    node.barrier_loop(true);
    let (code, _, a) = barrier(&off, "1", false);
    assert_eq!(
        (code, a["result"].as_str()),
        (200, Some("refused_occupied")),
        "{a}"
    );
    assert!(
        a.get("lights").is_none(),
        "the lights stay as they are: {a}"
    );

    // A node that stops answering is tried again, then reported; nothing else is claimed.
    node.silent.store(true, Ordering::SeqCst);
    let before = node.commands().len();
    let (code, _, a) = barrier(&off, "1", false);
    assert_eq!(
        (code, a["result"].as_str()),
        (200, Some("no_answer")),
        "{a}"
    );
    let tries = node.commands()[before..].to_vec();
    assert_eq!(tries.len(), acsgd::barrier::TRIES, "{tries:?}");
    assert!(tries
        .iter()
        .all(|t| *t == (1, Body::Barrier { open: false })));

    // The node answers again; the vehicle that was under the arm all along leaves: closed.
    node.silent.store(false, Ordering::SeqCst);
    let before = node.commands().len();
    node.barrier_loop(false);
    wait_until(10, "the automatic close after the silence", || {
        node.commands().len() == before + 2
    });
    // A vehicle already under the arm when an officer opens it: its leaving closes it too.
    node.barrier_loop(true);
    assert_eq!(barrier(&off, "1", true).2["result"], "done");
    let before = node.commands().len();
    node.barrier_loop(false);
    wait_until(
        10,
        "the close behind the vehicle that was there at the opening",
        || node.commands().len() == before + 2,
    );
    assert_eq!(node.commands()[before], (1, Body::Barrier { open: false }));

    // Every command is a `barrier` event at central, as its schema says.
    let events = central.wait_for(15, "nine barrier events", |ev| {
        ev.iter().filter(|e| e["type"] == "barrier").count() >= 9
    });
    let bodies: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "barrier")
        .map(|e| &e["body"])
        .collect();
    let summary: Vec<(String, String, String)> = bodies
        .iter()
        .map(|b| {
            (
                b["action"].as_str().unwrap().into(),
                b["result"].as_str().unwrap().into(),
                b["by"].as_str().unwrap().into(),
            )
        })
        .collect();
    let s = |a: &str, r: &str, b: &str| (a.to_string(), r.to_string(), b.to_string());
    assert_eq!(
        summary,
        vec![
            s("open", "no_node", "officer"),
            s("open", "done", "officer"),
            s("close", "done", "auto"),
            s("open", "done", "officer"),
            s("close", "refused_occupied", "officer"),
            s("close", "no_answer", "officer"),
            s("close", "done", "auto"),
            s("open", "done", "officer"),
            s("close", "done", "auto"),
        ]
    );
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/barrier.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    for b in &bodies {
        if let Err(e) = v.validate(b) {
            panic!("{e}\n{b}");
        }
    }
    assert_eq!(bodies[1]["officer"], "off");
    assert!(
        bodies[2].get("officer").is_none(),
        "the automatic close names nobody"
    );
    let mut anonymous = bodies[1].clone();
    anonymous.as_object_mut().unwrap().remove("officer");
    assert!(
        v.validate(&anonymous).is_err(),
        "an officer's command names the officer"
    );
}
