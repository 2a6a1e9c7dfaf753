//! A passage: one vehicle crossing one lane, built from the readings the assembler gave it,
//! serialised as the body of a `passage` event (`edge/schemas/passage.schema.json`).

use serde::Serialize;
use serde_json::Value;

use acsgd_drivers::lane::Body;

use super::lane::{Closed, Input, Millis, PlateImage};
use super::plates::{self, PlateMatch};
use super::radiation::{self, GammaResult, NeutronResult};
use super::rules::{Rule, Verdict};
use super::settings::{Channel, RadiationSettings};
use super::trackers::SealFlags;
use crate::View;

/// Scan intervals kept in the passage's radiation profile (60 s); longer occupancies are
/// summed down to this many points.
pub const PROFILE_POINTS: usize = 300;

#[derive(Debug, Clone, Serialize)]
pub struct Passage {
    /// `{lane}-{start ms}`: stable across replays of the same trace.
    pub id: String,
    pub lane: String,
    pub start: String,
    pub end: String,
    pub duration_s: f64,
    /// The vehicle was still on the lane after `max_presence_s`.
    pub stopped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wim: Option<Wim>,
    pub plates: Vec<PlateRead>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mrn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declaration: Option<DeclarationMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub radiation: Option<Radiation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealView>,
    pub rules: Vec<Outcome>,
    pub channel: Channel,
    pub reasons: Vec<Rule>,
    /// Readings that made up the passage.
    pub readings: usize,
    /// Some of its readings came back from the lane journal after the appliance restarted
    /// (a crash while the vehicle was on the lane); absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Axle {
    pub index: u8,
    pub load_kg: u32,
    pub left_kg: u16,
    pub right_kg: u16,
    /// From the previous axle; 0 for the first.
    pub spacing_m: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Wim {
    pub axles: Vec<Axle>,
    pub gross_kg: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length_m: Option<f64>,
    pub class: u8,
    /// The scale's own verdict on the record: `ok` or the error.
    pub status: &'static str,
    /// Vehicle records the scale sent during this presence (more than one: the vehicle
    /// reversed, or the scale split it).
    pub records: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlateRead {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<View>,
    pub confidence: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<&'static str>,
    /// The box and crop, where the appliance read the plate itself.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub image: Option<Box<PlateImage>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeclarationMatch {
    pub mrn: String,
    /// The plate as declared, and the read that matched it.
    pub declared_plate: String,
    pub read_plate: String,
    #[serde(rename = "match")]
    pub how: PlateMatch,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gross_kg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    pub goods: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracker: Option<String>,
}

/// The appliance's own radiation verdict on a passage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RadiationVerdict {
    Clear,
    Gamma,
    Neutron,
    GammaNeutron,
}

#[derive(Debug, Clone, Serialize)]
pub struct Radiation {
    pub verdict: RadiationVerdict,
    /// The portal signalled an alarm itself (`GA`/`NA` lines).
    pub portal_alarm: bool,
    pub gamma: GammaResult,
    pub neutron: NeutronResult,
    /// Scan intervals of 200 ms in the occupancy.
    pub intervals: usize,
    /// Summed gamma counts per interval (or per group of intervals, see `profile_step`).
    pub profile: Vec<u32>,
    pub profile_step: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SealView {
    pub tracker: String,
    pub heard: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fix: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_deviation_m: Option<f64>,
    pub flags: SealFlags,
}

/// One rule's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub rule: Rule,
    pub result: Verdict,
    pub detail: Value,
}

/// The sensor-derived part of a passage, before association and rules.
#[derive(Debug, Clone)]
pub struct Facts {
    pub start: Millis,
    pub end: Millis,
    pub stopped: bool,
    pub wim: Option<Wim>,
    pub speed_kmh: Option<f64>,
    pub plates: Vec<PlateRead>,
    /// Gamma and neutron scan intervals, and whether the portal alarmed.
    pub gamma: Vec<[u32; 4]>,
    pub neutron: Vec<[u32; 4]>,
    pub portal_alarm: bool,
    pub readings: usize,
}

fn wim_status(error: u8) -> &'static str {
    use acsgd_drivers::lane::WimError as E;
    match error {
        E::OK => "ok",
        E::SPEED_OUT_OF_RANGE => "speed_out_of_range",
        E::ACCELERATION => "acceleration",
        E::OFF_SCALE => "off_scale",
        E::TWO_VEHICLES => "two_vehicles",
        E::SENSOR_FAULT => "sensor_fault",
        _ => "error",
    }
}

