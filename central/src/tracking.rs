//! The transit state machine: where one MRN is on its itinerary, computed in **event time**.
//!
//! A transit's progress is a pure function of its declaration and the posts' sightings of it
//! (passages that carry its MRN, and supervisors' releases of a held truck), folded in the order
//! the posts saw them, not the order central received them. A post whose uplink was down for a
//! day therefore changes nothing about *what happened*; it only changes what central knew when.
//! What depends on the wall clock (a leg that ran past its `expected_by` is **overdue**) is laid
//! over that progress by [`settle`], and a sighting that proves the truck was on time although it
//! arrived late rescinds the overdue and says so.
//!
//! | state | entered when |
//! |---|---|
//! | `declared` | central accepted the declaration and routed it to the posts |
//! | `departed` | seen at the departure post (green or yellow, or released) |
//! | `en_route` | seen at a post of transit, leg k+1 open |
//! | `at_post` | held at a post of its itinerary (red channel) until a supervisor releases it |
//! | `arrived` | seen at the destination post |
//! | `closed` | an operator closed the arrived transit (write-off) |
//! | `diverted` | seen at a post not on its itinerary |
//! | `overdue` | not seen at the expected post by the leg's `expected_by` |
//! | `enquiry` | an operator opened an enquiry on an overdue transit |
//! | `cancelled` | withdrawn before departure |

use std::collections::BTreeSet;
use std::fmt;

use acsgd_contract::declaration::Declaration;
use acsgd_contract::rfc3339_ms;
use time::OffsetDateTime;

/// Where a transit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Declared,
    Departed,
    EnRoute,
    AtPost,
    Arrived,
    Closed,
    Diverted,
    Overdue,
    Enquiry,
    Cancelled,
}

const STATES: [State; 10] = [
    State::Declared,
    State::Departed,
    State::EnRoute,
    State::AtPost,
    State::Arrived,
    State::Closed,
    State::Diverted,
    State::Overdue,
    State::Enquiry,
    State::Cancelled,
];

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Declared => "declared",
            State::Departed => "departed",
            State::EnRoute => "en_route",
            State::AtPost => "at_post",
            State::Arrived => "arrived",
            State::Closed => "closed",
            State::Diverted => "diverted",
            State::Overdue => "overdue",
            State::Enquiry => "enquiry",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        STATES.into_iter().find(|st| st.as_str() == s)
    }

    /// States in which a leg's clock runs (the scheduler may find it overdue).
    pub fn clock_runs(self) -> bool {
        matches!(self, State::Departed | State::EnRoute | State::Diverted)
    }

    /// States an operator closed or withdrew: sightings no longer move them.
    pub fn is_final(self) -> bool {
        matches!(self, State::Closed | State::Cancelled)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Marks beside the state, raised by the posts' alerts and by the itinerary check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flag {
    /// Seen at a post not on the itinerary, or at a later post without the one before it.
    /// Recomputed from the sightings each time, so it clears when a late report fills in
    /// the post that seemed skipped.
    OffItinerary,
    /// Off the declared corridor (the posts' seal rules, or central's own judging of the
    /// tracker's fixes between posts, [`crate::positions`]).
    RouteDeviation,
    SealTamper,
    TrackerSilent,
    WeightDiscrepancy,
    RadiationAlarm,
    Watchlist,
    /// Reached a post after the leg's deadline.
    LateArrival,
    /// Its tracker stood still longer than allowed between posts ([`crate::positions`]).
    Stopped,
}

const FLAGS: [Flag; 9] = [
    Flag::OffItinerary,
    Flag::RouteDeviation,
    Flag::SealTamper,
    Flag::TrackerSilent,
    Flag::WeightDiscrepancy,
    Flag::RadiationAlarm,
    Flag::Watchlist,
    Flag::LateArrival,
    Flag::Stopped,
];

impl Flag {
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::OffItinerary => "off_itinerary",
            Flag::RouteDeviation => "route_deviation",
            Flag::SealTamper => "seal_tamper",
            Flag::TrackerSilent => "tracker_silent",
            Flag::WeightDiscrepancy => "weight_discrepancy",
            Flag::RadiationAlarm => "radiation_alarm",
            Flag::Watchlist => "watchlist",
            Flag::LateArrival => "late_arrival",
            Flag::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Flag> {
        FLAGS.into_iter().find(|f| f.as_str() == s)
    }

