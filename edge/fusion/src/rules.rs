//! Transit-control rules: each looks at a passage and says `pass`, `fail` (with the numbers
//! that made it fail) or `skip` (not applicable, or nothing to check it with). A failed rule
//! raises its channel (configurable per rule, defaults in [`Rule::default_channel`]); the passage's channel is
//! the highest raised, green when none is.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::lane::Millis;
use super::passage::{Outcome, Passage, Wim};
use super::settings::{Channel, RuleSettings};
use super::trackers::Tracker;
use super::transit::{distance_m, distance_to_line_m, Declaration, Transit};

/// A transit-control rule (its JSON name is the snake_case one, e.g. `axle_load`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    AxleLoad,
    AxleGroup,
    GrossMass,
    Dimensions,
    DeclaredMass,
    Wim,
    RadiationGamma,
    RadiationNeutron,
    PortalAlarm,
    RadiationMissing,
    SealTamper,
    SealSilent,
    SealGeofence,
    RouteDeviation,
    PlateUnread,
    NoDeclaration,
    SplitDeclarations,
    Watchlist,
    VehicleStopped,
    // Alerts outside any passage.
    PortalTamper,
    PortalFault,
    UnmatchedReading,
}

impl Rule {
    /// Every rule, in the order a passage lists them.
    pub const ALL: [Rule; 22] = [
        Rule::AxleLoad,
        Rule::AxleGroup,
        Rule::GrossMass,
        Rule::Dimensions,
        Rule::DeclaredMass,
        Rule::Wim,
        Rule::RadiationGamma,
        Rule::RadiationNeutron,
        Rule::PortalAlarm,
        Rule::RadiationMissing,
        Rule::SealTamper,
        Rule::SealSilent,
        Rule::SealGeofence,
        Rule::RouteDeviation,
        Rule::PlateUnread,
        Rule::NoDeclaration,
        Rule::SplitDeclarations,
        Rule::Watchlist,
        Rule::VehicleStopped,
        Rule::PortalTamper,
        Rule::PortalFault,
        Rule::UnmatchedReading,
    ];

