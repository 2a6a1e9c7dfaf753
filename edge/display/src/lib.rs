//! The officer display: the lane screen served by `acsgd` itself (HTML, script, styles and
//! language catalogues are built into the binary; nothing comes from the internet).
//!
//! - [`barrier`]: an officer's request to open or close a lane's barrier, carried out by the
//!   appliance's lane control.
//! - [`auth`]: sign-in, sessions. Roles: officer (sees lanes, acknowledges),
//!   supervisor (also overrides a verdict), technician (health and configuration, no passage
//!   data).
//! - [`board`]: what the screens show, fed from the events the outbox accepted.
//! - [`i18n`]: the Kazakh, Russian, English and Chinese catalogues.
//! - [`settings`]: the configuration's `[display]` table, accounts and roles.
//! - this module: the HTTP API, the live stream (server-sent events; the browser reconnects by
//!   itself after a restart) and the assets.
//!
//! Acknowledgements and overrides become `ack` and `override` events in the outbox, with the
//! officer's id: they reach central like every other event and are the audit trail. Every
//! request that changes something needs a session, JSON, and (when the browser says where it
//! comes from) the display's own origin.

pub mod auth;
pub mod barrier;
pub mod board;
pub mod i18n;
pub mod listener;
pub mod settings;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use acsgd_contract::envelope::Event;
use acsgd_outbox::Outbox;
use auth::{Auth, Session, SignIn};
use board::{Board, Refusal, Update};
use settings::{Display, Role, LANGS};

/// Live streams served at once at most (each screen holds one).
const MAX_STREAMS: usize = 64;
/// Of those, kept for the screens that show passages (officers, supervisors): technicians'
/// streams never take the last ones.
const STREAM_RESERVE: usize = 16;
/// Streams one session may hold (a screen, its reconnect, a second tab); a new one beyond
/// closes the session's oldest.
const STREAMS_PER_SESSION: usize = 3;
/// Streams one user may hold over all their sessions; a new one beyond closes the oldest.
const STREAMS_PER_USER: usize = 6;
/// Password checks run at once at most (each is an argon2 hash of 19 MiB and tens of
/// milliseconds of a core); the rest wait their turn, up to [`HASH_WAIT`].
const HASHERS: usize = 2;
/// How long a sign-in waits for a free hasher before it is told to try again (429).
const HASH_WAIT: Duration = Duration::from_secs(5);
/// Characters kept of an officer's note.
const MAX_NOTE: usize = 500;
const COOKIE: &str = "acsgd_session";

/// Why the display could not start.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error("display: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("display: store: {0}")]
    Store(#[from] acsgd_outbox::StoreError),
}

/// The status the screens show (uplink, backlog, sensors): the service's status loop
/// publishes it once a second for every screen, so no screen makes its own.
pub type StatusFeed = watch::Receiver<Value>;

/// The display's socket and its subscription to the outbox, taken before the service starts
/// anything else: a taken address stops the start, and the board misses no event of the run.
pub struct Bound {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    accepted: broadcast::Receiver<Arc<acsgd_outbox::Fed>>,
}

/// Binds the configured address and starts watching the outbox.
pub async fn bind(d: &Display, outbox: &Outbox) -> Result<Bound, DisplayError> {
    let bind_err = |source| DisplayError::Bind {
        addr: d.bind,
        source,
    };
    let listener = tokio::net::TcpListener::bind(d.bind)
        .await
        .map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    Ok(Bound {
        listener,
        addr,
        accepted: outbox.watch(),
    })
}

/// What the display shows of the post besides its own settings.
pub struct Post {
    /// The post's id.
    pub post: String,
    /// Its lanes, in the order the screens show them.
    pub lanes: Vec<String>,
    /// The configuration as the technician pages show it (no secrets in it).
    pub summary: Value,
    /// Per lane with a barrier the appliance drives: where its requests go.
    pub barriers: std::collections::HashMap<String, tokio::sync::mpsc::Sender<barrier::Request>>,
}

/// The running display.
pub struct Served {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    feed: JoinHandle<()>,
}

impl Served {
    /// Waits for the server to finish after the stop signal (streams end with it).
    pub async fn stopped(self) {
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
        self.feed.abort();
    }
}

