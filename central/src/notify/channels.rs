//! The ways a notification leaves central, one each: email over SMTP (`lettre`), a signed
//! webhook (HTTP POST of JSON with an HMAC-SHA256 signature and an idempotency key), and a
//! messenger bot API in Telegram's shape (`POST {base}/bot{token}/sendMessage`) at a
//! configured base URL. Each send either succeeds (the peer took it: SMTP accepted, HTTP 2xx,
//! the bot answered `"ok": true`) or fails with a reason worth retrying; the notifier decides
//! what happens next.

use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use acsgd_contract::envelope::to_hex;

/// `[notify.email]`: the SMTP server central submits to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `none` (a local relay), `starttls` or `tls`.
    #[serde(default = "default_tls")]
    pub tls: String,
    /// The sender, `Name <address>`.
    pub from: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_tls() -> String {
    "starttls".into()
}

/// `[notify.bot]`: the messenger's bot API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// Telegram's is `https://api.telegram.org`; a test points it at its own server.
    pub base_url: String,
    pub token: String,
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0} is not configured ([notify.{0}] in central.toml)")]
    NotConfigured(&'static str),
    #[error("email: {0}")]
    Email(String),
    #[error("{what}: {source}")]
    Http {
        what: &'static str,
        source: reqwest::Error,
    },
    #[error("{what} answered {status}: {body}")]
    Refused {
        what: &'static str,
        status: u16,
        body: String,
    },
}

/// One notification ready to go.
pub struct Outgoing<'a> {
    /// The dedupe key: the webhook's `Idempotency-Key`, the email's `Message-ID`.
    pub id: &'a str,
    pub address: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    /// The webhook's JSON document.
    pub document: &'a Value,
    /// The webhook's signing secret.
    pub secret: Option<&'a str>,
}

/// The channels, built once from the configuration.
pub struct Channels {
    email: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    bot: Option<BotConfig>,
    http: reqwest::Client,
}

impl Channels {
    pub fn new(email: Option<&EmailConfig>, bot: Option<&BotConfig>) -> Result<Channels, String> {
        // TLS for email and webhooks uses aws-lc-rs, as the rest of the workspace does (a
        // provider installed before is kept).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let email = match email {
            None => None,
            Some(c) => {
                let from: Mailbox = c
                    .from
                    .parse()
                    .map_err(|e| format!("notify.email.from {:?}: {e}", c.from))?;
                let builder = match c.tls.as_str() {
                    "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host),
                    "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host)
                        .map_err(|e| format!("notify.email.host {:?}: {e}", c.host))?,
                    "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host)
                        .map_err(|e| format!("notify.email.host {:?}: {e}", c.host))?,
                    other => {
                        return Err(format!(
                            "notify.email.tls: {other:?} is not none, starttls or tls"
                        ))
                    }
                };
                let mut builder = builder.port(c.port).timeout(Some(Duration::from_secs(20)));
                if let (Some(u), Some(p)) = (&c.user, &c.password) {
                    builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
                }
                Some((builder.build(), from))
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Channels {
            email,
            bot: bot.cloned(),
            http,
        })
    }

    pub fn has(&self, channel: &str) -> bool {
        match channel {
            "email" => self.email.is_some(),
            "bot" => self.bot.is_some(),
            "webhook" => true,
            _ => false,
        }
    }

    /// Sends one notification; `Ok` carries what the peer answered, for the record.
    pub async fn send(&self, channel: &str, n: &Outgoing<'_>) -> Result<String, SendError> {
        match channel {
            "email" => self.email(n).await,
            "webhook" => self.webhook(n).await,
            _ => self.bot(n).await,
        }
    }

    async fn email(&self, n: &Outgoing<'_>) -> Result<String, SendError> {
        let Some((transport, from)) = &self.email else {
            return Err(SendError::NotConfigured("email"));
        };
        let to: Mailbox = n
            .address
            .parse()
            .map_err(|e| SendError::Email(format!("{:?}: {e}", n.address)))?;
        let domain = from.email.domain().to_string();
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(n.subject)
            // The dedupe key: a resend after a crash carries the same Message-ID.
            .message_id(Some(format!("<{}@{domain}>", message_id_part(n.id))))
            .header(ContentType::TEXT_PLAIN)
            .body(n.body.to_string())
            .map_err(|e| SendError::Email(e.to_string()))?;
        let r = transport
            .send(message)
            .await
            .map_err(|e| SendError::Email(e.to_string()))?;
        Ok(r.message().collect::<Vec<_>>().join(" "))
    }

    async fn webhook(&self, n: &Outgoing<'_>) -> Result<String, SendError> {
        let body = n.document.to_string();
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
        let mut req = self
            .http
            .post(n.address)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", n.id)
            .header("X-Acsgd-Timestamp", &timestamp);
        if let Some(secret) = n.secret {
            req = req.header(
                "X-Acsgd-Signature",
                format!("sha256={}", signature(secret, &timestamp, &body)),
            );
        }
        let what = "webhook";
        let r = req
            .body(body)
            .send()
            .await
            .map_err(|source| SendError::Http { what, source })?;
        answer(what, r).await
    }

    async fn bot(&self, n: &Outgoing<'_>) -> Result<String, SendError> {
        let Some(bot) = &self.bot else {
            return Err(SendError::NotConfigured("bot"));
        };
        let what = "bot API";
        let url = format!(
            "{}/bot{}/sendMessage",
            bot.base_url.trim_end_matches('/'),
            bot.token
        );
        let text = format!("{}\n{}", n.subject, n.body);
        let r = self
            .http
            .post(url)
            .json(&serde_json::json!({"chat_id": n.address, "text": text}))
            .send()
            .await
            .map_err(|source| SendError::Http { what, source })?;
        let status = r.status().as_u16();
        let body = answer(what, r).await?;
        // Telegram's shape: 200 with {"ok": false, "description": …} is a refusal too.
        let ok = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("ok").and_then(Value::as_bool));
        if ok != Some(true) {
            return Err(SendError::Refused { what, status, body });
        }
        Ok(body)
    }
}

async fn answer(what: &'static str, r: reqwest::Response) -> Result<String, SendError> {
    let status = r.status().as_u16();
    let body = r
        .text()
        .await
        .map_err(|source| SendError::Http { what, source })?;
    let body: String = body.chars().take(500).collect();
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(SendError::Refused { what, status, body })
    }
}

/// The webhook's signature: HMAC-SHA256 over `{timestamp}.{body}` with the subscription's
/// secret, in hex (the receiver recomputes it and refuses a stale timestamp).
pub fn signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    to_hex(&mac.finalize().into_bytes())
}

/// The dedupe key as the left part of a Message-ID (no `@`, `<`, `>` or spaces).
fn message_id_part(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '.'
            }
        })
        .collect()
}
