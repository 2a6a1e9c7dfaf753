//! Golden traces: raw scenarios rendered by the simulator, and the exact frames the node must
//! send for them, byte for byte (`tests/golden/*.frames`, one frame in hex per line with the
//! tick it was sent at). A change to any estimator shows up here as a diff to review; after a
//! deliberate one, `UPDATE_GOLDEN=1 cargo test -p lane-node-sim --test golden` rewrites them.

use std::fmt::Write as _;
use std::path::Path;

use acsgd_drivers::lane;
use lane_node_core::Config;

fn golden(name: &str) {
    let dir = std::env::temp_dir().join(format!("lane-node-golden-{}-{name}", std::process::id()));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_lane-node-sim"))
        .arg(name)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let cfg = Config::parse(&std::fs::read_to_string(dir.join("node.cfg")).unwrap()).unwrap();
    let raw = std::fs::read(dir.join("raw.bin")).unwrap();
    let mut got = String::new();
    let mut buf = [0u8; lane::MAX_FRAME];
    for s in lane_node_sim::replay(cfg, &raw, &[]).unwrap() {
        let n = lane::encode(&s.frame, &mut buf).unwrap();
        let hex: String = buf[..n].iter().map(|b| format!("{b:02x}")).collect();
        writeln!(got, "{} {hex}", s.tick).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.frames"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        got == want,
        "frames for {name} differ from {}:\n{got}",
        path.display()
    );
}

#[test]
fn a_clean_truck_gives_its_golden_frames() {
    golden("clean");
}

#[test]
fn an_overweight_axle_gives_its_golden_frames() {
    golden("overweight");
}

#[test]
fn a_loop_fault_gives_its_golden_frames() {
    golden("loop-fault");
}
