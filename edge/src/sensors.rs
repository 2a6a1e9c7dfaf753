//! Sensor supervision: starts a driver transport for every configured sensor and hands what
//! they decode to lane fusion ([`crate::fusion`]), storing the events it makes at once.
//!
//! The events of one tracker frame are appended in one call and the frame is answered
//! `accepted` only when every event of it is on disk; only then does the transport acknowledge
//! it to the device. Tracker positions become `position` events (bulk: evicted first when the
//! disk quota is tight, refused rather than evicting alerts; a refused batch is simply not
//! acknowledged and the device keeps it); telemetry without a position becomes `telemetry`.
//!
//! Lane sensors' readings (lane node, RPM) are buffered by fusion until their passage closes
//! and are not forwarded raw (fusion journals them first, [`crate::fusion::journal::file`], so a crash does
//! not lose them); the fusion ticker ([`crate::live`]) stores the passages and alerts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use acsgd_drivers::decode::Protocol as DriverProtocol;
use acsgd_drivers::transport::{self, Batch, Stats, TcpOptions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Protocol, Sensor, Transport};
use crate::health::{Health, State};
use crate::live::Locked as _;
use crate::live::{self, Shared};
use crate::outbox::Outbox;
use crate::supervise::Supervisor;

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
        Protocol::Galileosky => DriverProtocol::Galileosky,
        Protocol::Arnavi => DriverProtocol::Arnavi,
        Protocol::Rpm => DriverProtocol::Rpm,
        Protocol::Lane => DriverProtocol::Lane,
        Protocol::Camera => return None,
    })
}

/// The `health` component of a sensor (fusion's silence reports use the same).
pub fn component(id: &str) -> String {
    format!("sensor/{id}")
}

/// What the lane control ([`crate::barrier`]) exchanges with the lane nodes that drive a
/// barrier: their frames in, their serial lines' outgoing sides.
#[derive(Default)]
pub struct LaneLinks {
    pub taps: crate::barrier::Taps,
    pub lines:
        std::collections::HashMap<String, mpsc::Receiver<acsgd_drivers::transport::Outgoing>>,
}

