//! What the drivers' tests and benchmark share: where the real captures are.

use std::path::PathBuf;

/// `../shared/traces` beside the checkout, or `ACSGD_TRACES`.
pub fn traces() -> PathBuf {
    std::env::var_os("ACSGD_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces"))
}

/// Hex from a capture; the captures are known to be valid hex.
#[allow(dead_code)] // not every test file reads hex captures
pub fn unhex(s: &str) -> Vec<u8> {
    acsgd_drivers::decode::unhex(s.as_bytes()).expect("valid hex in a capture")
}
