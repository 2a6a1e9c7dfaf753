-- Version 2: the watchlist central sends every post (one document, retained on
-- acsgd/v1/{post}/in/watchlist). done_ms is NULL while it waits to be sent.
CREATE TABLE watchlist (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    done_ms BIGINT
);
