//! A stand-in for central: a real MQTT subscriber (rumqttc) on the real broker, with a
//! persistent session, so it misses nothing while it or the broker is away (the broker keeps
//! its queue across a clean restart); and central's retained publishing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

/// One message central received.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }

    /// An event envelope (not the post's status or key).
    pub fn is_event(&self) -> bool {
        !self.topic.ends_with("/status") && !self.topic.ends_with("/key")
    }
}

/// Central, subscribed to everything one post publishes.
pub struct Central {
    pub got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Central {
    /// Connects as `client_id` (a persistent session), subscribes to `acsgd/v1/{post}/#` and
    /// waits for the SUBACK.
    pub fn subscribe(port: u16, client_id: &str, post: &str) -> Result<Central, String> {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5))
            // Room for what central itself publishes to the post (a test sends 5 MiB).
            .set_max_packet_size(64 << 20, 4 << 20);
        let (client, conn) = Client::new(o, 100);
        client
            .subscribe(format!("acsgd/v1/{post}/#"), QoS::AtLeastOnce)
            .map_err(|e| format!("central: subscribing: {e}"))?;
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (got, stop) = (got.clone(), stop.clone());
            std::thread::spawn(move || pump(client, conn, got, stop, ready_tx))
        };
        let central = Central {
            got,
            stop,
            thread: Some(thread),
        };
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| format!("central: no SUBACK from the broker on port {port} in 10 s"))?;
        Ok(central)
    }

    /// Event envelopes received (not status or key), in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|r| r.is_event())
            .map(Received::json)
            .collect()
    }

    /// Waits until `pred` holds for the events, or panics after `secs`.
    pub fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let ev = self.events();
            if pred(&ev) {
                return ev;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; central has {} events",
                    ev.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pump(
    client: Client,
    mut conn: Connection,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
) {
    while !stop.load(Ordering::Relaxed) {
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                let _ = ready.send(());
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => got
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Received {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                }),
            Ok(Ok(_)) | Err(_) => {}
            // Broker away: rumqttc reconnects on the next poll; the session is resumed.
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let _ = client.disconnect();
}

/// Publishes what central sends to a post, retained, and waits (up to 10 s) for the broker's
/// PUBACK.
pub fn publish_retained(port: u16, topic: &str, payload: &[u8]) -> Result<(), String> {
    let mut o = MqttOptions::new(format!("central-publisher-{port}"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut conn) = Client::new(o, 10);
    client
        .publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
        .map_err(|e| format!("publishing {topic}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                let _ = client.disconnect();
                return Ok(());
            }
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
            _ => {}
        }
    }
    Err(format!("no PUBACK for {topic} in 10 s"))
}