    /// The flag an appliance alert rule (`edge/schemas/alert.schema.json`) raises, if any.
    pub fn of_rule(rule: &str) -> Option<Flag> {
        Some(match rule {
            "seal_tamper" => Flag::SealTamper,
            "seal_silent" => Flag::TrackerSilent,
            "seal_geofence" | "route_deviation" => Flag::RouteDeviation,
            "axle_load" | "axle_group" | "gross_mass" | "declared_mass" => Flag::WeightDiscrepancy,
            "radiation_gamma" | "radiation_neutron" | "portal_alarm" => Flag::RadiationAlarm,
            "watchlist" => Flag::Watchlist,
            _ => return None,
        })
    }
}

/// Flags as stored: names joined by commas, in order.
pub fn flags_text(flags: &BTreeSet<Flag>) -> String {
    flags
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn parse_flags(s: &str) -> BTreeSet<Flag> {
    s.split(',').filter_map(Flag::parse).collect()
}

/// What a post saw of a transit.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A passage carrying the MRN, with its risk channel.
    Passage { channel: String },
    /// A supervisor overrode a held passage to green or yellow: the truck may go on.
    Release,
}

/// One observation, by event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub event_id: String,
    pub post: String,
    pub time_ms: i64,
    pub seen: Seen,
}

/// A transit's position on its itinerary, from its sightings alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// One of declared, departed, en_route, at_post, arrived, diverted.
    pub state: State,
    /// Index in the itinerary of the next post expected (its length once arrived).
    pub leg: usize,
    pub expected_post: Option<String>,
    pub expected_by_ms: Option<i64>,
    pub last_post: Option<String>,
    pub last_seen_ms: Option<i64>,
    /// Itinerary breaches found on the way ("skipped kordai", "seen at x, not on …").
    pub deviations: Vec<String>,
}

const HOUR_MS: f64 = 3_600_000.0;

/// Folds the sightings (in event time) over the itinerary.
pub fn progress(decl: &Declaration, sightings: &[Sighting]) -> Progress {
    let mut seen: Vec<&Sighting> = sightings.iter().collect();
    seen.sort_by(|a, b| (a.time_ms, &a.event_id).cmp(&(b.time_ms, &b.event_id)));
    let route = &decl.itinerary;
    let mut state = State::Declared;
    let mut leg = 0usize;
    // When the open leg's clock started: the passage (or release) at the post before it.
    let mut clock_from: Option<i64> = None;
    let mut last_post = None;
    let mut last_seen_ms = None;
    let mut deviations = Vec::new();
    for s in seen {
        match &s.seen {
            Seen::Release => {
                if state == State::AtPost && last_post.as_deref() == Some(s.post.as_str()) {
                    state = if leg == 1 {
                        State::Departed
                    } else {
                        State::EnRoute
                    };
                    clock_from = Some(s.time_ms);
                }
            }
            Seen::Passage { channel } => {
                if state == State::Arrived {
                    continue;
                }
                match route.iter().position(|r| r.post == s.post) {
                    Some(i) if i >= leg => {
                        if i > leg {
                            let skipped: Vec<&str> =
                                route[leg..i].iter().map(|r| r.post.as_str()).collect();
                            deviations.push(format!(
                                "seen at {} without passing {}",
                                s.post,
                                skipped.join(", ")
                            ));
                        }
                        leg = i + 1;
                        state = if leg == route.len() {
                            State::Arrived
                        } else if channel == "red" {
                            State::AtPost
                        } else if i == 0 {
                            State::Departed
                        } else {
                            State::EnRoute
                        };
                        clock_from = Some(s.time_ms);
                        last_post = Some(s.post.clone());
                        last_seen_ms = Some(s.time_ms);
                    }
                    // A post it has passed: another lane's read, or a second crossing; it
                    // moves nothing.
                    Some(_) => {}
                    None => {
                        deviations.push(format!("seen at {}, not on its itinerary", s.post));
                        if state != State::AtPost {
                            state = State::Diverted;
                        }
                        last_post = Some(s.post.clone());
                        last_seen_ms = Some(s.time_ms);
                    }
                }
            }
        }
    }
    let expected_post = match state {
        State::Arrived => None,
        _ => route.get(leg).map(|r| r.post.clone()),
    };
    let expected_by_ms = match state {
        State::Departed | State::EnRoute | State::Diverted => {
            let limit = decl
                .time_limit()
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
            let leg_end = route
                .get(leg)
                .and_then(|r| r.within_h)
                .zip(clock_from)
                .map(|(h, from)| from + (h * HOUR_MS) as i64);
            match (limit, leg_end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        _ => None,
    };
    Progress {
        state,
        leg,
        expected_post,
        expected_by_ms,
        last_post,
        last_seen_ms,
        deviations,
    }
}

/// A transit as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Transit {
    pub mrn: String,
    pub state: State,
    pub leg: usize,
    pub expected_post: Option<String>,
    pub expected_by_ms: Option<i64>,
    pub last_post: Option<String>,
    pub last_seen_ms: Option<i64>,
    pub flags: BTreeSet<Flag>,
    pub declaration: Declaration,
    pub declared_ms: i64,
    pub version: i64,
}

impl Transit {
    /// A transit just declared.
    pub fn declared(declaration: Declaration, now_ms: i64) -> Transit {
        let p = progress(&declaration, &[]);
        Transit {
            mrn: declaration.mrn.clone(),
            state: p.state,
            leg: p.leg,
            expected_post: p.expected_post,
            expected_by_ms: None,
            last_post: None,
            last_seen_ms: None,
            flags: BTreeSet::new(),
            declaration,
            declared_ms: now_ms,
            version: 0,
        }
    }
}

/// One line of a transit's journal: a change and its cause.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub from: State,
    pub to: State,
    /// The event id that caused it, or `scheduler`, or `operator:{name}`.
    pub cause: String,
    pub note: String,
}

