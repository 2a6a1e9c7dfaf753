//! Lane fusion: decoded readings in, transit-control events out.
//!
//! [`Fusion`] owns everything between the drivers and the outbox: one [`lane::Assembler`] per
//! lane cutting lane readings into passages, the tracker table, the declarations and watchlist
//! from central, the portal backgrounds, sensor liveness. It is a plain state machine driven by
//! the caller's clock ([`Millis`]): the service feeds it the wall clock, `acsgd replay` the
//! trace's virtual time, so an hour of trace fuses in well under a second and the same trace
//! always gives the same events.
//!
//! Events it makes (bodies documented by the JSON Schemas in `edge/schemas/`):
//! * `passage`: one per vehicle and lane, with its rules and risk channel;
//! * `alert`: one per failed rule of a passage whose channel is not green, plus portal tamper
//!   and faults, and readings that matched no vehicle (`unmatched_reading`, severity `low`);
//! * `position`: the fixes of one tracker message, batched per device;
//! * `telemetry`: tracker sensor values without a position;
//! * `health`: a lane sensor going silent, coming back, or reporting a fault.

pub mod journal;
pub mod lane;
pub mod passage;
pub mod plates;
pub mod radiation;
pub mod rules;
pub mod seal_models;
pub mod settings;
pub mod trackers;
pub mod transit;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use acsgd_drivers::lane::Body;
use acsgd_drivers::rpm::RpmCode;
use acsgd_drivers::Reading;
use serde_json::{json, Value};
use time::OffsetDateTime;

pub use acsgd_contract::envelope::Kind;
pub use acsgd_contract::Event;
pub use lane::Millis;
pub use lane::PlateImage;
use lane::{Assembler, Input, Item, PresenceSource, Settled};
use passage::{DeclarationMatch, Facts, Passage};
use serde::Deserialize;
use settings::{Channel, FusionSettings, RuleSettings};
use trackers::Trackers;
use transit::Transit;

/// RFC 3339 UTC with milliseconds, from [`Millis`].
pub fn rfc3339(t: Millis) -> String {
    acsgd_contract::rfc3339_ms(to_time(t))
}

fn to_time(t: Millis) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(t as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// [`Millis`] of a wall-clock time.
pub fn millis(t: OffsetDateTime) -> Millis {
    (t.unix_timestamp_nanos() / 1_000_000) as Millis
}

/// A plate read as a camera with its own recognition (or the ANPR pipeline) reports it: one
/// JSON object per line, `{"plate": "123ABC02", "confidence": 0.97}`.
pub fn parse_plate_line(text: &str) -> Result<(String, f64), String> {
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| format!("not JSON: {e}"))?;
    let plate = v
        .get("plate")
        .and_then(Value::as_str)
        .ok_or("no \"plate\" string")?;
    let conf = v.get("confidence").and_then(Value::as_f64).unwrap_or(1.0);
    if !(0.0..=1.0).contains(&conf) {
        return Err(format!("confidence {conf} is not between 0 and 1"));
    }
    if plate.chars().count() > 16 {
        return Err("plate longer than 16 characters".into());
    }
    Ok((plate.to_string(), conf))
}

/// Which end of the vehicle a camera sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// The tractor's front plate.
    Front,
    /// The trailer's rear plate.
    Rear,
}

/// What a sensor is to fusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A lane node: loops (presence) and weigh-in-motion.
    LaneNode,
    /// A radiation portal monitor.
    Portal,
    /// A camera, or the appliance's own plate recognition on its stream.
    Camera,
    /// A GNSS tracker or electronic seal.
    Tracker,
}

/// In a setup file a role is the sensor's `protocol`, as in the appliance's configuration.
impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "lane" => Role::LaneNode,
            "rpm" => Role::Portal,
            "camera" => Role::Camera,
            _ => Role::Tracker,
        })
    }
}

