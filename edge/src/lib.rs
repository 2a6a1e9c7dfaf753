//! The ACSGD edge appliance: configuration, the durable outbox and the MQTT uplink, the sensor
//! glue, the officer display and the CLI, wired together by [`service`]. `main.rs` only parses
//! the command line. The signed event envelope is `acsgd-contract` ([`envelope`]), lane fusion
//! `acsgd-fusion` ([`fusion`]).
//!
//! Data flow: producers (the sensor drivers through [`sensors`] and lane [`fusion`], driven by
//! [`live`]; the cameras' plate recognition in [`anpr`]; the [`ingest`] port; the demo's
//! traffic) → [`outbox`] (group commit, accepted = on disk) → [`uplink`] (QoS 1, removed only
//! after PUBACK) → central; the officer [`display`] watches what is accepted. Readings of
//! passages still open live in the lane journal ([`fusion::journal`]) until their passage is in
//! the outbox. [`health`] turns component state changes into events, and [`supervise`] makes a
//! task that dies one of them.

pub mod anpr;
pub mod config;
pub mod decode;
pub mod demo;
pub mod display;
pub mod health;
pub mod ingest;
pub mod live;
pub mod logging;
pub mod mosquitto;
pub mod outbox;
pub mod record;
pub mod replay;
pub mod sensors;
pub mod service;
pub mod simulate;
pub mod status;
pub mod supervise;
pub mod uplink;

// The parts in crates of their own, under the names the modules here use.
pub use acsgd_contract::{envelope, files};
pub use acsgd_fusion as fusion;
