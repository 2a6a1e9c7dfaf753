//! Transit-control rules: each looks at a passage and says `pass`, `fail` (with the numbers
//! that made it fail) or `skip` (not applicable, or nothing to check it with). A failed rule
//! raises its channel (configurable per rule, defaults in [`RULES`]); the passage's channel is
//! the highest raised, green when none is.

use serde_json::{json, Value};

use super::lane::Millis;
use super::passage::{Outcome, Passage, Wim};
use super::settings::{Channel, RuleSettings};
use super::trackers::Tracker;
use super::transit::{distance_m, distance_to_line_m, Declaration, Transit};

/// Every rule and the channel its failure raises by default.
pub const RULES: &[(&str, Channel)] = &[
    ("axle_load", Channel::Yellow),
    ("axle_group", Channel::Yellow),
    ("gross_mass", Channel::Yellow),
    ("dimensions", Channel::Yellow),
    ("declared_mass", Channel::Red),
    ("wim", Channel::Yellow),
    ("radiation_gamma", Channel::Red),
    ("radiation_neutron", Channel::Red),
    ("portal_alarm", Channel::Red),
    ("radiation_missing", Channel::Yellow),
    ("seal_tamper", Channel::Red),
    ("seal_silent", Channel::Yellow),
    ("seal_geofence", Channel::Yellow),
    ("route_deviation", Channel::Red),
    ("plate_unread", Channel::Yellow),
    ("no_declaration", Channel::Yellow),
    ("split_declarations", Channel::Yellow),
    ("watchlist", Channel::Red),
    ("vehicle_stopped", Channel::Yellow),
    // Alerts outside any passage.
    ("portal_tamper", Channel::Red),
    ("portal_fault", Channel::Yellow),
    ("unmatched_reading", Channel::Green),
];

/// What the rules need besides the passage.
pub struct Context<'a> {
    pub settings: &'a RuleSettings,
    pub now: Millis,
    /// Sensors the lane has: a missing reading only matters where a sensor should give it.
    pub has_wim: bool,
    pub has_rpm: bool,
    pub has_camera: bool,
    /// A portal fault or tamper active during the passage.
    pub portal_fault: Option<String>,
    pub transit: &'a Transit,
    pub declaration: Option<&'a Declaration>,
    /// MRNs the read plates matched, by plate.
    pub plate_mrns: Vec<(String, Option<String>)>,
    pub tracker: Option<&'a Tracker>,
}

fn pass(rule: &'static str, detail: Value) -> Outcome {
    Outcome {
        rule,
        result: "pass",
        detail,
    }
}
fn fail(rule: &'static str, detail: Value) -> Outcome {
    Outcome {
        rule,
        result: "fail",
        detail,
    }
}
fn skip(rule: &'static str, why: &str) -> Outcome {
    Outcome {
        rule,
        result: "skip",
        detail: json!({ "reason": why }),
    }
}

fn t(kg: f64) -> f64 {
    (kg / 100.0).round() / 10.0
}

/// Runs every rule; fills `rules`, `channel` and `reasons`.
pub fn evaluate(p: &mut Passage, cx: &Context) {
    let s = cx.settings;
    let mut out = Vec::new();
    mass_rules(p.wim.as_ref(), cx, &mut out);
    out.push(declared_mass(p, cx));
    out.push(match (&p.wim, cx.has_wim) {
        (Some(w), _) if w.status == "ok" && w.records <= 1 => pass("wim", json!({})),
        (Some(w), _) if w.status == "ok" => pass("wim", json!({ "records": w.records })),
        (Some(w), _) => fail("wim", json!({ "status": w.status })),
        (None, true) => fail("wim", json!({ "status": "missing" })),
        (None, false) => skip("wim", "no scale on this lane"),
    });
    radiation_rules(p, cx, &mut out);
    seal_rules(p, cx, &mut out);
    identity_rules(p, cx, &mut out);
    out.push(if p.stopped {
        fail("vehicle_stopped", json!({ "duration_s": p.duration_s }))
    } else {
        pass("vehicle_stopped", json!({}))
    });
    let mut channel = Channel::Green;
    let mut reasons = Vec::new();
    for o in &out {
        if o.result == "fail" {
            let c = s.channel(o.rule);
            channel = channel.max(c);
            if c > Channel::Green {
                reasons.push(o.rule.to_string());
            }
        }
    }
    p.rules = out;
    p.channel = channel;
    p.reasons = reasons;
}

