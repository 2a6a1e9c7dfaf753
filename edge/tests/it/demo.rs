//! `acsgd demo`, the README's first command, end to end: its own mosquitto, the bundled trace
//! through drivers and fusion, forwarding, and the stand-in for central checking every
//! signature.

use std::process::Command;

#[test]
fn demo_forwards_signed_passages_and_positions() {
    let out = Command::new(env!("CARGO_BIN_EXE_acsgd"))
        .args(["demo", "--duration", "25", "--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = stdout
        .lines()
        .find(|l| l.starts_with("demo: done. central received "))
        .unwrap_or_else(|| panic!("no closing line:\n{stdout}"));
    let numbers: Vec<u64> = done
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let (received, valid, bad, dups) = (numbers[0], numbers[1], numbers[2], numbers[3]);
    assert!(received >= 100, "{done}");
    assert_eq!((valid, bad, dups), (received, 0, 0), "{done}");
    // Passages were made by fusion from the trace and forwarded.
    let last = stdout.lines().rfind(|l| l.contains(" passages ")).unwrap();
    let passages: u64 = last
        .split(" passages ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(passages >= 1, "{last}");
    assert!(stdout.contains("playing the bundled trace"), "{stdout}");
}