impl Facts {
    /// Sorts a closed passage's readings into facts.
    pub fn from_closed(c: &Closed) -> Facts {
        let mut f = Facts {
            start: c.start,
            end: c.end,
            stopped: c.stopped,
            wim: None,
            speed_kmh: None,
            plates: Vec::new(),
            gamma: Vec::new(),
            neutron: Vec::new(),
            portal_alarm: false,
            readings: c.items.len(),
        };
        // The WIM record: the valid one with the greatest gross mass (a vehicle that reversed
        // over the scale is weighed twice; the scale flags the partial one), else the last.
        let records: Vec<&Input> = c
            .items
            .iter()
            .map(|i| &i.input)
            .filter(|i| matches!(i, Input::Node(Body::Vehicle { .. })))
            .collect();
        let best = records
            .iter()
            .filter(|i| matches!(i, Input::Node(Body::Vehicle { error: 0, .. })))
            .max_by_key(|i| match i {
                Input::Node(Body::Vehicle { gross_kg, .. }) => *gross_kg,
                _ => 0,
            })
            .or(records.last());
        if let Some(Input::Node(Body::Vehicle {
            vehicle,
            gross_kg,
            speed_dkmh,
            length_cm,
            class,
            error,
            ..
        })) = best
        {
            let mut axles: Vec<Axle> = Vec::new();
            for it in &c.items {
                if let Input::Node(Body::Axle {
                    vehicle: v,
                    index,
                    left_kg,
                    right_kg,
                    spacing_mm,
                    ..
                }) = it.input
                {
                    if v == *vehicle && !axles.iter().any(|a| a.index == index) {
                        axles.push(Axle {
                            index,
                            load_kg: left_kg as u32 + right_kg as u32,
                            left_kg,
                            right_kg,
                            spacing_m: spacing_mm as f64 / 1000.0,
                        });
                    }
                }
            }
            axles.sort_by_key(|a| a.index);
            f.speed_kmh = Some(*speed_dkmh as f64 / 10.0);
            f.wim = Some(Wim {
                axles,
                gross_kg: *gross_kg,
                length_m: (*length_cm > 0).then(|| *length_cm as f64 / 100.0),
                class: *class,
                status: wim_status(*error),
                records: records.len(),
            });
        }
        for it in &c.items {
            match &it.input {
                Input::Scan {
                    gamma,
                    portal_alarm,
                    counts,
                } => {
                    f.portal_alarm |= portal_alarm;
                    if *gamma {
                        f.gamma.push(*counts);
                    } else {
                        f.neutron.push(*counts);
                    }
                }
                Input::Plate {
                    text,
                    confidence,
                    view,
                    image,
                } => {
                    let n = plates::normalise(text);
                    // One read per view: the most confident.
                    match f.plates.iter_mut().find(|p| p.view == *view) {
                        Some(p) if p.confidence >= *confidence => {}
                        Some(p) => {
                            p.country = plates::country(&n);
                            p.text = n;
                            p.confidence = *confidence;
                            p.image = image.clone();
                        }
                        None => f.plates.push(PlateRead {
                            country: plates::country(&n),
                            text: n,
                            view: *view,
                            confidence: *confidence,
                            image: image.clone(),
                        }),
                    }
                }
                _ => {}
            }
        }
        f.plates.sort_by_key(|p| p.view.map(|v| v as u8));
        f
    }

    /// The radiation verdict, given the backgrounds (gamma per detector with the seconds of
    /// lines it is the mean of, neutron summed).
    pub fn radiation(
        &self,
        gamma_bg: Option<([f64; 4], f64)>,
        neutron_bg: Option<f64>,
        s: &RadiationSettings,
    ) -> Option<Radiation> {
        if self.gamma.is_empty() && self.neutron.is_empty() {
            return None;
        }
        // Without background lines yet, the occupancy's own median stands in (the shadow
        // estimate then reads 1): the test still finds peaks, not a uniformly hot load.
        let (gbg, gbg_s) = gamma_bg.unwrap_or_else(|| {
            (
                median_rate(&self.gamma),
                self.gamma.len() as f64 * radiation::INTERVAL_S,
            )
        });
        let gamma =
            radiation::gamma_test(gbg, gbg_s, &self.gamma, s.window_s, s.gamma_false_alarms);
        let neutron = radiation::neutron_test(
            neutron_bg.unwrap_or(0.0),
            &self.neutron,
            s.window_s,
            s.neutron_false_alarms,
        );
        let verdict = match (gamma.alarm, neutron.alarm) {
            (false, false) => RadiationVerdict::Clear,
            (true, false) => RadiationVerdict::Gamma,
            (false, true) => RadiationVerdict::Neutron,
            (true, true) => RadiationVerdict::GammaNeutron,
        };
        let step = self.gamma.len().div_ceil(PROFILE_POINTS).max(1);
        let profile = self
            .gamma
            .chunks(step)
            .map(|c| c.iter().flat_map(|iv| iv.iter()).sum())
            .collect();
        Some(Radiation {
            verdict,
            portal_alarm: self.portal_alarm,
            gamma,
            neutron,
            intervals: self.gamma.len(),
            profile,
            profile_step: step,
        })
    }
}

/// Per-detector counts per second from the median interval of each detector.
fn median_rate(intervals: &[[u32; 4]]) -> [f64; 4] {
    let mut out = [0.0; 4];
    for (d, o) in out.iter_mut().enumerate() {
        let mut v: Vec<u32> = intervals.iter().map(|iv| iv[d]).collect();
        v.sort_unstable();
        *o = v.get(v.len() / 2).copied().unwrap_or(0) as f64 / radiation::INTERVAL_S;
    }
    out
}
