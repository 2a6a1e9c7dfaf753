//! What the appliance promises when things fail: the real `acsgd` binary, a real mosquitto,
//! faults injected by PID.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

fn alerts(from: usize, n: usize) -> Vec<(&'static str, serde_json::Value)> {
    (from..from + n)
        .map(|i| ("alert", json!({"rule": "test", "n": i})))
        .collect()
}

#[test]
fn ten_thousand_events_survive_a_broker_outage_in_seq_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(&tmp.path().join("broker")).unwrap();
    let central = Central::connect(broker.port(), "central-outage");
    let setup = Setup::new(tmp.path(), broker.port(), "", "");
    let _app = setup.start();
    let mut ingest = setup.ingest();
    let mut answers = Vec::new();
    for chunk in 0..100 {
        if chunk == 30 {
            broker.stop(); // down for events 3000..7000
        }
        if chunk == 70 {
            broker.restart().unwrap();
        }
        ingest
            .send(&alerts(chunk * 100, 100), &mut answers)
            .unwrap();
    }
    let acked = acked_ids(&answers);
    assert_eq!(
        acked.len(),
        10_000,
        "every event accepted while the broker was down too"
    );
    let received = central.wait_for(120, "all 10 000 events", |ev| {
        let ids: std::collections::HashSet<&str> =
            ev.iter().filter_map(|e| e["id"].as_str()).collect();
        acked.keys().all(|id| ids.contains(id.as_str()))
    });
    let (unique, dups) = check_delivery(&received, &acked);
    let health: Vec<_> = received.iter().filter(|e| e["type"] == "health").collect();
    assert!(
        health
            .iter()
            .any(|h| h["body"]["component"] == "uplink" && h["body"]["state"] == "down"),
        "the outage was reported as a health event"
    );
    eprintln!(
        "outage: {unique} unique events ({} health), {dups} duplicates re-sent after reconnect",
        health.len()
    );
}

#[test]
#[allow(unsafe_code)] // libc calls std does not offer (see SAFETY)
fn sigkill_under_load_loses_no_accepted_event_and_leaves_no_seq_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&tmp.path().join("broker")).unwrap();
    let central = Central::connect(broker.port(), "central-crash");
    let setup = Setup::new(tmp.path(), broker.port(), "", "");
    let mut answers = Vec::new();
    let mut sent = 0;
    let mut x: u64 = 0x1234_5678;
    for round in 0..6 {
        let mut app = setup.start();
        let pid = app.pid();
        // Kill it at a pseudo-random moment 150-650 ms into a stream of pipelined events.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let after = Duration::from_millis(150 + x % 500);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(after);
            // SAFETY: SIGKILL to the appliance's pid, which the test still owns.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        });
        let mut ingest = setup.ingest();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let mut got = Vec::new();
            let r = ingest.send(&alerts(sent, 50), &mut got);
            sent += 50;
            answers.extend(got);
            if r.is_err() {
                break;
            }
        }
        killer.join().unwrap();
        app.kill();
        eprintln!(
            "round {round}: killed after {after:?}, {} events acknowledged so far",
            answers.len()
        );
    }
    let _app = setup.start();
    let acked = acked_ids(&answers);
    assert!(acked.len() > 500, "load was applied: {}", acked.len());
    let received = central.wait_for(120, "every acknowledged event", |ev| {
        let ids: std::collections::HashSet<&str> =
            ev.iter().filter_map(|e| e["id"].as_str()).collect();
        acked.keys().all(|id| ids.contains(id.as_str()))
    });
    let (unique, dups) = check_delivery(&received, &acked);
    eprintln!("crash: {} acknowledged, {unique} delivered (incl. health and accepted-but-unanswered), {dups} duplicates", acked.len());
}

