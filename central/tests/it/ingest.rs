//! Ingest and tracking through the real store, each test on SQLite and on PostgreSQL.

use acsgd_central::declare::{self, Refused};
use acsgd_central::ingest::{Ingestor, Limits, Message, Outcome, Worker, BATCH, MAX_PAYLOAD};
use acsgd_central::routing::Publisher;
use acsgd_central::store::{Store, Table};
use acsgd_central::tracking::{Action, Flag, State};
use serde_json::json;

use crate::common::{on_both, passage, Box_, Ids, H};

/// 2026-12-01T00:00:00Z
const T0: i64 = 1_796_083_200_000;
const MRN: &str = "26KZ5500000000001A";

fn msg(topic: String, payload: Vec<u8>) -> Message {
    Message { topic, payload }
}

async fn registered(store: &Store, posts: &[&str]) -> Vec<Box_> {
    let mut boxes = Vec::new();
    for p in posts {
        let b = Box_::new(p);
        store.put_post(&b.registry_entry()).await.unwrap();
        boxes.push(b);
    }
    boxes
}

/// Korgas registered, its ids as the appliance makes them (UUIDv7), and an ingestor.
async fn korgas_v7(store: &Store) -> (Box_, Ingestor) {
    let mut b = registered(store, &["korgas"]).await.remove(0);
    b.ids = Ids::V7;
    let i = Ingestor::new(store.clone(), Limits::default())
        .await
        .unwrap();
    (b, i)
}

async fn ingest(i: &mut Ingestor, m: Message, now: i64) -> Outcome {
    i.handle(&[m], now).await.unwrap().remove(0)
}

#[test]
fn migrations_run_once_and_a_newer_database_is_refused() {
    on_both(|store, backend| async move {
        // A transit stored before version 3 had its plate index: the migration builds it.
        registered(&store, &["korgas", "kordai"]).await;
        declare::submit(
            &store,
            &declaration(&["korgas", "kordai"]),
            "operator:t",
            T0,
        )
        .await
        .unwrap()
        .unwrap();
        sqlx::raw_sql(
            "DROP TABLE transit_plate; DROP TABLE notification; DROP TABLE subscription; \
             DROP TABLE transit_tracker; DROP TABLE fix; DROP TABLE track; \
             DROP INDEX transit_board; DROP INDEX transit_state; DROP INDEX route_unsent; \
             DROP INDEX route_live; DROP INDEX operator_alert_raised; \
             DROP INDEX operator_alert_open; DROP INDEX journal_position_received; \
             DELETE FROM schema_version WHERE version >= 3",
        )
        .execute(store.pool())
        .await
        .unwrap();
        // Opening again migrates to version 3 (and on) once; after that it changes nothing.
        let again = Store::open(&backend).await.unwrap();
        let indexed: Vec<(String, String)> = sqlx::query_as("SELECT plate, mrn FROM transit_plate")
            .fetch_all(again.pool())
            .await
            .unwrap();
        assert_eq!(indexed, vec![("123A8C02".to_string(), MRN.to_string())]);
        let again = Store::open(&backend).await.unwrap();
        let versions = |s: Store| async move {
            let row = sqlx::query("SELECT COUNT(*), MAX(version) FROM schema_version")
                .fetch_one(s.pool())
                .await
                .unwrap();
            let n: i64 = sqlx::Row::try_get(&row, 0).unwrap();
            let v: i64 = sqlx::Row::try_get(&row, 1).unwrap();
            (n, v)
        };
        assert_eq!(versions(again.clone()).await, (9, 9), "{backend}");
        // A database a newer central migrated is not touched by this one.
        sqlx::query("INSERT INTO schema_version (version, applied_ms) VALUES (99, 0)")
            .execute(store.pool())
            .await
            .unwrap();
        let e = Store::open(&backend).await.err().expect("refused");
        assert_eq!(
            e.to_string(),
            "database is at schema version 99, newer than this acsgd-central knows (9); upgrade acsgd-central"
        );
        assert_eq!(versions(store).await, (10, 99), "{backend}");
    });
}

