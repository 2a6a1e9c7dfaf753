//! Central on a 3-node NATS cluster (JetStream, an MQTT listener on every node, each post with
//! its own account), PostgreSQL behind it, two central workers sharing the posts (one by its
//! share of the post ids' hash, the other by a list), and three
//! real `acsgd` appliances on different nodes: a NATS node and a central worker killed with
//! SIGKILL under load, and every event a post was acknowledged for ends in the database with
//! no gap; declarations are still served after the node comes back; a post can neither read
//! another post's declarations nor publish as another post.

use std::process::Command;
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};

const POSTS: [&str; 3] = ["korgas", "kordai", "gani-muratbaev"];
use serde_json::json;

use crate::cluster::{
    appliance, appliance_tls, post_key, secret, start_worker, worker_config, Auth, Cluster, Pki,
    Take,
};
use crate::common::{
    alerts, api, central_bin, cli, free_port, outbox_stat, ready, start, wait, Pg,
};

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
    let mut cluster = Cluster::start(d, &POSTS);
    let pg = Pg::start();
    let db = pg.url();
    let (http_a, http_b) = (free_port(), free_port());
    // Worker A takes share 1 of 2 (Korgas and Gani Muratbaev, by the hash of their ids),
    // acknowledging Kordai's messages unread; worker B takes Kordai, share 2's one post here,
    // by the list: both ways of sharing the posts under one test.
    let a_cfg = worker_config(
        d,
        "worker-a",
        &db,
        cluster.mqtt(0),
        http_a,
        "central-a",
        Take::Share("1/2"),
        Auth::Password,
    );
    let b_cfg = worker_config(
        d,
        "worker-b",
        &db,
        cluster.mqtt(1),
        http_b,
        "central-b",
        Take::Posts(&["kordai"]),
        Auth::Password,
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
        let key = post_key(d, post);
        let (ok, text) = cli(&a_cfg, &["add", post, "--name", post, "--key", &key]);
        assert!(ok, "{text}");
    }
    let mut worker_a = start_worker(&a_cfg, &a_log, http_a);
    let mut worker_b = start_worker(&b_cfg, &b_log, http_b);
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
        Take::Posts(&["kordai"]),
        Auth::Password,
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
    // Worker A left Kordai's messages to B: it acknowledged them unread (had it not, its
    // session would have stalled at `max_ack_pending` and Korgas would not be complete).
    let totals = std::fs::read_to_string(&a_log).unwrap();
    let line = totals
        .lines()
        .find(|l| l.contains("ingest totals"))
        .unwrap_or_else(|| panic!("no totals in worker A's log:\n{totals}"));
    let count = |key: &str| -> u64 {
        let at = line
            .find(&format!("{key}="))
            .unwrap_or_else(|| panic!("{key}: {line}"));
        line[at + key.len() + 1..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{key}: {line}"))
    };
    assert!(count("other_shares") >= 400, "{line}");
    assert!(count("accepted") >= 800, "{line}");
    assert_eq!(count("quarantined"), 0, "{line}");
}

/// An MQTT client over TLS to `port` with `cert` (`None`: no client certificate): whether the
/// broker let it in, and the SUBACK codes for `filter`.
fn tls_probe(
    pki: &Pki,
    port: u16,
    cert: Option<&str>,
    filter: &str,
) -> Option<Vec<SubscribeReasonCode>> {
    let mut o = MqttOptions::new(format!("probe-{}", free_port()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca: std::fs::read(pki.file("ca.pem")).unwrap(),
            alpn: None,
            client_auth: cert.map(|c| {
                (
                    std::fs::read(pki.file(&format!("{c}.pem"))).unwrap(),
                    std::fs::read(pki.file(&format!("{c}.key"))).unwrap(),
                )
            }),
        },
    ));
    let (client, mut conn) = Client::new(o, 10);
    client.subscribe(filter, QoS::AtLeastOnce).unwrap();
    // Generous: it ends at the broker's first answer; only a broker that never answers waits
    // it out (a loaded machine can be slow to make a TLS handshake).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut connected = false;
    while std::time::Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => connected = true,
            Ok(Ok(Event::Incoming(Packet::SubAck(a)))) => {
                let _ = client.disconnect();
                return Some(a.return_codes);
            }
            // Refused: the TLS handshake or the CONNECT; it would only be tried again.
            Ok(Err(_)) if !connected => return None,
            _ => {}
        }
    }
    panic!("no answer from the broker (connected: {connected})");
}

#[test]
fn posts_and_central_speak_tls_to_the_cluster_each_known_by_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new(d, &["korgas", "kordai", "central"]);
    let cluster = Cluster::start_tls(d, &["korgas", "kordai"], &pki);
    let db = format!("sqlite:{}", d.join("central.db").display());
    let http = free_port();
    let cfg = worker_config(
        d,
        "central",
        &db,
        cluster.mqtt(0),
        http,
        "central",
        Take::Every,
        Auth::Certificate(&pki),
    );
    let key = post_key(d, "korgas");
    let (ok, text) = cli(&cfg, &["add", "korgas", "--name", "Korgas", "--key", &key]);
    assert!(ok, "{text}");
    let mut central = start_worker(&cfg, &d.join("central.log"), http);

    // Korgas's box over TLS with its certificate, to another node: its events reach central.
    let (_korgas, ingest) = appliance_tls(d, "korgas", cluster.mqtt(1), &pki);
    alerts(ingest, 20);
    let (last, _) = wait(120, "Korgas's outbox drained", || {
        let (last, backlog) = outbox_stat(&d.join("korgas"));
        (last >= 20 && backlog == 0).then_some((last, backlog))
    });
    let got = wait(120, "central has all of Korgas", || {
        progress(http, "korgas").filter(|p| p.0 >= last)
    });
    assert_eq!(got, (last, last, 0));

    // The certificate is the account: Korgas's may not read Kordai's declarations...
    let port = cluster.mqtt(2);
    assert_eq!(
        tls_probe(&pki, port, Some("korgas"), "acsgd/v1/kordai/in/#"),
        Some(vec![SubscribeReasonCode::Failure])
    );
    // ...but its own `in/`;
    assert_eq!(
        tls_probe(&pki, port, Some("korgas"), "acsgd/v1/korgas/in/#"),
        Some(vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)])
    );
    // no certificate, or one of another CA (with Korgas's name in it), gets nothing.
    assert_eq!(tls_probe(&pki, port, None, "acsgd/v1/korgas/in/#"), None);
    assert_eq!(
        tls_probe(&pki, port, Some("stranger"), "acsgd/v1/korgas/in/#"),
        None
    );
    central.terminate();
}
