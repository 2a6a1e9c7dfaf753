//! What central's database benches share: the backends they run on, and the process's
//! resident memory.

use std::future::Future;

use crate::common::Pg;

/// Runs `run(name, url)` on SQLite (`file` in a fresh temporary folder) and on a PostgreSQL
/// cluster started for it, or on one of them (`ACSGD_BENCH_DB=sqlite|postgres|both`, default
/// both), each on a multi-threaded runtime as the service has.
pub fn on_backends<F, Fut>(file: &str, run: F)
where
    F: Fn(&'static str, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let which = std::env::var("ACSGD_BENCH_DB").unwrap_or_else(|_| "both".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    if which == "sqlite" || which == "both" {
        let url = format!("sqlite:{}", dir.path().join(file).display());
        rt.block_on(run("sqlite", url));
    }
    if which == "postgres" || which == "both" {
        // The environment's locale, as a packaged cluster has it (central gives its own text
        // columns the C collation at start, `Store::collate_c`); `ACSGD_PG_LOCALE=C` or
        // another to make the cluster in that one.
        let locale = std::env::var("ACSGD_PG_LOCALE").unwrap_or_default();
        let pg = Pg::start_in(Some(locale.as_str()).filter(|l| !l.is_empty()));
        println!(
            "postgres cluster locale: {}",
            if locale.is_empty() {
                "the environment's"
            } else {
                &locale
            }
        );
        rt.block_on(run("postgres", pg.url()));
    }
}

/// This process's resident set, MiB (Linux).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Memory figures as printed: whole MiB, joined by `sep`.
pub fn mib(figures: &[f64], sep: &str) -> String {
    figures
        .iter()
        .map(|m| format!("{m:.0}"))
        .collect::<Vec<_>>()
        .join(sep)
}
