//! The addresses other machines send (in hellos, join requests and grants)
//! never panic the parsing that decides where to dial and what is loopback.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_instance::addresses::{host_and_port, is_loopback_url};

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else { return };
    match host_and_port(url) {
        Some((host, _)) => assert!(!host.is_empty(), "{url:?} gave an empty host"),
        None => assert!(!is_loopback_url(url), "{url:?} has no host yet is loopback"),
    }
});
