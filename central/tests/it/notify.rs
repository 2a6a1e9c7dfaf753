//! Notifications against real peers, each test on SQLite and on PostgreSQL: an SMTP server
//! (Debian's `python3-aiosmtpd`, writing a maildir), and an HTTP server in the test for
//! webhooks and the bot API that fails the first attempts as told. The notifier is stepped at
//! chosen moments (its clock is an argument), so backoff and rate limits are checked without
//! waiting on the wall clock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use acsgd_central::declare;
use acsgd_central::ingest::{Ingestor, Limits, Message};
use acsgd_central::notify::{
    channels, BotConfig, EmailConfig, Notifier, NotifyConfig, Stepped, Subscription,
};
use acsgd_central::store::Store;
use acsgd_testkit::Process;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::common::{
    api, cli, free_port, on_both, passage, publish_all, ready, start, wait, write_config, Box_, H,
};

/// 2026-12-01T00:00:00Z
const T0: i64 = 1_796_083_200_000;
const MRN: &str = "26KZ5500000000001A";
const BOT_TOKEN: &str = "123456:test-token";

/// A request the HTTP peer took: path, headers we read, body.
#[derive(Debug, Clone)]
struct Taken {
    path: String,
    key: Option<String>,
    timestamp: Option<String>,
    signature: Option<String>,
    body: String,
    answered: u16,
}

/// The webhook receiver and bot API: each path fails its first `fail[path]` requests.
#[derive(Clone, Default)]
struct Peer {
    taken: Arc<Mutex<Vec<Taken>>>,
    fail: Arc<Mutex<HashMap<String, usize>>>,
    /// How long each answer takes, ms (a slow peer keeps sends in flight).
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Peer {
    async fn start(fail: &[(&str, usize)]) -> (Peer, u16) {
        let peer = Peer::default();
        for (p, n) in fail {
            peer.fail.lock().unwrap().insert(p.to_string(), *n);
        }
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(take))
            .with_state(peer.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (peer, port)
    }

    fn taken(&self, prefix: &str) -> Vec<Taken> {
        let all = self.taken.lock().unwrap();
        all.iter()
            .filter(|t| t.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}

async fn take(
    State(peer): State<Peer>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let path = format!("/{path}");
    let delay = peer.delay_ms.load(std::sync::atomic::Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let failing = {
        let mut fail = peer.fail.lock().unwrap();
        let left = fail.entry(path.clone()).or_default();
        let f = *left > 0;
        *left = left.saturating_sub(1);
        f
    };
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (status, answer) = if failing {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"ok":false,"description":"try later"}"#.to_string(),
        )
    } else {
        (StatusCode::OK, r#"{"ok":true,"result":{}}"#.to_string())
    };
    peer.taken.lock().unwrap().push(Taken {
        path,
        key: h("idempotency-key"),
        timestamp: h("x-acsgd-timestamp"),
        signature: h("x-acsgd-signature"),
        body,
        answered: status.as_u16(),
    });
    (status, answer)
}

/// An SMTP server (aiosmtpd) that files every mail it accepts into a maildir.
struct Smtp {
    _process: Process,
    port: u16,
    maildir: PathBuf,
}

impl Smtp {
    fn start(dir: &Path) -> Smtp {
        let port = free_port();
        let maildir = dir.join("maildir");
        let process = Process::spawn(
            Command::new("/usr/bin/python3")
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("python3 -m aiosmtpd (Debian's python3-aiosmtpd, installed by .ci/test)");
        wait(60, "the SMTP server", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        Smtp {
            _process: process,
            port,
            maildir,
        }
    }

    /// The mails received, as text.
    fn mails(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }
}

/// A mail header's value (unfolded); an encoded subject is decoded by the caller.
fn header(mail: &str, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for line in mail.lines() {
        if line.is_empty() {
            break;
        }
        if let Some(v) = out.as_mut().filter(|_| line.starts_with([' ', '\t'])) {
            // Unfolding keeps the whitespace, drops the line break (RFC 5322).
            v.push_str(line);
            continue;
        }
        if out.is_some() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case(name) {
                out = Some(v.trim().to_string());
            }
        }
    }
    out
}

/// Decodes RFC 2047 `=?utf-8?b?…?=` words (what lettre writes for a Cyrillic subject):
/// tokens are joined by a space, except two encoded words, whose whitespace is not text.
fn decode_words(s: &str) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    let mut last_encoded = None;
    for t in s.split_whitespace() {
        let encoded = t.to_ascii_lowercase().starts_with("=?utf-8?b?") && t.ends_with("?=");
        if last_encoded.is_some() && !(encoded && last_encoded == Some(true)) {
            out.push(' ');
        }
        if encoded {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&t[10..t.len() - 2])
                .unwrap();
            out.push_str(&String::from_utf8(raw).unwrap());
        } else {
            out.push_str(t);
        }
        last_encoded = Some(encoded);
    }
    out
}

/// The body of a plain-text mail (lettre sends UTF-8 bodies base64- or quoted-printable-encoded).
fn body(mail: &str) -> String {
    use base64::Engine as _;
    let raw = mail.split_once("\n\n").map(|x| x.1).unwrap_or("");
    let enc = header(mail, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if enc == "base64" {
        let joined: String = raw.split_whitespace().collect();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(joined)
                .unwrap(),
        )
        .unwrap()
    } else if enc == "quoted-printable" {
        String::from_utf8(
            quoted_printable::decode(raw, quoted_printable::ParseMode::Robust).unwrap(),
        )
        .unwrap()
    } else {
        raw.to_string()
    }
}

async fn posts_and_transit(store: &Store, route: &[&str]) -> Vec<Box_> {
    let mut boxes = Vec::new();
    for p in ["korgas", "kordai", "gani-muratbaev"] {
        let b = Box_::new(p);
        store.put_post(&b.registry_entry()).await.unwrap();
        boxes.push(b);
    }
    let itinerary: Vec<Value> = route
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i == 0 {
                json!({"post": p})
            } else {
                json!({"post": p, "within_h": 10})
            }
        })
        .collect();
    declare::submit(
        store,
        &json!({"mrn": MRN, "plates": ["123ABC02"], "itinerary": itinerary}),
        "operator:t",
        T0 - H,
    )
    .await
    .unwrap()
    .unwrap();
    boxes
}

