-- Version 6: the fold of a transit's fixes kept with its track (JSON of positions::Fold), so
-- a fix newer than the ones before it is judged without reading them again. NULL for tracks
-- folded before this version: their next fix judges their stored fixes once.
ALTER TABLE track ADD COLUMN fold TEXT;
