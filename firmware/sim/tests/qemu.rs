//! The real firmware, cross-built for the Cortex-M4F, run in QEMU's mps2-an386 on raw
//! scenarios: it must keep real time (no sample dropped), exit cleanly, and send on UART0
//! exactly the frames the same logic sends on the host.
//!
//! Needs `qemu-system-arm` and the `thumbv7em-none-eabihf` target (`.ci/test` installs both).

use std::path::Path;
use std::process::Command;

use acsgd_drivers::lane::{self, Body, Frame, Scan};
use lane_node_core::raw::{Header, HEADER_LEN};
use lane_node_core::Config;
use lane_node_sim::board;

/// Writes a scenario with the simulator's own binary, as a harness would.
fn scenario(name: &str, dir: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_lane-node-sim"))
        .arg(name)
        .arg(dir)
        .status()
        .expect("lane-node-sim runs");
    assert!(status.success());
}

/// Runs the firmware in QEMU in `dir` (where `node.cfg` and `raw.bin` are) and returns its
/// exit status, its semihosting output and the frames it sent on UART0.
fn qemu(dir: &Path) -> (i32, String, Vec<Frame>) {
    let child = board::start(dir, board::Uart0::File(dir.join("uart0.bin")), 300)
        .unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().expect("QEMU ran");
    let wire = std::fs::read(dir.join("uart0.bin")).expect("QEMU wrote UART0");
    let mut frames = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        match lane::scan(&wire[at..]) {
            Scan::Frame(f, n) => {
                frames.push(f);
                at += n;
            }
            Scan::Skip(_, e) => panic!("bad bytes on UART0 at {at}: {e}"),
            Scan::Incomplete => panic!("UART0 ends inside a frame"),
        }
    }
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text, frames)
}

fn host(dir: &Path) -> Vec<Frame> {
    let cfg = Config::parse(&std::fs::read_to_string(dir.join("node.cfg")).unwrap()).unwrap();
    let raw = std::fs::read(dir.join("raw.bin")).unwrap();
    lane_node_sim::replay(cfg, &raw, &[])
        .unwrap()
        .into_iter()
        .map(|s| s.frame)
        .collect()
}

fn same_as_host(name: &str) -> Vec<Frame> {
    let scratch = scratch_dir(name);
    let dir = scratch.path();
    scenario(name, dir);
    let (code, text, frames) = qemu(dir);
    assert_eq!(code, 0, "QEMU: {text}");
    let host = host(dir);
    // The board adds one Status at the end of the trace with the final counts.
    let (last, rest) = frames.split_last().expect("frames on UART0");
    assert_eq!(rest, &host[..], "{text}");
    let raw = std::fs::read(dir.join("raw.bin")).unwrap();
    let h = Header::parse(&raw).unwrap();
    let samples = ((raw.len() - HEADER_LEN) / h.block_len() * h.gate_ticks as usize) as u64;
    assert!(
        matches!(last.body, Body::Status { samples: s, dropped: 0, .. } if s as u64 == samples),
        "{last:?} after {samples} samples: {text}"
    );
    assert!(text.contains(" 0 dropped"), "{text}");
    host
}

/// A fresh directory for one test's scenario and UART capture, removed with it.
fn scratch_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("lane-node-qemu-{name}-"))
        .tempdir()
        .unwrap()
}

#[test]
fn a_clean_truck_in_qemu_gives_the_host_frames_in_real_time() {
    let frames = same_as_host("clean");
    assert!(
        frames
            .iter()
            .any(|f| matches!(f.body, Body::Vehicle { error: 0, .. })),
        "{frames:?}"
    );
}

#[test]
fn a_loop_fault_in_qemu_gives_the_host_frames() {
    let frames = same_as_host("loop-fault");
    assert!(frames
        .iter()
        .any(|f| matches!(f.body, Body::Health { faults, .. } if faults != 0)));
}
