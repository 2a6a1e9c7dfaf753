//! Every row of the state machine, in event time.

use super::*;
use serde_json::json;

const H: i64 = 3_600_000;
/// 2026-12-01T00:00:00Z
const T0: i64 = 1_796_083_200_000;

/// korgas → almaty-tt (within 20 h) → kordai (within 8 h), limit T0 + 48 h.
fn decl() -> Declaration {
    Declaration::parse(&json!({
        "mrn": "26KZ5500000000001A", "plates": ["123ABC02"],
        "itinerary": [{"post": "korgas"}, {"post": "almaty-tt", "within_h": 20},
                      {"post": "kordai", "within_h": 8}],
        "time_limit": "2026-12-03T00:00:00Z"}))
    .unwrap()
}

fn passage(id: &str, post: &str, t: i64, channel: &str) -> Sighting {
    Sighting {
        event_id: id.into(),
        post: post.into(),
        time_ms: t,
        seen: Seen::Passage {
            channel: channel.into(),
        },
    }
}

fn release(id: &str, post: &str, t: i64) -> Sighting {
    Sighting {
        event_id: id.into(),
        post: post.into(),
        time_ms: t,
        seen: Seen::Release,
    }
}

/// Feeds sightings one by one as central would receive them; returns the final row and
/// every journal line.
fn feed(mut t: Transit, arrivals: &[Sighting]) -> (Transit, Vec<Change>) {
    let mut all = Vec::new();
    let mut log = Vec::new();
    for s in arrivals {
        all.push(s.clone());
        if let Some((next, changes)) = settle(&t, &all, s) {
            t = next;
            log.extend(changes);
        }
    }
    (t, log)
}

fn fresh() -> Transit {
    Transit::declared(decl(), T0 - H)
}

#[test]
fn declared_departed_en_route_arrived() {
    let t = fresh();
    assert_eq!(t.state, State::Declared);
    assert_eq!(t.expected_post.as_deref(), Some("korgas"));
    assert_eq!(t.expected_by_ms, None, "no clock runs before departure");

    let (t, log) = feed(t, &[passage("e1", "korgas", T0, "green")]);
    assert_eq!(t.state, State::Departed);
    assert_eq!(t.expected_post.as_deref(), Some("almaty-tt"));
    assert_eq!(t.expected_by_ms, Some(T0 + 20 * H));
    assert_eq!(log[0].cause, "e1");
    assert_eq!((log[0].from, log[0].to), (State::Declared, State::Departed));

    let (t, _) = feed(
        t,
        &[
            passage("e1", "korgas", T0, "green"),
            passage("e2", "almaty-tt", T0 + 10 * H, "yellow"),
        ],
    );
    assert_eq!(t.state, State::EnRoute);
    assert_eq!(t.leg, 2);
    assert_eq!(t.expected_by_ms, Some(T0 + 18 * H));

    let (t, log) = feed(
        fresh(),
        &[
            passage("e1", "korgas", T0, "green"),
            passage("e2", "almaty-tt", T0 + 10 * H, "green"),
            passage("e3", "kordai", T0 + 15 * H, "red"),
        ],
    );
    assert_eq!(
        t.state,
        State::Arrived,
        "the destination ends it, red or not"
    );
    assert_eq!(t.expected_post, None);
    assert_eq!(t.expected_by_ms, None);
    assert_eq!(log.len(), 3);
    assert!(t.flags.is_empty());
    assert_eq!(t.version, 3);
}

#[test]
fn the_time_limit_caps_a_leg() {
    // Leg 2 would allow 8 h from T0 + 42 h, but the transit's limit is T0 + 48 h.
    let (t, _) = feed(
        fresh(),
        &[
            passage("e1", "korgas", T0, "green"),
            passage("e2", "almaty-tt", T0 + 42 * H, "green"),
        ],
    );
    assert_eq!(t.expected_by_ms, Some(T0 + 48 * H));
}

#[test]
fn a_red_channel_holds_the_truck_until_a_release() {
    let (t, _) = feed(fresh(), &[passage("e1", "korgas", T0, "red")]);
    assert_eq!(t.state, State::AtPost);
    assert_eq!(t.expected_by_ms, None, "no clock runs while it is held");
    assert!(overdue(&t, T0 + 100 * H).is_none());

    let (t, log) = feed(
        fresh(),
        &[
            passage("e1", "korgas", T0, "red"),
            release("o1", "korgas", T0 + 3 * H),
        ],
    );
    assert_eq!(t.state, State::Departed);
    assert_eq!(
        t.expected_by_ms,
        Some(T0 + 23 * H),
        "the leg starts at the release"
    );
    assert_eq!(log.last().unwrap().cause, "o1");

    // A release at another post releases nothing.
    let (t, _) = feed(
        fresh(),
        &[
            passage("e1", "korgas", T0, "red"),
            release("o1", "kordai", T0 + 3 * H),
        ],
    );
    assert_eq!(t.state, State::AtPost);
}

