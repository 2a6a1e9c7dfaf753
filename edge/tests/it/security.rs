//! Hostile clients on the post's network (issue 19), against the real binary on loopback:
//! each listener bounds what one client can hold.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;

/// Sends one alert on `c` and returns the answer line.
fn alert(c: &mut TcpStream) -> String {
    c.write_all(b"{\"type\":\"alert\",\"body\":{\"rule\":\"probe\"}}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

/// A connection to `port` from the loopback address `from` (Linux answers on all of 127/8).
fn connect_from(from: [u8; 4], port: u16) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

#[test]
fn an_ingest_client_trickling_bytes_is_closed_after_the_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path(), free_port().unwrap(), "", "");
    setup.add("idle_timeout_s = 1\n");
    let _app = setup.start();
    let mut c = TcpStream::connect(("127.0.0.1", setup.ingest_port)).unwrap();
    // A valid line, one byte every 200 ms, never finished: the line had 1 s to arrive. The
    // test gives up at 20 s, far beyond it.
    c.write_all(b"{\"type\":\"alert\",\"body\":{\"rule\":\"slow\",\"pad\":\"")
        .unwrap();
    let closed = closes_while_trickling(&mut c, b"x", 20);
    assert!(
        closed,
        "a line trickled for 20 s kept the connection: {}",
        setup.log()
    );
    // The port still serves a real client.
    let mut ok = TcpStream::connect(("127.0.0.1", setup.ingest_port)).unwrap();
    ok.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert!(alert(&mut ok).contains("\"ok\":true"));
}

#[test]
fn one_address_cannot_take_every_ingest_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path(), free_port().unwrap(), "", "");
    setup.add("max_connections = 4\nmax_per_client = 2\nidle_timeout_s = 60\n");
    let _app = setup.start();
    let port = setup.ingest_port;
    // Two connections from 127.0.0.3, each proved admitted by an answer (the start-up probe's
    // own slot may take a moment to be released: retry until both are in).
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held.len() < 2 {
        let mut c = connect_from([127, 0, 0, 3], port);
        if alert(&mut c).contains("\"ok\":true") {
            held.push(c);
        } else {
            assert!(Instant::now() < deadline, "{}", setup.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // A third from the same address is told why and closed.
    let mut third = connect_from([127, 0, 0, 3], port);
    let mut answer = String::new();
    third.read_to_string(&mut answer).unwrap();
    assert!(
        answer.contains("more than 2 connections from this address"),
        "{answer:?}"
    );
    // Another address is served while the first holds its two.
    let mut other = connect_from([127, 0, 0, 4], port);
    assert!(alert(&mut other).contains("\"ok\":true"));
    drop(held);
}

/// The largest resident set of the children this test has waited for, in bytes.
#[allow(unsafe_code)] // libc calls std does not offer (see SAFETY)
fn children_max_rss() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    u.ru_maxrss as u64 * 1024
}

#[test]
fn decode_streams_its_input_in_bounded_memory() {
    use std::process::{Command, Stdio};
    // 64 MiB of zeros as a Teltonika stream: before, the whole input and one error per byte
    // were held at once (1 GiB took 12 GB).
    let mut child = Command::new(env!("CARGO_BIN_EXE_acsgd"))
        .args(["decode", "--protocol", "teltonika", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            stdin.write_all(&zeros).unwrap();
        }
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    feeder.join().unwrap();
    assert!(child.wait().unwrap().success());
    // One burst of garbage is one error line (and the last zero, a handshake cut short, one
    // more).
    assert!(out.lines().count() <= 2, "{}", &out[..out.len().min(500)]);
    assert!(
        out.lines().all(|l| l.contains("\"kind\":\"error\"")),
        "{out}"
    );
    let rss = children_max_rss();
    assert!(rss < 150 << 20, "peak resident memory {} MiB", rss >> 20);

    // A hex capture with a 16 MiB line: that line is one error, the next still decodes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.hex");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&vec![b'0'; 16 << 20]).unwrap();
    f.write_all(b"\n000F333536333037303432343431303133\n")
        .unwrap();
    drop(f);
    let out = Command::new(env!("CARGO_BIN_EXE_acsgd"))
        .args(["decode", "--protocol", "teltonika", "--hex"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("line longer than"), "{}", lines[0]);
    assert!(lines[1].contains("\"kind\":\"login\""), "{}", lines[1]);
}

/// Reads one answer line.
fn answer(c: &mut TcpStream) -> String {
    let mut line = String::new();
    BufReader::new(c.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

/// Issue 19, finding 1: the ingest port had no authentication. With clients configured, a
/// connection names itself by token first and may send only its own event types.
#[test]
fn ingest_clients_authenticate_and_send_only_their_own_types() {
    const TOKEN: &str = "5f1c0a9e7d3b42c8a6e0f19b2d7c4e11";
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path(), free_port().unwrap(), "", "");
    setup.add(&format!(
        "[[ingest.clients]]\nname = \"lane-controller\"\ntoken = \"{TOKEN}\"\ntypes = [\"alert\"]\n"
    ));
    let _app = setup.start();
    let port = setup.ingest_port;
    let connect = || {
        let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c
    };
    // No token: the event line is taken for a sign-in, refused, and the connection closed.
    let mut c = connect();
    let refused = alert(&mut c);
    assert!(
        refused.contains("\"ok\":false") && refused.contains("auth"),
        "{refused}"
    );
    let mut rest = String::new();
    c.read_to_string(&mut rest).unwrap();
    assert!(rest.is_empty());
    // A wrong token, one character off: the same.
    let mut c = connect();
    let wrong = format!("{}0", &TOKEN[..TOKEN.len() - 1]);
    c.write_all(format!("{{\"auth\":\"{wrong}\"}}\n").as_bytes())
        .unwrap();
    assert!(answer(&mut c).contains("\"ok\":false"));
    // The right token: its alerts are accepted, other types refused line by line.
    let mut c = connect();
    c.write_all(format!("{{\"auth\":\"{TOKEN}\"}}\n").as_bytes())
        .unwrap();
    assert!(answer(&mut c).contains("\"client\":\"lane-controller\""));
    assert!(alert(&mut c).contains("\"ok\":true"));
    c.write_all(b"{\"type\":\"telemetry\",\"body\":{}}\n")
        .unwrap();
    let t = answer(&mut c);
    assert!(
        t.contains("not among the types client \\\"lane-controller\\\" may send"),
        "{t}"
    );
    c.write_all(b"{\"type\":\"override\",\"body\":{}}\n")
        .unwrap();
    assert!(answer(&mut c).contains("\"ok\":false"));
    assert!(
        alert(&mut c).contains("\"ok\":true"),
        "the connection goes on"
    );
}

/// Reads one EGTS packet from the connection.
fn read_egts(c: &mut TcpStream) -> acsgd_drivers::egts::Packet {
    let mut head = [0u8; 11];
    c.read_exact(&mut head).unwrap();
    let fdl = u16::from_le_bytes([head[5], head[6]]) as usize;
    let mut p = head.to_vec();
    if fdl > 0 {
        let mut rest = vec![0u8; fdl + 2];
        c.read_exact(&mut rest).unwrap();
        p.extend(rest);
    }
    acsgd_drivers::egts::parse_packet(&p).unwrap()
}

/// Issue 19, finding 8, against the service: a terminal admitted as 12345 sent a record for
/// object 99999 and it was acknowledged and forwarded as 99999's.
#[test]
fn an_egts_terminal_cannot_pass_records_off_as_another_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&tmp.path().join("broker")).unwrap();
    let central = Central::connect(broker.port(), "central-egts-allow");
    let setup = Setup::new(tmp.path(), broker.port(), "", "");
    let port = free_port().unwrap();
    setup.add(&format!(
        "[[sensors]]\nid = \"seals\"\nprotocol = \"egts\"\n\
         transport = {{ kind = \"tcp\", listen = \"127.0.0.1:{port}\", allow = [\"12345\"] }}\n"
    ));
    let _app = setup.start();
    let mut login = Vec::new();
    login.extend_from_slice(&8u16.to_le_bytes()); // RL
    login.extend_from_slice(&1u16.to_le_bytes()); // RN
    login.extend_from_slice(&[0, 1, 1, 1]); // RFL, SST = RST = AUTH, SRT = TERM_IDENTITY
    login.extend_from_slice(&5u16.to_le_bytes()); // SRL
    login.extend_from_slice(&12345u32.to_le_bytes()); // TID
    login.push(0); // no optional fields
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(&acsgd_drivers::egts::frame(1, 1, &login))
        .unwrap();
    assert_eq!(read_egts(&mut c).response_to, Some((1, 0)));
    read_egts(&mut c); // RESULT_CODE
    let own =
        acsgd_drivers::egts::encode_position(2, 2, 12345, 1_700_000_000, 43.2, 76.9, 0.0, 0, 0);
    c.write_all(&own).unwrap();
    assert_eq!(
        read_egts(&mut c).response_to,
        Some((2, 0)),
        "its own record is acknowledged"
    );
    let other =
        acsgd_drivers::egts::encode_position(3, 3, 99999, 1_700_000_060, 43.2, 76.9, 0.0, 0, 0);
    c.write_all(&other).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "another object's record is not acknowledged: {rest:?}"
    );
    // Central gets 12345's position and never one for 99999.
    let events = central.wait_for(60, "12345's position", |ev| {
        ev.iter()
            .any(|e| e["type"] == "position" && e["body"]["device"] == "12345")
    });
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "position" && e["body"]["device"] == "99999"),
        "{events:?}"
    );
}

