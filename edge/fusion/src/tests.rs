//! Fusion through its public interface: vehicles made of real driver readings (lane frames,
//! RPM lines, plate reads, EGTS-decoded positions), a table of cases per rule, and property
//! tests that the passages do not depend on the order readings arrive in.

use acsgd_drivers::lane::{Body, Frame};
use acsgd_drivers::reading::{Position, Seal};
use acsgd_drivers::rpm;
use acsgd_drivers::Reading;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

const T0: Millis = 1_795_852_800_000;
const MRN_A: &str = "26KZ5500000000001A";
const MRN_B: &str = "26KZ5500000000002B";

fn config(extra: &str) -> Setup {
    let text = format!(
        r#"post = "korgas"
[uplink]
broker = "mqtt://127.0.0.1:1883"
[storage]
data_dir = "/tmp/x"
[rules.seal]
post_location = [44.2125, 80.4089]
{extra}
[[lanes]]
id = "1"
[[sensors]]
id = "node"
lane = "1"
protocol = "lane"
transport = {{ kind = "serial", path = "/dev/null" }}
[[sensors]]
id = "rpm"
lane = "1"
protocol = "rpm"
transport = {{ kind = "serial", path = "/dev/null" }}
[[sensors]]
id = "front"
lane = "1"
protocol = "camera"
view = "front"
transport = {{ kind = "url", url = "rtsp://x" }}
[[sensors]]
id = "rear"
lane = "1"
protocol = "camera"
view = "rear"
transport = {{ kind = "url", url = "rtsp://x" }}
[[sensors]]
id = "seals"
protocol = "egts"
transport = {{ kind = "tcp", listen = "127.0.0.1:0" }}
"#
    );
    toml::from_str(&text).unwrap()
}

/// One reading of the tests: at a time, from a sensor.
#[derive(Debug, Clone)]
enum In {
    R(Reading),
    Plate(String),
}

fn frame(body: Body) -> In {
    In::R(Reading::Lane(Frame {
        addr: 1,
        seq: 0,
        body,
    }))
}

fn rpm_line(line: &str) -> In {
    In::R(Reading::Radiation(
        rpm::parse_line(line.as_bytes()).unwrap(),
    ))
}

/// A vehicle for the tests.
#[derive(Debug, Clone)]
struct Vehicle {
    start: Millis,
    duration: Millis,
    /// kg, spacing m.
    axles: Vec<(u32, f64)>,
    wim_error: u8,
    length_cm: u16,
    front: Option<String>,
    rear: Option<String>,
    /// Extra gamma counts per 200 ms on detector 1 and 2 in the middle second.
    gamma_peak: u32,
    neutron_extra: u32,
    portal_alarm: bool,
    scans: bool,
    /// The loop never clears.
    stops: bool,
}

impl Vehicle {
    fn new(start: Millis) -> Vehicle {
        Vehicle {
            start,
            duration: 6_000,
            axles: vec![
                (6_500, 0.0),
                (8_000, 3.6),
                (7_000, 6.5),
                (7_000, 1.31),
                (7_000, 1.31),
            ],
            wim_error: 0,
            length_cm: 1650,
            front: Some("123ABC02".into()),
            rear: Some("0001AP02".into()),
            gamma_peak: 0,
            neutron_extra: 0,
            portal_alarm: false,
            scans: true,
            stops: false,
        }
    }

    fn gross(&self) -> u32 {
        self.axles.iter().map(|a| a.0).sum()
    }

