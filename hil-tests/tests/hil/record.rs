//! `acsgd record`: what a device sends on a serial port or a TCP connection becomes a trace
//! that replays frame for frame (noise kept as comments), so field recordings need no code.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use acsgd_drivers::lane::{self, Body, Frame};

/// Starts `acsgd record` and returns once it says its source is open (what is written to a
/// serial port before that is flushed by the opening).
fn record(args: &[&str], out: &std::path::Path) -> std::process::Child {
    let mut child = Command::new(acsgd_hil::acsgd_binary())
        .arg("record")
        .args(args)
        .arg("--out")
        .arg(out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if line.contains("recording") {
                let _ = tx.send(());
                break;
            }
        }
        // Keep reading so the recorder never blocks on a full pipe.
        lines.for_each(drop);
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("acsgd record says its source is open");
    child
}

fn replay(config: &str, trace: &std::path::Path, dir: &std::path::Path) -> (usize, String) {
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, config).unwrap();
    let out = Command::new(acsgd_hil::acsgd_binary())
        .args(["replay", "--unsigned", "--config"])
        .arg(&cfg)
        .arg(trace)
        .output()
        .unwrap();
    assert!(out.status.success());
    (
        String::from_utf8_lossy(&out.stdout).lines().count(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The payload column of a trace's reading lines.
fn payloads(trace: &str) -> Vec<&str> {
    trace
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').nth(3).unwrap())
        .collect()
}

const BASE: &str =
    "post = \"rec\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1\"\n[storage]\ndata_dir = \"/tmp/x\"\n";

#[test]
fn a_serial_lane_node_with_line_noise_records_frame_for_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, link) = acsgd_hil::pty_at(&dir.path().join("ttyLANE")).unwrap();
    let trace = dir.path().join("lane.tsv");
    let mut child = record(
        &[
            "--sensor",
            "node-1",
            "--protocol",
            "lane",
            "--serial",
            link.to_str().unwrap(),
            "--baud",
            "115200",
            // From the opening on: room for a loaded machine to write and read it all.
            "--duration",
            "6",
        ],
        &trace,
    );
    let mut sent = Vec::new();
    for i in 0..20u8 {
        let mut buf = [0u8; lane::MAX_FRAME];
        let body = Body::Loop {
            t_ms: i as u32 * 100,
            loop_id: 1,
            occupied: i % 2 == 0,
        };
        let n = lane::encode(
            &Frame {
                addr: 1,
                seq: i,
                body,
            },
            &mut buf,
        )
        .unwrap();
        if i % 5 == 0 {
            master.write_all(b"\x01\x02garbage\x7f").unwrap(); // noise between frames
        }
        master.write_all(&buf[..n]).unwrap();
        sent.push(
            buf[..n]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&trace).unwrap();
    let recorded = payloads(&text);
    assert_eq!(recorded, sent, "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(": noise: ")).count(),
        4,
        "{text}"
    );
    // The recording replays without a bad line.
    let config = format!(
        "{BASE}[[lanes]]\nid = \"1\"\n[[sensors]]\nid = \"node-1\"\nlane = \"1\"\nprotocol = \"lane\"\ntransport = {{ kind = \"serial\", path = \"/dev/null\" }}\n"
    );
    let (_, summary) = replay(&config, &trace, dir.path());
    assert!(summary.contains(" 0 bad lines"), "{summary}");
    assert!(summary.contains("20 readings"), "{summary}");
}

#[test]
fn an_egts_device_over_tcp_records_packet_for_packet() {
    let dir = tempfile::tempdir().unwrap();
    let port = acsgd::mosquitto::free_port().unwrap();
    let trace = dir.path().join("egts.tsv");
    let addr = format!("127.0.0.1:{port}");
    let mut child = record(
        &[
            "--sensor",
            "seals",
            "--protocol",
            "egts",
            "--tcp",
            &addr,
            // From the opening on: room for a loaded machine to write and read it all.
            "--duration",
            "6",
        ],
        &trace,
    );
    let mut conn = loop {
        if let Ok(c) = std::net::TcpStream::connect(&addr) {
            break c;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut sent = Vec::new();
    for i in 0..5u16 {
        let p = acsgd_drivers::egts::encode_position(
            i,
            i,
            42,
            1_795_161_600 + i as i64 * 10,
            44.2,
            80.4,
            58.0,
            250,
            0,
        );
        // Two packets in one write and a packet split over two: framing, not writes, decides.
        if i == 2 {
            conn.write_all(&p[..7]).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            conn.write_all(&p[7..]).unwrap();
        } else {
            conn.write_all(&p).unwrap();
        }
        sent.push(p.iter().map(|b| format!("{b:02x}")).collect::<String>());
    }
    drop(conn);
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&trace).unwrap();
    let recorded = payloads(&text);
    assert_eq!(recorded, sent, "{text}");
    let config = format!(
        "{BASE}[[sensors]]\nid = \"seals\"\nprotocol = \"egts\"\ntransport = {{ kind = \"tcp\", listen = \"127.0.0.1:0\" }}\n"
    );
    let (events, summary) = replay(&config, &trace, dir.path());
    assert_eq!(events, 5, "{summary}");
    assert!(summary.contains(" 0 bad lines"), "{summary}");
}
