//! Who is at the screen: accounts (argon2 password hashes), sign-in with a lockout after
//! repeated failures, and sessions kept in the store so that a restart of the appliance does
//! not sign every officer out.
//!
//! A session is a random 256-bit token in an `HttpOnly`, `SameSite=Strict` cookie; the store
//! keeps only its SHA-256, so a copy of the data directory cannot be used to sign in.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};

use crate::settings::{Account, Role};
use acsgd_outbox::KvTree;

/// Consecutive failures after which a user is locked out for [`LOCKOUT_MS`].
pub const MAX_FAILURES: u32 = 5;
pub const LOCKOUT_MS: i64 = 60_000;
/// Unknown user names whose failures are counted at most (so that probing a name costs the
/// same as probing an account); beyond it the stalest entry goes. Accounts are counted in a
/// table of their own that nothing evicts, so no flood of names can switch their lock-out off.
const MAX_UNKNOWN: usize = 10_000;
/// A session's last use is written back at most this often.
const TOUCH_MS: i64 = 30_000;

/// Hashes a password for an accounts file (Argon2id, the crate's default parameters).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Argon2 working memory kept between checks (19 MiB each at the default cost). Allocated
/// afresh per sign-in, every runtime thread's allocator kept one: 200 concurrent failed
/// sign-ins grew the service by 140 MiB that it never gave back. The display runs at most a
/// few checks at once, so at most [`KEPT_MEMORY`] buffers are kept.
static MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());
const KEPT_MEMORY: usize = 2;

/// Checks `password` against a PHC string, with reused working memory; the comparison of the
/// result takes the same time wherever it differs.
fn verify(hash: &str, password: &str) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm), Some(salt), Some(expected)) = (
        Params::try_from(&h),
        Algorithm::try_from(h.algorithm),
        h.salt,
        h.hash,
    ) else {
        return false;
    };
    let version = match h.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut memory = MEMORY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .unwrap_or_default();
    memory.resize(params.block_count(), Block::default());
    let mut out = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..])
        .is_ok();
    let mut kept = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    if kept.len() < KEPT_MEMORY {
        kept.push(memory);
    }
    drop(kept);
    let diff = out
        .iter()
        .zip(expected.as_bytes())
        .fold(0u8, |a, (x, y)| a | (x ^ y));
    hashed && diff == 0
}

/// A signed-in officer, as the handlers see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
    pub last_ms: i64,
}

impl Session {
    pub fn sees_passages(&self) -> bool {
        matches!(self.role, Role::Officer | Role::Supervisor)
    }
}

/// Why a sign-in failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    Wrong,
    /// Too many failures: try again after this many seconds.
    Locked(i64),
}

/// Accounts and sessions.
pub struct Auth {
    accounts: HashMap<String, Account>,
    sessions: KvTree,
    idle_ms: i64,
    max_ms: i64,
    /// Failures of real accounts: (count, locked until, last failure), bounded by the accounts.
    failures: Mutex<HashMap<String, (u32, i64)>>,
    /// Failures of unknown names, bounded by [`MAX_UNKNOWN`]: (count, locked until, last).
    unknown: Mutex<HashMap<String, (u32, i64, i64)>>,
    /// Checked for unknown users, so that their answer takes as long as a known user's.
    decoy: String,
}

impl Auth {
    pub fn new(accounts: &[Account], sessions: KvTree, idle_min: u32, max_h: u32) -> Auth {
        Auth {
            accounts: accounts
                .iter()
                .map(|a| (a.user.clone(), a.clone()))
                .collect(),
            sessions,
            idle_ms: i64::from(idle_min) * 60_000,
            max_ms: i64::from(max_h) * 3_600_000,
            failures: Mutex::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
            decoy: hash_password("decoy").unwrap_or_default(),
        }
    }