#[test]
fn a_post_off_the_itinerary_diverts_and_flags() {
    let (t, log) = feed(
        fresh(),
        &[
            passage("e1", "korgas", T0, "green"),
            passage("e2", "gani-muratbaev", T0 + 5 * H, "green"),
        ],
    );
    assert_eq!(t.state, State::Diverted);
    assert!(t.flags.contains(&Flag::OffItinerary));
    assert_eq!(t.last_post.as_deref(), Some("gani-muratbaev"));
    assert_eq!(t.expected_post.as_deref(), Some("almaty-tt"));
    assert_eq!(
        t.expected_by_ms,
        Some(T0 + 20 * H),
        "the leg's clock still runs"
    );
    assert!(log.iter().any(|c| c
        .note
        .contains("seen at gani-muratbaev, not on its itinerary")));

    // Back on the itinerary: it goes on, the flag stays.
    let (t, _) = feed(
        fresh(),
        &[
            passage("e1", "korgas", T0, "green"),
            passage("e2", "gani-muratbaev", T0 + 5 * H, "green"),
            passage("e3", "almaty-tt", T0 + 12 * H, "green"),
        ],
    );
    assert_eq!(t.state, State::EnRoute);
    assert!(t.flags.contains(&Flag::OffItinerary));
}

#[test]
fn a_skipped_post_of_transit_is_a_deviation() {
    let (t, log) = feed(
        fresh(),
        &[
            passage("e1", "korgas", T0, "green"),
            passage("e2", "kordai", T0 + 20 * H, "green"),
        ],
    );
    assert_eq!(t.state, State::Arrived);
    assert!(t.flags.contains(&Flag::OffItinerary));
    assert!(log
        .iter()
        .any(|c| c.note.contains("seen at kordai without passing almaty-tt")));
}

#[test]
fn the_scheduler_raises_overdue_once_and_only_when_the_leg_ran_out() {
    let (t, _) = feed(fresh(), &[passage("e1", "korgas", T0, "green")]);
    assert!(
        overdue(&t, T0 + 20 * H).is_none(),
        "exactly at the deadline is on time"
    );
    let (o, change) = overdue(&t, T0 + 20 * H + 1).unwrap();
    assert_eq!(o.state, State::Overdue);
    assert_eq!(o.version, t.version + 1);
    assert_eq!(change.cause, "scheduler");
    assert!(change
        .note
        .contains("not seen at almaty-tt by 2026-12-01T20:00:00.000Z"));
    assert!(overdue(&o, T0 + 30 * H).is_none(), "raised once");
    for s in [
        State::Declared,
        State::AtPost,
        State::Arrived,
        State::Closed,
    ] {
        let mut x = t.clone();
        x.state = s;
        assert!(
            overdue(&x, T0 + 99 * H).is_none(),
            "{s} has no running clock"
        );
    }
}

#[test]
fn a_late_report_of_an_on_time_passage_rescinds_the_overdue() {
    let (t, _) = feed(fresh(), &[passage("e1", "korgas", T0, "green")]);
    let (o, _) = overdue(&t, T0 + 21 * H).unwrap();
    // almaty-tt's uplink was down: its passage at T0 + 19 h reaches central after the overdue.
    let all = [
        passage("e1", "korgas", T0, "green"),
        passage("e2", "almaty-tt", T0 + 19 * H, "green"),
    ];
    let (n, changes) = settle(&o, &all, &all[1]).unwrap();
    assert_eq!(n.state, State::EnRoute);
    assert!(!n.flags.contains(&Flag::LateArrival));
    assert_eq!(changes[0].from, State::Overdue);
    assert!(
        changes[0].note.contains("overdue rescinded")
            && changes[0].note.contains("before 2026-12-01T20:00:00.000Z"),
        "{}",
        changes[0].note
    );
}

#[test]
fn a_truly_late_arrival_ends_the_overdue_with_a_flag() {
    let (t, _) = feed(fresh(), &[passage("e1", "korgas", T0, "green")]);
    let (o, _) = overdue(&t, T0 + 21 * H).unwrap();
    let all = [
        passage("e1", "korgas", T0, "green"),
        passage("e2", "almaty-tt", T0 + 22 * H + 30 * 60_000, "green"),
    ];
    let (n, changes) = settle(&o, &all, &all[1]).unwrap();
    assert_eq!(n.state, State::EnRoute);
    assert!(n.flags.contains(&Flag::LateArrival));
    assert!(
        changes[0].note.contains("2 h 30 min after"),
        "{}",
        changes[0].note
    );

    // A sighting elsewhere does not end an overdue.
    let all = [
        passage("e1", "korgas", T0, "green"),
        passage("e2", "korgas", T0 + 22 * H, "green"),
    ];
    let (n, changes) = settle(&o, &all, &all[1]).unwrap();
    assert_eq!(n.state, State::Overdue);
    assert!(changes[0].note.contains("still overdue"));
}