struct App {
    post: String,
    auth: Auth,
    board: Mutex<Board>,
    updates: broadcast::Sender<Arc<Update>>,
    outbox: Outbox,
    status: StatusFeed,
    tech: Value,
    barriers: std::collections::HashMap<String, tokio::sync::mpsc::Sender<barrier::Request>>,
    default_lang: String,
    max_age_s: u64,
    streams: Mutex<Streams>,
    /// Permits to run a password check (see [`HASHERS`]).
    hashers: Arc<tokio::sync::Semaphore>,
    stop: watch::Receiver<bool>,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Loads the board and starts serving on the bound socket; stops when `stop` turns true.
pub fn start(
    bound: Bound,
    d: &Display,
    post: Post,
    outbox: Outbox,
    status: StatusFeed,
    stop: watch::Receiver<bool>,
) -> Result<Served, DisplayError> {
    let Bound {
        listener,
        addr,
        accepted,
    } = bound;
    let listener = listener::Capped::new(
        listener,
        d.max_connections,
        Duration::from_secs(d.idle_timeout_s),
    );
    let tree = outbox.store().tree("display")?;
    let sessions = outbox.store().tree("display_sessions")?;
    let board = Board::load(tree, &post.lanes);
    let auth = Auth::new(&d.accounts, sessions, d.session_idle_min, d.session_max_h);
    auth.sweep(now_ms());
    if auth.is_empty() {
        tracing::warn!(
            "display: no accounts, nobody can sign in (add one with `acsgd account add`)"
        );
    }
    let (updates, _) = broadcast::channel(1024);
    let app = Arc::new(App {
        post: post.post,
        auth,
        board: Mutex::new(board),
        updates,
        outbox: outbox.clone(),
        status,
        tech: post.summary,
        barriers: post.barriers,
        default_lang: d.lang.clone(),
        max_age_s: u64::from(d.session_max_h) * 3600,
        streams: Mutex::new(Streams::default()),
        hashers: Arc::new(tokio::sync::Semaphore::new(HASHERS)),
        stop: stop.clone(),
    });
    let feed = tokio::spawn(feed(app.clone(), accepted));
    let router = router(app);
    let mut stop_rx = stop;
    let task = tokio::spawn(async move {
        // Ends at the stop, or when the stop's sender is gone.
        let shutdown = async move {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "display server failed");
        }
    });
    tracing::info!(%addr, "display serving");
    Ok(Served { addr, task, feed })
}

