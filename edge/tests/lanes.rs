//! A lane through the real binary: the lane node and the radiation portal on pseudo-terminal
//! serial ports, a declaration published by central over MQTT, a truck crossing with line
//! noise on the node's line, and the passage, its verdict and its alerts arriving at central.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::time::Duration;

use acsgd_drivers::lane::{self, Body, Frame};
use common::*;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// A pty pair: the master we write to, and the slave's path the appliance opens. The slave
/// stays open here too, so the line does not hang up between the appliance's opens.
struct Pty {
    master: File,
    _slave: File,
    path: String,
}

fn pty() -> Pty {
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty writes two descriptors we then own; name, termios and winsize are null.
    let rc = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    for fd in [m, s] {
        // SAFETY: fcntl on descriptors we own; the appliance must not inherit them.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: `s` is an open descriptor; ttyname returns a static buffer we copy at once.
    let path = unsafe { std::ffi::CStr::from_ptr(libc::ttyname(s)) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: both descriptors are ours alone from here on.
    unsafe {
        Pty {
            master: File::from_raw_fd(m),
            _slave: File::from_raw_fd(s),
            path,
        }
    }
}

fn frame(seq: &mut u8, body: Body) -> Vec<u8> {
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

/// Publishes what central sends, retained, and waits for the broker's PUBACK.
fn publish_retained(port: u16, topic: &str, payload: &str) {
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

#[test]
fn a_truck_on_serial_sensors_becomes_a_red_passage_at_central() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&tmp.path().join("broker")).unwrap();
    let central = Central::connect(broker.port(), "central-lanes");
    let setup = Setup::new(tmp.path(), broker.port(), "", "");
    let (mut node, mut rpm) = (pty(), pty());
    let mut cfg = std::fs::read_to_string(&setup.config).unwrap();
    cfg.push_str(&format!(
        "[fusion]\nwindow_before_s = 1.0\nwindow_after_s = 1.0\nlateness_s = 0.5\nmerge_gap_s = 0.5\n\
         [[sensors]]\nid = \"node-1\"\nlane = \"1\"\nprotocol = \"lane\"\n\
         transport = {{ kind = \"serial\", path = \"{}\", baud = 115200 }}\n\
         [[sensors]]\nid = \"rpm-1\"\nlane = \"1\"\nprotocol = \"rpm\"\n\
         transport = {{ kind = \"serial\", path = \"{}\", baud = 9600 }}\n",
        node.path, rpm.path
    ));
    std::fs::write(&setup.config, cfg).unwrap();
    publish_retained(
        broker.port(),
        &format!("acsgd/v1/{POST}/in/declarations"),
        r#"[{"mrn": "26KZ5500000000001A", "plates": ["123ABC02"], "gross_kg": 24000}]"#,
    );
    let _app = setup.start();
    // Let the sensor tasks open their ports and fusion load the declaration.
    std::thread::sleep(Duration::from_millis(1500));

    for i in 0..3 {
        writeln!(rpm.master, "GB,{:06},000300,000301,000299\r", 300 + i).unwrap();
        writeln!(rpm.master, "NB,000000,000001,000000,000001\r").unwrap();
    }
    let mut seq = 0u8;
    let w = |p: &mut Pty, b: &[u8]| {
        p.master.write_all(b).unwrap();
        p.master.flush().unwrap();
    };
    w(
        &mut node,
        &frame(
            &mut seq,
            Body::Loop {
                t_ms: 0,
                loop_id: 1,
                occupied: true,
            },
        ),
    );
    // Noise on the line between frames: bytes, a truncated frame, a frame with a bad CRC.
    w(&mut node, b"\x00\xff\x13garbage\xa5\x5a\x01");
    let mut bad = frame(
        &mut seq,
        Body::Health {
            t_ms: 0,
            uptime_s: 1,
            supply_mv: 1,
            temp_dc: 0,
            faults: 0,
            rx_errors: 0,
        },
    );
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    w(&mut node, &bad);
    let loads = [(6_400u16, 0u16), (9_600, 3_600), (9_700, 1_300)];
    for (i, (kg, spacing)) in loads.iter().enumerate() {
        w(
            &mut node,
            &frame(
                &mut seq,
                Body::Axle {
                    t_ms: 0,
                    vehicle: 1,
                    index: i as u8 + 1,
                    left_kg: kg / 2,
                    right_kg: kg - kg / 2,
                    spacing_mm: *spacing,
                    speed_dkmh: 80,
                },
            ),
        );
        // The portal scans at 5 per second; a source passes in the middle.
        for k in 0..3 {
            let hot = if i == 1 { 60 } else { 0 };
            writeln!(
                rpm.master,
                "GS,{:06},{:06},000051,000050\r",
                50 + hot + k,
                49 + hot
            )
            .unwrap();
            writeln!(rpm.master, "NS,000000,000000,000000,000000\r").unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    w(
        &mut node,
        &frame(
            &mut seq,
            Body::Vehicle {
                t_ms: 0,
                vehicle: 1,
                axles: 3,
                gross_kg: 25_700,
                speed_dkmh: 80,
                length_cm: 1_000,
                class: 3,
                error: 0,
            },
        ),
    );
    w(
        &mut node,
        &frame(
            &mut seq,
            Body::Loop {
                t_ms: 0,
                loop_id: 1,
                occupied: false,
            },
        ),
    );
    writeln!(rpm.master, "GX,000001,002000\r").unwrap();

    let events = central.wait_for(30, "a passage", |ev| {
        ev.iter().any(|e| e["type"] == "passage")
    });
    let p = &events.iter().find(|e| e["type"] == "passage").unwrap()["body"];
    assert_eq!(p["lane"], "1");
    let axles: Vec<u64> = p["wim"]["axles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["load_kg"].as_u64().unwrap())
        .collect();
    assert_eq!(axles, [6_400, 9_600, 9_700], "{p}");
    assert_eq!(p["radiation"]["verdict"], "gamma", "{p}");
    assert_eq!(p["channel"], "red", "{p}");
    let reasons: Vec<&str> = p["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    // 19.3 t on the tandem, 25.7 t on three axles, the gamma source; no camera on this lane.
    for r in ["axle_group", "gross_mass", "radiation_gamma"] {
        assert!(reasons.contains(&r), "{r} not in {reasons:?}");
    }
    let alerts = central.wait_for(10, "its alerts", |ev| {
        ev.iter()
            .filter(|e| e["type"] == "alert" && e["body"]["passage"] == p["id"])
            .count()
            >= 3
    });
    let gamma = alerts
        .iter()
        .find(|e| e["type"] == "alert" && e["body"]["rule"] == "radiation_gamma")
        .unwrap();
    assert_eq!(gamma["body"]["severity"], "high");
    assert_eq!(gamma["body"]["message"]["key"], "alert.radiation_gamma");
    // Central's declaration reached fusion through the broker and the inbox cache.
    let log = setup.log();
    assert!(
        log.contains("declarations loaded") && log.contains("declarations=1"),
        "{log}"
    );
}
