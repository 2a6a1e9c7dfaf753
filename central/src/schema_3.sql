-- Version 3: the plates each transit declares, under the key both sides compare plates by
-- (`acsgd_contract::plate::index_key`: normalised, OCR confusions folded, province character
-- off). A passage that names no MRN (the post was not sent the declaration: the truck is off
-- its itinerary, or came before its declaration) is still followed by its plate. Filled for the
-- transits already stored by the migration step in store.rs.
CREATE TABLE transit_plate (
    plate TEXT NOT NULL,
    mrn TEXT NOT NULL,
    PRIMARY KEY (plate, mrn)
);
