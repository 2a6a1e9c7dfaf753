//! Local event ingest: JSON lines over TCP, for integrations on the post's own network (a
//! legacy lane controller, a scripted test) and for the crash tests.
//!
//! Each request line is one event:
//! ```text
//! {"type":"alert","body":{"rule":"radiation.gamma"}}          optional: "id", "time"
//! ```
//! and gets one answer line, in order, sent only once the event is on disk:
//! ```text
//! {"ok":true,"seq":42,"id":"5f0c…"}
//! {"ok":false,"error":"refused: outbox quota full and `position` is bulk data"}
//! ```
//! A producer that has no `"ok":true` for an event must assume it was not accepted and send it
//! again (with the same `id` if it wants central to de-duplicate). Lines queued together on a
//! connection share one disk flush. A line longer than [`MAX_LINE`] costs that line only.
//!
//! A connection that completes no line for `idle_timeout_s` is closed (a line trickled a byte
//! at a time included), and one address holds at most `max_per_client` of the
//! `max_connections` slots: idle or slow clients cannot hold the port shut.
//!
//! With `[[ingest.clients]]` configured, a connection's first line is `{"auth":"<token>"}`,
//! answered `{"ok":true,"client":"<name>"}` (or refused, and the connection closed), and the
//! client may then send only its configured event types. Without clients the port is open to
//! whoever reaches it, which the configuration allows on loopback only.
//!
//! The audit events `ack` and `override` are refused here: they record what a signed-in officer
//! did on the display, which writes them itself; anyone who can reach this port could
//! otherwise sign one in a supervisor's name.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::envelope::{valid_type, Event};
use crate::outbox::Outbox;

/// Longest accepted request line, newline included.
pub const MAX_LINE: usize = 256 * 1024;
/// Event types only the officer display writes (see the module docs).
pub const AUDIT_TYPES: [&str; 2] = ["ack", "override"];
/// Lines answered with one flush at most.
const MAX_PIPELINE: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(rename = "type")]
    kind: String,
    body: Value,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    time: Option<String>,
}

/// A configured client: its name, its token, the types it may send.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    token: Vec<u8>,
    pub types: Vec<String>,
}

/// Compares in time that depends on the lengths only, not on how much of a guess is right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Who may write: everyone (no clients configured, loopback only), or the clients by token.
#[derive(Debug, Clone, Default)]
pub struct Clients(Vec<Client>);

impl Clients {
    pub fn from_config(i: &crate::config::Ingest) -> Clients {
        Clients(
            i.clients
                .iter()
                .map(|c| Client {
                    name: c.name.clone(),
                    token: c.token.as_bytes().to_vec(),
                    types: c.types.clone(),
                })
                .collect(),
        )
    }

    /// The client a token belongs to; every client's token is compared in full.
    fn find(&self, token: &str) -> Option<&Client> {
        let mut found = None;
        for c in &self.0 {
            if same_secret(&c.token, token.as_bytes()) {
                found = Some(c);
            }
        }
        found
    }
}

/// What one listener allows (`[ingest]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one address may hold at once.
    pub max_per_client: usize,
    /// How long a connection may go without completing a request line.
    pub idle: Duration,
}

impl From<&crate::config::Ingest> for Limits {
    fn from(i: &crate::config::Ingest) -> Self {
        Limits {
            max_connections: i.max_connections,
            max_per_client: i.max_per_client,
            idle: Duration::from_secs(i.idle_timeout_s),
        }
    }
}

/// Connections held per client address, released when a connection ends.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

impl PerClient {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut m = self.0.lock().expect("per-client lock");
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot(self.clone(), ip))
    }
}

