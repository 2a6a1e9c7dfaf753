//! Central's demo route (`central/demo/`): trucks that leave Korgas with declarations central
//! routes, and what the second post on the route, Kordai, sees of them. Each truck's story is
//! fixed here, and with it the state central must end in: one arrives in time, one late, one
//! never (overdue), one at a post not on its itinerary (diverted), one with an overweight
//! axle flagged on the way.
//!
//! The clock is compressed so the demo and its test run in minutes: the leg Korgas → Kordai is
//! allowed [`LEG_H`] hours (72 s), and the traces' offsets are seconds, not hours. Every story
//! is at least 25 s away from its deadline on either side, so a loaded machine that starts or
//! plays late by a few seconds cannot turn one into another. Central judges in event time, and
//! the appliances stamp what they play at the wall clock, so both posts play from one moment
//! (`acsgd demo --start-at-ms`).

use serde_json::{json, Value};

use crate::simulate::{self, Options, Rng, Special, Truck};

/// The posts of the route and one beside it, with their locations (for central's map).
pub const POSTS: [(&str, &str, f64, f64); 3] = [
    ("korgas", "Korgas", 44.2125, 80.4089),
    ("kordai", "Kordai", 43.0442, 74.7133),
    ("gani-muratbaev", "Gani Muratbaev", 41.3636, 69.3631),
];

/// The time allowed from Korgas to Kordai, hours (72 s: the demo's compressed clock).
pub const LEG_H: f64 = 0.02;
/// The time allowed from Korgas to Gani Muratbaev, farther away (6 min: after the demo ends, so
/// the truck seen at Kordai instead stays diverted, not overdue).
pub const FAR_LEG_H: f64 = 0.1;

/// How long each post's trace runs, seconds.
pub const DURATION_S: u64 = 150;

/// One truck's story.
#[derive(Debug, Clone)]
pub struct Story {
    pub truck: Truck,
    /// The posts it is declared to pass, in order, with the hours allowed to reach each.
    pub itinerary: &'static [(&'static str, f64)],
    /// When it reaches Kordai (ms from the start), if it does.
    pub kordai_ms: Option<i64>,
    /// The state central must end in, and the flags it must carry.
    pub state: &'static str,
    pub flags: &'static [&'static str],
    pub what: &'static str,
}

/// The demo's files: each post's trace and the declarations central is given.
pub struct Corridor {
    pub stories: Vec<Story>,
    pub korgas: String,
    pub kordai: String,
    /// One declaration per truck, as `POST /api/declarations` takes it.
    pub declarations: Vec<Value>,
}

const ROUTE: &[(&str, f64)] = &[("korgas", 0.0), ("kordai", LEG_H)];
const ELSEWHERE: &[(&str, f64)] = &[("korgas", 0.0), ("gani-muratbaev", FAR_LEG_H)];

