//! Positions between posts, on SQLite and on PostgreSQL: the seal operator's EGTS feed over a
//! real TCP connection (real captures from `../shared/traces`, then a simulated route made of
//! real EGTS frames), and the posts' position events; a deviation from the corridor and a
//! silence each raised once and cleared, out-of-order fixes judged by their time.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use acsgd_central::declare;
use acsgd_central::feed::{self, FeedCounters};
use acsgd_central::ingest::{Ingestor, Limits, Message};
use acsgd_central::positions::{Fix, PositionsConfig};
use acsgd_central::store::Store;
use acsgd_drivers::egts;
use acsgd_drivers::reading::Reading;
use serde_json::{json, Value};

use crate::common::{on_both, passage, Box_, H};

/// 2026-12-01T00:00:00Z
const T0: i64 = 1_796_083_200_000;
const KHORGOS: [f64; 2] = [44.2125, 80.4089];
const ALMATY: [f64; 2] = [43.2389, 76.8897];

/// One capture: its bytes, and the valid fixes it carries as (device, time ms).
type Capture = (Vec<u8>, Vec<(String, i64)>);

/// The captures of Traccar's EGTS tests.
fn captures() -> Vec<Capture> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/traces/trackers/egts.tsv"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let bytes = acsgd_contract::envelope::from_hex(cols.get(4)?)?;
            let packet = egts::parse_packet(&bytes).ok()?;
            let fixes = egts::readings(&packet)
                .into_iter()
                .filter_map(|r| match r {
                    Reading::Position(p) if p.valid => Some((
                        p.device?,
                        (p.time?.unix_timestamp_nanos() / 1_000_000) as i64,
                    )),
                    _ => None,
                })
                .collect();
            Some((bytes, fixes))
        })
        .collect()
}

/// Korgas and Kordai registered; Korgas's box, to sign its events.
async fn two_posts(store: &Store) -> Box_ {
    let korgas = Box_::new("korgas");
    store.put_post(&korgas.registry_entry()).await.unwrap();
    store
        .put_post(&Box_::new("kordai").registry_entry())
        .await
        .unwrap();
    korgas
}

async fn transit(store: &Store, mrn: &str, tracker: &str, corridor: Option<Value>) {
    let mut d = json!({"mrn": mrn, "plates": ["123ABC02"], "tracker": tracker,
        "itinerary": [{"post": "korgas"}, {"post": "kordai", "within_h": 48}]});
    if let Some(c) = corridor {
        d["corridor"] = c;
    }
    declare::submit(store, &d, "operator:t", T0 - H)
        .await
        .unwrap()
        .unwrap();
}

/// Answers read off the socket: the packet ids they acknowledge, each with result 0.
fn read_responses(s: &mut std::net::TcpStream, want: usize) -> Vec<u16> {
    let mut buf = Vec::new();
    let mut acked = Vec::new();
    let mut chunk = [0u8; 4096];
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    while acked.len() < want {
        let n = s.read(&mut chunk).expect("an answer within 60 s");
        assert!(n > 0, "the feed closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        while let egts::Scan::Packet(len) = egts::scan(&buf) {
            let p = egts::parse_packet(&buf[..len]).unwrap();
            let (pid, result) = p.response_to.expect("a RESPONSE");
            assert_eq!(result, 0);
            acked.push(pid);
            buf.drain(..len);
        }
    }
    acked
}

fn pid_of(frame: &[u8]) -> u16 {
    u16::from_le_bytes([frame[7], frame[8]])
}

/// A point `off_m` north of the Khorgos–Almaty line at fraction `t` of it.
fn on_route(t: f64, off_m: f64) -> (f64, f64) {
    (
        KHORGOS[0] + t * (ALMATY[0] - KHORGOS[0]) + off_m / 111_195.0,
        KHORGOS[1] + t * (ALMATY[1] - KHORGOS[1]),
    )
}

