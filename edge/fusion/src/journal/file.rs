//! The lane journal: the readings of passages still open, on disk, so that a vehicle on the
//! lane when the appliance is killed still gets its passage after the restart.
//!
//! One file, `lanes.journal` in the data directory, one JSON object per line:
//!
//! ```text
//! {"lane":"1","at":1767225600123,"sensor":"node-1","frame":"a55a0007…"}   lane-node frame, as on the wire
//! {"lane":"1","at":1767225600200,"sensor":"rpm-1","rpm":"GS,61,58,64,59"}  portal line, as on the wire
//! {"lane":"1","at":1767225600450,"sensor":"cam-1","plate":"123ABC02","confidence":0.97}
//! {"lane":"1","settled":1767225600124}   readings of lane 1 written before this, arrived before it, are done
//! {"tracker":{"op":"fix","device":"4242","at":…,"time":…,"lat":44.2,"lon":80.4,"valid":true}}
//! ```
//!
//! Frames and portal lines are kept in their wire form and decoded again by the same drivers
//! at start, so the journal adds no second encoding of them. Fusion writes a reading here
//! before it buffers it ([`super`]); the fusion ticker, once the passages it
//! closed are in the outbox, says which readings are settled, and a `settled` line is appended
//! when that retires any. At start, [`open`] reads the file, drops what was settled, hands back
//! the rest and rewrites the file with just that. The file is rewritten the same way
//! (atomically) whenever settled lines outnumber live ones; so it holds the open passages'
//! readings, the portal's background lines of the last `background_keep` (the radiation verdict
//! needs the background before the vehicle), and a bounded tail.
//!
//! The tracker table (last fix, seal flags, track since the last passage) feeds the passages'
//! seal rules and lives in memory too; its changes are journaled the same way, and once they
//! outgrow the table fusion hands over a snapshot of it (`Clear`, one `Restore` per tracker)
//! that replaces them.
//!
//! Written with one `write` per line and no buffering, a reading is in the kernel before fusion
//! buffers it (it survives a SIGKILL); the ticker `fdatasync`s what was written every tick
//! (250 ms), so a power cut loses at most that much of an open passage. A line cut short by a
//! crash, or one that no longer decodes, is counted and skipped.
//!
//! Known limits: a reading of an already closed passage that arrived after the oldest reading
//! still open is kept, so a crash can make that passage a second time (same passage id,
//! marked `recovered`); and the wall clock stepping backwards while a passage is open can
//! retire readings early.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use acsgd_drivers::{lane, rpm};
use serde::{Deserialize, Serialize};

use super::{Journal, Kept, Record, Recovered};
use crate::trackers::Change;
use crate::{Millis, PlateImage};
use acsgd_contract::envelope::{from_hex, to_hex};
use acsgd_contract::files::write_atomic;

/// The journal's file name in the data directory.
pub const FILE: &str = "lanes.journal";

/// A journal larger than this is not read back (it cannot be ours: compaction keeps it to
/// the open passages); it is set aside and a fresh one started.
pub const MAX_FILE: u64 = 64 << 20;

/// Readings kept at most; beyond it the oldest go (a lane whose passages never get stored
/// must not fill the memory).
pub const MAX_KEPT: usize = 200_000;

/// Settled lines in the file before it is rewritten (and only when they outnumber live ones).
const COMPACT_AFTER: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("lane journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One line of the file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    lane: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sensor: Option<String>,
    /// A lane-node frame in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    frame: Option<String>,
    /// A portal line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rpm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    confidence: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<Image>,
    /// A change to the tracker table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tracker: Option<Change>,
    /// A settlement mark (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settled: Option<Millis>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Image {
    #[serde(rename = "box")]
    bbox: [i32; 4],
    crop_jpeg: String,
}

/// A reading still live in the file.
#[derive(Debug)]
struct Entry {
    lane: String,
    at: Millis,
    /// A portal background line: retired by age, not by settlement.
    background: bool,
    /// A tracker-table change: retired by the next snapshot.
    tracker: bool,
    /// The line as written, newline included.
    line: String,
}

