//! `acsgd-central`: the customs side of ACSGD. It receives the signed events of every post
//! ([`ingest`]), keeps them in SQL ([`store`]: SQLite by default, PostgreSQL in production),
//! follows each transit declaration (MRN) along its itinerary in event time ([`tracking`]),
//! routes each declaration to the posts that will see the truck ([`routing`]), takes
//! declarations and operators' actions over HTTP ([`api`], [`declare`]), tells subscribers by
//! email, webhook or bot ([`notify`]), follows trucks between posts by their trackers' fixes
//! ([`positions`], the seal operator's EGTS feed: [`feed`]) and runs it all as one service ([`service`]). The envelope, the declaration and the MRN come from
//! `acsgd-contract`, the same code the appliance signs with.

pub mod api;
pub mod auth;
pub mod board;
pub mod config;
pub mod declare;
pub mod feed;
pub mod ingest;
pub mod notify;
pub mod positions;
pub mod routing;
pub mod service;
pub mod store;
pub mod tracking;
pub mod xml;
