-- Central's schema, version 1. One text for SQLite and PostgreSQL: only types and clauses both
-- read the same way (TEXT, BIGINT, DOUBLE PRECISION, composite keys, ON CONFLICT). Times are
-- milliseconds since the epoch (BIGINT), so both backends compare and index them alike.

-- The posts central trusts: each one's Ed25519 key is pinned here by an operator.
CREATE TABLE post (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    public_key TEXT NOT NULL,
    lat DOUBLE PRECISION,
    lon DOUBLE PRECISION,
    added_ms BIGINT NOT NULL
);

-- Per post: the highest seq with every seq below it received, the highest seen, the link.
CREATE TABLE post_state (
    post TEXT PRIMARY KEY,
    contiguous_seq BIGINT NOT NULL,
    highest_seq BIGINT NOT NULL,
    link TEXT NOT NULL,
    link_ms BIGINT NOT NULL,
    last_event_ms BIGINT NOT NULL
);

-- The seq ranges a post has not delivered (yet): [seq_from, seq_to].
CREATE TABLE seq_gap (
    post TEXT NOT NULL,
    seq_from BIGINT NOT NULL,
    seq_to BIGINT NOT NULL,
    noticed_ms BIGINT NOT NULL,
    requested_ms BIGINT,
    PRIMARY KEY (post, seq_from)
);

-- Every accepted event, as received (the signed bytes), once.
CREATE TABLE journal (
    id TEXT PRIMARY KEY,
    post TEXT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    mrn TEXT,
    envelope TEXT NOT NULL,
    UNIQUE (post, seq)
);
CREATE INDEX journal_mrn ON journal (mrn);

-- What was refused: never applied, kept for the operator with its reason.
CREATE TABLE quarantine (
    id TEXT PRIMARY KEY,
    received_ms BIGINT NOT NULL,
    topic TEXT NOT NULL,
    post TEXT,
    reason TEXT NOT NULL,
    payload TEXT NOT NULL
);

-- One row per MRN: its state and what the scheduler needs (expected_post by expected_by_ms).
CREATE TABLE transit (
    mrn TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    leg BIGINT NOT NULL,
    expected_post TEXT,
    expected_by_ms BIGINT,
    last_post TEXT,
    last_seen_ms BIGINT,
    flags TEXT NOT NULL,
    declaration TEXT NOT NULL,
    declared_ms BIGINT NOT NULL,
    version BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX transit_due ON transit (expected_by_ms);

-- The posts' observations of a transit (passages, releases), from which its progress is
-- computed in event time.
CREATE TABLE sighting (
    mrn TEXT NOT NULL,
    event_id TEXT NOT NULL,
    post TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    channel TEXT,
    PRIMARY KEY (mrn, event_id)
);

-- Every change of a transit (state or flags) with what caused it.
CREATE TABLE transit_log (
    mrn TEXT NOT NULL,
    n BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    cause TEXT NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (mrn, n)
);

-- What operators must see. The id says what it is about, so raising it twice is one row.
CREATE TABLE operator_alert (
    id TEXT PRIMARY KEY,
    raised_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    post TEXT,
    mrn TEXT,
    cause TEXT NOT NULL,
    text TEXT NOT NULL,
    cleared_ms BIGINT,
    cleared_note TEXT
);

-- What each post should hold retained on in/declarations/{MRN}: the declaration (publish) or
-- nothing (withdraw). Written with the change that decides it; a publisher sends what is not
-- yet done, and everything again after a restart (retained publishes are idempotent).
CREATE TABLE route (
    post TEXT NOT NULL,
    mrn TEXT NOT NULL,
    action TEXT NOT NULL,
    done_ms BIGINT,
    PRIMARY KEY (post, mrn)
);
