//! Retention (`acsgd_central::retention`) on SQLite and PostgreSQL: old position events and the
//! tracks of transits off the road are forgotten, nothing else is, and what comes after is
//! still judged right; and the service forgets them by itself, as a process.

use acsgd::mosquitto::Mosquitto;
use acsgd_central::declare;
use acsgd_central::ingest::{Ingestor, Limits, Message, Outcome};
use acsgd_central::retention::{Pruned, DAY_MS};
use acsgd_central::store::{now_ms, Store};
use serde_json::json;

use crate::common::{free_port, on_both, passage, ready, start, wait, write_config, Box_, H};

/// 2026-12-01T00:00:00Z
const T0: i64 = 1_796_083_200_000;
const KHORGOS: [f64; 2] = [44.2125, 80.4089];
const ALMATY: [f64; 2] = [43.2389, 76.8897];
const MIN: i64 = 60_000;

async fn declared(store: &Store, mrn: &str, tracker: &str, at: i64) {
    let d = json!({"mrn": mrn, "plates": ["123ABC02"], "tracker": tracker,
        "corridor": {"points": [KHORGOS, ALMATY], "width_m": 5000},
        "itinerary": [{"post": "korgas"}, {"post": "kordai", "within_h": 48}]});
    declare::submit(store, &d, "operator:t", at)
        .await
        .unwrap()
        .unwrap();
}

/// A position event of `tracker` with one fix on the Khorgos–Almaty line at `time`.
fn position(post: &mut Box_, tracker: &str, time: i64) -> Message {
    let t = ((time - T0) as f64 / H as f64 * 0.1).clamp(0.0, 1.0);
    let fix = json!({"source": "POS_DATA", "valid": true, "speed": 60.0,
        "time": acsgd_central::tracking::time_text(time),
        "lat": KHORGOS[0] + t * (ALMATY[0] - KHORGOS[0]),
        "lon": KHORGOS[1] + t * (ALMATY[1] - KHORGOS[1])});
    let body = json!({"device": tracker, "sensor": "seals", "fixes": [fix]});
    Message {
        topic: post.topic("position"),
        payload: post.event("position", time, body),
    }
}

fn passage_at(post: &mut Box_, mrn: &str, time: i64) -> Message {
    Message {
        topic: post.topic("passage"),
        payload: post.event("passage", time, passage(mrn, "green", time)),
    }
}

async fn count(store: &Store, sql: &str, mrn: Option<&str>) -> i64 {
    let q = sqlx::query_scalar::<_, i64>(sql);
    let q = match mrn {
        Some(m) => q.bind(m.to_string()),
        None => q,
    };
    q.fetch_one(store.pool()).await.unwrap()
}

async fn positions_kept(store: &Store) -> i64 {
    count(
        store,
        "SELECT COUNT(*) FROM journal WHERE type = 'position'",
        None,
    )
    .await
}

async fn fixes_of(store: &Store, mrn: &str) -> i64 {
    count(store, "SELECT COUNT(*) FROM fix WHERE mrn = $1", Some(mrn)).await
}