/// What fusion is told about the post: lanes, sensors, seal models, settings and rules. The
/// appliance builds it from its configuration (which has validated it); it reads from the same
/// TOML (other keys are ignored), which is how the tests write theirs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Setup {
    pub lanes: Vec<LaneSetup>,
    pub sensors: Vec<SensorSetup>,
    pub seal_models: Vec<seal_models::SealModel>,
    pub fusion: FusionSettings,
    pub rules: RuleSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LaneSetup {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SensorSetup {
    pub id: String,
    /// The lane it watches; trackers have none.
    #[serde(default)]
    pub lane: Option<String>,
    #[serde(rename = "protocol")]
    pub role: Role,
    /// Metres from the lane's reference point (the presence loop) along the direction of
    /// travel: readings are shifted by the travel time at the nominal speed.
    #[serde(default)]
    pub position_m: f64,
    #[serde(default)]
    pub view: Option<View>,
    /// The `seal_models` entry that says what a tracker's inputs mean for its seal.
    #[serde(default)]
    pub seal_model: Option<String>,
}

struct SensorInfo {
    id: String,
    lane: Option<usize>,
    role: Role,
    /// Milliseconds to subtract from arrival time to get reference time.
    shift: Millis,
    view: Option<View>,
    last_seen: Millis,
    down: bool,
    /// Lane-node fault bits last reported.
    faults: u16,
}

/// Background lines of the last `background_s`, oldest first.
#[derive(Default)]
struct Background {
    lines: VecDeque<(Millis, [u32; 4])>,
}

impl Background {
    fn push(&mut self, t: Millis, counts: [u32; 4], keep_ms: Millis) {
        let pos = self.lines.partition_point(|(u, _)| *u <= t);
        self.lines.insert(pos, (t, counts));
        // Keep a margin beyond the window: passages close seconds after they start.
        while self
            .lines
            .front()
            .is_some_and(|(u, _)| *u < t - keep_ms * 2 - 600_000)
        {
            self.lines.pop_front();
        }
    }

    /// Mean counts per second per detector in `[start - window, start)`, and how many
    /// one-second lines it is the mean of; the latest lines before `start` when none fall
    /// inside the window.
    fn before(&self, start: Millis, window: Millis) -> Option<([f64; 4], f64)> {
        let end = self.lines.partition_point(|(u, _)| *u < start);
        let from = self.lines.partition_point(|(u, _)| *u < start - window);
        let slice: Vec<&[u32; 4]> = if from < end {
            self.lines.range(from..end).map(|(_, c)| c).collect()
        } else {
            self.lines
                .range(..end)
                .rev()
                .take(10)
                .map(|(_, c)| c)
                .collect()
        };
        if slice.is_empty() {
            return None;
        }
        let mut m = [0.0; 4];
        for c in &slice {
            for d in 0..4 {
                m[d] += c[d] as f64;
            }
        }
        Some((m.map(|x| x / slice.len() as f64), slice.len() as f64))
    }
}

struct LaneState {
    id: String,
    assembler: Assembler,
    has_wim: bool,
    has_rpm: bool,
    has_camera: bool,
    gamma_bg: Background,
    neutron_bg: Background,
    /// Portal fault or tamper currently active, and since when.
    portal_fault: Option<(String, Millis)>,
    /// Loops occupied now (bit per loop id), for [`Fusion::occupied`].
    loops_occupied: u64,
    /// Arrival time of the last portal scan line.
    last_scan: Millis,
    /// Reference time of the latest reading read back from the journal at start: a passage
    /// holding one is `recovered`.
    recovered_until: Option<Millis>,
}

/// Counters of what fusion did.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FusionStats {
    pub readings: u64,
    pub passages: u64,
    /// Passages by channel (the rest are green).
    pub red: u64,
    pub yellow: u64,
    pub alerts: u64,
    pub unmatched: u64,
    pub positions: u64,
}

/// Sizes of what fusion holds (see [`Fusion::held`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Held {
    pub readings: usize,
    pub trackers: usize,
    pub track_points: usize,
    pub declarations: usize,
}

/// The fusion state machine (see the module docs).
pub struct Fusion {
    settings: FusionSettings,
    rules: RuleSettings,
    sensors: Vec<SensorInfo>,
    by_id: BTreeMap<String, usize>,
    lanes: Vec<LaneState>,
    trackers: Trackers,
    /// What trackers' numbered inputs mean for their seal.
    seals: seal_models::SealModels,
    transit: Transit,
    clock: Millis,
    /// Where lane readings are written before they are buffered (the service's; none in
    /// replay).
    journal: Option<Box<dyn journal::Journal>>,
    /// When trackers were last swept for silence.
    swept: Millis,
    stats: FusionStats,
}

