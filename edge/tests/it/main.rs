//! The appliance's integration tests, one module per area, in one test binary: each binary
//! links the whole `acsgd` library (opencv, ONNX Runtime, sled, rustls), so thirteen of them
//! cost thirteen links of ~140 MB after every change to the library; one costs one.
//!
//! `common` is the harness (the real binary, a real mosquitto, central's stand-in); `study` is
//! the radiation study's simulator, shared with `benches/radiation.rs`.

mod common;
mod study;

mod anpr;
mod bad_input;
mod barrier;
mod demo;
mod diagnose;
mod disk_and_poison;
mod display;
mod lanes;
mod metrics;
mod radiation_study;
mod reliability;
mod replay;
mod security;
mod simulated_traces;
mod systemd;
mod tls_v5;
mod trackers;
