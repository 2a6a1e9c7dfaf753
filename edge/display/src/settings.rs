//! `[display]`: the officer display as the technician writes it in the configuration, its
//! accounts and their roles, and the display's languages. The accounts file (`[[accounts]]`,
//! written by `acsgd account`) is read by the appliance's configuration into [`Account`]s.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The officer display (absent: not served).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Display {
    /// Address the display is served on (the box's own screen: loopback; the post's LAN:
    /// that interface's address).
    #[serde(default = "default_display_bind")]
    pub bind: SocketAddr,
    /// A TOML file of `[[accounts]]` (what `acsgd account add` writes); relative paths are
    /// taken from the config file's directory. Read at start.
    #[serde(default)]
    pub accounts_file: Option<PathBuf>,
    /// Accounts given here, besides the file's.
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// A session unused this long ends.
    #[serde(default = "default_idle_min")]
    pub session_idle_min: u32,
    /// A session ends this long after sign-in, used or not.
    #[serde(default = "default_max_h")]
    pub session_max_h: u32,
    /// Language for accounts that name none: `kk`, `ru`, `en` or `zh`.
    #[serde(default = "default_lang")]
    pub lang: String,
    /// Connections open at once at most (browsers, API clients); more wait in the kernel's
    /// queue. Keep it well below the service's file limit (`LimitNOFILE` in the unit).
    #[serde(default = "default_display_connections")]
    pub max_connections: usize,
    /// A connection the display has written nothing to for this long is closed (a live
    /// stream writes every second; a request trickled byte by byte gets no answer and is).
    #[serde(default = "default_display_idle_s")]
    pub idle_timeout_s: u64,
}

fn default_display_connections() -> usize {
    512
}

fn default_display_idle_s() -> u64 {
    60
}

impl Default for Display {
    fn default() -> Self {
        Display {
            bind: default_display_bind(),
            accounts_file: None,
            accounts: Vec::new(),
            session_idle_min: default_idle_min(),
            session_max_h: default_max_h(),
            lang: default_lang(),
            max_connections: default_display_connections(),
            idle_timeout_s: default_display_idle_s(),
        }
    }
}

fn default_display_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_idle_min() -> u32 {
    30
}
fn default_max_h() -> u32 {
    12
}
fn default_lang() -> String {
    DEFAULT_LANG.into()
}

/// The display's language where neither the account nor `display.lang` names one.
pub const DEFAULT_LANG: &str = "ru";

/// The display's languages.
pub const LANGS: &[&str] = &["kk", "ru", "en", "zh"];

/// Who may do what on the display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees the lanes and acknowledges alerts.
    Officer,
    /// An officer who may also override a passage's verdict.
    Supervisor,
    /// Health and configuration pages; no passage data.
    Technician,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Supervisor => "supervisor",
            Role::Technician => "technician",
        }
    }
}

/// A display account.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Sign-in name: 1-32 lowercase letters, digits, `.`, `_`, `-`; goes into audit events.
    pub user: String,
    /// Full name shown on the screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub role: Role,
    /// Argon2 PHC string (`$argon2id$…`), as `acsgd account add` writes it.
    pub password_hash: String,
    /// `kk`, `ru`, `en` or `zh` (default: `display.lang`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

/// A valid account user name.
pub fn valid_user(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Checks one account; the key is relative to the account.
pub fn check_account(a: &Account, default_lang: &str) -> Result<(), (&'static str, String)> {
    if !valid_user(&a.user) {
        return Err((
            "user",
            format!(
                "{:?} is not a user name: use 1-32 lowercase letters, digits, '.', '_', '-'",
                a.user
            ),
        ));
    }
    if argon2::PasswordHash::new(&a.password_hash).is_err()
        || !a.password_hash.starts_with("$argon2")
    {
        return Err((
            "password_hash",
            "is not an argon2 hash (make one with `acsgd account add`)".into(),
        ));
    }
    let lang = a.lang.as_deref().unwrap_or(default_lang);
    if !LANGS.contains(&lang) {
        return Err(("lang", format!("{lang:?} is not one of kk, ru, en, zh")));
    }
    Ok(())
}
