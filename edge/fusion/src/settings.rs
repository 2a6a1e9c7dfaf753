//! The `[fusion]` and `[rules]` sections of the configuration: time windows of passage
//! assembly, rule thresholds and the channel each rule raises. Defaults are the EAEU /
//! Kazakhstan values from the design brief; every one can be overridden per post.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rules::Rule;

/// A setting out of range: its dotted key (`merge_gap_s`, `seal.silent_s`, with the tables
/// above it added by [`Invalid::under`]) and what is wrong with it. The config loader turns
/// the key into the line of the file that sets it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct Invalid {
    pub key: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(key: String, problem: String) -> Invalid {
        Invalid { key, problem }
    }

    /// The same problem seen from the table above: `fusion` and `merge_gap_s` give
    /// `fusion.merge_gap_s`.
    pub fn under(self, table: &str) -> Invalid {
        Invalid {
            key: format!("{table}.{}", self.key),
            problem: self.problem,
        }
    }
}

/// `[fusion]`: how readings become passages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FusionSettings {
    /// A reading up to this long before a vehicle's presence starts belongs to it (a camera
    /// upstream of the loop, a slow RPM line).
    pub window_before_s: f64,
    /// …and up to this long after it ends (the WIM record and rear plate come last).
    pub window_after_s: f64,
    /// Gaps in presence shorter than this are one vehicle (the tractor–trailer gap, a loop
    /// that flickers when a vehicle rocks or reverses a little).
    pub merge_gap_s: f64,
    /// How late a reading may arrive and still join its passage; a passage is closed this long
    /// after its window ends. Raising it delays every verdict by as much.
    pub lateness_s: f64,
    /// Speed used to shift a sensor's readings by its distance along the lane, km/h.
    pub nominal_speed_kmh: f64,
    /// A presence longer than this is closed anyway and reported as a stopped vehicle.
    pub max_presence_s: f64,
    /// A lane sensor that sends nothing for this long is reported down.
    pub sensor_silent_s: f64,
    /// Readings buffered per lane at most; beyond it the oldest are reported unmatched.
    pub max_pending: usize,
    /// Trackers remembered at most (the least recently heard is forgotten first).
    pub max_trackers: usize,
    /// A tracker not heard for this long is forgotten.
    pub tracker_forget_s: f64,
}

impl Default for FusionSettings {
    fn default() -> Self {
        FusionSettings {
            window_before_s: 2.0,
            window_after_s: 3.0,
            merge_gap_s: 0.8,
            lateness_s: 2.0,
            nominal_speed_kmh: 10.0,
            max_presence_s: 600.0,
            sensor_silent_s: 120.0,
            max_pending: 100_000,
            max_trackers: 20_000,
            tracker_forget_s: 43_200.0,
        }
    }
}

impl FusionSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        let pos = |k: &str, v: f64, max: f64| -> Result<(), Invalid> {
            if v.is_finite() && v > 0.0 && v <= max {
                Ok(())
            } else {
                Err(Invalid::new(
                    k.into(),
                    format!("must be above 0 and at most {max}, got {v}"),
                ))
            }
        };
        pos("window_before_s", self.window_before_s, 60.0)?;
        pos("window_after_s", self.window_after_s, 60.0)?;
        pos("merge_gap_s", self.merge_gap_s, 30.0)?;
        pos("lateness_s", self.lateness_s, 600.0)?;
        pos("nominal_speed_kmh", self.nominal_speed_kmh, 120.0)?;
        pos("max_presence_s", self.max_presence_s, 86_400.0)?;
        pos("sensor_silent_s", self.sensor_silent_s, 86_400.0)?;
        pos("tracker_forget_s", self.tracker_forget_s, 30.0 * 86_400.0)?;
        if self.window_after_s < self.merge_gap_s {
            return Err(Invalid::new(
                "window_after_s".into(),
                format!(
                    "must be at least merge_gap_s ({}), got {}",
                    self.merge_gap_s, self.window_after_s
                ),
            ));
        }
        if self.max_pending < 100 {
            return Err(Invalid::new(
                "max_pending".into(),
                "must be at least 100".into(),
            ));
        }
        if self.max_trackers == 0 {
            return Err(Invalid::new(
                "max_trackers".into(),
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The risk channel of a passage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Release.
    Green,
    /// Documentary check.
    Yellow,
    /// Physical inspection.
    Red,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Green => "green",
            Channel::Yellow => "yellow",
            Channel::Red => "red",
        }
    }
}