/// Accepted events into the board, and the board's changes out to the screens.
async fn feed(app: Arc<App>, mut rx: broadcast::Receiver<Arc<acsgd_outbox::Fed>>) {
    loop {
        match rx.recv().await {
            Ok(f) => {
                let u = app.board.lock().expect("board lock").apply(&f);
                if let Some(u) = u {
                    let _ = app.updates.send(Arc::new(u));
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "display fell behind the outbox; some events are not on the screen"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/tech", get(tech_page))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/assets/i18n/{lang}", get(catalogue))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/me/lang", post(set_lang))
        .route("/api/state", get(state))
        .route("/api/stream", get(stream))
        .route("/api/alerts/{id}/ack", post(ack))
        .route("/api/passages/{id}/override", post(override_verdict))
        .route("/api/lanes/{lane}/barrier", post(move_barrier))
        .route("/api/tech", get(tech))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .layer(middleware::from_fn(guard))
        .with_state(app)
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Security headers on every answer; changes only from the display's own pages.
async fn guard(req: Request, next: Next) -> Response {
    if req.method() == Method::POST {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|h| h.to_str().ok());
        if let (Some(o), Some(h)) = (origin, host) {
            let from = o.split_once("://").map_or(o, |(_, rest)| rest);
            if from != h {
                return ApiError(StatusCode::FORBIDDEN, "origin", "request from another site")
                    .into_response();
            }
        }
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// An error answer: `{"error": key, "message": text}`; the screen translates the key.
struct ApiError(StatusCode, &'static str, &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1, "message": self.2}))).into_response()
    }
}

fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .filter(|t| t.len() == 64)
}

impl App {
    fn session(&self, headers: &HeaderMap) -> Result<Session, ApiError> {
        token(headers)
            .and_then(|t| self.auth.session(t, now_ms()))
            .ok_or(ApiError(
                StatusCode::UNAUTHORIZED,
                "signed_out",
                "sign in first",
            ))
    }

    /// The board as a screen of this kind sees it, with the latest status.
    fn view(&self, passages: bool) -> Value {
        let mut v = self.board.lock().expect("board lock").snapshot(passages);
        v["status"] = self.status.borrow().clone();
        v
    }

    fn lang_of(&self, s: &Session) -> String {
        self.board
            .lock()
            .expect("board lock")
            .lang(&s.user)
            .or_else(|| self.auth.account(&s.user).and_then(|a| a.lang.clone()))
            .unwrap_or_else(|| self.default_lang.clone())
    }

    fn me(&self, s: &Session) -> Value {
        json!({"user": s.user, "name": s.name, "role": s.role, "lang": self.lang_of(s), "post": self.post, "langs": LANGS})
    }
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

/// The technician pages: the same application, allowed to technicians only.
async fn tech_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match app.session(&headers) {
        Err(_) => Redirect::to("/").into_response(),
        Ok(s) if s.role == Role::Technician => index().await,
        Ok(s) => {
            tracing::warn!(user = %s.user, "display: refused the technician pages");
            (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                FORBIDDEN_HTML,
            )
                .into_response()
        }
    }
}

const FORBIDDEN_HTML: &str = "<!doctype html><meta charset=utf-8><title>403</title>\
<h1 id=forbidden>403</h1><p>Техник беттері · Страницы техника · Technician pages · 技术员页面</p><p><a href=/>←</a></p>";

async fn catalogue(Path(lang): Path<String>) -> Response {
    let lang = lang.trim_end_matches(".json");
    match i18n::catalogue(lang) {
        Some(c) => asset("application/json; charset=utf-8", c),
        None => ApiError(StatusCode::NOT_FOUND, "not_found", "no such language").into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    user: String,
    password: String,
}

async fn login(State(app): State<Arc<App>>, Json(l): Json<Login>) -> Response {
    if l.user.len() > 64 || l.password.len() > 256 {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong_password",
            "wrong user or password",
        )
        .into_response();
    }
    let a = app.clone();
    let user = l.user.clone();
    let permit = match tokio::time::timeout(HASH_WAIT, app.hashers.clone().acquire_owned()).await {
        Ok(Ok(p)) => p,
        _ => {
            tracing::warn!(%user, "display: sign-in refused, too many at once");
            return ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                "signin_busy",
                "too many sign-ins at once, try again",
            )
            .into_response();
        }
    };
    let r = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let r = a.auth.sign_in(&l.user, &l.password, now_ms());
        // Expired sessions go now and then, so the store stays small.
        if r.is_ok() {
            a.auth.sweep(now_ms());
        }
        r
    })
    .await;
    match r {
        Ok(Ok((token, s))) => {
            tracing::info!(user = %s.user, role = ?s.role, "display: signed in");
            let cookie = format!(
                "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                app.max_age_s
            );
            ([(header::SET_COOKIE, cookie)], Json(app.me(&s))).into_response()
        }
        Ok(Err(SignIn::Locked(secs))) => {
            tracing::warn!(%user, "display: sign-in refused, user locked out");
            (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"error": "locked", "message": "too many wrong passwords", "retry_s": secs})),
            )
                .into_response()
        }
        _ => {
            tracing::warn!(%user, "display: wrong password");
            ApiError(
                StatusCode::UNAUTHORIZED,
                "wrong_password",
                "wrong user or password",
            )
            .into_response()
        }
    }
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(t) = token(&headers) {
        app.auth.sign_out(t);
    }
    let clear = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Json(json!({}))).into_response()
}

async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let s = app.session(&headers)?;
    Ok(Json(app.me(&s)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lang {
    lang: String,
}

async fn set_lang(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(l): Json<Lang>,
) -> Result<Json<Value>, ApiError> {
    let s = app.session(&headers)?;
    if !LANGS.contains(&l.lang.as_str()) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_lang",
            "not one of kk, ru, en, zh",
        ));
    }
    app.board
        .lock()
        .expect("board lock")
        .set_lang(&s.user, &l.lang);
    Ok(Json(app.me(&s)))
}

async fn state(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let s = app.session(&headers)?;
    Ok(Json(app.view(s.sees_passages())))
}

