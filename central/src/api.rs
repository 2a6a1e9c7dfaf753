//! The HTTP API operators and national customs systems use. Every call carries
//! `Authorization: Bearer TOKEN`; the token names the operator, who is journaled as the cause
//! of what the call changes.
//!
//! | call | what |
//! |---|---|
//! | `POST /api/declarations` | a declaration (JSON, [`acsgd_contract::declaration`], or XML with `Content-Type: application/xml`, [`crate::xml`]) → 201 with the transit; 422 invalid or unknown post; 409 exists |
//! | `GET /api/transits` | transits, overdue and flagged first |
//! | `GET /api/transits/{mrn}` | one transit with its journal (`?format=xml`: a `TransitRecord` document) |
//! | `GET /api/transits/{mrn}/track` | its tracker's fixes `[time_ms, lat, lon]` and what they say ([`crate::positions`]) |
//! | `GET /api/schema/transit.xsd` | the XML Schema of both documents (no token needed) |
//! | `POST /api/transits/{mrn}/{cancel\|enquiry\|close}` | an operator action, body `{"note": "…"}`; 409 where it does not apply |
//! | `PUT /api/watchlist`, `GET /api/watchlist` | `{"plates", "trackers", "mrns"}`, retained to every post on `in/watchlist` |
//! | `GET /api/posts` | the registry with each post's link, seq progress and gaps |
//! | `GET /api/alerts` | operator alerts (`?open=true`: only those not cleared) |
//! | `GET /api/quarantine` | refused messages counted by reason |
//! | `POST /api/subscriptions`, `GET /api/subscriptions`, `DELETE /api/subscriptions/{id}` | who is notified of what ([`crate::notify`]); 201 with the id (and a webhook's secret, shown once); 422 with the reason |
//! | `GET /api/notifications?state=pending\|sent\|dead\|withdrawn` | the notification outbox, newest first |

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};

use crate::auth::{Auth, Role, Who};
use crate::declare::{self, Refused};
use crate::notify::{Notifier, Subscription};
use crate::store::{now_ms, Store, StoreError};
use crate::tracking::{time_text, Action, Change, Transit};
use crate::xml;

#[derive(Clone)]
pub struct Api {
    store: Store,
    auth: Arc<Auth>,
    /// Wakes the route publisher after a change that routes something.
    routed: Arc<Notify>,
    /// Something changed (a batch applied, a transit moved): the board's live stream.
    changes: broadcast::Sender<()>,
    /// Which channels are configured, and the default rate of a subscription.
    notify: Option<(Arc<Notifier>, u32)>,
}

/// The board's session cookie.
const COOKIE: &str = "acsgd_central";

impl Api {
    pub fn new(
        store: Store,
        auth: Arc<Auth>,
        routed: Arc<Notify>,
        changes: broadcast::Sender<()>,
    ) -> Api {
        Api {
            store,
            auth,
            routed,
            changes,
            notify: None,
        }
    }

    /// Lets the API take subscriptions for the notifier's channels.
    pub fn with_notify(mut self, notifier: Arc<Notifier>, default_rate: u32) -> Api {
        self.notify = Some((notifier, default_rate));
        self
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/api/declarations", post(declare_one))
            .route("/api/transits", get(transits))
            .route("/api/transits/{mrn}", get(transit))
            .route("/api/transits/{mrn}/{action}", post(act))
            .route("/api/posts", get(posts))
            .route("/api/alerts", get(alerts))
            .route("/api/quarantine", get(quarantine))
            .route("/api/schema/transit.xsd", get(xsd))
            .route("/api/watchlist", get(watchlist).put(set_watchlist))
            .route("/api/transits/{mrn}/events", get(events))
            .route("/api/transits/{mrn}/track", get(track))
            .route("/api/session", post(sign_in).delete(sign_out))
            .route("/api/me", get(me))
            .route("/api/stream", get(stream))
            .route("/api/subscriptions", get(subscriptions).post(subscribe))
            .route(
                "/api/subscriptions/{id}",
                axum::routing::delete(unsubscribe),
            )
            .route("/api/notifications", get(notifications))
            .merge(crate::board::routes())
            .with_state(self)
    }

