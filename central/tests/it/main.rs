//! Central's integration tests: the store and ingest on SQLite and PostgreSQL, and the service
//! against a real broker.

mod board;
mod cluster;
mod common;
mod demo;
mod ingest;
mod nats;
mod notify;
mod plans;
mod positions;
mod replay;
mod retention;
mod service;
mod xml;