#[test]
fn old_position_events_and_the_tracks_of_transits_off_the_road_are_forgotten() {
    on_both(|store, backend| async move {
        let mut korgas = Box_::new("korgas");
        let mut kordai = Box_::new("kordai");
        store.put_post(&korgas.registry_entry()).await.unwrap();
        store.put_post(&kordai.registry_entry()).await.unwrap();
        let mut i = Ingestor::new(store.clone(), Limits::default())
            .await
            .unwrap();
        let (a, b) = ("26KZ5500000000031A", "26KZ5500000000032B");
        declared(&store, a, "seal-a", T0 - H).await;
        declared(&store, b, "seal-b", T0 - H).await;
        for mrn in [a, b] {
            let m = passage_at(&mut korgas, mrn, T0);
            assert_eq!(i.handle(&[m], T0).await.unwrap(), [Outcome::Accepted]);
        }
        // Three fixes of each seal on the road, received an hour in; an alert beside them.
        let mut sent_a = Vec::new();
        for k in 1..=3 {
            let pa = position(&mut korgas, "seal-a", T0 + k * 10 * MIN);
            sent_a.push(pa.clone());
            let pb = position(&mut korgas, "seal-b", T0 + k * 10 * MIN);
            i.handle(&[pa, pb], T0 + H).await.unwrap();
        }
        let alert = Message {
            topic: korgas.topic("alert"),
            payload: korgas.event(
                "alert",
                T0 + H,
                json!({"rule": "lane_silent", "lane": "lane-1", "text": "no reading"}),
            ),
        };
        i.handle(&[alert], T0 + H).await.unwrap();
        // A arrives at Kordai two hours in; B stays on the road. (A transit's last change is
        // stamped with central's own clock, not the batch's `now`.)
        let before_arrival = now_ms();
        let m = passage_at(&mut kordai, a, T0 + 2 * H);
        i.handle(&[m], T0 + 2 * H).await.unwrap();
        assert_eq!(
            store.transit(a).await.unwrap().unwrap().state.as_str(),
            "arrived"
        );
        assert_eq!(positions_kept(&store).await, 6, "{backend}");
        assert_eq!(
            (fixes_of(&store, a).await, fixes_of(&store, b).await),
            (3, 3)
        );
        let others = count(
            &store,
            "SELECT COUNT(*) FROM journal WHERE type <> 'position'",
            None,
        )
        .await;
        assert_eq!(others, 4, "{backend}: three passages and the alert");

        // No event was received before 30 minutes in; A changed after `before_arrival`.
        assert_eq!(
            store
                .prune_position_events(T0 + 30 * MIN, 100)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store.prune_tracks(before_arrival, 100).await.unwrap(),
            Pruned::default(),
            "{backend}: A changed after the cut"
        );
        // At three hours: the position events, a few at a time, oldest first.
        assert_eq!(store.prune_position_events(T0 + 3 * H, 4).await.unwrap(), 4);
        assert_eq!(positions_kept(&store).await, 2, "{backend}");
        assert_eq!(store.prune_position_events(T0 + 3 * H, 4).await.unwrap(), 2);
        assert_eq!(store.prune_position_events(T0 + 3 * H, 4).await.unwrap(), 0);
        // A's track (off the road); B's stays with all its fixes (on the road).
        let later = now_ms() + H;
        assert_eq!(
            store.prune_tracks(later, 100).await.unwrap(),
            Pruned {
                transits: 1,
                fixes: 3
            },
            "{backend}"
        );
        assert_eq!(
            store.prune_tracks(later, 100).await.unwrap(),
            Pruned::default()
        );
        assert_eq!(
            (fixes_of(&store, a).await, fixes_of(&store, b).await),
            (0, 3)
        );
        assert!(store.track(a).await.unwrap().fixes.is_empty());
        assert_eq!(store.track(b).await.unwrap().fixes.len(), 3, "{backend}");
        let links = "SELECT COUNT(*) FROM transit_tracker WHERE mrn = $1";
        assert_eq!(count(&store, links, Some(a)).await, 0, "{backend}");
        assert_eq!(count(&store, links, Some(b)).await, 1, "{backend}");
        // Everything else is kept: the passages and the alert, A's changes and sightings.
        let kept_others = count(
            &store,
            "SELECT COUNT(*) FROM journal WHERE type <> 'position'",
            None,
        )
        .await;
        assert_eq!(kept_others, others, "{backend}");
        let a_now = store.transit(a).await.unwrap().unwrap();
        assert_eq!(a_now.state.as_str(), "arrived");
        assert!(!store.transit_log(a).await.unwrap().is_empty());

        // One of A's position events sent again: taken as new (its row is gone), its fix goes
        // nowhere, and A does not change.
        let again = i.handle(&sent_a[..1], T0 + 4 * H).await.unwrap();
        assert_eq!(again, [Outcome::Accepted], "{backend}");
        assert_eq!(fixes_of(&store, a).await, 0, "{backend}");
        assert_eq!(store.transit(a).await.unwrap().unwrap(), a_now, "{backend}");
        // Seal A on its next trip: its fixes are the new transit's alone.
        let c = "26KZ5500000000033C";
        declared(&store, c, "seal-a", T0 + 4 * H).await;
        let m = passage_at(&mut korgas, c, T0 + 5 * H);
        i.handle(&[m], T0 + 5 * H).await.unwrap();
        let m = position(&mut korgas, "seal-a", T0 + 5 * H + 10 * MIN);
        i.handle(&[m], T0 + 6 * H).await.unwrap();
        assert_eq!(
            (fixes_of(&store, a).await, fixes_of(&store, c).await),
            (0, 1),
            "{backend}"
        );
        // B keeps being followed.
        let m = position(&mut korgas, "seal-b", T0 + 5 * H);
        i.handle(&[m], T0 + 6 * H).await.unwrap();
        assert_eq!(fixes_of(&store, b).await, 4, "{backend}");
        // A day later, only what came after the cut is left.
        assert_eq!(
            store.prune_position_events(T0 + 5 * H, 100).await.unwrap(),
            1,
            "{backend}: the event sent again, received at four hours"
        );
        assert_eq!(positions_kept(&store).await, 2, "{backend}");
    });
}

