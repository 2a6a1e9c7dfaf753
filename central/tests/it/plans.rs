//! The reads made again and again over tables that grow with traffic
//! (`acsgd_central::bounded_reads`: the board's pages, the API, the schedulers, the publisher)
//! each reach their rows through an index, on both backends, asked of each database's own
//! planner. A read that scans a growing table costs more every day the service runs: a
//! transit page that read the whole journal on PostgreSQL was found this way.

use acsgd_central::store::Backend;
use sqlx::Row;

use crate::common::on_both;

/// The table a plan line scans in full, if it does: PostgreSQL's `Seq Scan on t` (the planner
/// told to avoid them, so one left means no index serves the read), SQLite's `SCAN t` without
/// an index and its automatic indexes (built by reading the whole table).
fn full_scan(backend: Backend, line: &str) -> Option<String> {
    let line = line.trim_start_matches([' ', '-', '>']);
    match backend {
        Backend::Postgres => line
            .split("Seq Scan on ")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string()),
        Backend::Sqlite => {
            if line.contains("AUTOMATIC") {
                return Some(line.to_string());
            }
            let rest = line.strip_prefix("SCAN ")?;
            (!rest.contains(" USING ")).then(|| rest.to_string())
        }
    }
}

/// Whether a plan line sorts what it read (a read that must come in its index's order).
fn sorts(backend: Backend, line: &str) -> bool {
    match backend {
        Backend::Postgres => line.trim_start_matches([' ', '-', '>']).starts_with("Sort"),
        Backend::Sqlite => line.contains("TEMP B-TREE FOR ORDER BY"),
    }
}

/// A plan's lines as each database writes them: PostgreSQL's `EXPLAIN` one a row, SQLite's
/// `EXPLAIN QUERY PLAN` in each row's fourth column.
fn lines(
    backend: Backend,
    rows: Result<Vec<sqlx::any::AnyRow>, sqlx::Error>,
) -> Result<Vec<String>, sqlx::Error> {
    let column = match backend {
        Backend::Postgres => 0,
        Backend::Sqlite => 3,
    };
    rows?
        .iter()
        .map(|r| r.try_get::<String, _>(column))
        .collect()
}

#[test]
fn growing_tables_are_read_through_indexes() {
    on_both(|store, url| async move {
        let backend = store.backend();
        let mut conn = store.pool().acquire().await.unwrap();
        // `EXPLAIN QUERY PLAN` runs no transaction, so it plans with the schema the connection
        // last read, which may predate the migrations another connection ran: read it first.
        sqlx::query("SELECT COUNT(*) FROM sqlite_master")
            .fetch_one(&mut *conn)
            .await
            .ok();
        let mut failed = Vec::new();

        for read in acsgd_central::bounded_reads() {
            let (what, sql, ordered) = (read.what, &read.sql, read.ordered);
            let explain = match backend {
                Backend::Postgres => {
                    // Told that scans and sorts cost a fortune, the planner still uses one
                    // only where no index can serve (its statistics of these empty tables
                    // would otherwise make any plan look as cheap as another).
                    let sort = if ordered { "off" } else { "on" };
                    sqlx::raw_sql(&format!(
                        "SET enable_seqscan = off; SET enable_sort = {sort}"
                    ))
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                    format!("EXPLAIN {sql}")
                }
                Backend::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
            };
            let mut q = sqlx::query(&explain);
            for kind in read.params.chars() {
                q = match kind {
                    't' => q.bind("26KZ5500000000000000"),
                    _ => q.bind(1_i64),
                };
            }
            let plan = lines(backend, q.fetch_all(&mut *conn).await)
                .unwrap_or_else(|e| panic!("{url}: {what}: {e}"));
            assert!(!plan.is_empty(), "{url}: {what}: no plan");
            let scanned: Vec<String> = plan
                .iter()
                .filter_map(|l| full_scan(backend, l))
                .filter(|t| backend == Backend::Sqlite || read.tables.iter().any(|g| g == t))
                .collect();
            if !scanned.is_empty() || (ordered && plan.iter().any(|l| sorts(backend, l))) {
                failed.push(format!("{what}:\n  {}", plan.join("\n  ")));
            }
        }
        assert!(failed.is_empty(), "{url}:\n{}", failed.join("\n"));
    });
}