/// The live stream: a snapshot, then every change, and the status each second. Ends when
/// the session does (the screen then asks the officer to sign in again) or the service stops.
async fn stream(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let s = app.session(&headers)?;
    let token = token(&headers).unwrap_or_default().to_string();
    let (id, closed) = app
        .streams
        .lock()
        .expect("streams lock")
        .open(&token, &s.user, s.sees_passages())
        .ok_or(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many screens",
        ))?;
    let rx = app.updates.subscribe();
    let first = SseEvent::default()
        .event("snapshot")
        .retry(Duration::from_millis(1000))
        .data(app.view(s.sees_passages()).to_string());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let st = Stream {
        app: app.clone(),
        id,
        closed,
        rx,
        tick,
        token,
        passages: s.sees_passages(),
        first: Some(first),
        stop: app.stop.clone(),
    };
    let events = futures_util::stream::unfold(st, |mut st| async move {
        let ev = st.next().await?;
        Some((Ok::<_, std::convert::Infallible>(ev), st))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The open live streams: who holds each, and how to end it.
#[derive(Default)]
struct Streams {
    next_id: u64,
    /// Oldest first.
    open: Vec<OpenStream>,
}

struct OpenStream {
    id: u64,
    token: String,
    user: String,
    /// Shows passages (an officer's or supervisor's screen).
    privileged: bool,
    close: watch::Sender<bool>,
}

impl Streams {
    /// Registers a new stream, first closing the oldest of its session or user beyond their
    /// share, or (for a passage screen at the limit) the oldest technician stream. `None`:
    /// no room (all slots held by passage screens, or a technician at their share).
    fn open(
        &mut self,
        token: &str,
        user: &str,
        privileged: bool,
    ) -> Option<(u64, watch::Receiver<bool>)> {
        self.close_oldest_beyond(|o| o.token == token, STREAMS_PER_SESSION - 1);
        self.close_oldest_beyond(|o| o.user == user, STREAMS_PER_USER - 1);
        if !privileged {
            let held = self.open.iter().filter(|o| !o.privileged).count();
            if held >= MAX_STREAMS - STREAM_RESERVE {
                return None;
            }
        }
        if self.open.len() >= MAX_STREAMS {
            if !privileged {
                return None;
            }
            // A passage screen always connects while technicians hold streams: their oldest
            // one makes room.
            let technicians = self.open.iter().filter(|o| !o.privileged).count();
            self.close_oldest_beyond(|o| !o.privileged, technicians.saturating_sub(1));
            if self.open.len() >= MAX_STREAMS {
                return None;
            }
        }
        let (close, closed) = watch::channel(false);
        self.next_id += 1;
        self.open.push(OpenStream {
            id: self.next_id,
            token: token.to_string(),
            user: user.to_string(),
            privileged,
            close,
        });
        Some((self.next_id, closed))
    }

    /// Closes the oldest streams matching `which` until at most `keep` of them are left.
    fn close_oldest_beyond(&mut self, which: impl Fn(&OpenStream) -> bool, keep: usize) {
        let mut matching = self.open.iter().filter(|o| which(o)).count();
        while matching > keep {
            let Some(i) = self.open.iter().position(&which) else {
                return;
            };
            let o = self.open.remove(i);
            let _ = o.close.send(true);
            matching -= 1;
        }
    }

    fn remove(&mut self, id: u64) {
        self.open.retain(|o| o.id != id);
    }
}

struct Stream {
    app: Arc<App>,
    id: u64,
    /// Set when the registry ends this stream (its session or user opened too many).
    closed: watch::Receiver<bool>,
    rx: broadcast::Receiver<Arc<Update>>,
    tick: tokio::time::Interval,
    token: String,
    passages: bool,
    first: Option<SseEvent>,
    stop: watch::Receiver<bool>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.app
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.id);
    }
}