fn sub(channel: &str, address: &str, lang: &str) -> Subscription {
    Subscription {
        id: String::new(),
        recipient: format!("{channel} recipient"),
        party: "carrier".into(),
        channel: channel.into(),
        address: address.into(),
        lang: lang.into(),
        mrn: None,
        post: None,
        kinds: Vec::new(),
        rate_per_hour: None,
        secret: None,
    }
}

async fn subscribe(store: &Store, n: &Notifier, s: Subscription) -> Subscription {
    store
        .subscribe(s, &|c| n.channel_ready(c), 30, "operator:t", T0)
        .await
        .unwrap()
        .unwrap()
}

async fn ingest(i: &mut Ingestor, b: &mut Box_, kind: &str, time: i64, body: Value, now: i64) {
    let payload = b.event(kind, time, body);
    i.handle(
        &[Message {
            topic: b.topic(kind),
            payload,
        }],
        now,
    )
    .await
    .unwrap();
}

fn config(smtp_port: u16, http_port: u16) -> NotifyConfig {
    NotifyConfig {
        max_attempts: 4,
        alert_after: 2,
        email: Some(EmailConfig {
            host: "127.0.0.1".into(),
            port: smtp_port,
            tls: "none".into(),
            from: "ACSGD central <acsgd@customs.example>".into(),
            user: None,
            password: None,
        }),
        bot: Some(BotConfig {
            base_url: format!("http://127.0.0.1:{http_port}/"),
            token: BOT_TOKEN.into(),
        }),
        ..NotifyConfig::default()
    }
}