#[test]
fn a_plan_line_that_scans_a_table_in_full_is_told_apart() {
    let pg = Backend::Postgres;
    assert_eq!(
        full_scan(
            pg,
            "  ->  Seq Scan on journal j  (cost=0.00..1.00 rows=1 width=8)"
        ),
        Some("journal".into())
    );
    assert_eq!(
        full_scan(pg, "Index Scan using journal_mrn on journal"),
        None
    );
    let lite = Backend::Sqlite;
    assert_eq!(full_scan(lite, "SCAN transit"), Some("transit".into()));
    assert_eq!(
        full_scan(lite, "SCAN transit USING INDEX transit_board"),
        None
    );
    assert_eq!(
        full_scan(
            lite,
            "SEARCH s USING INDEX sqlite_autoindex_sighting_1 (mrn=?)"
        ),
        None
    );
    assert!(full_scan(lite, "SEARCH r USING AUTOMATIC COVERING INDEX (mrn=?)").is_some());
    assert!(sorts(pg, "  ->  Sort  (cost=1.0..1.1 rows=1 width=8)"));
    assert!(!sorts(
        pg,
        "Index Scan Backward using operator_alert_raised on operator_alert"
    ));
    assert!(sorts(lite, "USE TEMP B-TREE FOR ORDER BY"));
}

/// A batch's lookups of its keys (`acsgd_central::batch_lookups`: its transits with their
/// last change's number, their sightings, its trackers' transits with their tracks) go through
/// the indexes inside the batch's transaction (`store::begin_batch`), even when the tables
/// grew after their last `ANALYZE`, as they do in a service started on a new database: left
/// to those statistics, PostgreSQL hashed the whole table every batch. And the batch's
/// settings end with its transaction: the connection goes back to the pool as it was.
#[test]
fn a_batchs_lookups_go_through_indexes_whatever_the_statistics_say() {
    on_both(|store, url| async move {
        let backend = store.backend();
        let mut conn = store.pool().acquire().await.unwrap();
        // Statistics of the empty tables, then rows the statistics do not know of.
        if backend == Backend::Postgres {
            sqlx::raw_sql("ANALYZE").execute(&mut *conn).await.unwrap();
        }
        let numbers =
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)";
        for fill in [
            "INSERT INTO sighting (mrn, event_id, post, time_ms, kind, channel) \
             SELECT 'M' || i, 'E' || i, 'korgas', i, 'passage', 'green' FROM n",
            "INSERT INTO transit_tracker (tracker, mrn) SELECT 'seal-' || i, 'M' || i FROM n",
            "INSERT INTO track (mrn, silent, version) SELECT 'M' || i, 0, 1 FROM n",
            "INSERT INTO transit (mrn, state, leg, flags, declaration, declared_ms, version, updated_ms) \
             SELECT 'M' || i, 'en_route', 1, '', '{}', i, 1, i FROM n",
            "INSERT INTO transit_log (mrn, n, at_ms, from_state, to_state, cause, note) \
             SELECT 'M' || i, 1, i, 'declared', 'departed', 'E' || i, '' FROM n",
        ] {
            sqlx::raw_sql(&format!("{numbers} {fill}"))
                .execute(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("{url}: {fill}: {e}"));
        }
        let tables = [
            "transit",
            "transit_log",
            "sighting",
            "transit_tracker",
            "track",
        ];
        let mut tx = acsgd_central::store::begin_batch(&mut conn).await.unwrap();
        for (what, prefix, sql) in acsgd_central::batch_lookups(40) {
            let explain = match backend {
                Backend::Postgres => format!("EXPLAIN {sql}"),
                Backend::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
            };
            let mut q = sqlx::query(&explain);
            for i in 1..=40 {
                q = q.bind(format!("{prefix}{}", i * 70));
            }
            let plan = lines(backend, q.fetch_all(&mut *tx).await)
                .unwrap_or_else(|e| panic!("{url}: {what}: {e}"));
            assert!(!plan.is_empty(), "{url}: {what}: no plan");
            let whole: Vec<&String> = plan
                .iter()
                .filter(|l| {
                    full_scan(backend, l).is_some_and(|t| {
                        let t = t.split_whitespace().next().unwrap_or("");
                        tables.contains(&t) || ["k", "t", "r"].contains(&t)
                    }) || l.contains("Hash Join")
                        || l.contains("Merge Join")
                })
                .collect();
            assert!(whole.is_empty(), "{url}: {what}:\n  {}", plan.join("\n  "));
        }
        tx.commit().await.unwrap();
        if backend == Backend::Postgres {
            for setting in ["enable_hashjoin", "enable_mergejoin"] {
                let now: String = sqlx::query(&format!("SHOW {setting}"))
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap()
                    .try_get(0)
                    .unwrap();
                assert_eq!(now, "on", "{url}: {setting} after the batch");
            }
        }
    });
}