    /// Who is asking: a bearer token's system, or a board session's operator.
    fn who(&self, headers: &HeaderMap) -> Option<Who> {
        if let Some(t) = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return self.auth.token(t);
        }
        session_cookie(headers).and_then(|t| self.auth.session(&t))
    }

    /// The name of an operator allowed to change things, or the refusal.
    fn operator(&self, headers: &HeaderMap) -> Result<String, Box<Response>> {
        match self.who(headers) {
            Some(w) if w.role == Role::Operator => Ok(w.user),
            Some(_) => Err(Box::new(problem(
                StatusCode::FORBIDDEN,
                "viewers may look, not change",
            ))),
            None => Err(Box::new(unauthorized())),
        }
    }
}

/// The operator making a change and the call's JSON document, or the refusal.
fn operator_json<T: serde::de::DeserializeOwned>(
    api: &Api,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<(String, T), Box<Response>> {
    let operator = api.operator(headers)?;
    let doc = serde_json::from_slice(body).map_err(|e| {
        Box::new(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("{what}: {e}"),
        ))
    })?;
    Ok((operator, doc))
}

fn unauthorized() -> Response {
    problem(StatusCode::UNAUTHORIZED, "a valid bearer token is needed")
}

fn problem(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"error": msg}))).into_response()
}

fn internal(e: StoreError) -> Response {
    tracing::error!(error = %e, "API call failed on the database");
    problem(StatusCode::SERVICE_UNAVAILABLE, &format!("database: {e}"))
}

/// A transit as the API shows it.
pub fn transit_json(t: &Transit) -> Value {
    json!({
        "mrn": t.mrn,
        "state": t.state.as_str(),
        "leg": t.leg,
        "expected_post": t.expected_post,
        "expected_by": t.expected_by_ms.map(time_text),
        "last_post": t.last_post,
        "last_seen": t.last_seen_ms.map(time_text),
        "flags": t.flags.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        "declared": time_text(t.declared_ms),
        "declaration": t.declaration,
    })
}

fn change_json(at_ms: i64, c: &Change) -> Value {
    json!({"at": time_text(at_ms), "from": c.from.as_str(), "to": c.to.as_str(), "cause": c.cause, "note": c.note})
}

