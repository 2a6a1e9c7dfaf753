//! The backlog as the technician sees it: `acsgd outbox --data-dir DIR stat`.
//!
//! The running service holds the store's lock, so it also writes its view to
//! `<data_dir>/status.json` every second; `stat` reads the store itself when it can (service
//! stopped: exact) and that file otherwise (service running: at most a second old).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::files::write_atomic;
use crate::outbox::{OpenMode, Stat, Store, StoreError, STATUS_FILE};
use crate::uplink::UplinkSnapshot;

/// Where a status came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Read from the store (the service was not running).
    Store,
    /// Written by the running service.
    Live,
}

/// One status report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub source: Source,
    pub post: Option<String>,
    /// When the report was made (RFC 3339).
    pub time: String,
    pub outbox: Stat,
    pub uplink: Option<UplinkSnapshot>,
    /// Per sensor: frames decoded and refused (a refused frame is counted here, never
    /// silently dropped), connections, reopens.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sensors: BTreeMap<String, SensorCounters>,
    /// What fusion did since the start (running service only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<acsgd_fusion::FusionStats>,
    /// Lanes with a vehicle on them or a passage not yet closed (running service only; what
    /// `acsgd-update` waits to see at 0 before it installs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_lanes: Option<usize>,
    /// Per lane with a barrier: what its lane node last reported of the barrier and lights
    /// (running service only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub barriers: BTreeMap<String, crate::barrier::LaneOutputs>,
}

/// A sensor's counters (see `acsgd_drivers::transport::Stats`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SensorCounters {
    pub frames: u64,
    pub bad_frames: u64,
    pub readings: u64,
    pub acknowledged: u64,
    pub not_accepted: u64,
    pub connections: u64,
    pub refused_connections: u64,
    pub reconnects: u64,
    /// Commands written to the device (a lane node's barrier and lights).
    #[serde(default)]
    pub commands: u64,
    /// Commands dropped unsent because the port was away past their deadline.
    #[serde(default)]
    pub expired_commands: u64,
}

impl SensorCounters {
    pub fn of(s: &acsgd_drivers::transport::Stats) -> SensorCounters {
        use acsgd_drivers::transport::Stats as S;
        SensorCounters {
            frames: S::get(&s.frames),
            bad_frames: S::get(&s.bad_frames),
            readings: S::get(&s.readings),
            acknowledged: S::get(&s.acknowledged),
            not_accepted: S::get(&s.not_accepted),
            connections: S::get(&s.connections),
            refused_connections: S::get(&s.refused_connections),
            reconnects: S::get(&s.reconnects),
            commands: S::get(&s.commands),
            expired_commands: S::get(&s.expired_commands),
        }
    }
}

/// Writes the live status file.
pub fn write_live(data_dir: &Path, status: &Status) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(status).expect("status serialises");
    write_atomic(&data_dir.join(STATUS_FILE), &bytes)
}

/// The status of the outbox in `data_dir`, from the store or, while the service holds it, from
/// the service's status file.
pub fn read(data_dir: &Path) -> Result<Status, StoreError> {
    match Store::open(data_dir, 0, OpenMode::Inspect) {
        Ok((store, _)) => Ok(Status {
            source: Source::Store,
            post: None,
            time: crate::envelope::rfc3339_ms(time::OffsetDateTime::now_utc()),
            outbox: store.stat()?,
            uplink: None,
            sensors: BTreeMap::new(),
            fusion: None,
            busy_lanes: None,
            barriers: BTreeMap::new(),
        }),
        Err(e @ StoreError::Locked { .. }) => {
            let path = data_dir.join(STATUS_FILE);
            let text = std::fs::read(&path).map_err(|_| e)?;
            serde_json::from_slice(&text).map_err(|err| StoreError::Unreadable {
                path,
                reason: err.to_string(),
            })
        }
        Err(e) => Err(e),
    }
}

/// Human-readable report.
pub fn render(s: &Status) -> String {
    let o = &s.outbox;
    let c = &o.counters;
    let mut out = String::new();
    let src = match s.source {
        Source::Store => "store (service not running)",
        Source::Live => "running service",
    };
    out += &format!("source        {src}, at {}\n", s.time);
    if let Some(p) = &s.post {
        out += &format!("post          {p}\n");
    }
    if let Some(n) = s.busy_lanes {
        out +=
            &format!("busy lanes    {n} (a vehicle on the lane or its passage not yet closed)\n");
    }
    for (lane, b) in &s.barriers {
        out += &format!(
            "barrier {lane:<6}{}, lights {} (lane node {})\n",
            b.barrier, b.lights, b.node
        );
    }
    let quota = if o.quota_bytes == 0 {
        "see config".to_string()
    } else {
        format!("{:.1} MiB", o.quota_bytes as f64 / 1048576.0)
    };
    out += &format!(
        "backlog       {} events, {:.1} KiB (quota {quota})\n",
        o.backlog_events,
        o.backlog_bytes as f64 / 1024.0
    );
    match (o.oldest_seq, o.oldest_age_s) {
        (Some(seq), Some(age)) => {
            out += &format!("oldest        seq {seq}, {} old\n", human_age(age))
        }
        _ => out += "oldest        none: everything has been delivered\n",
    }
    out += &format!("last seq      {}\n", o.last_seq);
    out += &format!(
        "counters      accepted {}  delivered {}  evicted {}  refused {}  corrupt {}  quarantined {}  dead-lettered {}\n",
        c.accepted, c.delivered, c.evicted, c.refused, c.corrupt, c.quarantined, c.dead_lettered
    );
    if o.dead_letters > 0 {
        out += &format!(
            "dead letters  {} events the broker refused, kept in the store, never resent\n",
            o.dead_letters
        );
    }
    out += &format!(
        "on disk       {:.1} MiB in {} segment files (pending, kept for resends, not yet reclaimed)\n",
        o.log_bytes as f64 / 1048576.0,
        o.log_segments
    );
    if let Some(free) = o.disk_free_bytes {
        out += &format!("disk free     {:.1} MiB\n", free as f64 / 1048576.0);
    }
    out += &format!("from central  {} cached entries\n", o.inbox_entries);
    if let Some(u) = &s.uplink {
        let state = if u.connected {
            "connected"
        } else {
            "disconnected"
        };
        out += &format!(
            "uplink        {state}, forwarded {} since start, resent {}, connects {}\n",
            u.forwarded, u.resent, u.connects
        );
        if let Some(e) = &u.last_error {
            out += &format!("last error    {e}\n");
        }
    }
    if let Some(f) = &s.fusion {
        out += &format!(
            "fusion        readings {}  passages {} (red {}, yellow {})  alerts {}  unmatched {}\n",
            f.readings, f.passages, f.red, f.yellow, f.alerts, f.unmatched
        );
    }
    for (id, c) in &s.sensors {
        out += &format!(
            "sensor        {id}: frames {}  bad {}  readings {}  acknowledged {}  not accepted {}  connections {}  reopened {}\n",
            c.frames, c.bad_frames, c.readings, c.acknowledged, c.not_accepted, c.connections, c.reconnects
        );
    }
    out
}

fn human_age(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86400.0)
    }
}