    fn readings(&self, vehicle: u16) -> Vec<(Millis, &'static str, In)> {
        let s = self.start;
        let mut out = vec![(
            s,
            "node",
            frame(Body::Loop {
                t_ms: 0,
                loop_id: 1,
                occupied: true,
            }),
        )];
        let n = self.axles.len() as i64;
        for (i, (kg, sp)) in self.axles.iter().enumerate() {
            let t = s + 500 + (i as i64) * (self.duration - 1_500) / n;
            out.push((
                t,
                "node",
                frame(Body::Axle {
                    t_ms: 0,
                    vehicle,
                    index: i as u8 + 1,
                    left_kg: (kg / 2) as u16,
                    right_kg: (kg - kg / 2) as u16,
                    spacing_mm: (sp * 1000.0) as u16,
                    speed_dkmh: 100,
                }),
            ));
        }
        if self.wim_error != 255 {
            out.push((
                s + self.duration - 600,
                "node",
                frame(Body::Vehicle {
                    t_ms: 0,
                    vehicle,
                    axles: self.axles.len() as u8,
                    gross_kg: self.gross(),
                    speed_dkmh: 100,
                    length_cm: self.length_cm,
                    class: 11,
                    error: self.wim_error,
                }),
            ));
        }
        if !self.stops {
            out.push((
                s + self.duration,
                "node",
                frame(Body::Loop {
                    t_ms: 0,
                    loop_id: 1,
                    occupied: false,
                }),
            ));
        }
        if let Some(p) = &self.front {
            out.push((s + 100, "front", In::Plate(p.clone())));
        }
        if let Some(p) = &self.rear {
            out.push((s + self.duration - 100, "rear", In::Plate(p.clone())));
        }
        if self.scans {
            let mid = s + self.duration / 2;
            let mut t = s + 200;
            while t < s + self.duration - 200 {
                let peak = if (mid - 500..mid + 500).contains(&t) {
                    self.gamma_peak
                } else {
                    0
                };
                let code = if self.portal_alarm { "GA" } else { "GS" };
                // Shadowed background: 50 per detector per 200 ms (250 cps against 300).
                let g = [50 + peak, 49 + peak, 51, 50];
                out.push((
                    t,
                    "rpm",
                    rpm_line(&format!(
                        "{code},{:06},{:06},{:06},{:06}",
                        g[0], g[1], g[2], g[3]
                    )),
                ));
                let n = if (t / 200) % 13 == 0 { 1 } else { 0 }
                    + if (mid - 500..mid + 500).contains(&t) {
                        self.neutron_extra
                    } else {
                        0
                    };
                out.push((
                    t,
                    "rpm",
                    rpm_line(&format!("NS,{n:06},000000,000000,000000")),
                ));
                t += 200;
            }
        }
        out
    }
}

/// Background lines every second over `[from, to)`, outside `busy`.
fn background(
    from: Millis,
    to: Millis,
    busy: &[(Millis, Millis)],
) -> Vec<(Millis, &'static str, In)> {
    let mut out = Vec::new();
    let mut t = from;
    let mut i = 0u32;
    while t < to {
        if !busy.iter().any(|(a, b)| (*a..=*b).contains(&t)) {
            i += 1;
            let g = [300 + i % 7, 299 + i % 5, 301, 300];
            out.push((
                t,
                "rpm",
                rpm_line(&format!(
                    "GB,{:06},{:06},{:06},{:06}",
                    g[0], g[1], g[2], g[3]
                )),
            ));
            out.push((
                t,
                "rpm",
                rpm_line(&format!("NB,{:06},000000,000001,000000", i % 2)),
            ));
        }
        t += 1000;
    }
    out
}

fn fix(device: &str, lat: f64, lon: f64, tamper: bool) -> In {
    In::R(Reading::Position(Position {
        device: Some(device.into()),
        source: "POS_DATA",
        lat,
        lon,
        valid: true,
        seal: Some(Seal {
            tamper,
            ..Seal::default()
        }),
        ..Position::default()
    }))
}

/// A fix as Teltonika reports it: no seal state of its own, only numbered IO elements.
fn io_fix(device: &str, io1: u64) -> In {
    In::R(Reading::Position(Position {
        device: Some(device.into()),
        source: "codec8",
        lat: 44.2126,
        lon: 80.4088,
        valid: true,
        attributes: [("io1".to_string(), json!(io1))].into_iter().collect(),
        ..Position::default()
    }))
}

