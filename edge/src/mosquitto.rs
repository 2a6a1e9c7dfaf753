//! A local mosquitto broker that we start and stop: the demo's broker when no `--broker` is
//! given, and the real peer of the integration tests and benchmarks.
//!
//! It listens on loopback only, keeps its persistence file in its own directory (so a
//! persistent subscriber keeps its queued messages across [`Mosquitto::stop`] and
//! [`Mosquitto::restart`]), and never limits queued messages.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the broker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("mosquitto is not installed (looked on PATH and in /usr/sbin); install it with `apt-get install mosquitto` or pass --broker mqtt://HOST:PORT")]
    NotInstalled,
    #[error("mosquitto: {0}")]
    Io(#[from] std::io::Error),
    #[error("mosquitto did not accept connections on port {port} within 10 s; its log: {log}")]
    NotReady { port: u16, log: String },
}

/// A running mosquitto child process. Killed when dropped.
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: String,
}

impl Mosquitto {
    /// Where the mosquitto binary is, if installed.
    pub fn binary() -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
            .map(|d| d.join("mosquitto"))
            .find(|p| p.is_file())
    }

    /// Starts a broker on a free loopback port, with its files in `dir`.
    pub fn start(dir: &Path) -> Result<Mosquitto, BrokerError> {
        Mosquitto::start_with(dir, free_port()?, "")
    }

    /// Starts a broker on `port`; `extra` is appended to the listener's configuration (TLS).
    pub fn start_with(dir: &Path, port: u16, extra: &str) -> Result<Mosquitto, BrokerError> {
        let mut m = Mosquitto {
            child: None,
            port,
            dir: dir.to_path_buf(),
            extra: extra.to_string(),
        };
        m.spawn()?;
        Ok(m)
    }

    fn spawn(&mut self) -> Result<(), BrokerError> {
        let bin = Mosquitto::binary().ok_or(BrokerError::NotInstalled)?;
        std::fs::create_dir_all(&self.dir)?;
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "# written by acsgd\nuser root\npersistence true\npersistence_location {dir}/\n\
                 autosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages 1000\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n\
                 listener {port} 127.0.0.1\nallow_anonymous true\n{extra}\n",
                dir = self.dir.display(),
                port = self.port,
                extra = self.extra
            ),
        )?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || Instant::now() > deadline {
                self.kill();
                return Err(BrokerError::NotReady {
                    port: self.port,
                    log: std::fs::read_to_string(self.log_path())
                        .unwrap_or_default()
                        .replace('\n', " | "),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("mosquitto.log")
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops it cleanly (SIGTERM: it saves its persistence file) and waits.
    // std's Child::kill sends only SIGKILL.
    #[allow(unsafe_code)]
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child we own and have not yet reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Kills it (SIGKILL) and waits.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same files.
    pub fn restart(&mut self) -> Result<(), BrokerError> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago, chosen below the kernel's ephemeral range.
///
/// `bind(0)` hands out a port from that range, and so does every outgoing connection on the
/// machine: between this function releasing such a port and its caller binding it again, any
/// `connect()` anywhere may take it (a test suite running in parallel makes thousands; a HIL
/// scenario once found its sensor port never opened, and this is one way that happens). Below
/// the range only another `free_port` can, so the search starts at a random place in 10000 up
/// to the range's start. `bind(0)` remains the fallback when nothing there is free or the
/// range starts too low to leave room.
///
/// One process never gets the same port twice (until it has asked for thousands): the start
/// is drawn once a process and each call steps on from where the last one stopped. A start
/// drawn afresh for each call once gave two sensors of one HIL scenario the same port, the
/// second then unable to listen.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    const FLOOR: u32 = 10_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_start > FLOOR + 1_000 {
        let span = ephemeral_start - FLOOR;
        // A start that differs between processes (pid, clock) and a counter stepping by a
        // prime, so that a port found taken is not tried again at once.
        let seed = *SEED.get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            std::process::id().wrapping_mul(2_654_435_761) ^ nanos
        });
        for _ in 0..64 {
            let i = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = FLOOR + seed.wrapping_add(i.wrapping_mul(7_919)) % span;
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
                return Ok(l.local_addr()?.port());
            }
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_never_gets_the_same_port_twice() {
        // Drawn afresh each call, 500 ports out of some 22 000 held a repeat almost always.
        let ports: Vec<u16> = (0..500).map(|_| free_port().unwrap()).collect();
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    }
}
