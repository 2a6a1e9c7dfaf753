//! Supervision of the service's long-lived tasks: nothing dies silently.
//!
//! Every task the service starts (uplink, fusion ticker, sensor store, ingest, status, each
//! sensor's transport, each camera) is handed to [`Supervisor::watch`]. A task that ends
//! before the service stops, by returning or by panicking, is a [`Death`]:
//!
//! * an **essential** task (the appliance cannot do its job without it) ends the service: it
//!   reports a `health` event for the task (`down`, with the panic message), stops in order
//!   and exits non-zero, so that systemd's `Restart=on-failure` starts it again;
//! * a task that is not essential (a camera whose video ended) is a `health` event only.
//!
//! The outbox's writer is an OS thread, not a task: it reports its own death the same way
//! (see `acsgd_outbox::Outbox::died`, a crate that depends on this one).
//!
//! Debug builds have fault points ([`fault_point`]): with `ACSGD_FAULT=<task>` in the
//! environment the named task panics at its next pass, so tests prove the above with the
//! real binary. A task that hangs instead of dying is the watchdog's to catch (the appliance's
//! `notify` module): with `ACSGD_HANG=<task>` it stops at its next pass for good
//! ([`hang_point`], [`hang_point_blocking`]). Release builds compile all of them to nothing.

use std::any::Any;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A task that ended while the service was running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    /// The task's name, also the `component` of its `health` event.
    pub task: String,
    /// Why: the panic message, or that it returned.
    pub why: String,
    /// Whether the service can go on without it.
    pub essential: bool,
}

/// Watches tasks; cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    deaths: mpsc::UnboundedSender<Death>,
    stopping: watch::Receiver<bool>,
}

/// Deaths as they happen.
pub struct Deaths(mpsc::UnboundedReceiver<Death>);

impl Supervisor {
    /// A supervisor for a service that is stopping once `stopping` is true (tasks ending
    /// after that are not deaths).
    pub fn new(stopping: watch::Receiver<bool>) -> (Supervisor, Deaths) {
        let (deaths, rx) = mpsc::unbounded_channel();
        (Supervisor { deaths, stopping }, Deaths(rx))
    }

    /// Watches a spawned task; the handle returned completes when the task does (await it
    /// instead of the task's own at stop).
    pub fn watch(
        &self,
        task: impl Into<String>,
        essential: bool,
        handle: JoinHandle<()>,
    ) -> JoinHandle<()> {
        let task = task.into();
        let this = self.clone();
        tokio::spawn(async move {
            let why = match handle.await {
                Ok(()) => "the task returned".to_string(),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
                Err(e) => e.to_string(),
            };
            this.died(task, why, essential);
        })
    }

    /// Reports a death (unless the service is stopping).
    pub fn died(&self, task: String, why: String, essential: bool) {
        if *self.stopping.borrow() {
            return;
        }
        tracing::error!(task = %task, why = %why, essential, "a task of the service died");
        let _ = self.deaths.send(Death {
            task,
            why,
            essential,
        });
    }
}

impl Deaths {
    /// The next death; pending forever when none can come any more.
    pub async fn next(&mut self) -> Death {
        match self.0.recv().await {
            Some(d) => d,
            None => std::future::pending().await,
        }
    }
}

/// The message a panic carried (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(p: Box<dyn Any + Send>) -> String {
    match p.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => s.to_string(),
            Err(_) => "(a panic without a message)".to_string(),
        },
    }
}

/// Panics if `ACSGD_FAULT` names `task` (debug builds only; see the module docs).
#[cfg(debug_assertions)]
pub fn fault_point(task: &str) {
    if std::env::var("ACSGD_FAULT").is_ok_and(|v| v == task) {
        panic!("fault injected into {task} (ACSGD_FAULT)");
    }
}

/// Nothing: release builds have no fault points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn fault_point(_task: &str) {}

/// Never returns if `ACSGD_HANG` names `task` (debug builds only): a task that hangs at an
/// `.await` (see the module docs).
#[cfg(debug_assertions)]
pub async fn hang_point(task: &str) {
    if std::env::var("ACSGD_HANG").is_ok_and(|v| v == task) {
        tracing::warn!(task, "hang injected (ACSGD_HANG)");
        std::future::pending::<()>().await;
    }
}

/// Nothing: release builds have no hang points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub async fn hang_point(_task: &str) {}

/// Never returns if `ACSGD_HANG` names `task` (debug builds only): a thread that blocks.
#[cfg(debug_assertions)]
pub fn hang_point_blocking(task: &str) {
    if std::env::var("ACSGD_HANG").is_ok_and(|v| v == task) {
        tracing::warn!(task, "hang injected (ACSGD_HANG)");
        loop {
            std::thread::park();
        }
    }
}

/// Nothing: release builds have no hang points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hang_point_blocking(_task: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_or_returns_is_a_death_with_its_message_and_none_after_stop() {
        let (stop, stopping) = watch::channel(false);
        let (sup, mut deaths) = Supervisor::new(stopping);
        let w = sup.watch(
            "fusion",
            true,
            tokio::spawn(async { panic!("index out of range") }),
        );
        w.await.unwrap();
        let d = deaths.next().await;
        assert_eq!(d.task, "fusion");
        assert_eq!(d.why, "panicked: index out of range");
        assert!(d.essential);

        let n = 3;
        let w = sup.watch(
            "camera gate-1",
            false,
            tokio::spawn(async move { assert_eq!(n, 3) }),
        );
        w.await.unwrap();
        let d = deaths.next().await;
        assert_eq!(
            (d.task.as_str(), d.why.as_str(), d.essential),
            ("camera gate-1", "the task returned", false)
        );

        // Once the service stops, tasks end as they should: no deaths.
        stop.send(true).unwrap();
        sup.watch("uplink", true, tokio::spawn(async {}))
            .await
            .unwrap();
        sup.watch("ingest", true, tokio::spawn(async { panic!("late") }))
            .await
            .unwrap();
        drop(sup);
        let none = tokio::time::timeout(std::time::Duration::from_millis(50), deaths.next()).await;
        assert!(none.is_err(), "{none:?}");
    }

    #[test]
    fn panic_messages_of_both_kinds_are_read() {
        let s = std::panic::catch_unwind(|| panic!("{} items", 3)).unwrap_err();
        assert_eq!(panic_message(s), "3 items");
        let s = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(s), "static");
        let s = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(s), "(a panic without a message)");
    }
}