/// The camera plate-read port and a tracker port of the service: a line or frame trickled a
/// byte at a time, and a silent connection, are closed after `idle_timeout_s`.
#[test]
fn camera_and_tracker_ports_close_slow_and_silent_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path(), free_port().unwrap(), "", "");
    let (cam, trk) = (free_port().unwrap(), free_port().unwrap());
    setup.add(&format!(
        "[[sensors]]\nid = \"cam\"\nlane = \"1\"\nprotocol = \"camera\"\nview = \"front\"\n\
         transport = {{ kind = \"tcp\", listen = \"127.0.0.1:{cam}\", idle_timeout_s = 1 }}\n\
         [[sensors]]\nid = \"trk\"\nprotocol = \"teltonika\"\n\
         transport = {{ kind = \"tcp\", listen = \"127.0.0.1:{trk}\", idle_timeout_s = 1 }}\n"
    ));
    let _app = setup.start();
    for port in [cam, trk] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "port {port}: {}", setup.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // A plate line a character at a time, never ended.
    let mut c = TcpStream::connect(("127.0.0.1", cam)).unwrap();
    c.write_all(b"{\"plate\":\"").unwrap();
    assert!(
        closes_while_trickling(&mut c, b"A", 20),
        "camera port kept a trickled line"
    );
    // A Teltonika IMEI handshake a byte at a time (digits after a valid length).
    let mut t = TcpStream::connect(("127.0.0.1", trk)).unwrap();
    t.write_all(&[0x00, 0x0F]).unwrap();
    assert!(
        closes_while_trickling(&mut t, b"3", 20),
        "tracker port kept a trickled frame"
    );
    // Silent connections on both.
    for port in [cam, trk] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(s.read(&mut b), Ok(0) | Err(_)),
            "port {port} kept a silent connection"
        );
    }
}
