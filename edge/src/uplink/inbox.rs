//! What central sends to the post (`acsgd/v1/{post}/in/{declarations|watchlist|config}`),
//! cached in the outbox database so the post keeps working offline.
//!
//! Keys in the `inbox` tree:
//! * `declarations/{MRN}`: one transit declaration (JSON object). Central may publish one per
//!   subtopic (`in/declarations/{MRN}`, an empty payload removes it, as for retained messages)
//!   or several at once on `in/declarations` as an array of objects each with an `mrn`.
//! * `watchlist`, `config`: the latest document, whole.
//!
//! A message is acknowledged to the broker only after it is stored (fsync); one that cannot be
//! understood is logged, counted and acknowledged, so it is not redelivered forever.

use serde_json::Value;

use crate::outbox::{Store, StoreError};

/// Why a message from central was not cached.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("topic {0} is not one the post understands")]
    UnknownTopic(String),
    #[error("payload on {topic} is not JSON: {error}")]
    NotJson { topic: String, error: String },
    #[error("declaration on {0} has no valid `mrn`")]
    NoMrn(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stores one message; returns the keys written (or removed).
pub fn store_inbound(
    store: &Store,
    post: &str,
    topic: &str,
    payload: &[u8],
) -> Result<Vec<String>, InboxError> {
    let prefix = format!("acsgd/v1/{post}/in/");
    let unknown = || InboxError::UnknownTopic(topic.to_string());
    let rest = topic.strip_prefix(&prefix).ok_or_else(unknown)?;
    let (kind, sub) = match rest.split_once('/') {
        Some((k, s)) => (k, Some(s)),
        None => (rest, None),
    };
    match (kind, sub) {
        ("declarations", Some(mrn)) => {
            if !valid_mrn(mrn) {
                return Err(InboxError::NoMrn(topic.into()));
            }
            let key = format!("declarations/{mrn}");
            if payload.is_empty() {
                store.inbox_remove(&key)?;
            } else {
                parse(topic, payload)?;
                store.inbox_put(&key, payload)?;
            }
            Ok(vec![key])
        }
        ("declarations", None) => {
            let v = parse(topic, payload)?;
            let docs = match v {
                Value::Array(items) => items,
                one => vec![one],
            };
            let mut keys = Vec::with_capacity(docs.len());
            for d in &docs {
                let mrn = d
                    .get("mrn")
                    .and_then(Value::as_str)
                    .filter(|m| valid_mrn(m))
                    .ok_or_else(|| InboxError::NoMrn(topic.into()))?;
                keys.push(format!("declarations/{mrn}"));
            }
            for (k, d) in keys.iter().zip(&docs) {
                store.inbox_put(k, d.to_string().as_bytes())?;
            }
            Ok(keys)
        }
        ("watchlist" | "config", None) => {
            parse(topic, payload)?;
            store.inbox_put(kind, payload)?;
            Ok(vec![kind.to_string()])
        }
        _ => Err(unknown()),
    }
}

fn parse(topic: &str, payload: &[u8]) -> Result<Value, InboxError> {
    serde_json::from_slice(payload).map_err(|e| InboxError::NotJson {
        topic: topic.into(),
        error: e.to_string(),
    })
}

/// An MRN as used here: 18 upper-case letters and digits (NCTS: year, country, serial, check).
pub fn valid_mrn(s: &str) -> bool {
    s.len() == 18
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::OpenMode;

    #[test]
    fn declarations_watchlist_and_removals_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path(), 1 << 20, OpenMode::Service).unwrap();
        let t = "acsgd/v1/korgas/in/declarations";
        let batch =
            br#"[{"mrn":"26KZ5500000000001A","plates":["123ABC02"]},{"mrn":"26KZ5500000000002B"}]"#;
        assert_eq!(store_inbound(&s, "korgas", t, batch).unwrap().len(), 2);
        let one = br#"{"mrn":"26KZ5500000000003C"}"#;
        store_inbound(&s, "korgas", &format!("{t}/26KZ5500000000003C"), one).unwrap();
        store_inbound(&s, "korgas", &format!("{t}/26KZ5500000000002B"), b"").unwrap();
        assert_eq!(
            s.inbox_keys("declarations/").unwrap(),
            [
                "declarations/26KZ5500000000001A",
                "declarations/26KZ5500000000003C"
            ]
        );
        store_inbound(
            &s,
            "korgas",
            "acsgd/v1/korgas/in/watchlist",
            br#"{"plates":["777XYZ01"]}"#,
        )
        .unwrap();
        assert!(s.inbox_get("watchlist").unwrap().is_some());
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path(), 1 << 20, OpenMode::Service).unwrap();
        let e = |t: &str, p: &[u8]| store_inbound(&s, "korgas", t, p).unwrap_err().to_string();
        assert!(e("acsgd/v1/korgas/in/firmware", b"{}").contains("not one the post understands"));
        assert!(e("acsgd/v1/other/in/watchlist", b"{}").contains("not one the post understands"));
        assert!(e("acsgd/v1/korgas/in/watchlist", b"{oops").contains("not JSON"));
        assert!(
            e("acsgd/v1/korgas/in/declarations", br#"{"mrn":"short"}"#).contains("no valid `mrn`")
        );
        assert_eq!(s.inbox_keys("").unwrap().len(), 0);
    }
}
