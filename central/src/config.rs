//! `central.toml`: where the database, the broker and the HTTP API are, the operators' API
//! tokens, and the tracking limits. A bad file is one line naming the file, the line and the key.
//!
//! ```toml
//! [store]
//! url = "sqlite:/var/lib/acsgd-central/central.db"   # or postgres://user:pw@host/db
//! writers = 2              # batches committed at once (PostgreSQL; default 2 there, SQLite 1)
//! keep_positions_days = 30 # position events, and the fixes of transits off the road, are
//!                          # forgotten after this (crate::retention; 0: kept for good)
//!
//! [broker]
//! host = "127.0.0.1"
//! port = 1883
//! client_id = "acsgd-central"
//! username = "central"     # optional, with password: central's account at the broker
//! password = "…"
//! share = "1/2"           # optional: this worker takes the first of two shares of the posts
//! # posts = ["korgas", "kordai"]  # or: exactly these posts, one filter each (default: all)
//! [broker.tls]             # optional: MQTT over TLS
//! ca_file = "/etc/acsgd-central/broker-ca.pem"
//! client_cert_file = "/etc/acsgd-central/central.pem"  # where the broker maps certificates
//! client_key_file = "/etc/acsgd-central/central.key"   # to accounts (NATS verify_and_map)
//!
//! [http]
//! listen = "127.0.0.1:8090"
//! [http.tokens]            # operator name = bearer token for the API (at least 16 characters)
//! aigerim = "…"
//!
//! [[accounts]]           # who signs in to the board: viewer or operator
//! user = "aigerim"
//! name = "Aigerim Nurlanovna"
//! role = "operator"
//! lang = "kk"              # kk, ru, en, zh
//! password = "$argon2id$…" # acsgd-central hash-password
//!
//! [tracking]
//! max_clock_skew_s = 300   # an event further ahead of central's clock is quarantined
//! scan_every_s = 30        # how often overdue legs and seq gaps are looked for
//! gap_grace_s = 600        # a seq gap older than this is an alert and a resend request
//!
//! [notify]                 # see crate::notify
//! max_attempts = 8         # then a dead letter and an operator alert
//! alert_after = 3          # failures in a row to one address before operators are alerted
//! rate_per_hour = 30       # per subscription, unless it says; more wait, none is dropped
//! [notify.email]
//! host = "mail.customs.example"
//! port = 587
//! tls = "starttls"         # none, starttls or tls
//! from = "ACSGD central <acsgd@customs.example>"
//! user = "acsgd"           # optional, with password
//! password = "…"
//! [positions]              # see crate::positions
//! egts_listen = "0.0.0.0:20629"  # the seal operator's EGTS feed (none: no feed)
//! deviation_fixes = 3      # fixes in a row off the corridor that are a deviation
//! deviation_s = 120        # or this long off it
//! stop_max_s = 14400       # standing still longer is `stopped`
//! silent_after_s = 3600    # no fix for longer is `tracker_silent`
//!
//! [notify.bot]             # a bot API in Telegram's shape
//! base_url = "https://api.telegram.org"
//! token = "123456:ABC…"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

pub use acsgd_tomlfile::{ConfigError, KeyPath};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub store: StoreConfig,
    pub broker: BrokerConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub tracking: TrackingConfig,
    /// Operators who sign in to the board.
    #[serde(default)]
    pub accounts: Vec<crate::auth::Account>,
    #[serde(default)]
    pub notify: crate::notify::NotifyConfig,
    #[serde(default)]
    pub positions: crate::positions::PositionsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub url: String,
    /// How many ingest batches commit at once, each on its own connection and for its part
    /// of the posts ([`writer_of`]). Default: 1 on SQLite, which has one writer at a time
    /// (a second would wait for the first's lock, and hold one of its few connections); 2
    /// on PostgreSQL, where a batch's commit is a chain of statements in which central and
    /// the server wait for each other: a second chain uses the core the first leaves idle
    /// (README, Performance).
    #[serde(default)]
    pub writers: Option<u32>,
    /// Days the posts' position events, and the fixes of a transit off the road, are kept
    /// ([`crate::retention`]); 0 keeps them for good.
    #[serde(default = "default_keep_positions")]
    pub keep_positions_days: u32,
}