#[test]
fn text_keys_are_compared_byte_by_byte_on_both_backends() {
    on_both(|store, backend| async move {
        // Post ids order byte by byte, as SQLite orders TEXT: '-' before the digits before
        // the letters (a linguistic collation would skip the dash and mix them).
        registered(&store, &["kordai-2", "kordai1", "kordai", "kordai-10"]).await;
        let ids: Vec<String> = store
            .posts()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(
            ids,
            ["kordai", "kordai-10", "kordai-2", "kordai1"],
            "{backend}"
        );
        if !backend.starts_with("postgres") {
            return;
        }
        // On PostgreSQL every text column of central's tables has the C collation, whatever
        // the database's own (the tests' clusters take the machine's locale).
        let not_c = |s: Store| async move {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT c.relname::text, a.attname::text FROM pg_attribute a \
                 JOIN pg_class c ON c.oid = a.attrelid \
                 WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' \
                 AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'text'::regtype \
                 AND a.attcollation <> 'pg_catalog.\"C\"'::regcollation ORDER BY 1, 2",
            )
            .fetch_all(s.pool())
            .await
            .unwrap();
            rows
        };
        assert_eq!(not_c(store.clone()).await, vec![]);
        let (c,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' \
             AND a.attnum > 0 AND a.atttypid = 'text'::regtype",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert!(c > 60, "{c} text columns");
        // A database an older central made (its keys in the database's collation), beside a
        // table of someone else's and a view of the operator's over the journal's ids: the
        // next start gives central's keys C where PostgreSQL lets it, leaves the other
        // table alone, and starts all the same.
        sqlx::raw_sql(
            "ALTER TABLE journal ALTER COLUMN id TYPE text COLLATE \"default\"; \
             ALTER TABLE transit ALTER COLUMN mrn TYPE text COLLATE \"default\"; \
             CREATE TABLE site_notes (note text); \
             CREATE VIEW site_report AS SELECT id, post FROM journal",
        )
        .execute(store.pool())
        .await
        .unwrap();
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(t, c)| (t.to_string(), c.to_string()))
                .collect()
        };
        assert_eq!(
            not_c(store.clone()).await,
            pairs(&[
                ("journal", "id"),
                ("site_notes", "note"),
                ("transit", "mrn")
            ])
        );
        let again = Store::open(&backend).await.unwrap();
        // PostgreSQL changes no column a view reads: journal.id waits for the next start.
        assert_eq!(
            not_c(again.clone()).await,
            pairs(&[("journal", "id"), ("site_notes", "note")])
        );
        sqlx::raw_sql("DROP VIEW site_report")
            .execute(again.pool())
            .await
            .unwrap();
        let again = Store::open(&backend).await.unwrap();
        assert_eq!(not_c(again.clone()).await, pairs(&[("site_notes", "note")]));
        // A session of someone else's keeps a table open: the start waits for it a while,
        // then leaves that column for the next start, and starts.
        sqlx::raw_sql("ALTER TABLE transit_plate ALTER COLUMN plate TYPE text COLLATE \"default\"")
            .execute(again.pool())
            .await
            .unwrap();
        let mut report = again.pool().begin().await.unwrap();
        sqlx::raw_sql("LOCK TABLE transit_plate IN ACCESS SHARE MODE")
            .execute(&mut *report)
            .await
            .unwrap();
        let again = Store::open(&backend).await.unwrap();
        assert_eq!(
            not_c(again.clone()).await,
            pairs(&[("site_notes", "note"), ("transit_plate", "plate")])
        );
        report.rollback().await.unwrap();
        let again = Store::open(&backend).await.unwrap();
        assert_eq!(not_c(again).await, pairs(&[("site_notes", "note")]));
    });
}