    /// The name in events, settings and message keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::AxleLoad => "axle_load",
            Rule::AxleGroup => "axle_group",
            Rule::GrossMass => "gross_mass",
            Rule::Dimensions => "dimensions",
            Rule::DeclaredMass => "declared_mass",
            Rule::Wim => "wim",
            Rule::RadiationGamma => "radiation_gamma",
            Rule::RadiationNeutron => "radiation_neutron",
            Rule::PortalAlarm => "portal_alarm",
            Rule::RadiationMissing => "radiation_missing",
            Rule::SealTamper => "seal_tamper",
            Rule::SealSilent => "seal_silent",
            Rule::SealGeofence => "seal_geofence",
            Rule::RouteDeviation => "route_deviation",
            Rule::PlateUnread => "plate_unread",
            Rule::NoDeclaration => "no_declaration",
            Rule::SplitDeclarations => "split_declarations",
            Rule::Watchlist => "watchlist",
            Rule::VehicleStopped => "vehicle_stopped",
            Rule::PortalTamper => "portal_tamper",
            Rule::PortalFault => "portal_fault",
            Rule::UnmatchedReading => "unmatched_reading",
        }
    }

    /// The rule of that name.
    pub fn named(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The channel its failure raises unless `[rules.channels]` says otherwise.
    pub fn default_channel(self) -> Channel {
        match self {
            Rule::AxleLoad => Channel::Yellow,
            Rule::AxleGroup => Channel::Yellow,
            Rule::GrossMass => Channel::Yellow,
            Rule::Dimensions => Channel::Yellow,
            Rule::DeclaredMass => Channel::Red,
            Rule::Wim => Channel::Yellow,
            Rule::RadiationGamma => Channel::Red,
            Rule::RadiationNeutron => Channel::Red,
            Rule::PortalAlarm => Channel::Red,
            Rule::RadiationMissing => Channel::Yellow,
            Rule::SealTamper => Channel::Red,
            Rule::SealSilent => Channel::Yellow,
            Rule::SealGeofence => Channel::Yellow,
            Rule::RouteDeviation => Channel::Red,
            Rule::PlateUnread => Channel::Yellow,
            Rule::NoDeclaration => Channel::Yellow,
            Rule::SplitDeclarations => Channel::Yellow,
            Rule::Watchlist => Channel::Red,
            Rule::VehicleStopped => Channel::Yellow,
            Rule::PortalTamper => Channel::Red,
            Rule::PortalFault => Channel::Yellow,
            Rule::UnmatchedReading => Channel::Green,
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule said of a passage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    /// With the numbers that made it fail.
    Fail,
    /// Not applicable, or nothing to check it with.
    Skip,
}

/// An alert's severity, from the channel its rule raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl From<Channel> for Severity {
    fn from(c: Channel) -> Severity {
        match c {
            Channel::Red => Severity::High,
            Channel::Yellow => Severity::Medium,
            Channel::Green => Severity::Low,
        }
    }
}

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

fn pass(rule: Rule, detail: Value) -> Outcome {
    Outcome {
        rule,
        result: Verdict::Pass,
        detail,
    }
}
fn fail(rule: Rule, detail: Value) -> Outcome {
    Outcome {
        rule,
        result: Verdict::Fail,
        detail,
    }
}
fn skip(rule: Rule, why: &str) -> Outcome {
    Outcome {
        rule,
        result: Verdict::Skip,
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
        (Some(w), _) if w.status == "ok" && w.records <= 1 => pass(Rule::Wim, json!({})),
        (Some(w), _) if w.status == "ok" => pass(Rule::Wim, json!({ "records": w.records })),
        (Some(w), _) => fail(Rule::Wim, json!({ "status": w.status })),
        (None, true) => fail(Rule::Wim, json!({ "status": "missing" })),
        (None, false) => skip(Rule::Wim, "no scale on this lane"),
    });
    radiation_rules(p, cx, &mut out);
    seal_rules(p, cx, &mut out);
    identity_rules(p, cx, &mut out);
    out.push(if p.stopped {
        fail(Rule::VehicleStopped, json!({ "duration_s": p.duration_s }))
    } else {
        pass(Rule::VehicleStopped, json!({}))
    });
    let mut channel = Channel::Green;
    let mut reasons = Vec::new();
    for o in &out {
        if o.result == Verdict::Fail {
            let c = s.channel(o.rule);
            channel = channel.max(c);
            if c > Channel::Green {
                reasons.push(o.rule);
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
        for r in [Rule::AxleLoad, Rule::AxleGroup, Rule::GrossMass] {
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
        pass(Rule::AxleLoad, json!({ "limit_t": s.axle_t }))
    } else {
        fail(Rule::AxleLoad, json!({ "limit_t": s.axle_t, "over": over }))
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
            Rule::AxleGroup,
            json!({ "groups": groups.iter().filter(|g| g.len() >= 2).count() }),
        )
    } else {
        fail(Rule::AxleGroup, json!({ "over": over }))
    });
    let n = w.axles.len();
    out.push(if n < 2 {
        skip(Rule::GrossMass, "fewer than two axles weighed")
    } else {
        let limit_t = s.gross_t[n.min(6) - 2];
        let d = json!({ "axles": n, "gross_t": t(w.gross_kg as f64), "limit_t": limit_t });
        if w.gross_kg as f64 > limit_t * 1000.0 {
            fail(Rule::GrossMass, d)
        } else {
            pass(Rule::GrossMass, d)
        }
    });
    out.push(dimensions(Some(w), s));
}

fn dimensions(w: Option<&Wim>, s: &RuleSettings) -> Outcome {
    match w.and_then(|w| w.length_m) {
        // Height and width need a profile scanner; only length comes from the scale.
        Some(l) if l > s.length_m => fail(
            Rule::Dimensions,
            json!({ "length_m": l, "limit_m": s.length_m }),
        ),
        Some(l) => pass(
            Rule::Dimensions,
            json!({ "length_m": l, "limit_m": s.length_m }),
        ),
        None => skip(Rule::Dimensions, "no dimensions measured"),
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
                fail(Rule::DeclaredMass, detail)
            } else {
                pass(Rule::DeclaredMass, detail)
            }
        }
        (None, _) => skip(Rule::DeclaredMass, "no valid weighing"),
        (_, None) => skip(Rule::DeclaredMass, "no declared mass"),
    }
}

