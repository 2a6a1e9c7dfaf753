//! Fusion in the service: the wall clock drives it, the outbox takes what it makes.
//!
//! The sensors' store task feeds readings as they are decoded ([`crate::sensors`]); this task
//! advances the clock every [`TICK`] so passages close and silent sensors are noticed, and
//! reloads declarations and the watchlist whenever the inbox cache changes (central published,
//! the uplink stored). Events are appended in one call per tick; fusion's lock is never held
//! across an await. At shutdown every open passage is closed and stored before the outbox
//! flushes, so a vehicle on the lane when the service stops still gets its passage (with the
//! readings it had); readings are not persisted, so a crash loses the open passages' readings,
//! not accepted events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::transit::Transit;
use super::{millis, Fusion, Millis};
use crate::envelope::Event;
use crate::outbox::{Outbox, Store};

/// How often the clock advances.
pub const TICK: Duration = Duration::from_millis(250);

/// Fusion shared by the sensor store task and the ticker.
pub type Shared = Arc<Mutex<Fusion>>;

/// The fusion state, locked. A panic inside fusion poisons the lock; the supervisor reports
/// that task's death and the service stops for it. Until then the other holders go on with
/// the state as the panic left it instead of dying of the poisoned lock in turn (one death,
/// not a cascade), and the stop can still close the open passages.
pub trait Locked {
    fn locked(&self) -> std::sync::MutexGuard<'_, Fusion>;
}

impl Locked for Shared {
    fn locked(&self) -> std::sync::MutexGuard<'_, Fusion> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The wall clock as fusion counts it.
pub fn now() -> Millis {
    millis(time::OffsetDateTime::now_utc())
}

/// Reads declarations and watchlist from the inbox cache into a fresh index. Returns it and
/// the problems (one line each) with documents that could not be used.
pub fn load_transit(store: &Store) -> (Transit, Vec<String>) {
    let mut t = Transit::default();
    let mut problems = Vec::new();
    let keys = match store.inbox_keys("declarations/") {
        Ok(k) => k,
        Err(e) => return (t, vec![format!("inbox: {e}")]),
    };
    for key in keys {
        match store.inbox_get(&key) {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(doc) => {
                    if let Err(e) = t.upsert(&doc) {
                        problems.push(format!("{key}: {e}"));
                    }
                }
                Err(e) => problems.push(format!("{key}: not JSON: {e}")),
            },
            Ok(None) => {}
            Err(e) => problems.push(format!("{key}: {e}")),
        }
    }
    if let Ok(Some(bytes)) = store.inbox_get("watchlist") {
        match serde_json::from_slice(&bytes) {
            Ok(doc) => {
                if let Err(e) = t.set_watchlist(&doc) {
                    problems.push(format!("watchlist: {e}"));
                }
            }
            Err(e) => problems.push(format!("watchlist: not JSON: {e}")),
        }
    }
    (t, problems)
}

async fn store(outbox: &Outbox, events: Vec<Event>) {
    if events.is_empty() {
        return;
    }
    let results = outbox.append_many(events).await;
    if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
        let n = results.iter().filter(|r| r.is_err()).count();
        tracing::error!(refused = n, "fusion events not accepted: {e}");
    }
}

/// Advances fusion until `stop`, then closes what is open.
pub async fn run(fusion: Shared, outbox: Outbox, mut stop: watch::Receiver<bool>) {
    let mut generation = u64::MAX;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        crate::supervise::fault_point("fusion");
        let g = outbox.store().inbox_generation();
        if g != generation {
            generation = g;
            let store = outbox.store().clone();
            if let Ok((t, problems)) =
                tokio::task::spawn_blocking(move || load_transit(&store)).await
            {
                for p in &problems {
                    tracing::warn!("declaration cache: {p}");
                }
                tracing::info!(declarations = t.len(), "declarations loaded");
                *fusion.locked().transit_mut() = t;
            }
        }
        let events = fusion.locked().advance(now());
        store(&outbox, events).await;
    }
    let events = fusion.locked().finish();
    store(&outbox, events).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_fusion_does_not_kill_the_next_holder_of_the_lock() {
        let text = "post = \"p\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1883\"\n\
                    [storage]\ndata_dir = \"/tmp/x\"\n";
        let config = crate::config::Config::parse(std::path::Path::new("t.toml"), text).unwrap();
        let shared: Shared = Arc::new(Mutex::new(Fusion::new(&config, 0)));
        let s = shared.clone();
        let died = std::thread::spawn(move || {
            let _g = s.lock().unwrap();
            panic!("inside fusion");
        })
        .join();
        assert!(died.is_err());
        assert!(shared.is_poisoned());
        // The stop still closes what is open.
        assert!(shared.locked().finish().is_empty());
        assert!(shared.locked().advance(1_000).is_empty());
    }
}