/// What a new sighting does to a stored transit: its next row and the journal lines, or
/// nothing when it changes nothing.
pub fn settle(
    stored: &Transit,
    sightings: &[Sighting],
    cause: &Sighting,
) -> Option<(Transit, Vec<Change>)> {
    let p = progress(&stored.declaration, sightings);
    let mut next = stored.clone();
    let mut changes = Vec::new();
    let change = |to: State, note: String| Change {
        from: stored.state,
        to,
        cause: cause.event_id.clone(),
        note,
    };
    let what = match &cause.seen {
        Seen::Passage { channel } => format!(
            "passage at {} at {} ({channel})",
            cause.post,
            time_text(cause.time_ms)
        ),
        Seen::Release => format!("released at {} at {}", cause.post, time_text(cause.time_ms)),
    };
    if stored.state.is_final() {
        changes.push(change(
            stored.state,
            format!("{what}, after the transit was {}", stored.state),
        ));
        return Some((next, changes));
    }
    if matches!(stored.state, State::Overdue | State::Enquiry) {
        if p.leg <= stored.leg {
            // Still not where it was expected: the overdue stands.
            changes.push(change(
                stored.state,
                format!("{what}; still {}", stored.state),
            ));
            return Some((next, changes));
        }
        let due = stored.expected_by_ms.unwrap_or(i64::MAX);
        let post = stored.expected_post.as_deref().unwrap_or("?");
        let reached = sightings
            .iter()
            .filter(|s| s.post == post && matches!(s.seen, Seen::Passage { .. }))
            .map(|s| s.time_ms)
            .min();
        let note = match reached {
            Some(t) if t <= due => format!(
                "{what}: overdue rescinded, it reached {post} at {}, before {}; the post reported it late",
                time_text(t),
                time_text(due)
            ),
            Some(t) => {
                next.flags.insert(Flag::LateArrival);
                format!(
                    "{what}: reached {post} at {}, {} after {}",
                    time_text(t),
                    duration_text(t - due),
                    time_text(due)
                )
            }
            None => format!("{what}: went past {post} without being seen there"),
        };
        changes.push(change(p.state, note));
    } else if (p.state, p.leg) != (stored.state, stored.leg) {
        let mut note = what.clone();
        if let (Some(due), Some(seen)) = (stored.expected_by_ms, p.last_seen_ms) {
            if p.leg > stored.leg && seen > due {
                next.flags.insert(Flag::LateArrival);
                note = format!(
                    "{what}, {} after {}",
                    duration_text(seen - due),
                    time_text(due)
                );
            }
        }
        changes.push(change(p.state, note));
    }
    let flag_change = |note: String| Change {
        from: p.state,
        to: p.state,
        cause: cause.event_id.clone(),
        note,
    };
    if let Some(last) = p.deviations.last() {
        if next.flags.insert(Flag::OffItinerary) {
            changes.push(flag_change(format!("flag off_itinerary: {last}")));
        }
    } else if next.flags.remove(&Flag::OffItinerary) {
        changes.push(flag_change(format!(
            "flag off_itinerary cleared: with {what} every post was passed in order"
        )));
    }
    next.state = p.state;
    next.leg = p.leg;
    next.expected_post = p.expected_post;
    next.expected_by_ms = p.expected_by_ms;
    next.last_post = p.last_post;
    next.last_seen_ms = p.last_seen_ms;
    if changes.is_empty() && next == *stored {
        return None;
    }
    if changes.is_empty() {
        changes.push(change(p.state, what));
    }
    next.version += 1;
    Some((next, changes))
}