async fn log_notes(store: &Store, mrn: &str, prefix: &str) -> usize {
    store
        .transit_log(mrn)
        .await
        .unwrap()
        .iter()
        .filter(|(_, c)| c.note.starts_with(prefix))
        .count()
}

#[test]
fn the_seal_operators_feed_and_the_posts_positions_follow_a_truck_between_posts() {
    on_both(|store, backend| async move {
        let mut korgas = two_posts(&store).await;
        let config = PositionsConfig::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let counters = Arc::new(FeedCounters::default());
        tokio::spawn(feed::serve(
            listener,
            store.clone(),
            config.clone(),
            counters.clone(),
        ));

        // Real captures: a transit declares the tracker of one of them (no corridor: fixes are
        // stored and judged for silence only).
        let caps = captures();
        let (device, _) = caps
            .iter()
            .flat_map(|c| c.1.iter())
            .next()
            .expect("the captures have fixes")
            .clone();
        let theirs: usize = caps
            .iter()
            .flat_map(|c| c.1.iter())
            .filter(|f| f.0 == device)
            .map(|f| f.1)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        transit(&store, "26KZ5500000000011A", &device, None).await;
        let mut i = Ingestor::new(store.clone(), Limits::default())
            .await
            .unwrap();
        let dep = korgas.event("passage", T0, passage("26KZ5500000000011A", "green", T0));
        i.handle(
            &[Message {
                topic: korgas.topic("passage"),
                payload: dep,
            }],
            T0,
        )
        .await
        .unwrap();
        // Every capture over one connection, with line noise between two of them.
        let answered: Vec<u16> = {
            let caps = caps.clone();
            tokio::task::spawn_blocking(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                let mut want = Vec::new();
                for (k, (bytes, _)) in caps.iter().enumerate() {
                    if k == 1 {
                        s.write_all(b"\x00\xffnoise\x02").unwrap();
                    }
                    s.write_all(bytes).unwrap();
                    let p = egts::parse_packet(bytes).unwrap();
                    if !p.records.is_empty() {
                        want.push(pid_of(bytes));
                    }
                }
                let got = read_responses(&mut s, want.len());
                assert_eq!(got, want, "each packet with records acknowledged, in order");
                got
            })
            .await
            .unwrap()
        };
        assert!(!answered.is_empty());
        assert!(
            counters.bad_packets.load(Ordering::Relaxed) >= 1,
            "the noise was counted"
        );
        let track = store.track("26KZ5500000000011A").await.unwrap();
        assert_eq!(
            track.fixes.len(),
            theirs,
            "{backend}: every fix of {device} stored once"
        );

        // A simulated route, as real EGTS frames: a truck on its corridor, 9 km off it for
        // four fixes, at the edge, back inside; then a silence.
        let mrn = "26KZ5500000000012B";
        let corridor = json!({"points": [KHORGOS, ALMATY], "width_m": 5000});
        transit(&store, mrn, "7001", Some(corridor)).await;
        let dep = korgas.event("passage", T0, passage(mrn, "green", T0));
        i.handle(
            &[Message {
                topic: korgas.topic("passage"),
                payload: dep,
            }],
            T0,
        )
        .await
        .unwrap();
        let offsets = [
            0.0, 0.0, 9000.0, 9500.0, 10000.0, 9000.0, 5200.0, 500.0, 0.0,
        ];
        let t0 = T0 / 1000 + 600;
        let frames: Vec<Vec<u8>> = offsets
            .iter()
            .enumerate()
            .map(|(k, off)| {
                let (lat, lon) = on_route(0.05 + 0.01 * k as f64, *off);
                egts::encode_position(
                    100 + k as u16,
                    k as u16,
                    7001,
                    t0 + 60 * k as i64,
                    lat,
                    lon,
                    60.0,
                    250,
                    0,
                )
            })
            .collect();
        let late_stray = {
            // Sent last, stamped between two fixes on the line: judged there, not as news.
            let (lat, lon) = on_route(0.125, 9000.0);
            egts::encode_position(200, 99, 7001, t0 + 60 * 7 + 30, lat, lon, 60.0, 250, 0)
        };
        let mut all = frames.clone();
        all.push(late_stray);
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            for f in &all {
                s.write_all(f).unwrap();
                // One at a time: each judged with the fixes before it.
                read_responses(&mut s, 1);
            }
        })
        .await
        .unwrap();
        assert_eq!(
            log_notes(&store, mrn, "flag route_deviation: ").await,
            1,
            "{backend}"
        );
        assert_eq!(
            log_notes(&store, mrn, "flag route_deviation cleared: ").await,
            1,
            "{backend}"
        );
        let t = store.transit(mrn).await.unwrap().unwrap();
        assert!(
            !t.flags.iter().any(|f| f.as_str() == "route_deviation"),
            "{:?}",
            t.flags
        );
        let raised = store.transit_log(mrn).await.unwrap();
        let note = &raised
            .iter()
            .find(|(_, c)| c.note.starts_with("flag route_deviation: "))
            .unwrap()
            .1
            .note;
        assert!(
            note.contains("up to 8.") || note.contains("up to 9."),
            "{note}"
        );

        // Silence: an hour and more after the last fix, once, however often the scheduler looks.
        let last = (t0 + 60 * 8) * 1000;
        store.scan_silent(last + H - 1000, &config).await.unwrap();
        assert_eq!(log_notes(&store, mrn, "flag tracker_silent: ").await, 0);
        store.scan_silent(last + H + 1000, &config).await.unwrap();
        assert_eq!(log_notes(&store, mrn, "flag tracker_silent: ").await, 1);
        let other = store.clone();
        let (a, b) = tokio::join!(
            store.scan_silent(last + 2 * H, &config),
            other.scan_silent(last + 2 * H, &config)
        );
        a.unwrap();
        b.unwrap();
        assert_eq!(
            log_notes(&store, mrn, "flag tracker_silent: ").await,
            1,
            "{backend}: once"
        );
        assert!(store.track(mrn).await.unwrap().silent);
        // The next fix comes from a post: its position event clears the silence.
        let (lat, lon) = on_route(0.2, 0.0);
        let fix_time = acsgd_central::tracking::time_text(last + 2 * H);
        let body = json!({"device": "7001", "sensor": "seals", "fixes": [{"source": "POS_DATA",
            "time": fix_time, "lat": lat, "lon": lon, "valid": true, "speed": 55.0}]});
        let ev = korgas.event("position", last + 2 * H, body);
        i.handle(
            &[Message {
                topic: korgas.topic("position"),
                payload: ev,
            }],
            last + 2 * H,
        )
        .await
        .unwrap();
        assert_eq!(log_notes(&store, mrn, "flag tracker_silent: ").await, 1);
        assert_eq!(
            log_notes(&store, mrn, "flag tracker_silent cleared: ").await,
            1
        );
        let track = store.track(mrn).await.unwrap();
        assert_eq!(track.fixes.len(), offsets.len() + 2, "{backend}");
        assert!(!track.silent);
    });
}