struct ClientSlot(Arc<PerClient>, IpAddr);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().expect("per-client lock");
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Serves ingest connections until `shutdown` is true.
pub async fn serve(
    listener: TcpListener,
    outbox: Outbox,
    limits: Limits,
    clients: Clients,
    mut shutdown: watch::Receiver<bool>,
) {
    let clients = Arc::new(clients);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(PerClient::default());
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        // Wait for a free slot first, so extra clients queue in the kernel, not in memory.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "ingest accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some(client) = per_client.take(peer.ip(), limits.max_per_client) else {
            // Over its share: told why in one line, then closed, and its slot is free again.
            tracing::warn!(%peer, "ingest: more than {} connections from one address; closing", limits.max_per_client);
            let mut stream = stream;
            let line = format!(
                "{}\n",
                json!({"ok": false, "error": format!("more than {} connections from this address", limits.max_per_client)})
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(line.as_bytes()))
                .await;
            continue;
        };
        let outbox = outbox.clone();
        let stop = shutdown.clone();
        let clients = clients.clone();
        tasks.spawn(async move {
            if let Err(e) = connection(stream, peer, outbox, limits.idle, &clients, stop).await {
                tracing::debug!(%peer, error = %e, "ingest connection ended");
            }
            drop(client);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    // Connections finish the batch they hold, then close.
    while tasks.join_next().await.is_some() {}
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    outbox: Outbox,
    idle: Duration,
    clients: &Clients,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut line = Vec::with_capacity(1024);
    // With clients configured, the first line names the client; nothing else is read before.
    let client = if clients.0.is_empty() {
        None
    } else {
        let n = match tokio::time::timeout(idle, read_line(&mut r, &mut line)).await {
            Ok(n) => n?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let token = serde_json::from_slice::<Value>(&line)
            .ok()
            .and_then(|v| v.get("auth").and_then(Value::as_str).map(str::to_string));
        let Some(c) = token.as_deref().and_then(|t| clients.find(t)) else {
            tracing::warn!(%peer, "ingest: a connection without a valid token; closing");
            let answer = json!({"ok": false, "error": "first send {\"auth\":\"<token>\"} with a configured client's token"});
            w.write_all(format!("{answer}\n").as_bytes()).await?;
            return Ok(());
        };
        tracing::info!(%peer, client = %c.name, "ingest client signed in");
        w.write_all(format!("{}\n", json!({"ok": true, "client": c.name})).as_bytes())
            .await?;
        Some(c)
    };
    loop {
        let mut parsed: Vec<Result<Event, String>> = Vec::new();
        // One blocking read for the first line, then whatever is already buffered.
        loop {
            line.clear();
            // The first line of a batch has `idle` to arrive whole; the rest are buffered.
            let n = tokio::select! {
                n = tokio::time::timeout(idle, read_line(&mut r, &mut line)) => match n {
                    Ok(n) => n?,
                    Err(_) => {
                        tracing::info!(%peer, "ingest: no complete line for {idle:?}; closing");
                        return Ok(());
                    }
                },
                _ = shutdown.changed(), if parsed.is_empty() => return Ok(()),
            };
            if n == 0 {
                if parsed.is_empty() {
                    return Ok(());
                }
                break;
            }
            parsed.push(parse(&line).and_then(|ev| match client {
                Some(c) if !c.types.contains(&ev.kind) => Err(format!(
                    "type {:?} is not among the types client {:?} may send",
                    ev.kind, c.name
                )),
                _ => Ok(ev),
            }));
            if parsed.len() >= MAX_PIPELINE || !r.buffer().contains(&b'\n') {
                break;
            }
        }
        let events: Vec<Event> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let mut results = outbox.append_many(events).await.into_iter();
        let mut out = Vec::with_capacity(parsed.len() * 64);
        for p in parsed {
            let answer = match p {
                Err(e) => json!({"ok": false, "error": e}),
                Ok(_) => match results.next() {
                    Some(Ok(a)) => json!({"ok": true, "seq": a.seq, "id": a.id}),
                    Some(Err(e)) => json!({"ok": false, "error": e.to_string()}),
                    None => json!({"ok": false, "error": "outbox is closed"}),
                },
            };
            serde_json::to_writer(&mut out, &answer).expect("writing to a Vec");
            out.push(b'\n');
        }
        w.write_all(&out).await?;
        tracing::trace!(%peer, bytes = out.len(), "ingest answered");
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes. A longer line is consumed to its end and
/// returned truncated (it then fails to parse): it costs that line, not the connection.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let n = (&mut *r)
        .take(MAX_LINE as u64)
        .read_until(b'\n', buf)
        .await?;
    if n == MAX_LINE && buf.last() != Some(&b'\n') {
        let mut skipped = Vec::new();
        loop {
            skipped.clear();
            let m = (&mut *r)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut skipped)
                .await?;
            if m == 0 || skipped.last() == Some(&b'\n') {
                break;
            }
        }
        buf.truncate(0);
        buf.extend_from_slice(b"\0line too long");
    }
    Ok(n)
}

fn parse(line: &[u8]) -> Result<Event, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.starts_with(b"\0line too long") {
        return Err(format!("line longer than {MAX_LINE} bytes"));
    }
    let req: Request = serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
    if !valid_type(&req.kind) {
        return Err(format!(
            "bad type {:?}: use 1-32 lowercase letters, digits, '_'; not status, key or in",
            req.kind
        ));
    }
    if AUDIT_TYPES.contains(&req.kind.as_str()) {
        return Err(format!(
            "type {:?} is written only by the officer display for a signed-in officer, never through ingest",
            req.kind
        ));
    }
    if !req.body.is_object() {
        return Err("body must be a JSON object".into());
    }
    let mut ev = Event::now(req.kind, req.body);
    if let Some(id) = req.id {
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("id must be 1-64 letters, digits or '-'".into());
        }
        ev.id = id;
    }
    if let Some(t) = req.time {
        ev.time = time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("time {t:?} is not RFC 3339: {e}"))?;
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_before_they_reach_the_outbox() {
        let ok = parse(
            br#"{"type":"alert","body":{"a":1},"id":"abc-1","time":"2026-11-22T03:00:00+05:00"}"#,
        )
        .unwrap();
        assert_eq!((ok.kind.as_str(), ok.id.as_str()), ("alert", "abc-1"));
        assert_eq!(ok.time, time::macros::datetime!(2026-11-21 22:00:00 UTC));
        for (line, want) in [
            (&br#"{"type":"Alert","body":{}}"#[..], "bad type"),
            (br#"{"type":"status","body":{}}"#, "bad type"),
            (
                br#"{"type":"override","body":{"passage":"p-1","to":"green"}}"#,
                "written only by the officer display",
            ),
            (
                br#"{"type":"ack","body":{"alert":"a-1"}}"#,
                "written only by the officer display",
            ),
            (
                br#"{"type":"alert","body":[1]}"#,
                "body must be a JSON object",
            ),
            (br#"{"type":"alert","body":{},"id":"a/b"}"#, "id must be"),
            (
                br#"{"type":"alert","body":{},"time":"yesterday"}"#,
                "not RFC 3339",
            ),
            (br#"{"type":"alert","body":{},"extra":1}"#, "unknown field"),
            (b"not json", "bad request"),
        ] {
            let e = parse(line).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[tokio::test]
    async fn an_overlong_line_costs_only_itself() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.push(b'\n');
        input.extend_from_slice(b"{\"type\":\"alert\",\"body\":{}}\n");
        let mut r = BufReader::new(&input[..]);
        let mut buf = Vec::new();
        read_line(&mut r, &mut buf).await.unwrap();
        assert!(parse(&buf).unwrap_err().contains("longer than"));
        buf.clear();
        read_line(&mut r, &mut buf).await.unwrap();
        assert_eq!(parse(&buf).unwrap().kind, "alert");
    }
}
