//! The transports over real sockets and pseudo-terminals: acknowledgements wait for the sink's
//! verdict, bad frames are not acknowledged, the allowlist, the connection limit and the idle
//! timeout hold, and a serial device that disappears is reopened.

mod common;
use common::{traces, unhex};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use acsgd_drivers::decode::Protocol;
use acsgd_drivers::transport::{self, Batch, Stats, TcpOptions};
use acsgd_drivers::Reading;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const CODEC8: &str = "000000000000003608010000016B40D8EA30010000000000000000000000000000000105021503010101425E0F01F10000601A014E0000000000000000010000C7CF";

struct Server {
    addr: std::net::SocketAddr,
    batches: mpsc::Receiver<Batch>,
    stats: Arc<Stats>,
    _shutdown: watch::Sender<bool>,
}

async fn server(protocol: Protocol, opts: TcpOptions) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, batches) = mpsc::channel(16);
    let stats = Arc::new(Stats::default());
    let (shutdown, rx) = watch::channel(false);
    tokio::spawn(transport::serve_tcp(
        listener,
        protocol,
        "t1".into(),
        opts,
        tx,
        stats.clone(),
        rx,
    ));
    Server {
        addr,
        batches,
        stats,
        _shutdown: shutdown,
    }
}

fn opts() -> TcpOptions {
    TcpOptions {
        max_connections: 8,
        idle_timeout: Duration::from_secs(30),
        allow: None,
    }
}

async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    timeout(Duration::from_secs(5), s.read_exact(&mut b))
        .await
        .expect("answer in time")
        .unwrap();
    b
}

/// A Teltonika device connected and past its IMEI handshake (accepted with `01`).
async fn teltonika_device(srv: &Server) -> TcpStream {
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    c.write_all(&unhex("000F333536333037303432343431303133"))
        .await
        .unwrap();
    assert_eq!(read_n(&mut c, 1).await, [0x01]);
    c
}

#[tokio::test]
async fn teltonika_is_acknowledged_only_after_the_sink_accepts() {
    let mut srv = server(Protocol::Teltonika, opts()).await;
    let mut c = teltonika_device(&srv).await;
    c.write_all(&unhex(CODEC8)).await.unwrap();
    let batch = timeout(Duration::from_secs(5), srv.batches.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&batch.readings[0], Reading::Position(p) if p.device.as_deref() == Some("356307042441013"))
    );
    // No acknowledgement while the sink has not answered.
    let mut one = [0u8; 1];
    assert!(
        timeout(Duration::from_millis(300), c.read(&mut one))
            .await
            .is_err(),
        "acknowledged before acceptance"
    );
    batch.accepted.send(true).unwrap();
    assert_eq!(read_n(&mut c, 4).await, [0, 0, 0, 1]);

    // The same packet with a damaged CRC: nothing reaches the sink, and the ack is 0 records.
    let mut bad = unhex(CODEC8);
    let n = bad.len();
    bad[n - 1] ^= 0xFF;
    c.write_all(&bad).await.unwrap();
    assert_eq!(read_n(&mut c, 4).await, [0, 0, 0, 0]);
    assert!(srv.batches.try_recv().is_err());
    assert_eq!(Stats::get(&srv.stats.bad_frames), 1);

    // A refused batch is answered with 0 so the device keeps the records.
    c.write_all(&unhex(CODEC8)).await.unwrap();
    let batch = srv.batches.recv().await.unwrap();
    batch.accepted.send(false).unwrap();
    assert_eq!(read_n(&mut c, 4).await, [0, 0, 0, 0]);
}

