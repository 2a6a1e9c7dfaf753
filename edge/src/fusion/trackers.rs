//! What the post knows about each seal / tracker: when it was last heard, its last fix, any
//! tamper it reported, and a thinned track for the route check, all *since its last passage
//! at this post* (a passage evaluates them and starts them afresh). Bounded: at most
//! `max_trackers` devices (the least recently heard is forgotten first), trackers silent for
//! `tracker_forget_s` are forgotten, and [`TRACK_POINTS`] points each.
//!
//! State is combined so that arrival order does not matter: the last fix is the one with the
//! latest fix time, `last_seen` the latest arrival, seal flags accumulate.

use std::collections::{HashMap, VecDeque};

use acsgd_drivers::reading::{Position, Seal};
use serde::Serialize;

use super::lane::Millis;
use super::transit::distance_m;

/// Track points kept per tracker: 128 km of road at the thinning distance; beyond it the
/// oldest go first.
pub const TRACK_POINTS: usize = 512;
/// A fix closer than this to the last kept one is not kept in the track (the corridors are
/// kilometres wide).
const THIN_M: f64 = 250.0;

/// A fix as kept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fix {
    pub lat: f64,
    pub lon: f64,
    /// Fix time, ms since the epoch (arrival time where the device sent none).
    pub time: Millis,
}

/// Seal flags a tracker has raised since it was first heard, with when each was first seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SealFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tamper: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarm: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_lost: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gnss_fault: Option<Millis>,
}

impl SealFlags {
    fn raise(&mut self, seal: &Seal, at: Millis) {
        let set = |slot: &mut Option<Millis>, on: bool| {
            if on {
                *slot = Some(slot.map_or(at, |t| t.min(at)));
            }
        };
        set(&mut self.tamper, seal.tamper);
        set(&mut self.alarm, seal.alarm);
        set(&mut self.power_lost, seal.power_lost);
        set(&mut self.gnss_fault, seal.gnss_fault);
    }

    pub fn any(&self) -> bool {
        self.tamper.is_some()
            || self.alarm.is_some()
            || self.power_lost.is_some()
            || self.gnss_fault.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct Tracker {
    pub last_seen: Millis,
    pub last_fix: Option<Fix>,
    pub flags: SealFlags,
    /// Thinned fixes in arrival order.
    pub track: VecDeque<Fix>,
}

/// Every tracker heard.
#[derive(Debug)]
pub struct Trackers {
    map: HashMap<String, Tracker>,
    max: usize,
}

impl Trackers {
    pub fn new(max: usize) -> Trackers {
        Trackers {
            map: HashMap::new(),
            max: max.max(1),
        }
    }

    pub fn get(&self, device: &str) -> Option<&Tracker> {
        self.map.get(device)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn entry(&mut self, device: &str, at: Millis) -> &mut Tracker {
        if !self.map.contains_key(device) && self.map.len() >= self.max {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(k, t)| (t.last_seen, (*k).clone()))
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        let t = self
            .map
            .entry(device.to_string())
            .or_insert_with(|| Tracker {
                last_seen: at,
                last_fix: None,
                flags: SealFlags::default(),
                track: VecDeque::new(),
            });
        t.last_seen = t.last_seen.max(at);
        t
    }

    /// Forgets trackers not heard since `before`.
    pub fn forget_silent(&mut self, before: Millis) {
        self.map.retain(|_, t| t.last_seen >= before);
    }

    /// A passage has evaluated `device`: its track and seal flags start again from its last
    /// fix ("since the last post").
    pub fn passed(&mut self, device: &str) {
        if let Some(t) = self.map.get_mut(device) {
            t.flags = SealFlags::default();
            t.track.clear();
            if let Some(f) = t.last_fix {
                t.track.push_back(f);
            }
        }
    }

    /// Track points held, all trackers together.
    pub fn points(&self) -> usize {
        self.map.values().map(|t| t.track.len()).sum()
    }

    /// A message from `device` arrived at `at` (any message: a heartbeat counts).
    pub fn heard(&mut self, device: &str, at: Millis) {
        self.entry(device, at);
    }

    /// A seal state without a position.
    pub fn seal(&mut self, device: &str, at: Millis, seal: &Seal) {
        self.entry(device, at).flags.raise(seal, at);
    }

    /// A position fix.
    pub fn fix(&mut self, device: &str, at: Millis, p: &Position) {
        let time = p
            .time
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as Millis)
            .unwrap_or(at);
        let t = self.entry(device, at);
        if let Some(seal) = &p.seal {
            t.flags.raise(seal, time);
        }
        if !p.valid {
            return;
        }
        let fix = Fix {
            lat: p.lat,
            lon: p.lon,
            time,
        };
        if t.last_fix.is_none_or(|f| f.time <= time) {
            t.last_fix = Some(fix);
        }
        let far = t
            .track
            .back()
            .is_none_or(|l| distance_m([l.lat, l.lon], [fix.lat, fix.lon]) >= THIN_M);
        if far {
            if t.track.len() >= TRACK_POINTS {
                t.track.pop_front();
            }
            t.track.push_back(fix);
        }
    }
}
