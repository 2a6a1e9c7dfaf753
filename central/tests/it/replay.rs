//! Both sides of a resend request: real `acsgd` appliances publish events central never saw
//! (it had not subscribed yet); central notices the seq gap, asks on `in/replay`, and the
//! appliance resends what it kept, or says what it no longer has.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};

use acsgd::mosquitto::Mosquitto;
use acsgd_contract::envelope::{to_hex, Signer};
use acsgd_testkit::central::Central as Watcher;
use acsgd_testkit::process::Process;
use serde_json::{json, Value};

use crate::common::{
    acsgd_bin, alerts, appliance_config, central_bin, free_port, http, run_appliance, wait,
};

const TOKEN: &str = "test-token-0123456789";

struct Appliance {
    _process: Process,
    ingest_port: u16,
    public_key: String,
}

fn appliance(dir: &Path, post: &str, broker: u16, storage_extra: &str) -> Appliance {
    let (config, ingest_port) = appliance_config(dir, post, broker, "", storage_extra);
    // Before its first start the box has no key, and says so.
    let out = Command::new(acsgd_bin())
        .args(["key", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no signing key in"));
    let process = run_appliance(dir, post, &config, ingest_port);
    // What the technician reads out to central: the key the service made at its first start.
    let out = Command::new(acsgd_bin())
        .args(["key", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public_key = text
        .lines()
        .find_map(|l| l.strip_prefix("key  "))
        .expect("a key line")
        .to_string();
    assert!(
        text.contains(&format!(
            "acsgd-central post --config central.toml add {post} --name NAME --key {public_key}"
        )),
        "{text}"
    );
    // It is the key the service signs with.
    let key = Signer::load_or_create(&dir.join(post), post).unwrap();
    assert_eq!(public_key, to_hex(key.verifying_key().as_bytes()));
    Appliance {
        _process: process,
        ingest_port,
        public_key,
    }
}

fn progress(port: u16, post: &str) -> Option<Value> {
    let (s, body) = http(port, "GET", "/api/posts", Some(TOKEN), None);
    if s != 200 {
        return None;
    }
    let posts: Value = serde_json::from_str(&body).ok()?;
    posts
        .as_array()?
        .iter()
        .find(|p| p["post"]["id"] == post)
        .map(|p| p["progress"].clone())
}

#[test]
fn an_appliance_resends_what_central_missed_and_names_what_it_no_longer_has() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker")).unwrap();
    // korgas keeps delivered events (the default, 72 h); kordai keeps none.
    let korgas = appliance(dir.path(), "korgas", broker.port(), "");
    let kordai = appliance(dir.path(), "kordai", broker.port(), "keep_delivered_h = 0");

    // Central has never subscribed: what the posts publish now reaches no central session.
    let watch_korgas = Watcher::subscribe(broker.port(), "watch-korgas", "korgas").unwrap();
    let watch_kordai = Watcher::subscribe(broker.port(), "watch-kordai", "kordai").unwrap();
    let missed_korgas = alerts(korgas.ingest_port, 20);
    let missed_kordai = alerts(kordai.ingest_port, 20);
    for (w, seqs) in [
        (&watch_korgas, &missed_korgas),
        (&watch_kordai, &missed_kordai),
    ] {
        let last = *seqs.last().unwrap();
        w.wait_for(60, "the missed alerts at the broker", |ev| {
            ev.iter().any(|e| e["seq"].as_u64() == Some(last))
        });
    }

    let http_port = free_port();
    let config = dir.path().join("central.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite:{}\"\n[broker]\nhost = \"127.0.0.1\"\nport = {}\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n[http.tokens]\nop = \"{TOKEN}\"\n\
             [tracking]\nscan_every_s = 1\ngap_grace_s = 1\n",
            dir.path().join("central.db").display(),
            broker.port()
        ),
    )
    .unwrap();
    for (post, a) in [("korgas", &korgas), ("kordai", &kordai)] {
        let out = Command::new(central_bin())
            .args(["post", "--config"])
            .arg(&config)
            .args(["add", post, "--name", post, "--key", &a.public_key])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = std::fs::File::create(dir.path().join("central.log")).unwrap();
    let _central = Process::spawn(
        Command::new(central_bin())
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
    .unwrap();
    wait(60, "central's API", || {
        TcpStream::connect(("127.0.0.1", http_port))
            .ok()
            .map(|_| ())
    });
    // Central is subscribed once a post's link shows; then one more alert each reveals the gap.
    for post in ["korgas", "kordai"] {
        wait(60, &format!("{post}'s link"), || {
            progress(http_port, post)
                .filter(|p| !p.is_null())
                .map(|_| ())
        });
    }
    let after_korgas = alerts(korgas.ingest_port, 1)[0];
    let after_kordai = alerts(kordai.ingest_port, 1)[0];

    // korgas resends what central missed: every seq up to the new one arrives, none lost.
    let p = wait(120, "korgas's gap filled by its resend", || {
        progress(http_port, "korgas").filter(|p| {
            p["gaps"] == json!([]) && p["contiguous_seq"].as_u64() >= Some(after_korgas)
        })
    });
    assert_eq!(p["contiguous_seq"], p["highest_seq"], "{p}");

    // kordai kept nothing: it says so, and central stops waiting and tells the operator.
    wait(120, "kordai's gap closed as lost", || {
        progress(http_port, "kordai")
            .filter(|p| p["gaps"] == json!([]) && p["contiguous_seq"].as_u64() > Some(after_kordai))
    });
    let (_, alerts_body) = http(http_port, "GET", "/api/alerts", Some(TOKEN), None);
    let alerts: Vec<Value> = serde_json::from_str(&alerts_body).unwrap();
    let lost: Vec<&Value> = alerts.iter().filter(|a| a["kind"] == "lost").collect();
    assert_eq!(lost.len(), 1, "{alerts_body}");
    assert_eq!(lost[0]["post"], "kordai");
    // "kordai no longer has seq A..B: …" covers every alert central missed.
    let text = lost[0]["text"].as_str().unwrap();
    let range = text
        .split("seq ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap();
    let (a, b) = range.split_once("..").unwrap();
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    assert!(
        a <= missed_kordai[0] && b >= *missed_kordai.last().unwrap() && b < after_kordai,
        "{text}"
    );
    let gap = alerts
        .iter()
        .find(|a| a["id"] == "gap:korgas")
        .expect("a gap alert for korgas");
    assert!(gap["cleared_ms"].is_i64(), "cleared once filled: {gap}");
}
