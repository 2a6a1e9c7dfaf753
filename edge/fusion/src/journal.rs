//! What fusion tells a lane journal, and what it takes back from one after a crash.
//!
//! Lane readings wait in memory until their passage closes (see [`super::lane`]); a crash
//! would lose the passage of a vehicle on the lane. So fusion hands every lane reading to a
//! [`Journal`] before it buffers it, tells the journal which readings it no longer needs once
//! their passages are stored ([`super::Fusion::settle_journal`]), and at start takes back what
//! the journal kept ([`super::Fusion::recover`]). The tracker table (seal state, tracks) is
//! journaled the same way, as the changes made to it, replaced now and then by a snapshot.
//! The state machine itself does no I/O: the service installs the file journal of [`mod@file`];
//! `acsgd replay` installs none.

pub mod file;
#[cfg(test)]
mod tests;

use acsgd_drivers::lane::Frame;
use acsgd_drivers::rpm::RpmLine;

use super::lane::{Millis, PlateImage};
use super::trackers::Change;

/// A lane reading as it reaches fusion.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    /// A lane-node frame that goes into a passage (loop, axle, vehicle).
    Frame(&'a Frame),
    /// A portal line (backgrounds, scans, tamper and faults).
    Rpm(&'a RpmLine),
    Plate {
        text: &'a str,
        confidence: f64,
        image: Option<&'a PlateImage>,
    },
}

/// An owned [`Record`], read back from a journal.
#[derive(Debug, Clone, PartialEq)]
pub enum Kept {
    Frame(Frame),
    Rpm(RpmLine),
    Plate {
        text: String,
        confidence: f64,
        image: Option<PlateImage>,
    },
    /// A change to the tracker table (its `at` and sensor are the change's time and "").
    Tracker(Change),
}

/// A reading read back from a journal: when it arrived, from which sensor, what it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    pub at: Millis,
    pub sensor: String,
    pub what: Kept,
}

/// Where fusion writes its lane readings. Failures are the journal's to report: fusion goes on
/// with the reading either way (the passage is made; only its crash safety is lost).
pub trait Journal: Send {
    /// Lane `lane`'s sensor `sensor` read this at `at`; called before fusion buffers it.
    fn record(&mut self, lane: &str, at: Millis, sensor: &str, record: Record<'_>);
    /// Every passage closed on `lane` so far is stored: its readings before `oldest_pending`
    /// (the arrival time of the oldest reading fusion still buffers) are no longer needed;
    /// none of them is when nothing is buffered.
    fn settled(&mut self, lane: &str, oldest_pending: Option<Millis>);
    /// A change to the tracker table (seal state the passages' rules need); called before it
    /// is made.
    fn tracker(&mut self, change: &Change);
    /// Whether the tracker changes kept outgrow the table: then [`Journal::snapshot`] is due.
    fn snapshot_due(&self) -> bool;
    /// The whole tracker table as changes (`Clear`, then one `Restore` per tracker): replaces
    /// every tracker change kept so far.
    fn snapshot(&mut self, table: Vec<Change>);
    /// What makes the records written so far survive a power cut, to be run by the caller
    /// without holding fusion (a sync can take long on a slow card); `None` when nothing is
    /// waiting for one.
    fn sync(&mut self) -> Option<PendingSync>;
}

/// A pending sync of a journal (see [`Journal::sync`]).
pub type PendingSync = Box<dyn FnOnce() -> std::io::Result<()> + Send>;
