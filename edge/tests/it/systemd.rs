//! What systemd is told (`sd_notify`), by the real binary over a real datagram socket, as a
//! unit with `Type=notify` and `WatchdogSec=` would see it: `READY=1` once the service is up,
//! `WATCHDOG=1` while its pipeline moves and none once fusion or the outbox hangs (so systemd
//! restarts it), `STOPPING=1` at the stop.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::common::*;

/// The messages that arrive within `secs`, until `done` says enough.
fn receive(sock: &UnixDatagram, secs: u64, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

/// The appliance started as systemd would start it with `WatchdogSec=1.5s`, with `hang`
/// (`ACSGD_HANG`) if given, and the socket it notifies. No broker: the uplink's retries are
/// not the watchdog's business.
fn start_notifying(hang: Option<&str>) -> (tempfile::TempDir, Setup, UnixDatagram, Appliance) {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path(), free_port().unwrap(), "", "");
    let path = tmp.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut env = vec![
        ("NOTIFY_SOCKET", path.to_str().unwrap()),
        ("WATCHDOG_USEC", "1500000"),
    ];
    env.extend(hang.map(|h| ("ACSGD_HANG", h)));
    let app = setup.spawn_with_env(&env);
    (tmp, setup, sock, app)
}

fn pings(got: &[String]) -> usize {
    got.iter().filter(|m| m.as_str() == "WATCHDOG=1").count()
}

#[test]
fn systemd_hears_ready_keep_alives_while_the_pipeline_moves_and_stopping() {
    let (_tmp, setup, sock, mut app) = start_notifying(None);
    let got = receive(&sock, 60, |g| pings(g) >= 3);
    assert!(
        got.first()
            .is_some_and(|m| m.starts_with("READY=1\nSTATUS=post ")),
        "{got:?}: {}",
        setup.log()
    );
    assert_eq!(pings(&got), 3, "{got:?}: {}", setup.log());
    // Ready means started: the log line that follows every listener's bind came first.
    assert!(setup.log().contains("service started"));

    assert!(app.terminate().success());
    let after = receive(&sock, 5, |g| g.iter().any(|m| m.starts_with("STOPPING=1")));
    assert!(
        after.iter().any(|m| m.starts_with("STOPPING=1")),
        "{after:?}"
    );
}

/// A hung fusion ticker or outbox writer (the debug build's `ACSGD_HANG`) gets no keep-alive
/// at all, while the process stays up: systemd's watchdog is what ends it.
#[test]
fn a_hung_fusion_or_outbox_gets_no_keep_alive_from_the_watchdog() {
    for (hang, why) in [
        ("fusion", "the fusion ticker made no progress"),
        ("outbox", "the outbox writer did not answer"),
    ] {
        let (_tmp, setup, sock, mut app) = start_notifying(Some(hang));
        let ready = receive(&sock, 60, |g| !g.is_empty());
        assert!(
            ready.first().is_some_and(|m| m.starts_with("READY=1")),
            "{hang}: {ready:?}: {}",
            setup.log()
        );
        setup.wait_for_log(
            60,
            &format!("watchdog: {why}; keep-alives to systemd withheld"),
        );
        assert!(app.is_running(), "{hang}: {}", setup.log());
        // Nothing before the withholding was logged, nothing after: no keep-alive can come
        // from a pipeline that never moved past the hang.
        let later = receive(&sock, 2, |_| false);
        assert_eq!(pings(&ready) + pings(&later), 0, "{hang}: {later:?}");
        app.kill();
    }
}

/// The unit the box runs the service with stays hardened: `systemd-analyze security` scores
/// it 2.0 or below (`--threshold=20` makes it exit non-zero above), and it keeps what the
/// watchdog test above relies on.
#[test]
fn the_unit_scores_two_or_below_and_asks_for_notify_and_the_watchdog() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/../images/acsgd.service");
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", unit])
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for acsgd.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in {text}"));
    assert!(score <= 2.0, "{score}: {text}");
    let unit = std::fs::read_to_string(unit).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=30",
        "StartLimitAction=reboot",
        "User=acsgd",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
}