fn declaration(mrn: &str, plates: &[&str], gross_kg: f64) -> Value {
    json!({
        "mrn": mrn, "plates": plates, "tracker": "4242", "gross_kg": gross_kg,
        "corridor": {"points": [[44.2125, 80.4089], [43.2389, 76.8897]], "width_m": 4000},
    })
}

#[derive(Debug)]
struct World {
    config: Setup,
    declarations: Vec<Value>,
    watchlist: Option<Value>,
    inputs: Vec<(Millis, &'static str, In)>,
}

impl World {
    /// One vehicle with background before it and a seal that reported from near the post.
    fn one(v: Vehicle) -> World {
        let mut w = World::new();
        w.vehicle(&v, 1);
        w.inputs
            .push((v.start - 30_000, "seals", fix("4242", 44.20, 80.40, false)));
        w
    }

    fn new() -> World {
        World {
            config: config(""),
            declarations: vec![declaration(MRN_A, &["123ABC02", "0001AP02"], 38_500.0)],
            watchlist: None,
            inputs: background(T0, T0 + 30_000, &[]),
        }
    }

    fn vehicle(&mut self, v: &Vehicle, n: u16) {
        self.inputs.extend(v.readings(n));
        let end = v.start + v.duration;
        self.inputs.retain(|(t, s, i)| {
            !(*s == "rpm"
                && (v.start..=end).contains(t)
                && matches!(i, In::R(Reading::Radiation(l)) if l.code == "GB" || l.code == "NB"))
        });
        self.inputs
            .extend(background(end + 1000, end + 20_000, &[]));
    }

    /// Feeds inputs in the given order, each arriving `delay` after its time.
    fn run_order(&self, order: &[(Millis, Millis, usize)]) -> Vec<Event> {
        let mut f = Fusion::new(&self.config, T0);
        for d in &self.declarations {
            f.transit_mut().upsert(d).unwrap();
        }
        if let Some(w) = &self.watchlist {
            f.transit_mut().set_watchlist(w).unwrap();
        }
        let mut out = Vec::new();
        for &(arrival, _, i) in order {
            let (t, sensor, input) = &self.inputs[i];
            out.extend(f.advance(arrival));
            match input {
                In::R(r) => out.extend(f.readings(*t, sensor, std::slice::from_ref(r))),
                In::Plate(p) => out.extend(f.plate(*t, sensor, p, 0.9)),
            }
        }
        out.extend(f.advance(order.iter().map(|o| o.0).max().unwrap_or(T0) + 60_000));
        out.extend(f.finish());
        out
    }

    fn run(&self) -> Vec<Event> {
        let mut order: Vec<(Millis, Millis, usize)> = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, (t, _, _))| (*t, *t, i))
            .collect();
        order.sort();
        self.run_order(&order)
    }
}

fn passages(events: &[Event]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.kind == "passage")
        .map(|e| e.body.clone())
        .collect()
}

fn outcome<'a>(p: &'a Value, rule: &str) -> &'a Value {
    p["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == rule)
        .unwrap_or_else(|| panic!("no {rule} in {p}"))
}

