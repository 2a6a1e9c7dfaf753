//! `/metrics` on the technician port, scraped over a real socket from the real binary with a
//! real mosquitto, and checked by Prometheus' own linter (`promtool check metrics`, taken out
//! of Debian's `prometheus` package by `.ci/test`; `$PROMTOOL` names it).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// `GET /metrics`: the status line, the content type and the body.
fn scrape(port: u16) -> (String, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.lines().next().unwrap_or("").to_string();
    let kind = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (status, kind, body.to_string())
}

/// Samples without labels by name, and labelled ones as `name{labels}`.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse::<f64>().unwrap())
        })
        .collect()
}

fn promtool() -> String {
    std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into())
}

/// Prometheus' linter on `body`: its exit status and what it said.
fn promtool_check(body: &str) -> (bool, String) {
    let mut p = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): .ci/test takes it out of Debian's prometheus package and sets $PROMTOOL",
                promtool()
            )
        });
    p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn metrics_count_what_was_accepted_and_delivered_and_prometheus_lints_them_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let broker_port = free_port().unwrap();
    let _broker = Mosquitto::start_with(&tmp.path().join("broker"), broker_port, "").unwrap();
    let central = Central::connect(broker_port, "central-metrics");
    let setup = Setup::new(tmp.path(), broker_port, "", "");
    let port = free_port().unwrap();
    setup.add(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
         [[sensors]]\nid = \"rpm-1\"\nlane = \"1\"\nprotocol = \"rpm\"\n\
         transport = {{ kind = \"tcp\", listen = \"127.0.0.1:{}\" }}\n",
        free_port().unwrap()
    ));
    let mut app = setup.start();

    let mut answers = Vec::new();
    let alerts: Vec<_> = (0..5)
        .map(|i| ("alert", serde_json::json!({"n": i, "text": "metrics"})))
        .collect();
    setup.ingest().send(&alerts, &mut answers).unwrap();
    assert!(answers.iter().all(|a| matches!(a, Answer::Ok { .. })));
    let ids = acked_ids(&answers);
    central.wait_for(60, "the five alerts", |ev| {
        ev.iter()
            .filter(|e| e["id"].as_str().is_some_and(|id| ids.contains_key(id)))
            .count()
            >= 5
    });

    // The status behind the metrics is remade every second: wait for one that has them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (status, kind, body, m) = loop {
        let (status, kind, body) = scrape(port);
        let m = samples(&body);
        let delivered = m
            .get("acsgd_outbox_delivered_total")
            .copied()
            .unwrap_or(0.0);
        if delivered >= 5.0 || Instant::now() > deadline {
            break (status, kind, body, m);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    let (clean, said) = promtool_check(&body);
    assert!(clean, "promtool: {said}\n{body}");

    // At least the five alerts and the service's own start event.
    assert!(m["acsgd_outbox_accepted_total"] >= 6.0, "{body}");
    assert!(m["acsgd_outbox_delivered_total"] >= 5.0, "{body}");
    assert_eq!(m["acsgd_outbox_refused_total"], 0.0, "{body}");
    assert_eq!(m["acsgd_uplink_connected"], 1.0, "{body}");
    assert!(m["acsgd_uplink_connects_total"] >= 1.0, "{body}");
    assert!(m["acsgd_status_age_seconds"] < 3600.0, "{body}");
    assert_eq!(
        m["acsgd_sensor_bad_frames_total{sensor=\"rpm-1\"}"], 0.0,
        "{body}"
    );
    for channel in ["green", "yellow", "red"] {
        assert!(
            m.contains_key(&format!(
                "acsgd_fusion_passages_total{{channel=\"{channel}\"}}"
            )),
            "{body}"
        );
    }
    assert!(body.contains(&format!(
        "acsgd_build_info{{version=\"{}\",post=\"{POST}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));

    // Anything but GET /metrics is not served here.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /api/state HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");

    assert!(app.terminate().success());
}

/// The linter is a real check: it refuses what the format forbids.
#[test]
fn promtool_refuses_a_counter_without_its_total_suffix() {
    let (clean, said) =
        promtool_check("# HELP bad_count x\n# TYPE bad_count counter\nbad_count 1\n");
    assert!(!clean, "{said}");
    assert!(said.contains("_total"), "{said}");
}

/// A port already in use is one line naming it, before anything is accepted.
#[test]
fn a_metrics_port_in_use_stops_the_start_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let setup = Setup::new(tmp.path(), free_port().unwrap(), "", "");
    setup.add(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let out = Command::new(env!("CARGO_BIN_EXE_acsgd"))
        .args(["run", "--config"])
        .arg(&setup.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("metrics: cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}
