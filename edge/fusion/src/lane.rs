//! Passage assembly for one lane: which readings belong to which vehicle.
//!
//! Every reading of a lane sensor is buffered with its *reference time*: its arrival time
//! shifted by the travel time from the sensor's `position_m` to the lane's reference point at
//! the nominal speed. Presence intervals come from the lane node's loops (any loop occupied),
//! or, on a lane without a lane node, from the portal's scan lines. Gaps shorter than
//! `merge_gap_s` join (tractor–trailer gap, a vehicle rocking or reversing over a loop). Each
//! buffered reading goes to the interval whose window (`window_before_s` before the start to
//! `window_after_s` after the end) contains it, the nearest one when windows of vehicles
//! queued back to back overlap, the earlier on a tie. Nearest is measured from where the
//! reading is taken: a front plate from the start of the presence, a rear plate from its end,
//! anything else from the presence as a whole.
//!
//! **Closing.** With `horizon = now − lateness_s`, every reading with a time before the horizon
//! has arrived. A passage closes when `end + window_after + max(window_before, window_after)
//! ≤ horizon`: by then nothing unknown can extend it, and neither a vehicle not yet seen nor
//! one still on the lane can be nearer to any of its readings. A reading that no interval can claim any more (before `horizon − window_before`)
//! is unmatched and reported. So the passages do not depend on the order the readings arrived
//! in, only on their times, as long as none is later than `lateness_s` (the property test in
//! `fusion::tests` checks exactly this). A presence without an end closes after
//! `max_presence_s` as a stopped vehicle.

use acsgd_drivers::lane::Body;

use super::settings::FusionSettings;
use crate::View;

/// Milliseconds since the Unix epoch (virtual in replay, wall clock in the service).
pub type Millis = i64;

/// A lane reading, reduced to what fusion uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A lane-node frame: `Loop`, `Axle` or `Vehicle` (the others are not buffered).
    Node(Body),
    /// A 200 ms scan interval of the portal.
    Scan {
        gamma: bool,
        portal_alarm: bool,
        counts: [u32; 4],
    },
    Plate {
        text: String,
        confidence: f64,
        view: Option<View>,
        /// What the appliance's own recognition saw: the box in the frame and a JPEG crop.
        image: Option<Box<PlateImage>>,
    },
}

/// The picture behind a plate read from the appliance's own recognition.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlateImage {
    /// x, y, width, height in the camera frame.
    #[serde(rename = "box")]
    pub bbox: [i32; 4],
    /// The rectified plate as JPEG, base64.
    pub crop_jpeg: String,
}

/// Which part of a presence a reading is taken at.
enum Anchor {
    /// The front of the vehicle: the front plate.
    Start,
    /// Its rear: the trailer plate.
    End,
    /// Anywhere while it is there.
    Span,
}

impl Input {
    fn anchor(&self) -> Anchor {
        match self {
            Input::Plate {
                view: Some(View::Front),
                ..
            } => Anchor::Start,
            Input::Plate {
                view: Some(View::Rear),
                ..
            } => Anchor::End,
            _ => Anchor::Span,
        }
    }

    /// A total order over inputs of equal time and sensor, so sorting is deterministic.
    fn tie(&self) -> (u8, u64, u64) {
        match self {
            Input::Node(Body::Loop {
                loop_id, occupied, ..
            }) => (0, *loop_id as u64, *occupied as u64),
            Input::Node(Body::Axle { vehicle, index, .. }) => (1, *vehicle as u64, *index as u64),
            Input::Node(Body::Vehicle {
                vehicle, gross_kg, ..
            }) => (2, *vehicle as u64, *gross_kg as u64),
            Input::Node(_) => (5, 0, 0),
            Input::Scan { gamma, counts, .. } => (
                3,
                *gamma as u64,
                counts
                    .iter()
                    .fold(0u64, |h, &c| h.wrapping_mul(1_000_003) ^ c as u64),
            ),
            Input::Plate {
                text, confidence, ..
            } => (
                4,
                confidence.to_bits(),
                text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
                }),
            ),
        }
    }
}

