//! Opening a sealed machine-keys file never panics on any bytes, and never
//! opens anything but what was sealed with the key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_identity::seal::{open_machine_keys_at_rest, seal_machine_keys_at_rest};

const KEK: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = open_machine_keys_at_rest(data, &KEK) {
        let nonce: [u8; 12] = data[4..16].try_into().expect("an opened file holds a nonce");
        assert_eq!(seal_machine_keys_at_rest(&keys.0, &keys.1, &KEK, &nonce), data, "only a sealed file opens");
    }
});
