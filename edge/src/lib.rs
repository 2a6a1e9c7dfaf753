//! The ACSGD edge appliance: the configuration that composes the parts' settings, the sensor
//! glue and the service that wires the parts together ([`service`]), and the CLI's commands.
//! `main.rs` only parses the command line. The parts are crates of their own, re-exported here
//! under the names the modules use: the signed event envelope ([`envelope`], `acsgd-contract`),
//! lane fusion ([`fusion`]), the durable [`outbox`] and its [`health`] events, the MQTT
//! [`uplink`], plate recognition ([`anpr`]), the officer [`display`], task supervision
//! ([`supervise`]); the trace format is `acsgd-trace`.
//!
//! Data flow: producers (the sensor drivers through [`sensors`] and lane [`fusion`], driven by
//! [`live`]; each camera's [`camera`] loop around [`anpr`]; the [`ingest`] port; the demo's
//! traffic) → [`outbox`] (group commit, accepted = on disk) → [`uplink`] (QoS 1, removed only
//! after PUBACK) → central; the officer [`display`] watches what is accepted. Readings of
//! passages still open live in the lane journal ([`fusion::journal`]) until their passage is in
//! the outbox. [`health`] turns component state changes into events, and [`supervise`] makes a
//! task that dies one of them.

pub mod accounts;
pub mod barrier;
pub mod camera;
pub mod config;
pub mod decode;
pub mod demo;
pub mod diagnose;
pub mod ingest;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod mosquitto;
pub mod notify;
pub mod record;
pub mod replay;
pub mod sensors;
pub mod service;
pub mod status;

// The parts in crates of their own, under the names the modules here use.
pub use acsgd_anpr as anpr;
pub use acsgd_contract::{envelope, files};
pub use acsgd_display as display;
pub use acsgd_fusion as fusion;
pub use acsgd_outbox as outbox;
pub use acsgd_outbox::health;
pub use acsgd_supervise as supervise;
pub use acsgd_uplink as uplink;