/// The service forgets by itself: a database whose position events are 40 days old, central
/// started on it with the default 30 days, and its scheduler's first scans.
#[test]
fn the_service_forgets_position_events_older_than_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("central.db").display());
    let now = now_ms();
    let old = now - 40 * DAY_MS;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mrn = "26KZ5500000000034D";
    rt.block_on(async {
        let store = Store::open(&db).await.unwrap();
        let mut korgas = Box_::new("korgas");
        let kordai = Box_::new("kordai");
        store.put_post(&korgas.registry_entry()).await.unwrap();
        store.put_post(&kordai.registry_entry()).await.unwrap();
        let mut i = Ingestor::new(store.clone(), Limits::default())
            .await
            .unwrap();
        let d = json!({"mrn": mrn, "plates": ["123ABC02"], "tracker": "seal-d",
            "itinerary": [{"post": "korgas"}, {"post": "kordai", "within_h": 48}]});
        declare::submit(&store, &d, "operator:t", old - H)
            .await
            .unwrap()
            .unwrap();
        let m = passage_at(&mut korgas, mrn, old);
        i.handle(&[m], old).await.unwrap();
        // 40 days ago, and this minute.
        for at in [old, old + MIN, now - MIN] {
            let m = position(&mut korgas, "seal-d", at);
            assert_eq!(i.handle(&[m], at).await.unwrap(), [Outcome::Accepted]);
        }
        assert_eq!(positions_kept(&store).await, 3);
    });
    let broker = Mosquitto::start(&dir.path().join("broker")).unwrap();
    let http_port = free_port();
    let config = write_config(dir.path(), &db, broker.port(), http_port);
    let log = dir.path().join("central.log");
    let _central = start(&config, &log);
    ready(http_port);
    let left = wait(60, "the old position events forgotten", || {
        rt.block_on(async {
            let store = Store::open(&db).await.unwrap();
            let n = positions_kept(&store).await;
            (n == 1).then_some(store)
        })
    });
    rt.block_on(async {
        // The recent one and the passage are kept; the transit is on the road, so its fixes too.
        let kept: Vec<(String, i64)> =
            sqlx::query_as("SELECT type, COUNT(*) FROM journal GROUP BY type ORDER BY type")
                .fetch_all(left.pool())
                .await
                .unwrap();
        assert_eq!(
            kept,
            [("passage".to_string(), 1), ("position".to_string(), 1)]
        );
        assert_eq!(fixes_of(&left, mrn).await, 3);
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("old position events forgotten") && text.contains("events=2"),
        "{text}"
    );
}
