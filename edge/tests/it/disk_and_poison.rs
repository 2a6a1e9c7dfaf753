//! What a border post's box suffers beyond a process crash, with the real binary and a real
//! mosquitto: a power cut (an ext4 journal aborted under load), a disk that fills and is freed
//! again, a message from central too large to take, and an event the broker refuses.
//!
//! The power-cut and full-disk tests mount file systems, so they need root and a loop device
//! (both present where CI runs); without them they fail and say so rather than pass unseen.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

fn alerts(from: usize, n: usize) -> Vec<(&'static str, serde_json::Value)> {
    (from..from + n)
        .map(|i| ("alert", json!({"rule": "test", "n": i})))
        .collect()
}

fn positions(from: usize, n: usize) -> Vec<(&'static str, serde_json::Value)> {
    (from..from + n)
        .map(|i| {
            (
                "position",
                json!({"tracker": "seal-1", "n": i, "lat": 44.2, "lon": 80.4}),
            )
        })
        .collect()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[allow(unsafe_code)] // libc calls std does not offer (see SAFETY)
fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "{what} mounts a file system: run the tests as root (CI does)"
    );
}

/// A file system mounted for one test, unmounted when dropped.
struct Mount {
    at: PathBuf,
}

impl Mount {
    fn ext4(image: &Path, at: &Path) -> Mount {
        run(Command::new("truncate").arg("-s").arg("128M").arg(image));
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image));
        Mount::ext4_again(image, at)
    }

    fn ext4_again(image: &Path, at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(image)
            .arg(at));
        Mount { at: at.into() }
    }

    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}")])
            .arg("tmpfs")
            .arg(at));
        Mount { at: at.into() }
    }

    /// The block device behind the mount (`loop3`).
    fn device(&self) -> String {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.at)
            .output()
            .unwrap();
        let src = String::from_utf8(out.stdout).unwrap();
        src.trim().trim_start_matches("/dev/").to_string()
    }

    fn unmount(&mut self) {
        if !self.at.as_os_str().is_empty() {
            run(Command::new("umount").arg(&self.at));
            self.at = PathBuf::new();
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !self.at.as_os_str().is_empty() {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

/// Points the appliance's data directory somewhere else (onto a test file system).
fn data_dir_at(setup: &mut Setup, data: &Path) {
    let cfg = std::fs::read_to_string(&setup.config).unwrap();
    let cfg = cfg.replace(
        &format!("data_dir = \"{}\"", setup.data_dir.display()),
        &format!("data_dir = \"{}\"", data.display()),
    );
    std::fs::write(&setup.config, cfg).unwrap();
    setup.data_dir = data.to_path_buf();
}

fn free_bytes(p: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_power_cut_loses_no_acknowledged_event_and_reuses_no_seq() {
    require_root("the power-cut test");
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("disk.img");
    let mnt = tmp.path().join("mnt");
    let mut fs = Mount::ext4(&image, &mnt);
    // The broker is down while the power goes, so every acknowledged event is still only on
    // this disk: nothing reaches central before the cut.
    let broker_port = free_port().unwrap();
    let mut setup = Setup::new(tmp.path(), broker_port, "", "");
    data_dir_at(&mut setup, &mnt.join("data"));
    let trigger = format!("/sys/fs/ext4/{}/trigger_fs_error", fs.device());
    assert!(Path::new(&trigger).exists(), "{trigger} missing");

    let mut app = setup.start();
    let mut ingest = setup.ingest();
    let mut answers = Vec::new();
    // 100 alerts a second of 2 KiB each, so the outbox's segment keeps growing onto new
    // blocks; the journal aborts after 530 of them, about 5.3 s in (not on a second: sled,
    // which holds the counters, syncs its log once a second by itself), as it does when the
    // power goes. The cut is placed by
    // count, not by the clock, so a slow machine changes the pace, not the test.
    let pad = "p".repeat(2048);
    let mut sent = 0;
    while sent < 700 {
        if sent == 530 {
            std::fs::write(&trigger, "1").unwrap();
        }
        let mut got = Vec::new();
        let batch: Vec<_> = (sent..sent + 10)
            .map(|i| ("alert", json!({"rule": "test", "n": i, "pad": pad})))
            .collect();
        if ingest.send(&batch, &mut got).is_err() {
            answers.extend(got);
            break;
        }
        answers.extend(got);
        sent += 10;
        std::thread::sleep(Duration::from_millis(100));
    }
    app.kill();
    let before = acked_ids(&answers);
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Answer::Err(_)))
        .count();
    assert!(before.len() >= 300, "load was applied: {}", before.len());
    assert!(
        refused > 0,
        "the aborted journal refused appends (else the cut came too late)"
    );
    let max_acked = before.values().copied().max().unwrap();

    // Power back: mount again (the journal replays) and start with the broker up.
    fs.unmount();
    let _fs = Mount::ext4_again(&image, &mnt);
    let _broker = Mosquitto::start_with(&tmp.path().join("broker"), broker_port, "").unwrap();
    let central = Central::connect(broker_port, "central-power");
    let _app = setup.start();
    let mut after = Vec::new();
    setup
        .ingest()
        .send(&alerts(100_000, 50), &mut after)
        .unwrap();
    let acked_after = acked_ids(&after);
    assert_eq!(acked_after.len(), 50, "{after:?}");
    assert!(
        acked_after.values().all(|s| *s > max_acked),
        "a seq acknowledged before the cut was issued again"
    );
    let mut acked: HashMap<String, u64> = before.clone();
    acked.extend(acked_after);
    let received = central.wait_for(60, "every acknowledged event", |ev| {
        let ids: HashSet<&str> = ev.iter().filter_map(|e| e["id"].as_str()).collect();
        acked.keys().all(|id| ids.contains(id.as_str()))
    });
    // Every acknowledged id arrived under its seq, no seq carries two events, no gap.
    let (unique, _) = check_delivery(&received, &acked);
    eprintln!(
        "power cut: {} acknowledged before it (up to seq {max_acked}), {refused} refused after it, {unique} delivered",
        before.len()
    );
}

#[test]
fn a_full_disk_keeps_room_for_alerts_and_recovers_by_itself_once_space_is_freed() {
    require_root("the full-disk test");
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let _fs = Mount::tmpfs(&mnt, "24m");
    let broker_port = free_port().unwrap();
    let mut broker = Central::registered_on_stopped_broker(
        &tmp.path().join("broker"),
        broker_port,
        "central-full",
    );
    let mut setup = Setup::new(tmp.path(), broker_port, "", "reserve_mb = 4");
    data_dir_at(&mut setup, &mnt.join("data"));
    let _app = setup.start();
    let mut ingest = setup.ingest();
    let mut answers = Vec::new();
    ingest.send(&alerts(0, 100), &mut answers).unwrap();

    // Something else on the box fills the disk down to 2 MiB: below the 4 MiB reserve.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0x5au8; 256 * 1024];
        while free_bytes(&mnt) > 2 * 1024 * 1024 {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    let mut low = Vec::new();
    ingest.send(&positions(0, 20), &mut low).unwrap();
    assert!(
        low.iter().all(
            |a| matches!(a, Answer::Err(e) if e.contains("reserve kept for passages and alerts"))
        ),
        "positions are refused below the reserve: {low:?}"
    );
    let mut kept = Vec::new();
    ingest.send(&alerts(1_000, 20), &mut kept).unwrap();
    assert_eq!(
        acked_ids(&kept).len(),
        20,
        "alerts use the reserve: {kept:?}"
    );
    answers.extend(kept);

    // Then the disk fills completely: alerts are refused too, cleanly, one answer each.
    {
        use std::io::{ErrorKind, Write};
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&filler)
            .unwrap();
        let chunk = vec![0xa5u8; 64 * 1024];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("filling: {e}"),
            }
        }
    }
    let mut refused = 0;
    let mut n = 2_000;
    while refused == 0 && n < 40_000 {
        let mut got = Vec::new();
        ingest.send(&alerts(n, 200), &mut got).unwrap();
        refused += got.iter().filter(|a| matches!(a, Answer::Err(_))).count();
        answers.extend(got);
        n += 200;
    }
    assert!(refused > 0, "a full disk refused some alerts");

    // Space comes back: the outbox reopens by itself, no restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut got = Vec::new();
        ingest.send(&alerts(n, 1), &mut got).unwrap();
        n += 1;
        let ok = matches!(got[0], Answer::Ok { .. });
        answers.extend(got);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox did not recover within 30 s of space coming back: {}",
            setup.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut back = Vec::new();
    ingest.send(&alerts(n, 500), &mut back).unwrap();
    assert_eq!(
        acked_ids(&back).len(),
        500,
        "after recovery every alert is accepted"
    );
    answers.extend(back);

    // And forwarding works without a restart: the broker comes up, everything acknowledged
    // arrives.
    broker.restart().unwrap();
    let central = Central::connect(broker_port, "central-full");
    let acked = acked_ids(&answers);
    let missing = |ev: &[serde_json::Value]| -> Vec<u64> {
        let ids: HashSet<&str> = ev.iter().filter_map(|e| e["id"].as_str()).collect();
        let mut m: Vec<u64> = acked
            .iter()
            .filter(|(id, _)| !ids.contains(id.as_str()))
            .map(|(_, seq)| *seq)
            .collect();
        m.sort_unstable();
        m
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    let received = loop {
        let ev = central.events();
        let m = missing(&ev);
        if m.is_empty() {
            break ev;
        }
        // On failure, say what is missing and what the appliance thought of it.
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged events never arrived (central has {}; seqs {:?}…); \
             outbox: {}; log:\n{}",
            m.len(),
            acked.len(),
            ev.len(),
            &m[..m.len().min(10)],
            setup.stat(),
            setup.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let seqs: HashMap<u64, &str> = received
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["id"].as_str().unwrap()))
        .collect();
    for (id, seq) in &acked {
        assert_eq!(seqs.get(seq), Some(&id.as_str()), "{id} under seq {seq}");
    }
    eprintln!(
        "full disk: {} acknowledged, {refused} refused while full, {} delivered",
        acked.len(),
        received.len()
    );
}

