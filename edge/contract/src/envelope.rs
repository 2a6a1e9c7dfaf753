//! The event envelope that central receives, and the post's signing key.
//!
//! Every event the appliance emits travels as one JSON object:
//!
//! ```text
//! {"body":{..},"id":"<uuid>","post":"korgas","schema":"acsgd.v1","seq":42,
//!  "sig":"<128 hex>","time":"2026-11-22T03:36:27.123Z","type":"passage"}
//! ```
//!
//! * `id` is a UUID chosen when the event is created and stored with it, so a resend after a
//!   reconnect or a crash carries the same id and central can de-duplicate on it.
//! * `seq` is assigned by the outbox when the event is accepted: per post, gapless, monotonic
//!   across restarts (the appliance's outbox).
//! * `sig` is a detached Ed25519 signature over the **canonical bytes**: the envelope without
//!   `sig`, as compact JSON with the keys of every object in byte order (no whitespace, strings
//!   escaped as `serde_json` escapes them, numbers as `serde_json` prints them: the shortest
//!   form that reads back to the same bits). The published form is itself canonical, with
//!   `sig` in its sorted place, so a verifier removes the top-level `,"sig":"<hex>"` member from
//!   the bytes it received and checks the signature over the rest. (Parsing and re-serialising
//!   works too, but only with a parser that reads every float back exactly; serde_json without
//!   `float_roundtrip` does not.)
//!
//! The key is 32 random bytes in `<data_dir>/signing.key`, created on first start with mode 0600;
//! its public half is published retained on `acsgd/v1/{post}/key`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// Value of the `schema` field.
pub const SCHEMA: &str = "acsgd.v1";

/// File name of the signing key inside the data directory.
pub const KEY_FILE: &str = "signing.key";

/// Errors of the envelope layer: the signing key and signature checks.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("signing key {path}: {source}")]
    KeyIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key {path}: expected 32 bytes, found {len}")]
    KeyLength { path: PathBuf, len: usize },
    #[error("envelope is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("envelope has no valid signature: {0}")]
    BadSignature(String),
}

/// The event types the appliance makes itself (ingest clients may send others of their own,
/// see [`valid_type`]); each has a JSON Schema in `edge/schemas/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One vehicle on one lane, with its rules and risk channel.
    Passage,
    /// A failed rule, a portal fault, a reading no vehicle claimed.
    Alert,
    /// The fixes of one tracker message.
    Position,
    /// Tracker values without a position.
    Telemetry,
    /// A component going down, degraded or up.
    Health,
    /// An officer acknowledged an alert.
    Ack,
    /// A supervisor overrode a passage's channel.
    Override,
    /// A lane's barrier was commanded (by an officer or by itself), with the lane node's answer.
    Barrier,
}

impl Kind {
    /// The `type` of the envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Passage => "passage",
            Kind::Alert => "alert",
            Kind::Position => "position",
            Kind::Telemetry => "telemetry",
            Kind::Health => "health",
            Kind::Ack => "ack",
            Kind::Override => "override",
            Kind::Barrier => "barrier",
        }
    }
}

impl From<Kind> for String {
    fn from(k: Kind) -> String {
        k.as_str().to_string()
    }
}

/// How precious an event type is when the disk quota runs out (the appliance's outbox evicts by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Raw telemetry (tracker positions): evicted first, refused when the quota is full.
    Bulk = 0,
    /// Passages, alerts, acknowledgements, health: never evicted.
    Keep = 1,
}

impl Priority {
    /// The priority of an event type.
    pub fn of(event_type: &str) -> Priority {
        match event_type {
            t if t == Kind::Position.as_str() => Priority::Bulk,
            _ => Priority::Keep,
        }
    }

    pub fn from_u8(b: u8) -> Option<Priority> {
        match b {
            0 => Some(Priority::Bulk),
            1 => Some(Priority::Keep),
            _ => None,
        }
    }
}

