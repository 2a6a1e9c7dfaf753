//! The events' segment log: every event of the outbox, appended to files of our own and
//! fdatasynced once per group commit, instead of a tree of sled.
//!
//! It owns `<data_dir>/events/`: the segment files, the marks file, and the in-memory index
//! of both. Why a log: an append costs a copy and one `pwrite` per chunk of events; sled's
//! insert and log writer cost 18 µs an event on the reviewer's 2-core machine, which left no
//! room for 50 000 durable events/s beside the signature. A delivered event is a mark, not a
//! removal; whole segments are dropped when nothing in them is wanted any more.
//!
//! # On disk
//! * `<first seq, 20 digits>.seg`: frames in ascending `seq`, each
//!   ```text
//!   0       4       8       16      20           20+L
//!   | "AOe1" | L u32 | seq u64 | crc u32 | record (L) |
//!   ```
//!   (little-endian; the CRC-32 covers `L`, `seq` and the record; the record is the outbox
//!   record of the crate docs, with its own CRC). A segment is closed at about
//!   `segment_bytes` and the next one starts with the next event.
//! * `marks`: what became of events after they were written, 21-byte entries
//!   `| state u8 | from u64 | upto u64 | crc u32 |`: every event with `from <= seq <= upto`
//!   that is still pending takes the state (delivered, evicted, dead-lettered, corrupt).
//!   Entries are appended and synced with the next group commit; the file is rewritten from
//!   the index (fsync, rename) when it grows past [`MARKS_REWRITE`].
//!
//! # Recovery
//! Every segment is read and every frame checked at open. A frame that fails its checks is
//! skipped up to the next frame that passes (found by its magic and CRC), the bytes between
//! counted as one corrupt region, copied out for forensics by the caller and dropped from the
//! file when it is rewritten; a bad tail with no good frame after it is a write the power cut
//! interrupted, never acknowledged: it is cut off. Then the marks are replayed.
//!
//! # Space
//! A segment is deleted once none of its events is pending or kept for resends (the newest
//! segment is never deleted: it holds the highest `seq`). A segment that is mostly holes
//! (evicted or delivered events among a few pending ones) is rewritten with only what is
//! still wanted, so the files stay near the quota even when old alerts wait for days.
//!
//! # Memory
//! The index is 12 bytes per event in the files (a slot: offset, length, state, priority),
//! about 28 MiB for a GiB of 460-byte positions; opening reads one segment at a time.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use acsgd_contract::envelope::Priority;
use acsgd_contract::files::sync_dir;

use super::decode_record;

/// The log's directory under the data directory.
pub(crate) const LOG_DIR: &str = "events";
const MAGIC: [u8; 4] = *b"AOe1";
const HEADER: usize = 20;
/// No record is larger (events are capped far below); a header claiming more is garbage.
const MAX_RECORD: usize = 64 << 20;
const MARKS: &str = "marks";
const MARK_LEN: usize = 21;
/// The marks file is rewritten from the index beyond this size.
const MARKS_REWRITE: u64 = 1 << 20;
/// A closed segment in which fewer than this share of its frames are still wanted is
/// rewritten (if it is at least [`COMPACT_MIN`] long).
const COMPACT_BELOW: f64 = 0.25;
const COMPACT_MIN: u64 = 64 << 10;

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Waiting to be published.
    Live,
    /// Acknowledged by the broker, kept for resend requests.
    Delivered,
    /// Acknowledged, no longer kept (beyond the retention, or none is set).
    Expired,
    /// Dropped for a keep event while the quota was full.
    Evicted,
    /// Refused by the broker for good (its copy is in the store's `dead` tree).
    Dead,
    /// Failed its check (its bytes are in the store's `corrupt` tree).
    Corrupt,
    /// No event with this `seq` in the segment (a number skipped after a failed write).
    Absent,
}

impl State {
    /// The byte a mark stores; `None` for states never written to `marks`.
    fn code(self) -> Option<u8> {
        match self {
            State::Delivered => Some(1),
            State::Evicted => Some(2),
            State::Dead => Some(3),
            State::Corrupt => Some(4),
            State::Live | State::Expired | State::Absent => None,
        }
    }

