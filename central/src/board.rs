//! The operator board: one page served by central with its assets built in (no CDN, no map
//! tiles), in Kazakh, Russian, English and Chinese. It signs in with an account
//! (`POST /api/session`), reads the same JSON API systems use, and reads again whenever
//! `/api/stream` (server-sent events) says something changed.
//!
//! Views: transits by state with the overdue, enquiries, diverted and flagged ones on top; one
//! page per MRN with its timeline (the posts' passages, alerts and overrides, and every change
//! of state with its cause); posts with their link, seq progress and gaps; a schematic map of
//! posts and the corridors of open transits, drawn from the posts' positions; open alerts.

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::api::Api;

const INDEX: &str = include_str!("board/index.html");
const JS: &str = include_str!("board/board.js");
const CSS: &str = include_str!("board/board.css");

/// The page allows only its own script and style, and nothing in frames.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            ("content-type", kind),
            ("content-security-policy", CSP),
            ("x-content-type-options", "nosniff"),
            ("cache-control", "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub fn routes() -> Router<Api> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/board.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route(
            "/board.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
}