#[test]
fn events_are_journaled_once_and_seq_gaps_are_tracked() {
    on_both(|store, backend| async move {
        let (mut b, mut i) = korgas_v7(&store).await;
        let e1 = b.event(
            "health",
            T0,
            json!({"component": "uplink", "state": "up", "reason": "x"}),
        );
        assert_eq!(
            ingest(&mut i, msg(b.topic("health"), e1.clone()), T0).await,
            Outcome::Accepted
        );
        // The broker redelivers it (a reconnect): acknowledged, not stored twice.
        assert_eq!(
            ingest(&mut i, msg(b.topic("health"), e1), T0).await,
            Outcome::Duplicate
        );

        // seq 2 and 3 are late; 4 and 6 arrive.
        let e2 = b.event(
            "health",
            T0,
            json!({"component": "a", "state": "up", "reason": ""}),
        );
        let e3 = b.event(
            "health",
            T0,
            json!({"component": "b", "state": "up", "reason": ""}),
        );
        let e4 = b.event(
            "health",
            T0,
            json!({"component": "c", "state": "up", "reason": ""}),
        );
        let _lost = b.event(
            "health",
            T0,
            json!({"component": "d", "state": "up", "reason": ""}),
        );
        let e6 = b.event(
            "health",
            T0,
            json!({"component": "e", "state": "up", "reason": ""}),
        );
        let out = i
            .handle(
                &[msg(b.topic("health"), e4), msg(b.topic("health"), e6)],
                T0,
            )
            .await
            .unwrap();
        assert_eq!(out, vec![Outcome::Accepted, Outcome::Accepted]);
        let p = store.post_progress("korgas").await.unwrap().unwrap();
        assert_eq!((p.contiguous_seq, p.highest_seq), (1, 6), "{backend}");
        assert_eq!(p.gaps, vec![(2, 3), (5, 5)], "{backend}");

        // A gap older than the grace period is due for a resend request, once per grace.
        assert!(store.due_gaps(T0 + 1000, 10_000).await.unwrap().is_empty());
        let due = store.due_gaps(T0 + 20_000, 10_000).await.unwrap();
        assert_eq!(due, vec![("korgas".into(), 2, 3), ("korgas".into(), 5, 5)]);
        store
            .gap_requested("korgas", 2, 3, T0 + 20_000)
            .await
            .unwrap();
        let due = store.due_gaps(T0 + 25_000, 10_000).await.unwrap();
        assert_eq!(due, vec![("korgas".into(), 5, 5)], "{backend}");
        let open = store.alerts(true).await.unwrap();
        assert!(open.iter().any(|a| a.id == "gap:korgas"), "{open:?}");

        // The resend fills 3 then 2 (the middle of a gap splits it; the end shrinks it).
        assert_eq!(
            ingest(&mut i, msg(b.topic("health"), e3), T0).await,
            Outcome::Accepted
        );
        let p = store.post_progress("korgas").await.unwrap().unwrap();
        assert_eq!(p.gaps, vec![(2, 2), (5, 5)], "{backend}");
        assert_eq!(
            ingest(&mut i, msg(b.topic("health"), e2), T0).await,
            Outcome::Accepted
        );
        let p = store.post_progress("korgas").await.unwrap().unwrap();
        assert_eq!(
            (p.contiguous_seq, p.gaps.clone()),
            (4, vec![(5, 5)]),
            "{backend}"
        );
        let e5 = b.sealed(
            "health",
            T0,
            json!({"component": "d", "state": "up", "reason": ""}),
            5,
        );
        assert_eq!(
            ingest(&mut i, msg(b.topic("health"), e5), T0).await,
            Outcome::Accepted
        );
        let p = store.post_progress("korgas").await.unwrap().unwrap();
        assert_eq!((p.contiguous_seq, p.gaps.len()), (6, 0), "{backend}");
        assert!(
            store
                .alerts(true)
                .await
                .unwrap()
                .iter()
                .all(|a| a.id != "gap:korgas"),
            "gap alert cleared"
        );
        assert_eq!(store.count(Table::Journal).await.unwrap(), 6, "{backend}");
    });
}