impl Stream {
    async fn next(&mut self) -> Option<SseEvent> {
        if let Some(f) = self.first.take() {
            return Some(f);
        }
        loop {
            if *self.stop.borrow() {
                return None;
            }
            tokio::select! {
                u = self.rx.recv() => match u {
                    Ok(u) if u.passage_data && !self.passages => continue,
                    Ok(u) => {
                        let data = json!({"kind": u.kind, "data": u.data});
                        return Some(SseEvent::default().event("update").data(data.to_string()));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too far behind to patch: send the whole board again.
                        let s = self.app.view(self.passages).to_string();
                        return Some(SseEvent::default().event("snapshot").data(s));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.tick.tick() => {
                    self.app.auth.session(&self.token, now_ms())?;
                    let s = self.app.status.borrow().to_string();
                    return Some(SseEvent::default().event("status").data(s));
                }
                _ = self.stop.changed() => return None,
                _ = self.closed.changed() => return None,
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ack {
    decision: String,
    #[serde(default)]
    note: String,
}

/// The decisions an officer can take on an alert.
pub const DECISIONS: &[&str] = &["released", "inspection", "false_alarm"];

fn note(n: &str) -> String {
    n.trim()
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .take(MAX_NOTE)
        .collect()
}

async fn ack(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(a): Json<Ack>,
) -> Result<Json<Value>, ApiError> {
    let s = app.session(&headers)?;
    if !s.sees_passages() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your role cannot do this",
        ));
    }
    if !DECISIONS.contains(&a.decision.as_str()) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_decision",
            "decision must be released, inspection or false_alarm",
        ));
    }
    let alert = app
        .board
        .lock()
        .expect("board lock")
        .claim_alert(&id)
        .map_err(refused)?;
    let mut body = json!({
        "alert": id,
        "rule": alert["body"]["rule"],
        "lane": alert["body"]["lane"],
        "decision": a.decision,
        "note": note(&a.note),
        "officer": s.user,
        "officer_name": s.name,
        "role": s.role,
    });
    if let Some(p) = alert["body"].get("passage") {
        body["passage"] = p.clone();
    }
    let what = format!("alert {id} acknowledged as {}", a.decision);
    store(
        &app,
        Event::now(acsgd_contract::envelope::Kind::Ack, body),
        &id,
        &s,
        &what,
    )
    .await
}

/// Stores an `ack` or `override` made on the screen; the claim on `target` is released if it
/// could not be stored, so the officer can try again.
async fn store(
    app: &App,
    ev: Event,
    target: &str,
    s: &Session,
    what: &str,
) -> Result<Json<Value>, ApiError> {
    match app.outbox.append(ev).await {
        Ok(acc) => {
            tracing::info!(officer = %s.user, "display: {what}");
            Ok(Json(json!({"event": acc.id, "seq": acc.seq})))
        }
        Err(e) => {
            app.board.lock().expect("board lock").release(target);
            tracing::error!(error = %e, "display: not stored: {what}");
            Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_stored",
                "could not store it; try again",
            ))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Override {
    channel: String,
    note: String,
}

async fn override_verdict(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(o): Json<Override>,
) -> Result<Json<Value>, ApiError> {
    let s = app.session(&headers)?;
    if s.role != Role::Supervisor {
        tracing::warn!(user = %s.user, "display: override refused to a non-supervisor");
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only a supervisor can override a verdict",
        ));
    }
    if !["green", "yellow", "red"].contains(&o.channel.as_str()) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_channel",
            "channel must be green, yellow or red",
        ));
    }
    let note = note(&o.note);
    if note.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "note_required",
            "an override needs a note",
        ));
    }
    let p = app
        .board
        .lock()
        .expect("board lock")
        .claim_passage(&id)
        .map_err(refused)?;
    let from = p["override"]["to"]
        .as_str()
        .map_or_else(|| p["body"]["channel"].clone(), |c| json!(c));
    let body = json!({
        "passage": id,
        "lane": p["body"]["lane"],
        "mrn": p["body"]["mrn"],
        "from": from,
        "to": o.channel,
        "note": note,
        "officer": s.user,
        "officer_name": s.name,
        "role": s.role,
    });
    let what = format!("passage {id} overridden to {}", o.channel);
    store(
        &app,
        Event::now(acsgd_contract::envelope::Kind::Override, body),
        &id,
        &s,
        &what,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBarrier {
    open: bool,
}

/// How long a screen waits for the lane control's answer: its tries at the node take less
/// (`acsgd::barrier`), so this only ends a wait on a lane control that is gone.
const BARRIER_WAIT: Duration = Duration::from_secs(15);

/// An officer opens or closes a lane's barrier. The answer says what the lane node did; a
/// refusal by the node (a vehicle under the arm) is an answer, not an error.
async fn move_barrier(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(lane): Path<String>,
    Json(m): Json<MoveBarrier>,
) -> Result<Json<barrier::Answer>, ApiError> {
    let s = app.session(&headers)?;
    if !s.sees_passages() {
        tracing::warn!(user = %s.user, "display: barrier command refused to a technician");
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your role cannot do this",
        ));
    }
    let Some(to) = app.barriers.get(&lane) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "no_barrier",
            "this lane has no barrier the appliance drives",
        ));
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let req = barrier::Request {
        open: m.open,
        by: barrier::Actor {
            officer: s.user.clone(),
            officer_name: s.name.clone(),
            role: s.role,
        },
        reply,
    };
    let gone = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "barrier_busy",
            "the lane control did not answer; try again",
        )
    };
    // A full queue means commands are already waiting on this lane: the officer tries again
    // rather than stacking moves the barrier would make later.
    to.try_send(req).map_err(|_| gone())?;
    match tokio::time::timeout(BARRIER_WAIT, answer).await {
        Ok(Ok(a)) => {
            tracing::info!(officer = %s.user, lane, open = m.open, result = a.result.as_str(), "display: barrier command");
            Ok(Json(a))
        }
        _ => Err(gone()),
    }
}

