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
            let plan: Vec<String> = q
                .fetch_all(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("{url}: {what}: {e}"))
                .iter()
                .map(|r| match backend {
                    Backend::Postgres => r.try_get::<String, _>(0).unwrap(),
                    Backend::Sqlite => r.try_get::<String, _>(3).unwrap(),
                })
                .collect();
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
