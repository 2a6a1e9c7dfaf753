//! `central.toml`: where the database, the broker and the HTTP API are, the operators' API
//! tokens, and the tracking limits. A bad file is one line naming the file, the line and the key.
//!
//! ```toml
//! [store]
//! url = "sqlite:/var/lib/acsgd-central/central.db"   # or postgres://user:pw@host/db
//!
//! [broker]
//! host = "127.0.0.1"
//! port = 1883
//! client_id = "acsgd-central"
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
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("config {file}{}: {key}{problem}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        key: KeyPath,
        problem: String,
    },
}

/// A dotted key, displayed with a trailing `: ` when present.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyPath(pub String);

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "{}: ", self.0)
        }
    }
}

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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_client_id")]
    pub client_id: String,
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
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |line, key: String, problem: String| ConfigError::Invalid {
            file: path.to_path_buf(),
            line,
            key: KeyPath(key),
            problem,
        };
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut key = e.path().to_string();
            if key == "." {
                key.clear();
            }
            let inner = e.into_inner();
            let mut line = inner.span().map(|s| line_of(text, s.start));
            let mut msg = inner
                .message()
                .lines()
                .next()
                .unwrap_or("invalid")
                .to_string();
            if let Some(field) = msg
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                key = if key.is_empty() {
                    field.to_string()
                } else {
                    format!("{key}.{field}")
                };
                msg = "required key is missing".into();
                line = None;
            }
            invalid(line, key, msg)
        })?;
        if let Err((key, problem)) = config.validate() {
            return Err(invalid(find_line(text, &key), key, problem));
        }
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
        if self.broker.host.is_empty() {
            return Err(("broker.host".into(), "must not be empty".into()));
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
        Ok(())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line that sets `table.key` or `array[i].key` (the key's last segment inside its table,
/// or inside the i-th `[[array]]`), if the file has it.
fn find_line(text: &str, key: &str) -> Option<usize> {
    let (table, last) = key.rsplit_once('.')?;
    let (name, index) = match table.split_once('[') {
        Some((n, i)) => (n, i.strip_suffix(']')?.parse::<usize>().ok()),
        None => (table, None),
    };
    let mut seen = 0usize;
    let mut inside = false;
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(t) = l.strip_prefix("[[").and_then(|t| t.strip_suffix("]]")) {
            inside = index.is_some() && t.trim() == name && {
                seen += 1;
                Some(seen - 1) == index
            };
        } else if let Some(t) = l.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            inside = index.is_none() && t.trim() == name;
        } else if inside
            && l.split('=')
                .next()
                .is_some_and(|k| k.trim().trim_matches('"') == last)
        {
            return Some(n + 1);
        }
    }
    None
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
        assert!(
            err("[store]\nurl = \"sqlite:x\"\nsize = 3\n[broker]\nhost = \"h\"\n")
                .starts_with("config central.toml:3: store.size: unknown field `size`")
        );
    }
}
