//! `acsgd demo`: the appliance's main job on one machine. A local mosquitto (unless
//! `--broker` is given), the real service (lane fusion, outbox, uplink) fed by the bundled
//! simulated trace (`edge/traces/demo.tsv`: two truck lanes, seals on the corridor, every kind
//! of finding) played in real time through the real drivers, and a stand-in for central that
//! subscribes, checks every signature and counts duplicates. Declarations in the trace go
//! into the inbox cache the way the uplink stores what central publishes. The trace loops
//! when it ends. The officer display is served (`--http`, default `127.0.0.1:8080`) with
//! three demo accounts made for the run, one per role, whose passwords are printed. Prints
//! one summary line per second.
//!
//! Central's demo (`central/demo/corridor`) runs several of these as posts of one route:
//! `--config` gives the post's own configuration (its broker, data directory and sensors; no
//! local broker and no stand-in: the real central listens), `--trace` the post's own trace
//! (played once), and `--start-at` one moment for all of them, so that trucks leave one post
//! and reach the next when the traces say, whatever each process took to start.

mod player;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use tokio::sync::watch;

use crate::config::Config;
use crate::envelope::{from_hex, Envelope};
use crate::live::Locked as _;
use crate::mosquitto::{BrokerError, Mosquitto};
use crate::service::{self, ServiceError};

/// Demo options (the command-line flags).
#[derive(Debug, Default)]
pub struct Options {
    pub broker: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub duration: Option<Duration>,
    /// Serve the officer display here.
    pub http: Option<std::net::SocketAddr>,
    /// The post's own configuration instead of the bundled one.
    pub config: Option<PathBuf>,
    /// Play this trace (once) instead of the bundled one (looping).
    pub trace: Option<PathBuf>,
    /// When the trace's offset 0 is, in Unix milliseconds (default: now).
    pub start_at_ms: Option<i64>,
}

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("demo: {0}")]
    Io(#[from] std::io::Error),
}

const POST: &str = "demo-korgas";

/// What the stand-in for central has seen.
#[derive(Default)]
struct Central {
    received: AtomicU64,
    verified: AtomicU64,
    bad_sig: AtomicU64,
    duplicates: AtomicU64,
    key: Mutex<Option<VerifyingKey>>,
    ids: Mutex<HashSet<String>>,
}

