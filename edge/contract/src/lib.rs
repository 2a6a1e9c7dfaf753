//! What the appliance and central agree on, and nothing else: the signed event [`envelope`]
//! (event types, canonical JSON, Ed25519 signing and verification, the post's key file), the
//! [`declaration`] of a transit (what central routes to the posts and the posts match against), the
//! [`mrn`] form of a transit declaration number, the [`plate`] text both compare, the [`geo`]metry of corridors, and the [`files`] rules for small files that
//! must never be seen half-written (the key file among them). The JSON Schemas of the event
//! bodies are in `edge/schemas/`.
//!
//! It depends on no other crate of the workspace; everything else depends on it.

pub mod declaration;
pub mod envelope;
pub mod files;
pub mod geo;
pub mod mrn;
pub mod plate;

pub use envelope::{rfc3339_ms, Event};
