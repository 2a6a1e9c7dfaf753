//! Retention: what central forgets, and when, so that its database stops growing with the
//! traffic where keeping more has no use.
//!
//! Forgotten after `[store] keep_positions_days` (default 30; 0 keeps everything):
//! * the posts' **position events** in the journal, by the time central received them. They
//!   are seven in ten of all events and most of the database's size (a simulated day of 50
//!   posts: about 1 GiB). What they said of a transit is in its fixes, kept as below.
//! * the **fixes and track** of a transit that is no longer on the road (arrived, closed or
//!   cancelled) and has not changed for that long, and its tracker's link to it (a seal is
//!   reused trip after trip; the links of old trips would make every new fix look through
//!   them). A transit on the road keeps all its fixes however long it takes: a late fix is
//!   judged against its history.
//!
//! Kept for good: every other event (passages, alerts, health, the posts' answers), the
//! transits with their declarations, sightings and every change with its cause, operator
//! alerts, notifications, routes. They are the record customs keeps; at the traffic of 50
//! posts they are about a tenth of what a day adds, and the disk is sized for them.
//!
//! A position event sent again after its row was forgotten is taken as new: it is journaled
//! again (and forgotten again later), and its fixes go nowhere, since the transits they
//! belonged to are off the road by then. The seqs a post delivered are kept in
//! `post_state`, not read from the journal, so gaps and resend requests do not change.
//!
//! The deletes run in transactions of a few thousand rows, so that on SQLite, whose one
//! writer is ingest's too, a batch waits at most a few milliseconds for one; the space they
//! free is used again by new rows (neither backend gives it back to the file system without a
//! `VACUUM`, which central does not run).

use sqlx::Row;

use crate::store::{Store, StoreError};

/// A day, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// Position events removed in one transaction.
const EVENTS_PER_TRANSACTION: i64 = 2_000;

/// Transits whose fixes are removed in one transaction (a transit of a few hours on the road
/// has a few hundred).
const TRANSITS_PER_TRANSACTION: usize = 50;

/// The position events to forget, oldest first (`journal_position_received`, migration 9).
pub const POSITION_EVENTS: &str = "SELECT id FROM journal WHERE type = 'position' \
     AND received_ms < $1 ORDER BY received_ms LIMIT $2";

/// The states of a transit that is no longer on the road.
const OFF_THE_ROAD: &str = "('arrived', 'closed', 'cancelled')";

/// What a look through the tracks forgot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Transits whose track was removed.
    pub transits: u64,
    /// Their fixes.
    pub fixes: u64,
}

impl Store {
    /// Removes up to `max` position events that central received before `before_ms`, oldest
    /// first. Returns how many went; fewer than `max` means none older is left.
    pub async fn prune_position_events(&self, before_ms: i64, max: u64) -> Result<u64, StoreError> {
        let sql = format!("DELETE FROM journal WHERE id IN ({POSITION_EVENTS})");
        let mut gone = 0u64;
        while gone < max {
            let chunk = EVENTS_PER_TRANSACTION.min(i64::try_from(max - gone).unwrap_or(i64::MAX));
            let done = sqlx::query(&sql)
                .bind(before_ms)
                .bind(chunk)
                .execute(self.pool())
                .await?
                .rows_affected();
            gone += done;
            if (done as i64) < chunk {
                break;
            }
        }
        Ok(gone)
    }

    /// Removes the fixes, the track and the tracker links of up to `max` transits that are off
    /// the road and have not changed since before `before_ms`.
    pub async fn prune_tracks(&self, before_ms: i64, max: u64) -> Result<Pruned, StoreError> {
        // Looked for among the tracks, which this keeps to the transits of the last days and
        // those on the road: the transits table keeps every transit for good. Read outside the
        // write transactions (it reads every track), checked again inside each.
        let sql = format!(
            "SELECT k.mrn FROM track k JOIN transit t ON t.mrn = k.mrn \
             WHERE t.state IN {OFF_THE_ROAD} AND t.updated_ms < $1 LIMIT $2"
        );
        let mrns: Vec<String> = sqlx::query(&sql)
            .bind(before_ms)
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let delete_track = format!(
            "DELETE FROM track WHERE mrn = $1 AND EXISTS (SELECT 1 FROM transit t \
             WHERE t.mrn = $1 AND t.state IN {OFF_THE_ROAD} AND t.updated_ms < $2)"
        );
        let mut out = Pruned::default();
        for chunk in mrns.chunks(TRANSITS_PER_TRANSACTION) {
            let mut tx = self.begin_write().await?;
            for mrn in chunk {
                let track = sqlx::query(&delete_track)
                    .bind(mrn)
                    .bind(before_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if track == 0 {
                    // Back on the road, or changed, since it was looked for.
                    continue;
                }
                out.transits += 1;
                out.fixes += sqlx::query("DELETE FROM fix WHERE mrn = $1")
                    .bind(mrn)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM transit_tracker WHERE mrn = $1")
                    .bind(mrn)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(out)
    }
}
