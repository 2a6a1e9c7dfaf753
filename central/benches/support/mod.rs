//! What central's benches share: the backends they run on, the process's resident memory,
//! and the CPU time of the processes a run starts (the database server, the brokers). Each
//! bench uses part of it.
#![allow(dead_code)]

use std::collections::HashMap;
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

/// A process as `/proc/PID/stat` has it: its parent, its command, and the CPU time (seconds)
/// it has used so far, in user and in system mode.
pub struct Proc {
    pub parent: u32,
    pub comm: String,
    pub user_s: f64,
    pub system_s: f64,
}

impl Proc {
    /// CPU seconds used so far, user and system.
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.system_s
    }
}

/// One process (`"self"` or a process id), from `/proc/{pid}/stat` (Linux); `None` when it is
/// gone or the file cannot be read.
pub fn process(pid: &str) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command is in parentheses and may hold spaces; the fields follow the last ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // CPU times are in clock ticks; USER_HZ is 100 on every Linux this runs on.
    Some(Proc {
        parent: num(1) as u32,
        comm: stat[open + 1..close].to_string(),
        user_s: num(11) as f64 / 100.0,
        system_s: num(12) as f64 / 100.0,
    })
}

/// Every process of the machine, by id (Linux).
pub fn processes() -> HashMap<u32, Proc> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let pid = name.to_string_lossy().parse::<u32>().ok()?;
            Some((pid, process(&pid.to_string())?))
        })
        .collect()
}

/// Whether `pid` is one of `roots` or descends from one of them.
pub fn descends(procs: &HashMap<u32, Proc>, pid: u32, roots: &[u32]) -> bool {
    let mut p = pid;
    // A process tree is shallow; the bound only guards against a loop read mid-change.
    for _ in 0..64 {
        if roots.contains(&p) {
            return true;
        }
        match procs.get(&p) {
            Some(proc) if proc.parent != 0 => p = proc.parent,
            _ => return false,
        }
    }
    false
}

/// The CPU seconds used so far by `root` and every process under it (a database server's
/// postmaster and its backends).
pub fn tree_cpu_s(root: u32) -> f64 {
    let procs = processes();
    procs
        .iter()
        .filter(|(pid, _)| descends(&procs, **pid, &[root]))
        .map(|(_, p)| p.cpu_s())
        .sum()
}