impl Fusion {
    /// Fusion for a post, its clock starting at `start`.
    pub fn new(config: &Setup, start: Millis) -> Fusion {
        let s = config.fusion.clone();
        let speed_mps = s.nominal_speed_kmh / 3.6;
        let lane_index = |id: &str| config.lanes.iter().position(|l| l.id == id);
        let sensors: Vec<SensorInfo> = config
            .sensors
            .iter()
            .map(|c| SensorInfo {
                id: c.id.clone(),
                lane: c.lane.as_deref().and_then(lane_index),
                role: c.role,
                shift: (c.position_m / speed_mps * 1000.0).round() as Millis,
                view: c.view,
                last_seen: start,
                down: false,
                faults: 0,
            })
            .collect();
        let lanes = config
            .lanes
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let has = |r: Role| sensors.iter().any(|s| s.lane == Some(i) && s.role == r);
                let source = if has(Role::LaneNode) {
                    PresenceSource::Loops
                } else if has(Role::Portal) {
                    PresenceSource::Portal
                } else {
                    PresenceSource::None
                };
                LaneState {
                    id: l.id.clone(),
                    assembler: Assembler::new(source, &s),
                    has_wim: has(Role::LaneNode),
                    has_rpm: has(Role::Portal),
                    has_camera: has(Role::Camera),
                    gamma_bg: Background::default(),
                    neutron_bg: Background::default(),
                    portal_fault: None,
                    loops_occupied: 0,
                    last_scan: Millis::MIN / 2,
                    recovered_until: None,
                }
            })
            .collect();
        Fusion {
            by_id: sensors
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.clone(), i))
                .collect(),
            sensors,
            lanes,
            trackers: Trackers::new(s.max_trackers),
            seals: seal_models::SealModels::new(config),
            transit: Transit::default(),
            clock: start,
            journal: None,
            swept: start,
            settings: s,
            rules: config.rules.clone(),
            stats: FusionStats::default(),
        }
    }

    pub fn stats(&self) -> &FusionStats {
        &self.stats
    }

    /// Declarations and watchlist, to load what central sent.
    pub fn transit_mut(&mut self) -> &mut Transit {
        &mut self.transit
    }

    pub fn trackers(&self) -> &Trackers {
        &self.trackers
    }

    /// What fusion holds in memory: buffered readings, trackers and their track points,
    /// declarations. Every one of them is bounded (see the settings).
    pub fn held(&self) -> Held {
        Held {
            readings: self.pending(),
            trackers: self.trackers.len(),
            track_points: self.trackers.points(),
            declarations: self.transit.len(),
        }
    }

    /// Lanes with a vehicle on them or a passage not yet closed (a loop occupied, or readings
    /// waiting for their passage): what an update waits for before it restarts the service.
    pub fn busy_lanes(&self) -> usize {
        self.lanes
            .iter()
            .filter(|l| l.loops_occupied != 0 || l.assembler.pending() > 0)
            .count()
    }

    /// Readings buffered in lanes, waiting for their passage to close.
    pub fn pending(&self) -> usize {
        self.lanes.iter().map(|l| l.assembler.pending()).sum()
    }

    fn event(&mut self, at: Millis, kind: Kind, body: Value) -> Event {
        match kind {
            Kind::Alert => self.stats.alerts += 1,
            Kind::Passage => self.stats.passages += 1,
            Kind::Position => self.stats.positions += 1,
            _ => {}
        }
        let time = to_time(at);
        Event {
            id: acsgd_contract::envelope::event_id(time),
            time,
            kind: kind.into(),
            body,
        }
    }

    /// A sensor was heard at `at`: liveness bookkeeping.
    fn heard(&mut self, idx: usize, at: Millis, out: &mut Vec<Event>) {
        let s = &mut self.sensors[idx];
        s.last_seen = s.last_seen.max(at);
        if s.down {
            s.down = false;
            let id = s.id.clone();
            let e = self.health(at, &id, "up", "sensor heard again", Value::Null);
            out.push(e);
        }
        self.clock = self.clock.max(at);
    }

    fn health(
        &mut self,
        at: Millis,
        sensor: &str,
        state: &str,
        reason: &str,
        detail: Value,
    ) -> Event {
        let mut body =
            json!({"component": format!("sensor/{sensor}"), "state": state, "reason": reason});
        if !detail.is_null() {
            body["detail"] = detail;
        }
        self.event(at, Kind::Health, body)
    }

    /// Decoded readings of `sensor` that arrived at `at`. Returns the events they make at
    /// once (tracker positions and telemetry, portal tamper, sensor health); lane readings
    /// are buffered until their passage closes (see [`Fusion::advance`]). An unknown sensor's
    /// readings are ignored (the caller configured it away).
    pub fn readings(&mut self, at: Millis, sensor: &str, readings: &[Reading]) -> Vec<Event> {
        let mut out = Vec::new();
        let Some(&idx) = self.by_id.get(sensor) else {
            return out;
        };
        self.heard(idx, at, &mut out);
        self.stats.readings += readings.len() as u64;
        let lane = self.sensors[idx].lane;
        let readings = self.seals.apply(sensor, readings);
        let readings: &[Reading] = &readings;
        // Tracker messages: batched positions per device, telemetry one by one.
        let mut fixes: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for r in readings {
            match r {
                Reading::Position(p) => {
                    let device = p.device.clone().unwrap_or_else(|| sensor.to_string());
                    self.tracker(trackers::Change::fix(&device, at, p));
                    if let Ok(Value::Object(mut m)) = serde_json::to_value(r) {
                        m.remove("kind");
                        m.remove("device");
                        fixes.entry(device).or_default().push(Value::Object(m));
                    }
                }
                Reading::Telemetry(t) => {
                    let device = t.device.clone().unwrap_or_else(|| sensor.to_string());
                    match &t.seal {
                        Some(seal) => self.tracker(trackers::Change::seal(&device, at, seal)),
                        None => self.tracker(trackers::Change::Heard { device, at }),
                    }
                    out.push(self.telemetry(at, sensor, lane, r));
                }
                Reading::Message(_) => out.push(self.telemetry(at, sensor, lane, r)),
                Reading::Login(l) => self.tracker(trackers::Change::Heard {
                    device: l.device.clone(),
                    at,
                }),
                Reading::Heartbeat(h) => {
                    if let Some(d) = &h.device {
                        self.tracker(trackers::Change::Heard {
                            device: d.clone(),
                            at,
                        });
                    }
                }
                Reading::Radiation(line) => {
                    if let Some(l) = lane {
                        self.journal(l, at, sensor, journal::Record::Rpm(line));
                        self.radiation(at, idx, l, line, &mut out);
                    }
                }
                Reading::Lane(frame) => {
                    if let Some(l) = lane {
                        if matches!(
                            frame.body,
                            Body::Loop { .. } | Body::Axle { .. } | Body::Vehicle { .. }
                        ) {
                            self.journal(l, at, sensor, journal::Record::Frame(frame));
                        }
                        self.lane_frame(at, idx, l, &frame.body, &mut out);
                    }
                }
                Reading::NoFix(_)
                | Reading::Motion(_)
                | Reading::Dop(_)
                | Reading::Response(_)
                | Reading::Warning(_) => {}
            }
        }
        for (device, fixes) in fixes {
            let mut body = json!({"device": device, "sensor": sensor, "fixes": fixes});
            if let Some(l) = lane {
                body["lane"] = json!(self.lanes[l].id);
            }
            out.push(self.event(at, Kind::Position, body));
        }
        out
    }

    fn journal(&mut self, lane: usize, at: Millis, sensor: &str, record: journal::Record<'_>) {
        if let Some(j) = self.journal.as_mut() {
            j.record(&self.lanes[lane].id, at, sensor, record);
        }
    }

    /// A change to the tracker table, journaled before it is made.
    fn tracker(&mut self, change: trackers::Change) {
        if let Some(j) = self.journal.as_mut() {
            j.tracker(&change);
        }
        self.trackers.apply(&change);
    }

    /// Lane readings are written to `journal` from now on, before they are buffered.
    pub fn set_journal(&mut self, journal: Box<dyn journal::Journal>) {
        self.journal = Some(journal);
    }

    /// Buffers again what a journal kept of the readings of passages open at a crash, before
    /// any sensor is heard (see [`journal`]). What they make at once is dropped: it was stored
    /// before the crash. The passages they end up in are marked `recovered`. Returns how many
    /// lane readings are buffered now.
    pub fn recover(&mut self, kept: &[journal::Recovered]) -> usize {
        // Not written again: the journal still holds them.
        let journal = self.journal.take();
        let readings = self.stats.readings;
        for r in kept {
            match &r.what {
                journal::Kept::Frame(f) => {
                    self.readings(r.at, &r.sensor, &[Reading::Lane(*f)]);
                }
                journal::Kept::Rpm(line) => {
                    self.readings(r.at, &r.sensor, &[Reading::Radiation(line.clone())]);
                }
                journal::Kept::Plate {
                    text,
                    confidence,
                    image,
                } => {
                    self.plate_seen(r.at, &r.sensor, text, *confidence, image.clone());
                }
                journal::Kept::Tracker(c) => self.trackers.apply(c),
            }
        }
        self.journal = journal;
        self.stats.readings = readings;
        for l in &mut self.lanes {
            l.recovered_until = l.assembler.buffered().iter().map(|i| i.t).max();
        }
        self.pending()
    }

    /// Every event made so far is stored: tells the journal which lane readings it no longer
    /// needs (those before the oldest one still buffered, by arrival time).
    pub fn settle_journal(&mut self) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        for l in &self.lanes {
            let oldest = l
                .assembler
                .buffered()
                .iter()
                .map(|i| i.t + self.sensors[i.sensor as usize].shift)
                .min();
            j.settled(&l.id, oldest);
        }
        if j.snapshot_due() {
            j.snapshot(self.trackers.snapshot());
        }
    }

    /// What makes the journal's latest records survive a power cut: run it without holding
    /// fusion (see [`journal::Journal::sync`]).
    pub fn sync_journal(&mut self) -> Option<journal::PendingSync> {
        self.journal.as_mut().and_then(|j| j.sync())
    }

    fn telemetry(&mut self, at: Millis, sensor: &str, lane: Option<usize>, r: &Reading) -> Event {
        let mut body = match serde_json::to_value(r) {
            Ok(Value::Object(m)) => m,
            _ => Default::default(),
        };
        body.insert("sensor".into(), json!(sensor));
        if let Some(l) = lane {
            body.insert("lane".into(), json!(self.lanes[l].id));
        }
        self.event(at, Kind::Telemetry, Value::Object(body))
    }

    /// A plate read by camera `sensor` at `at`.
    pub fn plate(&mut self, at: Millis, sensor: &str, text: &str, confidence: f64) -> Vec<Event> {
        self.plate_seen(at, sensor, text, confidence, None)
    }

    /// A plate read with the picture behind it (the appliance's own recognition).
    pub fn plate_seen(
        &mut self,
        at: Millis,
        sensor: &str,
        text: &str,
        confidence: f64,
        image: Option<PlateImage>,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let Some(&idx) = self.by_id.get(sensor) else {
            return out;
        };
        self.heard(idx, at, &mut out);
        self.stats.readings += 1;
        if let Some(l) = self.sensors[idx].lane {
            let record = journal::Record::Plate {
                text,
                confidence,
                image: image.as_ref(),
            };
            self.journal(l, at, sensor, record);
            let item = Item {
                t: at - self.sensors[idx].shift,
                sensor: idx as u16,
                input: Input::Plate {
                    text: text.to_string(),
                    confidence,
                    view: self.sensors[idx].view,
                    image: image.map(Box::new),
                },
            };
            self.push_item(l, item, &mut out);
        }
        out
    }

    /// Whether a vehicle is on the lane of `sensor` now, as its presence sensor last said:
    /// any loop occupied, or portal scans within the last second. `None` when the lane has
    /// no presence sensor (or `sensor` no lane).
    pub fn occupied(&self, sensor: &str, now: Millis) -> Option<bool> {
        let lane = &self.lanes[self.sensors[*self.by_id.get(sensor)?].lane?];
        match lane.assembler.source() {
            PresenceSource::Loops => Some(lane.loops_occupied != 0),
            PresenceSource::Portal => Some(now - lane.last_scan < 1000),
            PresenceSource::None => None,
        }
    }

    fn push_item(&mut self, lane: usize, item: Item, out: &mut Vec<Event>) {
        if let Some(late) = self.lanes[lane].assembler.push(item) {
            let e = self.unmatched(lane, &[late]);
            out.extend(e);
        }
    }

    fn radiation(
        &mut self,
        at: Millis,
        idx: usize,
        lane: usize,
        line: &acsgd_drivers::rpm::RpmLine,
        out: &mut Vec<Event>,
    ) {
        let t = at - self.sensors[idx].shift;
        let keep = (self.rules.radiation.background_s * 1000.0) as Millis;
        let code = line.meaning;
        match (code, line.counts) {
            (RpmCode::GammaBackground, Some(c)) => self.lanes[lane].gamma_bg.push(t, c, keep),
            (RpmCode::NeutronBackground, Some(c)) => self.lanes[lane].neutron_bg.push(t, c, keep),
            (
                RpmCode::GammaScan
                | RpmCode::GammaAlarm
                | RpmCode::NeutronScan
                | RpmCode::NeutronAlarm,
                Some(c),
            ) => {
                self.lanes[lane].last_scan = at;
                let item = Item {
                    t,
                    sensor: idx as u16,
                    input: Input::Scan {
                        gamma: matches!(code, RpmCode::GammaScan | RpmCode::GammaAlarm),
                        portal_alarm: code.is_portal_alarm(),
                        counts: c,
                    },
                };
                self.push_item(lane, item, out);
            }
            (RpmCode::Tamper, _) => {
                self.fault_raised(at, idx, lane, "tamper", rules::Rule::PortalTamper, out)
            }
            (RpmCode::TamperClear, _) => self.fault_cleared(at, idx, lane, "tamper", out),
            (RpmCode::FaultGammaHigh, _) => self.fault_raised(
                at,
                idx,
                lane,
                "gamma background high",
                rules::Rule::PortalFault,
                out,
            ),
            (RpmCode::FaultGammaLow, _) => self.fault_raised(
                at,
                idx,
                lane,
                "gamma background low",
                rules::Rule::PortalFault,
                out,
            ),
            (RpmCode::FaultNeutronHigh, _) => self.fault_raised(
                at,
                idx,
                lane,
                "neutron background high",
                rules::Rule::PortalFault,
                out,
            ),
            _ => {}
        }
        // Background lines mean the portal is working again after a fault.
        if matches!(code, RpmCode::GammaBackground) {
            let fault = self.lanes[lane]
                .portal_fault
                .as_ref()
                .map(|(f, _)| f.clone());
            if let Some(f) = fault.filter(|f| f != "tamper") {
                self.fault_cleared(at, idx, lane, &f, out);
            }
        }
    }

    /// A portal fault or tamper: one health event and one alert per change, not per line.
    fn fault_raised(
        &mut self,
        at: Millis,
        idx: usize,
        lane: usize,
        what: &str,
        rule: rules::Rule,
        out: &mut Vec<Event>,
    ) {
        if self.lanes[lane]
            .portal_fault
            .as_ref()
            .is_some_and(|(f, _)| f == what)
        {
            return;
        }
        self.lanes[lane].portal_fault = Some((what.into(), at));
        let id = self.sensors[idx].id.clone();
        let e = self.health(
            at,
            &id,
            "degraded",
            &format!("portal reports {what}"),
            Value::Null,
        );
        out.push(e);
        let a = self.alert(at, lane, rule, None, json!({"sensor": id, "fault": what}));
        out.push(a);
    }

    fn fault_cleared(
        &mut self,
        at: Millis,
        idx: usize,
        lane: usize,
        what: &str,
        out: &mut Vec<Event>,
    ) {
        if self.lanes[lane]
            .portal_fault
            .as_ref()
            .is_some_and(|(f, _)| f == what)
        {
            self.lanes[lane].portal_fault = None;
            let id = self.sensors[idx].id.clone();
            let e = self.health(at, &id, "up", &format!("{what} cleared"), Value::Null);
            out.push(e);
        }
    }

    fn lane_frame(
        &mut self,
        at: Millis,
        idx: usize,
        lane: usize,
        body: &Body,
        out: &mut Vec<Event>,
    ) {
        let t = at - self.sensors[idx].shift;
        if let Body::Loop {
            loop_id, occupied, ..
        } = *body
        {
            let bit = 1u64 << (loop_id % 64);
            let l = &mut self.lanes[lane];
            l.loops_occupied = if occupied {
                l.loops_occupied | bit
            } else {
                l.loops_occupied & !bit
            };
        }
        let input = match *body {
            Body::Loop { .. } | Body::Axle { .. } | Body::Vehicle { .. } => Input::Node(*body),
            Body::Health {
                faults,
                supply_mv,
                temp_dc,
                ..
            } => {
                let was = self.sensors[idx].faults;
                if faults != was {
                    self.sensors[idx].faults = faults;
                    let id = self.sensors[idx].id.clone();
                    let (state, reason) = if faults == 0 {
                        ("up", "lane node faults cleared")
                    } else {
                        ("degraded", "lane node reports faults")
                    };
                    let e = self.health(at, &id, state, reason, json!({"faults": faults, "supply_mv": supply_mv, "temp_c": temp_dc as f64 / 10.0}));
                    out.push(e);
                }
                return;
            }
            Body::Pulses { .. }
            | Body::Status { .. }
            | Body::Barrier { .. }
            | Body::Lights { .. }
            | Body::Ack { .. } => return,
        };
        let item = Item {
            t,
            sensor: idx as u16,
            input,
        };
        self.push_item(lane, item, out);
    }

    /// Moves the clock to `now` (never backwards): closes the passages that can be closed,
    /// reports unmatched readings and silent sensors.
    pub fn advance(&mut self, now: Millis) -> Vec<Event> {
        self.clock = self.clock.max(now);
        let now = self.clock;
        let lateness = (self.settings.lateness_s * 1000.0) as Millis;
        let mut out = Vec::new();
        for l in 0..self.lanes.len() {
            let settled = self.lanes[l].assembler.advance(now, lateness);
            self.settle(l, settled, &mut out);
        }
        if now - self.swept >= 60_000 {
            self.swept = now;
            let forget = (self.settings.tracker_forget_s * 1000.0) as Millis;
            self.trackers.forget_silent(now - forget);
        }
        let silent = (self.settings.sensor_silent_s * 1000.0) as Millis;
        for i in 0..self.sensors.len() {
            let s = &mut self.sensors[i];
            // Lane sensors talk all the time (background lines, node health); cameras only
            // when a vehicle passes, so their silence says nothing (ANPR reports their health).
            let expected = s.lane.is_some() && s.role != Role::Camera;
            if expected && !s.down && now - s.last_seen > silent {
                s.down = true;
                let id = s.id.clone();
                let since = s.last_seen;
                let e = self.health(
                    now,
                    &id,
                    "down",
                    "sensor silent",
                    json!({"silent_since": rfc3339(since)}),
                );
                out.push(e);
            }
        }
        out
    }

    /// Closes every passage still open (end of a trace, shutdown).
    pub fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        for l in 0..self.lanes.len() {
            let settled = self.lanes[l].assembler.finish();
            self.settle(l, settled, &mut out);
        }
        out
    }

    fn settle(&mut self, lane: usize, settled: Settled, out: &mut Vec<Event>) {
        for c in &settled.passages {
            let (p, alerts) = self.passage(lane, c);
            let end = c.end;
            match p.channel {
                Channel::Red => self.stats.red += 1,
                Channel::Yellow => self.stats.yellow += 1,
                Channel::Green => {}
            }
            let body = serde_json::to_value(&p).unwrap_or(Value::Null);
            out.push(self.event(end, Kind::Passage, body));
            for (rule, params) in alerts {
                let a = self.alert(end, lane, rule, Some(&p), params);
                out.push(a);
            }
        }
        if !settled.unmatched.is_empty() {
            let e = self.unmatched(lane, &settled.unmatched);
            out.extend(e);
        }
    }

    /// One `unmatched_reading` alert per sensor of the batch.
    fn unmatched(&mut self, lane: usize, items: &[Item]) -> Vec<Event> {
        self.stats.unmatched += items.len() as u64;
        let mut by_sensor: BTreeMap<u16, (usize, Millis, Millis, &'static str)> = BTreeMap::new();
        for it in items {
            let kind = match it.input {
                Input::Node(Body::Loop { .. }) => "loop",
                Input::Node(Body::Axle { .. }) => "axle",
                Input::Node(_) => "wim",
                Input::Scan { .. } => "scan",
                Input::Plate { .. } => "plate",
            };
            let e = by_sensor.entry(it.sensor).or_insert((0, it.t, it.t, kind));
            e.0 += 1;
            e.1 = e.1.min(it.t);
            e.2 = e.2.max(it.t);
        }
        let mut out = Vec::new();
        for (sensor, (n, from, to, kind)) in by_sensor {
            let id = self.sensors[sensor as usize].id.clone();
            let params = json!({"sensor": id, "readings": n, "kind": kind, "from": rfc3339(from), "to": rfc3339(to)});
            out.push(self.alert(to, lane, rules::Rule::UnmatchedReading, None, params));
        }
        out
    }

    fn alert(
        &mut self,
        at: Millis,
        lane: usize,
        rule: rules::Rule,
        p: Option<&Passage>,
        params: Value,
    ) -> Event {
        let channel = self.rules.channel(rule);
        let severity = rules::Severity::from(channel);
        let mut body = json!({
            "severity": severity,
            "rule": rule,
            "channel": channel,
            "lane": self.lanes[lane].id,
            "message": {"key": format!("alert.{rule}"), "params": params},
        });
        if let Some(p) = p {
            body["passage"] = json!(p.id);
            let plates: Vec<&str> = p.plates.iter().map(|r| r.text.as_str()).collect();
            body["plates"] = json!(plates);
            if let Some(m) = &p.mrn {
                body["mrn"] = json!(m);
            }
        }
        self.event(at, Kind::Alert, body)
    }

    /// Builds a closed passage: facts, association, rules. Returns it and its alerts.
    fn passage(&mut self, lane: usize, c: &lane::Closed) -> (Passage, Vec<(rules::Rule, Value)>) {
        let facts = Facts::from_closed(c);
        let l = &self.lanes[lane];
        let bg_window = (self.rules.radiation.background_s * 1000.0) as Millis;
        let radiation = facts.radiation(
            l.gamma_bg.before(c.start, bg_window),
            l.neutron_bg
                .before(c.start, bg_window)
                .map(|(b, _)| b.iter().sum()),
            &self.rules.radiation,
        );
        // Association: every plate read to its declaration; the front (tractor) plate's
        // declaration is the passage's, else the first found.
        let plate_mrns: Vec<(String, Option<String>)> = facts
            .plates
            .iter()
            .map(|r| (r.text.clone(), self.transit.find(&r.text).map(|f| f.mrn)))
            .collect();
        let found = facts
            .plates
            .iter()
            .filter_map(|r| self.transit.find(&r.text).map(|f| (r, f)))
            .min_by_key(|(r, _)| (r.view != Some(View::Front), r.view.map(|v| v as u8)));
        let declaration = found.as_ref().and_then(|(_, f)| self.transit.get(&f.mrn));
        let mut p = Passage {
            id: format!("{}-{}", l.id, c.start),
            lane: l.id.clone(),
            start: rfc3339(c.start),
            end: rfc3339(c.end),
            duration_s: (c.end - c.start) as f64 / 1000.0,
            stopped: c.stopped,
            speed_kmh: facts.speed_kmh,
            wim: facts.wim.clone(),
            plates: facts.plates.clone(),
            mrn: found.as_ref().map(|(_, f)| f.mrn.clone()),
            declaration: found
                .as_ref()
                .zip(declaration)
                .map(|((r, f), d)| DeclarationMatch {
                    mrn: f.mrn.clone(),
                    declared_plate: f.declared_plate.clone(),
                    read_plate: r.text.clone(),
                    how: f.how,
                    gross_kg: d.gross_kg,
                    destination: d.destination.clone(),
                    goods: d.goods.clone(),
                    tracker: d.tracker.clone(),
                }),
            radiation,
            seal: None,
            rules: Vec::new(),
            channel: Channel::Green,
            reasons: Vec::new(),
            readings: facts.readings,
            recovered: l
                .recovered_until
                .is_some_and(|u| c.start <= u || c.items.iter().any(|i| i.t <= u)),
        };
        let tracker = declaration
            .and_then(|d| d.tracker.as_deref())
            .and_then(|t| self.trackers.get(t));
        let cx = rules::Context {
            settings: &self.rules,
            now: c.end,
            has_wim: l.has_wim,
            has_rpm: l.has_rpm,
            has_camera: l.has_camera,
            portal_fault: l
                .portal_fault
                .as_ref()
                .filter(|(_, since)| *since <= c.end)
                .map(|(f, _)| f.clone()),
            transit: &self.transit,
            declaration,
            plate_mrns,
            tracker,
        };
        rules::evaluate(&mut p, &cx);
        if let Some(device) = declaration.and_then(|d| d.tracker.clone()) {
            self.tracker(trackers::Change::Passed { device });
        }
        let alerts = p
            .rules
            .iter()
            .filter(|o| {
                o.result == rules::Verdict::Fail && self.rules.channel(o.rule) > Channel::Green
            })
            .map(|o| (o.rule, o.detail.clone()))
            .collect();
        (p, alerts)
    }
}
