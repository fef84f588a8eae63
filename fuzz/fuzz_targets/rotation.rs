//! Rotation decoding never panics, whatever decodes re-encodes to the same
//! bytes (one value, one encoding), only the old identity's signature with
//! the new one's verifies, and opening a copy never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_identity::{MasterSeed, Rotation};

const KEPT: &str = "01a20806-d44d-7d33-90d7-0d66fd9bc558";

fuzz_target!(|data: &[u8]| {
    if let Ok(rotation) = Rotation::from_bytes(data) {
        assert_eq!(rotation.to_bytes(), data);
        if rotation.verify(&MasterSeed([9; 32]).identity_key().verifying_key()).is_ok() {
            let secret = x25519_dalek::StaticSecret::from([4; 32]);
            if let Ok(seed) = rotation.open_seed(KEPT, &secret) {
                assert_eq!(seed.identity_key().verifying_key().to_bytes(), rotation.new_identity);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Rotation::from_text(text);
    }
});