/// Checks an event type name: it becomes the last MQTT topic level, so it must be short,
/// lowercase and must not collide with the levels the contract reserves.
pub fn valid_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 32
        && t.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !matches!(t, "status" | "key" | "in")
}

/// An event before the outbox has accepted it: no `seq`, no signature yet.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub time: OffsetDateTime,
    pub kind: String,
    pub body: Value,
}

impl Event {
    /// A new event of `kind` happening now, with a fresh id.
    pub fn now(kind: impl Into<String>, body: Value) -> Event {
        let time = OffsetDateTime::now_utc();
        Event {
            id: event_id(time),
            time,
            kind: kind.into(),
            body,
        }
    }
}

/// A fresh event id: a UUID of version 7 (RFC 9562), its first 48 bits the event's time in
/// milliseconds, the rest random. Ids of events close in time sort close together, so the
/// index that de-duplicates them at central takes each new one near its end, not at a
/// random page of an index that outgrew memory (as version 4 ids did).
pub fn event_id(time: OffsetDateTime) -> String {
    let nanos = time.unix_timestamp_nanos().max(0);
    let secs = (nanos / 1_000_000_000) as u64;
    let sub = (nanos % 1_000_000_000) as u32;
    uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, sub)).to_string()
}

/// The envelope as published (and as parsed back by a verifier).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub schema: String,
    pub id: String,
    pub post: String,
    pub seq: u64,
    pub time: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub body: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl Envelope {
    /// Parses a published envelope and checks its signature against `key`.
    pub fn verify(bytes: &[u8], key: &VerifyingKey) -> Result<Envelope, EnvelopeError> {
        Envelope::parse_signed(bytes)?.verify(key)
    }

    /// Parses a published envelope and finds the bytes its signature covers, without
    /// checking it yet: [`Signed::verify`] checks one, [`verify_batch`] many at once.
    pub fn parse_signed(bytes: &[u8]) -> Result<Signed, EnvelopeError> {
        let env: Envelope = serde_json::from_slice(bytes)?;
        let bad = |m: &str| EnvelopeError::BadSignature(m.into());
        // The signed bytes are the received ones without the top-level `,"sig":"…"` member:
        // no re-serialisation, so no float has to survive a parse (a parser that is off by
        // one unit in the last place would change the bytes).
        const MEMBER: &[u8] = b",\"sig\":\"";
        let at = bytes
            .windows(MEMBER.len())
            .rposition(|w| w == MEMBER)
            .ok_or_else(|| bad("no sig field"))?;
        let hex_start = at + MEMBER.len();
        let hex = bytes
            .get(hex_start..hex_start + 128)
            .filter(|_| bytes.get(hex_start + 128) == Some(&b'"'))
            .ok_or_else(|| bad("sig is not 64 bytes of hex"))?;
        let sig_hex = std::str::from_utf8(hex).map_err(|_| bad("sig is not hex"))?;
        // The member found must be the top-level one the parser saw.
        if env.sig.as_deref() != Some(sig_hex) {
            return Err(bad("sig is not where the canonical form puts it"));
        }
        let sig_bytes: [u8; 64] = from_hex(sig_hex)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("sig is not 64 bytes of hex"))?;
        let mut signed = Vec::with_capacity(bytes.len());
        signed.extend_from_slice(&bytes[..at]);
        signed.extend_from_slice(&bytes[hex_start + 129..]);
        Ok(Signed {
            envelope: env,
            message: signed,
            signature: Signature::from_bytes(&sig_bytes),
        })
    }
}

/// An envelope parsed, its signature not yet checked ([`Envelope::parse_signed`]).
#[derive(Debug)]
pub struct Signed {
    pub envelope: Envelope,
    message: Vec<u8>,
    signature: Signature,
}