fn radiation_rules(p: &Passage, cx: &Context, out: &mut Vec<Outcome>) {
    if !cx.has_rpm {
        for r in [
            Rule::RadiationGamma,
            Rule::RadiationNeutron,
            Rule::PortalAlarm,
            Rule::RadiationMissing,
        ] {
            out.push(skip(r, "no portal on this lane"));
        }
        return;
    }
    let Some(r) = &p.radiation else {
        for r in [
            Rule::RadiationGamma,
            Rule::RadiationNeutron,
            Rule::PortalAlarm,
        ] {
            out.push(skip(r, "no scan data"));
        }
        out.push(fail(
            Rule::RadiationMissing,
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
        fail(Rule::RadiationGamma, gd)
    } else {
        pass(Rule::RadiationGamma, gd)
    });
    let n = &r.neutron;
    let nd =
        json!({ "counts": n.counts, "threshold": n.threshold, "background_cps": n.background_cps });
    out.push(if n.alarm {
        fail(Rule::RadiationNeutron, nd)
    } else {
        pass(Rule::RadiationNeutron, nd)
    });
    out.push(if r.portal_alarm {
        fail(Rule::PortalAlarm, json!({ "own_verdict": r.verdict }))
    } else {
        pass(Rule::PortalAlarm, json!({}))
    });
    out.push(match &cx.portal_fault {
        Some(f) => fail(Rule::RadiationMissing, json!({ "reason": f })),
        None if r.gamma.background_cps <= 0.0 => fail(
            Rule::RadiationMissing,
            json!({ "reason": "no gamma background" }),
        ),
        None => pass(Rule::RadiationMissing, json!({ "intervals": r.intervals })),
    });
}

fn seal_rules(p: &mut Passage, cx: &Context, out: &mut Vec<Outcome>) {
    let s = &cx.settings.seal;
    let Some(device) = cx.declaration.and_then(|d| d.tracker.clone()) else {
        for r in [
            Rule::SealTamper,
            Rule::SealSilent,
            Rule::SealGeofence,
            Rule::RouteDeviation,
        ] {
            out.push(skip(r, "no declared seal"));
        }
        return;
    };
    let Some(tr) = cx.tracker else {
        out.push(skip(Rule::SealTamper, "seal never heard"));
        out.push(fail(
            Rule::SealSilent,
            json!({ "tracker": device, "heard": false }),
        ));
        out.push(skip(Rule::SealGeofence, "seal never heard"));
        out.push(skip(Rule::RouteDeviation, "seal never heard"));
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
            Rule::SealTamper,
            json!({ "tracker": device, "flags": tr.flags }),
        )
    } else {
        pass(Rule::SealTamper, json!({}))
    });
    let silent_s = (cx.now - tr.last_seen) as f64 / 1000.0;
    out.push(if silent_s > s.silent_s {
        fail(
            Rule::SealSilent,
            json!({ "silent_s": silent_s.round(), "limit_s": s.silent_s }),
        )
    } else {
        pass(Rule::SealSilent, json!({ "silent_s": silent_s.round() }))
    });
    let distance = match (s.post_location, tr.last_fix) {
        (Some(post), Some(f)) => Some(distance_m(post, [f.lat, f.lon])),
        _ => None,
    };
    out.push(match (distance, s.post_location) {
        (Some(d), _) if d > s.geofence_m => fail(
            Rule::SealGeofence,
            json!({ "distance_m": d.round(), "limit_m": s.geofence_m }),
        ),
        (Some(d), _) => pass(Rule::SealGeofence, json!({ "distance_m": d.round() })),
        (None, None) => skip(Rule::SealGeofence, "post location not configured"),
        (None, Some(_)) => skip(Rule::SealGeofence, "no valid fix"),
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
        (None, _) => skip(Rule::RouteDeviation, "no corridor declared"),
        (Some(_), None) => skip(Rule::RouteDeviation, "no fixes"),
        (Some(_), Some((d, f, half))) if d > half => fail(
            Rule::RouteDeviation,
            json!({ "max_distance_m": d.round(), "limit_m": half, "at": [f.lat, f.lon] }),
        ),
        (Some(_), Some((d, _, half))) => pass(
            Rule::RouteDeviation,
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
        (true, true) => fail(Rule::PlateUnread, json!({})),
        (true, false) => skip(Rule::PlateUnread, "no camera on this lane"),
        (false, _) => pass(Rule::PlateUnread, json!({ "plates": p.plates.len() })),
    });
    let matched: Vec<&(String, Option<String>)> =
        cx.plate_mrns.iter().filter(|(_, m)| m.is_some()).collect();
    out.push(if p.plates.is_empty() {
        skip(Rule::NoDeclaration, "no plate read")
    } else if matched.is_empty() {
        fail(
            Rule::NoDeclaration,
            json!({ "plates": p.plates.iter().map(|r| &r.text).collect::<Vec<_>>() }),
        )
    } else {
        pass(Rule::NoDeclaration, json!({ "mrn": p.mrn }))
    });
    let mut mrns: Vec<&str> = matched.iter().filter_map(|(_, m)| m.as_deref()).collect();
    mrns.sort_unstable();
    mrns.dedup();
    out.push(if mrns.len() > 1 {
        fail(Rule::SplitDeclarations,
            json!({ "plates": cx.plate_mrns.iter().map(|(p, m)| json!({"plate": p, "mrn": m})).collect::<Vec<_>>() }),
        )
    } else {
        pass(Rule::SplitDeclarations, json!({}))
    });
    let plates: Vec<&str> = p.plates.iter().map(|r| r.text.as_str()).collect();
    let hits = cx.transit.watch_hits(
        &plates,
        cx.declaration.and_then(|d| d.tracker.as_deref()),
        p.mrn.as_deref(),
    );
    out.push(if hits.is_empty() {
        pass(Rule::Watchlist, json!({}))
    } else {
        fail(Rule::Watchlist, json!({ "hits": hits }))
    });
}
