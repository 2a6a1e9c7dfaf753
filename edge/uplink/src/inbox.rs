//! What central sends to the post (`acsgd/v1/{post}/in/{declarations|watchlist|config}`),
//! cached in the outbox database so the post keeps working offline. (`in/replay`, central's
//! request to resend delivered events, is not cached: the uplink answers it.)
//!
//! Keys in the `inbox` tree:
//! * `declarations/{MRN}`: one transit declaration (JSON object). Central may publish one per
//!   subtopic (`in/declarations/{MRN}`, an empty payload removes it, as for retained messages)
//!   or several at once on `in/declarations` as an array of objects each with an `mrn`.
//! * `watchlist`, `config`: the latest document, whole.
//!
//! A message is acknowledged to the broker only after it is stored (fsync); one that cannot be
//! understood is logged, counted and acknowledged, so it is not redelivered forever.
//!
//! A document is checked as fusion will read it (a declaration by
//! [`Declaration::parse`], the watchlist by [`Transit::set_watchlist`]) *before* it is stored:
//! an invalid one is refused and the last valid one stays in the cache, so one bad message
//! from central cannot empty the watchlist or lose a declaration. In an array of
//! declarations the valid ones are stored and each invalid one is refused with its reason.

use serde_json::Value;

use acsgd_fusion::transit::{Declaration, Transit};
use acsgd_outbox::{Store, StoreError};