impl Signed {
    /// Checks the signature against `key`.
    pub fn verify(self, key: &VerifyingKey) -> Result<Envelope, EnvelopeError> {
        key.verify(&self.message, &self.signature)
            .map_err(|e| EnvelopeError::BadSignature(e.to_string()))?;
        Ok(self.envelope)
    }
}

/// Checks many envelopes' signatures, each against its key: all at once ([`batch_holds`],
/// about a third of the cost of checking them one by one), and one by one only when the batch
/// fails, to tell which. Each result is what [`Signed::verify`] says of that one, with one
/// difference, documented by ed25519-dalek for its batch check, which this one follows: a
/// signature with a small-order component, which only the key's holder (or someone altering a
/// valid signature of the same message) can make, may pass here and fail alone. It proves the
/// same thing: the holder of the key signed these bytes.
pub fn verify_batch(items: Vec<(Signed, VerifyingKey)>) -> Vec<Result<Envelope, EnvelopeError>> {
    if items.len() > 1 && batch_holds(&items) {
        return items.into_iter().map(|(s, _)| Ok(s.envelope)).collect();
    }
    items.into_iter().map(|(s, k)| s.verify(&k)).collect()
}

/// Whether every signature of `items` holds, by the batch equation of ed25519-dalek's
/// `verify_batch`: with a random 128-bit `z` for each signature (R, s) of message M under key
/// A and `h = SHA-512(R ‖ A ‖ M)`,
///
/// ```text
/// (−Σ z·s) B + Σ z·R + Σ (z·h) A = 0
/// ```
///
/// One change: the terms of one key are added up before the multiplication, `(Σ z·h) A`
/// once per key instead of `(z·h) A` once per signature. It is the same sum, so it holds for
/// exactly the same signatures, but a batch from a few posts (central's are: a broker
/// delivers each post's events together) has about half the points to multiply.
///
/// `z` comes from the operating system's random source, as in the batch verification of
/// the Ed25519 paper; without it (getrandom failed) the batch says no and the signatures are
/// checked one by one.
pub fn batch_holds(items: &[(Signed, VerifyingKey)]) -> bool {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
    use sha2::{Digest, Sha512};

    let mut random = vec![0u8; 16 * items.len()];
    if getrandom::getrandom(&mut random).is_err() {
        return false;
    }
    let mut b = Scalar::ZERO;
    // Each signature's R, the base point, and at most one point a signature for the keys.
    let mut scalars = Vec::with_capacity(2 * items.len() + 1);
    let mut points = Vec::with_capacity(2 * items.len() + 1);
    // Each key once: its bytes, its point, the sum of its signatures' z·h.
    let mut keys: Vec<(&[u8; 32], EdwardsPoint, Scalar)> = Vec::new();
    for ((signed, key), z) in items.iter().zip(random.chunks_exact(16)) {
        let mut z16 = [0u8; 16];
        z16.copy_from_slice(z);
        let z = Scalar::from(u128::from_le_bytes(z16));
        let sig = &signed.signature;
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes())) else {
            return false;
        };
        let Some(r) = CompressedEdwardsY(*sig.r_bytes()).decompress() else {
            return false;
        };
        let h = Scalar::from_hash(
            Sha512::new()
                .chain_update(sig.r_bytes())
                .chain_update(key.as_bytes())
                .chain_update(&signed.message),
        );
        b += z * s;
        scalars.push(z);
        points.push(r);
        match keys
            .iter_mut()
            .find(|(bytes, _, _)| *bytes == key.as_bytes())
        {
            Some((_, _, sum)) => *sum += z * h,
            None => keys.push((key.as_bytes(), key.to_edwards(), z * h)),
        }
    }
    scalars.push(-b);
    points.push(ED25519_BASEPOINT_POINT);
    for (_, point, sum) in keys {
        scalars.push(sum);
        points.push(point);
    }
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

