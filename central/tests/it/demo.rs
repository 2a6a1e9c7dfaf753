//! Central's demo (`central/demo/corridor`) as a test: the script itself, run with the real
//! `acsgd-central`, a real mosquitto and two real `acsgd` appliances playing the committed
//! traces; every truck ends in the state its story in `acsgd_testkit::corridor` says. And the
//! committed demo files are exactly what that generator writes.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use acsgd_central::store::{Store, Table};
use acsgd_central::tracking::{Flag, State};
use acsgd_testkit::corridor::{self, POSTS};
use acsgd_testkit::simulate;

use crate::common::{acsgd_bin, central_bin, free_port, outbox_stat};

fn demo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo")
}

/// The demo's files as the generator writes them: (name, text).
fn generated() -> Vec<(String, String)> {
    let c = corridor::corridor();
    let lanes = ["1".to_string(), "2".to_string()];
    let mut files = vec![
        ("korgas.tsv".to_string(), c.korgas),
        ("kordai.tsv".to_string(), c.kordai),
    ];
    let mut decls = String::new();
    for d in &c.declarations {
        decls.push_str(&d.to_string());
        decls.push('\n');
    }
    files.push(("declarations.jsonl".into(), decls));
    for (id, _, lat, lon) in POSTS {
        let text = simulate::config(id, &lanes, "mqtt://127.0.0.1:1883", "/var/lib/acsgd").replace(
            &format!(
                "post_location = [{}, {}]",
                simulate::POST[0],
                simulate::POST[1]
            ),
            &format!("post_location = [{lat}, {lon}]"),
        );
        files.push((format!("{id}.toml"), text));
    }
    files
}

#[test]
fn the_demo_files_are_what_the_generator_writes() {
    for (name, want) in generated() {
        let path = demo_dir().join(&name);
        if std::env::var_os("ACSGD_REGENERATE").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (regenerate with ACSGD_REGENERATE=1)",
                path.display()
            )
        });
        assert!(
            have == want,
            "{} differs from acsgd_testkit::corridor; regenerate with ACSGD_REGENERATE=1 \
             cargo nextest run -p acsgd-central demo_files",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_end_to_end_and_every_truck_ends_as_its_story_says() {
    let acsgd = acsgd_bin();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let ports = [free_port(), free_port(), free_port(), free_port()];
    // The demo exactly as .ci/demo-central runs it, but for the binaries, the ports and the
    // board staying up afterwards.
    let out = Command::new(demo_dir().join("corridor"))
        .arg("--dir")
        .arg(&work)
        .args(["--linger", "0"])
        .args(["--broker-port", &ports[0].to_string()])
        .args(["--board-port", &ports[1].to_string()])
        .args(["--screen-ports", &format!("{},{}", ports[2], ports[3])])
        .env("ACSGD", &acsgd)
        .env("ACSGD_CENTRAL", central_bin())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let logs = || {
        ["central", "korgas", "kordai"]
            .iter()
            .map(|n| {
                let log =
                    std::fs::read_to_string(work.join(format!("{n}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {n}.log (last lines)\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        out.status.success(),
        "the demo failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );

    let store = Store::open(&format!("sqlite:{}", work.join("central.db").display()))
        .await
        .unwrap();
    let c = corridor::corridor();
    for s in &c.stories {
        let t = store
            .transit(&s.truck.mrn)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} was never declared", s.truck.mrn));
        let flags: Vec<&str> = t.flags.iter().map(|f| f.as_str()).collect();
        assert_eq!(
            (t.state, flags.clone()),
            (State::parse(s.state).unwrap(), s.flags.to_vec()),
            "{} ({}): {:?}\n{stdout}\n{}",
            s.truck.mrn,
            s.what,
            store.transit_log(&s.truck.mrn).await.unwrap(),
            logs()
        );
    }
    // The diverted truck's passage at Kordai named no MRN (Kordai was never sent its
    // declaration): central found it by the plate, and raised it.
    let diverted = c.stories.iter().find(|s| s.state == "diverted").unwrap();
    let seen = store.events_of(&diverted.truck.mrn).await.unwrap();
    let at_kordai = seen
        .iter()
        .find(|(_, post, kind, _)| post == "kordai" && kind == "passage")
        .expect("the passage at Kordai is on the diverted truck's timeline");
    assert!(at_kordai.3.get("mrn").is_none(), "{:?}", at_kordai.3);
    let alerts = store.alerts(true).await.unwrap();
    let open = |kind: &str, mrn: &str| {
        alerts
            .iter()
            .any(|a| a.kind == kind && a.mrn.as_deref() == Some(mrn))
    };
    assert!(open("diverted", &diverted.truck.mrn), "{alerts:?}");
    let overdue = c.stories.iter().find(|s| s.state == "overdue").unwrap();
    assert!(open("overdue", &overdue.truck.mrn), "{alerts:?}");
    let late = c
        .stories
        .iter()
        .find(|s| s.flags.contains(&"late_arrival"))
        .unwrap();
    assert!(!open("overdue", &late.truck.mrn), "{alerts:?}");
    assert!(store
        .transit(&late.truck.mrn)
        .await
        .unwrap()
        .unwrap()
        .flags
        .contains(&Flag::LateArrival));

    // Every event both appliances made is in the journal, once; nothing was refused.
    let made = outbox_stat(&work.join("korgas")).0 + outbox_stat(&work.join("kordai")).0;
    assert_eq!(store.count(Table::Journal).await.unwrap(), made);
    assert_eq!(store.count(Table::Quarantine).await.unwrap(), 0);
    assert!(
        stdout.contains("corridor: where each transit ended"),
        "{stdout}"
    );
}