fn refused(r: Refusal) -> ApiError {
    match r {
        Refusal::Unknown => ApiError(
            StatusCode::NOT_FOUND,
            "not_found",
            "not on the screen any more",
        ),
        Refusal::Already => ApiError(StatusCode::CONFLICT, "already", "already done"),
    }
}

async fn tech(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let s = app.session(&headers)?;
    if s.role != Role::Technician {
        tracing::warn!(user = %s.user, "display: refused the technician pages");
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            "technicians only",
        ));
    }
    let mut v = app.view(false);
    v["config"] = app.tech.clone();
    Ok(Json(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_or_user_over_its_share_loses_its_oldest_stream() {
        let mut s = Streams::default();
        let first: Vec<_> = (0..STREAMS_PER_SESSION)
            .map(|_| s.open("t1", "tech", false).unwrap())
            .collect();
        // One more on the same session closes the oldest, not the new one.
        let (_, newest) = s.open("t1", "tech", false).unwrap();
        assert!(*first[0].1.borrow(), "the oldest was closed");
        assert!(!*first[1].1.borrow() && !*newest.borrow());
        assert_eq!(
            s.open.iter().filter(|o| o.token == "t1").count(),
            STREAMS_PER_SESSION
        );
        // Many sessions of one user: at most their share stays open.
        for i in 0..20 {
            s.open(&format!("u{i}"), "tech2", false).unwrap();
        }
        assert_eq!(
            s.open.iter().filter(|o| o.user == "tech2").count(),
            STREAMS_PER_USER
        );
    }

    #[test]
    fn technicians_never_take_the_screens_reserve_and_a_passage_screen_always_connects() {
        let mut s = Streams::default();
        // Technicians of many users fill every slot they may have.
        let mut opened = 0;
        for i in 0..MAX_STREAMS {
            if s.open(&format!("t{i}"), &format!("tech{i}"), false)
                .is_some()
            {
                opened += 1;
            }
        }
        assert_eq!(opened, MAX_STREAMS - STREAM_RESERVE);
        // Officers get the reserve…
        for i in 0..STREAM_RESERVE {
            assert!(s.open(&format!("o{i}"), &format!("off{i}"), true).is_some());
        }
        assert_eq!(s.open.len(), MAX_STREAMS);
        // …and beyond it a technician's oldest stream makes room for one more.
        assert!(s.open("sup", "sup", true).is_some());
        assert_eq!(s.open.len(), MAX_STREAMS);
        assert!(!s.open.iter().any(|o| o.token == "t0"));
        assert!(s.open("late-tech", "late", false).is_none());
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        let t = "a".repeat(64);
        h.insert(
            header::COOKIE,
            format!("x=1; {COOKIE}={t}; y=2").parse().unwrap(),
        );
        assert_eq!(token(&h), Some(t.as_str()));
        h.insert(header::COOKIE, format!("{COOKIE}=short").parse().unwrap());
        assert_eq!(token(&h), None);
    }

    #[test]
    fn notes_are_trimmed_and_bounded() {
        assert_eq!(note("  seal intact\u{7}  "), "seal intact");
        assert_eq!(note(&"x".repeat(2000)).len(), MAX_NOTE);
    }
}
