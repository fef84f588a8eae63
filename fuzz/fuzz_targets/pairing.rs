//! What a pairing reads from the other machine never panics: the joiner's
//! SPAKE2 message, the join request the chain side opens and certifies, and
//! the grant the joiner opens. Whatever the chain side certifies from a
//! request decodes back to the same certificate, so every machine accepts it.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use roost_core::RowId;
use roost_identity::cert::{MAX_URLS, MachineClaims};
use roost_identity::pairing::{self, JoinGrant, JoinRequest, PairingCode, Side};
use roost_identity::{Certificate, MasterSeed, Role};
use roost_instance::addresses::{host_and_port, is_loopback_url, url_for};
use roost_instance::parse_key_hex;
use roost_store::registry::merge_addresses;

/// Where the chain side saw the request come from.
const FROM: &str = "192.0.2.7:40000";

fuzz_target!(|data: &[u8]| {
    // SPAKE2 messages are one side byte and a point; the library refuses
    // any other length before doing anything.
    if data.len() == 33 {
        let (handshake, _) = pairing::start(Side::Chain, &PairingCode::generate([1, 2, 3, 4]));
        let _ = handshake.finish(data);
    }
    if let Ok(request) = serde_json::from_slice::<JoinRequest>(data) {
        certify(&request);
    }
    if let Ok(grant) = serde_json::from_slice::<JoinGrant>(data) {
        take(&grant);
    }
});

/// The chain side (`pair::admit`): the joiner's id, keys and addresses
/// turned into a certificate.
fn certify(request: &JoinRequest) {
    let Some(id) = RowId::parse(&request.instance_id) else { return };
    let (Some(signing_key), Some(x25519_key)) =
        (parse_key_hex(&request.signing_key), parse_key_hex(&request.x25519_key))
    else {
        return;
    };
    let from: SocketAddr = FROM.parse().expect("a socket address");
    let usable: Vec<String> = request.addresses.iter().filter(|u| !is_loopback_url(u)).cloned().collect();
    let port = request.addresses.first().and_then(|u| host_and_port(u)).map_or(7151, |(_, p)| p);
    let addresses = merge_addresses(&usable, &[url_for(from.ip(), port)]);
    let claims = MachineClaims {
        instance_id: id.to_string(),
        name: request.name.clone(),
        role: Role::Satellite,
        signing_key,
        x25519_key,
        gateway_urls: addresses.into_iter().take(MAX_URLS).collect(),
        issued_at: 1_790_000_000,
    };
    if let Ok(certificate) = Certificate::issue(claims, &MasterSeed([9; 32]).identity_key()) {
        let decoded = Certificate::from_text(&certificate.to_text()).expect("a certificate it issued decodes");
        assert_eq!(decoded, certificate);
    }
}

/// The joiner (`pair::join`): the seed, the chain's certificate checked
/// against it, and every machine the grant names.
fn take(grant: &JoinGrant) {
    let Some(seed) = parse_key_hex(&grant.seed).map(MasterSeed) else { return };
    if let Ok(chain) = Certificate::from_text(&grant.chain.certificate) {
        let _ = chain.verify(&seed.identity_key().verifying_key());
    }
    let _ = Certificate::from_text(&grant.certificate);
    for machine in std::iter::once(&grant.chain).chain(&grant.machines) {
        let _ = Certificate::from_text(&machine.certificate);
        for address in &machine.addresses {
            let _ = is_loopback_url(address);
        }
    }
}
