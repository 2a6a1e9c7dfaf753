//! `acsgd-central` as a process against a real mosquitto: declarations routed as retained
//! messages, a truck followed from post to post, the API's errors, SIGKILL and a database that
//! goes away under load, with every acknowledged event counted.

use acsgd::mosquitto::Mosquitto;
use acsgd_testkit::central::Central as Watcher;
use serde_json::{json, Value};

use crate::common::{
    api, cli, free_port, http, passage, publish_all, ready, start, wait, write_config, Box_, Pg, H,
};

const MRN: &str = "26KZ5500000000007G";

fn state(port: u16) -> String {
    let (s, t) = api(port, "GET", &format!("/api/transits/{MRN}"), None);
    assert_eq!(s, 200, "{t}");
    t["state"].as_str().unwrap_or("").to_string()
}

fn journal_count(port: u16, post: &str) -> i64 {
    let (_, posts) = api(port, "GET", "/api/posts", None);
    posts
        .as_array()
        .and_then(|a| a.iter().find(|p| p["post"]["id"] == post))
        .and_then(|p| p["progress"]["contiguous_seq"].as_i64())
        .unwrap_or(0)
}

#[test]
fn declarations_are_routed_and_a_truck_is_followed_through_a_real_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker")).unwrap();
    let http_port = free_port();
    let db = format!("sqlite:{}", dir.path().join("central.db").display());
    let config = write_config(dir.path(), &db, broker.port(), http_port);
    let log = dir.path().join("central.log");

    let mut korgas = Box_::new("korgas");
    let mut kordai = Box_::new("kordai");
    let (ok, out) = cli(
        &config,
        &[
            "add",
            "korgas",
            "--name",
            "Korgas",
            "--key",
            &korgas.public_hex(),
            "--lat",
            "44.21",
            "--lon",
            "80.41",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("post = \"korgas\"")
            && out.contains(&format!("broker = \"mqtt://127.0.0.1:{}\"", broker.port())),
        "{out}"
    );
    let (ok, out) = cli(
        &config,
        &[
            "add",
            "kordai",
            "--name",
            "Kordai",
            "--key",
            &kordai.public_hex(),
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(
        &config,
        &[
            "add",
            "Bad_Id",
            "--name",
            "x",
            "--key",
            &kordai.public_hex(),
        ],
    );
    assert!(!ok && out.contains("post id \"Bad_Id\""), "{out}");
    let (ok, out) = cli(&config, &["add", "x", "--name", "x", "--key", "abcd"]);
    assert!(
        !ok && out.contains("--key: expected 64 hex digits"),
        "{out}"
    );

    // The posts' side of the broker: what central routes to them.
    let at_korgas = Watcher::subscribe(broker.port(), "post-korgas", "korgas").unwrap();
    let at_kordai = Watcher::subscribe(broker.port(), "post-kordai", "kordai").unwrap();

    let mut central = start(&config, &log);
    ready(http_port);
    let (s, _) = http(http_port, "GET", "/api/transits", None, None);
    assert_eq!(s, 401, "no token, no data");
    let (s, _) = http(
        http_port,
        "GET",
        "/api/transits",
        Some("wrong-token-0123456789"),
        None,
    );
    assert_eq!(s, 401);

    let decl = json!({"mrn": MRN, "plates": ["123ABC02"], "gross_kg": 38000,
        "itinerary": [{"post": "korgas"}, {"post": "kordai", "within_h": 20}],
        "time_limit": "2027-01-01T00:00:00Z"});
    let (s, t) = api(http_port, "POST", "/api/declarations", Some(&decl));
    assert_eq!((s, t["state"].as_str()), (201, Some("declared")), "{t}");
    let (s, t) = api(http_port, "POST", "/api/declarations", Some(&decl));
    assert_eq!(s, 409, "{t}");
    let mut bad = decl.clone();
    bad["mrn"] = json!("26KZ5500000000008H");
    bad["itinerary"][1]["post"] = json!("nowhere");
    let (s, t) = api(http_port, "POST", "/api/declarations", Some(&bad));
    assert_eq!(s, 422);
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("nowhere is not a registered post"),
        "{t}"
    );

    let topic = |post: &str| format!("acsgd/v1/{post}/in/declarations/{MRN}");
    for (w, post) in [(&at_korgas, "korgas"), (&at_kordai, "kordai")] {
        let got = wait(30, &format!("the declaration at {post}"), || {
            w.got
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.topic == topic(post))
                .cloned()
        });
        let d: Value = serde_json::from_slice(&got.payload).unwrap();
        assert_eq!(d["mrn"], MRN);
        assert_eq!(d["itinerary"][1]["post"], "kordai");
    }

    // The watchlist goes to every post, retained; a bad one is refused whole.
    let (s, t) = api(
        http_port,
        "PUT",
        "/api/watchlist",
        Some(&json!({"plates": ["777KZA02"], "mrns": ["26KZ"]})),
    );
    assert_eq!(s, 422, "{t}");
    let (s, t) = api(
        http_port,
        "PUT",
        "/api/watchlist",
        Some(&json!({"plates": ["777KZA02"], "trackers": ["seal-9"]})),
    );
    assert_eq!(s, 200, "{t}");
    for (w, post) in [(&at_korgas, "korgas"), (&at_kordai, "kordai")] {
        let got = wait(30, &format!("the watchlist at {post}"), || {
            w.got
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|r| r.topic == format!("acsgd/v1/{post}/in/watchlist"))
                .cloned()
        });
        let d: Value = serde_json::from_slice(&got.payload).unwrap();
        assert_eq!(d["plates"], json!(["777KZA02"]));
        assert_eq!(d["trackers"], json!(["seal-9"]));
    }
    let (_, w) = api(http_port, "GET", "/api/watchlist", None);
    wait(30, "the watchlist marked sent", || {
        let (_, w) = api(http_port, "GET", "/api/watchlist", None);
        (w["sent"] == true).then_some(())
    });
    assert_eq!(w["watchlist"]["plates"], json!(["777KZA02"]));

    // The truck departs Korgas: central follows it and korgas's copy is withdrawn.
    let now = acsgd_central::store::now_ms();
    let dep = korgas.event("passage", now - 2 * H, passage(MRN, "green", now - 2 * H));
    publish_all(
        broker.port(),
        "box-korgas",
        &[(korgas.topic("passage"), dep)],
    );
    wait(30, "departed", || {
        (state(http_port) == "departed").then_some(())
    });
    wait(30, "the withdrawal at korgas", || {
        at_korgas
            .got
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.topic == topic("korgas") && r.payload.is_empty())
            .map(|_| ())
    });

    // SIGKILL central; the posts go on publishing; nothing acknowledged is lost.
    central.kill();
    let mut burst = Vec::new();
    for k in 0..50 {
        let t = now - H + k * 1000;
        burst.push((
            korgas.topic("health"),
            korgas.event(
                "health",
                t,
                json!({"component": format!("c{k}"), "state": "up", "reason": ""}),
            ),
        ));
    }
    let arr = kordai.event("passage", now - H / 2, passage(MRN, "yellow", now - H / 2));
    burst.push((kordai.topic("passage"), arr));
    publish_all(broker.port(), "box-both", &burst);
    let mut central = start(&config, &log);
    ready(http_port);
    wait(60, "arrived after the restart", || {
        (state(http_port) == "arrived").then_some(())
    });
    wait(60, "korgas's 51 events", || {
        (journal_count(http_port, "korgas") == 51).then_some(())
    });
    assert_eq!(journal_count(http_port, "kordai"), 1);
    let (_, t) = api(http_port, "GET", &format!("/api/transits/{MRN}"), None);
    let notes: Vec<&str> = t["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["to"].as_str().unwrap())
        .collect();
    assert_eq!(notes, vec!["declared", "departed", "arrived"], "{t}");

    // An operator closes it over the API; a wrong action is a clear refusal.
    let (s, t) = api(
        http_port,
        "POST",
        &format!("/api/transits/{MRN}/cancel"),
        Some(&json!({"note": "x"})),
    );
    assert_eq!(s, 409, "{t}");
    assert!(t["error"].as_str().unwrap().contains("is arrived"));
    let (s, t) = api(
        http_port,
        "POST",
        &format!("/api/transits/{MRN}/close"),
        Some(&json!({"note": "written off"})),
    );
    assert_eq!((s, t["state"].as_str()), (200, Some("closed")), "{t}");
    let (_, t) = api(http_port, "GET", &format!("/api/transits/{MRN}"), None);
    let last = t["journal"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["cause"].as_str(), last["note"].as_str()),
        (Some("operator:aigerim"), Some("written off"))
    );

    let status = central.terminate().expect("exit status");
    assert!(
        status.success(),
        "SIGTERM exits cleanly: {status:?}; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Two posts that PostgreSQL's two writers (`[store] writers`, its default) take apart, each
/// sending 600 events while the database goes away and comes back: every event of both in
/// the database, each post's seq gapless.
#[test]
fn postgres_stopped_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker")).unwrap();
    let pg = Pg::start();
    let http_port = free_port();
    let config = write_config(dir.path(), &pg.url(), broker.port(), http_port);
    let log = dir.path().join("central.log");
    let writer =
        |post: &str| acsgd_central::config::writer_of(&format!("acsgd/v1/{post}/health"), None, 2);
    let second_post = ["kordai", "altynkol", "nur-zholy", "kalzhat", "bakhty"]
        .into_iter()
        .find(|p| writer(p) != writer("korgas"))
        .expect("a post the other writer takes");
    let mut posts = [Box_::new("korgas"), Box_::new(second_post)];
    for post in &posts {
        let (ok, out) = cli(
            &config,
            &[
                "add",
                &post.post,
                "--name",
                &post.post,
                "--key",
                &post.public_hex(),
            ],
        );
        assert!(ok, "{out}");
    }
    let _central = start(&config, &log);
    ready(http_port);

    let now = acsgd_central::store::now_ms();
    let mut first = Vec::new();
    let mut second = Vec::new();
    for post in &mut posts {
        let mut events: Vec<(String, Vec<u8>)> = (0..600)
            .map(|k| {
                (
                    post.topic("health"),
                    post.event(
                        "health",
                        now - H + k,
                        json!({"component": format!("c{k}"), "state": "up", "reason": ""}),
                    ),
                )
            })
            .collect();
        second.push((post.post.clone(), events.split_off(200)));
        first.push((post.post.clone(), events));
    }
    for (post, events) in &first {
        publish_all(broker.port(), &format!("box-{post}"), events);
    }
    // The database goes away while the posts keep sending.
    pg.stop();
    for (post, events) in &second {
        publish_all(broker.port(), &format!("box-{post}"), events);
    }
    // The database stays away until central has failed on a batch (its pool gives up
    // waiting for a connection after 10 s) and holds the messages unacknowledged.
    wait(120, "central to fail on a batch", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("cannot store a batch; retrying")
            .then_some(())
    });
    pg.start_again();
    for post in &posts {
        wait(
            120,
            &format!("all 600 events of {} in PostgreSQL", post.post),
            || (journal_count(http_port, &post.post) == 600).then_some(()),
        );
    }
    let (_, listed) = api(http_port, "GET", "/api/posts", None);
    for post in &posts {
        let p = listed
            .as_array()
            .and_then(|a| a.iter().find(|p| p["post"]["id"] == post.post.as_str()))
            .unwrap_or_else(|| panic!("{} listed: {listed}", post.post));
        assert_eq!(p["progress"]["highest_seq"], 600, "{listed}");
        assert_eq!(p["progress"]["gaps"], json!([]), "{listed}");
    }
    // The service ran PostgreSQL's two writers, and the two posts are in different ones.
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("writers=2"),
        "log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