#[test]
fn what_cannot_be_trusted_is_quarantined_counted_and_raised() {
    on_both(|store, backend| async move {
        let mut boxes = registered(&store, &["korgas", "kordai"]).await;
        let mut kordai = boxes.pop().unwrap();
        let mut korgas = boxes.pop().unwrap();
        let stranger = Box_::new("gani-muratbaev");
        declare::submit(
            &store,
            &declaration(&["korgas", "kordai"]),
            "operator:t",
            T0 - H,
        )
        .await
        .unwrap()
        .unwrap();
        let mut i = Ingestor::new(store.clone(), Limits::default())
            .await
            .unwrap();
        let good = korgas.event("passage", T0, passage(MRN, "green", T0));
        let mut tampered = good.clone();
        let at = tampered.windows(5).position(|w| w == b"green").unwrap();
        tampered[at..at + 5].copy_from_slice(b"grean");
        let forged = {
            // kordai's key signing an event that claims to be korgas's: a bad signature for korgas.
            let mut f = Box_::new("korgas");
            f.signer = acsgd_contract::envelope::Signer::ephemeral("korgas").unwrap();
            f.event("passage", T0, passage(MRN, "green", T0))
        };
        let mut s2 = Box_::new("gani-muratbaev");
        let unknown = s2.event("passage", T0, passage(MRN, "green", T0));
        let wrong_topic = kordai.event("passage", T0, passage(MRN, "green", T0));
        let future = korgas.event(
            "alert",
            T0 + 3_600_000,
            json!({"rule": "seal_tamper", "mrn": MRN}),
        );
        let cases: Vec<(Message, &str)> = vec![
            (msg(korgas.topic("passage"), tampered), "bad signature"),
            (msg(korgas.topic("passage"), forged), "bad signature"),
            (msg(stranger.topic("passage"), unknown), "unknown post"),
            (msg(korgas.topic("passage"), wrong_topic), "bad signature"),
            (msg(kordai.topic("alert"), future.clone()), "bad signature"),
            (msg(korgas.topic("alert"), future), "from the future"),
            (
                msg(korgas.topic("passage"), b"{not json".to_vec()),
                "malformed",
            ),
            (
                msg(korgas.topic("passage"), vec![b' '; MAX_PAYLOAD + 1]),
                "oversized",
            ),
            (msg(korgas.topic("status"), b"maybe".to_vec()), "malformed"),
            (
                msg("acsgd/v1/Korgas/passage".into(), b"{}".to_vec()),
                "topic",
            ),
        ];
        for (m, why) in cases {
            let topic = m.topic.clone();
            match ingest(&mut i, m, T0).await {
                Outcome::Quarantined(r) => assert!(r.starts_with(why), "{backend} {topic}: {r}"),
                other => panic!("{backend} {topic}: {other:?}, expected quarantine for {why}"),
            }
        }
        // Nothing of it moved the transit or reached the journal.
        let t = store.transit(MRN).await.unwrap().unwrap();
        assert_eq!(t.state, State::Declared, "{backend}");
        assert!(t.flags.is_empty(), "{backend}");
        assert_eq!(store.count(Table::Journal).await.unwrap(), 0);
        assert_eq!(store.count(Table::Quarantine).await.unwrap(), 10);
        let counts = store.quarantine_counts().await.unwrap();
        assert!(counts.contains(&("bad signature".into(), 4)), "{counts:?}");
        let alerts = store.alerts(true).await.unwrap();
        assert!(alerts
            .iter()
            .any(|a| a.id == "quarantine:gani-muratbaev:unknown post"));
        assert!(alerts
            .iter()
            .any(|a| a.id == "quarantine:korgas:bad signature"));

        // Only the newest are kept when there are too many (a flood cannot fill the disk).
        assert_eq!(store.prune_quarantine(3).await.unwrap(), 7, "{backend}");
        assert_eq!(store.count(Table::Quarantine).await.unwrap(), 3);
        assert_eq!(store.prune_quarantine(3).await.unwrap(), 0);

        // The good one still goes through; the post's status is its link; key is ignored.
        assert_eq!(
            ingest(&mut i, msg(korgas.topic("passage"), good), T0).await,
            Outcome::Accepted
        );
        assert_eq!(
            ingest(&mut i, msg(korgas.topic("status"), b"online".to_vec()), T0).await,
            Outcome::Link
        );
        assert_eq!(
            ingest(&mut i, msg(korgas.topic("key"), b"{}".to_vec()), T0).await,
            Outcome::Ignored
        );
        assert_eq!(
            store.post_progress("korgas").await.unwrap().unwrap().link,
            "online"
        );
        assert_eq!(
            store.transit(MRN).await.unwrap().unwrap().state,
            State::Departed
        );

        // Another event under a seq already used is refused, not stored over the first.
        let reuse = korgas.sealed(
            "health",
            T0,
            json!({"component": "x", "state": "up", "reason": ""}),
            1,
        );
        match ingest(&mut i, msg(korgas.topic("health"), reuse), T0).await {
            Outcome::Quarantined(r) => assert!(r.starts_with("seq reused"), "{r}"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn a_batch_of_new_events_resends_and_a_reused_seq_tells_each_apart() {
    on_both(|store, backend| async move {
        let (mut b, mut i) = korgas_v7(&store).await;
        let health = |c: &str| json!({"component": c, "state": "up", "reason": ""});
        let stored = b.event("health", T0, health("a"));
        assert_eq!(
            ingest(&mut i, msg(b.topic("health"), stored.clone()), T0).await,
            Outcome::Accepted
        );
        // One batch: new events among a resend of a stored one, an event twice, and another
        // event under a seq the batch already carries. Only some of its rows go in, so which
        // ones did is found out (on SQLite from the rowids the insert gave).
        let e2 = b.event("health", T0, health("b"));
        let e3 = b.event("health", T0, health("c"));
        let reused = b.sealed("health", T0 + 1, health("d"), b.seq);
        let e4 = b.event("health", T0, health("e"));
        let batch: Vec<Message> = [&e2, &stored, &e3, &e2, &reused, &e4]
            .into_iter()
            .map(|e| msg(b.topic("health"), e.clone()))
            .collect();
        let out = i.handle(&batch, T0).await.unwrap();
        assert_eq!(out.len(), 6, "{backend}");
        assert_eq!(out[0], Outcome::Accepted, "{backend}");
        assert_eq!(out[1], Outcome::Duplicate, "{backend}");
        assert_eq!(out[2], Outcome::Accepted, "{backend}");
        assert_eq!(out[3], Outcome::Duplicate, "{backend}");
        match &out[4] {
            Outcome::Quarantined(r) => assert!(r.starts_with("seq reused"), "{backend}: {r}"),
            other => panic!("{backend}: {other:?}"),
        }
        assert_eq!(out[5], Outcome::Accepted, "{backend}");
        assert_eq!(store.count(Table::Journal).await.unwrap(), 4, "{backend}");
        let progress = store.post_progress("korgas").await.unwrap().unwrap();
        assert_eq!(progress.highest_seq, 4, "{backend}");
    });
}

#[test]
fn the_worker_commits_each_message_once_in_order_and_late_ones_join_a_small_batch() {
    on_both(|store, backend| async move {
        let mut boxes = registered(&store, &["korgas", "kordai"]).await;
        let alert = json!({"severity": "low", "rule": "plate_unread", "channel": "green",
            "lane": "1", "message": {"key": "alert.plate_unread", "params": {}}});
        let mut make = |i: usize| {
            let b = &mut boxes[i % 2];
            let payload = b.event("alert", T0 + i as i64, alert.clone());
            (i, msg(b.topic("alert"), payload))
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(2 * BATCH);
        // More than a batch waiting: the first call commits a batch and takes the other 30 as
        // the next, checked while it commits.
        for i in 0..BATCH + 30 {
            tx.send(make(i)).await.unwrap();
        }
        let ingestor = Ingestor::new(store.clone(), Limits::default())
            .await
            .unwrap();
        let mut worker = Worker::new(ingestor);
        let message = |t: &(usize, Message)| t.1.clone();
        let (first, out) = worker.next(&mut rx, message).await.unwrap();
        let order = |b: &[(usize, Message)]| b.iter().map(|t| t.0).collect::<Vec<_>>();
        assert_eq!(order(&first), (0..BATCH).collect::<Vec<_>>(), "{backend}");
        assert!(
            out.iter().all(|o| *o == Outcome::Accepted),
            "{backend}: {out:?}"
        );
        // Twenty more before the next call, one of them altered and one from a post nobody
        // registered: few enough to join those 30 in one commit, each with its own outcome.
        let mut ghost = Box_::new("ghost");
        for i in BATCH + 30..BATCH + 50 {
            let (i, mut m) = make(i);
            if i == BATCH + 35 {
                m.payload = String::from_utf8(m.payload)
                    .unwrap()
                    .replace(r#""lane":"1""#, r#""lane":"2""#)
                    .into_bytes();
            }
            if i == BATCH + 40 {
                m = msg(
                    ghost.topic("alert"),
                    ghost.event("alert", T0, alert.clone()),
                );
            }
            tx.send((i, m)).await.unwrap();
        }
        let (second, out) = worker.next(&mut rx, message).await.unwrap();
        assert_eq!(
            order(&second),
            (BATCH..BATCH + 50).collect::<Vec<_>>(),
            "{backend}"
        );
        for ((i, _), o) in second.iter().zip(&out) {
            let why = match i - BATCH {
                35 => Some("bad signature"),
                40 => Some("unknown post"),
                _ => None,
            };
            match (why, o) {
                (None, Outcome::Accepted) => {}
                (Some(why), Outcome::Quarantined(r)) if r.starts_with(why) => {}
                _ => panic!("{backend}: message {i}: {o:?}"),
            }
        }
        drop(tx);
        assert!(worker.next(&mut rx, message).await.is_none(), "{backend}");
        assert_eq!(
            store.count(Table::Journal).await.unwrap() as usize,
            BATCH + 48,
            "{backend}"
        );
    });
}

fn declaration(route: &[&str]) -> serde_json::Value {
    let itinerary: Vec<serde_json::Value> = route
        .iter()
        .enumerate()
        .map(|(k, p)| {
            if k == 0 {
                json!({"post": p})
            } else {
                json!({"post": p, "within_h": 10})
            }
        })
        .collect();
    json!({"mrn": MRN, "plates": ["123ABC02"], "gross_kg": 38000, "itinerary": itinerary,
           "time_limit": "2026-12-04T00:00:00Z"})
}

#[test]
fn declarations_are_checked_against_the_registry() {
    on_both(|store, backend| async move {
        registered(&store, &["korgas", "kordai"]).await;
        let r = declare::submit(
            &store,
            &declaration(&["korgas", "nowhere"]),
            "operator:t",
            T0,
        )
        .await
        .unwrap();
        assert_eq!(
            r.unwrap_err().to_string(),
            format!("declaration {MRN}: itinerary[1].post: nowhere is not a registered post"),
            "{backend}"
        );
        let r = declare::submit(&store, &json!({"mrn": MRN}), "operator:t", T0)
            .await
            .unwrap();
        assert!(
            matches!(r, Err(Refused::Invalid(ref m)) if m.contains("itinerary")),
            "{r:?}"
        );
        declare::submit(
            &store,
            &declaration(&["korgas", "kordai"]),
            "operator:t",
            T0,
        )
        .await
        .unwrap()
        .unwrap();
        let r = declare::submit(
            &store,
            &declaration(&["korgas", "kordai"]),
            "operator:t",
            T0,
        )
        .await
        .unwrap();
        assert_eq!(r.unwrap_err(), Refused::Exists(MRN.into()));
        assert_eq!(store.count(Table::Transit).await.unwrap(), 1);
    });
}

#[test]
fn a_transit_is_routed_followed_made_overdue_once_and_rescinded_by_late_proof() {
    on_both(|store, backend| async move {
        let mut boxes = registered(&store, &["korgas", "almaty-tt", "kordai"]).await;
        let mut kordai = boxes.pop().unwrap();
        let mut almaty = boxes.pop().unwrap();
        let mut korgas = boxes.pop().unwrap();
        declare::submit(
            &store,
            &declaration(&["korgas", "almaty-tt", "kordai"]),
            "operator:aigerim",
            T0 - H,
        )
        .await
        .unwrap()
        .unwrap();
        // Every post of the itinerary gets the declaration.
        let publisher = Publisher::new(store.clone()).await.unwrap();
        let pending = publisher.pending(100).await.unwrap();
        let mut posts: Vec<_> = pending
            .iter()
            .map(|p| (p.post.clone(), !p.payload.is_empty()))
            .collect();
        posts.sort();
        assert_eq!(
            posts,
            vec![
                ("almaty-tt".into(), true),
                ("kordai".into(), true),
                ("korgas".into(), true)
            ]
        );
        for p in &pending {
            assert_eq!(
                p.topic(),
                format!("acsgd/v1/{}/in/declarations/{MRN}", p.post)
            );
            publisher.done(p, T0).await.unwrap();
        }
        assert!(publisher.pending(100).await.unwrap().is_empty());

        let mut i = Ingestor::new(store.clone(), Limits::default())
            .await
            .unwrap();
        let dep = korgas.event("passage", T0, passage(MRN, "green", T0));
        assert_eq!(
            ingest(&mut i, msg(korgas.topic("passage"), dep), T0).await,
            Outcome::Accepted
        );
        let t = store.transit(MRN).await.unwrap().unwrap();
        assert_eq!(
            (t.state, t.expected_post.as_deref()),
            (State::Departed, Some("almaty-tt"))
        );
        assert_eq!(t.expected_by_ms, Some(T0 + 10 * H), "{backend}");
        // korgas no longer needs it.
        let pending = publisher.pending(100).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (pending[0].post.as_str(), pending[0].payload.is_empty()),
            ("korgas", true)
        );
        publisher.done(&pending[0], T0).await.unwrap();
        // After a restart the declarations the posts hold are sent again (the broker may have
        // lost its retained messages meanwhile); korgas's withdrawal, done, is not.
        let restarted = Publisher::new(store.clone()).await.unwrap();
        let again = restarted.pending(100).await.unwrap();
        let posts: Vec<_> = again
            .iter()
            .map(|p| (p.post.as_str(), !p.payload.is_empty()))
            .collect();
        assert_eq!(
            posts,
            vec![("almaty-tt", true), ("kordai", true)],
            "{backend}"
        );
        for p in &again {
            restarted.done(p, T0).await.unwrap();
        }

        // A seal alert at korgas flags the transit.
        let alert = korgas.event("alert", T0 + 1000, json!({"rule": "seal_tamper", "severity": "high",
            "channel": "red", "lane": "lane-1", "message": {"key": "alert.seal_tamper", "params": {}}, "mrn": MRN}));
        ingest(&mut i, msg(korgas.topic("alert"), alert), T0 + 1000).await;
        assert!(store
            .transit(MRN)
            .await
            .unwrap()
            .unwrap()
            .flags
            .contains(&Flag::SealTamper));

        // Two schedulers on the same database at the same moment: one overdue.
        let other = store.clone();
        let now = T0 + 11 * H;
        let (a, b) = tokio::join!(store.scan_overdue(now), other.scan_overdue(now));
        assert_eq!(a.unwrap().len() + b.unwrap().len(), 1, "{backend}");
        assert!(store.scan_overdue(now + H).await.unwrap().is_empty());
        let t = store.transit(MRN).await.unwrap().unwrap();
        assert_eq!(t.state, State::Overdue);
        let overdue_alerts: Vec<_> = store
            .alerts(true)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.kind == "overdue")
            .collect();
        assert_eq!(overdue_alerts.len(), 1, "{overdue_alerts:?}");

        // almaty-tt's uplink was down: its passage at T0 + 9 h arrives now.
        let late = almaty.event("passage", T0 + 9 * H, passage(MRN, "green", T0 + 9 * H));
        assert_eq!(
            ingest(&mut i, msg(almaty.topic("passage"), late), now + 2 * H).await,
            Outcome::Accepted
        );
        let t = store.transit(MRN).await.unwrap().unwrap();
        assert_eq!(t.state, State::EnRoute, "{backend}");
        assert!(!t.flags.contains(&Flag::LateArrival));
        let log = store.transit_log(MRN).await.unwrap();
        let rescind = log
            .iter()
            .find(|(_, c)| c.note.contains("overdue rescinded"))
            .expect("rescinded");
        assert_eq!(rescind.1.from, State::Overdue);
        assert!(
            store
                .alerts(true)
                .await
                .unwrap()
                .iter()
                .all(|a| a.kind != "overdue"),
            "overdue alert cleared"
        );

        // Seen at a post off its route, which was never sent the declaration: its passage
        // names no MRN, and the camera read 123ABC02 as I23A8C02. Found by the plate,
        // diverted, raised; a plate no transit declares changes nothing.
        let mut gani = Box_::new("gani-muratbaev");
        store.put_post(&gani.registry_entry()).await.unwrap();
        let mut unknown = passage(MRN, "yellow", T0 + 12 * H);
        unknown["plates"] = json!([{"text": "999XYZ01", "view": "front", "confidence": 0.9}]);
        unknown.as_object_mut().unwrap().remove("mrn");
        let stranger = gani.event("passage", T0 + 12 * H, unknown);
        ingest(&mut i, msg(gani.topic("passage"), stranger), T0 + 14 * H).await;
        assert_eq!(
            store.transit(MRN).await.unwrap().unwrap().state,
            State::EnRoute
        );
        let mut read = passage(MRN, "yellow", T0 + 12 * H);
        read["plates"] = json!([{"text": "I23A8C02", "view": "front", "confidence": 0.8}]);
        read.as_object_mut().unwrap().remove("mrn");
        let off = gani.event("passage", T0 + 12 * H, read);
        ingest(&mut i, msg(gani.topic("passage"), off), T0 + 14 * H).await;
        let t = store.transit(MRN).await.unwrap().unwrap();
        assert_eq!(t.state, State::Diverted, "{backend}");
        assert!(
            store
                .events_of(MRN)
                .await
                .unwrap()
                .iter()
                .any(|(_, post, kind, _)| post == "gani-muratbaev" && kind == "passage"),
            "the plate-matched passage is on the transit's timeline"
        );
        assert!(t.flags.contains(&Flag::OffItinerary));
        assert!(store
            .alerts(true)
            .await
            .unwrap()
            .iter()
            .any(|a| a.kind == "diverted"));

        // Arrives at kordai; every post gives the declaration up; an operator closes it.
        let arr = kordai.event("passage", T0 + 15 * H, passage(MRN, "green", T0 + 15 * H));
        ingest(&mut i, msg(kordai.topic("passage"), arr), T0 + 15 * H).await;
        let t = store.transit(MRN).await.unwrap().unwrap();
        assert_eq!(t.state, State::Arrived);
        let withdrawn: Vec<_> = publisher
            .pending(100)
            .await
            .unwrap()
            .into_iter()
            .filter(|p| p.payload.is_empty())
            .map(|p| p.post)
            .collect();
        assert!(
            withdrawn.contains(&"kordai".to_string())
                && withdrawn.contains(&"almaty-tt".to_string()),
            "{withdrawn:?}"
        );
        let closed = store
            .act(MRN, Action::Close, "aigerim", "written off")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(closed.state, State::Closed);
        let refused = store
            .act(MRN, Action::Cancel, "aigerim", "")
            .await
            .unwrap()
            .unwrap_err();
        assert!(refused.contains("is closed"), "{refused}");

        // Every state change is journaled with its cause.
        let log = store.transit_log(MRN).await.unwrap();
        let causes: Vec<&str> = log.iter().map(|(_, c)| c.cause.as_str()).collect();
        assert_eq!(causes[0], "operator:aigerim");
        assert!(causes.contains(&"scheduler"));
        assert!(causes.contains(&"korgas-passage-00000001"), "{causes:?}");
        assert_eq!(causes.last(), Some(&"operator:aigerim"));
    });
}

/// A batch writes its transits, their numbered changes, sightings and routes at its end: the
/// same story fed one event per batch, all in one batch, and in pairs ends the same, down to
/// each journal line, the transit's version and what the posts are sent.
#[test]
fn a_batch_of_passages_and_alerts_ends_as_the_events_one_by_one() {
    on_both(|store, backend| async move {
        let mut boxes = registered(&store, &["korgas", "almaty-tt", "kordai"]).await;
        let mut kordai = boxes.pop().unwrap();
        let mut almaty = boxes.pop().unwrap();
        let mut korgas = boxes.pop().unwrap();
        let mut ends = Vec::new();
        for (k, per_batch) in [1usize, 7, 2].into_iter().enumerate() {
            let mrn = format!("26KZ550000000000{k}B");
            let mut d = declaration(&["korgas", "almaty-tt", "kordai"]);
            d["mrn"] = json!(mrn);
            declare::submit(&store, &d, "operator:aigerim", T0 - H)
                .await
                .unwrap()
                .unwrap();
            let alert = |rule: &str| {
                json!({"rule": rule, "severity": "high", "channel": "red", "lane": "lane-1",
                       "message": {"key": format!("alert.{rule}"), "params": {}}, "mrn": mrn})
            };
            let t = T0;
            let story = [
                msg(
                    korgas.topic("passage"),
                    korgas.event("passage", t, passage(&mrn, "green", t)),
                ),
                msg(
                    korgas.topic("alert"),
                    korgas.event("alert", t + 1000, alert("seal_tamper")),
                ),
                // The same alert again (another event): the flag is up already.
                msg(
                    korgas.topic("alert"),
                    korgas.event("alert", t + 2000, alert("seal_tamper")),
                ),
                msg(
                    almaty.topic("passage"),
                    almaty.event("passage", t + H, passage(&mrn, "green", t + H)),
                ),
                msg(
                    almaty.topic("alert"),
                    almaty.event("alert", t + H + 1000, alert("watchlist")),
                ),
                msg(
                    kordai.topic("passage"),
                    kordai.event("passage", t + 2 * H, passage(&mrn, "green", t + 2 * H)),
                ),
                // Kordai's passage seen again under another lane id: a second sighting.
                msg(
                    kordai.topic("passage"),
                    kordai.event(
                        "passage",
                        t + 2 * H + 5,
                        passage(&mrn, "green", t + 2 * H + 5),
                    ),
                ),
            ];
            let mut i = Ingestor::new(store.clone(), Limits::default())
                .await
                .unwrap();
            for batch in story.chunks(per_batch) {
                let out = i.handle(batch, t + 3 * H).await.unwrap();
                assert!(out.iter().all(|o| *o == Outcome::Accepted), "{out:?}");
            }
            let tr = store.transit(&mrn).await.unwrap().unwrap();
            let log: Vec<_> = store
                .transit_log(&mrn)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, c)| (c.from, c.to, c.note))
                .collect();
            let publisher = Publisher::new(store.clone()).await.unwrap();
            let mut sent: Vec<_> = publisher
                .pending(100)
                .await
                .unwrap()
                .into_iter()
                .filter(|p| p.mrn == mrn)
                .map(|p| (p.post, p.payload.is_empty()))
                .collect();
            sent.sort();
            ends.push(((tr.state, tr.leg, tr.flags.clone(), tr.version), log, sent));
        }
        let first = &ends[0];
        assert_eq!(first.0 .0, State::Arrived, "{backend}");
        assert!(first.0 .2.contains(&Flag::SealTamper), "{backend}");
        // Declared, departed, flagged (once), en route, flagged, arrived: six lines, the
        // batch's numbered after the declaration's.
        assert_eq!(first.1.len(), 6, "{backend}: {:?}", first.1);
        for (k, end) in ends.iter().enumerate().skip(1) {
            assert_eq!(end, first, "{backend}: batching {k}");
        }
    });
}