#[test]
fn each_subscriber_is_told_once_in_its_language_through_failures_and_late_news_says_so() {
    on_both(|store, backend| async move {
        let dir = tempfile::tempdir().unwrap();
        let smtp = Smtp::start(dir.path());
        let (peer, http_port) =
            Peer::start(&[("/hook", 2), (&format!("/bot{BOT_TOKEN}/sendMessage"), 1)]).await;
        let notifier = Notifier::new(store.clone(), config(smtp.port, http_port)).unwrap();
        let mut boxes = posts_and_transit(&store, &["korgas", "kordai"]).await;
        let mut kordai = boxes.remove(1);
        let mut korgas = boxes.remove(0);
        // A carrier by email for this MRN, in Russian; a broker's webhook for what reaches
        // Kordai; an operator's bot for arrivals and overdue alerts, in Kazakh.
        let mail = subscribe(
            &store,
            &notifier,
            Subscription {
                mrn: Some(MRN.into()),
                ..sub("email", "dispatch@carrier.example", "ru")
            },
        )
        .await;
        let hook = subscribe(
            &store,
            &notifier,
            Subscription {
                post: Some("kordai".into()),
                kinds: vec!["arrived".into(), "overdue".into(), "flag".into()],
                ..sub(
                    "webhook",
                    &format!("http://127.0.0.1:{http_port}/hook"),
                    "en",
                )
            },
        )
        .await;
        let secret = hook.secret.clone().expect("a webhook has a secret");
        subscribe(
            &store,
            &notifier,
            Subscription {
                kinds: vec!["arrived".into(), "alert:overdue".into()],
                ..sub("bot", "-100200300", "kk")
            },
        )
        .await;
        // Refusals name what is wrong.
        let refused = store
            .subscribe(
                sub("pager", "x", "en"),
                &|c| notifier.channel_ready(c),
                30,
                "t",
                T0,
            )
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "subscription: channel: \"pager\" is not one of email, webhook, bot"
        );
        let refused = store
            .subscribe(
                sub("webhook", "ftp://x", "en"),
                &|c| notifier.channel_ready(c),
                30,
                "t",
                T0,
            )
            .await
            .unwrap()
            .unwrap_err();
        assert!(refused.0.starts_with("address:"), "{refused}");

        let mut i = Ingestor::new(store.clone(), Limits::default())
            .await
            .unwrap();
        // Departs at T0; arrives at T0 + 1 h, but Kordai's uplink was down: central hears of it
        // at T0 + 5 h.
        ingest(
            &mut i,
            &mut korgas,
            "passage",
            T0,
            passage(MRN, "green", T0),
            T0,
        )
        .await;
        let now = T0 + 5 * H;
        ingest(
            &mut i,
            &mut kordai,
            "passage",
            T0 + H,
            passage(MRN, "green", T0 + H),
            now,
        )
        .await;

        // The first look: the email goes; the webhook and the bot are refused.
        let s = notifier.step(now).await.unwrap();
        assert_eq!(
            s,
            Stepped {
                sent: 2,
                failed: 2,
                dead: 0,
                deferred: 0
            },
            "{backend}"
        );
        // A second later only the bot is due again (the webhook waits 1 s, then 2 s).
        let s = notifier.step(now + 1000).await.unwrap();
        assert_eq!(
            s,
            Stepped {
                sent: 1,
                failed: 1,
                dead: 0,
                deferred: 0
            },
            "{backend}"
        );
        assert_eq!(notifier.step(now + 2000).await.unwrap(), Stepped::default());
        let s = notifier.step(now + 3000).await.unwrap();
        assert_eq!(
            s,
            Stepped {
                sent: 1,
                ..Stepped::default()
            },
            "{backend}"
        );
        // Nothing more, ever: each was told once.
        assert_eq!(
            notifier.step(now + 10 * H).await.unwrap(),
            Stepped::default()
        );
        assert!(store.notifications("pending", 10).await.unwrap().is_empty());
        assert_eq!(store.notifications("sent", 10).await.unwrap().len(), 4);

        // Email: departed and arrived, in Russian; the late arrival says when it was observed
        // and when central got it; each has its own Message-ID from its key.
        let mails = wait(30, "two mails in the maildir", || {
            let m = smtp.mails();
            (m.len() == 2).then_some(m)
        });
        let mut subjects: Vec<String> = mails
            .iter()
            .map(|m| decode_words(&header(m, "Subject").unwrap()))
            .collect();
        subjects.sort();
        assert_eq!(
            subjects,
            vec![
                format!("Транзит {MRN}: прибыл"),
                format!("Транзит {MRN}: убыл")
            ]
        );
        let arrived = mails
            .iter()
            .find(|m| body(m).contains("→ прибыл"))
            .expect("the arrival mail");
        let text = body(arrived);
        assert!(
            text.contains("Зафиксировано: 2026-12-01T01:00:00"),
            "{text}"
        );
        assert!(
            text.contains("Получено центром 2026-12-01T05:00:00"),
            "{text}"
        );
        let ids: Vec<String> = mails
            .iter()
            .map(|m| header(m, "Message-ID").unwrap())
            .collect();
        assert!(
            ids.iter().all(|id| id.ends_with("@customs.example>")) && ids[0] != ids[1],
            "{ids:?}"
        );
        assert!(header(&mails[0], "To")
            .unwrap()
            .contains("dispatch@carrier.example"));

        // Webhook: three attempts of one notification, one key, each signed over its
        // timestamp and body with the subscription's secret; the body says it was late.
        let hooks = peer.taken("/hook");
        assert_eq!(
            hooks.iter().map(|t| t.answered).collect::<Vec<_>>(),
            vec![503, 503, 200]
        );
        assert!(hooks
            .iter()
            .all(|t| t.key == hooks[0].key && t.key.is_some()));
        for t in &hooks {
            let want = channels::signature(&secret, t.timestamp.as_deref().unwrap(), &t.body);
            assert_eq!(
                t.signature.as_deref(),
                Some(format!("sha256={want}").as_str())
            );
        }
        let doc: Value = serde_json::from_str(&hooks[2].body).unwrap();
        assert_eq!(
            (
                doc["kind"].as_str(),
                doc["late"].as_bool(),
                doc["post"].as_str()
            ),
            (Some("arrived"), Some(true), Some("kordai"))
        );
        assert_eq!(doc["observed_at"], "2026-12-01T01:00:00.000Z");

        // Bot: refused once, then taken; to the chat, in Kazakh.
        let bot = peer.taken("/bot");
        assert_eq!(
            bot.iter().map(|t| t.answered).collect::<Vec<_>>(),
            vec![503, 200]
        );
        let msg: Value = serde_json::from_str(&bot[1].body).unwrap();
        assert_eq!(msg["chat_id"], "-100200300");
        assert!(msg["text"].as_str().unwrap().contains("жетті"), "{msg}");
        // Failures in a row to the webhook (2 = alert_after) alerted operators; the success
        // cleared it.
        let alerts = store.alerts(false).await.unwrap();
        let a = alerts
            .iter()
            .find(|a| a.kind == "notify")
            .expect("the channel's alert");
        assert!(a.cleared_ms.is_some(), "{a:?}");
        drop(mail);
    });
}