fn mass_rules(wim: Option<&Wim>, cx: &Context, out: &mut Vec<Outcome>) {
    let s = cx.settings;
    let Some(w) = wim.filter(|w| w.status == "ok" && !w.axles.is_empty()) else {
        for r in ["axle_load", "axle_group", "gross_mass"] {
            out.push(skip(r, "no valid weighing"));
        }
        out.push(dimensions(wim, s));
        return;
    };
    let limit = s.axle_t * 1000.0;
    let over: Vec<Value> = w
        .axles
        .iter()
        .filter(|a| a.load_kg as f64 > limit)
        .map(|a| json!({ "axle": a.index, "load_t": t(a.load_kg as f64), "limit_t": s.axle_t }))
        .collect();
    out.push(if over.is_empty() {
        pass("axle_load", json!({ "limit_t": s.axle_t }))
    } else {
        fail("axle_load", json!({ "limit_t": s.axle_t, "over": over }))
    });
    // Groups: consecutive axles closer than group_spacing_m.
    let mut groups: Vec<Vec<&super::passage::Axle>> = Vec::new();
    for a in &w.axles {
        match groups.last_mut() {
            Some(g) if a.spacing_m > 0.0 && a.spacing_m < s.group_spacing_m => g.push(a),
            _ => groups.push(vec![a]),
        }
    }
    let mut over = Vec::new();
    for g in groups.iter().filter(|g| g.len() >= 2) {
        let load: f64 = g.iter().map(|a| a.load_kg as f64).sum();
        let limit_t = if g.len() == 2 { s.tandem_t } else { s.tridem_t };
        if load > limit_t * 1000.0 {
            over.push(json!({
                "axles": g.iter().map(|a| a.index).collect::<Vec<_>>(),
                "load_t": t(load), "limit_t": limit_t,
            }));
        }
    }
    out.push(if over.is_empty() {
        pass(
            "axle_group",
            json!({ "groups": groups.iter().filter(|g| g.len() >= 2).count() }),
        )
    } else {
        fail("axle_group", json!({ "over": over }))
    });
    let n = w.axles.len();
    out.push(if n < 2 {
        skip("gross_mass", "fewer than two axles weighed")
    } else {
        let limit_t = s.gross_t[n.min(6) - 2];
        let d = json!({ "axles": n, "gross_t": t(w.gross_kg as f64), "limit_t": limit_t });
        if w.gross_kg as f64 > limit_t * 1000.0 {
            fail("gross_mass", d)
        } else {
            pass("gross_mass", d)
        }
    });
    out.push(dimensions(Some(w), s));
}

fn dimensions(w: Option<&Wim>, s: &RuleSettings) -> Outcome {
    match w.and_then(|w| w.length_m) {
        // Height and width need a profile scanner; only length comes from the scale.
        Some(l) if l > s.length_m => fail(
            "dimensions",
            json!({ "length_m": l, "limit_m": s.length_m }),
        ),
        Some(l) => pass(
            "dimensions",
            json!({ "length_m": l, "limit_m": s.length_m }),
        ),
        None => skip("dimensions", "no dimensions measured"),
    }
}

