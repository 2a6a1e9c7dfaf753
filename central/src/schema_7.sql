-- Version 7: a version on each track row, raised by every write, so a transaction that read a
-- track before another wrote it (the seal operator's feed, another worker, the scheduler's
-- silence scan, all on their own connections) cannot write over it: its write finds another
-- version and the transaction is done again from a fresh read.
ALTER TABLE track ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