#[tokio::test]
async fn a_teltonika_keep_alive_byte_is_a_heartbeat_not_an_error_and_gets_no_answer() {
    let mut srv = server(Protocol::Teltonika, opts()).await;
    let mut c = teltonika_device(&srv).await;
    // FMB devices send a lone FF to keep NAT open; in the same write as the next packet here,
    // so the cutter has to take exactly one byte.
    let mut bytes = vec![0xFF];
    bytes.extend(unhex(CODEC8));
    c.write_all(&bytes).await.unwrap();
    let beat = srv.batches.recv().await.unwrap();
    assert!(
        matches!(&beat.readings[..], [Reading::Heartbeat(h)] if h.device.as_deref() == Some("356307042441013")),
        "{:?}",
        beat.readings
    );
    beat.accepted.send(true).unwrap();
    let batch = srv.batches.recv().await.unwrap();
    assert!(matches!(&batch.readings[0], Reading::Position(_)));
    batch.accepted.send(true).unwrap();
    // The only answer is the packet's: the keep-alive is not answered.
    assert_eq!(read_n(&mut c, 4).await, [0, 0, 0, 1]);
    assert_eq!(Stats::get(&srv.stats.bad_frames), 0);
}

#[tokio::test]
async fn a_device_not_on_the_allowlist_is_refused_and_disconnected() {
    let allow: HashSet<String> = ["111111111111111".to_string()].into();
    let srv = server(
        Protocol::Teltonika,
        TcpOptions {
            allow: Some(allow),
            ..opts()
        },
    )
    .await;
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    c.write_all(&unhex("000F333536333037303432343431303133"))
        .await
        .unwrap();
    assert_eq!(read_n(&mut c, 1).await, [0x00]);
    let mut rest = Vec::new();
    timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_idle_ones_time_out() {
    let srv = server(
        Protocol::Wialon,
        TcpOptions {
            max_connections: 1,
            idle_timeout: Duration::from_millis(400),
            ..opts()
        },
    )
    .await;
    let _first = TcpStream::connect(srv.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut second = TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = Vec::new();
    timeout(Duration::from_secs(5), second.read_to_end(&mut buf))
        .await
        .expect("closed at once")
        .ok();
    assert_eq!(Stats::get(&srv.stats.refused_connections), 1);
    // The first one says nothing and is closed by the idle timeout, freeing the slot.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut third = TcpStream::connect(srv.addr).await.unwrap();
    third.write_all(b"#P#\r\n").await.unwrap();
    assert_eq!(read_n(&mut third, 6).await, b"#AP#\r\n");
}

#[tokio::test]
async fn wialon_login_then_data_each_answered_after_acceptance() {
    let mut srv = server(Protocol::Wialon, opts()).await;
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    c.write_all(b"#L#865905021234567;NA\r\n#SD#270413;205601;5544.6025;N;03739.6834;E;1;2;3;4\r\n")
        .await
        .unwrap();
    assert_eq!(read_n(&mut c, 7).await, b"#AL#1\r\n");
    let batch = srv.batches.recv().await.unwrap();
    assert_eq!(
        batch.readings[0].position().unwrap().device.as_deref(),
        Some("865905021234567")
    );
    batch.accepted.send(true).unwrap();
    assert_eq!(read_n(&mut c, 8).await, b"#ASD#1\r\n");
}

#[tokio::test]
async fn egts_noise_is_skipped_and_the_response_names_the_packet() {
    let mut srv = server(Protocol::Egts, opts()).await;
    let row = std::fs::read_to_string(traces().join("trackers/egts.tsv")).unwrap();
    let packet = unhex(row.lines().nth(2).unwrap().split('\t').nth(4).unwrap());
    let pid = u16::from_le_bytes([packet[7], packet[8]]);
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    let mut wire = b"\xff\xfe garbage".to_vec();
    wire.extend_from_slice(&packet);
    c.write_all(&wire).await.unwrap();
    let batch = srv.batches.recv().await.unwrap();
    assert!(batch.readings.iter().any(|r| r.position().is_some()));
    batch.accepted.send(true).unwrap();
    let mut head = read_n(&mut c, 11).await;
    let fdl = u16::from_le_bytes([head[5], head[6]]) as usize;
    head.extend(read_n(&mut c, fdl + 2).await);
    let resp = acsgd_drivers::egts::parse_packet(&head).unwrap();
    assert_eq!(resp.response_to, Some((pid, 0)));
    assert!(Stats::get(&srv.stats.bad_frames) >= 1);
}

#[tokio::test]
async fn a_serial_gps_that_disappears_is_reopened() {
    use tokio_serial::SerialPort;
    let dir = tempfile_dir();
    let link = dir.path().join("gps");
    let (tx, mut batches) = mpsc::channel(16);
    let stats = Arc::new(Stats::default());
    let (_shutdown, rx) = watch::channel(false);

    let (mut master, slave) = tokio_serial::SerialStream::pair().unwrap();
    std::os::unix::fs::symlink(slave.name().unwrap(), &link).unwrap();
    tokio::spawn(transport::serve_serial(
        link.clone(),
        9600,
        Protocol::Nmea,
        "gps".into(),
        tx,
        stats.clone(),
        None,
        rx,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rmc = b"$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76\r\n";
    master.write_all(rmc).await.unwrap();
    let b = timeout(Duration::from_secs(5), batches.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(b.readings[0].position().is_some());
    b.accepted.send(true).unwrap();

    // Unplug: both ends go away, the device node with them.
    drop(master);
    drop(slave);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Plug back in under the same name (as udev's /dev/serial/by-id links do).
    let (mut master, slave) = tokio_serial::SerialStream::pair().unwrap();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(slave.name().unwrap(), &link).unwrap();
    let b = loop {
        master.write_all(rmc).await.unwrap();
        if let Ok(Some(b)) = timeout(Duration::from_millis(500), batches.recv()).await {
            break b;
        }
    };
    assert!(b.readings[0].position().is_some());
    assert!(Stats::get(&stats.reconnects) >= 1);
    drop(slave);
}

/// A directory for a test's links to its pseudo-terminals, removed with it.
fn tempfile_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("acsgd-serial-")
        .tempdir()
        .unwrap()
}

#[tokio::test]
async fn a_teltonika_udp_datagram_is_acknowledged_to_its_sender_after_acceptance() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let (tx, mut batches) = mpsc::channel(4);
    let stats = Arc::new(Stats::default());
    let (_shutdown, rx) = watch::channel(false);
    tokio::spawn(transport::serve_udp(
        sock,
        Protocol::Teltonika,
        "udp".into(),
        None,
        tx,
        stats.clone(),
        rx,
    ));
    // len, packet id 0xCAFE, type 01, AVL packet id 7, IMEI, then the Codec 8 data
    let avl = unhex(CODEC8);
    let mut d = vec![0xCA, 0xFE, 0x01, 0x07, 0x00, 0x0F];
    d.extend_from_slice(b"352093081452251");
    d.extend_from_slice(&avl[8..avl.len() - 4]);
    let mut dg = (d.len() as u16).to_be_bytes().to_vec();
    dg.extend(d);
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&dg, addr).await.unwrap();
    let b = timeout(Duration::from_secs(5), batches.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        b.readings[0].position().unwrap().device.as_deref(),
        Some("352093081452251")
    );
    let mut ack = [0u8; 16];
    assert!(
        timeout(Duration::from_millis(200), client.recv(&mut ack))
            .await
            .is_err(),
        "acked before acceptance"
    );
    b.accepted.send(true).unwrap();
    let n = timeout(Duration::from_secs(5), client.recv(&mut ack))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&ack[..n], [0x00, 0x05, 0xCA, 0xFE, 0x01, 0x07, 0x01]);
}

/// A Galileosky main packet around `tags`, with its CRC-16/MODBUS.
fn galileo_packet(tags: &[u8]) -> Vec<u8> {
    let mut b = vec![0x01];
    b.extend((tags.len() as u16).to_le_bytes());
    b.extend(tags);
    let crc = acsgd_drivers::crc::crc16_modbus(&b);
    b.extend(crc.to_le_bytes());
    b
}

#[tokio::test]
async fn galileosky_packets_are_answered_with_their_crc_only_after_acceptance() {
    let mut srv = server(Protocol::Galileosky, opts()).await;
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    let mut head = vec![0x01, 0x82, 0x02, 0x17, 0x03];
    head.extend(b"868204001549087");
    let head = galileo_packet(&head);
    c.write_all(&head).await.unwrap();
    let batch = srv.batches.recv().await.unwrap();
    assert!(matches!(&batch.readings[..], [Reading::Login(l)] if l.device == "868204001549087"));
    batch.accepted.send(true).unwrap();
    assert_eq!(
        read_n(&mut c, 3).await,
        [0x02, head[head.len() - 2], head[head.len() - 1]]
    );

    let mut rec = vec![0x20];
    rec.extend(1_700_000_000u32.to_le_bytes());
    rec.extend([0x30, 0x09]);
    rec.extend(43_238_949i32.to_le_bytes());
    rec.extend(76_889_709i32.to_le_bytes());
    let data = galileo_packet(&rec);
    // A damaged copy first: not delivered, not answered; then the packet itself.
    let mut bad = data.clone();
    let n = bad.len();
    bad[n - 1] ^= 0x5A;
    c.write_all(&bad).await.unwrap();
    c.write_all(&data).await.unwrap();
    let batch = srv.batches.recv().await.unwrap();
    let p = batch.readings[0].position().unwrap();
    assert_eq!(
        p.device.as_deref(),
        Some("868204001549087"),
        "the IMEI of the head packet"
    );
    let mut one = [0u8; 1];
    assert!(
        timeout(Duration::from_millis(300), c.read(&mut one))
            .await
            .is_err(),
        "answered before acceptance"
    );
    batch.accepted.send(true).unwrap();
    assert_eq!(read_n(&mut c, 3).await, [0x02, data[n - 2], data[n - 1]]);
    assert_eq!(Stats::get(&srv.stats.bad_frames), 1);
}

#[tokio::test]
async fn a_galileosky_device_off_the_allowlist_is_disconnected() {
    let mut o = opts();
    o.allow = Some(HashSet::from(["868204001549087".to_string()]));
    let srv = server(Protocol::Galileosky, o).await;
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    let mut head = vec![0x03];
    head.extend(b"868204001549088");
    c.write_all(&galileo_packet(&head)).await.unwrap();
    let mut b = [0u8; 8];
    let n = timeout(Duration::from_secs(5), c.read(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "closed without an answer");
    assert_eq!(Stats::get(&srv.stats.refused_connections), 1);
}

#[tokio::test]
async fn arnavi_header_package_and_text_line_over_one_connection() {
    let mut srv = server(Protocol::Arnavi, opts()).await;
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    let mut header = vec![0xFF, 0x23];
    header.extend(861_785_007_918_323u64.to_le_bytes());
    c.write_all(&header).await.unwrap();
    let batch = srv.batches.recv().await.unwrap();
    assert!(matches!(&batch.readings[..], [Reading::Login(l)] if l.device == "861785007918323"));
    batch.accepted.send(true).unwrap();
    // 7B 04 00 CS time 7D: the server's time, its bytes summed into CS.
    let answer = read_n(&mut c, 9).await;
    assert_eq!(answer[..3], [0x7B, 0x04, 0x00]);
    assert_eq!(
        answer[3],
        answer[4..8].iter().fold(0u8, |a, &b| a.wrapping_add(b))
    );
    assert_eq!(answer[8], 0x7D);

    // A package with one data packet: latitude, longitude, navigation.
    let mut data = vec![0x03];
    data.extend(43.238_95f32.to_le_bytes());
    data.push(0x04);
    data.extend(76.889_71f32.to_le_bytes());
    data.extend([0x05, 10, 80, 0x09, 20]);
    let mut body = 1_700_000_000u32.to_le_bytes().to_vec();
    body.extend(&data);
    let mut package = vec![0x5B, 0x07, 0x01];
    package.extend((data.len() as u16).to_le_bytes());
    package.extend(&body);
    package.push(body.iter().fold(0u8, |a, &b| a.wrapping_add(b)));
    package.push(0x5D);
    c.write_all(&package).await.unwrap();
    let batch = srv.batches.recv().await.unwrap();
    let p = batch.readings[0].position().unwrap();
    assert_eq!(p.device.as_deref(), Some("861785007918323"));
    assert!(p.valid);
    batch.accepted.send(true).unwrap();
    assert_eq!(read_n(&mut c, 4).await, [0x7B, 0x00, 0x07, 0x7D]);

    // A text line on the same connection: delivered, not answered.
    let body = "AV,V2,32768,12487,2277,203,-1,0,0,193,0,0,1,13,200741,5950.6773N,03029.1043E,0.0,0.0,121012,";
    let cs = body.bytes().fold(0u8, |a, b| a ^ b);
    c.write_all(format!("${body}*{cs:02X}\r\n").as_bytes())
        .await
        .unwrap();
    let batch = srv.batches.recv().await.unwrap();
    assert!(
        matches!(&batch.readings[0], Reading::Position(p) if p.device.as_deref() == Some("32768"))
    );
    batch.accepted.send(true).unwrap();
    let mut one = [0u8; 1];
    assert!(timeout(Duration::from_millis(300), c.read(&mut one))
        .await
        .is_err());
    assert_eq!(Stats::get(&srv.stats.bad_frames), 0);
}

/// Reads one EGTS packet (header, body, CRC) from the connection.
async fn read_egts_packet(c: &mut TcpStream) -> acsgd_drivers::egts::Packet {
    let mut p = read_n(c, 11).await;
    let fdl = u16::from_le_bytes([p[5], p[6]]) as usize;
    if fdl > 0 {
        p.extend(read_n(c, fdl + 2).await);
    }
    acsgd_drivers::egts::parse_packet(&p).unwrap()
}

/// A TERM_IDENTITY login for terminal `tid`, no optional fields.
fn egts_login(pid: u16, tid: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&8u16.to_le_bytes()); // RL: one 5-byte subrecord and its header
    body.extend_from_slice(&1u16.to_le_bytes()); // RN
    body.push(0); // RFL: no OID
    body.push(acsgd_drivers::egts::SERVICE_AUTH); // SST
    body.push(acsgd_drivers::egts::SERVICE_AUTH); // RST
    body.push(1); // SRT: TERM_IDENTITY
    body.extend_from_slice(&5u16.to_le_bytes()); // SRL
    body.extend_from_slice(&tid.to_le_bytes()); // TID
    body.push(0); // flags: nothing else
    acsgd_drivers::egts::frame(pid, 1, &body)
}

#[tokio::test]
async fn an_egts_terminal_admitted_by_its_login_cannot_send_another_objects_records() {
    let mut srv = server(
        Protocol::Egts,
        TcpOptions {
            allow: Some(["12345".to_string()].into()),
            ..opts()
        },
    )
    .await;
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    c.write_all(&egts_login(1, 12345)).await.unwrap();
    // The login is answered (RESPONSE, then RESULT_CODE) without a batch.
    assert_eq!(read_egts_packet(&mut c).await.response_to, Some((1, 0)));
    read_egts_packet(&mut c).await;
    // Its own records are accepted.
    let own =
        acsgd_drivers::egts::encode_position(2, 2, 12345, 1_700_000_000, 43.2, 76.9, 0.0, 0, 0);
    c.write_all(&own).await.unwrap();
    let batch = srv.batches.recv().await.unwrap();
    batch.accepted.send(true).unwrap();
    assert_eq!(read_egts_packet(&mut c).await.response_to, Some((2, 0)));
    // Another object's record on the same connection: refused, connection closed, nothing
    // delivered.
    let other =
        acsgd_drivers::egts::encode_position(3, 3, 99999, 1_700_000_000, 43.2, 76.9, 0.0, 0, 0);
    c.write_all(&other).await.unwrap();
    let mut rest = Vec::new();
    timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
        .await
        .expect("closed")
        .unwrap();
    assert!(
        srv.batches.try_recv().is_err(),
        "nothing from object 99999 delivered"
    );
    assert_eq!(Stats::get(&srv.stats.refused_connections), 1);
}

#[tokio::test]
async fn garbage_does_not_keep_an_idle_tracker_connection_open() {
    let srv = server(
        Protocol::Teltonika,
        TcpOptions {
            idle_timeout: Duration::from_secs(1),
            ..opts()
        },
    )
    .await;
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    // A byte of noise every 200 ms: before the fix each one restarted the idle clock. The
    // server must close the connection although bytes keep coming; 10 s is only the test's
    // own give-up point, far beyond the 1 s timeout.
    let closed = timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 16];
        loop {
            if c.write_all(b"\x7f").await.is_err() {
                return;
            }
            match timeout(Duration::from_millis(200), c.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a connection sending only noise was kept open"
    );
}

#[tokio::test]
async fn commands_go_down_a_serial_line_and_stale_ones_are_dropped_unsent() {
    use acsgd_drivers::lane::{self, Body, Frame};
    use acsgd_drivers::transport::Outgoing;
    use std::time::Instant;
    use tokio_serial::SerialPort;
    let dir = tempfile_dir();
    let link = dir.path().join("node");
    let (tx, mut batches) = mpsc::channel(16);
    let stats = Arc::new(Stats::default());
    let (_shutdown, rx) = watch::channel(false);
    let (out_tx, out_rx) = mpsc::channel(8);
    let (mut master, slave) = tokio_serial::SerialStream::pair().unwrap();
    std::os::unix::fs::symlink(slave.name().unwrap(), &link).unwrap();
    let encode = |body: Body, seq: u8, addr: u8| {
        let mut buf = [0u8; lane::MAX_FRAME];
        let n = lane::encode(&Frame { addr, seq, body }, &mut buf).unwrap();
        buf[..n].to_vec()
    };
    // Queued before the port is even opened: one whose time has passed, one still due.
    let stale = encode(Body::Barrier { open: true }, 1, 1);
    let due = encode(Body::Barrier { open: false }, 2, 1);
    out_tx
        .send(Outgoing {
            bytes: stale,
            until: Instant::now().checked_sub(Duration::from_secs(1)).unwrap(),
        })
        .await
        .unwrap();
    out_tx
        .send(Outgoing {
            bytes: due.clone(),
            until: Instant::now() + Duration::from_secs(600),
        })
        .await
        .unwrap();
    tokio::spawn(transport::serve_serial(
        link,
        115_200,
        Protocol::Lane,
        "node-1".into(),
        tx,
        stats.clone(),
        Some(out_rx),
        rx,
    ));
    let mut got = vec![0u8; due.len()];
    timeout(Duration::from_secs(10), master.read_exact(&mut got))
        .await
        .expect("the command written")
        .unwrap();
    assert_eq!(got, due, "only the command still due, byte for byte");
    assert_eq!(Stats::get(&stats.expired_commands), 1);
    assert_eq!(Stats::get(&stats.commands), 1);
    // The line still reads what the node says back.
    let ack = encode(Body::Ack { seq: 2, result: 0 }, 7, 1);
    master.write_all(&ack).await.unwrap();
    let b = timeout(Duration::from_secs(5), batches.recv())
        .await
        .unwrap()
        .unwrap();
    match &b.readings[..] {
        [Reading::Lane(f)] => assert_eq!(f.body, Body::Ack { seq: 2, result: 0 }),
        other => panic!("{other:?}"),
    }
}
