//! The national seal operator's EGTS retranslation feed (GOST R 56360 / 33472 transport, the
//! appliance's own codec in `acsgd-drivers`): a TCP server on `[positions] egts_listen`. Every
//! packet is answered with a RESPONSE (and each record with a RECORD_RESPONSE) only after the
//! fixes it carries are committed, so a packet central did not store is resent by the
//! operator. A damaged packet costs itself: it is counted, skipped, and the stream is read on
//! from the next valid header. One connection's memory is bounded by the codec's largest
//! packet.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use acsgd_drivers::egts::{self, Scan};
use acsgd_drivers::reading::Reading;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::positions::{Fix, PositionsConfig};
use crate::store::{now_ms, Store};

/// What the feed has seen, for the log and the tests.
#[derive(Debug, Default)]
pub struct FeedCounters {
    pub packets: AtomicU64,
    pub bad_packets: AtomicU64,
    pub fixes: AtomicU64,
}

/// Serves the feed until the listener fails.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    config: PositionsConfig,
    counters: Arc<FeedCounters>,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let (store, config, counters) = (store.clone(), config.clone(), counters.clone());
        tokio::spawn(async move {
            tracing::info!(%peer, "EGTS feed connected");
            match connection(stream, peer, &store, &config, &counters).await {
                Ok(()) => tracing::info!(%peer, "EGTS feed closed"),
                Err(e) => tracing::warn!(%peer, error = %e, "EGTS feed dropped"),
            }
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    store: &Store,
    config: &PositionsConfig,
    counters: &FeedCounters,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut pid: u16 = 0;
    let cause = format!("egts:{peer}");
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let len = match egts::scan(&buf) {
                Scan::Incomplete => break,
                Scan::Skip(k, why) => {
                    counters.bad_packets.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, error = %why, "EGTS: bytes skipped");
                    buf.drain(..k.min(buf.len()));
                    continue;
                }
                Scan::Packet(len) => len,
            };
            let frame: Vec<u8> = buf.drain(..len).collect();
            let packet = match egts::parse_packet(&frame) {
                Ok(p) => p,
                Err(why) => {
                    counters.bad_packets.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, error = %why, "EGTS: packet refused");
                    continue;
                }
            };
            counters.packets.fetch_add(1, Ordering::Relaxed);
            if packet.records.is_empty() {
                continue; // a RESPONSE of theirs, or an empty packet: nothing to answer
            }
            // The fixes by tracker (the record's object id).
            let mut by: BTreeMap<String, Vec<Fix>> = BTreeMap::new();
            for r in egts::readings(&packet) {
                if let Reading::Position(p) = r {
                    let (Some(device), Some(t)) = (p.device, p.time) else {
                        continue;
                    };
                    if !p.valid {
                        continue;
                    }
                    by.entry(device).or_default().push(Fix {
                        time_ms: (t.unix_timestamp_nanos() / 1_000_000) as i64,
                        lat: p.lat,
                        lon: p.lon,
                        speed: p.speed,
                    });
                }
            }
            let fixes: usize = by.values().map(Vec::len).sum();
            let by: Vec<(String, Vec<Fix>)> = by.into_iter().collect();
            // Committed first, acknowledged after: an unacknowledged packet is resent.
            if let Err(e) = store
                .apply_fixes(&by, "egts", &cause, config, now_ms())
                .await
            {
                tracing::error!(%peer, error = %e, "EGTS: fixes not stored; not acknowledged");
                return Err(std::io::Error::other(e.to_string()));
            }
            counters.fixes.fetch_add(fixes as u64, Ordering::Relaxed);
            pid = pid.wrapping_add(1);
            stream.write_all(&egts::response(pid, &packet, 0)).await?;
        }
    }
}
