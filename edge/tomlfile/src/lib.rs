//! A TOML settings file read into typed settings. Every error is one line that names the
//! file, the line and the key, e.g.
//! `config /etc/acsgd/acsgd.toml:14: uplink.window: must be between 1 and 10000, got 0`:
//! serde's own errors (a wrong type, an unknown key, a missing one) through [`parse`], and
//! the checks a program makes after parsing through [`invalid`], which finds the key's line.
//! Files are read with a size bound ([`read`]): a config is small, and a huge one is a mistake
//! or an attack, not something to parse.

use std::fmt;
use std::path::{Path, PathBuf};

mod tls;
pub use tls::{TlsFiles, TlsPem};

use serde::de::DeserializeOwned;

/// A settings file that cannot be used. Displays as one line.
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
        /// The dotted key path, empty for a syntax error; rendered with a trailing ": ".
        key: KeyPath,
        problem: String,
    },
}

/// A key path such as `sensors[2].transport.baud`, displayed with a trailing `: ` when present.
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

/// The most a settings file may hold: far above any real one, far below what would hurt the
/// box to parse.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a settings file: a regular file of at most [`MAX_CONFIG_BYTES`].
pub fn read(path: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} bytes, more than the {} KiB a config may hold",
                meta.len(),
                MAX_CONFIG_BYTES >> 10
            ),
        )));
    }
    std::fs::read_to_string(path).map_err(read_err)
}

/// Parses settings text into `T`; `path` only names the file in errors. A missing key is
/// reported by name (it has no line of its own).
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut key = e.path().to_string();
        if key == "." {
            key.clear();
        }
        let inner = e.into_inner();
        let mut line = inner.span().map(|s| line_of(text, s.start));
        // toml's own message can span lines (it quotes the source); keep the first.
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
        ConfigError::Invalid {
            file: path.to_path_buf(),
            line,
            key: KeyPath(key),
            problem: msg,
        }
    })
}

/// A problem a program found after parsing, at `key` (`sensors[1].id`): the error names the
/// key's line in `text` (see [`find_key_line`]).
pub fn invalid(path: &Path, text: &str, key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        file: path.to_path_buf(),
        line: find_key_line(text, key),
        key: KeyPath(key.to_string()),
        problem: problem.into(),
    }
}

/// The line (from 1) of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line of a key found by validation, such as `sensors[1].id`: the key's own line when
/// the file sets it, else the line of the deepest table on its path that the file has (a
/// value left to its default is reported where its table is); `None` when not even the
/// first table is in the file. The text is parsed again with its spans, which the typed
/// parse does not keep.
pub fn find_key_line(text: &str, key: &str) -> Option<usize> {
    use toml_edit::{Item, TableLike, Value};
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: &dyn TableLike = doc.as_table();
    let mut at: Option<usize> = None;
    let segments: Vec<&str> = key.split('.').collect();
    for (n, segment) in segments.iter().enumerate() {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => {
                let Some(i) = rest.strip_suffix(']').and_then(|i| i.parse::<usize>().ok()) else {
                    break;
                };
                (name, Some(i))
            }
            None => (*segment, None),
        };
        let Some((k, item)) = table.get_key_value(name) else {
            break;
        };
        at = k.span().or_else(|| item.span()).map(|r| r.start).or(at);
        let next: Option<&dyn TableLike> = match (index, item) {
            (None, item) => item.as_table_like(),
            (Some(i), Item::ArrayOfTables(a)) => a.get(i).map(|t| {
                at = t.span().map(|r| r.start).or(at);
                t as &dyn TableLike
            }),
            (Some(i), Item::Value(Value::Array(a))) => a.get(i).and_then(|v| {
                at = v.span().map(|r| r.start).or(at);
                v.as_inline_table().map(|t| t as &dyn TableLike)
            }),
            _ => None,
        };
        match next {
            Some(t) if n + 1 < segments.len() => table = t,
            _ => break,
        }
    }
    at.map(|offset| line_of(text, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct S {
        broker: B,
        #[serde(default)]
        accounts: Vec<A>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct B {
        host: String,
        #[serde(default)]
        port: u16,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct A {
        user: String,
    }

    fn err(text: &str) -> String {
        parse::<S>(Path::new("x.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        assert_eq!(
            err("[broker]\nhost = \"h\"\nport = 70000\n"),
            "config x.toml:3: broker.port: invalid value: integer `70000`, expected u16"
        );
        assert_eq!(
            err("[broker]\nport = 1\n"),
            "config x.toml: broker.host: required key is missing"
        );
        assert!(err("[broker]\nhost = \"h\"\nspeed = 1\n")
            .starts_with("config x.toml:3: broker.speed: unknown field `speed`"));
        assert!(err("[broker\n").starts_with("config x.toml:1: "));
        let text =
            "[broker]\nhost = \"h\"\n[[accounts]]\nuser = \"a\"\n[[accounts]]\nuser = \"a\"\n";
        let s = parse::<S>(Path::new("x.toml"), text).unwrap();
        assert_eq!((s.broker.host.as_str(), s.broker.port), ("h", 0));
        assert_eq!(s.accounts[1].user, "a");
        assert_eq!(
            invalid(Path::new("x.toml"), text, "accounts[1].user", "twice").to_string(),
            "config x.toml:6: accounts[1].user: twice"
        );
        assert_eq!(
            find_key_line(text, "broker.port"),
            Some(1),
            "a default is reported at its table"
        );
        assert_eq!(find_key_line(text, "nothing.here"), None);
    }

    #[test]
    fn a_file_too_large_or_not_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
        assert!(read(&big)
            .unwrap_err()
            .to_string()
            .contains("more than the 1024 KiB"));
    }
}