/// `[rules]`: thresholds. Masses in tonnes, lengths in metres.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleSettings {
    /// Single-axle load limit.
    pub axle_t: f64,
    /// Axles closer than this form a group (tandem, tridem).
    pub group_spacing_m: f64,
    /// Tandem (two-axle group) limit.
    pub tandem_t: f64,
    /// Tridem (three or more axles in a group) limit.
    pub tridem_t: f64,
    /// Gross limits for 2, 3, 4, 5 and 6-or-more axles.
    pub gross_t: [f64; 5],
    pub height_m: f64,
    pub width_m: f64,
    pub length_m: f64,
    /// OIML R134 vehicle-mass accuracy class of the scale (0.2 … 10). The in-service maximum
    /// permissible error is twice the class in percent; a measured gross mass further than
    /// that from the declared one fails `declared_mass`.
    pub wim_class: f64,
    /// Radiation alarm settings.
    pub radiation: RadiationSettings,
    /// Seal and tracker settings.
    pub seal: SealSettings,
    /// Channel raised when a rule fails, overriding the defaults (see `Rule::default_channel`), e.g.
    /// `channels = { axle_load = "red" }`.
    pub channels: BTreeMap<String, Channel>,
}

impl Default for RuleSettings {
    fn default() -> Self {
        RuleSettings {
            axle_t: 10.0,
            group_spacing_m: 1.8,
            tandem_t: 18.0,
            tridem_t: 24.0,
            gross_t: [18.0, 25.0, 32.0, 38.0, 44.0],
            height_m: 4.0,
            width_m: 2.55,
            length_m: 20.0,
            wim_class: 5.0,
            radiation: RadiationSettings::default(),
            seal: SealSettings::default(),
            channels: BTreeMap::new(),
        }
    }
}

/// `[rules.radiation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RadiationSettings {
    /// False gamma alarms allowed per occupancy (spread over every window and channel tested).
    pub gamma_false_alarms: f64,
    /// False neutron alarms allowed per occupancy.
    pub neutron_false_alarms: f64,
    /// Background is the mean of the background lines of this many seconds before occupancy.
    pub background_s: f64,
    /// Length of the sliding foreground window, seconds (whole 200 ms intervals).
    pub window_s: f64,
}

impl Default for RadiationSettings {
    fn default() -> Self {
        RadiationSettings {
            gamma_false_alarms: 0.0005,
            neutron_false_alarms: 0.0005,
            background_s: 60.0,
            window_s: 1.0,
        }
    }
}

/// `[rules.seal]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SealSettings {
    /// A tracker heard from longer ago than this at the passage fails `seal_silent`.
    pub silent_s: f64,
    /// The post's position `[lat, lon]`; absent: the geofence rule is skipped.
    pub post_location: Option<[f64; 2]>,
    /// The last fix must be within this of the post.
    pub geofence_m: f64,
}

impl Default for SealSettings {
    fn default() -> Self {
        SealSettings {
            silent_s: 900.0,
            post_location: None,
            geofence_m: 2000.0,
        }
    }
}

impl RuleSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        let pos = |k: &str, v: f64| -> Result<(), Invalid> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Invalid::new(
                    k.into(),
                    format!("must be a positive number, got {v}"),
                ))
            }
        };
        pos("axle_t", self.axle_t)?;
        pos("group_spacing_m", self.group_spacing_m)?;
        pos("tandem_t", self.tandem_t)?;
        pos("tridem_t", self.tridem_t)?;
        for v in self.gross_t {
            pos("gross_t", v)?;
        }
        pos("height_m", self.height_m)?;
        pos("width_m", self.width_m)?;
        pos("length_m", self.length_m)?;
        if !(0.1..=20.0).contains(&self.wim_class) {
            return Err(Invalid::new(
                "wim_class".into(),
                format!(
                    "an OIML R134 class is between 0.2 and 10, got {}",
                    self.wim_class
                ),
            ));
        }
        let r = &self.radiation;
        for (k, v) in [
            ("radiation.gamma_false_alarms", r.gamma_false_alarms),
            ("radiation.neutron_false_alarms", r.neutron_false_alarms),
        ] {
            if !(v > 0.0 && v < 0.5) {
                return Err(Invalid::new(
                    k.into(),
                    format!("must be between 0 and 0.5, got {v}"),
                ));
            }
        }
        pos("radiation.background_s", r.background_s)?;
        if !(0.2..=10.0).contains(&r.window_s) {
            return Err(Invalid::new(
                "radiation.window_s".into(),
                format!("must be between 0.2 and 10 seconds, got {}", r.window_s),
            ));
        }
        pos("seal.silent_s", self.seal.silent_s)?;
        pos("seal.geofence_m", self.seal.geofence_m)?;
        if let Some([lat, lon]) = self.seal.post_location {
            if !((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
                return Err(Invalid::new(
                    "seal.post_location".into(),
                    format!("[{lat}, {lon}] is not a latitude and longitude"),
                ));
            }
        }
        for k in self.channels.keys() {
            if Rule::named(k).is_none() {
                return Err(Invalid::new(
                    format!("channels.{k}"),
                    format!(
                        "no rule {k:?}; rules are {}",
                        Rule::ALL.map(Rule::as_str).join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The channel a failed `rule` raises.
    pub fn channel(&self, rule: Rule) -> Channel {
        self.channels
            .get(rule.as_str())
            .copied()
            .unwrap_or_else(|| rule.default_channel())
    }
}
