//! The appliance's configuration: one TOML file.
//!
//! Every struct refuses unknown keys, every default lives in a named function, and every error
//! is one line that names the file, the key and the problem, e.g.
//! `config /etc/acsgd/acsgd.toml:14: uplink.window: must be between 1 and 10000, got 0`.
//! The doc comments here are the reference for the technician; `images/acsgd.example.toml` is
//! the annotated example, and a test parses it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fusion::settings::Invalid;

pub use acsgd_tomlfile::{ConfigError, KeyPath, MAX_CONFIG_BYTES};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identifier of the customs post: lowercase letters, digits and `-`, at most 32 characters
    /// (it is an MQTT topic level: `acsgd/v1/{post}/…`).
    pub post: String,
    /// The lanes of the post.
    #[serde(default)]
    pub lanes: Vec<Lane>,
    /// The sensors, each on a lane (or post-wide when `lane` is absent).
    #[serde(default)]
    pub sensors: Vec<Sensor>,
    /// The link to the central customs system.
    pub uplink: Uplink,
    /// Local storage: the outbox and caches.
    pub storage: Storage,
    /// The officer display (absent: not served).
    #[serde(default)]
    pub display: Option<Display>,
    /// Local JSON-lines event ingest for integrations (absent: disabled).
    #[serde(default)]
    pub ingest: Option<Ingest>,
    /// Prometheus metrics on the technician port (absent: not served).
    #[serde(default)]
    pub metrics: Option<crate::metrics::Metrics>,
    /// Passage assembly: time windows, the post's position.
    #[serde(default)]
    pub fusion: crate::fusion::settings::FusionSettings,
    /// Transit-control rule thresholds and the channel each rule raises.
    #[serde(default)]
    pub rules: crate::fusion::settings::RuleSettings,
    /// Plate recognition for cameras with a `url` transport.
    #[serde(default)]
    pub anpr: Anpr,
    /// What trackers' numbered inputs mean for their seal, by device model.
    #[serde(default)]
    pub seal_models: Vec<SealModel>,
}

pub use acsgd_anpr::settings::Anpr;
pub use acsgd_display::settings::{
    check_account, valid_user, Account, Display, Role, DEFAULT_LANG, LANGS,
};
pub use acsgd_fusion::seal_models::SealModel;
pub use acsgd_uplink::settings::{BrokerAddr, MqttVersion, Tls, Uplink};

/// A lane of the post.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lane {
    /// Short identifier, unique within the post (`1`, `2`, `truck-in`).
    pub id: String,
    /// Name shown to officers.
    #[serde(default)]
    pub name: Option<String>,
    /// Direction of traffic.
    #[serde(default = "default_direction")]
    pub direction: Direction,
    /// The barrier (and lights) at the lane's end, driven through its lane node.
    #[serde(default)]
    pub barrier: Option<LaneBarrier>,
}

/// `[lanes.barrier]`: a barrier the appliance drives through the lane node. Officers open and
/// close it from the screen; the node refuses to lower it onto an occupied loop.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LaneBarrier {
    /// The lane node that drives it: a `lane` sensor of this lane on a serial line.
    pub node: String,
    /// Close it by itself once, after an opening, a vehicle has come onto this loop (the one
    /// under the arm) and left it; absent: only officers close it.
    #[serde(default)]
    pub close_after_loop: Option<u8>,
}

/// Direction of traffic on a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Entry,
    Exit,
}

fn default_direction() -> Direction {
    Direction::Entry
}

/// A sensor: what it speaks and how it is reached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensor {
    /// Identifier, unique within the post; trace files name sensors by it.
    pub id: String,
    /// The lane it belongs to (absent: post-wide, e.g. a tracker gateway).
    #[serde(default)]
    pub lane: Option<String>,
    /// The protocol it speaks.
    pub protocol: Protocol,
    /// How it is reached.
    pub transport: Transport,
    /// Where it sits along its lane, in metres from the lane's reference point (the entry
    /// loop); fusion shifts its readings by the travel time from there.
    #[serde(default)]
    pub position_m: f64,
    /// For cameras: which plate this one reads.
    #[serde(default)]
    pub view: Option<View>,
    /// For trackers: the `[[seal_models]]` entry that says what their inputs mean for the
    /// seal (a model's own `devices` list takes precedence).
    #[serde(default)]
    pub seal_model: Option<String>,
}

