//! What a tracker's numbered inputs mean for its seal, by device model (`[[seal_models]]` in
//! the configuration).
//!
//! EGTS and Wialon report a seal's state in fields of their own; Teltonika (IO elements
//! `io1`, `io252`…), Galileosky (`tag_xx`) and Arnavi report only numbered values whose meaning
//! depends on the device model and on how the seal is wired to it. A model lists, for each
//! seal flag, conditions on those values (`"io1 = 0"`: the seal loop on DIN1 is open); a flag is
//! raised when any of its conditions holds. A model applies to the devices it lists by id
//! (IMEI) and to every device on a sensor whose `seal_model` names it. A reading that already
//! carries a seal state from its protocol keeps it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use acsgd_drivers::reading::Seal;
use acsgd_drivers::Reading;
use serde_json::Value;

use serde::Deserialize;

use crate::settings::Invalid;
use crate::Setup;

/// A tracker model's seal wiring (`[[seal_models]]`): for each seal flag, conditions on the
/// values the device reports (`"io1 = 0"`); the flag is raised when any holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealModel {
    /// The name a sensor's `seal_model` refers to.
    pub name: String,
    /// Devices (IMEI or the protocol's device id) of this model, wherever they connect.
    #[serde(default)]
    pub devices: Vec<String>,
    /// The seal's wire or case opened.
    #[serde(default)]
    pub tamper: Vec<String>,
    /// The panic input or the device's own alarm.
    #[serde(default)]
    pub alarm: Vec<String>,
    /// External power lost.
    #[serde(default)]
    pub power_lost: Vec<String>,
    /// The GNSS receiver or antenna failed (jamming, a cut antenna).
    #[serde(default)]
    pub gnss_fault: Vec<String>,
}

/// How a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// `<attribute> <op> <number>`, e.g. `io1 = 0` or `io69 != 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    key: String,
    op: Op,
    value: f64,
}

impl FromStr for Condition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?}: expected \"<attribute> <op> <number>\" with op one of = != < <= > >= (e.g. \"io1 = 0\")"
            )
        };
        // Two-character operators first, so "<=" is not read as "<".
        let (at, op, len) = [
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("=", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .iter()
        .find_map(|(t, op)| s.find(t).map(|i| (i, *op, t.len())))
        .ok_or_else(bad)?;
        let key = s[..at].trim();
        let value: f64 = s[at + len..].trim().parse().map_err(|_| bad())?;
        if key.is_empty()
            || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || !value.is_finite()
        {
            return Err(bad());
        }
        Ok(Condition {
            key: key.to_string(),
            op,
            value,
        })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        };
        write!(f, "{} {op} {}", self.key, self.value)
    }
}

impl Condition {
    /// `None` when the reading does not carry the attribute (nothing is known, not "false").
    fn holds(&self, attributes: &BTreeMap<String, Value>) -> Option<bool> {
        let v = attributes.get(&self.key)?.as_f64()?;
        Some(match self.op {
            Op::Eq => v == self.value,
            Op::Ne => v != self.value,
            Op::Lt => v < self.value,
            Op::Le => v <= self.value,
            Op::Gt => v > self.value,
            Op::Ge => v >= self.value,
        })
    }
}

/// One model's conditions per seal flag.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SealMap {
    pub name: String,
    tamper: Vec<Condition>,
    alarm: Vec<Condition>,
    power_lost: Vec<Condition>,
    gnss_fault: Vec<Condition>,
}

impl SealMap {
    /// Parses a configured model; the error names the key (`tamper[1]`) and the problem.
    pub fn parse(m: &SealModel) -> Result<SealMap, Invalid> {
        let list = |key: &str, v: &[String]| -> Result<Vec<Condition>, Invalid> {
            v.iter()
                .enumerate()
                .map(|(i, s)| {
                    s.parse()
                        .map_err(|e: String| Invalid::new(format!("{key}[{i}]"), e))
                })
                .collect()
        };
        Ok(SealMap {
            name: m.name.clone(),
            tamper: list("tamper", &m.tamper)?,
            alarm: list("alarm", &m.alarm)?,
            power_lost: list("power_lost", &m.power_lost)?,
            gnss_fault: list("gnss_fault", &m.gnss_fault)?,
        })
    }

    /// The seal state these values give, or `None` when the reading carries none of the
    /// attributes the model looks at.
    pub fn seal(&self, attributes: &BTreeMap<String, Value>) -> Option<Seal> {
        let mut known = false;
        let mut any = |conds: &[Condition]| {
            conds
                .iter()
                .fold(false, |raised, c| match c.holds(attributes) {
                    Some(h) => {
                        known = true;
                        raised || h
                    }
                    None => raised,
                })
        };
        let seal = Seal {
            tamper: any(&self.tamper),
            alarm: any(&self.alarm),
            power_lost: any(&self.power_lost),
            gnss_fault: any(&self.gnss_fault),
            from_memory: false,
            event: None,
        };
        known.then_some(seal)
    }
}