async fn declare_one(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let operator = match api.operator(&headers) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let is_xml = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("xml"));
    let doc: Value = if is_xml {
        let text = match std::str::from_utf8(&body) {
            Ok(t) => t,
            Err(_) => return problem(StatusCode::UNPROCESSABLE_ENTITY, "XML: not UTF-8"),
        };
        match xml::declaration_from_xml(text) {
            Ok(v) => v,
            Err(e) => return problem(StatusCode::UNPROCESSABLE_ENTITY, &format!("XML: {e}")),
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return problem(StatusCode::UNPROCESSABLE_ENTITY, &format!("not JSON: {e}")),
        }
    };
    match declare::submit(&api.store, &doc, &format!("operator:{operator}"), now_ms()).await {
        Ok(Ok(t)) => {
            api.routed.notify_one();
            let _ = api.changes.send(());
            (StatusCode::CREATED, Json(transit_json(&t))).into_response()
        }
        Ok(Err(e @ Refused::Exists(_))) => problem(StatusCode::CONFLICT, &e.to_string()),
        Ok(Err(e)) => problem(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct Limit {
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    500
}

async fn transits(State(api): State<Api>, headers: HeaderMap, Query(q): Query<Limit>) -> Response {
    if api.who(&headers).is_none() {
        return unauthorized();
    }
    match api.store.transits(q.limit.clamp(1, 10_000)).await {
        Ok(ts) => Json(ts.iter().map(transit_json).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct Format {
    #[serde(default)]
    format: Option<String>,
}

async fn xsd() -> Response {
    ([("content-type", "application/xml")], xml::XSD).into_response()
}

async fn transit(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(mrn): Path<String>,
    Query(f): Query<Format>,
) -> Response {
    if api.who(&headers).is_none() {
        return unauthorized();
    }
    let t = match api.store.transit(&mrn).await {
        Ok(Some(t)) => t,
        Ok(None) => return problem(StatusCode::NOT_FOUND, &format!("no transit {mrn}")),
        Err(e) => return internal(e),
    };
    match api.store.transit_log(&mrn).await {
        Ok(log) if f.format.as_deref() == Some("xml") => (
            [("content-type", "application/xml")],
            xml::record_to_xml(&t, &log),
        )
            .into_response(),
        Ok(log) => {
            let mut v = transit_json(&t);
            v["journal"] = log.iter().map(|(at, c)| change_json(*at, c)).collect();
            Json(v).into_response()
        }
        Err(e) => internal(e),
    }
}

#[derive(Deserialize, Default)]
struct Note {
    #[serde(default)]
    note: String,
}

async fn act(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((mrn, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let operator = match api.operator(&headers) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let Some(action) = Action::parse(&action) else {
        return problem(
            StatusCode::NOT_FOUND,
            "actions are cancel, enquiry and close",
        );
    };
    let note: Note = if body.is_empty() {
        Note::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(n) => n,
            Err(e) => return problem(StatusCode::UNPROCESSABLE_ENTITY, &format!("body: {e}")),
        }
    };
    match api.store.act(&mrn, action, &operator, &note.note).await {
        Ok(Ok(t)) => {
            api.routed.notify_one();
            let _ = api.changes.send(());
            Json(transit_json(&t)).into_response()
        }
        Ok(Err(why)) if why.starts_with("no transit") => problem(StatusCode::NOT_FOUND, &why),
        Ok(Err(why)) => problem(StatusCode::CONFLICT, &why),
        Err(e) => internal(e),
    }
}

async fn posts(State(api): State<Api>, headers: HeaderMap) -> Response {
    if api.who(&headers).is_none() {
        return unauthorized();
    }
    let posts = match api.store.posts().await {
        Ok(p) => p,
        Err(e) => return internal(e),
    };
    let mut progress = match api.store.posts_progress().await {
        Ok(p) => p,
        Err(e) => return internal(e),
    };
    let out: Vec<Value> = posts
        .into_iter()
        .map(|p| {
            let pr = progress.remove(&p.id);
            json!({"post": p, "progress": pr})
        })
        .collect();
    Json(out).into_response()
}

#[derive(Deserialize)]
struct Open {
    #[serde(default)]
    open: bool,
}

async fn alerts(State(api): State<Api>, headers: HeaderMap, Query(q): Query<Open>) -> Response {
    if api.who(&headers).is_none() {
        return unauthorized();
    }
    match api.store.alerts(q.open).await {
        Ok(a) => Json(a).into_response(),
        Err(e) => internal(e),
    }
}

async fn quarantine(State(api): State<Api>, headers: HeaderMap) -> Response {
    if api.who(&headers).is_none() {
        return unauthorized();
    }
    match api.store.quarantine_counts().await {
        Ok(c) => Json(c.into_iter().collect::<HashMap<_, _>>()).into_response(),
        Err(e) => internal(e),
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
}

#[derive(Deserialize)]
struct Credentials {
    user: String,
    password: String,
}

async fn sign_in(State(api): State<Api>, body: axum::body::Bytes) -> Response {
    let Ok(c) = serde_json::from_slice::<Credentials>(&body) else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected {\"user\", \"password\"}",
        );
    };
    match api.auth.sign_in(&c.user, &c.password).await {
        Some((token, who)) => {
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
            ([("set-cookie", cookie)], Json(who)).into_response()
        }
        None => {
            tracing::warn!(user = %c.user, "failed sign-in");
            problem(StatusCode::UNAUTHORIZED, "wrong user or password")
        }
    }
}

async fn sign_out(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(t) = session_cookie(&headers) {
        api.auth.sign_out(&t);
    }
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([("set-cookie", cookie)], StatusCode::NO_CONTENT).into_response()
}

async fn me(State(api): State<Api>, headers: HeaderMap) -> Response {
    match api.who(&headers) {
        Some(w) => Json(w).into_response(),
        None => unauthorized(),
    }
}

/// `change` whenever something may have changed; the board then reads what it shows again.
async fn stream(State(api): State<Api>, headers: HeaderMap) -> Response {
    if api.who(&headers).is_none() {
        return unauthorized();
    }
    let rx = api.changes.subscribe();
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            // A burst of changes is one event: the board reads everything again anyway.
            Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => {
                while rx.try_recv().is_ok() {}
                let ev = SseEvent::default().event("change").data("1");
                Some((Ok::<_, Infallible>(ev), rx))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The posts' events that name a transit (passages, alerts, overrides), for its timeline.
async fn events(State(api): State<Api>, headers: HeaderMap, Path(mrn): Path<String>) -> Response {
    if api.who(&headers).is_none() {
        return unauthorized();
    }
    match api.store.events_of(&mrn).await {
        Ok(evs) => Json(
            evs.into_iter()
                .map(|(t, post, kind, body)| {
                    json!({"time": time_text(t), "post": post, "type": kind,
                        "channel": body.get("channel"), "rule": body.get("rule"),
                        "lane": body.get("lane"), "to": body.get("to")})
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => internal(e),
    }
}

/// The watchlist every post holds: plates, trackers (seal ids) and MRNs to stop.
#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Watchlist {
    #[serde(default)]
    plates: Vec<String>,
    #[serde(default)]
    trackers: Vec<String>,
    #[serde(default)]
    mrns: Vec<String>,
}

/// Entries a watchlist may hold in all: it travels to every post in one retained message.
const MAX_WATCHLIST: usize = 50_000;

async fn set_watchlist(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (operator, w): (String, Watchlist) = match operator_json(&api, &headers, &body, "watchlist")
    {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let n = w.plates.len() + w.trackers.len() + w.mrns.len();
    if n > MAX_WATCHLIST {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("watchlist: {n} entries, at most {MAX_WATCHLIST}"),
        );
    }
    if let Some(m) = w.mrns.iter().find(|m| !acsgd_contract::mrn::valid_mrn(m)) {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("watchlist: mrn {m:?} is not 18 letters and digits"),
        );
    }
    if let Some(e) = w
        .plates
        .iter()
        .chain(&w.trackers)
        .find(|e| e.trim().is_empty() || e.len() > 64)
    {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("watchlist: entry {e:?} is empty or longer than 64"),
        );
    }
    let doc = serde_json::to_string(&w).unwrap_or_default();
    match api
        .store
        .set_watchlist(&doc, &format!("operator:{operator}"))
        .await
    {
        Ok(()) => {
            api.routed.notify_one();
            Json(w).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn watchlist(State(api): State<Api>, headers: HeaderMap) -> Response {
    if api.who(&headers).is_none() {
        return unauthorized();
    }
    match api.store.watchlist().await {
        Ok(Some((doc, pending))) => Json(json!({
            "watchlist": serde_json::from_str::<Value>(&doc).unwrap_or_default(),
            "sent": !pending,
        }))
        .into_response(),
        Ok(None) => Json(json!({"watchlist": null, "sent": true})).into_response(),
        Err(e) => internal(e),
    }
}

async fn subscribe(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (operator, s): (String, Subscription) =
        match operator_json(&api, &headers, &body, "subscription") {
            Ok(x) => x,
            Err(r) => return *r,
        };
    let notifier = api.notify.as_ref().map(|n| n.0.clone());
    let rate = api.notify.as_ref().map_or(30, |n| n.1);
    let ready = move |c: &str| notifier.as_ref().is_some_and(|n| n.channel_ready(c));
    match api
        .store
        .subscribe(s, &ready, rate, &format!("operator:{operator}"), now_ms())
        .await
    {
        Ok(Ok(made)) => {
            // The webhook's secret is shown here, once.
            let mut v = serde_json::to_value(&made).unwrap_or_default();
            if let Some(secret) = &made.secret {
                v["secret"] = json!(secret);
            }
            (StatusCode::CREATED, Json(v)).into_response()
        }
        Ok(Err(e)) => problem(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        Err(e) => internal(e),
    }
}

async fn subscriptions(State(api): State<Api>, headers: HeaderMap) -> Response {
    if api.who(&headers).is_none() {
        return unauthorized();
    }
    match api.store.subscriptions().await {
        Ok(s) => Json(s).into_response(),
        Err(e) => internal(e),
    }
}

async fn unsubscribe(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = api.operator(&headers) {
        return *r;
    }
    match api.store.unsubscribe(&id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => problem(
            StatusCode::NOT_FOUND,
            &format!("no active subscription {id}"),
        ),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct NotificationQuery {
    #[serde(default = "default_state")]
    state: String,
}

fn default_state() -> String {
    "pending".into()
}

async fn notifications(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<NotificationQuery>,
) -> Response {
    if api.who(&headers).is_none() {
        return unauthorized();
    }
    if !matches!(q.state.as_str(), "pending" | "sent" | "dead" | "withdrawn") {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "state: one of pending, sent, dead, withdrawn",
        );
    }
    match api.store.notifications(&q.state, 500).await {
        Ok(n) => Json(n).into_response(),
        Err(e) => internal(e),
    }
}

async fn track(State(api): State<Api>, headers: HeaderMap, Path(mrn): Path<String>) -> Response {
    if api.who(&headers).is_none() {
        return unauthorized();
    }
    match api.store.track(&mrn).await {
        Ok(t) => Json(t).into_response(),
        Err(e) => internal(e),
    }
}