pub use acsgd_fusion::View;

/// Sensor protocols (decoders live in the `drivers` crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Nmea,
    Egts,
    Wialon,
    Teltonika,
    Galileosky,
    Arnavi,
    Rpm,
    Lane,
    Camera,
}

/// How a sensor is reached.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Transport {
    /// A serial port (RS-232/RS-485 adapter).
    Serial {
        path: PathBuf,
        #[serde(default = "default_baud")]
        baud: u32,
    },
    /// A TCP server the devices connect to.
    Tcp {
        listen: SocketAddr,
        /// Connections beyond this are closed at once (and counted).
        #[serde(default = "default_tracker_connections")]
        max_connections: usize,
        /// A connection silent this long is closed.
        #[serde(default = "default_idle_timeout_s")]
        idle_timeout_s: u64,
        /// Device ids (IMEI, EGTS terminal/object id, Wialon login) allowed; absent: any.
        #[serde(default)]
        allow: Option<Vec<String>>,
    },
    /// A UDP socket the devices send to.
    Udp {
        listen: SocketAddr,
        #[serde(default)]
        allow: Option<Vec<String>>,
    },
    /// A URL the appliance reads from (RTSP stream, HTTP snapshot).
    Url { url: String },
}

fn default_baud() -> u32 {
    9600
}

fn default_tracker_connections() -> usize {
    1024
}

fn default_idle_timeout_s() -> u64 {
    600
}

/// Local storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Directory for the outbox, the caches and the signing key.
    pub data_dir: PathBuf,
    /// Outbox quota in MiB of event records (see the outbox docs for what happens when full).
    #[serde(default = "default_quota_mb")]
    pub quota_mb: u64,
    /// At most this many events share one disk flush (group commit).
    #[serde(default = "default_commit_batch")]
    pub commit_batch: usize,
    /// Free space (MiB) on the data directory's file system kept for keep events (passages,
    /// alerts, acks, health): below it, bulk events (positions, telemetry) are refused.
    #[serde(default = "default_reserve_mb")]
    pub reserve_mb: u64,
    /// Hours a delivered event is kept (by event time) to answer central's resend requests
    /// (`acsgd/v1/{post}/in/replay`); 0 keeps none. At most `quota_mb` of them are kept.
    #[serde(default = "default_keep_delivered_h")]
    pub keep_delivered_h: u64,
}

fn default_reserve_mb() -> u64 {
    64
}

fn default_keep_delivered_h() -> u64 {
    72
}

fn default_quota_mb() -> u64 {
    1024
}
fn default_commit_batch() -> usize {
    4096
}

/// An accounts file: `[[accounts]]` tables.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsFile {
    #[serde(default)]
    pub accounts: Vec<Account>,
}

impl AccountsFile {
    /// Parses an accounts file; errors name the file, the line and the key.
    pub fn parse(path: &Path, text: &str, default_lang: &str) -> Result<AccountsFile, ConfigError> {
        let f: AccountsFile = acsgd_tomlfile::parse(path, text)?;
        for (i, a) in f.accounts.iter().enumerate() {
            check_account(a, default_lang).map_err(|(k, problem)| {
                acsgd_tomlfile::invalid(path, text, &format!("accounts[{i}].{k}"), problem)
            })?;
        }
        Ok(f)
    }

    /// Reads an accounts file; a missing file is an error (a typo must not lock officers out
    /// silently).
    pub fn load(path: &Path, default_lang: &str) -> Result<AccountsFile, ConfigError> {
        let text = acsgd_tomlfile::read(path)?;
        AccountsFile::parse(path, &text, default_lang)
    }
}

/// Local event ingest: JSON lines over TCP, each answered only once the event is on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ingest {
    /// Address to listen on; keep it on loopback or a management network.
    pub listen: SocketAddr,
    /// Connections served at once; more wait in the kernel's accept queue.
    #[serde(default = "default_ingest_connections")]
    pub max_connections: usize,
    /// Connections one address may hold at once; more are closed at once, so one client
    /// cannot take every slot.
    #[serde(default = "default_ingest_per_client")]
    pub max_per_client: usize,
    /// A connection that completes no request line for this long is closed (a line sent a
    /// byte at a time has this long to end).
    #[serde(default = "default_ingest_idle_s")]
    pub idle_timeout_s: u64,
    /// Who may write, and what. With clients configured, a connection first names itself
    /// with `{"auth":"<token>"}` and may then send only its own event types. Without, the
    /// port is open to whoever reaches it, which is allowed on loopback only.
    #[serde(default)]
    pub clients: Vec<IngestClient>,
}

