//! `acsgd diagnose` with the real binary: the bundle of a running appliance unpacked by the
//! system's `tar`, holding the live status and the configuration's summary and none of its
//! secrets; and the bundle of a box whose configuration does not load, which is when a
//! technician needs it most.

use std::path::Path;
use std::process::Command;

use crate::common::*;

const BROKER_PASSWORD: &str = "s3cret-broker-pass";
const INGEST_TOKEN: &str = "t0ken-for-the-lane-controller-0123";

fn diagnose(args: &[&str], out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_acsgd"))
        .arg("diagnose")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// Unpacks `bundle` with the system's tar into `into`; the folder it made.
fn unpack(bundle: &Path, into: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(into).unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(bundle)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(st.success(), "tar refused the bundle");
    let mut dirs: Vec<_> = std::fs::read_dir(into).unwrap().flatten().collect();
    assert_eq!(dirs.len(), 1, "one folder in the bundle");
    dirs.pop().unwrap().path()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn a_running_boxs_bundle_has_its_status_and_summary_and_none_of_its_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(
        tmp.path(),
        free_port().unwrap(),
        &format!("username = \"edge\"\npassword = \"{BROKER_PASSWORD}\""),
        "",
    );
    setup.add(&format!(
        "[[ingest.clients]]\nname = \"lane-controller\"\ntoken = \"{INGEST_TOKEN}\"\ntypes = [\"alert\"]\n"
    ));
    let mut app = setup.start();
    // The status file is written every second once started.
    let status = setup.data_dir.join("status.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !status.exists() {
        assert!(std::time::Instant::now() < deadline, "{}", setup.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let bundle = tmp.path().join("acsgd-diagnose-test.tar.gz");
    let out = diagnose(&["--config", setup.config.to_str().unwrap()], &bundle);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = unpack(&bundle, &tmp.path().join("unpacked"));
    assert_eq!(dir.file_name().unwrap(), "acsgd-diagnose-test");

    let about = read(&dir, "about.txt");
    assert!(about.contains(env!("CARGO_PKG_VERSION")), "{about}");
    assert!(about.contains(&format!("post         {POST}")), "{about}");
    let config: serde_json::Value = serde_json::from_str(&read(&dir, "config.json")).unwrap();
    assert_eq!(config["post"], POST);
    let status: serde_json::Value = serde_json::from_str(&read(&dir, "status.json")).unwrap();
    assert_eq!(status["source"], "live");
    assert!(read(&dir, "status.txt").contains("running service"));
    assert!(read(&dir, "data-dir.txt").contains("status.json"));
    for part in [
        "journal.txt",
        "systemd.txt",
        "devices.txt",
        "packages.txt",
        "disks.txt",
        "slots.txt",
        "boot.txt",
    ] {
        assert!(dir.join(part).exists(), "{part} missing");
    }
    // Secrets from the configuration appear nowhere, and no store file was copied.
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        assert!(
            !text.contains(BROKER_PASSWORD),
            "{:?} holds the broker password",
            e.path()
        );
        assert!(
            !text.contains(INGEST_TOKEN),
            "{:?} holds the ingest token",
            e.path()
        );
    }
    assert!(app.terminate().success());
}

#[test]
fn a_box_whose_configuration_does_not_load_still_gets_its_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("acsgd.toml");
    std::fs::write(&config, "post = \"kordai\"\n[uplink]\nbroker = \"mqtt://x:1883\"\nwindow = 0\n[storage]\ndata_dir = \"/nonexistent\"\n").unwrap();
    let bundle = tmp.path().join("b.tar.gz");
    let out = diagnose(
        &[
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            tmp.path().join("no-such-dir").to_str().unwrap(),
        ],
        &bundle,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = unpack(&bundle, &tmp.path().join("unpacked"));
    let err = read(&dir, "config-error.txt");
    assert!(
        err.contains(&format!("config {}:4: uplink.window", config.display())),
        "{err}"
    );
    assert!(!dir.join("config.json").exists());
    assert!(read(&dir, "status.txt").starts_with("cannot read"));
    assert!(read(&dir, "about.txt").contains("post         (unknown)"));
}

#[test]
fn a_bundle_that_cannot_be_written_is_one_line_and_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let out = diagnose(&[], &tmp.path().join("missing-dir/b.tar.gz"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("acsgd: diagnose: cannot write "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
