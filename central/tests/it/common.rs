//! What central's tests share: a real PostgreSQL cluster of their own, a store on each backend,
//! signed events from a stand-in post, and a small HTTP client.

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use acsgd_central::store::{Post, Store};
use acsgd_contract::envelope::{to_hex, Signer};
use acsgd_contract::Event;
use acsgd_testkit::process::Process;
use serde_json::{json, Value};
use time::OffsetDateTime;

/// A PostgreSQL cluster in a temporary directory on a free port, stopped when dropped.
pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

fn pg_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("ACSGD_PG_BIN") {
        return b.into();
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .filter(|b| b.join("initdb").exists())
        .expect("PostgreSQL is not installed (.ci/setup installs Debian's postgresql)")
}

fn is_root() -> bool {
    std::env::var("USER").as_deref() == Ok("root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl Pg {
    /// A cluster in the environment's locale, as Debian's packaged cluster takes it.
    pub fn start() -> Pg {
        Pg::start_in(None)
    }

    /// A cluster whose databases collate and classify text in `locale` (initdb's `--locale`;
    /// none: the environment's).
    pub fn start_in(locale: Option<&str>) -> Pg {
        let dir = tempfile::Builder::new()
            .prefix("acsgd-pg")
            .tempdir()
            .unwrap();
        let bin = pg_bin();
        let pg = Pg {
            port: free_port(),
            dir,
            bin,
        };
        if is_root() {
            // PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(pg.dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let data = pg.dir.path().join("db");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "acsgd",
                "-E",
                "UTF8",
            ]
            .into_iter()
            .chain(locale.map(|l| ["--locale", l]).into_iter().flatten())
            .collect::<Vec<_>>(),
        );
        pg.start_again();
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts (again) the cluster and waits until it accepts connections.
    pub fn start_again(&self) {
        let data = self.dir.path().join("db");
        let log = self.dir.path().join("log");
        // `ACSGD_PG_OPTS`: server settings added for a measurement (e.g. the bench's statement
        // statistics), never needed by a test.
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=on {}",
            self.port,
            self.dir.path().display(),
            std::env::var("ACSGD_PG_OPTS").unwrap_or_default()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-w",
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "start",
            ],
        );
    }

    /// Stops the cluster at once (connections cut, as when the database host goes away).
    pub fn stop(&self) {
        let data = self.dir.path().join("db");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://acsgd@127.0.0.1:{}/postgres", self.port)
    }

    /// The running server's process id (the first line of its `postmaster.pid`), whose
    /// children are the backends: `pg_ctl` detaches it from whoever started it (the load
    /// bench's CPU account; no test needs it).
    #[allow(dead_code)]
    pub fn postmaster(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(self.dir.path().join("db/postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = self.dir.path().join("db");
        let _ = Command::new(if is_root() { "runuser" } else { "true" })
            .args(if is_root() {
                vec!["-u", "postgres", "--"]
            } else {
                vec![]
            })
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

/// A loopback port free now, chosen below the kernel's ephemeral range
/// ([`acsgd::mosquitto::free_port`]): a port that `bind(0)` handed out and the test released
/// can be taken by any outgoing connection (the NATS routes, PostgreSQL's clients) before the
/// server the test starts binds it.
pub fn free_port() -> u16 {
    acsgd::mosquitto::free_port().expect("a free loopback port")
}

/// Runs `test` once on a fresh SQLite file and once on a fresh PostgreSQL cluster; the second
/// argument is the database's URL (also what failure messages name).
pub fn on_both<F, Fut>(test: F)
where
    F: Fn(Store, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("central.db").display());
    rt.block_on(async {
        let store = Store::open(&url).await.unwrap();
        test(store, url.clone()).await;
    });
    let pg = Pg::start();
    rt.block_on(async {
        let store = Store::open(&pg.url()).await.unwrap();
        test(store, pg.url()).await;
    });
}

/// A post that signs like the appliance.
/// Event ids: each stable per (post, seq, kind), so a resend carries the same id.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ids {
    /// `korgas-passage-00000001`, which tests can name.
    Readable,
    /// As the appliance makes them (`acsgd_contract::envelope::event_id`): UUIDv7, the
    /// event's time first.
    V7,
    /// As the appliance made them before: UUIDv4, all random (the ingest bench's
    /// `ACSGD_BENCH_IDS=v4`; no test needs them).
    #[allow(dead_code)]
    V4,
}

pub struct Box_ {
    pub signer: Signer,
    pub post: String,
    pub seq: u64,
    /// How its event ids look.
    pub ids: Ids,
}

impl Box_ {
    pub fn new(post: &str) -> Box_ {
        Box_ {
            signer: Signer::ephemeral(post).unwrap(),
            post: post.into(),
            seq: 0,
            ids: Ids::Readable,
        }
    }

    pub fn public_hex(&self) -> String {
        to_hex(self.signer.verifying_key().as_bytes())
    }

    pub fn registry_entry(&self) -> Post {
        Post {
            id: self.post.clone(),
            name: format!("Post {}", self.post),
            public_key: self.public_hex(),
            lat: Some(43.0),
            lon: Some(77.0),
        }
    }

    /// The next event's signed bytes, with the next seq.
    pub fn event(&mut self, kind: &str, time_ms: i64, body: Value) -> Vec<u8> {
        self.seq += 1;
        self.sealed(kind, time_ms, body, self.seq)
    }

    pub fn sealed(&self, kind: &str, time_ms: i64, body: Value, seq: u64) -> Vec<u8> {
        let id = match self.ids {
            Ids::Readable => uuid_like(&self.post, seq, kind),
            Ids::V7 => appliance_like(&self.post, seq, kind, Some(time_ms)),
            Ids::V4 => appliance_like(&self.post, seq, kind, None),
        };
        let ev = Event {
            id,
            time: OffsetDateTime::from_unix_timestamp_nanos(time_ms as i128 * 1_000_000).unwrap(),
            kind: kind.into(),
            body,
        };
        self.signer.seal(&ev, seq)
    }

    pub fn topic(&self, kind: &str) -> String {
        format!("acsgd/v1/{}/{kind}", self.post)
    }
}

/// A stable id per (post, seq, kind), so a resend carries the same id as the appliance's does.
fn uuid_like(post: &str, seq: u64, kind: &str) -> String {
    format!("{post}-{kind}-{seq:08}")
}

/// A stable id shaped as the appliance's: UUIDv7 with the event's time first (`time_ms`), or
/// UUIDv4 (`None`); its other bits from (post, seq, kind).
fn appliance_like(post: &str, seq: u64, kind: &str, time_ms: Option<i64>) -> String {
    use std::hash::{Hash, Hasher};
    let mut bits = [0u8; 16];
    for (i, part) in bits.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (post, seq, kind, i).hash(&mut h);
        part.copy_from_slice(&h.finish().to_le_bytes());
    }
    let b = match time_ms {
        Some(ms) => {
            let rest: [u8; 10] = bits[..10].try_into().unwrap();
            uuid::Builder::from_unix_timestamp_millis(ms.max(0) as u64, &rest)
        }
        None => uuid::Builder::from_random_bytes(bits),
    };
    b.into_uuid().to_string()
}