/// Why a message from central was not cached.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("topic {0} is not one the post understands")]
    UnknownTopic(String),
    #[error("payload on {topic} is not JSON: {error}")]
    NotJson { topic: String, error: String },
    #[error("declaration on {0} has no valid `mrn`")]
    NoMrn(String),
    #[error("{what} on {topic} refused, the last valid one is kept: {reason}")]
    Invalid {
        topic: String,
        what: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one message changed.
#[derive(Debug, Default, PartialEq)]
pub struct Stored {
    /// Keys written or removed.
    pub keys: Vec<String>,
    /// Documents of the message that were refused, one line each (the rest was stored).
    pub refused: Vec<String>,
}

/// Stores one message.
pub fn store_inbound(
    store: &Store,
    post: &str,
    topic: &str,
    payload: &[u8],
) -> Result<Stored, InboxError> {
    let prefix = format!("acsgd/v1/{post}/in/");
    let unknown = || InboxError::UnknownTopic(topic.to_string());
    let rest = topic.strip_prefix(&prefix).ok_or_else(unknown)?;
    let (kind, sub) = match rest.split_once('/') {
        Some((k, s)) => (k, Some(s)),
        None => (rest, None),
    };
    let invalid = |what, reason: String| InboxError::Invalid {
        topic: topic.to_string(),
        what,
        reason,
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
                let d = Declaration::parse(&parse(topic, payload)?)
                    .map_err(|e| invalid("declaration", e.to_string()))?;
                if d.mrn != mrn {
                    return Err(invalid(
                        "declaration",
                        format!("its mrn {} is not the topic's", d.mrn),
                    ));
                }
                store.inbox_put(&key, payload)?;
            }
            Ok(Stored {
                keys: vec![key],
                refused: Vec::new(),
            })
        }
        ("declarations", None) => {
            let v = parse(topic, payload)?;
            let docs = match v {
                Value::Array(items) => items,
                one => vec![one],
            };
            let mut out = Stored::default();
            let mut good = Vec::with_capacity(docs.len());
            for (i, d) in docs.iter().enumerate() {
                match Declaration::parse(d) {
                    Ok(parsed) => {
                        out.keys.push(format!("declarations/{}", parsed.mrn));
                        good.push(d.to_string());
                    }
                    Err(e) => out.refused.push(format!("declaration [{i}]: {e}")),
                }
            }
            if good.is_empty() && !out.refused.is_empty() {
                return Err(invalid("declarations", out.refused.join("; ")));
            }
            let pairs: Vec<(&str, &[u8])> = out
                .keys
                .iter()
                .zip(&good)
                .map(|(k, d)| (k.as_str(), d.as_bytes()))
                .collect();
            // One flush for the whole message: 100 000 declarations are one fsync, not
            // 100 000 of them.
            store.inbox_put_many(&pairs)?;
            Ok(out)
        }
        ("watchlist", None) => {
            let doc = parse(topic, payload)?;
            Transit::default()
                .set_watchlist(&doc)
                .map_err(|e| invalid("watchlist", e.to_string()))?;
            store.inbox_put(kind, payload)?;
            Ok(Stored {
                keys: vec![kind.to_string()],
                refused: Vec::new(),
            })
        }
        ("config", None) => {
            if !parse(topic, payload)?.is_object() {
                return Err(invalid("config", "not a JSON object".into()));
            }
            store.inbox_put(kind, payload)?;
            Ok(Stored {
                keys: vec![kind.to_string()],
                refused: Vec::new(),
            })
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

pub use acsgd_contract::mrn::valid_mrn;

#[cfg(test)]
mod tests {
    use super::*;
    use acsgd_outbox::OpenMode;

    #[test]
    fn declarations_watchlist_and_removals_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path(), 1 << 20, OpenMode::Service).unwrap();
        let t = "acsgd/v1/korgas/in/declarations";
        let batch =
            br#"[{"mrn":"26KZ5500000000001A","plates":["123ABC02"]},{"mrn":"26KZ5500000000002B"}]"#;
        assert_eq!(store_inbound(&s, "korgas", t, batch).unwrap().keys.len(), 2);
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
        assert!(e("acsgd/v1/korgas/in/declarations", br#"{"mrn":"short"}"#)
            .contains("mrn \"short\" is not 18 letters and digits"));
        assert_eq!(s.inbox_keys("").unwrap().len(), 0);
    }

    #[test]
    fn an_invalid_document_keeps_the_last_valid_one() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path(), 1 << 20, OpenMode::Service).unwrap();
        let w = "acsgd/v1/korgas/in/watchlist";
        let good = br#"{"plates":["777XYZ01"]}"#;
        store_inbound(&s, "korgas", w, good).unwrap();
        // Valid JSON, but not a watchlist fusion can use: refused, the old one stays.
        let err = store_inbound(&s, "korgas", w, br#"{"plates":"777XYZ01"}"#).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "watchlist on acsgd/v1/korgas/in/watchlist refused, the last valid one is kept:"
            ),
            "{err}"
        );
        assert_eq!(s.inbox_get("watchlist").unwrap().unwrap(), good);

        let d = "acsgd/v1/korgas/in/declarations/26KZ5500000000001A";
        let decl = br#"{"mrn":"26KZ5500000000001A","plates":["123ABC02"],"gross_kg":24000}"#;
        store_inbound(&s, "korgas", d, decl).unwrap();
        let bad = br#"{"mrn":"26KZ5500000000001A","plates":["123ABC02"],"gross_kg":"heavy"}"#;
        assert!(store_inbound(&s, "korgas", d, bad).is_err());
        let other = br#"{"mrn":"26KZ5500000000009Z"}"#;
        assert!(store_inbound(&s, "korgas", d, other)
            .unwrap_err()
            .to_string()
            .contains("is not the topic's"));
        assert_eq!(
            s.inbox_get("declarations/26KZ5500000000001A")
                .unwrap()
                .unwrap(),
            decl
        );

        // In an array, the valid declarations are stored and the invalid one is named.
        let arr = br#"[{"mrn":"26KZ5500000000002B"},{"mrn":"26KZ5500000000003C","gross_kg":"x"}]"#;
        let out = store_inbound(&s, "korgas", "acsgd/v1/korgas/in/declarations", arr).unwrap();
        assert_eq!(out.keys, ["declarations/26KZ5500000000002B"]);
        assert_eq!(out.refused.len(), 1);
        assert!(
            out.refused[0].starts_with("declaration [1]:"),
            "{:?}",
            out.refused
        );
        assert!(s
            .inbox_get("declarations/26KZ5500000000003C")
            .unwrap()
            .is_none());
    }
}