fn declared_mass(p: &Passage, cx: &Context) -> Outcome {
    let declared = cx.declaration.and_then(|d| d.gross_kg);
    match (p.wim.as_ref().filter(|w| w.status == "ok"), declared) {
        (Some(w), Some(d)) => {
            // OIML R134: in-service maximum permissible error is twice the class.
            let tol = 2.0 * cx.settings.wim_class;
            let diff = (w.gross_kg as f64 - d) / d * 100.0;
            let detail = json!({
                "measured_t": t(w.gross_kg as f64), "declared_t": t(d),
                "difference_pct": (diff * 10.0).round() / 10.0, "tolerance_pct": tol,
            });
            if diff.abs() > tol {
                fail("declared_mass", detail)
            } else {
                pass("declared_mass", detail)
            }
        }
        (None, _) => skip("declared_mass", "no valid weighing"),
        (_, None) => skip("declared_mass", "no declared mass"),
    }
}

fn radiation_rules(p: &Passage, cx: &Context, out: &mut Vec<Outcome>) {
    if !cx.has_rpm {
        for r in [
            "radiation_gamma",
            "radiation_neutron",
            "portal_alarm",
            "radiation_missing",
        ] {
            out.push(skip(r, "no portal on this lane"));
        }
        return;
    }
    let Some(r) = &p.radiation else {
        for r in ["radiation_gamma", "radiation_neutron", "portal_alarm"] {
            out.push(skip(r, "no scan data"));
        }
        out.push(fail(
            "radiation_missing",
            json!({ "reason": cx.portal_fault.clone().unwrap_or_else(|| "no scan data".into()) }),
        ));
        return;
    };
    let g = &r.gamma;
    let gd = json!({
        "channel": g.channel, "max_cps": g.max_cps.round(),
        "threshold_cps": if g.threshold_cps.is_finite() { json!(g.threshold_cps.round()) } else { Value::Null },
        "background_cps": g.background_cps.round(), "shadow": (g.shadow * 1000.0).round() / 1000.0,
    });
    out.push(if g.alarm {
        fail("radiation_gamma", gd)
    } else {
        pass("radiation_gamma", gd)
    });
    let n = &r.neutron;
    let nd =
        json!({ "counts": n.counts, "threshold": n.threshold, "background_cps": n.background_cps });
    out.push(if n.alarm {
        fail("radiation_neutron", nd)
    } else {
        pass("radiation_neutron", nd)
    });
    out.push(if r.portal_alarm {
        fail("portal_alarm", json!({ "own_verdict": r.verdict }))
    } else {
        pass("portal_alarm", json!({}))
    });
    out.push(match &cx.portal_fault {
        Some(f) => fail("radiation_missing", json!({ "reason": f })),
        None if r.gamma.background_cps <= 0.0 => fail(
            "radiation_missing",
            json!({ "reason": "no gamma background" }),
        ),
        None => pass("radiation_missing", json!({ "intervals": r.intervals })),
    });
}

