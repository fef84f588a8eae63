//! Roost's identity model.
//!
//! One **identity** per person's chain: a 32-byte master seed from which the
//! identity's Ed25519 key is derived. Each **machine** has its own Ed25519 and
//! X25519 keys and a **certificate** the identity key signs. Machines call each
//! other with short-lived **tokens** they sign themselves. A new machine joins
//! by **pairing** (SPAKE2 over a short code); the seed can also travel in a
//! passphrase-sealed **export** file.
//!
//! Everything here is a pure function of its inputs: callers pass the current
//! time and random bytes, so the rules can be tested and fuzzed without I/O.

pub mod cert;
pub mod export;
pub mod pairing;
pub mod revocation;
pub mod rotation;
pub mod seal;
pub mod seed;
pub mod token;
pub mod words;

use base64::Engine;
use thiserror::Error;

pub use cert::{Certificate, Role};
pub use revocation::{Revocation, RevocationClaims};
pub use rotation::{Recipient, Rotation, RotationClaims};
pub use seed::{MasterSeed, RoostId};
pub use token::{Token, TokenError, TokenVerifier};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("malformed {0}")]
    Malformed(String),
    #[error("signature does not verify: {0}")]
    BadSignature(&'static str),
    #[error("certificate was signed by another identity ({found}), not this chain's ({expected})")]
    ForeignIdentity { found: String, expected: String },
    #[error("wrong passphrase, or the file was altered")]
    WrongPassphrase,
    #[error("passphrase must be at least {0} characters")]
    WeakPassphrase(usize),
    #[error("{0}")]
    Invalid(String),
}

impl From<roost_core::wire::WireError> for IdentityError {
    fn from(e: roost_core::wire::WireError) -> Self {
        IdentityError::Malformed(e.0)
    }
}

/// The identity's signature over a document's canonical `body`, under the
/// document kind's own `domain`.
pub(crate) fn sign_as_identity(domain: &[u8], body: &[u8], identity: &ed25519_dalek::SigningKey) -> [u8; 64] {
    use ed25519_dalek::Signer;
    identity.sign(&[domain, body].concat()).to_bytes()
}

/// Checks that the document naming identity key `found` and carrying
/// `signature` over `body` (under `domain`) was signed by `identity`.
pub(crate) fn verify_as_identity(
    domain: &[u8],
    body: &[u8],
    found: &[u8; 32],
    signature: &[u8; 64],
    identity: &ed25519_dalek::VerifyingKey,
    what: &'static str,
) -> Result<(), IdentityError> {
    check_identity(found, identity)?;
    identity
        .verify_strict(&[domain, body].concat(), &ed25519_dalek::Signature::from_bytes(signature))
        .map_err(|_| IdentityError::BadSignature(what))
}

/// Reads a document's magic and format version, refusing others.
pub(crate) fn read_header(
    r: &mut roost_core::wire::Reader,
    magic: &[u8; 4],
    version: u8,
    what: &str,
) -> Result<(), IdentityError> {
    if r.take(4)? != magic {
        return Err(IdentityError::Malformed(format!("{what}: not a Roost {what}")));
    }
    if r.u8()? != version {
        return Err(IdentityError::Malformed(format!("{what}: unknown version")));
    }
    Ok(())
}

/// Checks that `found` (the identity key a signed document names) is
/// `expected`, the chain's.
fn check_identity(found: &[u8; 32], expected: &ed25519_dalek::VerifyingKey) -> Result<(), IdentityError> {
    if *found == expected.to_bytes() {
        return Ok(());
    }
    let found = ed25519_dalek::VerifyingKey::from_bytes(found)
        .map(|k| RoostId::of(&k).to_string())
        .unwrap_or_else(|_| "an invalid key".into());
    Err(IdentityError::ForeignIdentity { found, expected: RoostId::of(expected).to_string() })
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn unb64(text: &str, what: &str) -> Result<Vec<u8>, IdentityError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|_| IdentityError::Malformed(format!("{what}: not base64url")))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    roost_core::hex::encode(bytes)
}

/// Parses a canonical UUID string into its 16 bytes.
pub fn uuid_bytes(id: &str) -> Result<[u8; 16], IdentityError> {
    let digits: String = id.chars().filter(|c| *c != '-').collect();
    if id.len() != 36 || digits.len() != 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(IdentityError::Malformed(format!("instance id {id:?}")));
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
            .map_err(|_| IdentityError::Malformed(format!("instance id {id:?}")))?;
    }
    Ok(out)
}

/// Formats 16 bytes as a canonical UUID string.
pub fn uuid_string(b: &[u8; 16]) -> String {
    let h = hex(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}