/// The scheduler's verdict on one transit at `now_ms`: overdue, with the journal line.
pub fn overdue(stored: &Transit, now_ms: i64) -> Option<(Transit, Change)> {
    let due = stored.expected_by_ms?;
    if !stored.state.clock_runs() || now_ms <= due {
        return None;
    }
    let mut next = stored.clone();
    next.state = State::Overdue;
    next.version += 1;
    let post = stored.expected_post.as_deref().unwrap_or("?");
    Some((
        next,
        Change {
            from: stored.state,
            to: State::Overdue,
            cause: "scheduler".into(),
            note: format!("not seen at {post} by {}", time_text(due)),
        },
    ))
}

/// An operator's action on a transit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Withdraw a declaration before departure.
    Cancel,
    /// Open an enquiry on an overdue transit.
    Enquiry,
    /// Close (write off) an arrived transit.
    Close,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "cancel" => Some(Action::Cancel),
            "enquiry" => Some(Action::Enquiry),
            "close" => Some(Action::Close),
            _ => None,
        }
    }

    fn allowed_from(self) -> &'static [State] {
        match self {
            Action::Cancel => &[State::Declared],
            Action::Enquiry => &[State::Overdue],
            Action::Close => &[State::Arrived],
        }
    }

    fn target(self) -> State {
        match self {
            Action::Cancel => State::Cancelled,
            Action::Enquiry => State::Enquiry,
            Action::Close => State::Closed,
        }
    }
}

/// An operator's action, or why it does not apply.
pub fn act(
    stored: &Transit,
    action: Action,
    operator: &str,
    note: &str,
) -> Result<(Transit, Change), String> {
    if !action.allowed_from().contains(&stored.state) {
        let from: Vec<&str> = action.allowed_from().iter().map(|s| s.as_str()).collect();
        return Err(format!(
            "{} is {}; {:?} applies only to a transit that is {}",
            stored.mrn,
            stored.state,
            action,
            from.join(" or ")
        ));
    }
    let mut next = stored.clone();
    next.state = action.target();
    next.version += 1;
    if next.state.is_final() {
        next.expected_by_ms = None;
    }
    Ok((
        next,
        Change {
            from: stored.state,
            to: action.target(),
            cause: format!("operator:{operator}"),
            note: note.to_string(),
        },
    ))
}

pub fn time_text(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(rfc3339_ms)
        .unwrap_or_else(|_| format!("{ms} ms"))
}

fn duration_text(ms: i64) -> String {
    let m = ms / 60_000;
    if m == 0 {
        format!("{} s", ms / 1000)
    } else if m >= 60 {
        format!("{} h {} min", m / 60, m % 60)
    } else {
        format!("{m} min")
    }
}

#[cfg(test)]
mod tests;