/// A passage body as the appliance makes it (only what central reads is filled in).
pub fn passage(mrn: &str, channel: &str, time_ms: i64) -> Value {
    serde_json::json!({"id": format!("lane-1-{time_ms}"), "lane": "lane-1", "mrn": mrn,
        "channel": channel, "plates": [], "rules": [], "reasons": [], "readings": 4,
        "stopped": false, "duration_s": 5.0})
}

/// A blocking HTTP/1.1 call with a JSON body: (status, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    http_typed(port, method, path, token, "application/json", body)
}

/// A blocking HTTP/1.1 call with a body of `content_type`: (status, body).
pub fn http_typed(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// The built `acsgd-central` binary.
pub fn central_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_acsgd-central"))
}

pub const H: i64 = 3_600_000;

/// Publishes every message at QoS 1 as a post's uplink does, and waits (up to 60 s) for all
/// the broker's PUBACKs.
pub fn publish_all(port: u16, client_id: &str, msgs: &[(String, Vec<u8>)]) {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut conn) = Client::new(o, msgs.len() + 10);
    for (t, p) in msgs {
        client
            .publish(t.as_str(), QoS::AtLeastOnce, false, p.clone())
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut acked = 0;
    while acked < msgs.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "{acked} of {} PUBACKs in 60 s",
            msgs.len()
        );
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
            _ => {}
        }
    }
    let _ = client.disconnect();
}

/// Polls `f` every 100 ms until it gives `Some`, or panics naming `what` after `secs`.
pub fn wait<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- the service as a process ----

pub const TOKEN: &str = "test-token-0123456789";