#[test]
fn a_tiny_quota_refuses_positions_evicts_them_for_alerts_and_loses_no_alert() {
    let tmp = tempfile::tempdir().unwrap();
    let broker_dir = tmp.path().join("broker");
    // Register central's persistent session, then take the broker away for the fill-up.
    let mut broker = Mosquitto::start(&broker_dir).unwrap();
    let central = Central::connect(broker.port(), "central-quota");
    broker.stop();
    let setup = Setup::new(tmp.path(), broker.port(), "", "quota_mb = 1");
    let _app = setup.start();
    let mut ingest = setup.ingest();
    let mut pos_answers = Vec::new();
    for c in 0..60 {
        let batch: Vec<_> = (0..100)
            .map(|i| {
                (
                    "position",
                    json!({"tracker": "seal-1", "n": c * 100 + i, "pad": "x".repeat(200)}),
                )
            })
            .collect();
        ingest.send(&batch, &mut pos_answers).unwrap();
    }
    let refused = pos_answers
        .iter()
        .filter(|a| matches!(a, Answer::Err(e) if e.contains("quota")))
        .count();
    let accepted_pos = pos_answers.len() - refused;
    assert!(
        refused > 0 && accepted_pos > 1000,
        "{accepted_pos} accepted, {refused} refused"
    );
    let mut alert_answers = Vec::new();
    for c in 0..5 {
        let batch: Vec<_> = (0..100)
            .map(|i| ("alert", json!({"n": c * 100 + i, "pad": "y".repeat(400)})))
            .collect();
        ingest.send(&batch, &mut alert_answers).unwrap();
    }
    let alerts = acked_ids(&alert_answers);
    assert_eq!(alerts.len(), 500, "no alert is refused for space");
    // The service's status is published every second: wait for it to count the refusals.
    let st = wait_for_stat(&setup, |st| {
        st["outbox"]["counters"]["refused"].as_u64() == Some(refused as u64)
    });
    let counters = &st["outbox"]["counters"];
    let evicted = counters["evicted"].as_u64().unwrap() as usize;
    assert!(evicted > 0, "alerts made room by evicting positions: {st}");

    broker.restart().unwrap();
    let received = central.wait_for(60, "all alerts", |ev| {
        ev.iter().filter(|e| e["type"] == "alert").count() >= 500
    });
    let got_alerts: std::collections::HashSet<&str> = received
        .iter()
        .filter(|e| e["type"] == "alert")
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert!(alerts.keys().all(|id| got_alerts.contains(id.as_str())));
    let got_pos = central.wait_for(60, "the kept positions", |ev| {
        ev.iter().filter(|e| e["type"] == "position").count() >= accepted_pos - evicted
    });
    let n_pos = got_pos.iter().filter(|e| e["type"] == "position").count();
    assert_eq!(
        n_pos,
        accepted_pos - evicted,
        "positions delivered = accepted - evicted"
    );
    eprintln!("quota: {accepted_pos} positions accepted, {refused} refused, {evicted} evicted; 500/500 alerts delivered");
}

