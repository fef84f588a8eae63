//! The log-entry and sync-message decoders never panic, and whatever they
//! accept re-encodes to exactly the bytes they read (one encoding per value,
//! so a signature always covers what is applied).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_core::Entry;
use roost_core::protocol::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = Entry::decode(data) {
        assert_eq!(entry.encode(), data, "entry encoding is not canonical");
    }
    if let Ok(message) = Message::decode(data) {
        assert_eq!(message.encode(), data, "message encoding is not canonical");
    }
});
