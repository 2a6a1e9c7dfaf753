//! Sensor supervision: starts a driver transport for every configured sensor and turns what the
//! trackers report into events in the outbox.
//!
//! A batch of readings from one tracker frame is appended in one call and answered `accepted`
//! only when every event of it is on disk; only then does the transport acknowledge the frame
//! to the device. Tracker positions become `position` events (bulk: evicted first when the disk
//! quota is tight, refused rather than evicting alerts; a refused batch is simply not
//! acknowledged and the device keeps it); telemetry without a position becomes `telemetry`.
//!
//! Lane-local sensors (NMEA receiver, RPM, lane node) are decoded and counted here; their
//! readings feed lane fusion, which turns them into passages and alerts, and are not forwarded
//! raw.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use acsgd_drivers::decode::Protocol as DriverProtocol;
use acsgd_drivers::transport::{self, Batch, Stats, TcpOptions};
use acsgd_drivers::Reading;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Protocol, Sensor, Transport};
use crate::envelope::Event;
use crate::outbox::Outbox;

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("sensor {sensor}: cannot listen on {addr}: {source}")]
    Bind {
        sensor: String,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// A started sensor.
pub struct Started {
    pub id: String,
    pub stats: Arc<Stats>,
    /// The address actually bound (port 0 in a config becomes a real port).
    pub local_addr: Option<std::net::SocketAddr>,
    pub task: JoinHandle<()>,
}

pub(crate) fn driver_protocol(p: Protocol) -> Option<DriverProtocol> {
    Some(match p {
        Protocol::Nmea => DriverProtocol::Nmea,
        Protocol::Egts => DriverProtocol::Egts,
        Protocol::Wialon => DriverProtocol::Wialon,
        Protocol::Teltonika => DriverProtocol::Teltonika,
        Protocol::Rpm => DriverProtocol::Rpm,
        Protocol::Lane => DriverProtocol::Lane,
        Protocol::Camera => return None,
    })
}

/// Starts every sensor with a driver, and the task that stores what they read.
pub async fn start(
    sensors: &[Sensor],
    outbox: Outbox,
    stop: watch::Receiver<bool>,
) -> Result<(Vec<Started>, JoinHandle<()>), SensorError> {
    let (sink, batches) = mpsc::channel::<Batch>(256);
    let lanes: Arc<std::collections::HashMap<String, Option<String>>> = Arc::new(
        sensors
            .iter()
            .map(|s| (s.id.clone(), s.lane.clone()))
            .collect(),
    );
    let store_task = tokio::spawn(store(batches, outbox, lanes));
    let mut started = Vec::new();
    for s in sensors {
        let Some(protocol) = driver_protocol(s.protocol) else {
            tracing::info!(sensor = %s.id, "camera sensors are read by the ANPR pipeline");
            continue;
        };
        let stats = Arc::new(Stats::default());
        let id: Arc<str> = s.id.as_str().into();
        let allow = |a: &Option<Vec<String>>| {
            a.as_ref()
                .map(|v| v.iter().cloned().collect::<HashSet<_>>())
        };
        let (task, local_addr) = match &s.transport {
            Transport::Tcp {
                listen,
                max_connections,
                idle_timeout_s,
                allow: a,
            } => {
                let l = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|source| bind_error(s, *listen, source))?;
                let addr = l.local_addr().ok();
                let opts = TcpOptions {
                    max_connections: *max_connections,
                    idle_timeout: Duration::from_secs(*idle_timeout_s),
                    allow: allow(a),
                };
                let t = tokio::spawn(transport::serve_tcp(
                    l,
                    protocol,
                    id,
                    opts,
                    sink.clone(),
                    stats.clone(),
                    stop.clone(),
                ));
                (t, addr)
            }
            Transport::Udp { listen, allow: a } => {
                let u = tokio::net::UdpSocket::bind(listen)
                    .await
                    .map_err(|source| bind_error(s, *listen, source))?;
                let addr = u.local_addr().ok();
                let t = tokio::spawn(transport::serve_udp(
                    u,
                    protocol,
                    id,
                    allow(a),
                    sink.clone(),
                    stats.clone(),
                    stop.clone(),
                ));
                (t, addr)
            }
            Transport::Serial { path, baud } => {
                let t = tokio::spawn(transport::serve_serial(
                    path.clone(),
                    *baud,
                    protocol,
                    id,
                    sink.clone(),
                    stats.clone(),
                    stop.clone(),
                ));
                (t, None)
            }
            Transport::Url { url } => {
                tracing::warn!(sensor = %s.id, url, "a {protocol} sensor cannot be read from a URL; ignored");
                continue;
            }
        };
        tracing::info!(sensor = %s.id, %protocol, addr = ?local_addr, "sensor started");
        started.push(Started {
            id: s.id.clone(),
            stats,
            local_addr,
            task,
        });
    }
    Ok((started, store_task))
}

fn bind_error(s: &Sensor, addr: std::net::SocketAddr, source: std::io::Error) -> SensorError {
    SensorError::Bind {
        sensor: s.id.clone(),
        addr,
        source,
    }
}

/// The events a tracker batch becomes.
pub fn events_for(sensor: &str, lane: Option<&str>, readings: &[Reading]) -> Vec<Event> {
    let mut out = Vec::new();
    for r in readings {
        let kind = match r {
            Reading::Position(_) => "position",
            Reading::Telemetry(_) | Reading::Message(_) => "telemetry",
            _ => continue,
        };
        let mut body = match serde_json::to_value(r) {
            Ok(Value::Object(m)) => m,
            _ => continue,
        };
        body.insert("sensor".into(), json!(sensor));
        if let Some(l) = lane {
            body.insert("lane".into(), json!(l));
        }
        out.push(Event::now(kind, Value::Object(body)));
    }
    out
}

async fn store(
    mut batches: mpsc::Receiver<Batch>,
    outbox: Outbox,
    lanes: Arc<std::collections::HashMap<String, Option<String>>>,
) {
    while let Some(b) = batches.recv().await {
        let lane = lanes.get(&*b.sensor).cloned().flatten();
        let events = events_for(&b.sensor, lane.as_deref(), &b.readings);
        let ok = if events.is_empty() {
            true
        } else {
            let results = outbox.append_many(events).await;
            let refused: Vec<String> = results
                .iter()
                .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
                .collect();
            if let Some(first) = refused.first() {
                tracing::warn!(sensor = %b.sensor, "{} of {} readings not accepted: {first}", refused.len(), results.len());
            }
            refused.is_empty()
        };
        let _ = b.accepted.send(ok);
    }
}
