//! `acsgd demo`: the appliance's main job on one machine. A local mosquitto (unless
//! `--broker` is given), the real service (outbox, uplink) fed by [`synthetic`] traffic, and a
//! stand-in for central that subscribes, checks every signature and counts duplicates. Prints
//! one summary line per second.

pub mod synthetic;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use tokio::sync::watch;

use crate::config::Config;
use crate::envelope::{from_hex, Envelope};
use crate::mosquitto::{BrokerError, Mosquitto};
use crate::service::{self, ServiceError};

/// Demo options (the command-line flags).
#[derive(Debug, Default)]
pub struct Options {
    pub broker: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub duration: Option<Duration>,
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

pub async fn run(opts: Options) -> Result<(), DemoError> {
    let scratch = tempfile::Builder::new().prefix("acsgd-demo-").tempdir()?;
    let data_dir = opts
        .data_dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("data"));
    let mut broker = None;
    let url = match &opts.broker {
        Some(u) => u.clone(),
        None => {
            let m = Mosquitto::start(&scratch.path().join("broker"))?;
            let url = m.url();
            println!(
                "demo: started mosquitto on {url} (pid {})",
                m.pid().unwrap_or(0)
            );
            broker = Some(m);
            url
        }
    };
    let text = format!(
        "post = \"{POST}\"\n\
         [[lanes]]\nid = \"1\"\nname = \"Truck lane 1\"\n\
         [[lanes]]\nid = \"2\"\nname = \"Truck lane 2\"\n\
         [uplink]\nbroker = \"{url}\"\nbackoff_initial_ms = 200\nbackoff_max_s = 5\n\
         [storage]\ndata_dir = \"{}\"\nquota_mb = 256\n",
        data_dir.display()
    );
    let config = Config::parse(std::path::Path::new("<demo>"), &text)?;
    let addr = config.broker();

    let central = Arc::new(Central::default());
    let (stop_central, stop_rx) = watch::channel(false);
    let central_task = tokio::spawn(subscribe_as_central(
        addr.host.clone(),
        addr.port,
        central.clone(),
        stop_rx,
    ));

    let running = service::start(config).await?;
    println!(
        "demo: post {POST}, outbox in {}, forwarding to {url}; events on acsgd/v1/{POST}/#",
        data_dir.display()
    );
    println!("demo: synthetic traffic: 6 seals reporting every second, a passage every 4 s, an alert on every 5th passage");
    let mut traffic = synthetic::Traffic::new(6);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let ctrl_c = service::wait_for_signal();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => break,
        }
        for r in running.outbox.append_many(traffic.second()).await {
            if let Err(e) = r {
                eprintln!("demo: event not accepted: {e}");
            }
        }
        println!("{}", summary(start.elapsed(), &running, &central));
        if opts.duration.is_some_and(|d| start.elapsed() >= d) {
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
    println!("{}", summary(start.elapsed(), &running, &central));
    running.stop().await;
    let _ = stop_central.send(true);
    let _ = central_task.await;
    drop(broker);
    println!(
        "demo: done. central received {} events ({} with a valid signature, {} bad, {} duplicates)",
        central.received.load(Ordering::Relaxed),
        central.verified.load(Ordering::Relaxed),
        central.bad_sig.load(Ordering::Relaxed),
        central.duplicates.load(Ordering::Relaxed)
    );
    Ok(())
}

fn summary(t: Duration, running: &service::Running, central: &Central) -> String {
    let Ok(s) = running.status() else {
        return "status unavailable".into();
    };
    let u = s.uplink.unwrap_or_else(|| running.uplink.snapshot());
    format!(
        "[{:>4}s] accepted {:>6}  forwarded {:>6}  backlog {:>5}  | central received {:>6}, signatures ok {:>6}  | uplink {}",
        t.as_secs(),
        s.outbox.counters.accepted,
        u.forwarded,
        s.outbox.backlog_events,
        central.received.load(Ordering::Relaxed),
        central.verified.load(Ordering::Relaxed),
        if u.connected { "up" } else { "DOWN" }
    )
}

/// The stand-in for central: subscribes to everything the post publishes and checks it.
async fn subscribe_as_central(
    host: String,
    port: u16,
    c: Arc<Central>,
    mut stop: watch::Receiver<bool>,
) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new("demo-central", host, port);
    o.set_keep_alive(Duration::from_secs(10))
        .set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut events) = AsyncClient::new(o, 64);
    let filter = format!("acsgd/v1/{POST}/#");
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
                    }
                    "status" => {}
                    _ => {
                        c.received.fetch_add(1, Ordering::Relaxed);
                        let key = *c.key.lock().expect("key lock");
                        match key.map(|k| Envelope::verify(&p.payload, &k)) {
                            Some(Ok(env)) => {
                                c.verified.fetch_add(1, Ordering::Relaxed);
                                if !c.ids.lock().expect("ids lock").insert(env.id) {
                                    c.duplicates.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            _ => {
                                c.bad_sig.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
