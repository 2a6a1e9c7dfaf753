//! Trackers through the real binary: a Teltonika device over TCP is acknowledged only for
//! records that are on disk, so a SIGKILL between packets loses nothing the device was told we
//! have; after the restart the device resends the rest and central receives every record.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;

/// A Codec 8 packet with one record at `ms`, position varying with `i`, CRC computed.
fn codec8(ms: u64, i: u32) -> Vec<u8> {
    let mut data = vec![0x08, 0x01]; // codec 8, one record
    data.extend_from_slice(&ms.to_be_bytes()); // timestamp
    data.push(0); // priority
    data.extend_from_slice(&(800_000_000i32 + i as i32).to_be_bytes()); // lon 80.0000000 + i e-7
    data.extend_from_slice(&(440_000_000i32).to_be_bytes()); // lat 44.0
    data.extend_from_slice(&[0, 100, 0, 90, 9, 0, 42]); // alt 100 m, angle 90, 9 sats, 42 km/h
    data.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // no IO
    data.push(0x01); // one record
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(&(data.len() as u32).to_be_bytes());
    p.extend_from_slice(&data);
    p.extend_from_slice(&(acsgd_drivers::crc::crc16_arc(&data) as u32).to_be_bytes());
    p
}

/// Connects once the appliance listens (its ingest port opens before the sensors bind) and
/// does the IMEI handshake.
fn login(port: u16) -> TcpStream {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("tracker port {port} never opened: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"\x00\x0f356307042441013").unwrap();
    let mut ok = [0u8; 1];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(ok, [1]);
    s
}

#[test]
fn a_tracker_acknowledged_before_a_sigkill_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&tmp.path().join("broker")).unwrap();
    let central = Central::connect(broker.port(), "central-trackers");
    let setup = Setup::new(tmp.path(), broker.port(), "", "");
    let port = free_port().unwrap();
    setup.add(&format!(
        "[[sensors]]\nid = \"seals-teltonika\"\nprotocol = \"teltonika\"\n\
         transport = {{ kind = \"tcp\", listen = \"127.0.0.1:{port}\", allow = [\"356307042441013\"] }}\n"
    ));

    let base = 1_700_000_000_000u64;
    let packets: Vec<Vec<u8>> = (0..40).map(|i| codec8(base + i as u64 * 1000, i)).collect();
    let mut app = setup.start();
    let mut s = login(port);
    let mut acked = 0usize;
    for p in &packets[..20] {
        s.write_all(p).unwrap();
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).unwrap();
        assert_eq!(ack, [0, 0, 0, 1], "one record acknowledged");
        acked += 1;
    }
    // The 21st is in flight when the appliance dies: it may or may not be stored, but it is
    // not acknowledged, so the device keeps it and sends it again.
    s.write_all(&packets[20]).unwrap();
    app.kill();
    let mut ack = [0u8; 4];
    let got_ack = s.read_exact(&mut ack).is_ok();
    let resume = if got_ack { 21 } else { 20 };
    drop(s);

    let _app = setup.start();
    let mut s = login(port);
    for p in &packets[resume..] {
        s.write_all(p).unwrap();
        s.read_exact(&mut ack).unwrap();
        assert_eq!(ack, [0, 0, 0, 1]);
        acked += 1;
    }
    assert!(acked >= 39);
    let want: std::collections::HashSet<i64> =
        (0..40).map(|i| ((base + i * 1000) / 1000) as i64).collect();
    let events = central.wait_for(60, "every acknowledged record", |ev| {
        let seen: std::collections::HashSet<i64> = ev
            .iter()
            .filter(|e| e["type"] == "position")
            .flat_map(|e| e["body"]["fixes"].as_array().cloned().unwrap_or_default())
            .filter_map(|f| f["time"].as_str().map(str::to_string))
            .filter_map(|t| {
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|t| t.unix_timestamp())
            .collect();
        want.iter().all(|t| seen.contains(t))
    });
    let positions: Vec<_> = events.iter().filter(|e| e["type"] == "position").collect();
    let p = &positions[0]["body"];
    assert_eq!(
        (p["sensor"].as_str(), p["device"].as_str()),
        (Some("seals-teltonika"), Some("356307042441013"))
    );
    assert_eq!(p["fixes"][0]["satellites"], 9);
    eprintln!(
        "{} position events for 40 records ({} acknowledged before the kill)",
        positions.len(),
        resume
    );
}