    fn from_code(b: u8) -> Option<State> {
        Some(match b {
            1 => State::Delivered,
            2 => State::Evicted,
            3 => State::Dead,
            4 => State::Corrupt,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Offset of the frame in its segment.
    off: u32,
    /// Length of the record (the frame is [`HEADER`] bytes longer).
    len: u32,
    state: State,
    bulk: bool,
}

const ABSENT: Slot = Slot {
    off: 0,
    len: 0,
    state: State::Absent,
    bulk: false,
};

struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes of whole frames; the next frame goes here.
    len: u64,
    /// One per `seq` from `first`.
    slots: Vec<Slot>,
    /// Live events.
    live: usize,
    /// Delivered events still kept for resends.
    kept: usize,
    /// Frames in the file (every slot but the absent ones).
    frames: usize,
}

/// An event read back.
pub(crate) struct Read {
    pub seq: u64,
    pub record: Vec<u8>,
}

/// What opening the log found.
#[derive(Debug, Default)]
pub(crate) struct Opened {
    /// Corrupt regions skipped, with their bytes (capped) and where they were.
    pub corrupt: Vec<(String, Vec<u8>)>,
    /// Bytes of torn tails cut off (writes a crash interrupted, never acknowledged).
    pub torn_bytes: u64,
}

/// Errors of the log, with the file they concern.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct LogError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |source| LogError {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) struct EventLog {
    dir: PathBuf,
    segs: BTreeMap<u64, Segment>,
    segment_bytes: u64,
    marks: Arc<File>,
    marks_len: u64,
    /// Marks not yet written, coalesced into ranges.
    pending_marks: Vec<(State, u64, u64)>,
    /// Files written since the last sync.
    unsynced: Vec<(PathBuf, Arc<File>)>,
    /// The directory gained or lost entries since its last sync.
    dir_dirty: bool,
    /// Record bytes and count of live events (the quota's measure).
    pub bytes: u64,
    pub count: u64,
    /// Record bytes of delivered events kept for resends.
    pub kept_bytes: u64,
    /// No live bulk event below this `seq` (where eviction starts looking).
    evict_from: u64,
    /// No kept delivered event below this `seq` (where pruning starts looking).
    kept_from: u64,
    /// Highest `seq` in the log.
    pub last_seq: u64,
    read_only: bool,
}

impl EventLog {
    /// Opens (creating in service mode) the log in `dir` and reads it all back.
    /// `read_only`: nothing is created, cut or rewritten.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        read_only: bool,
    ) -> Result<(EventLog, Opened), LogError> {
        if !read_only {
            std::fs::create_dir_all(dir).map_err(at(dir))?;
        }
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for e in entries {
                    let path = e.map_err(at(dir))?.path();
                    if !read_only && path.extension().is_some_and(|x| x == "tmp") {
                        // A rewrite a crash interrupted before its rename: the segment it
                        // was made from is still there, whole.
                        std::fs::remove_file(&path).map_err(at(&path))?;
                        continue;
                    }
                    let first = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_suffix(".seg"))
                        .and_then(|n| n.parse::<u64>().ok());
                    if let Some(first) = first {
                        names.push((first, path));
                    }
                }
            }
            Err(e) if read_only && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(dir)(e)),
        }
        names.sort();
        let marks_path = dir.join(MARKS);
        let marks = if read_only {
            // Read-only: a handle that is never written; /dev/null when there is no file.
            File::open(&marks_path)
                .or_else(|_| File::open("/dev/null"))
                .map_err(at(&marks_path))?
        } else {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&marks_path)
                .map_err(at(&marks_path))?
        };
        let mut log = EventLog {
            dir: dir.to_path_buf(),
            segs: BTreeMap::new(),
            segment_bytes,
            marks: Arc::new(marks),
            marks_len: 0,
            pending_marks: Vec::new(),
            unsynced: Vec::new(),
            dir_dirty: !read_only,
            bytes: 0,
            count: 0,
            kept_bytes: 0,
            evict_from: 0,
            kept_from: 0,
            last_seq: 0,
            read_only,
        };
        let mut opened = Opened::default();
        let mut damaged = Vec::new();
        let n = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            let seg = log.load_segment(first, &path, &mut opened)?;
            if seg.1 {
                damaged.push(first);
            }
            let seg = seg.0;
            if seg.slots.is_empty() && i + 1 < n && !read_only {
                // Emptied by a cut tail, or never written to: not the newest, so not needed.
                std::fs::remove_file(&path).map_err(at(&path))?;
                continue;
            }
            if let Some(last) = seg.slots.len().checked_sub(1) {
                log.last_seq = log.last_seq.max(seg.first + last as u64);
            }
            log.segs.insert(first, seg);
        }
        log.replay_marks()?;
        log.recount();
        if !read_only {
            // What a crash or a failed sync left may be in the page cache only: the first sync
            // covers every file, not only those written from now on.
            log.unsynced = log
                .segs
                .values()
                .map(|s| (s.path.clone(), s.file.clone()))
                .collect();
            // Regions that failed their checks are dropped from their files now (their bytes
            // are with the caller), so they are counted once, not at every start.
            for first in damaged {
                log.rewrite(first)?;
            }
            log.rewrite_marks()?;
        }
        Ok((log, opened))
    }

    /// Reads one segment; the flag says it held a corrupt region.
    fn load_segment(
        &self,
        first: u64,
        path: &Path,
        opened: &mut Opened,
    ) -> Result<(Segment, bool), LogError> {
        let file = if self.read_only {
            File::open(path)
        } else {
            OpenOptions::new().read(true).write(true).open(path)
        }
        .map_err(at(path))?;
        let bytes = std::fs::read(path).map_err(at(path))?;
        let mut slots: Vec<Slot> = Vec::new();
        let mut pos = 0usize;
        let mut damaged = false;
        let mut last = first.checked_sub(1);
        while pos < bytes.len() {
            // A frame must follow the one before it, not too far ahead (numbers are skipped
            // only after a failed write) so a forged header cannot make the index huge.
            let follows = |s: u64| Some(s) > last && s - first < slots.len() as u64 + (1 << 20);
            if let Some((seq, len)) = frame_at(&bytes, pos).filter(|(s, _)| follows(*s)) {
                let rec = &bytes[pos + HEADER..pos + HEADER + len];
                let decoded = decode_record(rec);
                let i = (seq - first) as usize;
                slots.resize(i, ABSENT);
                slots.push(Slot {
                    off: pos as u32,
                    len: len as u32,
                    state: if decoded.is_ok() {
                        State::Live
                    } else {
                        State::Corrupt
                    },
                    bulk: decoded.is_ok_and(|r| r.prio == Priority::Bulk),
                });
                last = Some(seq);
                pos += HEADER + len;
                continue;
            }
            // A bad frame: skip to the next good one, or it is a torn tail.
            let next = (pos + 1..bytes.len().saturating_sub(HEADER - 1)).find(|&p| {
                bytes[p..p + 4] == MAGIC && frame_at(&bytes, p).is_some_and(|(s, _)| follows(s))
            });
            match next {
                Some(p) => {
                    let cap = (p - pos).min(1 << 20);
                    opened
                        .corrupt
                        .push((format!("{first:020}@{pos}"), bytes[pos..pos + cap].to_vec()));
                    damaged = true;
                    pos = p;
                }
                None => {
                    opened.torn_bytes += (bytes.len() - pos) as u64;
                    if !self.read_only {
                        file.set_len(pos as u64).map_err(at(path))?;
                        file.sync_data().map_err(at(path))?;
                    }
                    break;
                }
            }
        }
        let len = pos.min(bytes.len()) as u64;
        Ok((
            Segment {
                first,
                path: path.to_path_buf(),
                file: Arc::new(file),
                len,
                slots,
                live: 0,
                kept: 0,
                frames: 0,
            },
            damaged,
        ))
    }

    fn replay_marks(&mut self) -> Result<(), LogError> {
        let path = self.dir.join(MARKS);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(at(&path)(e)),
        };
        let mut good = 0;
        for m in bytes.chunks_exact(MARK_LEN) {
            let crc = u32::from_le_bytes(m[17..21].try_into().expect("4 bytes"));
            let Some(state) = State::from_code(m[0]).filter(|_| crc32fast::hash(&m[..17]) == crc)
            else {
                break; // A torn last entry: the marks after it were never synced.
            };
            let from = u64::from_le_bytes(m[1..9].try_into().expect("8 bytes"));
            let upto = u64::from_le_bytes(m[9..17].try_into().expect("8 bytes"));
            self.apply_mark(state, from, upto);
            good += MARK_LEN;
        }
        self.marks_len = good as u64;
        Ok(())
    }

    /// Sets every live event in `from..=upto` to `state` (in memory).
    fn apply_mark(&mut self, state: State, from: u64, upto: u64) {
        let start = self
            .segs
            .range(..=from)
            .next_back()
            .map_or(from, |(k, _)| *k);
        for (_, seg) in self.segs.range_mut(start..=upto) {
            let lo = from.saturating_sub(seg.first) as usize;
            let hi =
                (upto.saturating_sub(seg.first) as usize).min(seg.slots.len().saturating_sub(1));
            if seg.slots.is_empty() || lo > hi || upto < seg.first {
                continue;
            }
            for s in &mut seg.slots[lo..=hi] {
                if s.state == State::Live {
                    s.state = state;
                }
            }
        }
    }

    /// Recomputes the counts from the slots.
    pub fn recount(&mut self) {
        let (mut bytes, mut count, mut kept) = (0, 0, 0);
        for seg in self.segs.values_mut() {
            seg.live = 0;
            seg.kept = 0;
            seg.frames = seg
                .slots
                .iter()
                .filter(|s| s.state != State::Absent)
                .count();
            for s in &seg.slots {
                match s.state {
                    State::Live => {
                        seg.live += 1;
                        bytes += u64::from(s.len);
                        count += 1;
                    }
                    State::Delivered => {
                        seg.kept += 1;
                        kept += u64::from(s.len);
                    }
                    _ => {}
                }
            }
        }
        self.bytes = bytes;
        self.count = count;
        self.kept_bytes = kept;
        self.evict_from = 0;
        self.kept_from = 0;
    }

    /// Appends records (ascending `seq`, above every `seq` in the log) with one write. On an
    /// error nothing of them stays: the file is cut back to where they began.
    pub fn append(&mut self, records: &[(u64, bool, Vec<u8>)]) -> Result<(), LogError> {
        let Some((first, ..)) = records.first() else {
            return Ok(());
        };
        debug_assert!(*first > self.last_seq || self.segs.is_empty());
        let size: usize = records.iter().map(|r| HEADER + r.2.len()).sum();
        // A newest segment with nothing in it (made just before a crash that took its frames,
        // and perhaps some at the end of the one before) may start above these numbers: it
        // is made again at the right one.
        let stale = self
            .segs
            .values()
            .next_back()
            .filter(|s| s.slots.is_empty() && s.first != *first)
            .map(|s| (s.first, s.path.clone()));
        if let Some((old, path)) = stale {
            std::fs::remove_file(&path).map_err(at(&path))?;
            self.segs.remove(&old);
            self.dir_dirty = true;
        }
        let roll = self
            .segs
            .values()
            .next_back()
            .is_none_or(|s| !s.slots.is_empty() && s.len + size as u64 > self.segment_bytes);
        if roll {
            self.start_segment(*first)?;
        }
        let mut buf = Vec::with_capacity(size);
        let seg = self.segs.values_mut().next_back().expect("a segment");
        let mut slots = Vec::with_capacity(records.len());
        for (seq, bulk, rec) in records {
            let off = seg.len as usize + buf.len();
            if off + HEADER + rec.len() > u32::MAX as usize {
                return Err(at(&seg.path)(std::io::Error::other("segment over 4 GiB")));
            }
            push_frame(&mut buf, *seq, rec);
            slots.push((
                *seq,
                Slot {
                    off: off as u32,
                    len: rec.len() as u32,
                    state: State::Live,
                    bulk: *bulk,
                },
            ));
        }
        if let Err(e) = seg.file.write_all_at(&buf, seg.len) {
            // Take back whatever part of it reached the file.
            let _ = seg.file.set_len(seg.len);
            return Err(at(&seg.path)(e));
        }
        seg.len += buf.len() as u64;
        for (seq, slot) in slots {
            let i = (seq - seg.first) as usize;
            seg.slots.resize(i, ABSENT);
            seg.slots.push(slot);
            seg.live += 1;
            seg.frames += 1;
            self.bytes += u64::from(slot.len);
            self.count += 1;
            self.last_seq = seq;
        }
        if !self.unsynced.iter().any(|(_, f)| Arc::ptr_eq(f, &seg.file)) {
            self.unsynced.push((seg.path.clone(), seg.file.clone()));
        }
        Ok(())
    }

    /// Takes back every event from `from` on (a batch that was refused): their frames are cut
    /// out of their files, segments that begin there are deleted.
    pub fn discard_from(&mut self, from: u64) -> Result<(), LogError> {
        let firsts: Vec<u64> = self.segs.range(..).map(|(k, _)| *k).collect();
        for first in firsts.into_iter().rev() {
            let seg = self.segs.get_mut(&first).expect("listed");
            if seg.first + seg.slots.len() as u64 <= from {
                break;
            }
            if first >= from {
                let seg = self.segs.remove(&first).expect("listed");
                std::fs::remove_file(&seg.path).map_err(at(&seg.path))?;
                self.dir_dirty = true;
                continue;
            }
            let keep = (from - first) as usize;
            let cut = seg.slots[keep..]
                .iter()
                .find(|s| s.state != State::Absent)
                .map_or(seg.len, |s| u64::from(s.off));
            seg.file.set_len(cut).map_err(at(&seg.path))?;
            seg.len = cut;
            seg.slots.truncate(keep);
        }
        self.last_seq = self
            .segs
            .values()
            .filter_map(|s| s.slots.len().checked_sub(1).map(|l| s.first + l as u64))
            .max()
            .unwrap_or(0);
        self.recount();
        Ok(())
    }

    fn start_segment(&mut self, first: u64) -> Result<(), LogError> {
        let path = self.dir.join(format!("{first:020}.seg"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(at(&path))?;
        self.segs.insert(
            first,
            Segment {
                first,
                path,
                file: Arc::new(file),
                len: 0,
                slots: Vec::new(),
                live: 0,
                kept: 0,
                frames: 0,
            },
        );
        self.dir_dirty = true;
        Ok(())
    }

    /// Takes what the next sync must cover: the files written, the marks written, and
    /// whether the directory changed. The caller syncs them without holding the log.
    pub fn take_sync(&mut self) -> Result<ToSync, LogError> {
        let mut files = std::mem::take(&mut self.unsynced);
        if !self.pending_marks.is_empty() && !self.read_only {
            let mut buf = Vec::with_capacity(self.pending_marks.len() * MARK_LEN);
            for (state, from, upto) in &self.pending_marks {
                let code = state.code().expect("only stored states are marked");
                push_mark(&mut buf, code, *from, *upto);
            }
            let path = self.dir.join(MARKS);
            if let Err(e) = (&*self.marks).write_all(&buf) {
                // Kept for the next try; the files written stay on the list too.
                let _ = self.marks.set_len(self.marks_len);
                self.unsynced.extend(files);
                return Err(at(&path)(e));
            }
            self.pending_marks.clear();
            self.marks_len += buf.len() as u64;
            files.push((path, self.marks.clone()));
        }
        let dir = std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone());
        Ok(ToSync { files, dir })
    }

    /// Records what became of an event: returns its slot's former state and record length,
    /// or `None` if no event has that `seq` here.
    pub fn mark(&mut self, seq: u64, state: State) -> Option<(State, u32)> {
        let (&first, seg) = self.segs.range_mut(..=seq).next_back()?;
        let slot = seg.slots.get_mut((seq - first) as usize)?;
        let was = slot.state;
        let slen = slot.len;
        if was == State::Absent || was == state {
            return Some((was, slen));
        }
        // Only a live event changes state, except that a kept one expires.
        let allowed = was == State::Live || (was == State::Delivered && state == State::Expired);
        if !allowed {
            return Some((was, slen));
        }
        slot.state = state;
        let len = u64::from(slen);
        if was == State::Live {
            seg.live -= 1;
            self.bytes -= len;
            self.count -= 1;
        }
        if was == State::Delivered {
            seg.kept -= 1;
            self.kept_bytes -= len;
        }
        if state == State::Delivered {
            seg.kept += 1;
            self.kept_bytes += len;
            self.kept_from = self.kept_from.min(seq);
        }
        if let Some(code_state) = state.code().map(|_| state) {
            match self.pending_marks.last_mut() {
                Some((s, _, upto)) if *s == code_state && *upto + 1 == seq => *upto = seq,
                _ => self.pending_marks.push((code_state, seq, seq)),
            }
        } else if state == State::Expired && was == State::Live {
            // Delivered with no retention: stored as delivered, expired in memory.
            match self.pending_marks.last_mut() {
                Some((State::Delivered, _, upto)) if *upto + 1 == seq => *upto = seq,
                _ => self.pending_marks.push((State::Delivered, seq, seq)),
            }
        }
        Some((was, slen))
    }

    /// The oldest live bulk event, to evict for a keep event.
    pub fn oldest_bulk(&mut self) -> Option<u64> {
        let start = self
            .segs
            .range(..=self.evict_from)
            .next_back()
            .map_or(0, |(k, _)| *k);
        let mut hint = self.evict_from;
        let mut found = None;
        for seg in self.segs.range(start..).map(|(_, s)| s) {
            if seg.live > 0 {
                let lo = hint.saturating_sub(seg.first) as usize;
                let at = seg
                    .slots
                    .iter()
                    .skip(lo)
                    .position(|s| s.state == State::Live && s.bulk);
                if let Some(i) = at {
                    found = Some(seg.first + (lo + i) as u64);
                    break;
                }
            }
            // Nothing in an older segment ever becomes live again: look past it next time.
            hint = hint.max(seg.first + seg.slots.len() as u64);
        }
        self.evict_from = found.unwrap_or(hint);
        found
    }

    /// The lowest live `seq`.
    pub fn first_live(&self) -> Option<u64> {
        self.segs.values().filter(|s| s.live > 0).find_map(|seg| {
            seg.slots
                .iter()
                .position(|s| s.state == State::Live)
                .map(|i| seg.first + i as u64)
        })
    }

    /// Events in `state` with `from <= seq <= upto`, in order, at most `limit`: one read per
    /// segment. A frame that no longer passes its checks is returned as `Err(seq)`.
    pub fn read(
        &self,
        from: u64,
        upto: u64,
        limit: usize,
        state: State,
    ) -> Result<Vec<Result<Read, u64>>, LogError> {
        let mut out = Vec::new();
        if from > upto || limit == 0 {
            return Ok(out);
        }
        let start = self
            .segs
            .range(..=from)
            .next_back()
            .map_or(from, |(k, _)| *k);
        for seg in self.segs.range(start..=upto).map(|(_, s)| s) {
            let want = if state == State::Live {
                seg.live
            } else {
                seg.kept
            };
            if want == 0 {
                continue;
            }
            let lo = from.saturating_sub(seg.first) as usize;
            let hi = ((upto - seg.first.min(upto)) as usize).min(seg.slots.len().saturating_sub(1));
            if lo >= seg.slots.len() || upto < seg.first {
                continue;
            }
            let picked: Vec<(u64, Slot)> = seg.slots[lo..=hi]
                .iter()
                .enumerate()
                .filter(|(_, s)| s.state == state)
                .take(limit - out.len())
                .map(|(i, s)| (seg.first + (lo + i) as u64, *s))
                .collect();
            let (Some((_, a)), Some((_, b))) = (picked.first(), picked.last()) else {
                continue;
            };
            let span_from = a.off as u64;
            let span_to = u64::from(b.off) + HEADER as u64 + u64::from(b.len);
            let mut buf = vec![0u8; (span_to - span_from) as usize];
            seg.file
                .read_exact_at(&mut buf, span_from)
                .map_err(at(&seg.path))?;
            for (seq, s) in picked {
                let p = (u64::from(s.off) - span_from) as usize;
                match frame_at(&buf, p) {
                    // The frame's CRC covers the record; the caller decodes it once.
                    Some((got, len)) if got == seq && len == s.len as usize => out.push(Ok(Read {
                        seq,
                        record: buf[p + HEADER..p + HEADER + len].to_vec(),
                    })),
                    _ => out.push(Err(seq)),
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The raw frame bytes of one event, whatever its checks say (for forensics).
    pub fn raw(&self, seq: u64) -> Option<Vec<u8>> {
        let (&first, seg) = self.segs.range(..=seq).next_back()?;
        let s = seg.slots.get((seq - first) as usize)?;
        if s.state == State::Absent {
            return None;
        }
        let mut buf = vec![0u8; HEADER + s.len as usize];
        seg.file.read_exact_at(&mut buf, u64::from(s.off)).ok()?;
        Some(buf)
    }

    /// Expires kept events from the oldest: those whose event time is before `cutoff_ms`,
    /// and while more than `cap` bytes are kept. Stops at the first one that may stay.
    pub fn prune_kept(&mut self, cutoff_ms: u64, cap: u64, keep_none: bool) {
        while let Some(seq) = self.oldest_kept() {
            let over = keep_none || self.kept_bytes > cap;
            let old = self.time_of(seq).is_none_or(|t| t < cutoff_ms);
            if !over && !old {
                break;
            }
            self.mark(seq, State::Expired);
        }
    }

    fn oldest_kept(&mut self) -> Option<u64> {
        let start = self
            .segs
            .range(..=self.kept_from)
            .next_back()
            .map_or(0, |(k, _)| *k);
        for seg in self.segs.range(start..).map(|(_, s)| s) {
            if seg.kept == 0 {
                continue;
            }
            let lo = self.kept_from.saturating_sub(seg.first) as usize;
            if let Some(i) = seg.slots[lo.min(seg.slots.len())..]
                .iter()
                .position(|s| s.state == State::Delivered)
            {
                let seq = seg.first + (lo + i) as u64;
                self.kept_from = seq;
                return Some(seq);
            }
        }
        None
    }

    /// The event time of a stored event (read from its record).
    pub fn time_of(&self, seq: u64) -> Option<u64> {
        let (&first, seg) = self.segs.range(..=seq).next_back()?;
        let s = seg.slots.get((seq - first) as usize)?;
        let mut b = [0u8; 8];
        seg.file
            .read_exact_at(&mut b, u64::from(s.off) + HEADER as u64 + 2)
            .ok()?;
        Some(u64::from_le_bytes(b))
    }

    /// Deletes segments nothing is wanted from (never the newest), and rewrites closed ones
    /// that are mostly holes. Returns whether files were removed or rewritten.
    pub fn reclaim(&mut self) -> Result<bool, LogError> {
        if self.read_only {
            return Ok(false);
        }
        // Neither the newest segment nor the one holding the highest `seq` (the same one,
        // unless the newest is empty) is ever deleted or rewritten: the next start finds the
        // numbering there.
        let newest = self.segs.keys().next_back().copied();
        let top = self.top();
        let spared = |s: &Segment| Some(s.first) == newest || Some(s.first) == top;
        let idle: Vec<u64> = self
            .segs
            .values()
            .filter(|s| !spared(s) && s.live == 0 && s.kept == 0)
            .map(|s| s.first)
            .collect();
        let sparse: Vec<u64> = self
            .segs
            .values()
            .filter(|s| !spared(s) && (s.live > 0 || s.kept > 0))
            .filter(|s| {
                // Each rewrite shrinks a file to under a quarter: rewriting costs at most a
                // third more than writing.
                s.len >= COMPACT_MIN && ((s.live + s.kept) as f64) < COMPACT_BELOW * s.frames as f64
            })
            .map(|s| s.first)
            .collect();
        if !idle.is_empty() {
            // The segment with the highest `seq` is made durable first (its frames and its
            // directory entry), or a power cut could leave neither it nor the deleted ones.
            if let Some(seg) = top.and_then(|t| self.segs.get(&t)) {
                seg.file.sync_data().map_err(at(&seg.path))?;
                sync_dir(&self.dir).map_err(at(&self.dir))?;
            }
        }
        for first in &idle {
            if let Some(seg) = self.segs.remove(first) {
                std::fs::remove_file(&seg.path).map_err(at(&seg.path))?;
                self.dir_dirty = true;
            }
        }
        for first in &sparse {
            self.rewrite(*first)?;
        }
        Ok(!idle.is_empty() || !sparse.is_empty())
    }

    /// The segment holding the highest `seq`: the newest one with frames (or the newest).
    fn top(&self) -> Option<u64> {
        self.segs
            .values()
            .rev()
            .find(|s| !s.slots.is_empty())
            .or_else(|| self.segs.values().next_back())
            .map(|s| s.first)
    }

    /// Rewrites a segment with only its live and kept events (and nothing corrupt): a new
    /// file, synced, renamed over the old one, the directory synced.
    fn rewrite(&mut self, first: u64) -> Result<(), LogError> {
        let Some(seg) = self.segs.get(&first) else {
            return Ok(());
        };
        let tmp = self.dir.join(format!("{first:020}.seg.tmp"));
        let mut buf = Vec::new();
        let mut slots = Vec::with_capacity(seg.slots.len());
        let newest = self.top() == Some(first);
        let last = seg.slots.iter().rposition(|s| s.state != State::Absent);
        for (i, s) in seg.slots.iter().enumerate() {
            // The last frame of the segment with the highest `seq` stays whatever became of
            // it: the next start must find that number (see `durable_seq`).
            let highest = newest && Some(i) == last;
            let keep =
                highest || matches!(s.state, State::Live | State::Delivered | State::Expired);
            let mut frame = vec![0u8; HEADER + s.len as usize];
            let readable = keep
                && seg.file.read_exact_at(&mut frame, u64::from(s.off)).is_ok()
                && frame_at(&frame, 0).is_some_and(|(q, _)| q == first + i as u64);
            if keep && !readable {
                tracing::error!(
                    seq = first + i as u64,
                    "an outbox frame no longer reads back; dropped"
                );
            }
            if !readable || (s.state == State::Expired && !highest) {
                // Expired events are not needed; a slot keeps its number, marked absent.
                slots.push(if readable || !keep {
                    ABSENT
                } else {
                    Slot {
                        state: State::Corrupt,
                        ..ABSENT
                    }
                });
                continue;
            }
            let off = buf.len() as u32;
            buf.extend_from_slice(&frame);
            slots.push(Slot { off, ..*s });
        }
        let written = (|| -> std::io::Result<File> {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&buf)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &seg.path)?;
            sync_dir(&self.dir)?;
            Ok(f)
        })();
        let file = match written {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(at(&tmp)(e));
            }
        };
        let seg = self.segs.get_mut(&first).expect("checked above");
        // The newest segment keeps its trailing slots so the next append lines up.
        seg.file = Arc::new(file);
        seg.len = buf.len() as u64;
        seg.slots = slots;
        self.recount();
        Ok(())
    }

    /// Rewrites the marks file from the index once it has grown past [`MARKS_REWRITE`]: one
    /// entry per run of events in the same stored state, in segments that still exist.
    pub fn rewrite_marks(&mut self) -> Result<(), LogError> {
        if self.read_only || self.marks_len < MARKS_REWRITE {
            return Ok(());
        }
        let mut buf = Vec::new();
        for seg in self.segs.values() {
            let mut run: Option<(u8, u64, u64)> = None;
            for (i, s) in seg.slots.iter().enumerate() {
                let seq = seg.first + i as u64;
                let code = match s.state {
                    State::Expired => Some(1),
                    st => st.code(),
                };
                match (code, &mut run) {
                    (Some(c), Some((rc, _, upto))) if *rc == c && *upto + 1 == seq => *upto = seq,
                    (c, r) => {
                        if let Some((rc, from, upto)) = r.take() {
                            push_mark(&mut buf, rc, from, upto);
                        }
                        *r = c.map(|c| (c, seq, seq));
                    }
                }
            }
            if let Some((rc, from, upto)) = run {
                push_mark(&mut buf, rc, from, upto);
            }
        }
        for (state, from, upto) in self.pending_marks.drain(..) {
            push_mark(&mut buf, state.code().expect("stored state"), from, upto);
        }
        let path = self.dir.join(MARKS);
        acsgd_contract::files::write_atomic(&path, &buf).map_err(at(&path))?;
        self.marks = Arc::new(
            OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(at(&path))?,
        );
        self.marks_len = buf.len() as u64;
        Ok(())
    }

    /// Segment files and the bytes of the log's files (segments and marks) on disk.
    pub fn disk_use(&self) -> (u64, u64) {
        let segs = self.segs.values().map(|s| s.len).sum::<u64>();
        (self.segs.len() as u64, segs + self.marks_len)
    }

    /// The size at which segments are closed.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }
}

/// What one sync covers (taken under the log's lock, done outside it).
pub(crate) struct ToSync {
    files: Vec<(PathBuf, Arc<File>)>,
    dir: Option<PathBuf>,
}

impl ToSync {
    /// fdatasyncs every file written, then the directory if it changed.
    pub fn run(self) -> Result<(), LogError> {
        for (path, f) in &self.files {
            f.sync_data().map_err(at(path))?;
        }
        if let Some(dir) = &self.dir {
            sync_dir(dir).map_err(at(dir))?;
        }
        Ok(())
    }
}

fn push_frame(buf: &mut Vec<u8>, seq: u64, rec: &[u8]) {
    let len = (rec.len() as u32).to_le_bytes();
    let seqb = seq.to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(&seqb);
    h.update(rec);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&seqb);
    buf.extend_from_slice(&h.finalize().to_le_bytes());
    buf.extend_from_slice(rec);
}

fn push_mark(buf: &mut Vec<u8>, code: u8, from: u64, upto: u64) {
    let start = buf.len();
    buf.push(code);
    buf.extend_from_slice(&from.to_le_bytes());
    buf.extend_from_slice(&upto.to_le_bytes());
    let crc = crc32fast::hash(&buf[start..]);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// The `seq` and record length of a good frame at `pos`, or `None`.
fn frame_at(b: &[u8], pos: usize) -> Option<(u64, usize)> {
    let h = b.get(pos..pos + HEADER)?;
    if h[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(h[4..8].try_into().ok()?) as usize;
    if len > MAX_RECORD {
        return None;
    }
    let rec = b.get(pos + HEADER..pos + HEADER + len)?;
    let mut c = crc32fast::Hasher::new();
    c.update(&h[4..16]);
    c.update(rec);
    (c.finalize() == u32::from_le_bytes(h[16..20].try_into().ok()?)).then(|| {
        (
            u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
            len,
        )
    })
}