#[test]
fn sightings_received_out_of_order_give_the_same_end() {
    let in_order = [
        passage("e1", "korgas", T0, "green"),
        passage("e2", "almaty-tt", T0 + 10 * H, "green"),
        passage("e3", "kordai", T0 + 15 * H, "green"),
    ];
    let (a, _) = feed(fresh(), &in_order);
    let reversed: Vec<Sighting> = in_order.iter().rev().cloned().collect();
    let (b, _) = feed(fresh(), &reversed);
    assert_eq!(a.state, State::Arrived);
    assert_eq!(b.state, State::Arrived);
    // Received backwards, kordai came first and looked like a skip of almaty-tt: the flag
    // went up, and cleared when almaty-tt's report filled the gap.
    assert_eq!((a.leg, a.last_post.clone()), (b.leg, b.last_post.clone()));
    assert!(a.flags.is_empty() && b.flags.is_empty(), "{:?}", b.flags);
    let (_, log) = feed(fresh(), &reversed);
    assert!(log
        .iter()
        .any(|c| c.note.starts_with("flag off_itinerary:")));
    assert!(log
        .iter()
        .any(|c| c.note.starts_with("flag off_itinerary cleared")));
}

#[test]
fn a_second_read_at_a_passed_post_changes_nothing() {
    let (t, _) = feed(fresh(), &[passage("e1", "korgas", T0, "green")]);
    let all = [
        passage("e1", "korgas", T0, "green"),
        passage("e2", "korgas", T0 + 60_000, "green"),
    ];
    assert!(settle(&t, &all, &all[1]).is_none());
}

#[test]
fn operators_cancel_open_enquiries_and_close_only_where_it_applies() {
    let t = fresh();
    let (c, change) = act(&t, Action::Cancel, "aigerim", "withdrawn by the declarant").unwrap();
    assert_eq!(c.state, State::Cancelled);
    assert_eq!(change.cause, "operator:aigerim");
    // After a cancel, a passage is journaled but moves nothing.
    let all = [passage("e1", "korgas", T0, "green")];
    let (n, changes) = settle(&c, &all, &all[0]).unwrap();
    assert_eq!(n.state, State::Cancelled);
    assert!(changes[0].note.contains("after the transit was cancelled"));

    let (d, _) = feed(fresh(), &[passage("e1", "korgas", T0, "green")]);
    let e = act(&d, Action::Cancel, "a", "").unwrap_err();
    assert!(e.contains("is departed") && e.contains("only to a transit that is declared"));
    assert!(act(&d, Action::Close, "a", "").is_err());
    let (o, _) = overdue(&d, T0 + 21 * H).unwrap();
    let (q, _) = act(&o, Action::Enquiry, "a", "carrier asked").unwrap();
    assert_eq!(q.state, State::Enquiry);
    assert!(overdue(&q, T0 + 99 * H).is_none());
    // An enquiry is answered by the passage that was missing.
    let all = [
        passage("e1", "korgas", T0, "green"),
        passage("e2", "almaty-tt", T0 + 30 * H, "green"),
    ];
    let (n, _) = settle(&q, &all, &all[1]).unwrap();
    assert_eq!(n.state, State::EnRoute);

    let (a, _) = feed(
        fresh(),
        &[
            passage("e1", "korgas", T0, "green"),
            passage("e2", "almaty-tt", T0 + H, "green"),
            passage("e3", "kordai", T0 + 2 * H, "green"),
        ],
    );
    let (cl, _) = act(&a, Action::Close, "a", "written off").unwrap();
    assert_eq!(cl.state, State::Closed);
}

#[test]
fn alert_rules_map_to_flags_and_names_round_trip() {
    assert_eq!(Flag::of_rule("seal_tamper"), Some(Flag::SealTamper));
    assert_eq!(
        Flag::of_rule("radiation_neutron"),
        Some(Flag::RadiationAlarm)
    );
    assert_eq!(Flag::of_rule("gross_mass"), Some(Flag::WeightDiscrepancy));
    assert_eq!(Flag::of_rule("plate_unread"), None);
    for s in STATES {
        assert_eq!(State::parse(s.as_str()), Some(s));
    }
    let flags: BTreeSet<Flag> = FLAGS.into_iter().collect();
    assert_eq!(parse_flags(&flags_text(&flags)), flags);
    assert!(parse_flags("").is_empty());
}
