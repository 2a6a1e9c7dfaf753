-- Version 8: indexes for the reads that are made again and again over tables that grow with
-- every event, transit and alert (`crate::bounded_reads`), so that each costs what it returns
-- and not the months of data beside it; and one index made smaller.

-- The journal's index on `mrn` holds only the events that name a transit. Most name none (a
-- position names its tracker), and each cost an entry under NULL that no read used: a
-- transit's events are asked for by `mrn = $1`, which implies `mrn IS NOT NULL`.
DROP INDEX journal_mrn;
CREATE INDEX journal_mrn ON journal (mrn) WHERE mrn IS NOT NULL;

-- The board's list, in its order (`store::BOARD_ORDER`, the same expressions): a page is the
-- index's first rows.
CREATE INDEX transit_board ON transit (
    (CASE state WHEN 'overdue' THEN 0 WHEN 'enquiry' THEN 1 WHEN 'diverted' THEN 2 ELSE 3 END),
    (CASE flags WHEN '' THEN 1 ELSE 0 END),
    updated_ms DESC,
    mrn
);
-- The transits on the road (the silence and overdue scans), and their trackers.
CREATE INDEX transit_state ON transit (state);
CREATE INDEX transit_tracker_mrn ON transit_tracker (mrn);

-- The routes not yet sent (the publisher, every few seconds), and the declarations a post
-- should hold (sent again when it comes online).
CREATE INDEX route_unsent ON route (mrn, post) WHERE done_ms IS NULL;
CREATE INDEX route_live ON route (post) WHERE action = 'publish';

-- The subscriptions to one transit's events, or to all (read with every batch of events).
CREATE INDEX subscription_mrn ON subscription (mrn);

-- Operator alerts and notifications, newest first.
CREATE INDEX operator_alert_raised ON operator_alert (raised_ms DESC, id);
CREATE INDEX operator_alert_open ON operator_alert (raised_ms DESC, id) WHERE cleared_ms IS NULL;
CREATE INDEX notification_listed ON notification (state, received_ms DESC, id);
