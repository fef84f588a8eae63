//! Redaction never panics, is idempotent, and never leaves a key of a known
//! shape that the input carried whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_agent::redact::{MARK, redact};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let once = redact(text);
    assert_eq!(redact(&once), once, "redacting twice changed {text:?}");
    let secret = "sk-ant-api03-FUZZfuzzFUZZfuzz0123";
    let embedded = format!("{text} {secret} {text}");
    let redacted = redact(&embedded);
    assert!(!redacted.contains(secret) || text.contains(secret), "{embedded:?} kept the key: {redacted:?}");
    assert!(redacted.contains(MARK));
});