/// Formats a time as RFC 3339 UTC with milliseconds (`2026-11-22T03:36:27.123Z`).
pub fn rfc3339_ms(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn key_pair(seed: &[u8; 32]) -> Result<Ed25519KeyPair, EnvelopeError> {
    let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| EnvelopeError::KeyIo {
        path: "(key)".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    debug_assert_eq!(pair.public_key().as_ref(), public_of(seed).as_bytes());
    Ok(pair)
}

fn public_of(seed: &[u8; 32]) -> VerifyingKey {
    ed25519_dalek::SigningKey::from_bytes(seed).verifying_key()
}

/// The post's Ed25519 signing key.
///
/// Signing goes through AWS-LC (already linked for TLS): its Ed25519 takes about 10 µs a
/// signature on the development VM against 21 µs for ed25519-dalek, and signing is most of
/// what an append costs. The signatures are the same bytes (Ed25519 is deterministic; a test
/// checks both libraries agree); verification stays with ed25519-dalek.
pub struct Signer {
    key: Ed25519KeyPair,
    public: VerifyingKey,
    post: String,
}

impl Signer {
    /// Loads `<data_dir>/signing.key`, creating it (mode 0600) on first start. A key file that
    /// others can read has its permissions tightened, with a warning.
    pub fn load_or_create(data_dir: &Path, post: &str) -> Result<Signer, EnvelopeError> {
        let path = data_dir.join(KEY_FILE);
        let io = |source| EnvelopeError::KeyIo {
            path: path.clone(),
            source,
        };
        let seed: [u8; 32] = match fs::read(&path) {
            Ok(bytes) => {
                let len = bytes.len();
                let seed = bytes.try_into().map_err(|_| EnvelopeError::KeyLength {
                    path: path.clone(),
                    len,
                })?;
                let mode = fs::metadata(&path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{mode:o}"),
                        "signing key was readable by others; restricting it to the owner");
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io)?;
                }
                seed
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::getrandom(&mut seed)
                    .map_err(|e| io(std::io::Error::other(e.to_string())))?;
                // A crash never leaves half a key.
                crate::files::write_private(&path, &seed).map_err(io)?;
                tracing::info!(path = %path.display(), "generated a new signing key");
                seed
            }
            Err(e) => return Err(io(e)),
        };
        Ok(Signer {
            key: key_pair(&seed)?,
            public: public_of(&seed),
            post: post.to_string(),
        })
    }

    /// The public half of the key in `<data_dir>/signing.key`, without creating one: `None`
    /// while the service has not made it yet (what a technician reads out for central).
    pub fn public_key_in(data_dir: &Path) -> Result<Option<VerifyingKey>, EnvelopeError> {
        let path = data_dir.join(KEY_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let len = bytes.len();
                let seed: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| EnvelopeError::KeyLength { path, len })?;
                Ok(Some(public_of(&seed)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(EnvelopeError::KeyIo { path, source }),
        }
    }

    /// A key that lives only in memory (`acsgd replay`: its events go to stdout, not to
    /// central, and must not be mistaken for the post's).
    pub fn ephemeral(post: &str) -> Result<Signer, EnvelopeError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| EnvelopeError::KeyIo {
            path: "(memory)".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Signer {
            key: key_pair(&seed)?,
            public: public_of(&seed),
            post: post.to_string(),
        })
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.public
    }

    /// The public key as published retained on `acsgd/v1/{post}/key`.
    pub fn key_announcement(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schema": SCHEMA,
            "post": self.post,
            "alg": "ed25519",
            "key": to_hex(self.verifying_key().as_bytes()),
        }))
        .expect("a JSON object of strings serialises")
    }

    /// Seals an accepted event: the published, signed envelope bytes.
    pub fn seal(&self, event: &Event, seq: u64) -> Vec<u8> {
        let time = rfc3339_ms(event.time);
        let mut canon = Vec::with_capacity(512);
        let at = write_canonical(
            &mut canon,
            &event.body,
            &event.id,
            &self.post,
            seq,
            &time,
            &event.kind,
        );
        let sig = to_hex(self.key.sign(&canon).as_ref());
        // `sig` sorts between `seq` and `time`: splice it in rather than serialise again.
        let mut out = Vec::with_capacity(canon.len() + 140);
        out.extend_from_slice(&canon[..at]);
        out.extend_from_slice(b",\"sig\":\"");
        out.extend_from_slice(sig.as_bytes());
        out.push(b'"');
        out.extend_from_slice(&canon[at..]);
        out
    }
}