/// A buffered reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Reference time (see the module docs).
    pub t: Millis,
    /// Index of the sensor in the configuration.
    pub sensor: u16,
    pub input: Input,
}

impl Item {
    fn key(&self) -> (Millis, u16, (u8, u64, u64)) {
        (self.t, self.sensor, self.input.tie())
    }
}

/// Where presence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceSource {
    Loops,
    Portal,
    /// No presence sensor: every reading is unmatched.
    None,
}

/// A closed passage's raw material.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub start: Millis,
    pub end: Millis,
    /// The presence had not ended after `max_presence_s`.
    pub stopped: bool,
    /// Its readings, in time order.
    pub items: Vec<Item>,
}

/// What one call to [`Assembler::advance`] settled.
#[derive(Debug, Default, PartialEq)]
pub struct Settled {
    pub passages: Vec<Closed>,
    /// Readings no vehicle claimed (late, or with no presence near them).
    pub unmatched: Vec<Item>,
}

#[derive(Debug, Clone, Copy)]
struct Interval {
    start: Millis,
    /// `None`: still occupied.
    end: Option<Millis>,
}

/// Buffers one lane's readings and cuts them into passages.
#[derive(Debug)]
pub struct Assembler {
    source: PresenceSource,
    pending: Vec<Item>,
    sorted: bool,
    /// Readings before this belong to passages already closed.
    closed_until: Millis,
    before: Millis,
    after: Millis,
    merge_gap: Millis,
    max_presence: Millis,
    max_pending: usize,
}

fn ms(s: f64) -> Millis {
    (s * 1000.0).round() as Millis
}

impl Assembler {
    pub fn new(source: PresenceSource, s: &FusionSettings) -> Assembler {
        Assembler {
            source,
            pending: Vec::new(),
            sorted: true,
            closed_until: Millis::MIN,
            before: ms(s.window_before_s),
            after: ms(s.window_after_s),
            merge_gap: ms(s.merge_gap_s),
            max_presence: ms(s.max_presence_s),
            max_pending: s.max_pending,
        }
    }

    /// How long after its window a passage waits before it closes: long enough that no
    /// vehicle not yet seen (its window starts `before` ahead of it) and no vehicle still on
    /// the lane (a rear plate's distance to it is at least this) can be nearer to any
    /// reading of the closing one.
    fn settle(&self) -> Millis {
        self.before.max(self.after + 1)
    }

