//! Certificate decoding never panics, and whatever decodes re-encodes to the
//! same bytes (one value, one encoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_identity::Certificate;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = Certificate::from_bytes(data) {
        assert_eq!(cert.to_bytes(), data);
        let _ = cert.machine_key();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Certificate::from_text(text);
    }
});
