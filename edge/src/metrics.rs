//! `GET /metrics`: the service's counters in Prometheus' text exposition format (0.0.4) on the
//! technician port (`[metrics] listen`), for a scraper on the post's management network.
//!
//! Everything is rendered from the status the service makes every second (the one the status
//! file and the display show), so a scrape takes none of the pipeline's locks and costs the same
//! at any load; `acsgd_status_age_seconds` says how old that status is, so a status task that
//! stopped shows as a growing age rather than as frozen counters that look healthy.
//!
//! Counters count since the service started (Prometheus handles the reset at a restart);
//! the outbox's are kept in its store and survive restarts.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::status::Status;

/// `[metrics]`: where the technician port listens (absent: not served).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Address to listen on: loopback, or the box's management interface. The counters hold
    /// no personal data, but they show a post's traffic; keep them off the lane network.
    pub listen: SocketAddr,
}

/// Scrapers served at once; more wait in the kernel's queue.
const MAX_CONNECTIONS: usize = 8;
/// A scraper that reads nothing back for this long is closed.
const IDLE: Duration = Duration::from_secs(30);

/// The content type Prometheus asks for (text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Feed {
    status: watch::Receiver<serde_json::Value>,
    started: OffsetDateTime,
}

/// Serves `/metrics` on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: watch::Receiver<serde_json::Value>,
    mut stop: watch::Receiver<bool>,
) {
    let feed = Arc::new(Feed {
        status,
        started: OffsetDateTime::now_utc(),
    });
    let router = Router::new()
        .route("/metrics", get(scrape))
        .with_state(feed);
    let listener = acsgd_display::listener::Capped::new(listener, MAX_CONNECTIONS, IDLE);
    // Ends at the stop, or when the stop's sender is gone.
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "metrics server failed");
    }
}

async fn scrape(State(feed): State<Arc<Feed>>) -> Response {
    let value = feed.status.borrow().clone();
    match serde_json::from_value::<Status>(value) {
        Ok(s) => (
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            render(&s, feed.started, OffsetDateTime::now_utc()),
        )
            .into_response(),
        // Only before the first status (the store could not be read at start).
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "no status yet\n").into_response(),
    }
}

