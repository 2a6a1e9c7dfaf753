//! `acsgd replay` end to end: simulated sessions (whose ground truth we know truck by truck)
//! through the real binary or the library's replayer, and every event checked against the
//! JSON Schemas in `edge/schemas/`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use acsgd::config::Config;
use acsgd::replay::Replayer;
use acsgd_testkit::simulate::{self, Options, Special, Truck};
use serde_json::Value;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn replay_binary(config: &Path, trace: &Path) -> (Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_acsgd"))
        .arg("replay")
        .arg("--config")
        .arg(config)
        .arg(trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect();
    (events, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn replay_lib(o: &Options) -> (Vec<Truck>, Vec<Value>) {
    let (trucks, trace) = simulate::session(o);
    let toml = simulate::config("korgas", &o.lanes, "mqtt://127.0.0.1:1883", "/tmp/unused");
    let config = Config::parse(Path::new("sim.toml"), &toml).unwrap();
    let mut out = Vec::new();
    let mut r = Replayer::new(config, &mut out, true).unwrap();
    for (i, l) in trace.lines().enumerate() {
        r.line(l, i as u64 + 1).unwrap();
    }
    let s = r.finish().unwrap();
    assert!(s.bad.is_empty(), "{:?}", s.first_problems);
    let events = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (trucks, events)
}

/// The rule each kind of simulated finding must fail.
fn expected_rule(s: Special) -> Option<&'static str> {
    Some(match s {
        Special::None | Special::Norm => return None,
        Special::OverweightAxle => "axle_load",
        Special::UnderDeclared => "declared_mass",
        Special::GammaSource => "radiation_gamma",
        Special::NeutronSource => "radiation_neutron",
        Special::SealTampered => "seal_tamper",
        Special::SealSilent => "seal_silent",
        Special::RouteDeviation => "route_deviation",
        Special::PlateUnread => "plate_unread",
        Special::NoDeclaration => "no_declaration",
        Special::Watchlisted => "watchlist",
    })
}

/// Each truck has exactly one passage on its lane, starting when it reached the loop, with
/// the verdict its finding calls for and nothing else.
fn check_ground_truth(o: &Options, trucks: &[Truck], events: &[Value]) {
    let start_ms = o.start_unix * 1000;
    let passages: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "passage")
        .map(|e| &e["body"])
        .collect();
    assert_eq!(passages.len(), trucks.len(), "one passage per truck");
    let mut by_start: HashMap<(String, i64), &Value> = HashMap::new();
    for p in &passages {
        let ms = p["id"]
            .as_str()
            .unwrap()
            .rsplit('-')
            .next()
            .unwrap()
            .parse::<i64>()
            .unwrap();
        by_start.insert((p["lane"].as_str().unwrap().to_string(), ms - start_ms), p);
    }
    let mut tally: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for t in trucks {
        let p = by_start
            .get(&(t.lane.clone(), t.arrival_ms))
            .unwrap_or_else(|| panic!("no passage for {t:?}"));
        let reasons: Vec<&str> = p["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let entry = tally.entry(format!("{:?}", t.special)).or_default();
        entry.0 += 1;
        match expected_rule(t.special) {
            None => assert!(
                reasons.is_empty() && p["channel"] == "green",
                "{:?} truck {} should be green: {reasons:?}\n{p}",
                t.special,
                t.plate_front
            ),
            Some(rule) => {
                assert!(
                    reasons.contains(&rule),
                    "{:?} truck {}: {rule} not among {reasons:?}\n{p}",
                    t.special,
                    t.plate_front
                );
                assert_ne!(p["channel"], "green");
                entry.1 += 1;
            }
        }
        if t.special != Special::PlateUnread && t.special != Special::NoDeclaration {
            assert_eq!(p["mrn"], t.mrn.as_str(), "{p}");
        }
        assert_eq!(p["wim"]["axles"].as_array().unwrap().len(), t.axles.len());
    }
    eprintln!("findings (trucks, detected): {tally:?}");
}

#[test]
fn replay_is_deterministic_and_prints_only_events() {
    let dir = manifest().join("traces");
    let (a, stderr) = replay_binary(&dir.join("demo.toml"), &dir.join("demo.tsv"));
    let (b, _) = replay_binary(&dir.join("demo.toml"), &dir.join("demo.tsv"));
    assert!(stderr.contains("acsgd replay: "), "{stderr}");
    assert!(stderr.contains("0 bad lines"), "{stderr}");
    assert_eq!(a.len(), b.len());
    let strip = |e: &Value| {
        let mut e = e.clone();
        let m = e.as_object_mut().unwrap();
        m.remove("id");
        m.remove("sig");
        e
    };
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(strip(x), strip(y));
    }
    // Envelope shape, gapless seq from 1, times in trace time.
    for (i, e) in a.iter().enumerate() {
        assert_eq!(e["schema"], "acsgd.v1");
        assert_eq!(e["post"], "korgas");
        assert_eq!(e["seq"], i as u64 + 1);
        assert!(
            e["time"].as_str().unwrap().starts_with("2026-11-20T08:"),
            "{e}"
        );
        assert_eq!(e["sig"].as_str().unwrap().len(), 128);
    }
    let o = Options::demo();
    let (trucks, _) = simulate::session(&o);
    check_ground_truth(&o, &trucks, &a);
}

#[test]
fn every_finding_of_a_dense_session_is_found_and_nothing_else() {
    let o = Options {
        seed: 77,
        duration_s: 3600,
        special_rate: 0.5,
        mean_gap_s: 6.0,
        ..Options::default()
    };
    let (trucks, events) = replay_lib(&o);
    assert!(trucks.len() > 300, "{}", trucks.len());
    check_ground_truth(&o, &trucks, &events);
}

#[test]
fn emitted_events_validate_against_their_schemas() {
    let o = Options {
        seed: 5,
        duration_s: 1200,
        special_rate: 0.6,
        ..Options::default()
    };
    let (_, mut events) = replay_lib(&o);
    // Health events come from a sensor going silent: add a trace where one does.
    let toml = simulate::config("korgas", &o.lanes, "mqtt://127.0.0.1:1883", "/tmp/unused");
    let config = Config::parse(Path::new("sim.toml"), &toml).unwrap();
    let mut out = Vec::new();
    let mut r = Replayer::new(config, &mut out, true).unwrap();
    let mut frame = [0u8; acsgd_drivers::lane::MAX_FRAME];
    let n = acsgd_drivers::lane::encode(
        &acsgd_drivers::lane::Frame {
            addr: 1,
            seq: 1,
            body: acsgd_drivers::lane::Body::Health {
                t_ms: 1,
                uptime_s: 1,
                supply_mv: 11_800,
                temp_dc: 215,
                faults: 4,
                rx_errors: 0,
            },
        },
        &mut frame,
    )
    .unwrap();
    let hex: String = frame[..n].iter().map(|b| format!("{b:02x}")).collect();
    let lines = [
        "0\trpm-1\ttext\tGB,000300,000301,000299,000302".to_string(),
        "0\trpm-1\ttext\tTT".to_string(),
        "200000\trpm-1\ttext\tGB,000300,000301,000299,000302".to_string(),
        format!("200500\tnode-1\thex\t{hex}"),
    ];
    for (i, l) in lines.iter().enumerate() {
        r.line(l, i as u64).unwrap();
    }
    r.finish().unwrap();
    events.extend(
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()),
    );

    let schemas = manifest().join("schemas");
    let mut validators = HashMap::new();
    for entry in std::fs::read_dir(&schemas).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(kind) = name.strip_suffix(".schema.json") else {
            continue;
        };
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        validators.insert(
            kind.to_string(),
            jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}")),
        );
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        let kind = e["type"].as_str().unwrap();
        let v = validators
            .get(kind)
            .unwrap_or_else(|| panic!("no schema for {kind}"));
        if let Err(err) = v.validate(&e["body"]) {
            panic!("{kind} body does not validate: {err}\n{}", e["body"]);
        }
        *seen.entry(kind.to_string()).or_default() += 1;
    }
    for kind in ["passage", "alert", "position", "health"] {
        assert!(
            seen.contains_key(kind),
            "no {kind} event was checked: {seen:?}"
        );
    }
    // The schemas are not vacuous: a passage without its channel is refused.
    let mut bad = events.iter().find(|e| e["type"] == "passage").unwrap()["body"].clone();
    bad.as_object_mut().unwrap().remove("channel");
    assert!(validators["passage"].validate(&bad).is_err());
}