/// The route's trucks and traces (deterministic).
pub fn corridor() -> Corridor {
    let mut rng = Rng::new(4207);
    // (Korgas lane and arrival s, Kordai arrival s, itinerary, finding, end state, flags).
    type Plan = (
        &'static str,
        i64,
        Option<i64>,
        &'static [(&'static str, f64)],
        Special,
        &'static str,
        &'static [&'static str],
        &'static str,
    );
    let plan: [Plan; 6] = [
        (
            "1",
            8,
            Some(40),
            ROUTE,
            Special::None,
            "arrived",
            &[],
            "arrives in time",
        ),
        (
            "2",
            14,
            Some(48),
            ROUTE,
            Special::None,
            "arrived",
            &[],
            "arrives in time",
        ),
        (
            "1",
            20,
            Some(125),
            ROUTE,
            Special::None,
            "arrived",
            &["late_arrival"],
            "arrives half a minute after its leg's deadline",
        ),
        (
            "2",
            26,
            None,
            ROUTE,
            Special::None,
            "overdue",
            &[],
            "never reaches Kordai",
        ),
        (
            "1",
            32,
            Some(60),
            ELSEWHERE,
            Special::None,
            "diverted",
            &["off_itinerary"],
            "declared to Gani Muratbaev, seen at Kordai",
        ),
        (
            "2",
            38,
            Some(70),
            ROUTE,
            Special::OverweightAxle,
            "arrived",
            &["weight_discrepancy"],
            "an overweight axle at Korgas, arrives in time",
        ),
    ];
    let mut stories = Vec::new();
    for (n, (lane, at_s, kordai_s, itinerary, special, state, flags, what)) in
        plan.into_iter().enumerate()
    {
        let mut truck = simulate::truck(&mut rng, lane, at_s * 1000, 900 + n as u32, special);
        // Steady speeds, so that two trucks never share a lane's loops.
        truck.speed_kmh = 10.0 + n as f64 * 0.4;
        stories.push(Story {
            truck,
            itinerary,
            kordai_ms: kordai_s.map(|s| s * 1000),
            state,
            flags,
            what,
        });
    }
    let options = Options {
        seed: 4207,
        duration_s: DURATION_S,
        lanes: vec!["1".into(), "2".into()],
        start_unix: 1_795_161_600,
        ..Options::default()
    };
    let at_korgas: Vec<Truck> = stories.iter().map(|s| s.truck.clone()).collect();
    // At Kordai the trucks come in the order they arrive, taking turns on its two lanes.
    let mut arriving: Vec<&Story> = stories.iter().filter(|s| s.kordai_ms.is_some()).collect();
    arriving.sort_by_key(|s| s.kordai_ms);
    let at_kordai: Vec<Truck> = arriving
        .iter()
        .enumerate()
        .map(|(i, s)| Truck {
            lane: if i % 2 == 0 { "1" } else { "2" }.into(),
            arrival_ms: s.kordai_ms.unwrap_or_default(),
            // The same truck, loaded as it was: an overweight axle is overweight again.
            ..s.truck.clone()
        })
        .collect();
    let korgas = simulate::sensor_trace(&options, &at_korgas, &mut rng);
    let kordai = simulate::sensor_trace(&options, &at_kordai, &mut rng);
    let declarations = stories
        .iter()
        .map(|s| {
            let t = &s.truck;
            let itinerary: Vec<Value> = s
                .itinerary
                .iter()
                .enumerate()
                .map(|(i, (p, h))| {
                    if i == 0 {
                        json!({"post": p})
                    } else {
                        json!({"post": p, "within_h": h})
                    }
                })
                .collect();
            json!({
                "mrn": t.mrn,
                "plates": [t.plate_front, t.plate_rear],
                "gross_kg": (t.gross_kg() / 10.0).round() * 10.0,
                "goods": [{"hs": "850440", "description": "static converters"}],
                "itinerary": itinerary,
            })
        })
        .collect();
    Corridor {
        stories,
        korgas,
        kordai,
        declarations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_story_is_far_from_its_deadline() {
        let c = corridor();
        for s in &c.stories {
            let leg_ms = (s.itinerary[1].1 * 3_600_000.0) as i64;
            let deadline = s.truck.arrival_ms + leg_ms;
            if s.state == "diverted" {
                // Not overdue at its own next post while the demo runs, nor soon after.
                assert!(deadline > (DURATION_S as i64 + 120) * 1000);
            }
            if let Some(at) = s.kordai_ms {
                let margin = (deadline - at).abs();
                assert!(margin >= 25_000, "{}: {margin} ms", s.truck.mrn);
                assert_eq!(at > deadline, s.flags.contains(&"late_arrival"));
            }
        }
        // The last of them is over well before the traces end.
        let last = c.stories.iter().filter_map(|s| s.kordai_ms).max().unwrap();
        assert!(last + 15_000 < DURATION_S as i64 * 1000);
        assert_eq!(c.declarations.len(), c.stories.len());
    }
}