#[test]
fn garbage_in_the_store_is_quarantined_and_reported_and_the_appliance_runs_on() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&tmp.path().join("broker")).unwrap();
    let central = Central::connect(broker.port(), "central-corrupt");
    // A closed port: events stay in the store, which we then wreck.
    let dead = free_port().unwrap();
    let setup = Setup::new(tmp.path(), dead, "", "");
    let mut app = setup.start();
    setup
        .ingest()
        .send(&alerts(0, 100), &mut Vec::new())
        .unwrap();
    assert!(app.terminate().success());
    let db = setup.data_dir.join("outbox");
    for entry in walk(&db) {
        let len = std::fs::metadata(&entry).unwrap().len().max(512) as usize;
        let junk: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(151).wrapping_add(7))
            .collect();
        std::fs::write(&entry, junk).unwrap();
    }
    // Now point it at the live broker and start it on the wrecked store.
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace(&format!(":{dead}"), &format!(":{}", broker.port())),
    )
    .unwrap();
    let mut app = setup.start();
    let received = central.wait_for(30, "the quarantine health event", |ev| {
        ev.iter()
            .any(|e| e["type"] == "health" && e["body"]["component"] == "outbox")
    });
    let h = received
        .iter()
        .find(|e| e["body"]["component"] == "outbox")
        .unwrap();
    assert_eq!(h["body"]["state"], "degraded");
    let moved = h["body"]["detail"]["moved_to"].as_str().unwrap();
    assert!(
        std::path::Path::new(moved).join("db").exists(),
        "quarantined store kept: {moved}"
    );
    let resumes = h["body"]["detail"]["seq_resumes_at"].as_u64().unwrap();
    assert!(
        resumes > 100,
        "numbering resumes past every seq used before: {resumes}"
    );
    let mut a = Vec::new();
    setup.ingest().send(&alerts(0, 1), &mut a).unwrap();
    assert!(
        matches!(a[0], Answer::Ok { seq, .. } if seq > resumes),
        "{a:?}"
    );
    wait_for_stat(&setup, |st| st["outbox"]["counters"]["quarantined"] == 1);
    assert!(app.is_running());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Nothing dies silently: a task the appliance cannot run without that dies (here made to
/// panic by the debug build's fault point, `ACSGD_FAULT`) is a `health` event that reaches
/// central, and the process stops in order and exits non-zero, so that systemd (whose unit
/// restarts it) starts it again; the next start runs and what was accepted is delivered.
#[test]
fn a_task_that_dies_is_reported_to_central_and_the_service_exits_for_systemd_to_restart_it() {
    // (where the fault is, the task that dies of it)
    let faults = [
        ("fusion", "fusion"),
        ("uplink", "uplink"),
        ("sensors", "sensors"),
        ("outbox", "outbox"),
        ("outbox-flusher", "outbox"),
    ];
    for (fault, task) in faults {
        let tmp = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(&tmp.path().join("broker")).unwrap();
        let central = Central::connect(broker.port(), &format!("central-death-{task}"));
        let setup = Setup::new(tmp.path(), broker.port(), "", "");
        let udp = free_port().unwrap();
        setup.add(&format!(
            "[[sensors]]\nid = \"gps-1\"\nprotocol = \"nmea\"\n\
             transport = {{ kind = \"udp\", listen = \"127.0.0.1:{udp}\" }}\n"
        ));
        let mut app = setup.spawn_with_env(&[("ACSGD_FAULT", fault)]);
        if task == "sensors" {
            // The sensor store dies on the first batch it gets.
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let fix = b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n";
            let deadline = Instant::now() + Duration::from_secs(60);
            while app.is_running() && Instant::now() < deadline {
                let _ = s.send_to(fix, ("127.0.0.1", udp));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let status = app.wait_exit(60);
        assert_eq!(status.code(), Some(1), "{task} {status:?}: {}", setup.log());
        let log = setup.log();
        assert!(
            log.contains(&format!("the {task} task died (panicked: "))
                && log.contains(&format!("fault injected into {fault} (ACSGD_FAULT)")),
            "{task}: {log}"
        );

        // Started again as systemd would: it runs, and the death reaches central (the
        // outbox's own death cannot be stored; it is in the log above).
        let mut again = setup.start();
        let death = |e: &serde_json::Value| {
            e["type"] == "health"
                && e["body"]["component"] == task
                && e["body"]["state"] == "down"
                && e["body"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("fault injected"))
        };
        // The restart's "started" event, told from the first run's by what was on disk then
        // (the first run's started on an empty outbox; with the outbox dead, it had none).
        let restarted = |e: &serde_json::Value| {
            e["type"] == "health"
                && e["body"]["component"] == "service"
                && (task == "outbox" || e["body"]["detail"]["last_seq"].as_u64() > Some(0))
        };
        let events = central.wait_for(60, "the restarted service", |ev| {
            ev.iter().any(restarted) && (task == "outbox" || ev.iter().any(death))
        });
        // With the outbox dead its death is not accepted; if its writer had already handed
        // it to sled it may still be sent (at-least-once), never under a number given twice.
        if task != "outbox" {
            assert_eq!(events.iter().filter(|e| death(e)).count(), 1, "{task}");
        }
        let mut ids = std::collections::HashMap::new();
        for e in &events {
            let id = ids.entry(e["seq"].as_u64().unwrap()).or_insert(&e["id"]);
            assert_eq!(*id, &e["id"], "{task}: a seq given twice in {events:?}");
        }
        assert!(again.is_running(), "{task}: {}", setup.log());
        let end = again.terminate();
        assert!(end.success(), "{task} {end:?}: {}", setup.log());
    }
}