/// One integration allowed on the ingest port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestClient {
    /// Shown in the log and in answers.
    pub name: String,
    /// Its secret: at least 24 characters (e.g. `openssl rand -hex 16`).
    pub token: String,
    /// The event types it may send (`alert`, `telemetry`, …; never `ack` or `override`).
    pub types: Vec<String>,
}

fn default_ingest_connections() -> usize {
    64
}

fn default_ingest_per_client() -> usize {
    8
}

fn default_ingest_idle_s() -> u64 {
    60
}

impl Protocol {
    /// What a sensor of this protocol is to fusion.
    pub fn role(self) -> acsgd_fusion::Role {
        use acsgd_fusion::Role;
        match self {
            Protocol::Lane => Role::LaneNode,
            Protocol::Rpm => Role::Portal,
            Protocol::Camera => Role::Camera,
            Protocol::Nmea
            | Protocol::Egts
            | Protocol::Wialon
            | Protocol::Teltonika
            | Protocol::Galileosky
            | Protocol::Arnavi => Role::Tracker,
        }
    }
}

impl Config {
    /// What lane fusion is told of this post.
    pub fn fusion_setup(&self) -> acsgd_fusion::Setup {
        acsgd_fusion::Setup {
            lanes: self
                .lanes
                .iter()
                .map(|l| acsgd_fusion::LaneSetup { id: l.id.clone() })
                .collect(),
            sensors: self
                .sensors
                .iter()
                .map(|s| acsgd_fusion::SensorSetup {
                    id: s.id.clone(),
                    lane: s.lane.clone(),
                    role: s.protocol.role(),
                    position_m: s.position_m,
                    view: s.view,
                    seal_model: s.seal_model.clone(),
                })
                .collect(),
            seal_models: self.seal_models.clone(),
            fusion: self.fusion.clone(),
            rules: self.rules.clone(),
        }
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = acsgd_tomlfile::read(path)?;
        Config::parse(path, &text)
    }