/// The exposition text for status `s`, of a service started at `started`, as of `now`.
pub fn render(s: &Status, started: OffsetDateTime, now: OffsetDateTime) -> String {
    let mut t = Text::default();
    let version = env!("CARGO_PKG_VERSION");
    let post = s.post.as_deref().unwrap_or("");
    t.gauge(
        "acsgd_build_info",
        "Version and post of the running appliance (always 1).",
    );
    t.sample(
        "acsgd_build_info",
        &[("version", version), ("post", post)],
        1.0,
    );
    t.gauge(
        "acsgd_start_time_seconds",
        "When the service started, in seconds since the Unix epoch.",
    );
    t.sample("acsgd_start_time_seconds", &[], unix(started));
    let age = time::OffsetDateTime::parse(&s.time, &time::format_description::well_known::Rfc3339)
        .map(|at| (now - at).as_seconds_f64().max(0.0))
        .unwrap_or(f64::INFINITY);
    t.gauge(
        "acsgd_status_age_seconds",
        "Age of the status these figures come from (made every second; growing: the status task stopped).",
    );
    t.sample("acsgd_status_age_seconds", &[], age);

    let o = &s.outbox;
    let c = &o.counters;
    t.counters(
        "acsgd_outbox",
        &[
            (
                "accepted",
                "Events accepted into the outbox (on disk).",
                c.accepted,
            ),
            (
                "delivered",
                "Events the broker acknowledged and the outbox removed.",
                c.delivered,
            ),
            (
                "evicted",
                "Events removed unsent to keep the outbox within its quota.",
                c.evicted,
            ),
            (
                "refused",
                "Events refused (full disk, quota, invalid).",
                c.refused,
            ),
            (
                "corrupt",
                "Stored events found corrupt and skipped.",
                c.corrupt,
            ),
            (
                "quarantined",
                "Damaged store files moved aside at start.",
                c.quarantined,
            ),
            (
                "dead_lettered",
                "Events the broker refused for good, kept in the dead-letter tree.",
                c.dead_lettered,
            ),
        ],
    );
    t.gauges(
        "acsgd_outbox",
        &[
            (
                "backlog_events",
                "Events waiting for the broker's acknowledgement.",
                Some(o.backlog_events),
            ),
            (
                "backlog_bytes",
                "Bytes of the events waiting.",
                Some(o.backlog_bytes),
            ),
            (
                "quota_bytes",
                "The outbox's quota in bytes.",
                Some(o.quota_bytes),
            ),
            (
                "last_seq",
                "Sequence number of the newest accepted event.",
                Some(o.last_seq),
            ),
            (
                "dead_letters",
                "Events in the dead-letter tree.",
                Some(o.dead_letters),
            ),
            (
                "inbox_entries",
                "Declarations, watchlist and config entries cached from central.",
                Some(o.inbox_entries),
            ),
            (
                "log_bytes",
                "Bytes of the event log's files: pending, kept for resends, not yet reclaimed.",
                Some(o.log_bytes),
            ),
            (
                "log_segments",
                "Segment files of the event log.",
                Some(o.log_segments),
            ),
            (
                "disk_free_bytes",
                "Free space on the data directory's file system.",
                o.disk_free_bytes,
            ),
        ],
    );
    t.gauge(
        "acsgd_outbox_oldest_age_seconds",
        "Age of the oldest event not yet delivered (0: nothing waits).",
    );
    t.sample(
        "acsgd_outbox_oldest_age_seconds",
        &[],
        o.oldest_age_s.unwrap_or(0.0),
    );

    if let Some(u) = &s.uplink {
        t.gauge(
            "acsgd_uplink_connected",
            "1 while the uplink holds a session with the broker.",
        );
        t.sample(
            "acsgd_uplink_connected",
            &[],
            f64::from(u8::from(u.connected)),
        );
        t.counters(
            "acsgd_uplink",
            &[
                ("forwarded", "Events the broker acknowledged.", u.forwarded),
                (
                    "resent",
                    "Events sent again after a lost session.",
                    u.resent,
                ),
                ("connects", "Sessions opened with the broker.", u.connects),
                (
                    "dead_lettered",
                    "Events the broker refused for good.",
                    u.dead_lettered,
                ),
                (
                    "inbound_refused",
                    "Messages from central refused (too large, invalid).",
                    u.inbound_refused,
                ),
            ],
        );
    }

    type Field = fn(&crate::status::SensorCounters) -> u64;
    let sensor_fields: [(&str, &str, Field); 10] = [
        ("frames", "Frames decoded.", |c| c.frames),
        (
            "bad_frames",
            "Frames refused (damaged, unknown); the stream resynchronised.",
            |c| c.bad_frames,
        ),
        ("readings", "Readings handed to fusion.", |c| c.readings),
        (
            "acknowledged",
            "Frames acknowledged to the device after they were accepted.",
            |c| c.acknowledged,
        ),
        (
            "not_accepted",
            "Frames not acknowledged to the device because they were not accepted.",
            |c| c.not_accepted,
        ),
        (
            "connections",
            "Connections (or port opens) from the device.",
            |c| c.connections,
        ),
        (
            "refused_connections",
            "Connections refused (over the limit).",
            |c| c.refused_connections,
        ),
        (
            "reconnects",
            "Times the port or stream was opened again after it failed.",
            |c| c.reconnects,
        ),
        (
            "commands",
            "Commands written to the device (a lane node's barrier and lights).",
            |c| c.commands,
        ),
        (
            "expired_commands",
            "Commands dropped unsent because the port was away past their deadline.",
            |c| c.expired_commands,
        ),
    ];
    if !s.sensors.is_empty() {
        for (name, help, get) in sensor_fields {
            let metric = format!("acsgd_sensor_{name}_total");
            t.counter(&metric, help);
            for (id, c) in &s.sensors {
                t.sample(&metric, &[("sensor", id)], get(c) as f64);
            }
        }
    }

    if let Some(f) = &s.fusion {
        t.counter(
            "acsgd_fusion_readings_total",
            "Sensor readings fusion took in.",
        );
        t.sample("acsgd_fusion_readings_total", &[], f.readings as f64);
        t.counter(
            "acsgd_fusion_passages_total",
            "Passages fusion closed, by risk channel.",
        );
        let green = f.passages.saturating_sub(f.red + f.yellow);
        for (channel, v) in [("green", green), ("yellow", f.yellow), ("red", f.red)] {
            t.sample(
                "acsgd_fusion_passages_total",
                &[("channel", channel)],
                v as f64,
            );
        }
        t.counters(
            "acsgd_fusion",
            &[
                ("alerts", "Alerts fusion raised.", f.alerts),
                (
                    "unmatched",
                    "Passages with no transit declaration matched.",
                    f.unmatched,
                ),
                (
                    "positions",
                    "Tracker positions fusion took in.",
                    f.positions,
                ),
            ],
        );
    }
    t.0
}

fn unix(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}

/// The exposition text being written.
#[derive(Default)]
struct Text(String);

impl Text {
    /// `{prefix}_{name}_total` counters without labels, one family each.
    fn counters(&mut self, prefix: &str, rows: &[(&str, &str, u64)]) {
        for (name, help, v) in rows {
            let metric = format!("{prefix}_{name}_total");
            self.counter(&metric, help);
            self.sample(&metric, &[], *v as f64);
        }
    }

    /// `{prefix}_{name}` gauges without labels; a row without a value is left out.
    fn gauges(&mut self, prefix: &str, rows: &[(&str, &str, Option<u64>)]) {
        for (name, help, v) in rows {
            if let Some(v) = v {
                let metric = format!("{prefix}_{name}");
                self.gauge(&metric, help);
                self.sample(&metric, &[], *v as f64);
            }
        }
    }

    fn counter(&mut self, name: &str, help: &str) {
        self.family(name, "counter", help);
    }

    fn gauge(&mut self, name: &str, help: &str) {
        self.family(name, "gauge", help);
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v, true));
            }
            self.0.push('}');
        }
        // Finite by construction; a value that is not is written the way Prometheus reads it.
        let v = if value.is_nan() {
            "NaN".to_string()
        } else if value.is_infinite() {
            if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
        } else {
            value.to_string()
        };
        let _ = writeln!(self.0, " {v}");
    }
}

/// The format's escapes: backslash and newline everywhere, the double quote in label values.
fn escape(s: &str, label: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped_as_the_format_says() {
        assert_eq!(escape("a\\b\n\"c\"", true), "a\\\\b\\n\\\"c\\\"");
        assert_eq!(escape("say \"hi\"\n", false), "say \"hi\"\\n");
        let mut t = Text::default();
        t.sample("m", &[("sensor", "x\"y"), ("b", "z")], 3.0);
        t.sample("n", &[], f64::INFINITY);
        assert_eq!(t.0, "m{sensor=\"x\\\"y\",b=\"z\"} 3\nn +Inf\n");
    }
}
