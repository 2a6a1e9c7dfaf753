//! Central's database: one schema and one set of queries for SQLite (the embedded default: one
//! file, no server) and PostgreSQL (production), through sqlx's `Any` driver.
//!
//! Only what both backends read the same way is used: `$n` placeholders (SQLite takes `$1` as
//! a named parameter, numbered in order of first use, which is the same numbering; the
//! statements built for many rows use bare `?` there instead, see [`placeholders`]), TEXT,
//! BIGINT, DOUBLE PRECISION, `ON CONFLICT … DO NOTHING`, and times as milliseconds since the
//! epoch. Migrations are numbered SQL texts applied in one transaction each and recorded in
//! `schema_version`; a database newer than this binary is refused rather than guessed at.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`: a committed transaction is on disk, which
//! is what "acknowledged to the broker" promises.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use acsgd_contract::declaration::Declaration;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::tracking::{self, Change, Flag, Seen, Sighting, State, Transit};

/// The migrations, in order: `(version, SQL)`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("schema.sql")),
    (2, include_str!("schema_2.sql")),
    (3, include_str!("schema_3.sql")),
    (4, include_str!("schema_4.sql")),
    (5, include_str!("schema_5.sql")),
    (6, include_str!("schema_6.sql")),
    (7, include_str!("schema_7.sql")),
    (8, include_str!("schema_8.sql")),
    (9, include_str!("schema_9.sql")),
];