/// Publishes a retained message larger than rumqttc's default packet limit.
fn publish_large_retained(port: u16, topic: &str, payload: String) {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new("central-large-publisher", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut conn) = Client::new(o, 10);
    client
        .publish(topic, QoS::AtLeastOnce, true, payload.into_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match conn.recv_timeout(Duration::from_millis(500)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
            Ok(Err(e)) => panic!("publishing {topic}: {e}"),
            _ => assert!(Instant::now() < deadline, "no PUBACK for {topic}"),
        }
    }
    let _ = client.disconnect();
}

#[test]
fn a_message_from_central_too_large_to_take_is_refused_and_forwarding_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&tmp.path().join("broker")).unwrap();
    // 5 MiB of config, retained: it would come again on every reconnect.
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(5 << 20));
    publish_large_retained(broker.port(), &format!("acsgd/v1/{POST}/in/config"), huge);
    declare_123abc02(broker.port());
    let central = Central::connect(broker.port(), "central-poison-in");
    let setup = Setup::new(tmp.path(), broker.port(), "max_inbound_kb = 1024", "");
    let _app = setup.start();
    let mut answers = Vec::new();
    setup.ingest().send(&alerts(0, 200), &mut answers).unwrap();
    let acked = acked_ids(&answers);
    let received = central.wait_for(60, "every alert and the refusal", |ev| {
        let ids: HashSet<&str> = ev.iter().filter_map(|e| e["id"].as_str()).collect();
        acked.keys().all(|id| ids.contains(id.as_str()))
            && ev.iter().any(|e| e["body"]["component"] == "inbox")
    });
    let refusal = received
        .iter()
        .find(|e| e["body"]["component"] == "inbox")
        .unwrap();
    assert_eq!(refusal["body"]["state"], "degraded");
    assert!(
        refusal["body"]["reason"]
            .as_str()
            .unwrap()
            .contains("over uplink.max_inbound_kb"),
        "{refusal}"
    );
    let stat = setup.stat();
    assert_eq!(stat["uplink"]["connects"], 1, "no reconnect loop: {stat}");
    assert_eq!(stat["uplink"]["inbound_refused"], 1, "{stat}");
    // The declaration beside it was cached as usual.
    assert!(
        stat["outbox"]["inbox_entries"].as_u64().unwrap() >= 1,
        "{stat}"
    );
}