/// Starts every sensor with a driver, and the task that stores what they read; every task is
/// watched by `sup` (a camera's is the only one the service can go on without).
#[allow(clippy::too_many_arguments)]
pub async fn start(
    sensors: &[Sensor],
    anpr: &crate::config::Anpr,
    outbox: Outbox,
    fusion: Shared,
    health: Arc<Health>,
    mut links: LaneLinks,
    sup: &Supervisor,
    stop: watch::Receiver<bool>,
) -> Result<(Vec<Started>, JoinHandle<()>), SensorError> {
    let (sink, batches) = mpsc::channel::<Batch>(256);
    let store_task = sup.watch(
        "sensors",
        true,
        tokio::spawn(store(
            batches,
            sink.clone(),
            outbox.clone(),
            fusion.clone(),
            links.taps.clone(),
            stop.clone(),
        )),
    );
    let mut started = Vec::new();
    for s in sensors {
        let Some(protocol) = driver_protocol(s.protocol) else {
            // A camera with its own plate recognition sends its reads over TCP; a video
            // stream (url) is the ANPR pipeline's.
            if let Transport::Tcp {
                listen,
                max_connections,
                idle_timeout_s,
                ..
            } = &s.transport
            {
                let l = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|source| bind_error(s, *listen, source))?;
                let local_addr = l.local_addr().ok();
                let stats = Arc::new(Stats::default());
                let task = sup.watch(
                    component(&s.id),
                    true,
                    tokio::spawn(plate_reads(
                        l,
                        s.id.clone(),
                        *max_connections,
                        Duration::from_secs(*idle_timeout_s),
                        outbox.clone(),
                        fusion.clone(),
                        stats.clone(),
                        stop.clone(),
                    )),
                );
                tracing::info!(sensor = %s.id, addr = ?local_addr, "plate reads listening");
                started.push(Started {
                    id: s.id.clone(),
                    stats,
                    local_addr,
                    task,
                });
            } else if let Transport::Url { url } = &s.transport {
                let stats = Arc::new(Stats::default());
                match crate::camera::spawn(
                    s,
                    url,
                    anpr,
                    crate::camera::Outputs {
                        fusion: fusion.clone(),
                        outbox: outbox.clone(),
                        health: health.clone(),
                    },
                    stop.clone(),
                    stats.clone(),
                ) {
                    // A video that ends ends its task: that camera is down, the post goes on.
                    Ok(task) => started.push(Started {
                        id: s.id.clone(),
                        stats,
                        local_addr: None,
                        task: sup.watch(component(&s.id), false, task),
                    }),
                    // The post goes on without this camera, and says so.
                    Err(e) => {
                        let why = format!("plate recognition not started: {e}");
                        tracing::error!(sensor = %s.id, "{why}");
                        health.report(&component(&s.id), State::Down, &why).await;
                    }
                }
            }
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
                    links.lines.remove(&s.id),
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
            task: sup.watch(component(&s.id), true, task),
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

/// Stores what the transports read until the service stops and every transport has handed
/// over what it held. `keep` is a sender of its own, let go of at the stop: without it a post
/// whose only sensors are cameras (no transport) would end the task at once.
async fn store(
    mut batches: mpsc::Receiver<Batch>,
    keep: mpsc::Sender<Batch>,
    outbox: Outbox,
    fusion: Shared,
    taps: crate::barrier::Taps,
    mut stop: watch::Receiver<bool>,
) {
    let mut keep = Some(keep);
    loop {
        if *stop.borrow() {
            keep = None;
        }
        let b = tokio::select! {
            b = batches.recv() => match b {
                Some(b) => b,
                None => break,
            },
            _ = stop.changed(), if keep.is_some() => {
                keep = None;
                continue;
            }
        };
        crate::supervise::fault_point("sensors");
        taps.offer(&b.sensor, &b.readings);
        let events = fusion
            .locked()
            .readings(live::now(), &b.sensor, &b.readings);
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

/// Plate reads from cameras with their own recognition: JSON lines
/// `{"plate": "123ABC02", "confidence": 0.97}` over TCP, one connection per camera (or
/// several). A line that is not a plate read is counted and skipped; a line longer than
/// [`MAX_PLATE_LINE`] closes the connection.
#[allow(clippy::too_many_arguments)]
async fn plate_reads(
    listener: tokio::net::TcpListener,
    sensor: String,
    max_connections: usize,
    idle: Duration,
    outbox: Outbox,
    fusion: Shared,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    loop {
        let (conn, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(sensor, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            stats
                .refused_connections
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        };
        stats
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sensor, outbox, fusion, stats, mut stop) = (
            sensor.clone(),
            outbox.clone(),
            fusion.clone(),
            stats.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            use tokio::io::{AsyncBufReadExt, AsyncReadExt};
            let mut reader = tokio::io::BufReader::new(conn);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                // At most one line's worth per read, so a sender without newlines costs
                // nothing but its connection.
                let mut limited = (&mut reader).take(MAX_PLATE_LINE as u64);
                let read = limited.read_until(b'\n', &mut buf);
                let n = tokio::select! {
                    r = tokio::time::timeout(idle, read) => match r {
                        Ok(Ok(n)) => n,
                        _ => return,
                    },
                    _ = stop.changed() => return,
                };
                if n == 0 || buf.last() != Some(&b'\n') {
                    return;
                }
                let text = String::from_utf8_lossy(&buf);
                if text.trim().is_empty() {
                    continue;
                }
                match crate::fusion::parse_plate_line(&text) {
                    Ok((plate, confidence)) => {
                        stats
                            .frames
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let events =
                            fusion
                                .locked()
                                .plate(live::now(), &sensor, &plate, confidence);
                        if !events.is_empty() {
                            let _ = outbox.append_many(events).await;
                        }
                    }
                    Err(e) => {
                        stats
                            .bad_frames
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(sensor, %peer, "not a plate read: {e}");
                    }
                }
            }
        });
    }
}

/// The longest plate-read line accepted.
pub const MAX_PLATE_LINE: usize = 1024;
