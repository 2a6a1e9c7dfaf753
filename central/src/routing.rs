//! Routing: which post holds which declaration, retained on
//! `acsgd/v1/{post}/in/declarations/{MRN}`.
//!
//! A declaration goes to every post of its itinerary when it is declared, and is withdrawn
//! (an empty retained message) from a post once the transit has passed it, and from all of them
//! when it arrived, was closed or cancelled. A post where the truck is held (`at_post`) keeps it.
//! The wanted state is written in the `route` table in the same transaction as the change that
//! decides it; [`Publisher`] sends what is not done yet, and everything again after a restart
//! (a retained publish is idempotent), so a crash between commit and publish loses no route.

use sqlx::{AnyConnection, Row};

use crate::store::{Store, StoreError};
use crate::tracking::{State, Transit};

/// The posts that should hold a transit's declaration, and those that should not.
pub fn wanted(t: &Transit) -> Vec<(String, bool)> {
    let done = t.state.is_final() || t.state == State::Arrived;
    t.declaration
        .itinerary
        .iter()
        .enumerate()
        .map(|(i, stop)| {
            let held_here = t.state == State::AtPost && i + 1 == t.leg;
            (stop.post.clone(), !done && (i >= t.leg || held_here))
        })
        .collect()
}

/// Records the routes of a newly declared transit.
pub async fn declared(conn: &mut AnyConnection, t: &Transit) -> Result<(), StoreError> {
    for (post, on) in wanted(t) {
        set(conn, &post, &t.mrn, on).await?;
    }
    Ok(())
}

/// Records the routes that a change of a transit changes.
pub async fn after_change(
    conn: &mut AnyConnection,
    before: &Transit,
    after: &Transit,
) -> Result<(), StoreError> {
    for (post, is) in changed(before, after) {
        set(conn, &post, &after.mrn, is).await?;
    }
    Ok(())
}

/// The posts whose wanted state a change of a transit changes, and the new state.
pub fn changed(before: &Transit, after: &Transit) -> Vec<(String, bool)> {
    wanted(before)
        .into_iter()
        .zip(wanted(after))
        .filter(|((_, was), (_, is))| was != is)
        .map(|((post, _), (_, is))| (post, is))
        .collect()
}

/// Records many routes at once, a few hundred per statement: `(post, mrn) -> publish`. One
/// statement may not name a row twice, hence the map (a batch keeps the last state of each).
pub async fn set_many(
    conn: &mut AnyConnection,
    routes: &std::collections::BTreeMap<(String, String), bool>,
) -> Result<(), StoreError> {
    let rows: Vec<_> = routes.iter().collect();
    for chunk in rows.chunks(crate::store::rows_per_statement(conn, 3)) {
        let sql = format!(
            "INSERT INTO route (post, mrn, action) VALUES {} \
             ON CONFLICT (post, mrn) DO UPDATE SET action = excluded.action, done_ms = NULL",
            crate::store::value_rows(conn, chunk.len(), 3)
        );
        let mut q = crate::store::multi_row(conn, &sql);
        for ((post, mrn), on) in chunk {
            q = q.bind(post.as_str()).bind(mrn.as_str()).bind(if **on {
                "publish"
            } else {
                "withdraw"
            });
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

async fn set(conn: &mut AnyConnection, post: &str, mrn: &str, on: bool) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO route (post, mrn, action, done_ms) VALUES ($1, $2, $3, NULL) \
         ON CONFLICT (post, mrn) DO UPDATE SET action = $3, done_ms = NULL",
    )
    .bind(post)
    .bind(mrn)
    .bind(if on { "publish" } else { "withdraw" })
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One retained message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub post: String,
    pub mrn: String,
    /// The declaration's JSON, or empty to withdraw it.
    pub payload: Vec<u8>,
}

impl Pending {
    pub fn topic(&self) -> String {
        format!("acsgd/v1/{}/in/declarations/{}", self.post, self.mrn)
    }
}

/// Reads and marks the routes to send.
pub struct Publisher {
    store: Store,
}

/// The routes not yet sent, in a stable order: read from index `route_unsent` (migration 8),
/// which holds only them.
pub(crate) const PENDING: &str = "SELECT r.post, r.mrn, r.action, t.declaration FROM route r \
     JOIN transit t ON t.mrn = r.mrn WHERE r.done_ms IS NULL ORDER BY r.mrn, r.post LIMIT $1";

impl Publisher {
    /// Marks every declaration the posts should hold to be sent again (at start: a broker may
    /// have lost its retained messages meanwhile). A withdrawal once done is not: the broker
    /// holds nothing there either way, and there is one for every post of every transit that
    /// ever passed, far more than the declarations still on the road.
    pub async fn new(store: Store) -> Result<Publisher, StoreError> {
        sqlx::query("UPDATE route SET done_ms = NULL WHERE action = 'publish'")
            .execute(store.pool())
            .await?;
        Ok(Publisher { store })
    }

    /// Up to `limit` routes not yet sent.
    pub async fn pending(&self, limit: i64) -> Result<Vec<Pending>, StoreError> {
        let rows = sqlx::query(PENDING)
            .bind(limit)
            .fetch_all(self.store.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let action: String = r.try_get(2)?;
                let decl: String = r.try_get(3)?;
                Ok(Pending {
                    post: r.try_get(0)?,
                    mrn: r.try_get(1)?,
                    payload: if action == "publish" {
                        decl.into_bytes()
                    } else {
                        Vec::new()
                    },
                })
            })
            .collect()
    }

    /// Marks a route sent, unless it changed since it was read.
    pub async fn done(&self, p: &Pending, now_ms: i64) -> Result<(), StoreError> {
        let action = if p.payload.is_empty() {
            "withdraw"
        } else {
            "publish"
        };
        sqlx::query(
            "UPDATE route SET done_ms = $1 WHERE post = $2 AND mrn = $3 AND action = $4 AND done_ms IS NULL",
        )
        .bind(now_ms)
        .bind(&p.post)
        .bind(&p.mrn)
        .bind(action)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }
}

/// Marks every declaration a post should hold as not yet sent, so the publisher sends it again
/// (retained publishes are idempotent). Called when the post comes online.
pub(crate) async fn republish(conn: &mut AnyConnection, post: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE route SET done_ms = NULL WHERE post = $1 AND action = 'publish'")
        .bind(post)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