    pub fn account(&self, user: &str) -> Option<&Account> {
        self.accounts.get(user)
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Checks a password (slow by design: call it off the async runtime). On success returns
    /// the new session's token.
    pub fn sign_in(
        &self,
        user: &str,
        password: &str,
        now_ms: i64,
    ) -> Result<(String, Session), SignIn> {
        let known = self.accounts.contains_key(user);
        let locked_until = if known {
            let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            f.get(user)
                .filter(|(n, _)| *n >= MAX_FAILURES)
                .map(|(_, u)| *u)
        } else {
            let f = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
            f.get(user)
                .filter(|(n, ..)| *n >= MAX_FAILURES)
                .map(|(_, u, _)| *u)
        };
        if let Some(until) = locked_until.filter(|u| now_ms < *u) {
            return Err(SignIn::Locked((until - now_ms + 999) / 1000));
        }
        let account = self.accounts.get(user);
        let hash = account.map_or(self.decoy.as_str(), |a| a.password_hash.as_str());
        let ok = verify(hash, password) && account.is_some();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some(account) = account.filter(|_| ok) else {
            if known {
                let e = failures.entry(user.to_string()).or_insert((0, 0));
                e.0 += 1;
                if e.0 >= MAX_FAILURES {
                    e.1 = now_ms + LOCKOUT_MS;
                }
            } else {
                drop(failures);
                self.count_unknown(user, now_ms);
            }
            return Err(SignIn::Wrong);
        };
        failures.remove(user);
        drop(failures);
        let mut raw = [0u8; 32];
        if getrandom::getrandom(&mut raw).is_err() {
            return Err(SignIn::Wrong);
        }
        let token = acsgd_contract::envelope::to_hex(&raw);
        let s = Session {
            user: account.user.clone(),
            name: account.name.clone().unwrap_or_else(|| account.user.clone()),
            role: account.role,
            created_ms: now_ms,
            last_ms: now_ms,
        };
        self.put(&token, &s);
        Ok((token, s))
    }

    /// Counts a failure for a name that is no account, within [`MAX_UNKNOWN`] entries: when
    /// full, entries whose lock-out is over go first, then the stalest.
    fn count_unknown(&self, user: &str, now_ms: i64) {
        let mut f = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() >= MAX_UNKNOWN && !f.contains_key(user) {
            f.retain(|_, (_, until, last)| *until > now_ms || now_ms - *last < LOCKOUT_MS);
            if f.len() >= MAX_UNKNOWN {
                if let Some(stalest) = f
                    .iter()
                    .min_by_key(|(_, (_, _, last))| *last)
                    .map(|(k, _)| k.clone())
                {
                    f.remove(&stalest);
                }
            }
        }
        let e = f.entry(user.to_string()).or_insert((0, 0, now_ms));
        e.0 += 1;
        e.2 = now_ms;
        if e.0 >= MAX_FAILURES {
            e.1 = now_ms + LOCKOUT_MS;
        }
    }

    fn key(token: &str) -> Vec<u8> {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut k = b"s/".to_vec();
        k.extend_from_slice(acsgd_contract::envelope::to_hex(d.as_ref()).as_bytes());
        k
    }

    fn put(&self, token: &str, s: &Session) {
        if let Ok(v) = serde_json::to_vec(s) {
            if let Err(e) = self.sessions.insert(Self::key(token), v) {
                tracing::warn!(error = %e, "cannot store a display session");
            }
        }
    }

    /// The session behind a token, if it is still valid; expired sessions are removed. An
    /// account removed from the configuration ends its sessions.
    pub fn session(&self, token: &str, now_ms: i64) -> Option<Session> {
        let key = Self::key(token);
        let mut s: Session = serde_json::from_slice(&self.sessions.get(&key).ok()??).ok()?;
        let expired = now_ms - s.last_ms > self.idle_ms || now_ms - s.created_ms > self.max_ms;
        let account = self.accounts.get(&s.user);
        if expired || account.is_none_or(|a| a.role != s.role) {
            let _ = self.sessions.remove(&key);
            return None;
        }
        if now_ms - s.last_ms > TOUCH_MS {
            s.last_ms = now_ms;
            self.put(token, &s);
        }
        Some(s)
    }

    pub fn sign_out(&self, token: &str) {
        let _ = self.sessions.remove(Self::key(token));
    }

    /// Drops expired sessions (called now and then, so the tree stays small).
    pub fn sweep(&self, now_ms: i64) {
        for (k, v) in self.sessions.entries().unwrap_or_default() {
            let dead = serde_json::from_slice::<Session>(&v).map_or(true, |s| {
                now_ms - s.last_ms > self.idle_ms || now_ms - s.created_ms > self.max_ms
            });
            if dead {
                let _ = self.sessions.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use acsgd_outbox::{OpenMode, Store};

    fn auth(idle_min: u32) -> (Auth, (std::sync::Arc<Store>, tempfile::TempDir)) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), 1 << 20, OpenMode::Service).unwrap();
        let store = std::sync::Arc::new(store);
        let accounts = vec![Account {
            user: "aserik".into(),
            name: Some("Serik A.".into()),
            role: Role::Officer,
            password_hash: hash_password("kordai-7").unwrap(),
            lang: None,
        }];
        (
            Auth::new(&accounts, store.tree("s").unwrap(), idle_min, 12),
            (store, dir),
        )
    }

    #[test]
    fn right_password_opens_a_session_that_expires_when_idle() {
        let (a, _d) = auth(30);
        let (token, s) = a.sign_in("aserik", "kordai-7", 1_000).unwrap();
        assert_eq!(
            (s.user.as_str(), s.name.as_str(), s.role),
            ("aserik", "Serik A.", Role::Officer)
        );
        assert_eq!(a.session(&token, 60_000).unwrap().user, "aserik");
        // Used at 60 s: idle is counted from there.
        assert!(a.session(&token, 60_000 + 29 * 60_000).is_some());
        assert!(a
            .session(&token, 60_000 + 29 * 60_000 + 31 * 60_000)
            .is_none());
        // Gone for good once expired.
        assert!(a.session(&token, 70_000).is_none());
        assert!(a.session("not-a-token", 70_000).is_none());
    }

    #[test]
    fn sessions_end_after_the_maximum_even_when_used() {
        let (a, _d) = auth(30);
        let (token, _) = a.sign_in("aserik", "kordai-7", 0).unwrap();
        let mut t = 0;
        while t < 12 * 3_600_000 {
            t += 20 * 60_000;
            let alive = a.session(&token, t).is_some();
            assert_eq!(alive, t <= 12 * 3_600_000, "at {t}");
        }
    }

    #[test]
    fn a_flood_of_unknown_names_never_switches_an_accounts_lock_out_off() {
        let (a, _d) = auth(30);
        // Counting is what a flood could exhaust; the hashing is the same for every name.
        for i in 0..MAX_UNKNOWN + 500 {
            a.count_unknown(&format!("probe-{i}"), i as i64);
        }
        assert!(a.unknown.lock().unwrap().len() <= MAX_UNKNOWN);
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                a.sign_in("aserik", "guess", 20_000).unwrap_err(),
                SignIn::Wrong
            );
        }
        assert_eq!(
            a.sign_in("aserik", "kordai-7", 21_000).unwrap_err(),
            SignIn::Locked(59),
            "the right password during the lock-out is refused too"
        );
        // An unknown name is locked out like an account, so lock-out does not tell them apart.
        for _ in 0..MAX_FAILURES {
            let _ = a.sign_in("nobody", "guess", 30_000);
        }
        assert_eq!(
            a.sign_in("nobody", "guess", 31_000).unwrap_err(),
            SignIn::Locked(59)
        );
    }

    #[test]
    fn wrong_passwords_are_refused_and_lock_the_user_out() {
        let (a, _d) = auth(30);
        assert_eq!(
            a.sign_in("aserik", "Kordai-7", 0).unwrap_err(),
            SignIn::Wrong
        );
        assert_eq!(
            a.sign_in("nobody", "kordai-7", 0).unwrap_err(),
            SignIn::Wrong
        );
        for _ in 1..MAX_FAILURES {
            let _ = a.sign_in("aserik", "guess", 0);
        }
        assert_eq!(
            a.sign_in("aserik", "kordai-7", 1_000).unwrap_err(),
            SignIn::Locked(59)
        );
        assert!(a.sign_in("aserik", "kordai-7", LOCKOUT_MS + 1).is_ok());
    }

    #[test]
    fn signing_out_ends_the_session_and_tokens_are_not_stored() {
        let (a, _d) = auth(30);
        let (token, _) = a.sign_in("aserik", "kordai-7", 0).unwrap();
        let stored: Vec<Vec<u8>> = a
            .sessions
            .entries()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(stored.len(), 1);
        assert!(!String::from_utf8_lossy(&stored[0]).contains(&token));
        a.sign_out(&token);
        assert!(a.session(&token, 1).is_none());
    }
}