/// The longest `keep_positions_days` taken: a hundred years, far past any use, and small
/// enough that its milliseconds cannot overflow.
pub const MAX_KEEP_DAYS: u32 = 36_500;

fn default_keep_positions() -> u32 {
    30
}

pub use crate::store::MAX_WRITERS;

impl StoreConfig {
    pub fn writers(&self) -> u32 {
        self.writers.unwrap_or(if self.url.starts_with("sqlite:") {
            1
        } else {
            2
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Central's own account at the broker (a NATS cluster gives each post and central one).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The posts this worker takes (`acsgd/v1/{post}/+` each); none: every post
    /// (`acsgd/v1/+/+`), or its [`Share`]. Central scales by giving each worker its share of
    /// the posts, each worker its own `client_id`; a standby takes a worker's place with the
    /// same id. On NATS each filter is a JetStream consumer that every acknowledgement is
    /// matched against: a list of many posts is dear for the brokers (README, Load test).
    #[serde(default)]
    pub posts: Option<Vec<String>>,
    /// `"K/N"`: this worker takes the posts of share K of N ([`Share::takes`]) through the
    /// one wildcard subscription and acknowledges the others' messages unread.
    #[serde(default)]
    pub share: Option<Share>,
    /// TLS to the broker (`[broker.tls]`, the keys of the appliance's `[uplink.tls]`): the CA
    /// that signs the broker's certificate, and central's own certificate where the broker
    /// maps clients to accounts by certificate (NATS `verify_and_map`). None: plain MQTT.
    #[serde(default)]
    pub tls: Option<acsgd_tomlfile::TlsFiles>,
}

/// One of N workers' share of the posts, by a hash of the post id: each post falls in exactly
/// one share whatever the posts are, so a post added at central needs no worker's
/// configuration changed, and no post is left without a worker.
///
/// Why a hash and a wildcard rather than a list of filters: on a NATS cluster every MQTT
/// filter is a JetStream consumer, and each acknowledgement is matched against every
/// consumer's filter; 200 posts as 200 filters cost the brokers twenty times what one
/// wildcard does (README, Load test). With shares each worker has one consumer, and each
/// message is delivered N times, once to each worker, which acknowledges the N − 1 that are
/// not its own at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Share {
    /// 1 ..= of.
    pub k: u32,
    pub of: u32,
}

/// Workers a share may be split over at most (each delivers every message once more).
pub const MAX_SHARES: u32 = 64;

impl Share {
    /// The share (1-based, of `of`) a post falls in: FNV-1a (32 bits) of the post id's bytes,
    /// modulo `of`, plus one. Fixed: changing it moves posts between workers.
    pub fn of_post(post: &str, of: u32) -> u32 {
        post_hash(post) % of.max(1) + 1
    }

    /// Whether this worker takes a message on `topic` (`acsgd/v1/{post}/…`, the post as it
    /// stands, valid or not, so that exactly one worker quarantines a bad one). A topic with
    /// no post level goes to share 1.
    pub fn takes(&self, topic: &str) -> bool {
        match topic_post(topic) {
            Some(p) => Share::of_post(p, self.of) == self.k,
            None => self.k == 1,
        }
    }
}

/// FNV-1a (32 bits) of a post id's bytes.
fn post_hash(post: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in post.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The post level of `acsgd/v1/{post}/…`, as it stands.
fn topic_post(topic: &str) -> Option<&str> {
    topic
        .strip_prefix("acsgd/v1/")
        .and_then(|rest| rest.split('/').next())
}

/// Which of a process's `writers` (0-based) takes a message on `topic`, within the process's
/// `share` of the posts: every message of a post goes to one writer, so that a post's events
/// are applied in the order they came and its seq progress has one writer. The hash's
/// quotient by the share count, not the hash again, so that a share's posts spread over its
/// writers (the posts of share K of N all have the same remainder). A topic with no post
/// level goes to the first.
pub fn writer_of(topic: &str, share: Option<Share>, writers: u32) -> usize {
    match topic_post(topic) {
        Some(p) => {
            let of = share.map_or(1, |s| s.of);
            (post_hash(p) / of % writers.max(1)) as usize
        }
        None => 0,
    }
}

impl TryFrom<String> for Share {
    type Error = String;

    fn try_from(s: String) -> Result<Share, String> {
        let bad = || {
            format!("{s:?}: write K/N, this worker's share K of N (1 <= K <= N <= {MAX_SHARES})")
        };
        let (k, of) = s.split_once('/').ok_or_else(bad)?;
        let (k, of) = (
            k.trim().parse::<u32>().map_err(|_| bad())?,
            of.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if k == 0 || of == 0 || k > of || of > MAX_SHARES {
            return Err(bad());
        }
        Ok(Share { k, of })
    }
}

impl std::fmt::Display for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.of)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Operator name → bearer token.
    #[serde(default)]
    pub tokens: BTreeMap<String, String>,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            listen: default_listen(),
            tokens: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    #[serde(default = "default_skew")]
    pub max_clock_skew_s: u32,
    #[serde(default = "default_scan")]
    pub scan_every_s: u32,
    #[serde(default = "default_gap_grace")]
    pub gap_grace_s: u32,
}

impl Default for TrackingConfig {
    fn default() -> TrackingConfig {
        TrackingConfig {
            max_clock_skew_s: default_skew(),
            scan_every_s: default_scan(),
            gap_grace_s: default_gap_grace(),
        }
    }
}

fn default_port() -> u16 {
    1883
}
fn default_client_id() -> String {
    "acsgd-central".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}
fn default_skew() -> u32 {
    300
}
fn default_scan() -> u32 {
    30
}
fn default_gap_grace() -> u32 {
    600
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = acsgd_tomlfile::read(path)?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = acsgd_tomlfile::parse(path, text)?;
        config
            .validate()
            .map_err(|(key, problem)| acsgd_tomlfile::invalid(path, text, &key, problem))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let url = &self.store.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err((
                "store.url".into(),
                "must start with sqlite: or postgres://".into(),
            ));
        }
        match self.store.writers {
            Some(0) => return Err(("store.writers".into(), "at least 1".into())),
            Some(w) if w > MAX_WRITERS => {
                return Err(("store.writers".into(), format!("at most {MAX_WRITERS}")))
            }
            Some(w) if w > 1 && url.starts_with("sqlite:") => {
                return Err((
                    "store.writers".into(),
                    "SQLite has one writer at a time: leave it out or write 1".into(),
                ))
            }
            _ => {}
        }
        if self.store.keep_positions_days > MAX_KEEP_DAYS {
            return Err((
                "store.keep_positions_days".into(),
                format!("at most {MAX_KEEP_DAYS} (0 keeps them for good)"),
            ));
        }
        if self.broker.host.is_empty() {
            return Err(("broker.host".into(), "must not be empty".into()));
        }
        if self.broker.username.is_some() != self.broker.password.is_some() {
            return Err((
                "broker.username".into(),
                "username and password go together".into(),
            ));
        }
        if let Some(tls) = &self.broker.tls {
            tls.check()
                .map_err(|(key, problem)| (format!("broker.tls.{key}"), problem))?;
        }
        if self.broker.posts.is_some() && self.broker.share.is_some() {
            return Err((
                "broker.share".into(),
                "a worker takes a share or a list of posts, not both".into(),
            ));
        }
        if let Some(posts) = &self.broker.posts {
            if posts.is_empty() {
                return Err((
                    "broker.posts".into(),
                    "leave it out to take every post".into(),
                ));
            }
            if let Some(p) = posts
                .iter()
                .find(|p| !acsgd_contract::declaration::valid_post_id(p))
            {
                return Err((
                    "broker.posts".into(),
                    format!("{p:?} is not a post id ([a-z0-9-]+)"),
                ));
            }
        }
        for (name, token) in &self.http.tokens {
            if token.len() < 16 {
                return Err((
                    format!("http.tokens.{name}"),
                    "a token needs at least 16 characters".into(),
                ));
            }
        }
        for (i, a) in self.accounts.iter().enumerate() {
            let key = |k: &str| format!("accounts[{i}].{k}");
            if a.user.is_empty() || a.user.len() > 64 || a.user.contains(char::is_whitespace) {
                return Err((key("user"), "1-64 characters, no spaces".into()));
            }
            if self.accounts[..i].iter().any(|b| b.user == a.user) {
                return Err((key("user"), format!("{} is there twice", a.user)));
            }
            if !matches!(a.lang.as_str(), "kk" | "ru" | "en" | "zh") {
                return Err((key("lang"), "kk, ru, en or zh".into()));
            }
            if argon2::password_hash::PasswordHash::new(&a.password).is_err() {
                return Err((
                    key("password"),
                    "not a password hash: make one with `acsgd-central hash-password`".into(),
                ));
            }
        }
        if self.tracking.scan_every_s == 0 {
            return Err(("tracking.scan_every_s".into(), "must be at least 1".into()));
        }
        let n = &self.notify;
        let p = &self.positions;
        if p.deviation_fixes == 0 || p.silent_after_s == 0 || p.stop_max_s == 0 {
            return Err((
                "positions".into(),
                "deviation_fixes, stop_max_s and silent_after_s must be at least 1".into(),
            ));
        }
        if n.max_attempts == 0 {
            return Err(("notify.max_attempts".into(), "must be at least 1".into()));
        }
        if let Some(e) = &n.email {
            if !matches!(e.tls.as_str(), "none" | "starttls" | "tls") {
                return Err(("notify.email.tls".into(), "none, starttls or tls".into()));
            }
            if let Err(why) = e.from.parse::<lettre::message::Mailbox>() {
                return Err(("notify.email.from".into(), format!("not an address: {why}")));
            }
            if e.user.is_some() != e.password.is_some() {
                return Err((
                    "notify.email.user".into(),
                    "user and password go together".into(),
                ));
            }
        }
        if let Some(b) = &n.bot {
            let ok = reqwest::Url::parse(&b.base_url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err((
                    "notify.bot.base_url".into(),
                    "an http:// or https:// URL".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(Path::new("central.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("central.example.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.broker.port, 1883);
        assert_eq!(c.accounts[0].role, crate::auth::Role::Operator);
        assert!(c.http.tokens.contains_key("ncts-gateway"));
        assert_eq!(c.notify.email.as_ref().map(|e| e.port), Some(587));
        assert_eq!(c.notify.max_attempts, 8);
    }

    #[test]
    fn a_bad_file_names_file_line_and_key() {
        let ok = "[store]\nurl = \"sqlite:/tmp/c.db\"\n[broker]\nhost = \"127.0.0.1\"\n";
        let c = Config::parse(Path::new("central.toml"), ok).unwrap();
        assert_eq!(c.broker.port, 1883);
        assert_eq!(c.tracking.gap_grace_s, 600);

        assert_eq!(
            err("[store]\nurl = \"mysql://x\"\n[broker]\nhost = \"h\"\n"),
            "config central.toml:2: store.url: must start with sqlite: or postgres://"
        );
        assert_eq!(
            err("[store]\nurl = \"sqlite:x\"\n[broker]\nhost = \"h\"\nport = 70000\n"),
            "config central.toml:5: broker.port: invalid value: integer `70000`, expected u16"
        );
        assert_eq!(
            err("[store]\nurl = \"sqlite:x\"\n"),
            "config central.toml: broker: required key is missing"
        );
        assert_eq!(
            err("[store]\nurl = \"sqlite:x\"\n[broker]\nhost = \"h\"\n[http.tokens]\nsam = \"short\"\n"),
            "config central.toml:6: http.tokens.sam: a token needs at least 16 characters"
        );
        assert_eq!(
            err("[store]\nurl = \"sqlite:x\"\n[broker]\nhost = \"h\"\n[notify.email]\nhost = \"m\"\ntls = \"ssl\"\nfrom = \"a@b.c\"\n"),
            "config central.toml:7: notify.email.tls: none, starttls or tls"
        );
        assert_eq!(
            err("[store]\nurl = \"sqlite:x\"\n[broker]\nhost = \"h\"\n[notify.bot]\nbase_url = \"api.telegram.org\"\ntoken = \"t\"\n"),
            "config central.toml:6: notify.bot.base_url: an http:// or https:// URL"
        );
        assert!(
            err("[store]\nurl = \"sqlite:x\"\nsize = 3\n[broker]\nhost = \"h\"\n")
                .starts_with("config central.toml:3: store.size: unknown field `size`")
        );
    }

    #[test]
    fn a_share_is_read_and_checked() {
        let head = "[store]\nurl = \"sqlite:x\"\n[broker]\nhost = \"h\"\n";
        let c = Config::parse(
            Path::new("central.toml"),
            &format!("{head}share = \"2/3\"\n"),
        )
        .unwrap();
        assert_eq!(c.broker.share, Some(Share { k: 2, of: 3 }));
        for bad in ["0/2", "3/2", "1/0", "1/65", "two", "1/2/3", "-1/2"] {
            assert_eq!(
                err(&format!("{head}share = \"{bad}\"\n")),
                format!(
                    "config central.toml:5: broker.share: \"{bad}\": write K/N, this worker's \
                     share K of N (1 <= K <= N <= 64)"
                ),
            );
        }
        assert_eq!(
            err(&format!("{head}share = \"1/2\"\nposts = [\"korgas\"]\n")),
            "config central.toml:5: broker.share: a worker takes a share or a list of posts, not both"
        );
    }

    #[test]
    fn broker_tls_files_are_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let head = "[store]\nurl = \"sqlite:x\"\n[broker]\nhost = \"h\"\n[broker.tls]\n";
        let c = Config::parse(
            Path::new("central.toml"),
            &format!("{head}ca_file = \"{}\"\n", ca.display()),
        )
        .unwrap();
        assert_eq!(c.broker.tls.unwrap().ca_file, ca);
        let missing = dir.path().join("nope.pem");
        assert_eq!(
            err(&format!("{head}ca_file = \"{}\"\n", missing.display())),
            format!(
                "config central.toml:6: broker.tls.ca_file: {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        assert_eq!(
            err(&format!(
                "{head}ca_file = \"{}\"\nclient_cert_file = \"{}\"\n",
                ca.display(),
                ca.display()
            )),
            "config central.toml:7: broker.tls.client_cert_file: a client certificate needs client_key_file beside it"
        );
    }

    #[test]
    fn every_post_falls_in_exactly_one_share() {
        // FNV-1a of the id: fixed values, so that a change of the hash (which would move posts
        // between running workers) fails here.
        assert_eq!(
            Share::of_post("korgas", 1 << 31),
            0xc9e5_2db0 % (1 << 31) + 1
        );
        let posts: Vec<String> = (0..1000).map(|i| format!("post-{i}")).collect();
        for of in [1, 2, 3, 7, 64] {
            let shares: Vec<Share> = (1..=of).map(|k| Share { k, of }).collect();
            let mut counts = vec![0usize; of as usize];
            for p in &posts {
                for topic in [
                    format!("acsgd/v1/{p}/passage"),
                    format!("acsgd/v1/{p}/status"),
                ] {
                    let taken: Vec<u32> = shares
                        .iter()
                        .filter(|s| s.takes(&topic))
                        .map(|s| s.k)
                        .collect();
                    assert_eq!(taken.len(), 1, "{topic} of {of}: {taken:?}");
                    assert_eq!(taken[0], Share::of_post(p, of));
                }
                counts[Share::of_post(p, of) as usize - 1] += 1;
            }
            // Spread evenly enough that no worker gets twice its part.
            let fair = posts.len() / of as usize;
            assert!(
                counts.iter().all(|&c| c > fair / 2 && c < fair * 2),
                "{of}: {counts:?}"
            );
        }
        // A topic with no post level (it is quarantined) goes to share 1 only.
        let two = [Share { k: 1, of: 2 }, Share { k: 2, of: 2 }];
        assert_eq!(two.map(|s| s.takes("elsewhere")), [true, false]);
        // An invalid post id is taken by one worker, which quarantines it.
        assert_eq!(
            two.iter()
                .filter(|s| s.takes("acsgd/v1/Bad Post/x"))
                .count(),
            1
        );
    }

    #[test]
    fn a_shares_posts_spread_over_its_writers_and_a_post_has_one() {
        let posts: Vec<String> = (0..1000).map(|i| format!("post-{i}")).collect();
        for (share, writers) in [
            (None, 1),
            (None, 2),
            (None, 4),
            (Some(Share { k: 1, of: 2 }), 2),
            (Some(Share { k: 2, of: 3 }), 3),
        ] {
            let mut counts = vec![0usize; writers as usize];
            let mine: Vec<&String> = posts
                .iter()
                .filter(|p| share.is_none_or(|s| s.takes(&format!("acsgd/v1/{p}/passage"))))
                .collect();
            for p in &mine {
                let w = writer_of(&format!("acsgd/v1/{p}/passage"), share, writers);
                // A post's status and events go to the same writer.
                assert_eq!(
                    w,
                    writer_of(&format!("acsgd/v1/{p}/status"), share, writers)
                );
                counts[w] += 1;
            }
            // Within a share every writer gets its part: hashing again by the same modulus
            // would leave all of a share's posts to one writer where the counts divide.
            let fair = mine.len() / writers as usize;
            assert!(
                counts.iter().all(|&c| c > fair / 2 && c < fair * 2),
                "{share:?} over {writers}: {counts:?}"
            );
        }
        assert_eq!(writer_of("elsewhere", None, 3), 0);
    }

    /// `central.toml` of this `[store]` and a broker, parsed: its store, or the error line.
    fn store(lines: &str) -> Result<StoreConfig, String> {
        Config::parse(
            Path::new("central.toml"),
            &format!("[store]\n{lines}\n[broker]\nhost = \"h\"\n"),
        )
        .map(|c| c.store)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn writers_default_by_backend_and_are_checked() {
        let parse = |lines: &str| store(lines).map(|s| s.writers());
        assert_eq!(parse("url = \"sqlite:x\""), Ok(1));
        assert_eq!(parse("url = \"postgres://u@h/d\""), Ok(2));
        assert_eq!(parse("url = \"postgres://u@h/d\"\nwriters = 4"), Ok(4));
        assert_eq!(parse("url = \"sqlite:x\"\nwriters = 1"), Ok(1));
        assert_eq!(
            parse("url = \"sqlite:x\"\nwriters = 2"),
            Err("config central.toml:3: store.writers: SQLite has one writer at a time: leave it out or write 1".into())
        );
        assert_eq!(
            parse("url = \"postgres://u@h/d\"\nwriters = 0"),
            Err("config central.toml:3: store.writers: at least 1".into())
        );
        assert_eq!(
            parse("url = \"postgres://u@h/d\"\nwriters = 5"),
            Err("config central.toml:3: store.writers: at most 4".into())
        );
    }

    #[test]
    fn positions_are_kept_30_days_unless_said_and_the_days_are_checked() {
        let parse = |line: &str| {
            store(&format!("url = \"sqlite:x\"\n{line}")).map(|s| s.keep_positions_days)
        };
        assert_eq!(parse(""), Ok(30));
        assert_eq!(parse("keep_positions_days = 0"), Ok(0));
        assert_eq!(parse("keep_positions_days = 365"), Ok(365));
        assert_eq!(
            parse("keep_positions_days = 40000"),
            Err("config central.toml:3: store.keep_positions_days: at most 36500 (0 keeps them for good)".into())
        );
        assert!(parse("keep_positions_days = -1")
            .unwrap_err()
            .starts_with("config central.toml:3: store.keep_positions_days:"));
    }
}
