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
use serde::{Deserialize, Serialize};

use super::lane::Millis;
use super::transit::distance_m;

/// Track points kept per tracker: 128 km of road at the thinning distance; beyond it the
/// oldest go first.
pub const TRACK_POINTS: usize = 512;
/// A fix closer than this to the last kept one is not kept in the track (the corridors are
/// kilometres wide).
const THIN_M: f64 = 250.0;

/// A fix as kept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    pub lat: f64,
    pub lon: f64,
    /// Fix time, ms since the epoch (arrival time where the device sent none).
    pub time: Millis,
}

/// Seal flags a tracker has raised since it was first heard, with when each was first seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SealFlags {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_lost: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// The seal flags of one message: tamper, alarm, power lost, GNSS fault.
pub type SealBits = [bool; 4];

fn bits(s: &Seal) -> SealBits {
    [s.tamper, s.alarm, s.power_lost, s.gnss_fault]
}

fn seal_of(b: SealBits) -> Seal {
    Seal {
        tamper: b[0],
        alarm: b[1],
        power_lost: b[2],
        gnss_fault: b[3],
        ..Seal::default()
    }
}

/// One change to the table, as the lane journal keeps it ([`super::journal`]): the same
/// changes applied in the same order give the same table, so a restart loses no seal state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Heard {
        device: String,
        at: Millis,
    },
    Seal {
        device: String,
        at: Millis,
        seal: SealBits,
    },
    Fix {
        device: String,
        at: Millis,
        /// Fix time (see [`Fix::time`]).
        time: Millis,
        lat: f64,
        lon: f64,
        valid: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seal: Option<SealBits>,
    },
    Passed {
        device: String,
    },
    /// The table starts afresh: a snapshot's `Restore`s follow.
    Clear,
    /// One tracker as a snapshot holds it.
    Restore {
        device: String,
        last_seen: Millis,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_fix: Option<Fix>,
        flags: SealFlags,
        track: Vec<Fix>,
    },
}

impl Change {
    /// The change a position fix makes.
    pub fn fix(device: &str, at: Millis, p: &Position) -> Change {
        Change::Fix {
            device: device.to_string(),
            at,
            time: p
                .time
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as Millis)
                .unwrap_or(at),
            lat: p.lat,
            lon: p.lon,
            valid: p.valid,
            seal: p.seal.as_ref().map(bits),
        }
    }

    /// The change a seal state without a position makes.
    pub fn seal(device: &str, at: Millis, seal: &Seal) -> Change {
        Change::Seal {
            device: device.to_string(),
            at,
            seal: bits(seal),
        }
    }

    /// When it happened (0 for the table-wide ones).
    pub fn at(&self) -> Millis {
        match self {
            Change::Heard { at, .. } | Change::Seal { at, .. } | Change::Fix { at, .. } => *at,
            Change::Restore { last_seen, .. } => *last_seen,
            Change::Passed { .. } | Change::Clear => 0,
        }
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
        self.apply(&Change::fix(device, at, p));
    }

    /// Applies one change (see [`Change`]).
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Heard { device, at } => self.heard(device, *at),
            Change::Seal { device, at, seal } => self.seal(device, *at, &seal_of(*seal)),
            Change::Fix {
                device,
                at,
                time,
                lat,
                lon,
                valid,
                seal,
            } => self.fixed(device, *at, *time, [*lat, *lon], *valid, *seal),
            Change::Passed { device } => self.passed(device),
            Change::Clear => self.map.clear(),
            Change::Restore {
                device,
                last_seen,
                last_fix,
                flags,
                track,
            } => {
                let t = self.entry(device, *last_seen);
                t.last_fix = *last_fix;
                t.flags = flags.clone();
                t.track = track.iter().copied().collect();
            }
        }
    }

    /// The table as changes: `Clear`, then one `Restore` per tracker.
    pub fn snapshot(&self) -> Vec<Change> {
        let mut devices: Vec<&String> = self.map.keys().collect();
        devices.sort();
        std::iter::once(Change::Clear)
            .chain(devices.into_iter().map(|d| {
                let t = &self.map[d];
                Change::Restore {
                    device: d.clone(),
                    last_seen: t.last_seen,
                    last_fix: t.last_fix,
                    flags: t.flags.clone(),
                    track: t.track.iter().copied().collect(),
                }
            }))
            .collect()
    }

    fn fixed(
        &mut self,
        device: &str,
        at: Millis,
        time: Millis,
        [lat, lon]: [f64; 2],
        valid: bool,
        seal: Option<SealBits>,
    ) {
        let t = self.entry(device, at);
        if let Some(seal) = seal {
            t.flags.raise(&seal_of(seal), time);
        }
        if !valid {
            return;
        }
        let fix = Fix { lat, lon, time };
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