/// The tables central's migrations create (`CREATE TABLE name`): those
/// [`Store::collate_c`] may change, and no other table in the database.
fn tables() -> BTreeSet<String> {
    MIGRATIONS
        .iter()
        .flat_map(|(_, sql)| sql.split("CREATE TABLE ").skip(1))
        .filter_map(|rest| {
            let rest = rest.strip_prefix("IF NOT EXISTS ").unwrap_or(rest);
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// The advisory lock key [`Store::collate_c`] holds while it looks and alters ("acsgdcol").
const COLLATE_LOCK: i64 = 0x6163_7367_6463_6f6c;
/// How long [`Store::collate_c`] waits for a table's lock before it leaves that column for
/// the next start: central's own transactions hold one for milliseconds.
const COLLATE_LOCK_WAIT_MS: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migration {version}: {source}")]
    Migrate { version: i64, source: sqlx::Error },
    #[error("giving {table}.{column} the C collation: {source}")]
    Collate {
        table: String,
        column: String,
        source: sqlx::Error,
    },
    #[error("database is at schema version {found}, newer than this acsgd-central knows ({known}); upgrade acsgd-central")]
    TooNew { found: i64, known: i64 },
    #[error("stored {what} is not valid: {detail}")]
    Corrupt { what: String, detail: String },
    /// A row this transaction read was written by another transaction (another worker, the
    /// seal operator's feed, the scheduler) before this one could write it: nothing of this
    /// transaction is kept, and it is done again from a fresh read.
    #[error("{what} was changed by another writer meanwhile: {detail}; done again")]
    Conflict { what: String, detail: String },
}

impl StoreError {
    /// Whether doing the transaction again, at once, is the cure: another writer came
    /// first. PostgreSQL's row versions ([`StoreError::Conflict`]) and SQLite's refusal to
    /// let a transaction write on a snapshot that another has since overtaken
    /// (`SQLITE_BUSY_SNAPSHOT`, 517).
    pub fn is_conflict(&self) -> bool {
        match self {
            StoreError::Conflict { .. } => true,
            StoreError::Sql(sqlx::Error::Database(e)) => e.code().as_deref() == Some("517"),
            _ => false,
        }
    }
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A post as pinned by an operator.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Post {
    pub id: String,
    pub name: String,
    /// Ed25519 public key, 64 hex digits.
    pub public_key: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

/// Ingest writers one process may have at most (`[store] writers`): each keeps one of
/// PostgreSQL's pooled connections for its commits.
pub const MAX_WRITERS: u32 = 4;

/// The pool and what it is.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating an SQLite file if needed) and migrates the database at `url`
    /// (`sqlite:PATH` or `postgres://…`).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let open = |source| StoreError::Open {
            url: redact(url),
            source,
        };
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(open(sqlx::Error::Configuration(
                "the URL must start with sqlite: or postgres://".into(),
            )));
        };
        let url_full = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_string(),
        };
        let options: AnyConnectOptions = url_full.parse().map_err(open)?;
        let pool = AnyPoolOptions::new()
            // SQLite has one writer at a time anyway; a few readers serve the board. On
            // PostgreSQL each ingest writer keeps a connection, and the board, the scheduler,
            // the feed and the notifier share the other four.
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => MAX_WRITERS + 4,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA journal_mode=WAL",
                            "PRAGMA synchronous=FULL",
                            "PRAGMA busy_timeout=10000",
                        ] {
                            sqlx::Executor::execute(&mut *conn, pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(open)?;
        let store = Store { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that reads what it then writes, begun so that another writer makes it
    /// wait rather than fail. On SQLite it takes the write lock at its start (`BEGIN
    /// IMMEDIATE`), waiting through the busy timeout: a deferred transaction that has read
    /// and then writes while another connection holds the lock gets `SQLITE_BUSY` at once,
    /// without waiting (SQLite does not wait there, as two such transactions would wait for
    /// each other), and fails. PostgreSQL locks each row as it writes it.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        for &(version, sql) in MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            let found: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            if found > known {
                return Err(StoreError::TooNew { found, known });
            }
            if found >= version {
                continue;
            }
            let fail = |source| StoreError::Migrate { version, source };
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(fail)?;
            if version == 3 || version == 5 {
                index_all(&mut tx, version).await?;
            }
            sqlx::query("INSERT INTO schema_version (version, applied_ms) VALUES ($1, $2)")
                .bind(version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            tracing::info!(version, "database migrated");
        }
        if self.backend == Backend::Postgres {
            self.collate_c().await?;
        }
        Ok(())
    }

    /// PostgreSQL only: gives every TEXT column of central's tables the `C` collation, where
    /// it has another (the database's default, unless it was created in `C`).
    ///
    /// Central's text keys (event ids, MRNs, post ids, plates, tracker ids) are identifiers,
    /// only ever compared for equality and ordered for the indexes. In any locale but `C`
    /// PostgreSQL compares them through the C library's collation (`strcoll`), and index
    /// lookups and inserts on them are most of what it does for central: the ingest bench
    /// takes about 10 % more departures in `C` (central/README "Store"). SQLite compares
    /// TEXT byte by byte already, which is what `C` does.
    ///
    /// Not a numbered migration but a step run at every start, because the migrations' SQL is
    /// one text for both backends and SQLite knows no collation `"C"`: a TEXT column a later
    /// migration adds gets the collation here too. It changes nothing where every column has
    /// it (one catalog query); where one lacks it (the first start of this version on an
    /// older database), `ALTER COLUMN … TYPE text COLLATE "C"` rebuilds that column's indexes,
    /// not the table. An advisory lock keeps two instances starting at once from doing it
    /// twice; a table another session keeps locked is waited for 5 s at most. It is a matter
    /// of speed, not of correctness: a column PostgreSQL will not change is left as it is (a
    /// warning), never a reason not to start.
    async fn collate_c(&self) -> Result<(), StoreError> {
        let tables = tables();
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(COLLATE_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        // An ALTER waits for every transaction on its table and, while it waits, holds up
        // every one after it: a session of someone else's that keeps a table open (a report
        // left in a transaction) must not stop central's start nor its other instances. Set
        // after the advisory lock, which a second instance starting meanwhile waits out.
        sqlx::raw_sql(&format!(
            "SET LOCAL lock_timeout = '{COLLATE_LOCK_WAIT_MS}ms'"
        ))
        .execute(&mut *tx)
        .await?;
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname::text, a.attname::text FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' \
             AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'text'::regtype \
             AND a.attcollation <> 'pg_catalog.\"C\"'::regcollation \
             ORDER BY 1, 2",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut changed = 0;
        for (table, column) in columns.iter().filter(|(t, _)| tables.contains(t)) {
            // Both names come from the catalog, filtered by the migrations' own table names;
            // quoted all the same.
            let alter = format!(
                "ALTER TABLE \"{table}\" ALTER COLUMN \"{column}\" TYPE text COLLATE \"C\""
            );
            // Each column in a savepoint of its own: one PostgreSQL refuses to change (a view
            // of the operator's over it, a lock another session holds past the wait, a
            // deadlock) keeps its collation, with a warning, and the others are still changed.
            let mut one = sqlx::Connection::begin(&mut *tx).await?;
            match sqlx::raw_sql(&alter).execute(&mut *one).await {
                Ok(_) => {
                    one.commit().await?;
                    changed += 1;
                }
                Err(source) => {
                    one.rollback().await?;
                    let e = StoreError::Collate {
                        table: table.clone(),
                        column: column.clone(),
                        source,
                    };
                    tracing::warn!(
                        error = %e,
                        "the column keeps the database's collation: central works, compares it more slowly, and tries again at its next start"
                    );
                }
            }
        }
        tx.commit().await?;
        if changed > 0 {
            tracing::info!(columns = changed, "text columns given the C collation");
        }
        Ok(())
    }

    // ---- posts ----

    /// Adds or replaces a post's pinned key.
    pub async fn put_post(&self, p: &Post) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM post WHERE id = $1")
            .bind(&p.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO post (id, name, public_key, lat, lon, added_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.public_key)
        .bind(p.lat)
        .bind(p.lon)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        // A new post needs the watchlist too.
        sqlx::query("UPDATE watchlist SET done_ms = NULL")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the watchlist (to be sent to every post).
    pub async fn set_watchlist(&self, doc: &str, by: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM watchlist WHERE id = 'current'")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO watchlist (id, doc, updated_ms, updated_by, done_ms) VALUES ('current', $1, $2, $3, NULL)",
        )
        .bind(doc)
        .bind(now_ms())
        .bind(by)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The watchlist, and whether it still waits to be sent.
    pub async fn watchlist(&self) -> Result<Option<(String, bool)>, StoreError> {
        let row = sqlx::query("SELECT doc, done_ms FROM watchlist WHERE id = 'current'")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let done: Option<i64> = r.try_get(1)?;
            Ok((r.try_get(0)?, done.is_none()))
        })
        .transpose()
    }

    /// Marks the watchlist sent, unless it changed since `doc` was read.
    pub async fn watchlist_sent(&self, doc: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE watchlist SET done_ms = $1 WHERE id = 'current' AND doc = $2")
            .bind(now_ms)
            .bind(doc)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks the watchlist to be sent again (at start, or when a post is added).
    pub async fn watchlist_resend(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE watchlist SET done_ms = NULL")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn posts(&self) -> Result<Vec<Post>, StoreError> {
        let rows = sqlx::query("SELECT id, name, public_key, lat, lon FROM post ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Post {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    public_key: r.try_get(2)?,
                    lat: r.try_get(3)?,
                    lon: r.try_get(4)?,
                })
            })
            .collect()
    }

    // ---- transits ----

    /// Stores a new declaration as a `declared` transit; `false` when the MRN exists already.
    pub async fn declare(&self, t: &Transit, cause: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = insert_transit(&mut tx, t).await?;
        if inserted {
            log_change(
                &mut tx,
                &t.mrn,
                &Change {
                    from: State::Declared,
                    to: State::Declared,
                    cause: cause.into(),
                    note: "declared".into(),
                },
                t.declared_ms,
            )
            .await?;
            crate::routing::declared(&mut tx, t).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    pub async fn transit(&self, mrn: &str) -> Result<Option<Transit>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_transit(&mut conn, mrn).await
    }

    /// Transits, the overdue and flagged first, then by state and MRN.
    pub async fn transits(&self, limit: i64) -> Result<Vec<Transit>, StoreError> {
        let rows = sqlx::query(&transits_sql())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(transit_of_row).collect()
    }

    /// A transit's journal, oldest first.
    pub async fn transit_log(&self, mrn: &str) -> Result<Vec<(i64, Change)>, StoreError> {
        let rows = sqlx::query(TRANSIT_LOG)
            .bind(mrn)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let state = |i: usize| -> Result<State, StoreError> {
                    let s: String = r.try_get(i)?;
                    State::parse(&s).ok_or_else(|| corrupt("transit_log state", s))
                };
                Ok((
                    r.try_get(0)?,
                    Change {
                        from: state(1)?,
                        to: state(2)?,
                        cause: r.try_get(3)?,
                        note: r.try_get(4)?,
                    },
                ))
            })
            .collect()
    }

    /// Applies an operator action with compare-and-set on the version.
    pub async fn act(
        &self,
        mrn: &str,
        action: tracking::Action,
        operator: &str,
        note: &str,
    ) -> Result<Result<Transit, String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(t) = load_transit(&mut tx, mrn).await? else {
            return Ok(Err(format!("no transit {mrn}")));
        };
        let (next, change) = match tracking::act(&t, action, operator, note) {
            Ok(x) => x,
            Err(e) => return Ok(Err(e)),
        };
        if !update_transit(&mut tx, &next, t.version).await? {
            return Ok(Err(format!("{mrn} changed meanwhile; try again")));
        }
        log_change(&mut tx, mrn, &change, now_ms()).await?;
        crate::routing::after_change(&mut tx, &t, &next).await?;
        tx.commit().await?;
        Ok(Ok(next))
    }

    /// Raises every overdue due at `now_ms`; each one once, whatever the number of schedulers
    /// running (compare-and-set on the version). Returns the transits it moved.
    pub async fn scan_overdue(&self, now_ms: i64) -> Result<Vec<Transit>, StoreError> {
        let rows = sqlx::query(&overdue_sql())
            .bind(now_ms)
            .fetch_all(&self.pool)
            .await?;
        let mut moved = Vec::new();
        for row in &rows {
            let t = transit_of_row(row)?;
            let Some((next, change)) = tracking::overdue(&t, now_ms) else {
                continue;
            };
            let mut tx = self.pool.begin().await?;
            if !update_transit(&mut tx, &next, t.version).await? {
                continue; // another scheduler, or a sighting, came first
            }
            log_change(&mut tx, &t.mrn, &change, now_ms).await?;
            raise_alert(
                &mut tx,
                &OperatorAlert {
                    id: format!("overdue:{}:{}", t.mrn, t.leg),
                    kind: "overdue".into(),
                    post: t.expected_post.clone(),
                    mrn: Some(t.mrn.clone()),
                    cause: "scheduler".into(),
                    text: format!("{} {}", t.mrn, change.note),
                },
                now_ms,
            )
            .await?;
            tx.commit().await?;
            moved.push(next);
        }
        Ok(moved)
    }

    /// The posts' events that name a transit or were matched to it by plate, oldest first by event time: (time, post, type,
    /// body).
    pub async fn events_of(
        &self,
        mrn: &str,
    ) -> Result<Vec<(i64, String, String, serde_json::Value)>, StoreError> {
        let rows = sqlx::query(EVENTS_OF)
            .bind(mrn)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let env: String = r.try_get(3)?;
                let body = serde_json::from_str::<serde_json::Value>(&env)
                    .ok()
                    .and_then(|mut v| v.get_mut("body").map(serde_json::Value::take))
                    .unwrap_or_default();
                Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, body))
            })
            .collect()
    }

    // ---- operator alerts and quarantine ----

    pub async fn alerts(&self, open_only: bool) -> Result<Vec<AlertRow>, StoreError> {
        let sql = if open_only { OPEN_ALERTS } else { ALERTS };
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(AlertRow {
                    id: r.try_get(0)?,
                    raised_ms: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    post: r.try_get(3)?,
                    mrn: r.try_get(4)?,
                    cause: r.try_get(5)?,
                    text: r.try_get(6)?,
                    cleared_ms: r.try_get(7)?,
                    cleared_note: r.try_get(8)?,
                })
            })
            .collect()
    }

    /// Keeps the newest `keep` quarantined messages and drops the rest, so a post that floods
    /// central with bad messages cannot fill its disk. Returns how many went.
    pub async fn prune_quarantine(&self, keep: i64) -> Result<u64, StoreError> {
        // The first one to go, in (time, id) order, newest first.
        let Some(row) = sqlx::query(
            "SELECT received_ms, id FROM quarantine ORDER BY received_ms DESC, id DESC LIMIT 1 OFFSET $1",
        )
        .bind(keep)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(0);
        };
        let (ms, id): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        let done = sqlx::query(
            "DELETE FROM quarantine WHERE received_ms < $1 OR (received_ms = $1 AND id <= $2)",
        )
        .bind(ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Quarantined messages per reason (the reason's first words, before any `:`).
    pub async fn quarantine_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        // Grouped in SQL first: the same reason repeats far more often than reasons differ.
        let rows = sqlx::query("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        for r in rows {
            let reason: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            let head = reason.split(':').next().unwrap_or("").to_string();
            *counts.entry(head).or_default() += n;
        }
        Ok(counts.into_iter().collect())
    }

    pub async fn count(&self, table: Table) -> Result<i64, StoreError> {
        let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {}", table.name()))
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(n)
    }

    /// Gaps noticed more than `grace_ms` ago and not asked for within the last `grace_ms`:
    /// `(post, from, to)`.
    pub async fn due_gaps(
        &self,
        now_ms: i64,
        grace_ms: i64,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT post, seq_from, seq_to FROM seq_gap WHERE noticed_ms < $1 \
             AND (requested_ms IS NULL OR requested_ms < $1) ORDER BY post, seq_from LIMIT 1000",
        )
        .bind(now_ms - grace_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Records that central asked `post` to resend the gap starting at `from`, and raises the
    /// post's gap alert (one per post, cleared when its last gap is filled).
    pub async fn gap_requested(
        &self,
        post: &str,
        from: i64,
        to: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE seq_gap SET requested_ms = $1 WHERE post = $2 AND seq_from = $3")
            .bind(now_ms)
            .bind(post)
            .bind(from)
            .execute(&mut *tx)
            .await?;
        raise_alert(
            &mut tx,
            &OperatorAlert {
                id: format!("gap:{post}"),
                kind: "gap".into(),
                post: Some(post.into()),
                mrn: None,
                cause: "scheduler".into(),
                text: format!("{post} has not delivered seq {from}..{to}; a resend was requested"),
            },
            now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A post's delivery state: contiguous and highest seq, and the missing ranges.
    pub async fn post_progress(&self, post: &str) -> Result<Option<PostProgress>, StoreError> {
        Ok(self.progress(Some(post)).await?.remove(post))
    }

    /// Every post's delivery state, in two queries whatever the number of posts.
    pub async fn posts_progress(&self) -> Result<HashMap<String, PostProgress>, StoreError> {
        self.progress(None).await
    }

    async fn progress(
        &self,
        only: Option<&str>,
    ) -> Result<HashMap<String, PostProgress>, StoreError> {
        let (states, gaps) = match only {
            Some(post) => (
                sqlx::query(
                    "SELECT post, contiguous_seq, highest_seq, link, link_ms FROM post_state WHERE post = $1",
                )
                .bind(post)
                .fetch_all(&self.pool)
                .await?,
                sqlx::query(
                    "SELECT post, seq_from, seq_to FROM seq_gap WHERE post = $1 ORDER BY seq_from",
                )
                .bind(post)
                .fetch_all(&self.pool)
                .await?,
            ),
            None => (
                sqlx::query("SELECT post, contiguous_seq, highest_seq, link, link_ms FROM post_state")
                    .fetch_all(&self.pool)
                    .await?,
                sqlx::query("SELECT post, seq_from, seq_to FROM seq_gap ORDER BY post, seq_from")
                    .fetch_all(&self.pool)
                    .await?,
            ),
        };
        let mut out = HashMap::with_capacity(states.len());
        for r in &states {
            out.insert(
                r.try_get::<String, _>(0)?,
                PostProgress {
                    contiguous_seq: r.try_get(1)?,
                    highest_seq: r.try_get(2)?,
                    link: r.try_get(3)?,
                    link_ms: r.try_get(4)?,
                    gaps: Vec::new(),
                },
            );
        }
        for r in &gaps {
            let post: String = r.try_get(0)?;
            if let Some(p) = out.get_mut(&post) {
                p.gaps.push((r.try_get(1)?, r.try_get(2)?));
            }
        }
        Ok(out)
    }
}

/// Tables whose rows are counted in tests and metrics.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    Journal,
    Quarantine,
    Transit,
    OperatorAlert,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Journal => "journal",
            Table::Quarantine => "quarantine",
            Table::Transit => "transit",
            Table::OperatorAlert => "operator_alert",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertRow {
    pub id: String,
    pub raised_ms: i64,
    pub kind: String,
    pub post: Option<String>,
    pub mrn: Option<String>,
    pub cause: String,
    pub text: String,
    pub cleared_ms: Option<i64>,
    pub cleared_note: Option<String>,
}

/// An operator alert to raise.
#[derive(Debug, Clone)]
pub struct OperatorAlert {
    /// What it is about (`overdue:{mrn}:{leg}`, `bad-signature:{post}`, …): raising the same
    /// id again while it exists is one alert, not two.
    pub id: String,
    pub kind: String,
    pub post: Option<String>,
    pub mrn: Option<String>,
    pub cause: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PostProgress {
    pub contiguous_seq: i64,
    pub highest_seq: i64,
    pub link: String,
    pub link_ms: i64,
    pub gaps: Vec<(i64, i64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gap {
    pub from: i64,
    pub to: i64,
    pub noticed_ms: i64,
    pub requested_ms: Option<i64>,
}

const TRANSIT_COLUMNS: &str = "mrn, state, leg, expected_post, expected_by_ms, last_post, \
     last_seen_ms, flags, declaration, declared_ms, version";

// The reads the board, the API and the schedulers make again and again over tables that grow
// with every event, transit and alert: each reaches its rows through an index (migration 8),
// so that its cost stays that of what it returns, not of the months of data beside it
// (`crate::bounded_reads`, checked on both backends by `tests/it/plans.rs`).

/// A transit's events: those that name it, and those matched to it by plate (its sightings of
/// events that name no MRN or another). Two reads joined, each through its index: written as
/// one `OR`, PostgreSQL read the whole journal for every transit page.
pub(crate) const EVENTS_OF: &str = "SELECT time_ms, post, type, envelope, id FROM journal WHERE mrn = $1 \
     UNION ALL \
     SELECT j.time_ms, j.post, j.type, j.envelope, j.id FROM sighting s JOIN journal j ON j.id = s.event_id \
     WHERE s.mrn = $1 AND (j.mrn IS NULL OR j.mrn <> $1) \
     ORDER BY time_ms, id LIMIT 5000";

/// The board's order (overdue, enquiry, diverted, then the flagged, then the latest changed),
/// the same expressions as index `transit_board`, which is how the database knows to read a
/// page from that index's start instead of sorting every transit ever declared.
pub(crate) const BOARD_ORDER: &str = "CASE state WHEN 'overdue' THEN 0 WHEN 'enquiry' THEN 1 \
     WHEN 'diverted' THEN 2 ELSE 3 END, CASE flags WHEN '' THEN 1 ELSE 0 END, updated_ms DESC, mrn";

pub(crate) fn transits_sql() -> String {
    format!("SELECT {TRANSIT_COLUMNS} FROM transit ORDER BY {BOARD_ORDER} LIMIT $1")
}

pub(crate) fn overdue_sql() -> String {
    format!(
        "SELECT {TRANSIT_COLUMNS} FROM transit WHERE expected_by_ms < $1 \
         AND state IN ('departed', 'en_route', 'diverted') ORDER BY expected_by_ms LIMIT 1000"
    )
}

/// A transit's state changes, in order: its primary key's prefix, in its order.
pub(crate) const TRANSIT_LOG: &str =
    "SELECT at_ms, from_state, to_state, cause, note FROM transit_log WHERE mrn = $1 ORDER BY n";

pub(crate) const ALERTS: &str = "SELECT id, raised_ms, kind, post, mrn, cause, text, cleared_ms, \
     cleared_note FROM operator_alert ORDER BY raised_ms DESC, id LIMIT 1000";
pub(crate) const OPEN_ALERTS: &str = "SELECT id, raised_ms, kind, post, mrn, cause, text, cleared_ms, \
     cleared_note FROM operator_alert WHERE cleared_ms IS NULL ORDER BY raised_ms DESC, id LIMIT 1000";

pub(crate) fn conflict(what: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Conflict {
        what: what.into(),
        detail: detail.into(),
    }
}

pub(crate) fn corrupt(what: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: what.into(),
        detail: detail.into(),
    }
}

fn transit_of_row(r: &sqlx::any::AnyRow) -> Result<Transit, StoreError> {
    let state: String = r.try_get(1)?;
    let decl: String = r.try_get(8)?;
    let leg: i64 = r.try_get(2)?;
    let flags: String = r.try_get(7)?;
    Ok(Transit {
        mrn: r.try_get(0)?,
        state: State::parse(&state).ok_or_else(|| corrupt("transit state", state))?,
        leg: usize::try_from(leg).map_err(|_| corrupt("transit leg", leg.to_string()))?,
        expected_post: r.try_get(3)?,
        expected_by_ms: r.try_get(4)?,
        last_post: r.try_get(5)?,
        last_seen_ms: r.try_get(6)?,
        flags: tracking::parse_flags(&flags),
        declaration: serde_json::from_str::<Declaration>(&decl)
            .map_err(|e| corrupt("declaration", e.to_string()))?,
        declared_ms: r.try_get(9)?,
        version: r.try_get(10)?,
    })
}

pub(crate) async fn load_transit(
    conn: &mut AnyConnection,
    mrn: &str,
) -> Result<Option<Transit>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {TRANSIT_COLUMNS} FROM transit WHERE mrn = $1"
    ))
    .bind(mrn)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(transit_of_row).transpose()
}

/// A batch's transits among `keys` ([`keys`]) with the number of their last journaled change:
/// one index lookup per transit (the last entry of its `(mrn, n)` key), whatever the planner
/// believes of the table's size.
pub(crate) fn transits_of(keys: &str) -> String {
    format!(
        "SELECT {TRANSIT_COLUMNS}, \
         (SELECT MAX(n) FROM transit_log WHERE transit_log.mrn = transit.mrn) \
         FROM {keys} JOIN transit ON transit.mrn = v.column1"
    )
}

/// The sightings of a batch's transits among `keys` ([`keys`]).
pub(crate) fn sightings_of(keys: &str) -> String {
    format!(
        "SELECT mrn, event_id, post, time_ms, kind, channel FROM {keys} \
         JOIN sighting ON sighting.mrn = v.column1"
    )
}

/// The transits among `mrns` with their sightings and the number of their last journaled
/// change (0: none yet), read in two statements per few hundred.
pub(crate) async fn load_transits(
    conn: &mut AnyConnection,
    mrns: &[&str],
) -> Result<HashMap<String, (Transit, Vec<Sighting>, i64)>, StoreError> {
    let mut out = HashMap::new();
    for chunk in mrns.chunks(rows_per_statement(conn, 1)) {
        let keys = keys(conn, chunk.len());
        let sql = transits_of(&keys);
        let mut q = multi_row(conn, &sql);
        for m in chunk {
            q = q.bind(*m);
        }
        for r in q.fetch_all(&mut *conn).await? {
            let t = transit_of_row(&r)?;
            let last: Option<i64> = r.try_get(11)?;
            out.insert(t.mrn.clone(), (t, Vec::new(), last.unwrap_or(0)));
        }
        let sql = sightings_of(&keys);
        let mut q = multi_row(conn, &sql);
        for m in chunk {
            q = q.bind(*m);
        }
        for r in q.fetch_all(&mut *conn).await? {
            let mrn: String = r.try_get(0)?;
            if let Some((_, seen, _)) = out.get_mut(&mrn) {
                seen.push(sighting_of_row(&r, 1)?);
            }
        }
    }
    Ok(out)
}

/// Inserts sightings (`(mrn, sighting)`), a few hundred per statement; one already there stays.
pub(crate) async fn insert_sightings(
    conn: &mut AnyConnection,
    rows: &[(String, Sighting)],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(rows_per_statement(conn, 6)) {
        let sql = format!(
            "INSERT INTO sighting (mrn, event_id, post, time_ms, kind, channel) VALUES {} \
             ON CONFLICT (mrn, event_id) DO NOTHING",
            value_rows(conn, chunk.len(), 6)
        );
        let mut q = multi_row(conn, &sql);
        for (mrn, s) in chunk {
            let (kind, channel) = match &s.seen {
                Seen::Passage { channel } => ("passage", Some(channel.as_str())),
                Seen::Release => ("release", None),
            };
            q = q
                .bind(mrn.as_str())
                .bind(s.event_id.as_str())
                .bind(s.post.as_str())
                .bind(s.time_ms)
                .bind(kind)
                .bind(channel);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A sighting from the row's columns `at..at+5` (event_id, post, time_ms, kind, channel).
fn sighting_of_row(r: &sqlx::any::AnyRow, at: usize) -> Result<Sighting, sqlx::Error> {
    let kind: String = r.try_get(at + 3)?;
    let channel: Option<String> = r.try_get(at + 4)?;
    Ok(Sighting {
        event_id: r.try_get(at)?,
        post: r.try_get(at + 1)?,
        time_ms: r.try_get(at + 2)?,
        seen: match kind.as_str() {
            "release" => Seen::Release,
            _ => Seen::Passage {
                channel: channel.unwrap_or_default(),
            },
        },
    })
}

/// Indexes the plates (migration 3) or the trackers (migration 5) of every stored transit.
async fn index_all(conn: &mut AnyConnection, version: i64) -> Result<(), StoreError> {
    let rows = sqlx::query("SELECT declaration FROM transit")
        .fetch_all(&mut *conn)
        .await?;
    for r in rows {
        let text: String = r.try_get(0)?;
        let d: Declaration =
            serde_json::from_str(&text).map_err(|e| corrupt("declaration", e.to_string()))?;
        if version == 3 {
            index_plates(conn, &d).await?;
        } else {
            index_tracker(conn, &d).await?;
        }
    }
    Ok(())
}

/// Indexes a declaration's tracker, so its fixes find the transit.
async fn index_tracker(conn: &mut AnyConnection, d: &Declaration) -> Result<(), StoreError> {
    if let Some(t) = d
        .tracker
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        sqlx::query(
            "INSERT INTO transit_tracker (tracker, mrn) VALUES ($1, $2) ON CONFLICT (tracker, mrn) DO NOTHING",
        )
        .bind(t)
        .bind(&d.mrn)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Indexes a declaration's plates under [`acsgd_contract::plate::index_key`].
async fn index_plates(conn: &mut AnyConnection, d: &Declaration) -> Result<(), StoreError> {
    let keys: BTreeSet<String> = d
        .plates
        .iter()
        .map(|p| acsgd_contract::plate::index_key(p))
        .filter(|k| !k.is_empty())
        .collect();
    for k in keys {
        sqlx::query(
            "INSERT INTO transit_plate (plate, mrn) VALUES ($1, $2) ON CONFLICT (plate, mrn) DO NOTHING",
        )
        .bind(k)
        .bind(&d.mrn)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The MRNs of the transits still followed (not closed or cancelled) that declare a plate
/// [`acsgd_contract::plate::index_key`] maps to one of `keys`.
pub(crate) async fn open_transits_by_plate(
    conn: &mut AnyConnection,
    keys: &[String],
) -> Result<Vec<String>, StoreError> {
    let mut mrns = BTreeSet::new();
    for k in keys {
        let rows = sqlx::query(
            "SELECT p.mrn FROM transit_plate p JOIN transit t ON t.mrn = p.mrn \
             WHERE p.plate = $1 AND t.state NOT IN ('closed', 'cancelled')",
        )
        .bind(k)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            mrns.insert(r.try_get::<String, _>(0)?);
        }
    }
    Ok(mrns.into_iter().collect())
}

async fn insert_transit(conn: &mut AnyConnection, t: &Transit) -> Result<bool, StoreError> {
    let decl =
        serde_json::to_string(&t.declaration).map_err(|e| corrupt("declaration", e.to_string()))?;
    let q = sqlx::query(
        "INSERT INTO transit (mrn, state, leg, expected_post, expected_by_ms, last_post, last_seen_ms, \
         flags, declaration, declared_ms, version, updated_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (mrn) DO NOTHING",
    );
    let done = bind_progress(q.bind(&t.mrn), t)
        .bind(decl)
        .bind(t.declared_ms)
        .bind(t.version)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    index_plates(conn, &t.declaration).await?;
    index_tracker(conn, &t.declaration).await?;
    Ok(true)
}

/// Writes `t` if the stored version is still `was`; `false` when someone else changed it.
pub(crate) async fn update_transit(
    conn: &mut AnyConnection,
    t: &Transit,
    was: i64,
) -> Result<bool, StoreError> {
    write_transits(conn, &[(t, was)]).await
}

/// Journals a transit's change, and queues its notifications in the same transaction.
pub(crate) async fn log_change(
    conn: &mut AnyConnection,
    mrn: &str,
    c: &Change,
    at_ms: i64,
) -> Result<(), StoreError> {
    let n: i64 = sqlx::query(
        "INSERT INTO transit_log (mrn, n, at_ms, from_state, to_state, cause, note) \
         SELECT $1, COALESCE(MAX(n), 0) + 1, $2, $3, $4, $5, $6 FROM transit_log WHERE mrn = $1 \
         RETURNING n",
    )
    .bind(mrn)
    .bind(at_ms)
    .bind(c.from.as_str())
    .bind(c.to.as_str())
    .bind(&c.cause)
    .bind(&c.note)
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)?;
    crate::notify::queue_change(conn, mrn, n, c, at_ms, None).await
}

/// Raises an operator alert; `false` when one with that id is already there.
pub(crate) async fn raise_alert(
    conn: &mut AnyConnection,
    a: &OperatorAlert,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO operator_alert (id, raised_ms, kind, post, mrn, cause, text) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&a.id)
    .bind(now_ms)
    .bind(&a.kind)
    .bind(a.post.clone())
    .bind(a.mrn.clone())
    .bind(&a.cause)
    .bind(&a.text)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    crate::notify::queue_alert(conn, a, now_ms).await?;
    Ok(true)
}

/// Clears an open alert, saying why.
pub(crate) async fn clear_alert(
    conn: &mut AnyConnection,
    id: &str,
    note: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE operator_alert SET cleared_ms = $1, cleared_note = $2 WHERE id = $3 AND cleared_ms IS NULL",
    )
    .bind(now_ms)
    .bind(note)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Raises (`on`) or clears a flag, journaled as `flag X: note` or `flag X cleared: note`;
/// `None` when the transit is unknown or the flag already is so.
pub(crate) async fn set_flag(
    conn: &mut AnyConnection,
    mrn: &str,
    flag: Flag,
    on: bool,
    cause: &str,
    note: &str,
    now_ms: i64,
) -> Result<Option<Transit>, StoreError> {
    let Some(t) = load_transit(conn, mrn).await? else {
        return Ok(None);
    };
    let Some((next, change)) = flagged(&t, flag, on, cause, note) else {
        return Ok(None);
    };
    if !update_transit(conn, &next, t.version).await? {
        return Err(conflict(
            "transit",
            format!("{mrn} changed since this transaction read it"),
        ));
    }
    log_change(conn, mrn, &change, now_ms).await?;
    Ok(Some(next))
}

/// `t` with `flag` raised (`on`) or cleared, and its change, journaled as `flag X: note` or
/// `flag X cleared: note`; `None` when the flag already is so.
pub(crate) fn flagged(
    t: &Transit,
    flag: Flag,
    on: bool,
    cause: &str,
    note: &str,
) -> Option<(Transit, Change)> {
    let mut next = t.clone();
    let changed = if on {
        next.flags.insert(flag)
    } else {
        next.flags.remove(&flag)
    };
    if !changed {
        return None;
    }
    next.version += 1;
    let what = if on { "" } else { " cleared" };
    let change = Change {
        from: t.state,
        to: t.state,
        cause: cause.into(),
        note: format!("flag {}{what}: {note}", flag.as_str()),
    };
    Some((next, change))
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds where a transit stands: state, leg, expected post and time, last post and time, flags.
fn bind_progress<'q>(q: AnyQuery<'q>, t: &Transit) -> AnyQuery<'q> {
    q.bind(t.state.as_str())
        .bind(t.leg as i64)
        .bind(t.expected_post.clone())
        .bind(t.expected_by_ms)
        .bind(t.last_post.clone())
        .bind(t.last_seen_ms)
        .bind(tracking::flags_text(&t.flags))
}

/// Writes transits a batch changed, each if the stored version is still the one it read
/// (`(transit, was)`), a few hundred per statement; `false` when someone else changed one.
pub(crate) async fn write_transits(
    conn: &mut AnyConnection,
    rows: &[(&Transit, i64)],
) -> Result<bool, StoreError> {
    let now = now_ms();
    for chunk in rows.chunks(rows_per_statement(conn, 11)) {
        // `columnN`: how both SQLite and PostgreSQL name a VALUES list's columns.
        let sql = format!(
            "UPDATE transit SET state = v.column2, leg = v.column3, expected_post = v.column4, \
             expected_by_ms = v.column5, last_post = v.column6, last_seen_ms = v.column7, \
             flags = v.column8, version = v.column9, updated_ms = v.column10 \
             FROM (VALUES {}) AS v WHERE transit.mrn = v.column1 AND transit.version = v.column11",
            value_rows(conn, chunk.len(), 11)
        );
        let mut q = multi_row(conn, &sql);
        for (t, was) in chunk {
            q = bind_progress(q.bind(t.mrn.as_str()), t)
                .bind(t.version)
                .bind(now)
                .bind(*was);
        }
        if q.execute(&mut *conn).await?.rows_affected() != chunk.len() as u64 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Journals changes already numbered (`(mrn, n, at_ms, change)`), a few hundred per statement.
pub(crate) async fn insert_logs(
    conn: &mut AnyConnection,
    rows: &[(String, i64, i64, Change)],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(rows_per_statement(conn, 7)) {
        let sql = format!(
            "INSERT INTO transit_log (mrn, n, at_ms, from_state, to_state, cause, note) VALUES {}",
            value_rows(conn, chunk.len(), 7)
        );
        let mut q = multi_row(conn, &sql);
        for (mrn, n, at_ms, c) in chunk {
            q = q
                .bind(mrn.as_str())
                .bind(*n)
                .bind(*at_ms)
                .bind(c.from.as_str())
                .bind(c.to.as_str())
                .bind(c.cause.as_str())
                .bind(c.note.as_str());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

pub(crate) async fn gaps_of(conn: &mut AnyConnection, post: &str) -> Result<Vec<Gap>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq_from, seq_to, noticed_ms, requested_ms FROM seq_gap WHERE post = $1 ORDER BY seq_from",
    )
    .bind(post)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Gap {
                from: r.try_get(0)?,
                to: r.try_get(1)?,
                noticed_ms: r.try_get(2)?,
                requested_ms: r.try_get(3)?,
            })
        })
        .collect()
}

/// How many rows of `params` parameters one multi-row statement should carry: as many as fit
/// in 4 096 parameters, a batch's rows in one statement. (On SQLite that is only cheap with
/// the bare `?` placeholders of [`placeholders`]: a numbered one is found by a walk of the
/// statement's parameter names, which made a 4 000-parameter statement cost the square.)
pub(crate) fn rows_per_statement(_conn: &AnyConnection, params: usize) -> usize {
    (4096 / params.max(1)).max(1)
}

/// A statement built for its number of rows. SQLite does not keep it prepared: each row
/// count is another statement, and a cache of a hundred statements of thousands of
/// parameters each would take tens of MiB (preparing one again costs less than a tenth of
/// running it). PostgreSQL keeps it, where preparing is a round trip of its own.
pub(crate) fn multi_row<'q>(conn: &AnyConnection, sql: &'q str) -> AnyQuery<'q> {
    sqlx::query(sql).persistent(!is_sqlite(conn))
}

/// `(VALUES ($1), ($2), …) AS v`: `n` keys to join a table on (`ON t.key = v.column1`), where
/// `WHERE key IN (…)` would do. PostgreSQL knows how many rows a VALUES list has, so it looks
/// each key up in the table's index; for an `IN` list it guesses from statistics, which on a
/// table that grew since its last ANALYZE made it scan the whole table, every batch (9 ms a
/// batch at 15 000 transits, growing with them). The keys must be distinct.
pub(crate) fn keys(conn: &AnyConnection, n: usize) -> String {
    keys_for(is_sqlite(conn), n)
}

/// [`keys`] for a backend named, not a connection's.
pub(crate) fn keys_for(sqlite: bool, n: usize) -> String {
    format!("(VALUES {}) AS v", value_rows_for(sqlite, n, 1))
}

/// The transaction of an ingest batch, on the writer's own connection. On PostgreSQL its
/// joins are nested loops over the tables' indexes (`SET LOCAL`: for this transaction
/// only, sent with its `BEGIN`). A batch looks up at most a few hundred keys in tables
/// that only grow, which the indexes do at the same cost whatever their size; left to its
/// statistics, the planner hashed the whole of `sighting` and `transit_tracker` every batch
/// whenever they had grown since their last `ANALYZE` (it then takes each key to match a
/// two-hundredth of the table). SQLite's planner looks keys up by itself.
pub async fn begin_batch(
    conn: &mut AnyConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Any>, StoreError> {
    Ok(if is_sqlite(conn) {
        sqlx::Connection::begin(conn).await?
    } else {
        sqlx::Connection::begin_with(
            conn,
            "BEGIN; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off",
        )
        .await?
    })
}

fn is_sqlite(conn: &AnyConnection) -> bool {
    conn.backend_name() == "SQLite"
}

/// One event for the journal.
pub(crate) struct JournalRow<'a> {
    pub id: &'a str,
    pub post: &'a str,
    pub seq: i64,
    pub kind: &'a str,
    pub time_ms: i64,
    pub mrn: Option<&'a str>,
    pub envelope: String,
}

/// Inserts a batch's events into the journal as if none of them were there yet, and returns
/// their ids; `Ok(None)` where one was (a resend, the same event twice, another event under
/// the same seq). On PostgreSQL that is a plain `INSERT`: without `ON CONFLICT`'s look into
/// both unique indexes before each row and without `RETURNING`, about half of the statement's
/// time (5 against 8 – 10 µs a row in the server). Its failure ends the transaction, so the
/// caller rolls it back, begins again and takes what is new with [`insert_journal`]; this
/// must therefore be the transaction's first write. SQLite checks its unique indexes the same
/// way either way, and its [`insert_journal`] costs no more: it is that.
pub(crate) async fn insert_new_journal(
    conn: &mut AnyConnection,
    rows: &[JournalRow<'_>],
    now_ms: i64,
) -> Result<Option<std::collections::HashSet<String>>, StoreError> {
    if is_sqlite(conn) {
        return insert_journal(conn, rows, now_ms).await.map(Some);
    }
    for chunk in rows.chunks(rows_per_statement(conn, 8)) {
        let sql = journal_insert(conn, chunk.len());
        match bind_journal(multi_row(conn, &sql), chunk, now_ms)
            .execute(&mut *conn)
            .await
        {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(rows.iter().map(|r| r.id.to_string()).collect()))
}

/// `INSERT INTO journal … VALUES` with `rows` rows of parameters, as [`bind_journal`] binds them.
fn journal_insert(conn: &AnyConnection, rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO journal (id, post, seq, type, time_ms, received_ms, mrn, envelope) VALUES ",
    );
    sql.push_str(&value_rows(conn, rows, 8));
    sql
}

fn bind_journal<'q>(mut q: AnyQuery<'q>, chunk: &'q [JournalRow<'q>], now_ms: i64) -> AnyQuery<'q> {
    for r in chunk {
        q = q
            .bind(r.id)
            .bind(r.post)
            .bind(r.seq)
            .bind(r.kind)
            .bind(r.time_ms)
            .bind(now_ms)
            .bind(r.mrn)
            .bind(r.envelope.as_str());
    }
    q
}