fn seal_rules(p: &mut Passage, cx: &Context, out: &mut Vec<Outcome>) {
    let s = &cx.settings.seal;
    let Some(device) = cx.declaration.and_then(|d| d.tracker.clone()) else {
        for r in [
            "seal_tamper",
            "seal_silent",
            "seal_geofence",
            "route_deviation",
        ] {
            out.push(skip(r, "no declared seal"));
        }
        return;
    };
    let Some(tr) = cx.tracker else {
        out.push(skip("seal_tamper", "seal never heard"));
        out.push(fail(
            "seal_silent",
            json!({ "tracker": device, "heard": false }),
        ));
        out.push(skip("seal_geofence", "seal never heard"));
        out.push(skip("route_deviation", "seal never heard"));
        p.seal = Some(super::passage::SealView {
            tracker: device,
            heard: false,
            last_seen: None,
            last_fix: None,
            distance_m: None,
            max_deviation_m: None,
            flags: Default::default(),
        });
        return;
    };
    out.push(if tr.flags.any() {
        fail(
            "seal_tamper",
            json!({ "tracker": device, "flags": tr.flags }),
        )
    } else {
        pass("seal_tamper", json!({}))
    });
    let silent_s = (cx.now - tr.last_seen) as f64 / 1000.0;
    out.push(if silent_s > s.silent_s {
        fail(
            "seal_silent",
            json!({ "silent_s": silent_s.round(), "limit_s": s.silent_s }),
        )
    } else {
        pass("seal_silent", json!({ "silent_s": silent_s.round() }))
    });
    let distance = match (s.post_location, tr.last_fix) {
        (Some(post), Some(f)) => Some(distance_m(post, [f.lat, f.lon])),
        _ => None,
    };
    out.push(match (distance, s.post_location) {
        (Some(d), _) if d > s.geofence_m => fail(
            "seal_geofence",
            json!({ "distance_m": d.round(), "limit_m": s.geofence_m }),
        ),
        (Some(d), _) => pass("seal_geofence", json!({ "distance_m": d.round() })),
        (None, None) => skip("seal_geofence", "post location not configured"),
        (None, Some(_)) => skip("seal_geofence", "no valid fix"),
    });
    let corridor = cx.declaration.and_then(|d| d.corridor.as_ref());
    let deviation = corridor.and_then(|c| {
        tr.track
            .iter()
            .map(|f| (distance_to_line_m([f.lat, f.lon], &c.points), f))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(d, f)| (d, *f, c.width_m / 2.0))
    });
    out.push(match (corridor, deviation) {
        (None, _) => skip("route_deviation", "no corridor declared"),
        (Some(_), None) => skip("route_deviation", "no fixes"),
        (Some(_), Some((d, f, half))) if d > half => fail(
            "route_deviation",
            json!({ "max_distance_m": d.round(), "limit_m": half, "at": [f.lat, f.lon] }),
        ),
        (Some(_), Some((d, _, half))) => pass(
            "route_deviation",
            json!({ "max_distance_m": d.round(), "limit_m": half }),
        ),
    });
    p.seal = Some(super::passage::SealView {
        tracker: device,
        heard: true,
        last_seen: Some(super::rfc3339(tr.last_seen)),
        last_fix: tr
            .last_fix
            .map(|f| json!({ "lat": f.lat, "lon": f.lon, "time": super::rfc3339(f.time) })),
        distance_m: distance.map(f64::round),
        max_deviation_m: deviation.map(|d| d.0.round()),
        flags: tr.flags.clone(),
    });
}

fn identity_rules(p: &Passage, cx: &Context, out: &mut Vec<Outcome>) {
    out.push(match (p.plates.is_empty(), cx.has_camera) {
        (true, true) => fail("plate_unread", json!({})),
        (true, false) => skip("plate_unread", "no camera on this lane"),
        (false, _) => pass("plate_unread", json!({ "plates": p.plates.len() })),
    });
    let matched: Vec<&(String, Option<String>)> =
        cx.plate_mrns.iter().filter(|(_, m)| m.is_some()).collect();
    out.push(if p.plates.is_empty() {
        skip("no_declaration", "no plate read")
    } else if matched.is_empty() {
        fail(
            "no_declaration",
            json!({ "plates": p.plates.iter().map(|r| &r.text).collect::<Vec<_>>() }),
        )
    } else {
        pass("no_declaration", json!({ "mrn": p.mrn }))
    });
    let mut mrns: Vec<&str> = matched.iter().filter_map(|(_, m)| m.as_deref()).collect();
    mrns.sort_unstable();
    mrns.dedup();
    out.push(if mrns.len() > 1 {
        fail(
            "split_declarations",
            json!({ "plates": cx.plate_mrns.iter().map(|(p, m)| json!({"plate": p, "mrn": m})).collect::<Vec<_>>() }),
        )
    } else {
        pass("split_declarations", json!({}))
    });
    let plates: Vec<&str> = p.plates.iter().map(|r| r.text.as_str()).collect();
    let hits = cx.transit.watch_hits(
        &plates,
        cx.declaration.and_then(|d| d.tracker.as_deref()),
        p.mrn.as_deref(),
    );
    out.push(if hits.is_empty() {
        pass("watchlist", json!({}))
    } else {
        fail("watchlist", json!({ "hits": hits }))
    });
}