/// `central.toml` for a test: the database, the broker, the API with one operator (`aigerim`,
/// [`TOKEN`]), a scheduler that looks every second.
pub fn write_config(dir: &Path, db_url: &str, broker: u16, http_port: u16) -> std::path::PathBuf {
    let path = dir.join("central.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nurl = \"{db_url}\"\n[broker]\nhost = \"127.0.0.1\"\nport = {broker}\n\
             client_id = \"central-test\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [http.tokens]\naigerim = \"{TOKEN}\"\n[tracking]\nscan_every_s = 1\n"
        ),
    )
    .unwrap();
    path
}

pub fn cli(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(central_bin())
        .args(["post", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn start(config: &Path, log: &Path) -> Process {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Process::spawn(
        Command::new(central_bin())
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
    .unwrap()
}

pub fn api(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (status, text) = http(port, method, path, Some(TOKEN), body.as_deref());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn ready(port: u16) {
    wait(60, "central's API", || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
}

// ---- the appliance as a process ----

/// The `acsgd` binary the workspace built beside `acsgd-central`.
pub fn acsgd_bin() -> std::path::PathBuf {
    let bin = central_bin().with_file_name("acsgd");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (cargo build -p acsgd)",
        bin.display()
    );
    bin
}

/// `acsgd key --create --config CONFIG`: the post's public key, made if need be.
pub fn make_key(config: &Path) -> String {
    let out = Command::new(acsgd_bin())
        .args(["key", "--create", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("key  ").map(str::to_string))
        .expect("a key line")
}

/// An appliance's config in `dir/{post}.toml`, its data in `dir/{post}`, publishing to the
/// broker on `broker` (`uplink` and `storage`: more lines for those tables); the config and
/// its ingest port.
pub fn appliance_config(
    dir: &Path,
    post: &str,
    broker: u16,
    uplink: &str,
    storage: &str,
) -> (std::path::PathBuf, u16) {
    let data = dir.join(post);
    std::fs::create_dir_all(&data).unwrap();
    let ingest = free_port();
    let config = dir.join(format!("{post}.toml"));
    std::fs::write(
        &config,
        format!(
            "post = \"{post}\"\n[[lanes]]\nid = \"1\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:{broker}\"\n\
             backoff_initial_ms = 100\nbackoff_max_s = 1\n{uplink}\n[storage]\ndata_dir = \"{}\"\n{storage}\n\
             [ingest]\nlisten = \"127.0.0.1:{ingest}\"\n",
            data.display()
        ),
    )
    .unwrap();
    (config, ingest)
}

/// Runs the appliance of `config` (its log in `dir/{post}.log`) until its ingest port answers.
pub fn run_appliance(dir: &Path, post: &str, config: &Path, ingest: u16) -> Process {
    let log = std::fs::File::create(dir.join(format!("{post}.log"))).unwrap();
    let p = Process::spawn(
        Command::new(acsgd_bin())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
    .unwrap();
    wait(60, &format!("{post}'s ingest port"), || {
        std::net::TcpStream::connect(("127.0.0.1", ingest))
            .ok()
            .map(|_| ())
    });
    p
}

/// Sends `n` alerts through an appliance's ingest port; their seqs (each accepted: on its disk).
pub fn alerts(ingest: u16, n: usize) -> Vec<u64> {
    let w = TcpStream::connect(("127.0.0.1", ingest)).unwrap();
    w.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = BufReader::new(w.try_clone().unwrap());
    let mut w = w;
    let body = json!({"severity": "low", "rule": "plate_unread", "channel": "green", "lane": "1",
        "message": {"key": "alert.plate_unread", "params": {}}});
    for _ in 0..n {
        writeln!(w, "{}", json!({"type": "alert", "body": body})).unwrap();
    }
    (0..n)
        .map(|_| {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["ok"], true, "{line}");
            v["seq"].as_u64().unwrap()
        })
        .collect()
}

/// `acsgd outbox --data-dir DIR stat --json`: (last seq, events the broker has not yet
/// acknowledged); (-1, -1) while the status cannot be read.
pub fn outbox_stat(data_dir: &Path) -> (i64, i64) {
    let out = Command::new(acsgd_bin())
        .args(["outbox", "--data-dir"])
        .arg(data_dir)
        .args(["stat", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (
        v["outbox"]["last_seq"].as_i64().unwrap_or(-1),
        v["outbox"]["backlog_events"].as_i64().unwrap_or(-1),
    )
}