/// What [`open`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Readings handed back.
    pub kept: usize,
    /// Lines that could not be read (cut short by a crash, or no longer decoding).
    pub unreadable: usize,
    /// The file was over [`MAX_FILE`] and set aside.
    pub set_aside: bool,
}

/// The service's lane journal (see the module docs).
pub struct LaneJournal {
    path: PathBuf,
    file: std::fs::File,
    live: Vec<Entry>,
    /// Arrival time of the latest reading per lane.
    latest: BTreeMap<String, Millis>,
    /// Lines in the file that are no longer live.
    dead: usize,
    /// Tracker changes kept, and how many the last snapshot had.
    tracker_lines: usize,
    snapshot_len: usize,
    unsynced: bool,
    background_keep: Millis,
    /// A write failed: the file may hold a torn line; rewrite it at the next settlement.
    broken: bool,
    failures: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens (or creates) the journal in `data_dir`; returns it with the readings of passages
/// that were open when the appliance stopped, oldest first. Background lines older than
/// `background_keep` before the latest reading are dropped.
pub fn open(
    data_dir: &Path,
    background_keep: Millis,
) -> Result<(LaneJournal, Vec<Recovered>, Opened), JournalError> {
    let path = data_dir.join(FILE);
    let mut opened = Opened::default();
    let mut entries: Vec<(Entry, Recovered)> = Vec::new();
    match std::fs::File::open(&path) {
        Ok(f) => {
            let len = f.metadata().map_err(io(&path))?.len();
            if len > MAX_FILE {
                let aside = path.with_extension("journal.too-large");
                std::fs::rename(&path, &aside).map_err(io(&path))?;
                opened.set_aside = true;
            } else {
                for line in std::io::BufReader::new(f).split(b'\n') {
                    let line = line.map_err(io(&path))?;
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let Ok(parsed) = serde_json::from_slice::<Line>(&line) else {
                        opened.unreadable += 1;
                        continue;
                    };
                    if let Some(mark) = parsed.settled {
                        // Only what was written before the mark is settled by it.
                        entries
                            .retain(|(e, _)| e.background || e.lane != parsed.lane || e.at >= mark);
                        continue;
                    }
                    match decode(&parsed) {
                        Some(r) => {
                            let mut text = String::from_utf8_lossy(&line).into_owned();
                            text.push('\n');
                            let entry = Entry {
                                lane: parsed.lane,
                                at: r.at,
                                background: is_background(&r.what),
                                tracker: matches!(r.what, Kept::Tracker(_)),
                                line: text,
                            };
                            entries.push((entry, r));
                        }
                        None => opened.unreadable += 1,
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&path)(e)),
    }
    if let Some(newest) = entries.iter().map(|(e, _)| e.at).max() {
        entries.retain(|(e, _)| !e.background || e.at >= newest - background_keep);
    }
    if entries.len() > MAX_KEPT {
        entries.drain(..entries.len() - MAX_KEPT);
    }
    let mut latest = BTreeMap::new();
    for (e, _) in entries.iter().filter(|(e, _)| !e.tracker) {
        let l = latest.entry(e.lane.clone()).or_insert(e.at);
        *l = (*l).max(e.at);
    }
    let (live, kept): (Vec<Entry>, Vec<Recovered>) = entries.into_iter().unzip();
    opened.kept = kept.len();
    // Start from a file that holds exactly what is live.
    let text: String = live.iter().map(|e| e.line.as_str()).collect();
    write_atomic(&path, text.as_bytes()).map_err(io(&path))?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    let tracker_lines = live.iter().filter(|e| e.tracker).count();
    let journal = LaneJournal {
        path,
        file,
        live,
        latest,
        dead: 0,
        tracker_lines,
        snapshot_len: 0,
        unsynced: false,
        background_keep,
        broken: false,
        failures: 0,
    };
    Ok((journal, kept, opened))
}

fn is_background(k: &Kept) -> bool {
    matches!(k, Kept::Rpm(l) if is_background_line(l))
}

/// A portal's background line: kept by age, not by settlement.
fn is_background_line(l: &rpm::RpmLine) -> bool {
    matches!(
        l.meaning,
        rpm::RpmCode::GammaBackground | rpm::RpmCode::NeutronBackground
    )
}

fn decode(l: &Line) -> Option<Recovered> {
    if let Some(c) = &l.tracker {
        return Some(Recovered {
            at: c.at(),
            sensor: String::new(),
            what: Kept::Tracker(c.clone()),
        });
    }
    let (at, sensor) = (l.at?, l.sensor.clone()?);
    let what = if let Some(hex) = &l.frame {
        let bytes = from_hex(hex)?;
        match lane::scan(&bytes) {
            lane::Scan::Frame(f, n) if n == bytes.len() => Kept::Frame(f),
            _ => return None,
        }
    } else if let Some(text) = &l.rpm {
        Kept::Rpm(rpm::parse_line(text.as_bytes()).ok()?)
    } else {
        let text = l.plate.clone()?;
        Kept::Plate {
            text,
            confidence: l.confidence?,
            image: l.image.as_ref().map(|i| PlateImage {
                bbox: i.bbox,
                crop_jpeg: i.crop_jpeg.clone(),
            }),
        }
    };
    Some(Recovered { at, sensor, what })
}

/// A portal line as the portal sent it (the fields fusion reads survive the round trip).
fn rpm_wire(l: &rpm::RpmLine) -> String {
    let mut s = l.code.to_string();
    if let Some(c) = l.counts {
        for n in c {
            s.push_str(&format!(",{n}"));
        }
    }
    for v in &l.values {
        match v {
            rpm::Value::Number(n) => s.push_str(&format!(",{n}")),
            rpm::Value::Text(t) => {
                s.push(',');
                s.push_str(t);
            }
        }
    }
    s
}

impl LaneJournal {
    fn write(&mut self, text: &str) -> bool {
        match self.file.write_all(text.as_bytes()) {
            Ok(()) => {
                self.unsynced = true;
                true
            }
            Err(e) => {
                self.broken = true;
                self.failures += 1;
                // One line per thousand failures: a full disk must not flood the log.
                if self.failures % 1000 == 1 {
                    tracing::error!(path = %self.path.display(), failures = self.failures,
                        "lane journal not written (a crash now would lose the open passages): {e}");
                }
                false
            }
        }
    }

    /// Rewrites the file with the live readings only.
    fn compact(&mut self) {
        let text: String = self.live.iter().map(|e| e.line.as_str()).collect();
        let reopened = write_atomic(&self.path, text.as_bytes())
            .and_then(|()| std::fs::OpenOptions::new().append(true).open(&self.path));
        match reopened {
            Ok(f) => {
                self.file = f;
                self.dead = 0;
                self.broken = false;
                self.unsynced = false;
            }
            Err(e) => {
                self.failures += 1;
                if self.failures % 1000 == 1 {
                    tracing::error!(path = %self.path.display(), "lane journal not rewritten: {e}");
                }
            }
        }
    }

    fn bound(&mut self) {
        if self.live.len() > MAX_KEPT {
            let excess = self.live.len() - MAX_KEPT;
            tracing::warn!(
                dropped = excess,
                "lane journal full: its oldest readings are dropped"
            );
            let gone = self.live.drain(..excess).filter(|e| e.tracker).count();
            self.tracker_lines -= gone;
            self.dead += excess;
        }
    }

    /// Writes `line` and keeps it live, even when the write failed (the next rewrite puts it
    /// on disk).
    fn append(&mut self, line: &Line, at: Millis, background: bool) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        self.write(&text);
        let tracker = line.tracker.is_some();
        if tracker {
            self.tracker_lines += 1;
        } else {
            let latest = self.latest.entry(line.lane.clone()).or_insert(at);
            *latest = (*latest).max(at);
        }
        self.live.push(Entry {
            lane: line.lane.clone(),
            at,
            background,
            tracker,
            line: text,
        });
        self.bound();
    }

    fn push_tracker(&mut self, change: &Change) {
        let line = Line {
            tracker: Some(change.clone()),
            ..Line::default()
        };
        self.append(&line, change.at(), false);
    }

    /// Rewrites the file once settled lines outnumber live ones (or a write failed).
    fn compact_if_due(&mut self) {
        if self.broken || (self.dead >= COMPACT_AFTER && self.dead > self.live.len()) {
            self.compact();
        }
    }

    /// Readings live now (for tests and the status page).
    pub fn live(&self) -> usize {
        self.live.len()
    }
}

impl Journal for LaneJournal {
    fn record(&mut self, lane: &str, at: Millis, sensor: &str, record: Record<'_>) {
        let mut line = Line {
            lane: lane.to_string(),
            at: Some(at),
            sensor: Some(sensor.to_string()),
            ..Line::default()
        };
        let mut background = false;
        match record {
            Record::Frame(f) => {
                let mut buf = [0u8; lane::MAX_FRAME];
                let Ok(n) = lane::encode(f, &mut buf) else {
                    return;
                };
                line.frame = Some(to_hex(&buf[..n]));
            }
            Record::Rpm(l) => {
                background = is_background_line(l);
                line.rpm = Some(rpm_wire(l));
            }
            Record::Plate {
                text,
                confidence,
                image,
            } => {
                line.plate = Some(text.to_string());
                line.confidence = Some(confidence);
                line.image = image.map(|i| Image {
                    bbox: i.bbox,
                    crop_jpeg: i.crop_jpeg.clone(),
                });
            }
        }
        self.append(&line, at, background);
    }

    fn settled(&mut self, lane: &str, oldest_pending: Option<Millis>) {
        let Some(&latest) = self.latest.get(lane) else {
            return;
        };
        let mark = oldest_pending.unwrap_or(latest + 1);
        let newest = self.latest.values().copied().max().unwrap_or(latest);
        let floor = newest - self.background_keep;
        let before = self.live.len();
        let mut settles = false;
        self.live.retain(|e| {
            if e.background {
                e.at >= floor
            } else if e.lane == lane && e.at < mark {
                settles = true;
                false
            } else {
                true
            }
        });
        self.dead += before - self.live.len();
        if settles {
            let line = Line {
                lane: lane.to_string(),
                settled: Some(mark),
                ..Line::default()
            };
            if let Ok(mut text) = serde_json::to_string(&line) {
                text.push('\n');
                if self.write(&text) {
                    self.dead += 1;
                }
            }
        }
        self.compact_if_due();
    }

    fn tracker(&mut self, change: &Change) {
        self.push_tracker(change);
    }

    fn snapshot_due(&self) -> bool {
        self.tracker_lines > COMPACT_AFTER.max(2 * self.snapshot_len)
    }

    fn snapshot(&mut self, table: Vec<Change>) {
        let before = self.live.len();
        self.live.retain(|e| !e.tracker);
        self.dead += before - self.live.len();
        self.tracker_lines = 0;
        for c in &table {
            self.push_tracker(c);
        }
        self.snapshot_len = table.len();
        self.compact_if_due();
    }

    fn sync(&mut self) -> Option<super::PendingSync> {
        if !self.unsynced {
            return None;
        }
        // A second handle on the same open file: fdatasync through it covers what was
        // written through this one. (After a rewrite the old file is gone; the rewrite
        // synced the new one itself.)
        match self.file.try_clone() {
            Ok(f) => {
                self.unsynced = false;
                Some(Box::new(move || f.sync_data()))
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), "lane journal not synced: {e}");
                None
            }
        }
    }
}
