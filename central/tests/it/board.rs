//! The operator board in a real headless Chromium (Debian's `chromium` and `chromium-driver`
//! over WebDriver), against the real `acsgd-central` and a real broker: sign-in, the overdue
//! transit on top, its timeline, the live update when a late passage arrives, the languages,
//! the map; and a viewer who may look but not change.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Instant;

use acsgd::mosquitto::Mosquitto;
use acsgd_testkit::browser::Browser;
use fantoccini::Locator;
use serde_json::json;

use crate::common::{
    api, central_bin, cli, free_port, passage, publish_all, ready, start, wait, Box_, TOKEN,
};

const LATE: &str = "26KZ5500000000021A";
const ON_TIME: &str = "26KZ5500000000022B";

/// Runs a blocking helper (which may start its own runtime, as rumqttc's sync client does) on
/// a thread of its own, away from the test's runtime.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// With `ACSGD_SCREENSHOTS=DIR`, saves what the browser shows (the README's pictures).
async fn screenshot(b: &Browser, name: &str) {
    if let Some(dir) = std::env::var_os("ACSGD_SCREENSHOTS") {
        let png = b.c().screenshot().await.unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
    }
}

fn hash(password: &str) -> String {
    let mut child = Command::new(central_bin())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A raw HTTP call with a cookie: (status, set-cookie value, body).
fn with_cookie(
    port: u16,
    method: &str,
    path: &str,
    cookie: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: {cookie}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let set = out
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or("")
        .to_string();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, set, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_sign_in_see_the_overdue_transit_on_top_and_its_timeline_update_live() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker")).unwrap();
    let http_port = free_port();
    let config = dir.path().join("central.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite:{}\"\n[broker]\nhost = \"127.0.0.1\"\nport = {}\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n[http.tokens]\nsystem = \"{TOKEN}\"\n\
             [tracking]\nscan_every_s = 1\n\
             [[accounts]]\nuser = \"aigerim\"\nname = \"Aigerim Nurlanovna\"\nrole = \"operator\"\nlang = \"en\"\npassword = \"{}\"\n\
             [[accounts]]\nuser = \"bek\"\nname = \"Bek\"\nrole = \"viewer\"\npassword = \"{}\"\n",
            dir.path().join("central.db").display(),
            broker.port(),
            hash("correct horse battery"),
            hash("viewer password 1"),
        ),
    )
    .unwrap();
    let mut korgas = Box_::new("korgas");
    let mut kordai = Box_::new("kordai");
    for (b, lat, lon) in [(&korgas, "44.21", "80.41"), (&kordai, "43.16", "74.98")] {
        let (ok, out) = cli(
            &config,
            &[
                "add",
                &b.post,
                "--name",
                &b.post,
                "--key",
                &b.public_hex(),
                "--lat",
                lat,
                "--lon",
                lon,
            ],
        );
        assert!(ok, "{out}");
    }
    let _central = start(&config, &dir.path().join("central.log"));
    ready(http_port);

    // Two transits leave Korgas: one with a leg of about a second, which runs out.
    for (mrn, h) in [(LATE, 0.0003), (ON_TIME, 30.0)] {
        let d = json!({"mrn": mrn, "plates": ["123ABC02"], "tracker": format!("7{}", &mrn[15..17]),
            "corridor": {"points": [[44.21, 80.41], [43.16, 74.98]], "width_m": 5000},
            "itinerary": [{"post": "korgas"}, {"post": "kordai", "within_h": h}]});
        let (s, t) = api(http_port, "POST", "/api/declarations", Some(&d));
        assert_eq!(s, 201, "{t}");
    }
    let now = acsgd_central::store::now_ms();
    let mut dep: Vec<(String, Vec<u8>)> = [LATE, ON_TIME]
        .iter()
        .map(|m| {
            (
                korgas.topic("passage"),
                korgas.event("passage", now, passage(m, "green", now)),
            )
        })
        .collect();
    // The late one's seal reports three fixes on its way out of Korgas.
    let fixes: Vec<serde_json::Value> = (1..=3)
        .map(|k| {
            json!({"source": "POS_DATA", "valid": true, "speed": 60.0,
                "time": acsgd_central::tracking::time_text(now + k * 1000),
                "lat": 44.21 - 0.01 * k as f64, "lon": 80.41 - 0.05 * k as f64})
        })
        .collect();
    let body = json!({"device": format!("7{}", &LATE[15..17]), "sensor": "seals", "fixes": fixes});
    dep.push((
        korgas.topic("position"),
        korgas.event("position", now + 3000, body),
    ));
    // (The blocking helpers run their own MQTT runtime: off the test's async threads.)
    off_runtime(|| {
        publish_all(broker.port(), "box-korgas", &dep);
        wait(60, "the short leg overdue", || {
            let (_, t) = api(http_port, "GET", &format!("/api/transits/{LATE}"), None);
            (t["state"] == "overdue").then_some(())
        })
    });

    let b = Browser::start(&["--window-size=1400,1000"]).await;
    let url = format!("http://127.0.0.1:{http_port}/");
    b.c().goto(&url).await.unwrap();
    b.until(
        30,
        "the sign-in form",
        "!document.getElementById('signin').hidden",
    )
    .await;
    b.fill("#user", "aigerim").await;
    b.fill("#password", "wrong").await;
    b.click("#signin button").await;
    b.until(
        30,
        "the refusal",
        "!document.getElementById('signin-error').hidden",
    )
    .await;
    b.fill("#password", "correct horse battery").await;
    b.click("#signin button").await;

    b.until(
        30,
        "the form gone",
        "getComputedStyle(document.getElementById('signin')).display === 'none'",
    )
    .await;
    // The overdue transit is the first row.
    let first = b
        .until(
            30,
            "the transits",
            "document.querySelector('tbody tr') && document.querySelector('tbody tr').dataset.mrn",
        )
        .await;
    assert_eq!(first, json!(LATE));
    screenshot(&b, "central-transits-en.png").await;
    let state = b
        .js("return document.querySelector('tbody tr .state').dataset.state;")
        .await;
    assert_eq!(state, json!("overdue"));
    b.until(
        30,
        "the live stream",
        "document.getElementById('live').classList.contains('on')",
    )
    .await;

    // Its page: the timeline has the departure passage and the overdue with its cause.
    b.click(&format!("tr[data-mrn='{LATE}'] a")).await;
    b.until(
        30,
        "the timeline",
        "document.querySelector('#timeline li.change.overdue')",
    )
    .await;
    // Its tracker's three fixes drawn over its corridor.
    let drawn = b
        .js("const t = document.getElementById('track'); return t && t.dataset.fixes;")
        .await;
    assert_eq!(drawn, json!("3"));
    let text = b
        .js("return document.getElementById('timeline').innerText;")
        .await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("korgas · green")
            && text.contains("scheduler")
            && text.contains("not seen at kordai"),
        "{text}"
    );

    // Kordai reports the truck (it passed long after the deadline): the page follows without a reload.
    let marker = b.js("window.__same_page = true; return 1;").await;
    assert_eq!(marker, json!(1));
    let late = acsgd_central::store::now_ms();
    let arrival = kordai.event("passage", late, passage(LATE, "yellow", late));
    let sent = Instant::now();
    off_runtime(|| {
        publish_all(
            broker.port(),
            "box-kordai",
            &[(kordai.topic("passage"), arrival)],
        )
    });
    b.until(
        30,
        "the arrival on the page",
        "document.querySelector('#transit h1 .state').dataset.state === 'arrived'",
    )
    .await;
    let took = sent.elapsed();
    assert_eq!(
        b.js("return window.__same_page === true;").await,
        json!(true),
        "no reload"
    );
    println!(
        "board: arrival shown {} ms after the broker acknowledged the passage",
        took.as_millis()
    );
    let text = b
        .js("return document.getElementById('timeline').innerText;")
        .await;
    assert!(text.as_str().unwrap().contains("kordai · yellow"), "{text}");
    screenshot(&b, "central-transit-en.png").await;

    // The operator closes it from its page; the journal names her.
    b.until(
        10,
        "the close action",
        "document.querySelector('#action[data-action=\"close\"]')",
    )
    .await;
    b.fill("#action-note", "goods presented intact").await;
    b.click("#action").await;
    b.until(
        30,
        "closed",
        "document.querySelector('#transit h1 .state').dataset.state === 'closed'",
    )
    .await;
    let text = b
        .js("return document.getElementById('timeline').innerText;")
        .await;
    assert!(
        text.as_str()
            .unwrap()
            .contains("goods presented intact (operator:aigerim)"),
        "{text}"
    );
    assert_eq!(
        b.js("return document.querySelector('#action') === null;")
            .await,
        json!(true),
        "nothing left to do"
    );

    // Languages and the map.
    b.c().goto(&format!("{url}#/map")).await.unwrap();
    b.until(
        30,
        "the map",
        "document.querySelectorAll('#map circle.post').length === 2",
    )
    .await;
    screenshot(&b, "central-map-en.png").await;
    let corridors = b
        .js("return [...document.querySelectorAll('#map .corridor')].map(c => c.dataset.mrn);")
        .await;
    assert_eq!(
        corridors,
        json!([ON_TIME]),
        "arrived transits leave the map"
    );
    b.c()
        .find(Locator::Css("#lang"))
        .await
        .unwrap()
        .select_by_value("kk")
        .await
        .unwrap();
    b.until(
        10,
        "Kazakh",
        "document.querySelector('[data-i18n=\"nav.transits\"]').textContent === 'Транзиттер'",
    )
    .await;

    // A viewer may look but not change.
    let (s, cookie, _) = with_cookie(
        http_port,
        "POST",
        "/api/session",
        "",
        r#"{"user":"bek","password":"viewer password 1"}"#,
    );
    assert_eq!(s, 200);
    let (s, _, body) = with_cookie(http_port, "GET", "/api/transits", &cookie, "");
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = with_cookie(
        http_port,
        "POST",
        &format!("/api/transits/{ON_TIME}/cancel"),
        &cookie,
        "{}",
    );
    assert_eq!(s, 403, "{body}");
    let (s, _, _) = with_cookie(
        http_port,
        "GET",
        "/api/transits",
        "acsgd_central=forged",
        "",
    );
    assert_eq!(s, 401);
}