impl Central {
    /// Verifies one envelope with the post's key and counts it.
    fn check(&self, payload: &[u8]) {
        let key = *self.key.lock().expect("key lock");
        match key.map(|k| Envelope::verify(payload, &k)) {
            Some(Ok(env)) => {
                self.verified.fetch_add(1, Ordering::Relaxed);
                if !self.ids.lock().expect("ids lock").insert(env.id) {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                self.bad_sig.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The demo's own directory, made the first time something needs it.
fn scratch_in(scratch: &mut Option<tempfile::TempDir>) -> std::io::Result<std::path::PathBuf> {
    if let Some(s) = scratch {
        return Ok(s.path().to_path_buf());
    }
    let made = scratch.insert(tempfile::Builder::new().prefix("acsgd-demo-").tempdir()?);
    Ok(made.path().to_path_buf())
}

pub async fn run(opts: Options) -> Result<(), DemoError> {
    // Made only when the options leave a directory to the demo: a post of central's demo, or
    // a demo given its broker and data directory, is often ended by a signal, which left an
    // empty directory behind at every run.
    let mut scratch: Option<tempfile::TempDir> = None;
    let mut broker = None;
    let mut config = match &opts.config {
        // A post of central's demo: its own file, broker and data directory.
        Some(path) => Config::load(path)?,
        None => {
            let data_dir = match &opts.data_dir {
                Some(d) => d.clone(),
                None => scratch_in(&mut scratch)?.join("data"),
            };
            let url = match &opts.broker {
                Some(u) => u.clone(),
                None => {
                    let m = Mosquitto::start(&scratch_in(&mut scratch)?.join("broker"))?;
                    let url = m.url();
                    println!(
                        "demo: started mosquitto on {url} (pid {})",
                        m.pid().unwrap_or(0)
                    );
                    broker = Some(m);
                    url
                }
            };
            // The bundled trace's own configuration, pointed at this broker and data directory.
            let text = player::CONFIG
                .replace("post = \"korgas\"", &format!("post = \"{POST}\""))
                .replace("mqtt://127.0.0.1:1883", &url)
                .replace("/var/lib/acsgd", &data_dir.display().to_string())
                .replace("[storage]", "[storage]\nquota_mb = 256")
                .replace(
                    "[uplink]",
                    "[uplink]\nbackoff_initial_ms = 200\nbackoff_max_s = 5",
                );
            Config::parse(std::path::Path::new("<demo>"), &text)?
        }
    };
    let mut player = match &opts.trace {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            player::Player::new(&config, text.into(), false)
        }
        None => player::Player::bundled(&config),
    };
    let addr = config.broker();
    let mut accounts = Vec::new();
    if let Some(bind) = opts.http {
        let (display, made) = demo_display(bind)?;
        config.display = Some(display);
        accounts = made;
    }

    // The stand-in for central, unless a real one listens (a post of central's demo).
    let central = Arc::new(Central::default());
    let (stop_central, stop_rx) = watch::channel(false);
    let central_task = opts.config.is_none().then(|| {
        tokio::spawn(subscribe_as_central(
            addr.host.clone(),
            addr.port,
            config.post.clone(),
            central.clone(),
            stop_rx,
        ))
    });

    let mut running = service::start_with(config.clone(), false).await?;
    println!(
        "demo: post {}, outbox in {}, forwarding to mqtt://{}:{}; events on acsgd/v1/{}/#",
        config.post,
        config.storage.data_dir.display(),
        addr.host,
        addr.port,
        config.post
    );
    println!("demo: {}", player.describe());
    if let Some(a) = running.display_addr() {
        println!("demo: officer display on http://{a}/ (technician pages: http://{a}/tech)");
        for a in &accounts {
            println!(
                "demo: account {} password {} ({})",
                a.user,
                a.password,
                a.role.as_str()
            );
        }
    }
    // The trace's offset 0: now, or the moment every post of central's demo was given.
    let start = match opts.start_at_ms {
        Some(at) => {
            let ahead = at - crate::live::now();
            let now = Instant::now();
            if ahead >= 0 {
                now + Duration::from_millis(ahead as u64)
            } else {
                now.checked_sub(Duration::from_millis(ahead.unsigned_abs()))
                    .unwrap_or(now)
            }
        }
        None => Instant::now(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_line = Instant::now();
    let mut signals = service::Signals::new();
    let mut died = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = signals.recv() => break,
            d = running.died() => {
                if running.report_death(&d).await {
                    eprintln!("demo: the {} task died ({}); stopping", d.task, d.why);
                    died = Some(d);
                    break;
                }
            }
        }
        let played = Instant::now().saturating_duration_since(start);
        let events = player.play_until(played, &running);
        for r in running.outbox.append_many(events).await {
            if let Err(e) = r {
                eprintln!("demo: event not accepted: {e}");
            }
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            println!("{}", summary(played, &running, &central));
        }
        if opts.duration.is_some_and(|d| played >= d) {
            break;
        }
    }
    // Let central catch up with what is already forwarded, then stop in order.
    let deadline = Instant::now() + Duration::from_secs(5);
    while running
        .status()
        .map(|s| s.outbox.backlog_events)
        .unwrap_or(0)
        > 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "{}",
        summary(
            Instant::now().saturating_duration_since(start),
            &running,
            &central
        )
    );
    running.stop().await;
    let _ = stop_central.send(true);
    if let Some(task) = central_task {
        let _ = task.await;
    }
    drop(broker);
    if let Some(d) = died {
        return Err(ServiceError::TaskDied {
            task: d.task,
            why: d.why,
        }
        .into());
    }
    if opts.config.is_none() {
        println!(
            "demo: done. central received {} events ({} with a valid signature, {} bad, {} duplicates)",
            central.received.load(Ordering::Relaxed),
            central.verified.load(Ordering::Relaxed),
            central.bad_sig.load(Ordering::Relaxed),
            central.duplicates.load(Ordering::Relaxed)
        );
    } else {
        println!("demo: done.");
    }
    Ok(())
}

/// A demo account and its password, printed for whoever runs the demo.
struct DemoAccount {
    user: &'static str,
    role: crate::config::Role,
    password: String,
}

/// The display's configuration for the demo, and its accounts: one per role, with passwords
/// made for this run.
fn demo_display(
    bind: std::net::SocketAddr,
) -> Result<(crate::config::Display, Vec<DemoAccount>), DemoError> {
    use crate::config::{Account, Role};
    let mut made = Vec::new();
    let mut list = Vec::new();
    for (user, role, name, lang) in [
        ("officer", Role::Officer, "Demo officer", "ru"),
        ("supervisor", Role::Supervisor, "Demo supervisor", "kk"),
        ("technician", Role::Technician, "Demo technician", "en"),
    ] {
        let password = demo_password()?;
        let hash = crate::display::auth::hash_password(&password).map_err(std::io::Error::other)?;
        list.push(Account {
            user: user.into(),
            name: Some(name.into()),
            role,
            password_hash: hash,
            lang: Some(lang.into()),
        });
        made.push(DemoAccount {
            user,
            role,
            password,
        });
    }
    let display = crate::config::Display {
        bind,
        accounts: list,
        ..Default::default()
    };
    Ok((display, made))
}

/// Ten characters from an alphabet without look-alikes.
fn demo_password() -> Result<String, std::io::Error> {
    const A: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut raw = [0u8; 10];
    getrandom::getrandom(&mut raw).map_err(std::io::Error::other)?;
    Ok(raw
        .iter()
        .map(|b| A[*b as usize % A.len()] as char)
        .collect())
}

fn summary(t: Duration, running: &service::Running, central: &Central) -> String {
    let Ok(s) = running.status() else {
        return "status unavailable".into();
    };
    let u = s.uplink.unwrap_or_else(|| running.uplink.snapshot());
    let f = running.fusion.locked().stats().clone();
    format!(
        "[{:>4}s] accepted {:>6}  forwarded {:>6}  backlog {:>5}  | passages {:>4} (red {:>3}, yellow {:>3})  alerts {:>4}  positions {:>5}  | central received {:>6}, signatures ok {:>6}  | uplink {}",
        t.as_secs(),
        s.outbox.counters.accepted,
        u.forwarded,
        s.outbox.backlog_events,
        f.passages,
        f.red,
        f.yellow,
        f.alerts,
        f.positions,
        central.received.load(Ordering::Relaxed),
        central.verified.load(Ordering::Relaxed),
        if u.connected { "up" } else { "DOWN" }
    )
}

/// The stand-in for central: subscribes to everything the post publishes and checks it.
async fn subscribe_as_central(
    host: String,
    port: u16,
    post: String,
    c: Arc<Central>,
    mut stop: watch::Receiver<bool>,
) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new("demo-central", host, port);
    o.set_keep_alive(Duration::from_secs(10))
        .set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut events) = AsyncClient::new(o, 64);
    let filter = format!("acsgd/v1/{post}/#");
    let mut before_key: Vec<Vec<u8>> = Vec::new();
    loop {
        let ev = tokio::select! {
            ev = events.poll() => ev,
            _ = stop.changed() => return,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let kind = p.topic.rsplit('/').next().unwrap_or("");
                match kind {
                    "key" => {
                        let key = serde_json::from_slice::<serde_json::Value>(&p.payload)
                            .ok()
                            .and_then(|v| from_hex(v["key"].as_str()?))
                            .and_then(|b| VerifyingKey::from_bytes(&b.try_into().ok()?).ok());
                        *c.key.lock().expect("key lock") = key;
                        // Events that came before the key are checked now.
                        for payload in std::mem::take(&mut before_key) {
                            c.check(&payload);
                        }
                    }
                    "status" => {}
                    _ => {
                        c.received.fetch_add(1, Ordering::Relaxed);
                        if c.key.lock().expect("key lock").is_some() {
                            c.check(&p.payload);
                        } else if before_key.len() < 10_000 {
                            before_key.push(p.payload.to_vec());
                        } else {
                            c.bad_sig.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
