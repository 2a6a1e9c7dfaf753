//! The ACSGD edge appliance: configuration, the signed event envelope, the durable outbox and
//! the MQTT uplink, wired together by [`service`]. `main.rs` only parses the command line.
//!
//! Data flow: producers (the sensor drivers through [`sensors`] and lane [`fusion`], the cameras'
//! plate recognition in [`anpr`], the [`ingest`] port, the demo's traffic) → [`outbox`] (group
//! commit, accepted = on disk) → [`uplink`] (QoS 1, removed only after PUBACK) → central; the
//! officer [`display`] watches what is accepted. Readings of passages still open live in the
//! lane [`journal`] until their passage is in the outbox. [`health`] turns component state changes into
//! events, and [`supervise`] makes a task that dies one of them.

pub mod anpr;
pub mod config;
pub mod decode;
pub mod demo;
pub mod display;
pub mod envelope;
pub mod files;
pub mod fusion;
pub mod health;
pub mod ingest;
pub mod journal;
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
