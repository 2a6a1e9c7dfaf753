//! Every committed scenario folder holds exactly what the simulator writes for it
//! (`ACSGD_REGENERATE=1 cargo test -p acsgd-hil --test hil traces` rewrites them), and every
//! folder has a test in `tests/hil/scenarios.rs`.

use acsgd_hil::scenarios;

#[test]
fn scenario_folders_match_the_simulator() {
    let root = acsgd_hil::scenarios_dir();
    let regenerate = std::env::var_os("ACSGD_REGENERATE").is_some();
    for g in scenarios::all() {
        let dir = root.join(g.name);
        for (file, want) in [
            ("config.toml", &g.config),
            ("trace.tsv", &g.trace),
            ("expect.toml", &g.expect),
        ] {
            let path = dir.join(file);
            if regenerate {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, want).unwrap();
            }
            let have = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (ACSGD_REGENERATE=1 writes it)", path.display())
            });
            assert!(
                &have == want,
                "{} differs from the simulator's output",
                path.display()
            );
        }
        let scenario = acsgd_hil::Scenario::load(&dir).unwrap();
        let e = &scenario.expect;
        assert!(
            !e.passage.is_empty() || e.positions_min > 0,
            "{} expects nothing",
            g.name
        );
    }
    let tests = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/hil/scenarios.rs"
    ))
    .unwrap();
    for entry in std::fs::read_dir(&root).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            tests.contains(&format!("scenario!({name});")),
            "no test runs scenario {name}"
        );
    }
}
