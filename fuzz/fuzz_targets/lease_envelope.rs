//! The lease's datagram decoder never panics, and whatever it accepts of this
//! protocol version re-encodes to exactly the bytes it read (one encoding per
//! message: flags are 0 or 1, views and heads in canonical order).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_lease::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data)
        && envelope.message.is_some()
    {
        assert_eq!(envelope.encode(), data, "lease envelope encoding is not canonical");
    }
});
