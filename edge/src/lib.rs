//! The ACSGD edge appliance: configuration, the signed event envelope, the durable outbox and
//! the MQTT uplink, wired together by [`service`]. `main.rs` only parses the command line.
//!
//! Data flow so far: producers (the ingest port, the demo's traffic; later the sensor drivers
//! and lane fusion) → [`outbox`] (group commit, accepted = on disk) → [`uplink`] (QoS 1, removed
//! only after PUBACK) → central. [`health`] turns component state changes into events.

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
pub mod logging;
pub mod mosquitto;
pub mod outbox;
pub mod record;
pub mod replay;
pub mod sensors;
pub mod service;
pub mod simulate;
pub mod status;
pub mod uplink;