#[test]
fn a_peer_that_never_takes_it_gets_a_dead_letter_and_a_flapping_flag_waits_its_turn() {
    on_both(|store, backend| async move {
        let dir = tempfile::tempdir().unwrap();
        let smtp = Smtp::start(dir.path());
        let (peer, http_port) = Peer::start(&[("/down", usize::MAX)]).await;
        let notifier = Notifier::new(store.clone(), config(smtp.port, http_port)).unwrap();
        let mut boxes = posts_and_transit(&store, &["korgas", "kordai"]).await;
        let mut korgas = boxes.remove(0);
        let down = subscribe(
            &store,
            &notifier,
            Subscription {
                kinds: vec!["departed".into()],
                ..sub(
                    "webhook",
                    &format!("http://127.0.0.1:{http_port}/down"),
                    "en",
                )
            },
        )
        .await;
        // Flags, at most two an hour to this carrier.
        subscribe(
            &store,
            &notifier,
            Subscription {
                kinds: vec!["flag".into()],
                rate_per_hour: Some(2),
                ..sub("email", "duty@carrier.example", "en")
            },
        )
        .await;
        let mut i = Ingestor::new(store.clone(), Limits::default())
            .await
            .unwrap();
        ingest(
            &mut i,
            &mut korgas,
            "passage",
            T0,
            passage(MRN, "green", T0),
            T0,
        )
        .await;
        for (k, rule) in ["seal_tamper", "radiation_gamma", "axle_load", "watchlist"]
            .iter()
            .enumerate()
        {
            let body = json!({"rule": rule, "severity": "high", "channel": "red", "lane": "lane-1",
                "message": {"key": format!("alert.{rule}"), "params": {}}, "mrn": MRN});
            ingest(
                &mut i,
                &mut korgas,
                "alert",
                T0 + 1000 * k as i64,
                body,
                T0 + 1000 * k as i64,
            )
            .await;
        }
        let now = T0 + 5000;
        // Attempts at 0, +1 s, +3 s, +7 s: the fourth is the last (max_attempts 4).
        let mut total = Stepped::default();
        for at in [0, 1000, 3000, 7000] {
            let s = notifier.step(now + at).await.unwrap();
            total.sent += s.sent;
            total.failed += s.failed;
            total.dead += s.dead;
            total.deferred += s.deferred;
        }
        assert_eq!(total.dead, 1, "{backend}: {total:?}");
        assert_eq!(total.failed, 3, "{backend}: {total:?}");
        // Two flags went out; the other two wait, said why, and none was dropped.
        assert_eq!(total.sent, 2, "{backend}: {total:?}");
        let waiting = store.notifications("pending", 10).await.unwrap();
        assert_eq!(waiting.len(), 2, "{waiting:?}");
        assert!(
            waiting.iter().all(|w| w
                .last_error
                .as_deref()
                .unwrap_or("")
                .starts_with("waiting:")),
            "{waiting:?}"
        );
        let dead = store.notifications("dead", 10).await.unwrap();
        assert_eq!(
            (dead.len(), dead[0].attempts, dead[0].subscription.as_str()),
            (1, 4, down.id.as_str())
        );
        assert!(
            dead[0].last_error.as_deref().unwrap().contains("503"),
            "{dead:?}"
        );
        assert_eq!(peer.taken("/down").len(), 4);
        let open = store.alerts(true).await.unwrap();
        assert!(open.iter().any(|a| a.kind == "notify_dead"), "{open:?}");
        assert!(open.iter().any(|a| a.kind == "notify"), "{open:?}");
        // An hour later the two waiting flags go.
        let s = notifier.step(now + H + 120_000).await.unwrap();
        assert_eq!(s.sent, 2, "{backend}: {s:?}");
        let mails = wait(30, "four mails", || {
            let m = smtp.mails();
            (m.len() == 4).then_some(m)
        });
        assert_eq!(mails.len(), 4);
        // Ending a subscription withdraws what it still had queued.
        assert!(store.unsubscribe(&down.id).await.unwrap());
        assert!(!store.unsubscribe(&down.id).await.unwrap());
    });
}

