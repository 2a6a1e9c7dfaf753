-- Version 5: positions between posts. The tracker each transit declares (filled for the
-- transits already stored by the migration step in store.rs), the fixes seen of it (from the
-- posts' position events and the seal operator's EGTS feed), and what central made of them.
CREATE TABLE transit_tracker (
    tracker TEXT NOT NULL,
    mrn TEXT NOT NULL,
    PRIMARY KEY (tracker, mrn)
);

CREATE TABLE fix (
    mrn TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lon DOUBLE PRECISION NOT NULL,
    speed DOUBLE PRECISION,
    source TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (mrn, time_ms)
);

-- Per transit: the last fix, and the flags the fixes raised (so only they clear them).
CREATE TABLE track (
    mrn TEXT PRIMARY KEY,
    last_fix_ms BIGINT,
    deviating_since BIGINT,
    stopped_since BIGINT,
    silent BIGINT NOT NULL
);
