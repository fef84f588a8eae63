//! Whatever a Bot API server answers, reading it never panics, every update
//! read moves the offset past itself and never back, and a reply cut to fit
//! is within Telegram's length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_agent::telegram::{Answer, MAX_TEXT, fit, next_offset, read_sent, read_updates};

fuzz_target!(|data: &[u8]| {
    let Some((&status, body)) = data.split_first() else { return };
    let status = 200 + u16::from(status);
    if let Answer::Done(updates) = read_updates(status, body) {
        let offset = next_offset(0, &updates);
        assert!(updates.iter().all(|u| u.update_id < offset || u.update_id == i64::MAX));
        assert!(next_offset(offset, &updates) == offset);
        for message in updates.iter().filter_map(|u| u.message.as_ref()) {
            assert!(message.message_id.starts_with(&format!("{}:", message.chat)));
        }
    }
    let _ = read_sent(status, body);
    if let Ok(text) = std::str::from_utf8(body) {
        let fitted = fit(&text.repeat(1 + 5000 / (text.len() + 1)));
        assert!(fitted.encode_utf16().count() <= MAX_TEXT);
    }
});
