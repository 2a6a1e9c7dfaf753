//! `[uplink]`: the MQTT link to central, as the technician writes it in the configuration, and
//! its checks. The appliance's `config` composes it; keys in errors are relative to the table
//! (`window`), and the configuration puts them under `uplink`.

use std::fmt;

use acsgd_fusion::settings::Invalid;
use serde::Deserialize;

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MqttVersion {
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

/// The MQTT link to central.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    /// Broker address: `mqtt://HOST:PORT` or `mqtts://HOST:PORT` (TLS).
    pub broker: String,
    /// `"3.1.1"` (default) or `"5"`.
    #[serde(default = "default_mqtt_version")]
    pub protocol: MqttVersion,
    /// MQTT client id (default `acsgd-{post}`).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Keep-alive in seconds: a dead satellite link is noticed after about 1.5 × this.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Events published and not yet acknowledged, at most.
    #[serde(default = "default_window")]
    pub window: u16,
    /// First wait before reconnecting, doubled after each failure…
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// …up to this.
    #[serde(default = "default_backoff_max_s")]
    pub backoff_max_s: u64,
    /// TLS settings; required for `mqtts://` unless the system roots are to be trusted.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Messages from central larger than this (KiB) are refused with a `health` event and
    /// acknowledged, so the broker does not send them again.
    #[serde(default = "default_max_inbound_kb")]
    pub max_inbound_kb: u64,
    /// The largest MQTT packet (KiB) read from the broker. Set it to at least what the broker
    /// allows (mosquitto's `message_size_limit`; MQTT's own maximum, 256 MiB, by default):
    /// a packet over it breaks the connection, and the broker would send it again on the next.
    #[serde(default = "default_max_packet_kb")]
    pub max_packet_kb: u64,
}

fn default_max_inbound_kb() -> u64 {
    16 * 1024
}
fn default_max_packet_kb() -> u64 {
    256 * 1024
}

fn default_mqtt_version() -> MqttVersion {
    MqttVersion::V311
}
fn default_keep_alive_s() -> u64 {
    30
}
fn default_window() -> u16 {
    256
}
fn default_backoff_initial_ms() -> u64 {
    500
}
fn default_backoff_max_s() -> u64 {
    60
}

/// TLS for the uplink (PEM files), as central's `[broker.tls]` names them.
pub use acsgd_tomlfile::TlsFiles as Tls;

/// A parsed broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerAddr {
    /// Parses `mqtt://HOST:PORT` or `mqtts://HOST:PORT` (port defaults to 1883 / 8883).
    pub fn parse(s: &str) -> Result<BrokerAddr, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(format!(
                "expected mqtt://HOST:PORT or mqtts://HOST:PORT, got {s:?}"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("port {p:?} is not a number between 1 and 65535"))?;
                (h, port)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(format!("no host in {s:?}"));
        }
        Ok(BrokerAddr {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl Uplink {
    /// Checks what serde cannot: ranges, the broker address, the TLS files.
    pub fn validate(&self) -> Result<(), Invalid> {
        let u = self;
        let broker =
            BrokerAddr::parse(&u.broker).map_err(|e| Invalid::new("broker".to_string(), e))?;
        if u.window == 0 || u.window > 10_000 {
            return Err(Invalid::new(
                "window".into(),
                format!("must be between 1 and 10000, got {}", u.window),
            ));
        }
        if !(5..=3600).contains(&u.keep_alive_s) {
            return Err(Invalid::new(
                "keep_alive_s".into(),
                format!("must be between 5 and 3600, got {}", u.keep_alive_s),
            ));
        }
        if u.backoff_initial_ms == 0 || u.backoff_initial_ms > u.backoff_max_s.saturating_mul(1000)
        {
            return Err(Invalid::new(
                "backoff_initial_ms".into(),
                format!(
                    "must be at least 1 and at most backoff_max_s ({} s), got {}",
                    u.backoff_max_s, u.backoff_initial_ms
                ),
            ));
        }
        if u.password.is_some() && u.username.is_none() {
            return Err(Invalid::new(
                "password".into(),
                "a password needs a username".into(),
            ));
        }
        if let Some(tls) = &u.tls {
            if !broker.tls {
                return Err(Invalid::new(
                    "tls".into(),
                    "TLS settings given but the broker is mqtt://; use mqtts://".into(),
                ));
            }
            tls.check()
                .map_err(|(key, problem)| Invalid::new(format!("tls.{key}"), problem))?;
        }
        if u.max_inbound_kb == 0 || u.max_inbound_kb > u.max_packet_kb {
            return Err(Invalid::new(
                "max_inbound_kb".into(),
                format!(
                    "must be between 1 and uplink.max_packet_kb ({}), got {}",
                    u.max_packet_kb, u.max_inbound_kb
                ),
            ));
        }
        if u.max_packet_kb > 256 * 1024 {
            return Err(Invalid::new(
                "max_packet_kb".into(),
                format!(
                    "must be at most 262144 (MQTT's limit), got {}",
                    u.max_packet_kb
                ),
            ));
        }
        Ok(())
    }

    /// The broker address (call after [`Uplink::validate`]).
    pub fn broker_addr(&self) -> Result<BrokerAddr, String> {
        BrokerAddr::parse(&self.broker)
    }

    /// The MQTT client id: the configured one, or `acsgd-{post}`.
    pub fn client_id(&self, post: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("acsgd-{post}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_parse() {
        assert_eq!(
            BrokerAddr::parse("mqtts://central.customs.kz").unwrap(),
            BrokerAddr {
                host: "central.customs.kz".into(),
                port: 8883,
                tls: true
            }
        );
        assert_eq!(BrokerAddr::parse("mqtt://[::1]:1884").unwrap().host, "::1");
        assert_eq!(
            BrokerAddr::parse("mqtt://10.0.0.1:1884").unwrap().port,
            1884
        );
        assert!(BrokerAddr::parse("mqtt://:1").is_err());
    }
}
