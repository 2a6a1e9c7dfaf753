//! `acsgd-central`: the customs side of ACSGD. It receives the signed events of every post
//! ([`ingest`]), keeps them in SQL ([`store`]: SQLite by default, PostgreSQL in production),
//! follows each transit declaration (MRN) along its itinerary in event time ([`tracking`]),
//! routes each declaration to the posts that will see the truck ([`routing`]), takes
//! declarations and operators' actions over HTTP ([`api`], [`declare`]), tells subscribers by
//! email, webhook or bot ([`notify`]), follows trucks between posts by their trackers' fixes
//! ([`positions`], the seal operator's EGTS feed: [`feed`]), forgets what has no more use
//! ([`retention`]) and runs it all as one service ([`service`]). The envelope, the declaration and the MRN come from
//! `acsgd-contract`, the same code the appliance signs with.

pub mod api;
pub mod auth;
pub mod board;
pub mod config;
pub mod declare;
pub mod feed;
pub mod ingest;
pub mod notify;
pub mod positions;
pub mod retention;
pub mod routing;
pub mod service;
pub mod store;
pub mod tracking;
pub mod xml;

/// A batch's lookups of its keys, as ingest makes them inside `store::begin_batch`, for `n`
/// keys (`$1` …): what it looks up, the prefix of its keys (`{prefix}{i}`), and the statement.
/// `tests/it/plans.rs` checks that none reads a table whole, whatever the statistics say.
#[doc(hidden)]
pub fn batch_lookups(n: usize) -> Vec<(&'static str, &'static str, String)> {
    // Numbered placeholders, which SQLite takes too (bound in order).
    let keys = store::keys_for(false, n);
    vec![
        ("transits", "M", store::transits_of(&keys)),
        ("sightings", "M", store::sightings_of(&keys)),
        (
            "trackers' transits and tracks",
            "seal-",
            positions::trackers_of(&keys),
        ),
    ]
}

/// A read made again and again (by the board, the API, the schedulers or the publisher) over
/// tables that grow with every event, transit and alert: it must reach its rows through an
/// index, so that it costs what it returns and not the months of data beside it.
/// `tests/it/plans.rs` checks each one's plan on both backends.
#[doc(hidden)]
pub struct BoundedRead {
    pub what: &'static str,
    pub sql: String,
    /// Its parameters' kinds, in order: `t` text, `i` integer.
    pub params: &'static str,
    /// The growing tables it reads.
    pub tables: &'static [&'static str],
    /// Whether it must come in an index's order (a page of the newest, the first few): a sort
    /// would read all of them first.
    pub ordered: bool,
}

#[doc(hidden)]
pub fn bounded_reads() -> Vec<BoundedRead> {
    let read = |what, sql, params, tables, ordered| BoundedRead {
        what,
        sql,
        params,
        tables,
        ordered,
    };
    vec![
        read(
            "a transit's events",
            store::EVENTS_OF.into(),
            "t",
            &["journal", "sighting"],
            false,
        ),
        read(
            "a transit's changes",
            store::TRANSIT_LOG.into(),
            "t",
            &["transit_log"],
            true,
        ),
        read(
            "a transit's newest fixes",
            positions::RECENT_FIXES.into(),
            "ti",
            &["fix"],
            true,
        ),
        read(
            "position events to forget",
            retention::POSITION_EVENTS.into(),
            "ii",
            &["journal"],
            true,
        ),
        read(
            "a transit's track",
            positions::TRACK_FIXES.into(),
            "t",
            &["fix"],
            true,
        ),
        read(
            "the board's transits",
            store::transits_sql(),
            "i",
            &["transit"],
            true,
        ),
        // On the road, few: found by state and sorted, or read in deadline order.
        read(
            "overdue scan",
            store::overdue_sql(),
            "i",
            &["transit"],
            false,
        ),
        read(
            "silence scan",
            positions::silent_sql(),
            "",
            &["transit", "transit_tracker", "track"],
            false,
        ),
        read(
            "operator alerts",
            store::ALERTS.into(),
            "",
            &["operator_alert"],
            true,
        ),
        read(
            "open operator alerts",
            store::OPEN_ALERTS.into(),
            "",
            &["operator_alert"],
            true,
        ),
        read(
            "notifications",
            notify::NOTIFICATIONS.into(),
            "ti",
            &["notification"],
            true,
        ),
        read(
            "routes to send",
            routing::PENDING.into(),
            "i",
            &["route", "transit"],
            true,
        ),
        read(
            "subscriptions to all transits",
            notify::ANY_MRN_SUBSCRIPTIONS.into(),
            "",
            &["subscription"],
            false,
        ),
        read(
            "subscriptions to all transits and to some",
            notify::mrn_subscriptions("$1, $2"),
            "tt",
            &["subscription"],
            false,
        ),
        read(
            "a transit's subscriptions",
            notify::CANDIDATES.into(),
            "t",
            &["subscription"],
            false,
        ),
        read(
            "notifications due",
            notify::DUE.into(),
            "i",
            &["notification", "subscription"],
            false,
        ),
        read(
            "next notification due",
            notify::NEXT_DUE.into(),
            "",
            &["notification"],
            false,
        ),
        read(
            "a subscription's last hour",
            notify::SENT_LATELY.into(),
            "ti",
            &["notification"],
            false,
        ),
    ]
}
