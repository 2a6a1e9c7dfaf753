//! The uplink over TLS with a client certificate, and over MQTT 5, against a real mosquitto.
//! Certificates are made per run with rcgen: a CA, a server certificate for 127.0.0.1 and a
//! client certificate, as a customs PKI would issue them.

use std::path::Path;

use crate::common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::json;

struct Pki {
    ca: String,
    client_cert: String,
    client_key: String,
}

fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test customs CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issue = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        (p.signed_by(&key, &ca, &ca_key).unwrap(), key)
    };
    let (server, server_key) = issue(vec!["127.0.0.1".into(), "localhost".into()], "broker");
    let (client, client_key) = issue(vec![], "acsgd-test-post");
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p.display().to_string()
    };
    std::fs::create_dir_all(dir).unwrap();
    let ca_path = write("ca.pem", ca.pem());
    write("server.pem", server.pem());
    write("server.key", server_key.serialize_pem());
    Pki {
        ca: ca_path,
        client_cert: write("client.pem", client.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
    }
}

/// Mosquitto configuration for a TLS listener on `port` that requires a client certificate
/// signed by the test CA.
fn tls_listener(port: u16, pki_dir: &Path, extra: &str) -> String {
    format!(
        "listener {port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
         require_certificate true\n{extra}",
        d = pki_dir.display()
    )
}

#[test]
fn events_flow_over_tls_with_a_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki_dir = tmp.path().join("pki");
    let pki = pki(&pki_dir);
    // Central listens in the clear on one port; the appliance must use the TLS port.
    let tls_port = free_port().unwrap();
    let broker = Mosquitto::start_with(
        &tmp.path().join("broker"),
        free_port().unwrap(),
        &tls_listener(tls_port, &pki_dir, "use_identity_as_username true\n"),
    )
    .unwrap();
    let central = Central::connect(broker.port(), "central-tls");
    let tls = format!(
        "ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"",
        pki.ca, pki.client_cert, pki.client_key
    );
    let setup = Setup::with(
        tmp.path(),
        &format!("mqtts://127.0.0.1:{tls_port}"),
        "",
        &tls,
        "",
    );
    let _app = setup.start();
    let mut answers = Vec::new();
    setup
        .ingest()
        .send(&[("alert", json!({"over": "tls"}))], &mut answers)
        .unwrap();
    let Answer::Ok { id, .. } = &answers[0] else {
        panic!("{answers:?}")
    };
    central.wait_for(20, "the event sent over TLS", |ev| {
        ev.iter().any(|e| e["id"] == id.as_str())
    });
}

#[test]
fn a_broker_that_wants_a_client_certificate_refuses_an_appliance_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let pki_dir = tmp.path().join("pki");
    let pki = pki(&pki_dir);
    let tls_port = free_port().unwrap();
    let _broker = Mosquitto::start_with(
        &tmp.path().join("broker"),
        free_port().unwrap(),
        &tls_listener(tls_port, &pki_dir, ""),
    )
    .unwrap();
    let setup = Setup::with(
        tmp.path(),
        &format!("mqtts://127.0.0.1:{tls_port}"),
        "",
        &format!("ca_file = \"{}\"", pki.ca),
        "",
    );
    let mut app = setup.start();
    // Its first attempt refused: waited for in its status, not by the clock.
    let st = wait_for_stat(&setup, |st| st["uplink"]["last_error"].is_string());
    assert_eq!(st["uplink"]["connected"], false, "{st}");
    assert!(app.is_running());
}

#[test]
fn events_flow_over_mqtt_5() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&tmp.path().join("broker")).unwrap();
    let central = Central::connect(broker.port(), "central-v5");
    let setup = Setup::new(tmp.path(), broker.port(), "protocol = \"5\"", "");
    let _app = setup.start();
    let mut answers = Vec::new();
    let batch: Vec<_> = (0..500).map(|i| ("alert", json!({"n": i}))).collect();
    setup.ingest().send(&batch, &mut answers).unwrap();
    assert!(
        answers.iter().all(|a| matches!(a, Answer::Ok { .. })),
        "{answers:?}"
    );
    let acked = acked_ids(&answers);
    let got = central.wait_for(20, "500 events over MQTT 5", |ev| ev.len() >= 501);
    check_delivery(&got, &acked);
    let status: Vec<_> = central
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.topic.ends_with("/status"))
        .map(|r| r.json())
        .collect();
    assert_eq!(status.last().unwrap()["state"], "online");
}
