//! Who may use central: operators' accounts (`[[accounts]]` in `central.toml`, Argon2id
//! password hashes made by `acsgd-central hash-password`) signing in to the board, and the
//! API's bearer tokens (`[http.tokens]`, for systems).
//!
//! Roles: `viewer` sees everything; `operator` also submits declarations and acts on
//! transits (cancel, enquiry, close). A token acts as an operator. Sessions live in memory
//! (a restart signs everyone out) and end after `idle` without use or `max` after sign-in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Deserialize;
use tokio::sync::Semaphore;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
}

/// An operator's account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub user: String,
    pub name: String,
    pub role: Role,
    /// kk, ru, en or zh: the board's language after sign-in.
    #[serde(default = "default_lang")]
    pub lang: String,
    /// Argon2id PHC string.
    pub password: String,
}

fn default_lang() -> String {
    "ru".into()
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Who {
    pub user: String,
    pub name: String,
    pub role: Role,
    pub lang: String,
}

/// Hashes a password (Argon2id, the crate's default cost).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

struct Session {
    who: Who,
    started: Instant,
    used: Instant,
}

/// Accounts, tokens and open sessions.
pub struct Auth {
    accounts: HashMap<String, Account>,
    /// token → operator name
    tokens: HashMap<String, String>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Argon2 takes 19 MiB per check: two at a time bound what a burst of sign-ins costs.
    checks: Semaphore,
    idle: Duration,
    max: Duration,
}

/// Sessions kept at most; the oldest goes when a new one would pass it.
const MAX_SESSIONS: usize = 1000;

impl Auth {
    pub fn new(accounts: &[Account], tokens: &std::collections::BTreeMap<String, String>) -> Auth {
        Auth {
            accounts: accounts
                .iter()
                .map(|a| (a.user.clone(), a.clone()))
                .collect(),
            tokens: tokens.iter().map(|(n, t)| (t.clone(), n.clone())).collect(),
            sessions: Mutex::new(HashMap::new()),
            checks: Semaphore::new(2),
            idle: Duration::from_secs(8 * 3600),
            max: Duration::from_secs(24 * 3600),
        }
    }

    /// Checks a password; a new session token, or `None` (unknown user and wrong password
    /// alike).
    pub async fn sign_in(&self, user: &str, password: &str) -> Option<(String, Who)> {
        let account = self.accounts.get(user);
        // An unknown user costs the same check as a known one.
        let hash = account
            .map_or(DUMMY_HASH, |a| a.password.as_str())
            .to_string();
        let password = password.to_string();
        let ok = {
            let _permit = self.checks.acquire().await.ok()?;
            tokio::task::spawn_blocking(move || {
                PasswordHash::new(&hash).is_ok_and(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
            })
            .await
            .unwrap_or(false)
        };
        let account = account.filter(|_| ok)?;
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw).ok()?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let who = Who {
            user: account.user.clone(),
            name: account.name.clone(),
            role: account.role,
            lang: account.lang.clone(),
        };
        let now = Instant::now();
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|_, v| now - v.used < self.idle && now - v.started < self.max);
        if s.len() >= MAX_SESSIONS {
            if let Some(oldest) = s.iter().min_by_key(|(_, v)| v.used).map(|(k, _)| k.clone()) {
                s.remove(&oldest);
            }
        }
        s.insert(
            token.clone(),
            Session {
                who: who.clone(),
                started: now,
                used: now,
            },
        );
        Some((token, who))
    }

    pub fn sign_out(&self, token: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

    /// The session's account, if the session is open.
    pub fn session(&self, token: &str) -> Option<Who> {
        let now = Instant::now();
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let open = s
            .get(token)
            .is_some_and(|v| now - v.used < self.idle && now - v.started < self.max);
        if !open {
            s.remove(token);
            return None;
        }
        let v = s.get_mut(token)?;
        v.used = now;
        Some(v.who.clone())
    }

    /// A system's bearer token: it acts as an operator of that name.
    pub fn token(&self, token: &str) -> Option<Who> {
        self.tokens.get(token).map(|name| Who {
            user: name.clone(),
            name: name.clone(),
            role: Role::Operator,
            lang: "en".into(),
        })
    }
}

/// A valid Argon2id hash of a random password, checked for unknown users.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Cdj6pVbXNyIImrcqXQ0cO3ylVhqxJGmDQAXa0d9ic0I";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accounts_sign_in_with_their_password_only() {
        let hash = hash_password("correct horse").unwrap();
        let a = Account {
            user: "aigerim".into(),
            name: "Aigerim".into(),
            role: Role::Operator,
            lang: "kk".into(),
            password: hash,
        };
        let auth = Auth::new(&[a], &Default::default());
        assert!(auth.sign_in("aigerim", "wrong").await.is_none());
        assert!(auth.sign_in("nobody", "correct horse").await.is_none());
        let (token, who) = auth.sign_in("aigerim", "correct horse").await.unwrap();
        assert_eq!((who.role, who.lang.as_str()), (Role::Operator, "kk"));
        assert_eq!(auth.session(&token).unwrap().user, "aigerim");
        auth.sign_out(&token);
        assert!(auth.session(&token).is_none());
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
