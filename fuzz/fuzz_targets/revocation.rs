//! Revocation decoding never panics, whatever decodes re-encodes to the same
//! bytes (one value, one encoding), and only the identity's own signature
//! verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_identity::{MasterSeed, Revocation};

fuzz_target!(|data: &[u8]| {
    if let Ok(revocation) = Revocation::from_bytes(data) {
        assert_eq!(revocation.to_bytes(), data);
        let _ = revocation.verify(&MasterSeed([9; 32]).identity_key().verifying_key());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Revocation::from_text(text);
    }
});
