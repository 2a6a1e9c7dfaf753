//! The systemd notification protocol (`sd_notify(3)`): readiness, status text, the stop, and
//! the watchdog's keep-alive, as datagrams to the socket systemd names in `$NOTIFY_SOCKET`.
//!
//! With `Type=notify` in the unit, systemd counts the service as started only once it sent
//! `READY=1`: [`crate::service::run`] sends it after the outbox, the uplink, the sensors and
//! every listener are up, so units ordered after it (the kiosk) start against a working
//! service. With `WatchdogSec=` systemd sets `$WATCHDOG_USEC` and kills the service (SIGABRT,
//! then `Restart=`) when no `WATCHDOG=1` came for that long: [`watchdog`] sends it only while
//! the pipeline makes progress, so a hung fusion ticker or outbox writer (a deadlock, a
//! blocked disk) ends in a restart instead of a process that is up and does nothing.
//!
//! Without `$NOTIFY_SOCKET` (started by hand, by tests, in the demo) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::outbox::Outbox;

/// Where notifications go: a socket path, or a Linux abstract socket (`@name`).
#[derive(Debug, Clone)]
pub struct Notifier {
    to: Option<Target>,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// The notifier systemd set up for this process (none when `$NOTIFY_SOCKET` is unset).
    pub fn from_env() -> Notifier {
        let to = std::env::var_os("NOTIFY_SOCKET").and_then(|s| {
            let b = std::os::unix::ffi::OsStrExt::as_bytes(s.as_os_str()).to_vec();
            match b.first() {
                Some(b'@') => Some(Target::Abstract(b[1..].to_vec())),
                Some(b'/') => Some(Target::Path(PathBuf::from(s))),
                // Anything else (a vsock address) is not for a service on the box.
                _ => None,
            }
        });
        Notifier { to }
    }

    /// Whether systemd listens.
    pub fn enabled(&self) -> bool {
        self.to.is_some()
    }

    /// Sends `state` (newline-separated `KEY=value` lines). A failure is logged, never fatal:
    /// the service runs on, and systemd's own timeouts say what a lost message means.
    pub fn send(&self, state: &str) {
        let Some(to) = &self.to else { return };
        let sent = UnixDatagram::unbound().and_then(|s| match to {
            Target::Path(p) => s.send_to(state.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                s.send_to_addr(state.as_bytes(), &addr)
            }
        });
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not notify systemd");
        }
    }

    /// The service is up.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// The service is stopping.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}

/// The keep-alive interval systemd asks for (`$WATCHDOG_USEC`, for this process when
/// `$WATCHDOG_PID` names one), `None` without a watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Counts the passes of a loop the watchdog vouches for (the fusion ticker's ticks).
#[derive(Debug, Clone, Default)]
pub struct Heartbeat(Arc<AtomicU64>);

impl Heartbeat {
    /// One more pass done.
    pub fn beat(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Sends `WATCHDOG=1` every third of `interval` while the pipeline makes progress: the fusion
/// ticker (`fusion`, which beats every 250 ms) has ticked since the last check, and the
/// outbox's writer and flusher threads answer an empty commit within a third of the
/// interval. When either does not, the keep-alive is withheld (and the reason logged once),
/// so systemd restarts the service at the end of the interval. Ends when `stop` turns true.
pub async fn watchdog(
    notifier: Notifier,
    interval: Duration,
    fusion: Heartbeat,
    outbox: Outbox,
    mut stop: watch::Receiver<bool>,
) {
    let every = interval / 3;
    let mut last = fusion.count();
    let mut stalled: Option<&'static str> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: the fusion ticker has had no time to beat yet.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = fusion.count();
        let fusion_moved = now != last;
        last = now;
        let outbox_answers = tokio::time::timeout(every, outbox.append_many(Vec::new()))
            .await
            .is_ok();
        let why = match (fusion_moved, outbox_answers) {
            (true, true) => None,
            (false, _) => Some("the fusion ticker made no progress"),
            (true, false) => Some("the outbox writer did not answer"),
        };
        match why {
            None => {
                if stalled.take().is_some() {
                    tracing::info!("watchdog: the pipeline moves again");
                }
                notifier.send("WATCHDOG=1");
            }
            Some(w) => {
                if stalled.replace(w) != Some(w) {
                    tracing::error!("watchdog: {w}; keep-alives to systemd withheld");
                }
            }
        }
    }
}