/// The flag changes of a transit's log, each with its note and the index (in `ids`) of the
/// event that caused it.
async fn flag_changes(store: &Store, mrn: &str, ids: &[String]) -> Vec<(String, usize)> {
    store
        .transit_log(mrn)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, c)| c.note.starts_with("flag "))
        .map(|(_, c)| {
            let k = ids.iter().position(|i| *i == c.cause);
            (c.note, k.unwrap_or(usize::MAX))
        })
        .collect()
}

#[test]
fn a_backlog_of_positions_is_judged_event_by_event_however_it_is_batched() {
    on_both(|store, backend| async move {
        let mut korgas = two_posts(&store).await;
        let limits = Limits {
            positions: PositionsConfig {
                stop_max_s: 300,
                ..PositionsConfig::default()
            },
            ..Limits::default()
        };
        let mut i = Ingestor::new(store.clone(), limits).await.unwrap();
        let corridor = json!({"points": [KHORGOS, ALMATY], "width_m": 5000});
        // One route, as a post forwards it after a long outage. Each entry is one event's
        // fixes as (minute, offset from the line in m, speed): a deviation that begins and
        // ends inside the backlog, a stop longer than 300 s and its end, an event whose two
        // fixes come in reverse order, and a stray 9 km off that comes three events late,
        // stamped between two fixes on the line (judged there: no deviation of its own).
        let route: Vec<Vec<(i64, f64, f64)>> = vec![
            vec![(0, 0.0, 60.0)],
            vec![(1, 0.0, 60.0)],
            vec![(2, 9000.0, 60.0)],
            vec![(4, 10000.0, 60.0), (3, 9500.0, 60.0)],
            vec![(5, 9000.0, 60.0)],
            vec![(6, 5200.0, 60.0)],
            vec![(7, 500.0, 60.0)],
            vec![(8, 0.0, 0.0)],
            vec![(10, 0.0, 0.0)],
            vec![(12, 0.0, 0.0)],
            vec![(14, 0.0, 0.0)],
            vec![(11, 9000.0, 0.0)],
            vec![(15, 0.0, 50.0)],
            vec![(16, 0.0, 50.0)],
        ];
        let t0 = T0 + 600_000;
        // Four transits on the same road, each with its own seal, whose events go in:
        // one per batch; all in one batch; in batches of three; and one per batch for the
        // first half, then the fold forgotten (a track folded before migration 6), then the
        // rest in one batch.
        let mut runs: Vec<(String, Vec<String>)> = Vec::new();
        for (n, how) in ["single", "one-batch", "threes", "forgotten"]
            .iter()
            .enumerate()
        {
            let mrn = format!("26KZ550000000002{n}B");
            let tracker = format!("seal-{how}");
            transit(&store, &mrn, &tracker, Some(corridor.clone())).await;
            let dep = korgas.event("passage", T0, passage(&mrn, "green", T0));
            let m = Message {
                topic: korgas.topic("passage"),
                payload: dep,
            };
            i.handle(&[m], T0).await.unwrap();
            let mut ids = Vec::new();
            let msgs: Vec<Message> = route
                .iter()
                .map(|fixes| {
                    let fixes: Vec<Value> = fixes
                        .iter()
                        .map(|(min, off, speed)| {
                            let (lat, lon) = on_route(0.05 + 0.002 * *min as f64, *off);
                            json!({"source": "POS_DATA", "valid": true, "speed": speed,
                               "time": acsgd_central::tracking::time_text(t0 + min * 60_000),
                               "lat": lat, "lon": lon})
                        })
                        .collect();
                    let body = json!({"device": tracker, "sensor": "seals", "fixes": fixes});
                    let payload = korgas.event("position", t0 + 20 * 60_000, body);
                    let v: Value = serde_json::from_slice(&payload).unwrap();
                    ids.push(v["id"].as_str().unwrap().to_string());
                    Message {
                        topic: korgas.topic("position"),
                        payload,
                    }
                })
                .collect();
            let now = t0 + 30 * 60_000;
            match *how {
                "single" => {
                    for m in &msgs {
                        i.handle(std::slice::from_ref(m), now).await.unwrap();
                    }
                }
                "one-batch" => {
                    i.handle(&msgs, now).await.unwrap();
                }
                "threes" => {
                    for part in msgs.chunks(3) {
                        i.handle(part, now).await.unwrap();
                    }
                }
                _ => {
                    let (first, rest) = msgs.split_at(6);
                    for m in first {
                        i.handle(std::slice::from_ref(m), now).await.unwrap();
                    }
                    sqlx::query("UPDATE track SET fold = NULL WHERE mrn = $1")
                        .bind(&mrn)
                        .execute(store.pool())
                        .await
                        .unwrap();
                    i.handle(rest, now).await.unwrap();
                }
            }
            runs.push((mrn, ids));
        }
        let (first, first_ids) = &runs[0];
        let want = flag_changes(&store, first, first_ids).await;
        let kinds: Vec<&str> = want
            .iter()
            .map(|(note, _)| note.split(':').next().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "flag route_deviation",
                "flag route_deviation cleared",
                "flag stopped",
                "flag stopped cleared"
            ],
            "{backend}: {want:?}"
        );
        // Raised by the event with the third fix out (the fourth event), cleared by the one
        // well inside (the seventh); the stop by the event 6 minutes into it, ended by the
        // first moving fix.
        let causes: Vec<usize> = want.iter().map(|(_, k)| *k).collect();
        assert_eq!(causes, [3, 6, 10, 12], "{backend}: {want:?}");
        let want_track = store.track(first).await.unwrap();
        assert_eq!(want_track.fixes.len(), 15, "{backend}");
        for (mrn, ids) in &runs[1..] {
            assert_eq!(
                flag_changes(&store, mrn, ids).await,
                want,
                "{backend}: {mrn} judged as the events came"
            );
            let track = store.track(mrn).await.unwrap();
            assert_eq!(track, want_track, "{backend}: {mrn}");
        }
    });
}

