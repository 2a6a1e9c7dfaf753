-- Version 9: retention (`crate::retention`). The posts' position events, seven in ten of all
-- events, are found by the time central received them, oldest first, so that forgetting the
-- ones older than `[store] keep_positions_days` reads only what it removes. Partial: the
-- other events are kept for good and cost no entry here.
CREATE INDEX journal_position_received ON journal (received_ms) WHERE type = 'position';