/// The envelope of `event` without `sig`, canonical: what the signature covers. `acsgd replay
/// --unsigned` prints this (a signature by a key nobody holds proves nothing, and costs
/// more than the fusion it follows).
pub fn unsigned(event: &Event, post: &str, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_canonical(
        &mut out,
        &event.body,
        &event.id,
        post,
        seq,
        &rfc3339_ms(event.time),
        &event.kind,
    );
    out
}

/// Writes the envelope without `sig` in canonical (sorted) key order; returns the offset just
/// after the `seq` value, where `sig` belongs in the published form.
fn write_canonical(
    out: &mut Vec<u8>,
    body: &Value,
    id: &str,
    post: &str,
    seq: u64,
    time: &str,
    kind: &str,
) -> usize {
    out.extend_from_slice(b"{\"body\":");
    canonical_value(out, body);
    out.extend_from_slice(b",\"id\":");
    json_str(out, id);
    out.extend_from_slice(b",\"post\":");
    json_str(out, post);
    out.extend_from_slice(b",\"schema\":");
    json_str(out, SCHEMA);
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    let at = out.len();
    out.extend_from_slice(b",\"time\":");
    json_str(out, time);
    out.extend_from_slice(b",\"type\":");
    json_str(out, kind);
    out.push(b'}');
    at
}