/// Inserts events into the journal, a few hundred per statement; returns the ids that went in
/// (the others are already there: a resend, or another event under the same seq).
pub(crate) async fn insert_journal(
    conn: &mut AnyConnection,
    rows: &[JournalRow<'_>],
    now_ms: i64,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut fresh = std::collections::HashSet::with_capacity(rows.len());
    for chunk in rows.chunks(rows_per_statement(conn, 8)) {
        let mut sql = journal_insert(conn, chunk.len());
        sql.push_str(" ON CONFLICT DO NOTHING");
        // SQLite: without RETURNING, which buffered a row for every event and was about half
        // of the insert's cost there. All rows in: all fresh. Some: the ones that went in are
        // the rowids just given, consecutive within one statement (one writer at a time).
        let sqlite = is_sqlite(conn);
        if !sqlite {
            sql.push_str(" RETURNING id");
        }
        let q = bind_journal(multi_row(conn, &sql), chunk, now_ms);
        let inserted = if sqlite {
            let n = q.execute(&mut *conn).await?.rows_affected() as i64;
            if n == chunk.len() as i64 {
                fresh.extend(chunk.iter().map(|r| r.id.to_string()));
                continue;
            }
            // (sqlx's `Any` result carries no rowid for SQLite; the connection has it.)
            sqlx::query(
                "SELECT id FROM journal \
                 WHERE rowid > last_insert_rowid() - ? AND rowid <= last_insert_rowid()",
            )
            .bind(n)
            .fetch_all(&mut *conn)
            .await?
        } else {
            q.fetch_all(&mut *conn).await?
        };
        for row in inserted {
            fresh.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(fresh)
}

/// Records what each post delivered in one batch (`seqs` by post): advances its highest seq,
/// opens a gap for what it jumped over, fills (shrinks, splits) the gaps they belong to; then
/// the contiguous seq. Two statements for the whole batch, whatever its posts, plus the
/// gaps of the posts whose gaps changed.
pub(crate) async fn note_seqs(
    conn: &mut AnyConnection,
    by_post: HashMap<String, Vec<i64>>,
    now_ms: i64,
) -> Result<(), StoreError> {
    if by_post.is_empty() {
        return Ok(());
    }
    let posts: Vec<&String> = by_post.keys().collect();
    let mut highest: HashMap<String, i64> = HashMap::new();
    let mut before: HashMap<String, Vec<Gap>> = HashMap::new();
    // Their progress and their gaps in one statement (one round trip less a batch): a
    // `post_state` row has no `seq_to`; a gap always has one.
    for chunk in posts.chunks(rows_per_statement(conn, 2)) {
        let sql = format!(
            "SELECT post, highest_seq, NULL, NULL, NULL FROM post_state WHERE post IN ({}) \
             UNION ALL SELECT post, seq_from, seq_to, noticed_ms, requested_ms FROM seq_gap \
             WHERE post IN ({}) ORDER BY 1, 2",
            placeholders(conn, 1, chunk.len()),
            placeholders(conn, chunk.len() + 1, chunk.len())
        );
        let mut q = multi_row(conn, &sql);
        for p in chunk.iter().chain(chunk) {
            q = q.bind(p.as_str());
        }
        for r in q.fetch_all(&mut *conn).await? {
            let post: String = r.try_get(0)?;
            match r.try_get::<Option<i64>, _>(2)? {
                None => {
                    highest.insert(post, r.try_get(1)?);
                }
                Some(to) => before.entry(post).or_default().push(Gap {
                    from: r.try_get(1)?,
                    to,
                    noticed_ms: r.try_get(3)?,
                    requested_ms: r.try_get(4)?,
                }),
            }
        }
    }
    let mut progress: Vec<(&str, i64, i64)> = Vec::with_capacity(by_post.len());
    for (post, seqs) in &by_post {
        let mut seqs = seqs.clone();
        seqs.sort_unstable();
        let mut top = highest.get(post).copied().unwrap_or(0);
        let was = before.remove(post).unwrap_or_default();
        let mut gaps = was.clone();
        for &seq in &seqs {
            if seq > top {
                if seq > top + 1 {
                    gaps.push(Gap {
                        from: top + 1,
                        to: seq - 1,
                        noticed_ms: now_ms,
                        requested_ms: None,
                    });
                }
                top = seq;
            } else if let Some(i) = gaps.iter().position(|g| g.from <= seq && seq <= g.to) {
                let g = gaps.remove(i);
                for (from, to) in [(g.from, seq - 1), (seq + 1, g.to)] {
                    if from <= to {
                        gaps.push(Gap {
                            from,
                            to,
                            ..g.clone()
                        });
                    }
                }
                gaps.sort_by_key(|g| g.from);
            }
        }
        if gaps != was {
            write_gaps(conn, post, &gaps).await?;
        }
        if !was.is_empty() && gaps.is_empty() {
            clear_alert(
                conn,
                &format!("gap:{post}"),
                "the post delivered the missing seqs",
                now_ms,
            )
            .await?;
        }
        let contiguous = gaps.first().map_or(top, |g| g.from - 1);
        progress.push((post.as_str(), top, contiguous));
    }
    // A post's first events make its row; its link stays what its status says.
    for chunk in progress.chunks(rows_per_statement(conn, 5)) {
        let sql = format!(
            "INSERT INTO post_state (post, highest_seq, contiguous_seq, last_event_ms, link, link_ms) \
             VALUES {} ON CONFLICT (post) DO UPDATE SET highest_seq = excluded.highest_seq, \
             contiguous_seq = excluded.contiguous_seq, last_event_ms = excluded.last_event_ms",
            (0..chunk.len())
                .map(|r| format!(
                    "({}, 'unknown', {})",
                    placeholders(conn, r * 5 + 1, 4),
                    placeholders(conn, r * 5 + 5, 1)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = multi_row(conn, &sql);
        for (post, top, contiguous) in chunk {
            q = q
                .bind(*post)
                .bind(*top)
                .bind(*contiguous)
                .bind(now_ms)
                .bind(now_ms);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `rows` rows of `per_row` placeholders for a multi-row VALUES list: `($1, $2), ($3, $4)`
/// (`(?, ?), (?, ?)` on SQLite, see [`placeholders`]).
pub(crate) fn value_rows(conn: &AnyConnection, rows: usize, per_row: usize) -> String {
    value_rows_for(is_sqlite(conn), rows, per_row)
}

// Written into one string: a batch's statements carry thousands of placeholders, and a
// `format!` and a `join` per placeholder and per row were about a sixth of ingest's own time
// on its commit path (`perf` over the bench's arrivals on PostgreSQL); now under a tenth.
fn value_rows_for(sqlite: bool, rows: usize, per_row: usize) -> String {
    let mut s = String::with_capacity(rows * (per_row * 7 + 4));
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        push_placeholders(&mut s, sqlite, r * per_row + 1, per_row);
        s.push(')');
    }
    s
}

/// `n` placeholders, numbered from `first`: `$first, $first+1, …` on PostgreSQL, bare `?` on
/// SQLite. SQLite binds bare ones in order without looking them up by name; so a statement
/// built with these must bind its parameters once each, in the order they appear, and not mix
/// them with numbered ones.
pub(crate) fn placeholders(conn: &AnyConnection, first: usize, n: usize) -> String {
    let mut s = String::with_capacity(n * 7);
    push_placeholders(&mut s, is_sqlite(conn), first, n);
    s
}

fn push_placeholders(s: &mut String, sqlite: bool, first: usize, n: usize) {
    use std::fmt::Write;
    for i in first..first + n {
        if i > first {
            s.push_str(", ");
        }
        if sqlite {
            s.push('?');
        } else {
            // Writing into a String cannot fail.
            let _ = write!(s, "${i}");
        }
    }
}

/// Replaces a post's gaps.
async fn write_gaps(conn: &mut AnyConnection, post: &str, gaps: &[Gap]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM seq_gap WHERE post = $1")
        .bind(post)
        .execute(&mut *conn)
        .await?;
    for g in gaps {
        sqlx::query(
            "INSERT INTO seq_gap (post, seq_from, seq_to, noticed_ms, requested_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(post)
        .bind(g.from)
        .bind(g.to)
        .bind(g.noticed_ms)
        .bind(g.requested_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The post answered a resend request saying it no longer has `[a, b]` (pruned, evicted, or
/// never numbered): those seqs are no longer waited for. The loss is an operator alert; the
/// gaps shrink or go, and the contiguous seq moves on.
pub(crate) async fn gap_lost(
    conn: &mut AnyConnection,
    post: &str,
    a: i64,
    b: i64,
    cause: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let before = gaps_of(conn, post).await?;
    let mut gaps = Vec::with_capacity(before.len() + 1);
    let mut lost = Vec::new();
    for g in before {
        if g.to < a || g.from > b {
            gaps.push(g);
            continue;
        }
        lost.push((g.from.max(a), g.to.min(b)));
        for (from, to) in [(g.from, a - 1), (b + 1, g.to)] {
            if from <= to {
                gaps.push(Gap {
                    from,
                    to,
                    ..g.clone()
                });
            }
        }
    }
    if lost.is_empty() {
        return Ok(());
    }
    write_gaps(conn, post, &gaps).await?;
    sqlx::query(
        "UPDATE post_state SET contiguous_seq = COALESCE(\
         (SELECT MIN(seq_from) - 1 FROM seq_gap WHERE post = $1), highest_seq) WHERE post = $1",
    )
    .bind(post)
    .execute(&mut *conn)
    .await?;
    let ranges: Vec<String> = lost.iter().map(|(x, y)| format!("{x}..{y}")).collect();
    raise_alert(
        conn,
        &OperatorAlert {
            id: format!("lost:{post}:{}", lost[0].0),
            kind: "lost".into(),
            post: Some(post.into()),
            mrn: None,
            cause: cause.into(),
            text: format!(
                "{post} no longer has seq {}: those events are lost",
                ranges.join(", ")
            ),
        },
        now_ms,
    )
    .await?;
    if gaps_of(conn, post).await?.is_empty() {
        clear_alert(
            conn,
            &format!("gap:{post}"),
            "the post reported the rest lost",
            now_ms,
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn set_link(
    conn: &mut AnyConnection,
    post: &str,
    link: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE post_state SET link = $1, link_ms = $2 WHERE post = $3")
        .bind(link)
        .bind(now_ms)
        .bind(post)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        sqlx::query(
            "INSERT INTO post_state (post, contiguous_seq, highest_seq, link, link_ms, last_event_ms) \
             VALUES ($1, 0, 0, $2, $3, $3) ON CONFLICT (post) DO NOTHING",
        )
        .bind(post)
        .bind(link)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_placeholders_are_numbered_on_postgres_and_bare_on_sqlite() {
        assert_eq!(value_rows_for(false, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(value_rows_for(true, 2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(value_rows_for(false, 1, 1), "($1)");
        assert_eq!(value_rows_for(false, 0, 4), "");
        let mut s = String::new();
        push_placeholders(&mut s, false, 9, 3);
        assert_eq!(s, "$9, $10, $11");
        let mut s = String::new();
        push_placeholders(&mut s, true, 9, 2);
        assert_eq!(s, "?, ?");
        // A batch's journal insert: 512 rows of 8, the last placeholder $4096.
        let all = value_rows_for(false, 512, 8);
        assert!(all.starts_with("($1, $2, $3, $4, $5, $6, $7, $8), ($9, "));
        assert!(all.ends_with("$4095, $4096)"));
        assert_eq!(all.matches('$').count(), 4096);
    }

    fn transit(mrn: &str) -> Transit {
        let doc = serde_json::json!({"mrn": mrn, "plates": ["123ABC02"],
            "itinerary": [{"post": "korgas"}, {"post": "kordai", "within_h": 10}]});
        Transit::declared(Declaration::parse(&doc).unwrap(), 1_000)
    }

    /// On SQLite a transaction that has read, and then writes while another connection holds
    /// the write lock, fails at once (`SQLITE_BUSY`, no busy timeout): the seal operator's
    /// feed failed so, now and then, while a post's events were being committed. Begun by
    /// `begin_write`, it waits for the other writer and then reads what that one wrote.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_reads_first_waits_for_another_writer_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("central.db").display());
        let store = Store::open(&url).await.unwrap();
        let t = transit("26KZ5500000000001A");
        let mut conn = store.pool().acquire().await.unwrap();
        assert!(insert_transit(&mut conn, &t).await.unwrap());
        drop(conn);
        let seen = "SELECT last_seen_ms FROM transit WHERE mrn = $1";
        let set = "UPDATE transit SET last_seen_ms = $1 WHERE mrn = $2";
        // Another writer holds the lock: its transaction has written and is still open.
        let mut other = store.pool().begin().await.unwrap();
        sqlx::query(set)
            .bind(1i64)
            .bind(&t.mrn)
            .execute(&mut *other)
            .await
            .unwrap();
        // Begun deferred, a transaction reads, and its write is refused at once.
        let mut deferred = store.pool().begin().await.unwrap();
        let _: Option<i64> = sqlx::query_scalar(seen)
            .bind(&t.mrn)
            .fetch_one(&mut *deferred)
            .await
            .unwrap();
        let refused = sqlx::query(set)
            .bind(2i64)
            .bind(&t.mrn)
            .execute(&mut *deferred)
            .await
            .unwrap_err();
        match &refused {
            sqlx::Error::Database(e) => assert_eq!(e.code().as_deref(), Some("5"), "{refused}"),
            e => panic!("{e}"),
        }
        deferred.rollback().await.unwrap();
        // Begun to write, it waits for the other's commit (or begins after it: either way it
        // reads the other's write and adds its own).
        let (started, begun) = tokio::sync::oneshot::channel();
        let writer = tokio::spawn({
            let (store, mrn) = (store.clone(), t.mrn.clone());
            async move {
                started.send(()).unwrap();
                let mut tx = store.begin_write().await?;
                let was: Option<i64> = sqlx::query_scalar(seen)
                    .bind(&mrn)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(set)
                    .bind(was.unwrap_or(0) + 1)
                    .bind(&mrn)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, StoreError>(was)
            }
        });
        begun.await.unwrap();
        tokio::task::yield_now().await;
        other.commit().await.unwrap();
        assert_eq!(writer.await.unwrap().unwrap(), Some(1));
        let now: Option<i64> = sqlx::query_scalar(seen)
            .bind(&t.mrn)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(now, Some(2));
    }

    /// A batch writes its transits only if none changed since it read them: one changed
    /// meanwhile fails the whole write, and the transaction's rollback keeps the others too.
    #[tokio::test]
    async fn a_transit_changed_meanwhile_fails_the_batch_that_read_it_before() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("central.db").display());
        let store = Store::open(&url).await.unwrap();
        let (a, b) = (transit("26KZ5500000000001A"), transit("26KZ5500000000002A"));
        let mut conn = store.pool().acquire().await.unwrap();
        assert!(insert_transit(&mut conn, &a).await.unwrap());
        assert!(insert_transit(&mut conn, &b).await.unwrap());
        let moved = |t: &Transit| {
            let mut next = t.clone();
            next.state = State::Departed;
            next.leg = 1;
            next.version += 1;
            next
        };
        let (a1, b1) = (moved(&a), moved(&b));
        // Someone else (the scheduler, another worker) changes b first.
        let mut other = b.clone();
        other.flags.insert(Flag::Watchlist);
        other.version += 1;
        assert!(update_transit(&mut conn, &other, b.version).await.unwrap());
        drop(conn);

        let mut tx = store.pool().begin().await.unwrap();
        let rows = [(&a1, a.version), (&b1, b.version)];
        assert!(!write_transits(&mut tx, &rows).await.unwrap());
        tx.rollback().await.unwrap();
        assert_eq!(store.transit(&a.mrn).await.unwrap().unwrap(), a);
        assert_eq!(store.transit(&b.mrn).await.unwrap().unwrap(), other);

        // Read again, the same batch goes through.
        let mut tx = store.pool().begin().await.unwrap();
        let b2 = moved(&other);
        let rows = [(&a1, a.version), (&b2, other.version)];
        assert!(write_transits(&mut tx, &rows).await.unwrap());
        tx.commit().await.unwrap();
        assert_eq!(
            store.transit(&a.mrn).await.unwrap().unwrap().state,
            State::Departed
        );
        let stored = store.transit(&b.mrn).await.unwrap().unwrap();
        assert_eq!((stored.version, stored.flags.len()), (2, 1));
    }
}
