//! Declarations submitted to central (over the HTTP API): checked against the contract and the
//! post registry, stored as `declared` transits, and routed to the posts of their itinerary in
//! the same transaction.

use acsgd_contract::declaration::Declaration;
use serde_json::Value;

use crate::store::{Store, StoreError};
use crate::tracking::Transit;

/// Why a declaration was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Invalid(String),
    #[error("declaration {mrn}: itinerary[{index}].post: {post} is not a registered post")]
    UnknownPost {
        mrn: String,
        index: usize,
        post: String,
    },
    #[error("declaration {0} exists already")]
    Exists(String),
}

/// Checks and stores a declaration document; `cause` is who submitted it (`operator:{name}`).
pub async fn submit(
    store: &Store,
    doc: &Value,
    cause: &str,
    now_ms: i64,
) -> Result<Result<Transit, Refused>, StoreError> {
    let d = match Declaration::parse(doc) {
        Ok(d) => d,
        Err(e) => return Ok(Err(Refused::Invalid(e.to_string()))),
    };
    if d.itinerary.len() < 2 {
        return Ok(Err(Refused::Invalid(format!(
            "declaration {}: itinerary: central needs the posts to pass, departure first and destination last",
            d.mrn
        ))));
    }
    let posts = store.posts().await?;
    if let Some((index, stop)) = d
        .itinerary
        .iter()
        .enumerate()
        .find(|(_, s)| !posts.iter().any(|p| p.id == s.post))
    {
        return Ok(Err(Refused::UnknownPost {
            mrn: d.mrn.clone(),
            index,
            post: stop.post.clone(),
        }));
    }
    let t = Transit::declared(d, now_ms);
    if !store.declare(&t, cause).await? {
        return Ok(Err(Refused::Exists(t.mrn)));
    }
    Ok(Ok(t))
}