/// Canonical JSON of a value: compact, object keys in byte order at every level. Done by hand
/// rather than trusting `serde_json::Map`'s order, which a dependency enabling `preserve_order`
/// would silently change.
fn canonical_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(out, k);
                out.push(b':');
                canonical_value(out, &map[k]);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_value(out, item);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing to a Vec cannot fail"),
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses hex (either case); `None` on odd length or a non-hex digit.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn signer() -> (tempfile::TempDir, Signer) {
        let dir = tempfile::tempdir().unwrap();
        let s = Signer::load_or_create(dir.path(), "korgas").unwrap();
        (dir, s)
    }

    #[test]
    fn sealed_envelope_verifies_and_is_canonical() {
        let (_d, s) = signer();
        let ev = Event::now(
            "alert",
            json!({"z": 1, "a": {"y": [2, {"c": 3, "b": 4}], "x": "é\""}}),
        );
        let bytes = s.seal(&ev, 7);
        let env = Envelope::verify(&bytes, &s.verifying_key()).unwrap();
        assert_eq!(env.seq, 7);
        assert_eq!(env.post, "korgas");
        assert_eq!(env.schema, SCHEMA);
        assert_eq!(env.id, ev.id);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(r#"{"body":{"a":{"x":"é\"","y":[2,{"b":4,"c":3}]},"z":1},"id":"#));
        // The published form re-serialises to itself: it is canonical.
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let mut again = Vec::new();
        canonical_value(&mut again, &v);
        assert_eq!(again, bytes);
    }

    #[test]
    fn envelopes_with_full_precision_floats_verify() {
        // Full-precision floats (as fixes carry them) verify: the signed bytes are taken from
        // the received ones, not from a re-serialisation of parsed floats.
        let (_d, s) = signer();
        let key = s.verifying_key();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..300 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let lat = (x >> 11) as f64 / (1u64 << 53) as f64 * 180.0 - 90.0;
            let ev = Event::now(
                "position",
                serde_json::json!({"fixes": [{"lat": lat, "lon": lat / 3.0}]}),
            );
            let bytes = s.seal(&ev, i + 1);
            assert!(
                Envelope::verify(&bytes, &key).is_ok(),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn a_sig_key_inside_the_body_does_not_confuse_verification() {
        let (_d, s) = signer();
        let fake = "ab".repeat(64);
        let ev = Event::now(
            "alert",
            serde_json::json!({"a": 1, "sig": fake, "z": {"sig": fake}}),
        );
        let bytes = s.seal(&ev, 7);
        assert!(Envelope::verify(&bytes, &s.verifying_key()).is_ok());
        // The same envelope with its members out of canonical order is refused.
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let reordered = format!(
            "{{\"sig\":{},\"body\":{},\"id\":{},\"post\":{},\"schema\":{},\"seq\":7,\"time\":{},\"type\":{}}}",
            v["sig"], v["body"], v["id"], v["post"], v["schema"], v["time"], v["type"]
        );
        assert!(Envelope::verify(reordered.as_bytes(), &s.verifying_key()).is_err());
    }

    #[test]
    fn aws_lc_and_dalek_sign_the_same_bytes() {
        use ed25519_dalek::Signer as _;
        let (d, s) = signer();
        let seed: [u8; 32] = fs::read(d.path().join(KEY_FILE))
            .unwrap()
            .try_into()
            .unwrap();
        let dalek = ed25519_dalek::SigningKey::from_bytes(&seed);
        assert_eq!(dalek.verifying_key(), s.verifying_key());
        let ev = Event::now(
            "passage",
            serde_json::json!({"lane": "1", "gross_kg": 38_200}),
        );
        let sealed: serde_json::Value = serde_json::from_slice(&s.seal(&ev, 3)).unwrap();
        let mut canon = Vec::new();
        write_canonical(
            &mut canon,
            &ev.body,
            &ev.id,
            "korgas",
            3,
            &rfc3339_ms(ev.time),
            &ev.kind,
        );
        assert_eq!(sealed["sig"], to_hex(&dalek.sign(&canon).to_bytes()));
    }

    #[test]
    fn tampered_envelope_fails_verification() {
        let (_d, s) = signer();
        let bytes = s.seal(&Event::now("passage", json!({"gross_kg": 38000})), 1);
        let forged = String::from_utf8(bytes).unwrap().replace("38000", "18000");
        let err = Envelope::verify(forged.as_bytes(), &s.verifying_key()).unwrap_err();
        assert!(matches!(err, EnvelopeError::BadSignature(_)), "{err}");
    }

    #[test]
    fn a_batch_tells_which_signatures_are_bad() {
        let (_d1, a) = signer();
        let dir = tempfile::tempdir().unwrap();
        let b = Signer::load_or_create(dir.path(), "kordai").unwrap();
        // 70 envelopes of two posts, each checked against its own post's key; then one
        // tampered, one checked against the other post's key.
        let sealed: Vec<(Vec<u8>, VerifyingKey)> = (1..=70u64)
            .map(|seq| {
                let s = if seq % 2 == 0 { &a } else { &b };
                let ev = Event::now("alert", json!({"n": seq}));
                (s.seal(&ev, seq), s.verifying_key())
            })
            .collect();
        let items = |sealed: &[(Vec<u8>, VerifyingKey)]| {
            sealed
                .iter()
                .map(|(bytes, key)| (Envelope::parse_signed(bytes).unwrap(), *key))
                .collect::<Vec<_>>()
        };
        let all = verify_batch(items(&sealed));
        assert_eq!(all.len(), 70);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.as_ref().unwrap().seq, i as u64 + 1);
        }
        let mut bad = sealed.clone();
        bad[9].0 = String::from_utf8(bad[9].0.clone())
            .unwrap()
            .replace(r#""n":10"#, r#""n":11"#)
            .into_bytes();
        bad[40].1 = bad[41].1;
        let checked = verify_batch(items(&bad));
        for (i, r) in checked.iter().enumerate() {
            match i {
                9 | 40 => assert!(
                    matches!(r, Err(EnvelopeError::BadSignature(_))),
                    "{i}: {r:?}"
                ),
                _ => assert_eq!(r.as_ref().unwrap().seq, i as u64 + 1),
            }
        }
        // The batch equation itself (a failing one would still give the right answers, one
        // by one): it holds for the good ones, not with a tampered one or a wrong key, and it
        // says what ed25519-dalek's own batch check says of the same signatures.
        let dalek = |items: &[(Signed, VerifyingKey)]| {
            let messages: Vec<&[u8]> = items.iter().map(|(s, _)| s.message.as_slice()).collect();
            let signatures: Vec<Signature> = items.iter().map(|(s, _)| s.signature).collect();
            let keys: Vec<VerifyingKey> = items.iter().map(|(_, k)| *k).collect();
            ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        };
        for (set, holds) in [
            (items(&sealed), true),
            (items(&bad), false),
            (items(&bad[..10]), false),
            (items(&bad[10..41]), false),
            (items(&bad[10..40]), true),
        ] {
            assert_eq!(batch_holds(&set), holds);
            assert_eq!(dalek(&set), holds);
        }
        // A signature whose s is not reduced (s + l: the same point equation, a malleated
        // signature) is refused by both.
        let mut malleated = items(&sealed[..5]);
        let mut sig = malleated[2].0.signature.to_bytes();
        let mut carry = 0u16;
        // l = 2^252 + 27742317777372353535851937790883648493, little-endian.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        for (i, l) in L.iter().enumerate() {
            let v = sig[32 + i] as u16 + *l as u16 + carry;
            sig[32 + i] = v as u8;
            carry = v >> 8;
        }
        malleated[2].0.signature = Signature::from_bytes(&sig);
        assert!(!batch_holds(&malleated));
        assert!(!dalek(&malleated));
        // One alone, and none.
        let one = verify_batch(items(&bad[9..10]));
        assert!(one[0].is_err());
        assert!(verify_batch(Vec::new()).is_empty());
    }

    #[test]
    fn event_ids_are_version_7_and_sort_by_time() {
        let t0 = time::macros::datetime!(2026-12-03 20:00:00.000 UTC);
        let ids: Vec<String> = (0..50)
            .map(|ms| event_id(t0 + time::Duration::milliseconds(ms * 3)))
            .collect();
        for id in &ids {
            let u = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 7, "{id}");
            let (secs, nanos) = u.get_timestamp().unwrap().to_unix();
            assert_eq!(secs, t0.unix_timestamp() as u64);
            assert!(nanos < 150_000_000);
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "ids in time order sort in that order");
        // Two events of the same millisecond still get two ids.
        assert_ne!(event_id(t0), event_id(t0));
    }

    #[test]
    fn key_is_created_owner_only_and_reloaded_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let a = Signer::load_or_create(dir.path(), "kordai").unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Signer::load_or_create(dir.path(), "kordai").unwrap();
        assert_eq!(a.verifying_key(), b.verifying_key());
    }

    #[test]
    fn short_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        let err = Signer::load_or_create(dir.path(), "p").err().unwrap();
        assert!(
            err.to_string().contains("expected 32 bytes, found 5"),
            "{err}"
        );
    }

    #[test]
    fn time_is_rfc3339_utc_with_millis() {
        let t = time::macros::datetime!(2026-11-22 03:36:27.123456 +05:00);
        assert_eq!(rfc3339_ms(t), "2026-11-21T22:36:27.123Z");
    }

    #[test]
    fn type_names_are_topic_safe() {
        assert!(valid_type("passage"));
        assert!(valid_type("seal_state2"));
        for bad in ["", "Alert", "a/b", "a+", "#", "status", "key", "in", "1x"] {
            assert!(!valid_type(bad), "{bad:?}");
        }
    }
}
