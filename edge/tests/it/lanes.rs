//! A lane through the real binary: the lane node and the radiation portal on pseudo-terminal
//! serial ports, a declaration published by central over MQTT, a truck crossing with line
//! noise on the node's line, and the passage, its verdict and its alerts arriving at central.

use std::io::Write;
use std::time::Duration;

use crate::common::*;
use acsgd_drivers::lane::Body;

#[test]
fn a_truck_on_serial_sensors_becomes_a_red_passage_at_central() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&tmp.path().join("broker")).unwrap();
    let central = Central::connect(broker.port(), "central-lanes");
    let setup = Setup::new(tmp.path(), broker.port(), "", "");
    let (mut node, mut rpm) = (pty(), pty());
    setup.add(&format!(
        "{}[[sensors]]\nid = \"rpm-1\"\nlane = \"1\"\nprotocol = \"rpm\"\n\
         transport = {{ kind = \"serial\", path = \"{}\", baud = 9600 }}\n",
        fast_lane_with_node(&node.path),
        rpm.path.display()
    ));
    declare_123abc02(broker.port());
    let _app = setup.start();
    // Both serial ports open and central's declaration in fusion (through the broker and the
    // inbox cache) before the truck comes: waited for in the log, not by the clock.
    setup.wait_for_log_count(120, "serial port open", 2);
    setup.wait_for_log(120, "declarations=1");

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
}
