//! Fusion in the service: the wall clock drives it, the outbox takes what it makes.
//!
//! The sensors' store task feeds readings as they are decoded ([`crate::sensors`]); this task
//! advances the clock every [`TICK`] so passages close and silent sensors are noticed, and
//! reloads declarations and the watchlist whenever the inbox cache changes (central published,
//! the uplink stored). Events are appended in one call per tick; fusion's lock is never held
//! across an await. At shutdown every open passage is closed and stored before the outbox
//! flushes, so a vehicle on the lane when the service stops still gets its passage (with the
//! readings it had). A crash loses no passage either: lane readings are journaled before fusion
//! buffers them ([`crate::fusion::journal::file`]) and buffered again at start; the journal lets go of them
//! only once their passage is in the outbox. Events the outbox refuses (a full disk) are
//! offered again at every tick.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::envelope::Event;
use crate::fusion::transit::Transit;
use crate::fusion::{millis, Fusion, Millis};
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

/// Events refused by the outbox (a full disk) are offered again at the next tick, up to
/// this many; beyond it the oldest are dropped, with an error in the log.
pub const MAX_RETRY: usize = 4096;

/// Appends `events`, keeping the refused ones in `retry` (in order) for the next try. Returns
/// whether everything made so far is on disk.
async fn store(outbox: &Outbox, retry: &mut Vec<Event>, events: Vec<Event>) -> bool {
    retry.extend(events);
    if retry.is_empty() {
        return true;
    }
    let offered = std::mem::take(retry);
    let results = outbox.append_many(offered.clone()).await;
    let mut first = None;
    for (e, r) in offered.into_iter().zip(results) {
        if let Err(why) = r {
            first.get_or_insert(why);
            retry.push(e);
        }
    }
    if let Some(e) = first {
        tracing::error!(
            refused = retry.len(),
            "fusion events not accepted, offered again at the next tick: {e}"
        );
    }
    if retry.len() > MAX_RETRY {
        let dropped = retry.len() - MAX_RETRY;
        retry.drain(..dropped);
        tracing::error!(dropped, "fusion events refused for too long are lost");
    }
    retry.is_empty()
}

/// Advances fusion until `stop`, then closes what is open. Once what a tick made is on disk,
/// the lane journal is told which readings are settled, and synced; then `beat` counts the
/// tick (the systemd watchdog's evidence that fusion moves, see [`crate::notify`]).
pub async fn run(
    fusion: Shared,
    outbox: Outbox,
    beat: crate::notify::Heartbeat,
    mut stop: watch::Receiver<bool>,
) {
    let mut generation = u64::MAX;
    let mut retry = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        crate::supervise::fault_point("fusion");
        crate::supervise::hang_point("fusion").await;
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
        let stored = store(&outbox, &mut retry, events).await;
        settle_and_sync(&fusion, stored).await;
        beat.beat();
    }
    let events = fusion.locked().finish();
    let stored = store(&outbox, &mut retry, events).await;
    settle_and_sync(&fusion, stored).await;
}

/// Once what fusion made is `stored`, tells the lane journal what is settled; then syncs the
/// journal on a blocking thread, fusion unlocked meanwhile.
async fn settle_and_sync(fusion: &Shared, stored: bool) {
    let sync = {
        let mut f = fusion.locked();
        if stored {
            f.settle_journal();
        }
        f.sync_journal()
    };
    let Some(sync) = sync else { return };
    match tokio::task::spawn_blocking(sync).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("lane journal not synced: {e}"),
        Err(e) => tracing::error!("lane journal sync did not finish: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_fusion_does_not_kill_the_next_holder_of_the_lock() {
        let text = "post = \"p\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1883\"\n\
                    [storage]\ndata_dir = \"/tmp/x\"\n";
        let config = crate::config::Config::parse(std::path::Path::new("t.toml"), text).unwrap();
        let shared: Shared = Arc::new(Mutex::new(Fusion::new(&config.fusion_setup(), 0)));
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