    /// Parses and validates configuration text; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |line, key: String, problem: String| ConfigError::Invalid {
            file: path.to_path_buf(),
            line,
            key: KeyPath(key),
            problem,
        };
        let mut config: Config = acsgd_tomlfile::parse(path, text)?;
        config.validate().map_err(|e| {
            invalid(
                acsgd_tomlfile::find_key_line(text, &e.key),
                e.key,
                e.problem,
            )
        })?;
        if let Some(d) = &mut config.display {
            if let Some(f) = &d.accounts_file {
                let f = path.parent().map_or_else(|| f.clone(), |dir| dir.join(f));
                let text_f = acsgd_tomlfile::read(&f).map_err(|e| {
                    let e = match e {
                        ConfigError::Read { source, .. } => source.to_string(),
                        e => e.to_string(),
                    };
                    invalid(
                        acsgd_tomlfile::find_key_line(text, "display.accounts_file"),
                        "display.accounts_file".into(),
                        format!("cannot read {}: {e}", f.display()),
                    )
                })?;
                let file = AccountsFile::parse(&f, &text_f, &d.lang)?;
                d.accounts.extend(file.accounts);
                d.accounts_file = Some(f);
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(a) = d.accounts.iter().find(|a| !seen.insert(a.user.as_str())) {
                return Err(invalid(
                    None,
                    "display.accounts".into(),
                    format!("user {:?} is defined twice", a.user),
                ));
            }
        }
        Ok(config)
    }

    /// Semantic checks serde cannot express. Returns the offending key and the problem.
    fn validate(&self) -> Result<(), Invalid> {
        if !valid_ident(&self.post) {
            return Err(Invalid::new(
                "post".into(),
                format!(
                    "{:?} is not a post id: use 1-32 lowercase letters, digits and '-'",
                    self.post
                ),
            ));
        }
        for (i, lane) in self.lanes.iter().enumerate() {
            if !valid_ident(&lane.id) {
                return Err(Invalid::new(
                    format!("lanes[{i}].id"),
                    format!("{:?}: use 1-32 lowercase letters, digits and '-'", lane.id),
                ));
            }
            if self.lanes[..i].iter().any(|l| l.id == lane.id) {
                return Err(Invalid::new(
                    format!("lanes[{i}].id"),
                    format!("duplicate lane {:?}", lane.id),
                ));
            }
            if let Some(b) = &lane.barrier {
                let key = |k: &str| format!("lanes[{i}].barrier.{k}");
                let Some(node) = self.sensors.iter().find(|s| s.id == b.node) else {
                    return Err(Invalid::new(
                        key("node"),
                        format!("no sensor {:?} is configured", b.node),
                    ));
                };
                if node.protocol != Protocol::Lane || node.lane.as_deref() != Some(&lane.id) {
                    return Err(Invalid::new(
                        key("node"),
                        format!(
                            "{:?} is not a lane node (protocol \"lane\") of lane {:?}",
                            b.node, lane.id
                        ),
                    ));
                }
                if !matches!(node.transport, Transport::Serial { .. }) {
                    return Err(Invalid::new(
                        key("node"),
                        format!("{:?} is not on a serial line: commands go down the lane node's RS-485 line", b.node),
                    ));
                }
                if self.lanes[..i]
                    .iter()
                    .any(|l| l.barrier.as_ref().is_some_and(|o| o.node == b.node))
                {
                    return Err(Invalid::new(
                        key("node"),
                        format!("{:?} already drives another lane's barrier", b.node),
                    ));
                }
                if b.close_after_loop == Some(0) {
                    return Err(Invalid::new(
                        key("close_after_loop"),
                        "loops are numbered from 1".into(),
                    ));
                }
            }
        }
        if self.storage.keep_delivered_h > 24 * 365 {
            return Err(Invalid::new(
                "storage.keep_delivered_h".into(),
                format!(
                    "{} hours is more than a year",
                    self.storage.keep_delivered_h
                ),
            ));
        }
        self.anpr.validate().map_err(|e| e.under("anpr"))?;
        for (i, s) in self.sensors.iter().enumerate() {
            if let Transport::Url { url } = &s.transport {
                if s.protocol != Protocol::Camera {
                    return Err(Invalid::new(
                        format!("sensors[{i}].transport"),
                        "only cameras are read from a url".into(),
                    ));
                }
                if url.trim().is_empty() {
                    return Err(Invalid::new(
                        format!("sensors[{i}].transport.url"),
                        "is empty".into(),
                    ));
                }
            }
            if !valid_ident(&s.id) {
                return Err(Invalid::new(
                    format!("sensors[{i}].id"),
                    format!("{:?}: use 1-32 lowercase letters, digits and '-'", s.id),
                ));
            }
            if self.sensors[..i].iter().any(|o| o.id == s.id) {
                return Err(Invalid::new(
                    format!("sensors[{i}].id"),
                    format!("duplicate sensor {:?}", s.id),
                ));
            }
            if let Some(lane) = &s.lane {
                if !self.lanes.iter().any(|l| &l.id == lane) {
                    return Err(Invalid::new(
                        format!("sensors[{i}].lane"),
                        format!("no lane {lane:?} is configured"),
                    ));
                }
            }
            if !(s.position_m.is_finite() && (-500.0..=500.0).contains(&s.position_m)) {
                return Err(Invalid::new(
                    format!("sensors[{i}].position_m"),
                    format!("must be between -500 and 500 metres, got {}", s.position_m),
                ));
            }
            if s.view.is_some() && s.protocol != Protocol::Camera {
                return Err(Invalid::new(
                    format!("sensors[{i}].view"),
                    "only cameras have a view".into(),
                ));
            }
            if let Some(name) = &s.seal_model {
                if !self.seal_models.iter().any(|m| &m.name == name) {
                    return Err(Invalid::new(
                        format!("sensors[{i}].seal_model"),
                        format!("no [[seal_models]] entry is named {name:?}"),
                    ));
                }
            }
            if let Transport::Serial { baud, .. } = s.transport {
                if !(300..=4_000_000).contains(&baud) {
                    return Err(Invalid::new(
                        format!("sensors[{i}].transport.baud"),
                        format!("{baud} is not a usable baud rate"),
                    ));
                }
            }
        }
        self.uplink.validate().map_err(|e| e.under("uplink"))?;
        if self.storage.quota_mb == 0 {
            return Err(Invalid::new(
                "storage.quota_mb".into(),
                "must be at least 1".into(),
            ));
        }
        if !(1..=100_000).contains(&self.storage.commit_batch) {
            return Err(Invalid::new(
                "storage.commit_batch".into(),
                format!(
                    "must be between 1 and 100000, got {}",
                    self.storage.commit_batch
                ),
            ));
        }
        if let Some(d) = &self.display {
            if !(8..=60_000).contains(&d.max_connections) {
                return Err(Invalid::new(
                    "display.max_connections".into(),
                    format!("must be between 8 and 60000, got {}", d.max_connections),
                ));
            }
            if !(2..=86_400).contains(&d.idle_timeout_s) {
                return Err(Invalid::new(
                    "display.idle_timeout_s".into(),
                    format!(
                        "must be between 2 and 86400 seconds, got {}",
                        d.idle_timeout_s
                    ),
                ));
            }
            if !LANGS.contains(&d.lang.as_str()) {
                return Err(Invalid::new(
                    "display.lang".into(),
                    format!("{:?} is not one of kk, ru, en, zh", d.lang),
                ));
            }
            if d.session_idle_min == 0 || d.session_max_h == 0 {
                let k = if d.session_idle_min == 0 {
                    "session_idle_min"
                } else {
                    "session_max_h"
                };
                return Err(Invalid::new(
                    format!("display.{k}"),
                    "must be at least 1".into(),
                ));
            }
            for (i, a) in d.accounts.iter().enumerate() {
                check_account(a, &d.lang)
                    .map_err(|(k, p)| Invalid::new(format!("display.accounts[{i}].{k}"), p))?;
            }
        }
        if let Some(ingest) = &self.ingest {
            if ingest.max_connections == 0 {
                return Err(Invalid::new(
                    "ingest.max_connections".into(),
                    "must be at least 1".into(),
                ));
            }
            if ingest.max_per_client == 0 {
                return Err(Invalid::new(
                    "ingest.max_per_client".into(),
                    "must be at least 1".into(),
                ));
            }
            if ingest.clients.is_empty() && !ingest.listen.ip().is_loopback() {
                return Err(Invalid::new(
                    "ingest.listen".into(),
                    format!(
                        "{} is reachable from the network: configure [[ingest.clients]] with tokens, or listen on loopback",
                        ingest.listen
                    ),
                ));
            }
            for (i, c) in ingest.clients.iter().enumerate() {
                let key = |k: &str| format!("ingest.clients[{i}].{k}");
                if c.name.trim().is_empty() {
                    return Err(Invalid::new(key("name"), "is empty".into()));
                }
                if c.token.chars().count() < 24 {
                    return Err(Invalid::new(
                        key("token"),
                        "must be at least 24 characters".into(),
                    ));
                }
                if ingest.clients[..i].iter().any(|o| o.token == c.token) {
                    return Err(Invalid::new(
                        key("token"),
                        "is the same as another client's".into(),
                    ));
                }
                if c.types.is_empty() {
                    return Err(Invalid::new(key("types"), "names no event type".into()));
                }
                for (j, t) in c.types.iter().enumerate() {
                    if !crate::envelope::valid_type(t)
                        || crate::ingest::AUDIT_TYPES.contains(&t.as_str())
                    {
                        return Err(Invalid::new(
                            format!("ingest.clients[{i}].types[{j}]"),
                            format!("{t:?} cannot come through ingest"),
                        ));
                    }
                }
            }
            if !(1..=86_400).contains(&ingest.idle_timeout_s) {
                return Err(Invalid::new(
                    "ingest.idle_timeout_s".into(),
                    "must be between 1 and 86400 seconds".into(),
                ));
            }
        }
        for (i, m) in self.seal_models.iter().enumerate() {
            if m.name.trim().is_empty() {
                return Err(Invalid::new(
                    format!("seal_models[{i}].name"),
                    "is empty".into(),
                ));
            }
            if self.seal_models[..i].iter().any(|o| o.name == m.name) {
                return Err(Invalid::new(
                    format!("seal_models[{i}].name"),
                    format!("duplicate model {:?}", m.name),
                ));
            }
            crate::fusion::seal_models::SealMap::parse(m)
                .map_err(|e| e.under(&format!("seal_models[{i}]")))?;
        }
        self.fusion.validate().map_err(|e| e.under("fusion"))?;
        self.rules.validate().map_err(|e| e.under("rules"))?;
        Ok(())
    }

    /// The broker address (validated at load).
    pub fn broker(&self) -> BrokerAddr {
        self.uplink.broker_addr().expect("validated at load")
    }

    /// The MQTT client id.
    pub fn client_id(&self) -> String {
        self.uplink.client_id(&self.post)
    }

    /// The configuration as the technician pages show it: no password hashes, no credentials in
    /// camera URLs.
    pub fn summary(&self) -> serde_json::Value {
        let sensors: Vec<serde_json::Value> = self
            .sensors
            .iter()
            .map(|s| {
                let transport = match &s.transport {
                    Transport::Serial { path, baud } => format!("serial {} {baud}", path.display()),
                    Transport::Tcp { listen, .. } => format!("tcp {listen}"),
                    Transport::Udp { listen, .. } => format!("udp {listen}"),
                    Transport::Url { url } => format!("url {}", without_credentials(url)),
                };
                serde_json::json!({"id": s.id, "lane": s.lane, "protocol": format!("{:?}", s.protocol).to_lowercase(), "transport": transport})
            })
            .collect();
        let d = self.display.as_ref();
        serde_json::json!({
            "post": self.post,
            "version": env!("CARGO_PKG_VERSION"),
            "lanes": self.lanes.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
            "sensors": sensors,
            "broker": without_credentials(&self.uplink.broker),
            "data_dir": self.storage.data_dir.display().to_string(),
            "quota_mb": self.storage.quota_mb,
            "display": d.map(|d| serde_json::json!({
                "bind": d.bind.to_string(),
                "accounts": d.accounts.iter().map(|a| serde_json::json!({"user": a.user, "role": a.role})).collect::<Vec<_>>(),
                "session_idle_min": d.session_idle_min,
                "session_max_h": d.session_max_h,
            })),
            "ingest": self.ingest.as_ref().map(|i| i.listen.to_string()),
            "metrics": self.metrics.as_ref().map(|m| m.listen.to_string()),
        })
    }

    /// The quota in bytes.
    pub fn quota_bytes(&self) -> u64 {
        self.storage.quota_mb.saturating_mul(1024 * 1024)
    }
}

