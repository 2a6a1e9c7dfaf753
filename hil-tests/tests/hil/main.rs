//! The HIL tests in one binary (each test binary links the whole appliance library):
//! `scenarios` (one test per scenario folder), `traces` (the folders are what the generator
//! writes) and `record` (`acsgd record` on a pty and a TCP device).

mod record;
mod scenarios;
mod traces;