/// A track row written by another connection between a transaction's read of it and its own
/// write (the seal operator's feed and a post's position event for the same truck, the
/// silence scan, another worker) is not written over: the later transaction finds another
/// version and is done again from a fresh read.
///
/// Two transits on the same corridor get the same fixes: a fix on the line, then two 9 km off
/// it (two fixes beyond the width make a deviation here). Transit B takes them one by one, the
/// reference. For A another writer folds the second fix in, in a transaction held open, while
/// the feed's `apply_fixes` brings the third; the writer commits once the feed's write waits
/// for its row (PostgreSQL: seen in `pg_stat_activity`; SQLite has one writer at a time and
/// nothing to watch, so there the order is whichever comes, and the outcome must be the same
/// either way). Written over, A would have lost the second fix: no deviation, and a fold unlike
/// B's.
#[test]
fn a_track_written_meanwhile_by_another_connection_is_not_written_over() {
    on_both(|store, backend| async move {
        let mut korgas = two_posts(&store).await;
        let config = PositionsConfig {
            deviation_fixes: 2,
            deviation_s: 3600,
            ..PositionsConfig::default()
        };
        let mut i = Ingestor::new(store.clone(), Limits::default())
            .await
            .unwrap();
        let corridor = json!({"points": [KHORGOS, ALMATY], "width_m": 5000});
        let (a, b) = ("26KZ5500000000030C", "26KZ5500000000031C");
        for (mrn, tracker) in [(a, "seal-a"), (b, "seal-b")] {
            transit(&store, mrn, tracker, Some(corridor.clone())).await;
            let dep = korgas.event("passage", T0, passage(mrn, "green", T0));
            let m = Message {
                topic: korgas.topic("passage"),
                payload: dep,
            };
            i.handle(&[m], T0).await.unwrap();
        }
        let fix = |min: i64, off_m: f64| {
            let (lat, lon) = on_route(0.05 + 0.002 * min as f64, off_m);
            Fix {
                time_ms: T0 + 600_000 + min * 60_000,
                lat,
                lon,
                speed: Some(60.0),
            }
        };
        let (f1, f2, f3) = (fix(0, 0.0), fix(1, 9000.0), fix(2, 9000.0));
        let now = T0 + H;
        let apply = |store: Store, tracker: &'static str, f: Fix, config: PositionsConfig| async move {
            store
                .apply_fixes(
                    &[(tracker.to_string(), vec![f])],
                    "egts",
                    "egts:test",
                    &config,
                    now,
                )
                .await
        };
        for (tracker, f) in [("seal-a", f1), ("seal-b", f1), ("seal-b", f2)] {
            apply(store.clone(), tracker, f, config.clone())
                .await
                .unwrap();
        }
        let row = |mrn: &'static str| {
            let store = store.clone();
            async move {
                let r = sqlx::query(
                    "SELECT fold, last_fix_ms, deviating_since, stopped_since, silent, version \
                     FROM track WHERE mrn = $1",
                )
                .bind(mrn)
                .fetch_one(store.pool())
                .await
                .unwrap();
                use sqlx::Row;
                (
                    r.get::<Option<String>, _>(0),
                    r.get::<Option<i64>, _>(1),
                    r.get::<Option<i64>, _>(2),
                    r.get::<Option<i64>, _>(3),
                    r.get::<i64, _>(4),
                    r.get::<i64, _>(5),
                )
            }
        };
        // The other writer: B's track after the second fix, as A's, and the fix itself.
        let (fold, last, dev, stop, _, _) = row(b).await;
        let mut other = store.pool().begin().await.unwrap();
        sqlx::query(
            "UPDATE track SET fold = $1, last_fix_ms = $2, deviating_since = $3, \
             stopped_since = $4, version = version + 1 WHERE mrn = $5",
        )
        .bind(fold)
        .bind(last)
        .bind(dev)
        .bind(stop)
        .bind(a)
        .execute(&mut *other)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO fix (mrn, time_ms, lat, lon, speed, source, received_ms) \
             VALUES ($1, $2, $3, $4, $5, 'egts', $6)",
        )
        .bind(a)
        .bind(f2.time_ms)
        .bind(f2.lat)
        .bind(f2.lon)
        .bind(f2.speed)
        .bind(now)
        .execute(&mut *other)
        .await
        .unwrap();
        let third = tokio::spawn(apply(store.clone(), "seal-a", f3, config.clone()));
        if backend.starts_with("postgres") {
            let mut waited = 0;
            loop {
                let (waiting,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                )
                .fetch_one(store.pool())
                .await
                .unwrap();
                if waiting > 0 {
                    break;
                }
                waited += 1;
                assert!(waited < 3000, "the feed's write never waited for the row");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        } else {
            tokio::task::yield_now().await;
        }
        other.commit().await.unwrap();
        assert_eq!(third.await.unwrap().unwrap(), 1, "{backend}: A's fix taken");
        apply(store.clone(), "seal-b", f3, config.clone())
            .await
            .unwrap();
        let (got, want) = (row(a).await, row(b).await);
        assert!(
            got.2.is_some(),
            "{backend}: A deviates, on the second and third fixes"
        );
        assert_eq!(
            (&got.0, got.1, got.2, got.3, got.4),
            (&want.0, want.1, want.2, want.3, want.4),
            "{backend}: A's track as B's, the second fix folded in"
        );
        assert_eq!(
            got.5, 3,
            "{backend}: three writes of A's track, one after another"
        );
        assert_eq!(
            log_notes(&store, a, "flag route_deviation").await,
            log_notes(&store, b, "flag route_deviation").await,
            "{backend}: the deviation raised on A as on B"
        );
        assert_eq!(log_notes(&store, a, "flag route_deviation").await, 1);
        assert_eq!(store.track(a).await.unwrap().fixes.len(), 3);
        if backend.starts_with("sqlite") {
            // What SQLite does instead of PostgreSQL's wait: a transaction that read before
            // another wrote is refused its own write, and that refusal is done again too.
            let mut late = store.pool().begin().await.unwrap();
            sqlx::query("SELECT version FROM track WHERE mrn = $1")
                .bind(a)
                .fetch_one(&mut *late)
                .await
                .unwrap();
            sqlx::query("UPDATE track SET version = version + 1 WHERE mrn = $1")
                .bind(a)
                .execute(store.pool())
                .await
                .unwrap();
            let refused = sqlx::query("UPDATE track SET version = version + 1 WHERE mrn = $1")
                .bind(a)
                .execute(&mut *late)
                .await
                .expect_err("a write on an overtaken snapshot");
            let e = acsgd_central::store::StoreError::from(refused);
            assert!(e.is_conflict(), "{e}");
        }
    });
}