    pub fn source(&self) -> PresenceSource {
        self.source
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The readings waiting for their passage to close.
    pub fn buffered(&self) -> &[Item] {
        &self.pending
    }

    /// Buffers a reading. A presence edge older than a closed passage's window cannot be
    /// placed any more and comes back as unmatched.
    pub fn push(&mut self, item: Item) -> Option<Item> {
        if item.t < self.closed_until && self.is_presence(&item.input) {
            return Some(item);
        }
        self.sorted = self.sorted
            && self
                .pending
                .last()
                .is_none_or(|last| last.key() <= item.key());
        self.pending.push(item);
        None
    }

    fn is_presence(&self, i: &Input) -> bool {
        matches!(
            (self.source, i),
            (PresenceSource::Loops, Input::Node(Body::Loop { .. }))
                | (PresenceSource::Portal, Input::Scan { .. })
        )
    }

    fn intervals(&self) -> Vec<Interval> {
        let mut raw: Vec<Interval> = Vec::new();
        match self.source {
            PresenceSource::None => {}
            PresenceSource::Loops => {
                let mut on = [false; 256];
                let mut count = 0usize;
                let mut start = 0;
                for it in &self.pending {
                    if let Input::Node(Body::Loop {
                        loop_id,
                        occupied: now,
                        ..
                    }) = it.input
                    {
                        let slot = &mut on[loop_id as usize];
                        if *slot == now {
                            continue;
                        }
                        *slot = now;
                        if now {
                            if count == 0 {
                                start = it.t;
                            }
                            count += 1;
                        } else {
                            count -= 1;
                            if count == 0 {
                                raw.push(Interval {
                                    start,
                                    end: Some(it.t),
                                });
                            }
                        }
                    }
                }
                if count > 0 {
                    raw.push(Interval { start, end: None });
                }
            }
            PresenceSource::Portal => {
                let gap = self.merge_gap.max(400);
                let mut cur: Option<(Millis, Millis)> = None;
                for it in &self.pending {
                    if let Input::Scan { .. } = it.input {
                        cur = match cur {
                            Some((s, last)) if it.t - last <= gap => Some((s, it.t)),
                            Some((s, last)) => {
                                raw.push(Interval {
                                    start: s,
                                    end: Some(last + 200),
                                });
                                Some((it.t, it.t))
                            }
                            None => Some((it.t, it.t)),
                        };
                    }
                }
                if let Some((s, last)) = cur {
                    raw.push(Interval {
                        start: s,
                        end: Some(last + 200),
                    });
                }
            }
        }
        // Join gaps shorter than the merge gap.
        let mut out: Vec<Interval> = Vec::with_capacity(raw.len());
        for iv in raw {
            match out.last_mut() {
                Some(prev) if prev.end.is_some_and(|e| iv.start - e < self.merge_gap) => {
                    prev.end = iv.end;
                }
                _ => out.push(iv),
            }
        }
        out
    }

    /// Closes what can be closed at `now` (see the module docs).
    pub fn advance(&mut self, now: Millis, lateness: Millis) -> Settled {
        let mut settled = Settled::default();
        if self.pending.is_empty() {
            return settled;
        }
        if !self.sorted {
            self.pending.sort_by_key(Item::key);
            self.sorted = true;
        }
        let horizon = now - lateness;
        let intervals = self.intervals();
        let final_count = intervals
            .iter()
            .take_while(|iv| match iv.end {
                Some(e) => e + self.after + self.settle() <= horizon,
                None => iv.start + self.max_presence <= horizon,
            })
            .count();
        let mut buckets: Vec<Vec<Item>> = vec![Vec::new(); final_count];
        let mut keep = Vec::with_capacity(self.pending.len());
        let mut first = 0usize;
        for it in self.pending.drain(..) {
            // Intervals are in time order: skip those whose window ends before this reading.
            while first < intervals.len()
                && intervals[first].end.is_some_and(|e| e + self.after < it.t)
            {
                first += 1;
            }
            let mut best: Option<(Millis, usize)> = None;
            for (i, iv) in intervals.iter().enumerate().skip(first) {
                if it.t < iv.start - self.before {
                    break;
                }
                let d = match it.input.anchor() {
                    Anchor::Start => (it.t - iv.start).abs(),
                    // Still occupied: the end is after the horizon, so this bounds the
                    // distance from below (exact distances of closed intervals win over it).
                    Anchor::End => match iv.end {
                        Some(e) => (it.t - e).abs(),
                        None => (horizon - it.t).max(0),
                    },
                    Anchor::Span if it.t < iv.start => iv.start - it.t,
                    Anchor::Span => match iv.end {
                        Some(e) if it.t > e => it.t - e,
                        _ => 0,
                    },
                };
                if best.is_none_or(|(bd, _)| d < bd) {
                    best = Some((d, i));
                }
            }
            match best {
                Some((_, i)) if i < final_count => buckets[i].push(it),
                Some(_) => keep.push(it),
                None if it.t < horizon - self.before || it.t < self.closed_until => {
                    settled.unmatched.push(it)
                }
                None => keep.push(it),
            }
        }
        self.pending = keep;
        for (iv, items) in intervals.iter().zip(buckets).take(final_count) {
            let (end, stopped) = match iv.end {
                Some(e) => (e, false),
                None => (iv.start + self.max_presence, true),
            };
            self.closed_until = self.closed_until.max(end + self.after);
            settled.passages.push(Closed {
                start: iv.start,
                end,
                stopped,
                items,
            });
        }
        if self.pending.len() > self.max_pending {
            let excess = self.pending.len() - self.max_pending;
            settled.unmatched.extend(self.pending.drain(..excess));
        }
        settled
    }

    /// Closes everything (end of a replay, service shutdown).
    pub fn finish(&mut self) -> Settled {
        self.advance(Millis::MAX / 4, 0)
    }
}
