//! `acsgd account`: the technician's tool for the accounts file (`display.accounts_file`).
//! Passwords are read from the terminal without echo (or one line of stdin when it is not a
//! terminal) and only their argon2 hash is written; the file is replaced atomically and
//! readable by its owner only.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::config::{check_account, Account, AccountsFile, ConfigError, Role, DEFAULT_LANG};

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 8;

/// Why an account could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    File(#[from] ConfigError),
    #[error("account {0:?} already exists (give --replace to set a new password)")]
    Exists(String),
    #[error("no account {0:?} in {1}")]
    Missing(String, PathBuf),
    #[error("account: {0}")]
    Invalid(String),
    #[error("account: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `acsgd account add` was asked for.
pub struct NewAccount {
    pub user: String,
    pub name: Option<String>,
    pub role: Role,
    pub lang: Option<String>,
    pub replace: bool,
}

/// Reads the password: twice without echo from a terminal, else the first line of stdin.
pub fn read_password() -> Result<String, AccountError> {
    let io = |source| AccountError::Io {
        path: "stdin".into(),
        source,
    };
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map_err(io)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let ask = |prompt: &str| -> Result<String, AccountError> {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let _echo = NoEcho::new();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(io)?;
        eprintln!();
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let a = ask("password: ")?;
    if ask("again: ")? != a {
        return Err(AccountError::Invalid("the passwords differ".into()));
    }
    Ok(a)
}

/// Terminal echo off for as long as it lives.
struct NoEcho(Option<libc::termios>);

impl NoEcho {
    // std has no terminal control: turning echo off takes termios.
    #[allow(unsafe_code)]
    fn new() -> NoEcho {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return NoEcho(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            NoEcho(Some(saved))
        }
    }
}

impl Drop for NoEcho {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

/// Adds (or with `replace`, updates) an account in `file`, creating the file if needed.
pub fn add(file: &Path, new: NewAccount, password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AccountError::Invalid(format!(
            "the password needs at least {MIN_PASSWORD} characters"
        )));
    }
    let mut accounts = if file.exists() {
        AccountsFile::load(file, DEFAULT_LANG)?
    } else {
        AccountsFile::default()
    };
    let hash = crate::display::auth::hash_password(password).map_err(AccountError::Invalid)?;
    let account = Account {
        user: new.user.clone(),
        name: new.name,
        role: new.role,
        password_hash: hash,
        lang: new.lang,
    };
    check_account(&account, DEFAULT_LANG)
        .map_err(|(k, p)| AccountError::Invalid(format!("{k}: {p}")))?;
    match accounts.accounts.iter_mut().find(|a| a.user == new.user) {
        Some(_) if !new.replace => return Err(AccountError::Exists(new.user)),
        Some(a) => *a = account,
        None => accounts.accounts.push(account),
    }
    write(file, &accounts)
}

/// Removes an account.
pub fn remove(file: &Path, user: &str) -> Result<(), AccountError> {
    let mut accounts = AccountsFile::load(file, DEFAULT_LANG)?;
    let before = accounts.accounts.len();
    accounts.accounts.retain(|a| a.user != user);
    if accounts.accounts.len() == before {
        return Err(AccountError::Missing(user.into(), file.into()));
    }
    write(file, &accounts)
}

fn write(file: &Path, accounts: &AccountsFile) -> Result<(), AccountError> {
    let io = |source| AccountError::Io {
        path: file.to_path_buf(),
        source,
    };
    let text = format!(
        "# Officer display accounts; written by `acsgd account`. Passwords are argon2 hashes.\n{}",
        toml::to_string(accounts).map_err(|e| AccountError::Invalid(e.to_string()))?
    );
    crate::files::write_private(file, text.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(user: &str, replace: bool) -> NewAccount {
        NewAccount {
            user: user.into(),
            name: Some("Serik Aliyev".into()),
            role: Role::Officer,
            lang: Some("kk".into()),
            replace,
        }
    }

    #[test]
    fn accounts_are_added_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("accounts.toml");
        add(&f, new("aserik", false), "kordai-77").unwrap();
        add(
            &f,
            NewAccount {
                role: Role::Technician,
                ..new("tech", false)
            },
            "kordai-88",
        )
        .unwrap();
        let e = add(&f, new("aserik", false), "other-pass")
            .unwrap_err()
            .to_string();
        assert!(e.contains("already exists"), "{e}");
        add(&f, new("aserik", true), "new-password").unwrap();
        let loaded = AccountsFile::load(&f, "ru").unwrap();
        assert_eq!(loaded.accounts.len(), 2);
        assert!(loaded.accounts[0].password_hash.starts_with("$argon2id$"));
        assert!(!std::fs::read_to_string(&f)
            .unwrap()
            .contains("new-password"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        remove(&f, "tech").unwrap();
        assert!(remove(&f, "tech")
            .unwrap_err()
            .to_string()
            .contains("no account"));
        assert_eq!(AccountsFile::load(&f, "ru").unwrap().accounts.len(), 1);
    }

    #[test]
    fn bad_accounts_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.toml");
        assert!(add(&f, new("aserik", false), "short")
            .unwrap_err()
            .to_string()
            .contains("at least 8"));
        let e = add(&f, new("A Serik", false), "long-enough")
            .unwrap_err()
            .to_string();
        assert!(e.contains("user"), "{e}");
        let e = add(
            &f,
            NewAccount {
                lang: Some("de".into()),
                ..new("x", false)
            },
            "long-enough",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lang"), "{e}");
        assert!(!f.exists());
    }

    #[test]
    fn a_broken_accounts_file_names_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("accounts.toml");
        std::fs::write(
            &f,
            "[[accounts]]\nuser = \"a\"\nrole = \"boss\"\npassword_hash = \"x\"\n",
        )
        .unwrap();
        let e = AccountsFile::load(&f, "ru").unwrap_err().to_string();
        assert!(
            e.contains("accounts.toml:3") && e.contains("accounts[0].role") && e.contains("boss"),
            "{e}"
        );
        std::fs::write(
            &f,
            "[[accounts]]\nuser = \"a\"\nrole = \"officer\"\npassword_hash = \"plain\"\n",
        )
        .unwrap();
        let e = AccountsFile::load(&f, "ru").unwrap_err().to_string();
        assert!(
            e.contains("accounts.toml:4") && e.contains("password_hash") && e.contains("argon2"),
            "{e}"
        );
    }
}