/// Every configured model, indexed by device and by sensor.
#[derive(Debug, Clone, Default)]
pub struct SealModels {
    by_device: HashMap<String, Arc<SealMap>>,
    by_sensor: HashMap<String, Arc<SealMap>>,
}

impl SealModels {
    /// From a validated setup (validation has parsed every model already).
    pub fn new(config: &Setup) -> SealModels {
        let mut out = SealModels::default();
        let mut by_name = HashMap::new();
        for m in &config.seal_models {
            let Ok(map) = SealMap::parse(m) else { continue };
            let map = Arc::new(map);
            for d in &m.devices {
                out.by_device.insert(d.clone(), map.clone());
            }
            by_name.insert(m.name.clone(), map);
        }
        for s in &config.sensors {
            if let Some(map) = s.seal_model.as_ref().and_then(|n| by_name.get(n)) {
                out.by_sensor.insert(s.id.clone(), map.clone());
            }
        }
        out
    }

    fn model(&self, sensor: &str, device: Option<&str>) -> Option<&SealMap> {
        device
            .and_then(|d| self.by_device.get(d))
            .or_else(|| self.by_sensor.get(sensor))
            .map(Arc::as_ref)
    }

    /// The readings with a seal state filled in where a model applies and the protocol gave
    /// none; borrowed unchanged when nothing applies (the common case).
    pub fn apply<'a>(&self, sensor: &str, readings: &'a [Reading]) -> Cow<'a, [Reading]> {
        if self.by_device.is_empty() && self.by_sensor.is_empty() {
            return Cow::Borrowed(readings);
        }
        let mapped = |r: &Reading| -> Option<Reading> {
            match r {
                Reading::Position(p) if p.seal.is_none() => {
                    let seal = self
                        .model(sensor, p.device.as_deref())?
                        .seal(&p.attributes)?;
                    let mut p = p.clone();
                    p.seal = Some(seal);
                    Some(Reading::Position(p))
                }
                Reading::Telemetry(t) if t.seal.is_none() => {
                    let seal = self
                        .model(sensor, t.device.as_deref())?
                        .seal(&t.attributes)?;
                    let mut t = t.clone();
                    t.seal = Some(seal);
                    Some(Reading::Telemetry(t))
                }
                _ => None,
            }
        };
        let changed: Vec<Option<Reading>> = readings.iter().map(mapped).collect();
        if changed.iter().all(Option::is_none) {
            return Cow::Borrowed(readings);
        }
        Cow::Owned(
            changed
                .into_iter()
                .zip(readings)
                .map(|(m, r)| m.unwrap_or_else(|| r.clone()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(tamper: &[&str], power: &[&str]) -> SealMap {
        SealMap::parse(&SealModel {
            name: "fmb-din1".into(),
            devices: vec![],
            tamper: tamper.iter().map(|s| s.to_string()).collect(),
            alarm: vec![],
            power_lost: power.iter().map(|s| s.to_string()).collect(),
            gnss_fault: vec![],
        })
        .unwrap()
    }

    #[test]
    fn conditions_parse_and_say_what_is_wrong() {
        for (s, key, op, v) in [
            ("io1 = 0", "io1", Op::Eq, 0.0),
            ("io1==0", "io1", Op::Eq, 0.0),
            ("io252 != 0", "io252", Op::Ne, 0.0),
            ("tag_46 >= 4", "tag_46", Op::Ge, 4.0),
            ("io9 <= 1200.5", "io9", Op::Le, 1200.5),
            ("io9 < 12", "io9", Op::Lt, 12.0),
        ] {
            let c: Condition = s.parse().unwrap();
            assert_eq!((c.key.as_str(), c.op, c.value), (key, op, v), "{s}");
        }
        for bad in ["io1", "= 0", "io1 = open", "io 1 = 0", "io1 = inf"] {
            let e = bad.parse::<Condition>().unwrap_err();
            assert!(e.contains("expected"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_flag_is_raised_when_any_condition_holds_and_absent_values_say_nothing() {
        let m = model(&["io1 = 0", "io2 = 1"], &["io252 = 1"]);
        let attrs = |v: Value| -> BTreeMap<String, Value> { serde_json::from_value(v).unwrap() };
        let s = m.seal(&attrs(json!({"io1": 0, "io252": 0}))).unwrap();
        assert!(s.tamper && !s.power_lost);
        let s = m.seal(&attrs(json!({"io1": 1, "io2": 1}))).unwrap();
        assert!(s.tamper, "the second condition");
        let s = m.seal(&attrs(json!({"io1": 1, "io252": 1}))).unwrap();
        assert!(!s.tamper && s.power_lost);
        // A record without any of the model's inputs tells nothing about the seal.
        assert_eq!(m.seal(&attrs(json!({"io66": 12000}))), None);
    }
}
