-- Version 4: notifications. Who is told what (subscription), and the durable outbox of what
-- is to be told (notification): its rows are written in the transaction of the change that
-- causes them, sent by the notifier, and kept with their outcome.
CREATE TABLE subscription (
    id TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    party TEXT NOT NULL,
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    lang TEXT NOT NULL,
    mrn TEXT,
    post TEXT,
    kinds TEXT NOT NULL,
    secret TEXT,
    rate_per_hour BIGINT NOT NULL,
    active BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

-- One row per (change or alert, subscription): the id is the dedupe key, so a change is
-- queued once per recipient and channel whatever happens after.
CREATE TABLE notification (
    id TEXT PRIMARY KEY,
    subscription TEXT NOT NULL,
    kind TEXT NOT NULL,
    mrn TEXT,
    observed_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_ms BIGINT NOT NULL,
    last_error TEXT,
    sent_ms BIGINT,
    response TEXT
);
CREATE INDEX notification_due ON notification (state, next_ms);
CREATE INDEX notification_sent ON notification (subscription, sent_ms);