#[test]
fn a_central_killed_while_sending_tells_each_recipient_each_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = acsgd::mosquitto::Mosquitto::start(&dir.path().join("broker")).unwrap();
    // The peer runs on a runtime of its own; the test itself blocks on processes and HTTP.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (peer, peer_port) = rt.block_on(Peer::start(&[]));
    // Each answer takes 150 ms: the kill lands while sends are in flight.
    peer.delay_ms
        .store(150, std::sync::atomic::Ordering::Relaxed);
    let http_port = free_port();
    let db = format!("sqlite:{}", dir.path().join("central.db").display());
    let config = write_config(dir.path(), &db, broker.port(), http_port);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[notify]\nmax_attempts = 50\n[notify.bot]\nbase_url = \"http://127.0.0.1:{peer_port}\"\ntoken = \"{BOT_TOKEN}\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    let mut korgas = Box_::new("korgas");
    let kordai = Box_::new("kordai");
    for b in [&korgas, &kordai] {
        let (ok, out) = cli(
            &config,
            &["add", &b.post, "--name", &b.post, "--key", &b.public_hex()],
        );
        assert!(ok, "{out}");
    }
    let log = dir.path().join("central.log");
    let mut central = start(&config, &log);
    ready(http_port);
    const N: usize = 20;
    let mrn = |k: usize| format!("26KZ55{:011}A", 500 + k);
    for k in 0..N {
        let d = json!({"mrn": mrn(k), "plates": [format!("{:03}ABC02", k)],
            "itinerary": [{"post": "korgas"}, {"post": "kordai", "within_h": 20}]});
        let (s, t) = api(http_port, "POST", "/api/declarations", Some(&d));
        assert_eq!(s, 201, "{t}");
    }
    // A broker's webhook and an operator's bot, both for every departure.
    let (s, hook) = api(
        http_port,
        "POST",
        "/api/subscriptions",
        Some(&json!({
        "recipient": "Broker LLP", "party": "broker", "channel": "webhook",
        "address": format!("http://127.0.0.1:{peer_port}/hook"), "lang": "en", "kinds": ["departed"]})),
    );
    assert_eq!(s, 201, "{hook}");
    assert!(
        hook["secret"].as_str().is_some_and(|x| x.len() == 48),
        "{hook}"
    );
    let (s, bot) = api(
        http_port,
        "POST",
        "/api/subscriptions",
        Some(&json!({
        "recipient": "Duty officer", "party": "operator", "channel": "bot",
        "address": "-1001", "lang": "ru", "kinds": ["departed"]})),
    );
    assert_eq!(s, 201, "{bot}");
    let (s, e) = api(
        http_port,
        "POST",
        "/api/subscriptions",
        Some(&json!({
        "recipient": "x", "party": "carrier", "channel": "email", "address": "a@b.example", "lang": "en"})),
    );
    assert_eq!(s, 422, "email is not configured here: {e}");
    assert!(
        e["error"].as_str().unwrap().contains("[notify.email]"),
        "{e}"
    );

    let now = acsgd_central::store::now_ms();
    let msgs: Vec<(String, Vec<u8>)> = (0..N)
        .map(|k| {
            let t = now - 60_000 + k as i64;
            (
                korgas.topic("passage"),
                korgas.event("passage", t, passage(&mrn(k), "green", t)),
            )
        })
        .collect();
    publish_all(broker.port(), "korgas-uplink", &msgs);
    // SIGKILL once a few were told, then start again.
    wait(120, "the first notifications", || {
        (peer.taken("/").len() >= 6).then_some(())
    });
    central.kill();
    let mut central = start(&config, &log);
    ready(http_port);
    let distinct = |prefix: &str| {
        let mut keys: Vec<String> = peer
            .taken(prefix)
            .into_iter()
            .filter(|t| t.answered == 200)
            .map(|t| t.key.unwrap_or(t.body))
            .collect();
        keys.sort();
        keys.dedup();
        keys.len()
    };
    wait(180, "every departure told to both", || {
        (distinct("/hook") == N && distinct("/bot") == N).then_some(())
    });
    // The peer may hold a send that central died before recording: that row is sent again
    // (same key) after its backoff, so wait for central's own record, not the peer's count.
    wait(180, "every notification recorded as sent", || {
        let (_, sent) = api(http_port, "GET", "/api/notifications?state=sent", None);
        (sent.as_array().map(Vec::len) == Some(2 * N)).then_some(())
    });
    // After a clean restart nothing is told again.
    let before = peer.taken("/").len();
    central.terminate();
    let mut central = start(&config, &log);
    ready(http_port);
    let (s, sent) = api(http_port, "GET", "/api/notifications?state=sent", None);
    assert_eq!(
        (s, sent.as_array().map(Vec::len)),
        (200, Some(2 * N)),
        "{sent}"
    );
    let (_, pending) = api(http_port, "GET", "/api/notifications?state=pending", None);
    assert_eq!(pending.as_array().map(Vec::len), Some(0), "{pending}");
    // The only repeats a SIGKILL can cause: a send the peer took while central died before
    // recording it, sent again under the same key (the webhook's Idempotency-Key).
    let hooks = peer.taken("/hook");
    let repeats = hooks.len() - N;
    assert!(repeats <= 2, "{repeats} webhook repeats");
    let bots = peer.taken("/bot");
    assert!(bots.len() - N <= 2, "{} bot repeats", bots.len() - N);
    assert_eq!(
        peer.taken("/").len(),
        before,
        "nothing told again after a clean restart"
    );
    central.terminate();
}
