//! Token decoding and verification never panic, and no input other than a
//! token signed by the registered key is ever accepted.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use roost_identity::token::{Issuer, Token, TokenVerifier};

const AUDIENCE: &str = "01a20806-d44d-7d33-90d7-0d66fd9bc558";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Token::decode(text);
    let key = SigningKey::from_bytes(&[5; 32]).verifying_key();
    let verdict = TokenVerifier::new(AUDIENCE).verify(text, 1_790_000_000, |_| Issuer::Active(key));
    assert!(verdict.is_err(), "fuzzer forged a token: {text}");
});