/// Post, lane and sensor ids: `[a-z0-9][a-z0-9-]{0,31}`, safe as topic levels and file names.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, host) = rest.split_once('/').map_or((rest, ""), |(a, h)| (a, h));
            let auth = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
            if host.is_empty() && !rest.contains('/') {
                format!("{scheme}://{auth}")
            } else {
                format!("{scheme}://{auth}/{host}")
            }
        }
        None => url.to_string(),
    }
}

pub fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
post = "korgas"
[uplink]
broker = "mqtt://127.0.0.1:1883"
[storage]
data_dir = "/var/lib/acsgd"
"#;

    fn err(text: &str) -> String {
        Config::parse(Path::new("/etc/acsgd.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_refused_key_is_named_on_its_own_line_not_on_the_first_like_it() {
        let two = format!(
            "{MINIMAL}[[sensors]]\nid = \"gps-1\"\nprotocol = \"nmea\"\n\
             transport = {{ kind = \"udp\", listen = \"127.0.0.1:9000\" }}\n\
             [[sensors]]\nid = \"GPS 2\"\nprotocol = \"nmea\"\n\
             transport = {{ kind = \"udp\", listen = \"127.0.0.1:9001\" }}\n"
        );
        let e = err(&two);
        // MINIMAL is 6 lines after its leading newline; the second `id =` is line 12.
        assert!(
            e.starts_with("config /etc/acsgd.toml:12: sensors[1].id"),
            "{e}"
        );
        let line = two.lines().nth(11).unwrap();
        assert_eq!(line, "id = \"GPS 2\"");
        // Inside an inline table, and a key left to its default: the table's line.
        assert_eq!(
            acsgd_tomlfile::find_key_line(&two, "sensors[1].transport.listen"),
            Some(14)
        );
        assert_eq!(
            acsgd_tomlfile::find_key_line(&two, "sensors[0].lane"),
            Some(7)
        );
        assert_eq!(
            acsgd_tomlfile::find_key_line(&two, "storage.data_dir"),
            Some(6)
        );
        assert_eq!(acsgd_tomlfile::find_key_line(&two, "display.bind"), None);
        // The accounts file's checks after parsing: the second account's own line.
        let accounts = "[[accounts]]\nuser = \"a\"\nrole = \"officer\"\npassword_hash = \"x\"\n\
                        [[accounts]]\nuser = \"b\"\nrole = \"officer\"\npassword_hash = \"plain\"\n";
        let e = AccountsFile::parse(Path::new("a.toml"), accounts, "ru")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config a.toml:4: accounts[0].password_hash"),
            "{e}"
        );
        let accounts = accounts.replacen("password_hash = \"x\"", "password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY\"", 1);
        let e = AccountsFile::parse(Path::new("a.toml"), &accounts, "ru")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config a.toml:8: accounts[1].password_hash"),
            "{e}"
        );
    }

    #[test]
    fn minimal_config_takes_the_defaults() {
        let c = Config::parse(Path::new("x.toml"), MINIMAL).unwrap();
        assert_eq!(c.uplink.window, 256);
        assert_eq!(c.uplink.protocol, MqttVersion::V311);
        assert_eq!(c.client_id(), "acsgd-korgas");
        assert_eq!(c.quota_bytes(), 1024 * 1024 * 1024);
        assert!(c.display.is_none());
        assert!(c.ingest.is_none());
    }

    #[test]
    fn shipped_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/acsgd.example.toml");
        let c = Config::load(&path).unwrap();
        assert!(!c.lanes.is_empty());
        assert!(c.sensors.len() >= 4);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err(&MINIMAL.replace("[storage]", "[storage]\nqouta_mb = 3"));
        assert!(
            e.starts_with("config /etc/acsgd.toml:6: storage.qouta_mb: unknown field `qouta_mb`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn anpr_keys_are_read_and_a_wrong_one_is_named() {
        let c = Config::parse(
            Path::new("x.toml"),
            &format!("{MINIMAL}[anpr]\nspin = true\nthreads = 1\nlargest_look = false\n"),
        )
        .unwrap();
        assert!(c.anpr.spin);
        assert_eq!(c.anpr.threads, 1);
        assert!(!c.anpr.largest_look);
        let defaults = Config::parse(Path::new("x.toml"), MINIMAL).unwrap().anpr;
        assert!(!defaults.spin);
        assert!(defaults.largest_look);
        let e = err(&format!("{MINIMAL}[anpr]\nspin = \"yes\"\n"));
        assert!(e.contains("anpr.spin"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn wrong_type_names_the_nested_key() {
        let text = format!(
            "{MINIMAL}\n[[lanes]]\nid = \"1\"\n[[sensors]]\nid = \"wim\"\nlane = \"1\"\nprotocol = \"rpm\"\ntransport = {{ kind = \"serial\", path = \"/dev/ttyS0\", baud = \"fast\" }}\n"
        );
        let e = err(&text);
        assert!(e.contains("sensors[0].transport"), "{e}");
        assert!(e.contains("fast") || e.contains("u32"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn semantic_errors_name_their_key() {
        let cases = [
            (MINIMAL.replace("korgas", "Korgas/1"), "post: "),
            (MINIMAL.replace("mqtt://127.0.0.1:1883", "tcp://x"), "uplink.broker: expected mqtt://"),
            (MINIMAL.replace("mqtt://127.0.0.1:1883", "mqtt://h:99999"), "uplink.broker: port"),
            (MINIMAL.replace("[storage]", "[storage]\nquota_mb = 0"), "storage.quota_mb: must be at least 1"),
            (MINIMAL.replace("[storage]", "window = 0\n[storage]"), "uplink.window: must be between"),
            (format!("{MINIMAL}[[sensors]]\nid=\"a\"\nlane=\"9\"\nprotocol=\"nmea\"\ntransport={{kind=\"udp\",listen=\"127.0.0.1:1\"}}\n"), "sensors[0].lane: no lane \"9\""),
            (MINIMAL.replace("[storage]", "[uplink.tls]\nca_file = \"/etc/ca.pem\"\n[storage]"), "uplink.tls: TLS settings given but the broker is mqtt://"),
            (format!("{MINIMAL}[[seal_models]]\nname=\"fmb\"\ntamper=[\"io1 = 0\", \"io2 is open\"]\n"), "seal_models[0].tamper[1]: \"io2 is open\": expected"),
            (format!("{MINIMAL}[[sensors]]\nid=\"t\"\nprotocol=\"teltonika\"\nseal_model=\"fmb\"\ntransport={{kind=\"udp\",listen=\"127.0.0.1:1\"}}\n"), "sensors[0].seal_model: no [[seal_models]] entry is named \"fmb\""),
            (format!("{MINIMAL}[ingest]\nlisten = \"0.0.0.0:7070\"\n"), "ingest.listen: 0.0.0.0:7070 is reachable from the network"),
            (format!("{MINIMAL}[ingest]\nlisten = \"127.0.0.1:7070\"\n[[ingest.clients]]\nname = \"a\"\ntoken = \"short\"\ntypes = [\"alert\"]\n"), "ingest.clients[0].token: must be at least 24 characters"),
            (format!("{MINIMAL}[ingest]\nlisten = \"0.0.0.0:7070\"\n[[ingest.clients]]\nname = \"a\"\ntoken = \"0123456789abcdef01234567\"\ntypes = [\"override\"]\n"), "ingest.clients[0].types[0]: \"override\" cannot come through ingest"),
        ];
        let lane = |barrier: &str, protocol: &str, transport: &str| {
            format!("{MINIMAL}[[lanes]]\nid=\"1\"\nbarrier={{{barrier}}}\n[[sensors]]\nid=\"node-1\"\nlane=\"1\"\nprotocol=\"{protocol}\"\ntransport={{{transport}}}\n")
        };
        let serial = "kind=\"serial\",path=\"/dev/ttyS0\"";
        let barriers = [
            (
                lane("node=\"node-2\"", "lane", serial),
                "lanes[0].barrier.node: no sensor \"node-2\"",
            ),
            (
                lane("node=\"node-1\"", "rpm", serial),
                "lanes[0].barrier.node: \"node-1\" is not a lane node",
            ),
            (
                lane(
                    "node=\"node-1\"",
                    "lane",
                    "kind=\"tcp\",listen=\"127.0.0.1:1\"",
                ),
                "lanes[0].barrier.node: \"node-1\" is not on a serial line",
            ),
            (
                lane("node=\"node-1\",close_after_loop=0", "lane", serial),
                "lanes[0].barrier.close_after_loop: loops are numbered from 1",
            ),
        ];
        for (text, want) in cases.into_iter().chain(barriers) {
            let e = err(&text);
            assert!(e.contains(want), "want {want:?} in {e:?}");
            assert!(e.starts_with("config /etc/acsgd.toml"), "{e}");
        }
    }

    #[test]
    fn syntax_error_is_one_line_with_its_line_number() {
        let e = err("post = \"a\"\n[uplink\n");
        assert!(e.starts_with("config /etc/acsgd.toml:2: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let e = Config::load(Path::new("/nonexistent/acsgd.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config /nonexistent/acsgd.toml: cannot read:"),
            "{e}"
        );
    }

    #[test]
    fn a_fifo_or_an_oversized_file_is_refused_in_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("acsgd.toml");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = Config::load(&fifo).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("config {}: cannot read: not a regular file", fifo.display())
        );
        let big = tmp.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
        let e = Config::load(&big).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "config {}: cannot read: 1048577 bytes, more than the 1024 KiB a config may hold",
                big.display()
            )
        );
    }

    #[test]
    fn credentials_leave_urls() {
        assert_eq!(
            without_credentials("rtsp://admin:secret@10.0.0.5:554/s1"),
            "rtsp://10.0.0.5:554/s1"
        );
        assert_eq!(
            without_credentials("mqtt://u:p@central:1883"),
            "mqtt://central:1883"
        );
        assert_eq!(
            without_credentials("http://cam/snap.jpg"),
            "http://cam/snap.jpg"
        );
    }
}