#[test]
fn rule_table() {
    type Setup = fn(&mut World, &mut Vehicle);
    let t = |start| start;
    let _ = t(0);
    let cases: Vec<(&str, Setup, &str, &str)> = vec![
        ("clean passage", |_, _| {}, "axle_load", "pass"),
        (
            "axle over 10 t",
            |_, v| v.axles[1].0 = 11_200,
            "axle_load",
            "fail",
        ),
        (
            "tandem over 18 t",
            |_, v| {
                v.axles = vec![(6_500, 0.0), (9_600, 3.6), (9_600, 1.30)];
            },
            "axle_group",
            "fail",
        ),
        (
            "the same axles 2 m apart are no group",
            |_, v| {
                v.axles = vec![(6_500, 0.0), (9_600, 3.6), (9_600, 2.0)];
            },
            "axle_group",
            "pass",
        ),
        (
            "5 axles over 38 t",
            |w, v| {
                v.axles = vec![
                    (7_000, 0.0),
                    (9_500, 3.6),
                    (7_500, 6.5),
                    (7_500, 1.31),
                    (7_500, 1.31),
                ];
                w.declarations = vec![declaration(MRN_A, &["123ABC02"], 39_000.0)];
            },
            "gross_mass",
            "fail",
        ),
        ("5 axles at 35.5 t", |_, _| {}, "gross_mass", "pass"),
        ("21 m long", |_, v| v.length_cm = 2100, "dimensions", "fail"),
        (
            "no length measured",
            |_, v| v.length_cm = 0,
            "dimensions",
            "skip",
        ),
        (
            "declared 25 % light",
            |w, _| {
                w.declarations = vec![declaration(MRN_A, &["123ABC02"], 28_400.0)];
            },
            "declared_mass",
            "fail",
        ),
        (
            "declared within the class",
            |_, _| {},
            "declared_mass",
            "pass",
        ),
        (
            "no declaration, no declared mass",
            |w, _| w.declarations.clear(),
            "declared_mass",
            "skip",
        ),
        ("scale error", |_, v| v.wim_error = 2, "wim", "fail"),
        ("scale silent", |_, v| v.wim_error = 255, "wim", "fail"),
        (
            "gamma peak",
            |_, v| v.gamma_peak = 30,
            "radiation_gamma",
            "fail",
        ),
        (
            "flat shadowed profile",
            |_, _| {},
            "radiation_gamma",
            "pass",
        ),
        (
            "neutron source",
            |_, v| v.neutron_extra = 3,
            "radiation_neutron",
            "fail",
        ),
        (
            "portal alarms itself",
            |_, v| v.portal_alarm = true,
            "portal_alarm",
            "fail",
        ),
        (
            "portal sent no scans",
            |_, v| v.scans = false,
            "radiation_missing",
            "fail",
        ),
        (
            "portal tampered",
            |w, v| {
                w.inputs.push((v.start - 5_000, "rpm", rpm_line("TT")));
            },
            "radiation_missing",
            "fail",
        ),
        (
            "seal reports tamper",
            |w, v| {
                w.inputs
                    .push((v.start - 20_000, "seals", fix("4242", 44.21, 80.40, true)));
            },
            "seal_tamper",
            "fail",
        ),
        ("seal intact", |_, _| {}, "seal_tamper", "pass"),
        (
            "seal silent 20 min",
            |w, v| {
                w.inputs.retain(|(_, s, _)| *s != "seals");
                w.inputs.push((
                    v.start - 1_200_000,
                    "seals",
                    fix("4242", 44.20, 80.40, false),
                ));
            },
            "seal_silent",
            "fail",
        ),
        (
            "seal never heard",
            |w, _| w.inputs.retain(|(_, s, _)| *s != "seals"),
            "seal_silent",
            "fail",
        ),
        (
            "last fix 5 km from the post",
            |w, v| {
                w.inputs.push((
                    v.start - 10_000,
                    "seals",
                    fix("4242", 44.2125, 80.35, false),
                ));
            },
            "seal_geofence",
            "fail",
        ),
        ("last fix at the post", |_, _| {}, "seal_geofence", "pass"),
        (
            "off the corridor",
            |w, v| {
                w.inputs
                    .push((v.start - 25_000, "seals", fix("4242", 43.9, 79.5, false)));
            },
            "route_deviation",
            "fail",
        ),
        ("on the corridor", |_, _| {}, "route_deviation", "pass"),
        (
            "no plate read",
            |_, v| {
                v.front = None;
                v.rear = None;
            },
            "plate_unread",
            "fail",
        ),
        (
            "plate read, nothing declared",
            |w, _| w.declarations.clear(),
            "no_declaration",
            "fail",
        ),
        (
            "plate read with OCR confusions",
            |_, v| v.front = Some("I23A8CO2".into()),
            "no_declaration",
            "pass",
        ),
        (
            "tractor and trailer on two declarations",
            |w, _| {
                w.declarations = vec![
                    declaration(MRN_A, &["123ABC02"], 38_500.0),
                    declaration(MRN_B, &["0001AP02"], 38_500.0),
                ];
            },
            "split_declarations",
            "fail",
        ),
        (
            "watchlisted plate",
            |w, _| w.watchlist = Some(json!({"plates": ["123 ABC 02"]})),
            "watchlist",
            "fail",
        ),
        (
            "watchlisted seal",
            |w, _| w.watchlist = Some(json!({"trackers": ["4242"]})),
            "watchlist",
            "fail",
        ),
        (
            "stopped on the lane",
            |w, v| {
                w.config = config("[fusion]\nmax_presence_s = 60");
                v.stops = true;
            },
            "vehicle_stopped",
            "fail",
        ),
    ];
    let mut failures = Vec::new();
    for (name, setup, rule, want) in cases {
        let mut v = Vehicle::new(T0 + 40_000);
        let mut w = World::new();
        w.inputs.push((
            v.start - 30_000,
            "seals",
            fix("4242", 44.2126, 80.4088, false),
        ));
        setup(&mut w, &mut v);
        w.vehicle(&v, 1);
        let ev = w.run();
        let ps = passages(&ev);
        if ps.len() != 1 {
            failures.push(format!("{name}: {} passages", ps.len()));
            continue;
        }
        let got = outcome(&ps[0], rule);
        if got["result"] != want {
            failures.push(format!("{name}: {rule} gave {got}, want {want}"));
        }
        // A failed rule is in the reasons and raises an alert pointing at the passage.
        if want == "fail" {
            let alert = ev.iter().any(|e| {
                e.kind == "alert" && e.body["rule"] == rule && e.body["passage"] == ps[0]["id"]
            });
            if !alert
                || !ps[0]["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r == rule)
            {
                failures.push(format!("{name}: no alert or reason for {rule}"));
            }
        }
        if name == "clean passage" {
            assert_eq!(ps[0]["channel"], "green", "{}", ps[0]);
            assert_eq!(ps[0]["mrn"], MRN_A);
            assert_eq!(ps[0]["wim"]["gross_kg"], 35_500);
            assert!(ev.iter().all(|e| e.kind != "alert"), "{ev:?}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn channel_is_the_highest_raised_and_overridable() {
    let mut v = Vehicle::new(T0 + 40_000);
    v.axles[1].0 = 10_400;
    let w = World::one(v.clone());
    let p = &passages(&w.run())[0];
    assert_eq!(
        (p["channel"].as_str(), p["reasons"].clone()),
        (Some("yellow"), json!(["axle_load"]))
    );
    let mut w = World::one(v);
    w.config = config("[rules.channels]\naxle_load = \"red\"");
    assert_eq!(passages(&w.run())[0]["channel"], "red");
    let mut w = World::one(Vehicle::new(T0));
    w.config = config("[rules.channels]\nspeeding = \"red\"");
    let invalid = w.config.rules.validate().unwrap_err();
    let (key, problem) = (invalid.key, invalid.problem);
    assert_eq!(key, "channels.speeding");
    assert!(problem.contains("no rule \"speeding\""), "{problem}");
}

#[test]
fn three_trucks_back_to_back_are_three_passages() {
    let mut w = World::new();
    let plates = ["111AAA01", "222BBB02", "333CCC03"];
    let mut busy = Vec::new();
    for (i, p) in plates.iter().enumerate() {
        let mut v = Vehicle::new(T0 + 40_000 + i as Millis * 7_200); // 1.2 s between them
        v.front = Some(p.to_string());
        v.rear = Some(format!("000{i}AP01"));
        v.axles[0].0 = 6_000 + i as u32 * 100;
        w.vehicle(&v, i as u16 + 1);
        busy.push((v.start, v.start + v.duration));
    }
    let ps = passages(&w.run());
    assert_eq!(ps.len(), 3, "{ps:?}");
    for (i, p) in ps.iter().enumerate() {
        assert_eq!(p["plates"].as_array().unwrap().len(), 2, "{p}");
        assert_eq!(p["plates"][0]["text"], plates[i]);
        assert_eq!(p["plates"][1]["text"], format!("000{i}AP01"));
        assert_eq!(p["wim"]["axles"][0]["load_kg"], 6_000 + i as u32 * 100);
        assert_eq!(p["wim"]["records"], 1);
    }
}

#[test]
fn a_vehicle_that_reverses_is_one_passage_with_its_valid_weighing() {
    let mut w = World::new();
    let v = Vehicle::new(T0 + 40_000);
    w.vehicle(&v, 1);
    // It backs off the loop for half a second and the scale sends a partial record.
    w.inputs.push((
        v.start + 2_000,
        "node",
        frame(Body::Loop {
            t_ms: 0,
            loop_id: 1,
            occupied: false,
        }),
    ));
    w.inputs.push((
        v.start + 2_500,
        "node",
        frame(Body::Loop {
            t_ms: 0,
            loop_id: 1,
            occupied: true,
        }),
    ));
    w.inputs.push((
        v.start + 2_100,
        "node",
        frame(Body::Vehicle {
            t_ms: 0,
            vehicle: 1,
            axles: 2,
            gross_kg: 14_000,
            speed_dkmh: 30,
            length_cm: 0,
            class: 0,
            error: 2,
        }),
    ));
    let ps = passages(&w.run());
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0]["wim"]["gross_kg"], v.gross());
    assert_eq!(ps[0]["wim"]["records"], 2);
    assert_eq!(outcome(&ps[0], "wim")["result"], "pass");
}

#[test]
fn a_reading_near_no_vehicle_is_reported_not_dropped() {
    let mut w = World::one(Vehicle::new(T0 + 40_000));
    w.inputs
        .push((T0 + 100_000, "front", In::Plate("999ZZZ09".into())));
    let ev = w.run();
    assert_eq!(passages(&ev).len(), 1);
    let a: Vec<&Event> = ev
        .iter()
        .filter(|e| e.body["rule"] == "unmatched_reading")
        .collect();
    assert_eq!(a.len(), 1, "{ev:?}");
    assert_eq!(a[0].body["severity"], "low");
    assert_eq!(a[0].body["message"]["params"]["sensor"], "front");
    assert_eq!(a[0].body["message"]["params"]["kind"], "plate");
}

#[test]
fn a_silent_lane_sensor_is_reported_down_then_up() {
    let mut f = Fusion::new(&config(""), T0);
    let gb = |f: &mut Fusion, t| {
        f.readings(
            t,
            "rpm",
            &[Reading::Radiation(
                rpm::parse_line(b"GB,000300,000300,000300,000300").unwrap(),
            )],
        )
    };
    gb(&mut f, T0);
    let ev = f.advance(T0 + 119_000);
    assert!(ev.iter().all(|e| e.kind != "health"));
    let ev = f.advance(T0 + 121_000);
    let down: Vec<&str> = ev
        .iter()
        .filter(|e| e.body["state"] == "down")
        .map(|e| e.body["component"].as_str().unwrap())
        .collect();
    // The portal spoke at T0, the node never: both are down; cameras speak only when a
    // vehicle passes and the tracker gateway is not a lane sensor.
    assert_eq!(down, ["sensor/node", "sensor/rpm"]);
    assert!(f.advance(T0 + 500_000).is_empty(), "reported once");
    let ev = gb(&mut f, T0 + 500_001);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (
            ev[0].body["component"].as_str(),
            ev[0].body["state"].as_str()
        ),
        (Some("sensor/rpm"), Some("up"))
    );
}

#[test]
fn positions_are_batched_per_device() {
    let mut f = Fusion::new(&config(""), T0);
    let rs = [
        fix("1", 44.0, 80.0, false),
        fix("1", 44.1, 80.0, false),
        fix("2", 44.0, 80.0, false),
    ]
    .map(|i| match i {
        In::R(r) => r,
        In::Plate(_) => unreachable!(),
    });
    let ev = f.readings(T0, "seals", &rs);
    let pos: Vec<(&str, usize)> = ev
        .iter()
        .map(|e| {
            (
                e.body["device"].as_str().unwrap(),
                e.body["fixes"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(pos, [("1", 2), ("2", 1)]);
    assert_eq!(f.trackers().len(), 2);
}

/// The inputs of a few vehicles queued back to back with random gaps, findings and plates.
fn arb_world() -> impl Strategy<Value = World> {
    prop::collection::vec(
        (1_100i64..6_000, 4_000i64..9_000, 0u32..40, any::<bool>()),
        1..4,
    )
    .prop_map(|vs| {
        let mut w = World::new();
        let mut t = T0 + 35_000;
        for (i, (gap, dur, peak, rear)) in vs.into_iter().enumerate() {
            let mut v = Vehicle::new(t);
            v.duration = dur;
            v.gamma_peak = peak;
            v.front = Some(format!("{}{}{}ABC0{i}", i, i, i));
            if !rear {
                v.rear = None;
            }
            w.vehicle(&v, i as u16 + 1);
            t += dur + gap;
        }
        w
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any arrival order, with each reading at most `lateness_s` late, gives the same
    /// passages as the readings in time order.
    #[test]
    fn passages_do_not_depend_on_arrival_order(w in arb_world(), delays in prop::collection::vec(0i64..1_999, 400)) {
        let reference = passages(&w.run());
        let mut order: Vec<(Millis, Millis, usize)> = w
            .inputs
            .iter()
            .enumerate()
            .map(|(i, (t, _, _))| (*t + delays[i % delays.len()], *t, i))
            .collect();
        order.sort();
        let shuffled = passages(&w.run_order(&order));
        prop_assert_eq!(reference.len(), shuffled.len());
        for (a, b) in reference.iter().zip(&shuffled) {
            prop_assert_eq!(a, b);
        }
    }
}

#[test]
fn a_seal_model_turns_a_trackers_numbered_input_into_a_tamper() {
    let model =
        "[[seal_models]]\nname = \"fmb-din1\"\ndevices = [\"4242\"]\ntamper = [\"io1 = 0\"]\n";
    for (io1, configured, want) in [(0, true, "fail"), (1, true, "pass"), (0, false, "pass")] {
        let v = Vehicle::new(T0 + 40_000);
        let mut w = World::new();
        if configured {
            w.config = config(model);
        }
        w.inputs
            .push((v.start - 30_000, "seals", io_fix("4242", io1)));
        w.vehicle(&v, 1);
        let ps = passages(&w.run());
        assert_eq!(ps.len(), 1);
        assert_eq!(
            outcome(&ps[0], "seal_tamper")["result"],
            want,
            "io1 = {io1}, model configured: {configured}: {}",
            ps[0]
        );
    }
}

/// Feeds `inputs` (sorted by time) from index `from` on, advancing the clock before each and
/// telling the journal after each advance that what it made is stored, as the ticker does.
fn feed(f: &mut Fusion, inputs: &[(Millis, &'static str, In)], until: Millis) -> Vec<Event> {
    let mut out = Vec::new();
    for (t, sensor, input) in inputs.iter().filter(|(t, _, _)| *t < until) {
        out.extend(f.advance(*t));
        f.settle_journal();
        match input {
            In::R(r) => out.extend(f.readings(*t, sensor, std::slice::from_ref(r))),
            In::Plate(p) => out.extend(f.plate(*t, sensor, p, 0.9)),
        }
    }
    out
}

#[test]
fn a_crash_mid_passage_loses_no_reading_and_makes_no_passage_twice() {
    let mut w = World::new();
    let mut first = Vehicle::new(T0 + 40_000);
    first.front = Some("111AAA01".into());
    w.vehicle(&first, 1);
    let second = Vehicle::new(T0 + 80_000);
    w.vehicle(&second, 2);
    // The seal reports between the two (after the first passage started its track afresh)
    // and not again: its state must come back from the journal.
    w.inputs
        .push((T0 + 60_000, "seals", fix("4242", 44.20, 80.40, false)));
    w.inputs.sort_by_key(|(t, _, _)| *t);
    let whole = passages(&w.run());
    assert_eq!(whole.len(), 2, "{whole:?}");

    // Killed in the middle of the second vehicle: the first is stored and settled.
    let dir = tempfile::tempdir().unwrap();
    let crash = T0 + 83_000;
    let fresh = |at: Millis| {
        let mut f = Fusion::new(&w.config, at);
        for d in &w.declarations {
            f.transit_mut().upsert(d).unwrap();
        }
        f
    };
    let mut before = fresh(T0);
    let (j, kept, _) = crate::journal::file::open(dir.path(), 200_000).unwrap();
    assert!(kept.is_empty());
    before.set_journal(Box::new(j));
    let mut got = feed(&mut before, &w.inputs, crash);
    if let Some(sync) = before.sync_journal() {
        sync().unwrap();
    }
    assert_eq!(
        passages(&got).len(),
        1,
        "the first vehicle closed before the crash"
    );
    drop(before);

    let mut after = fresh(crash + 2_000);
    let (j, kept, opened) = crate::journal::file::open(dir.path(), 200_000).unwrap();
    assert_eq!(opened.unreadable, 0);
    assert!(!kept.is_empty());
    // Only the open passage's readings, the portal's background and the trackers come back.
    assert!(kept.iter().all(|r| r.at >= T0 + 79_000
        || matches!(&r.what, journal::Kept::Tracker(_))
        || matches!(&r.what, journal::Kept::Rpm(l) if l.code == "GB" || l.code == "NB")));
    let buffered = after.recover(&kept);
    assert!(buffered > 10, "{buffered}");
    after.set_journal(Box::new(j));
    let rest: Vec<_> = w
        .inputs
        .iter()
        .filter(|(t, _, _)| *t >= crash)
        .cloned()
        .collect();
    got.extend(feed(&mut after, &rest, Millis::MAX));
    got.extend(after.advance(T0 + 200_000));
    got.extend(after.finish());
    let mut made = passages(&got);
    assert_eq!(made.len(), 2, "{made:?}");
    assert_eq!(made[1]["recovered"], true, "{}", made[1]);
    assert!(made[0].get("recovered").is_none());
    made[1].as_object_mut().unwrap().remove("recovered");
    assert_eq!(made, whole, "the same passages as without the crash");

    // A clean stop settles everything: nothing comes back the next time.
    after.settle_journal();
    drop(after);
    let (_, kept, _) = crate::journal::file::open(dir.path(), 0).unwrap();
    assert!(
        kept.iter()
            .all(|r| matches!(&r.what, journal::Kept::Tracker(_))
                || matches!(&r.what, journal::Kept::Rpm(l) if l.code == "GB" || l.code == "NB")),
        "{kept:?}"
    );
}

#[test]
fn a_lane_is_busy_from_its_vehicle_until_its_passage_closes() {
    let mut f = Fusion::new(&config(""), T0);
    let read = |f: &mut Fusion, t: Millis, occupied: bool| {
        let In::R(r) = frame(Body::Loop {
            t_ms: 0,
            loop_id: 1,
            occupied,
        }) else {
            unreachable!()
        };
        f.readings(t, "node", &[r])
    };
    assert_eq!(f.busy_lanes(), 0);
    read(&mut f, T0 + 1_000, true);
    assert_eq!(f.busy_lanes(), 1, "a vehicle on the loop");
    read(&mut f, T0 + 6_000, false);
    assert_eq!(f.busy_lanes(), 1, "gone, but its passage is still open");
    let events = f.advance(T0 + 120_000);
    assert_eq!(passages(&events).len(), 1, "{events:?}");
    assert_eq!(f.busy_lanes(), 0, "the passage closed");
}
