//! The committed simulated traces are exactly what the simulator writes for their seeds, so
//! they can be regenerated after a change to the simulator (`ACSGD_REGENERATE=1 cargo test
//! -p acsgd --test simulated_traces`) and never drift from it silently.

use std::path::PathBuf;

use acsgd_testkit::simulate::{self, Options};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("traces")
}

fn check(name: &str, want: &str) {
    let path = dir().join(name);
    if std::env::var_os("ACSGD_REGENERATE").is_some() {
        std::fs::write(&path, want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with ACSGD_REGENERATE=1)",
            path.display()
        )
    });
    assert!(
        have == want,
        "{} differs from the simulator's output; regenerate with ACSGD_REGENERATE=1",
        path.display()
    );
}

#[test]
fn demo_trace_and_config_match_the_simulator() {
    let o = Options::demo();
    check("demo.tsv", &simulate::session(&o).1);
    check(
        "demo.toml",
        &simulate::config(
            "korgas",
            &o.lanes,
            "mqtt://127.0.0.1:1883",
            "/var/lib/acsgd",
        ),
    );
}
