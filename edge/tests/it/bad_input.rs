//! Bad configuration, an unreachable broker and an unusable data directory: one clear line and
//! a non-zero exit, or (for the broker) a retry loop with a health event. Never a panic.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// Runs `acsgd run` on config text; returns (exit code, stderr).
fn run_with(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acsgd.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_acsgd"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.code().unwrap_or(-1), err)
}

const GOOD: &str = "post = \"korgas\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1\"\n[storage]\ndata_dir = \"/tmp/x\"\n";

#[test]
fn malformed_config_values_give_one_line_naming_file_key_and_problem() {
    let cases = [
        (
            GOOD.replace("korgas", "Korgas Post"),
            "acsgd: config FILE:1: post: \"Korgas Post\" is not a post id",
        ),
        (
            GOOD.replace("[storage]", "window = \"wide\"\n[storage]"),
            "acsgd: config FILE:4: uplink.window: invalid type: string \"wide\"",
        ),
        (
            GOOD.replace("[storage]", "brokr = \"x\"\n[storage]"),
            "acsgd: config FILE:4: uplink.brokr: unknown field `brokr`",
        ),
        (
            GOOD.replace("mqtt://127.0.0.1:1", "http://central"),
            "acsgd: config FILE:3: uplink.broker: expected mqtt://HOST:PORT",
        ),
        (
            GOOD.replace(
                "data_dir = \"/tmp/x\"",
                "data_dir = \"/tmp/x\"\nquota_mb = -5",
            ),
            "acsgd: config FILE:6: storage.quota_mb: invalid value: integer `-5`",
        ),
        (
            GOOD.replace("[uplink]\n", ""),
            "acsgd: config FILE:2: broker: unknown field `broker`",
        ),
        (
            GOOD.replace("post = \"korgas\"\n", ""),
            "acsgd: config FILE: post: required key is missing",
        ),
        (
            GOOD.replace("data_dir = \"/tmp/x\"\n", ""),
            "acsgd: config FILE: storage.data_dir: required key is missing",
        ),
        (
            "post = [\n".to_string(),
            "acsgd: config FILE:2: invalid array",
        ),
    ];
    for (text, want) in cases {
        let (code, err) = run_with(&text);
        assert_eq!(code, 2, "{err}");
        assert!(err.starts_with(want), "want {want:?}, got {err:?}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(!err.contains("panicked"));
    }
}

#[test]
fn a_missing_config_file_is_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_acsgd"))
        .args(["run", "--config", "/nonexistent/acsgd.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(err.trim_end(), "acsgd: config /nonexistent/acsgd.toml: cannot read: No such file or directory (os error 2)");
}

#[test]
fn an_unwritable_data_dir_is_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // A path under a regular file cannot be created, even by root.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let (code, err) = run_with(&GOOD.replace("/tmp/x", &file.join("data").display().to_string()));
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "acsgd: data dir {}: ",
            file.join("data").display()
        )),
        "{err}"
    );
    assert!(err.contains("Not a directory"), "{err}");
}

#[test]
fn an_unreachable_broker_means_retries_and_a_health_event_not_an_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let mut broker = Central::registered_on_stopped_broker(
        &tmp.path().join("broker"),
        port,
        "central-unreachable",
    );
    let setup = Setup::new(tmp.path(), port, "", "");
    let mut app = setup.start();
    // Retried with backoff (100 ms doubling to 1 s): several attempts, not one. Waited for in
    // the log rather than slept on, so a loaded machine cannot make it one attempt.
    setup.wait_for_log_count(30, "uplink connection failed", 3);
    assert!(app.is_running(), "still running: {}", setup.log());
    let st = wait_for_stat(&setup, |st| !st["uplink"]["last_error"].is_null());
    assert_eq!(st["source"], "live");
    assert_eq!(st["uplink"]["connected"], false);
    // One line with the OS's own text, not rumqttc's nested Debug output.
    assert_eq!(
        st["uplink"]["last_error"], "connection: Connection refused (os error 111)",
        "{st}"
    );
    // The broker comes: the backlog, including the outage's health event, is delivered.
    broker.restart().unwrap();
    let central = Central::connect(broker.port(), "central-unreachable");
    let got = central.wait_for(20, "the uplink health events", |ev| {
        ev.iter().any(|e| {
            e["type"] == "health"
                && e["body"]["component"] == "uplink"
                && e["body"]["state"] == "down"
        }) && ev.iter().any(|e| {
            e["type"] == "health"
                && e["body"]["component"] == "uplink"
                && e["body"]["state"] == "up"
        })
    });
    let down = got
        .iter()
        .filter(|e| e["body"]["component"] == "uplink" && e["body"]["state"] == "down")
        .count();
    // The error went with the outage.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = setup.stat();
        if st["uplink"]["connected"] == true {
            assert!(st["uplink"]["last_error"].is_null(), "{st}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{st}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        down, 1,
        "one down event for the whole outage, not one per retry"
    );
    assert!(app.is_running());
}

#[test]
fn a_start_that_fails_queues_no_started_event_for_central() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&tmp.path().join("broker")).unwrap();
    let central = Central::connect(broker.port(), "central-failed-start");
    let setup = Setup::new(tmp.path(), broker.port(), "", "");
    // A tracker port something else already holds: the start fails after the outbox opened.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    setup.add(&format!(
        "[[sensors]]\nid = \"seals\"\nprotocol = \"teltonika\"\n\
         transport = {{ kind = \"tcp\", listen = \"127.0.0.1:{port}\" }}\n"
    ));
    for _ in 0..3 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_acsgd"))
            .args(["run", "--config"])
            .arg(&setup.config)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }
    drop(held);
    let _app = setup.start();
    let got = central.wait_for(20, "the start", |ev| {
        ev.iter()
            .any(|e| e["body"]["component"] == "service" && e["body"]["reason"] == "started")
    });
    std::thread::sleep(Duration::from_secs(1));
    let started = central
        .events()
        .iter()
        .filter(|e| e["body"]["component"] == "service" && e["body"]["reason"] == "started")
        .count();
    assert_eq!(started, 1, "one start, one event: {got:?}");
}