#[test]
fn an_event_the_broker_refuses_is_set_aside_and_the_rest_flows() {
    let tmp = tempfile::tempdir().unwrap();
    // The broker lets this post publish everything but telemetry.
    let acl = tmp.path().join("acl");
    std::fs::write(
        &acl,
        format!(
            "topic readwrite acsgd/v1/{POST}/alert\ntopic readwrite acsgd/v1/{POST}/health\n\
             topic readwrite acsgd/v1/{POST}/status\ntopic readwrite acsgd/v1/{POST}/key\n\
             topic read acsgd/v1/#\n"
        ),
    )
    .unwrap();
    let broker = Mosquitto::start_with(
        &tmp.path().join("broker"),
        free_port().unwrap(),
        &format!("acl_file {}", acl.display()),
    )
    .unwrap();
    let central = Central::connect(broker.port(), "central-poison-out");
    let setup = Setup::new(tmp.path(), broker.port(), "protocol = \"5\"", "");
    let _app = setup.start();
    let mut ingest = setup.ingest();
    let mut answers = Vec::new();
    ingest.send(&alerts(0, 50), &mut answers).unwrap();
    let mut refused_one = Vec::new();
    ingest
        .send(
            &[("telemetry", json!({"tracker": "seal-1", "battery_v": 3.9}))],
            &mut refused_one,
        )
        .unwrap();
    let Answer::Ok { seq: bad_seq, .. } = refused_one[0] else {
        panic!("telemetry not accepted: {refused_one:?}")
    };
    ingest.send(&alerts(50, 600), &mut answers).unwrap();
    let acked = acked_ids(&answers);
    assert_eq!(acked.len(), 650);
    let received = central.wait_for(60, "all 650 alerts and the refusal", |ev| {
        let ids: HashSet<&str> = ev.iter().filter_map(|e| e["id"].as_str()).collect();
        acked.keys().all(|id| ids.contains(id.as_str()))
            && ev.iter().any(|e| e["body"]["detail"]["seq"] == bad_seq)
    });
    let note = received
        .iter()
        .find(|e| e["body"]["detail"]["seq"] == bad_seq)
        .unwrap();
    assert_eq!(note["body"]["component"], "uplink");
    assert_eq!(note["body"]["detail"]["type"], "telemetry");
    assert!(
        received.iter().all(|e| e["type"] != "telemetry"),
        "the refused event is not resent"
    );
    // Set aside once, counted, never resent in a loop.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = setup.stat();
        if stat["outbox"]["dead_letters"] == 1 && stat["outbox"]["backlog_events"] == 0 {
            assert_eq!(stat["outbox"]["counters"]["dead_lettered"], 1, "{stat}");
            // mosquitto closes the connection after refusing a publish, and the PUBACKs in
            // flight with it can be lost. Each connection's window starts at one event and
            // doubles per round trip, so the refused event is reached in about log2(window)
            // reconnects (256: 8), not a loop.
            assert!(
                stat["uplink"]["connects"].as_u64().unwrap() <= 12,
                "no reconnect loop: {stat}"
            );
            eprintln!(
                "refused event: set aside after {} connections, {} events resent",
                stat["uplink"]["connects"], stat["uplink"]["resent"]
            );
            break;
        }
        assert!(Instant::now() < deadline, "{stat}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The writer seals a large batch on every core and writes it a chunk at a time; when the disk
/// fills in the middle of one, the whole batch is refused (no event of it is reported
/// accepted), what is accepted stays readable under the number it was given, and no number is
/// ever given to two events, after space is freed too.
#[test]
fn a_large_batch_that_fills_the_disk_is_refused_whole_and_no_number_is_given_twice() {
    use acsgd::envelope::{Event, Signer};
    use acsgd::outbox::{AppendError, OpenMode, Outbox, Store};
    use std::sync::Arc;

    require_root("the full-disk batch test");
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let _fs = Mount::tmpfs(&mnt, "16m");
    // Freed once the disk is full: sled's reopen itself takes a few megabytes of it.
    let ballast = mnt.join("ballast");
    std::fs::write(&ballast, vec![0u8; 8 << 20]).unwrap();
    let dir = mnt.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (store, _) = Store::open(&dir, u64::MAX, OpenMode::Service).unwrap();
    let store = Arc::new(store);
    let outbox = Outbox::start(
        store.clone(),
        Signer::load_or_create(&dir, "t").unwrap(),
        4096,
    );
    // A kilobyte of text per alert: a batch of 300 is far larger than a chunk.
    let batch = |b: usize| -> Vec<Event> {
        (0..300)
            .map(|i| {
                Event::now(
                    "alert",
                    json!({"rule": "test", "batch": b, "i": i, "pad": "x".repeat(1000)}),
                )
            })
            .collect()
    };
    let mut given: HashMap<u64, String> = HashMap::new();
    let mut refused_batches = 0;
    let mut b = 0;
    // Fill the disk until a batch is refused, then free the ballast and go on.
    while refused_batches == 0 && b < 200 {
        let events = batch(b);
        b += 1;
        let results = rt.block_on(outbox.append_many(events));
        let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        if ok.len() < results.len() {
            assert!(
                ok.is_empty(),
                "batch {b}: {} of {} accepted, {:?}",
                ok.len(),
                results.len(),
                results.iter().find(|r| r.is_err())
            );
            assert!(results
                .iter()
                .all(|r| matches!(r, Err(AppendError::Storage(_)))));
            refused_batches += 1;
        }
        for a in ok {
            assert!(
                given.insert(a.seq, a.id.clone()).is_none(),
                "seq {} given twice",
                a.seq
            );
        }
    }
    assert_eq!(refused_batches, 1, "the disk never filled ({b} batches)");
    std::fs::remove_file(&ballast).unwrap();
    // The store reopens itself at most twice a second; until it has, batches are refused.
    let mut after = 0;
    let mut retries = 0;
    while after < 1500 {
        let results = rt.block_on(outbox.append_many(batch(b)));
        b += 1;
        if results.iter().all(|r| r.is_err()) && retries < 600 {
            retries += 1;
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        for r in results {
            let a = r.expect("accepted once space is back");
            assert!(
                given.insert(a.seq, a.id.clone()).is_none(),
                "seq {} given twice",
                a.seq
            );
            after += 1;
        }
    }
    assert_eq!(after, 1500);
    // Every accepted event is in the outbox under its own number; nothing else is.
    let stored = store.read_range(0, u64::MAX, usize::MAX).unwrap();
    for p in &stored {
        let env: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
        let id = env["id"].as_str().unwrap();
        if let Some(expected) = given.get(&p.seq) {
            assert_eq!(id, expected, "seq {} holds another event", p.seq);
        }
    }
    let stored_seqs: HashSet<u64> = stored.iter().map(|p| p.seq).collect();
    for seq in given.keys() {
        assert!(stored_seqs.contains(seq), "accepted seq {seq} is missing");
    }
    rt.block_on(outbox.close());
}
