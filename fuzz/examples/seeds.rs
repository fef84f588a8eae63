//! Writes the seed corpus of every fuzz target: valid encodings made by
//! Roost's own code, a few of each kind, under `seeds/TARGET/`.
//!
//! `cargo run --example seeds` (from `fuzz/`), then for example
//! `cargo fuzz run -s none pairing corpus/pairing seeds/pairing`.

use std::path::Path;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use roost_core::protocol::{Heads, Machine, Message, PROTOCOL_VERSION, SignedEntry};
use roost_core::{Entry, GENESIS, Lamport, Op, RowId, Table};
use roost_identity::cert::MachineClaims;
use roost_identity::pairing::{self, JoinGrant, JoinRequest, KnownMachine, PairingCode, Side};
use roost_identity::seal::KdfParams;
use roost_identity::token::Token;
use roost_identity::{Certificate, MasterSeed, Recipient, Revocation, RevocationClaims, Role, Rotation, RotationClaims, hex};
use roost_lease::{Ballot, Envelope, Message as Lease, Refusal, View};

const JOINER: &str = "01a20806-d444-7c97-be1f-ef8bd5bf8a9d";
const CHAIN: &str = "01a20806-d44d-7d33-90d7-0d66fd9bc558";

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| "seeds".into());
    let root = Path::new(&root);
    let seed = MasterSeed([9; 32]);
    let home = certificate(&seed, CHAIN, "home", Role::Home, &["http://home.lan:7151", "http://192.168.1.2:7151"]);
    let laptop = certificate(&seed, JOINER, "laptop", Role::Satellite, &[]);

    let certificates = [home.to_bytes(), laptop.to_bytes(), home.to_text().into_bytes()];
    write(root, "certificate", &certificates);

    let revocation = |revoked_after: u64| {
        let claims = RevocationClaims { instance_id: JOINER.into(), machine_key: [3; 32], revoked_after, issued_at: 1_790_000_000 };
        Revocation::issue(claims, &seed.identity_key()).expect("a revocation")
    };
    let revocations = [revocation(0), revocation(41)];
    write(root, "revocation", &[revocations[0].to_bytes(), revocations[1].to_bytes(), revocations[1].to_text().into_bytes()]);

    // Kept: the machine whose X25519 secret the fuzz target holds ([4; 32]),
    // and one more.
    let kept = |id: &str, secret: u8| Recipient {
        instance_id: id.into(),
        x25519_key: x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([secret; 32])).to_bytes(),
    };
    let recipients = [kept(CHAIN, 4), kept(JOINER, 5)];
    let claims = RotationClaims { issuer: CHAIN, issued_at: 1_790_000_000, recipients: &recipients };
    let rotation = Rotation::issue(&seed, &MasterSeed([10; 32]), claims, [11; 32]).expect("a rotation");
    let claims = RotationClaims { issuer: CHAIN, issued_at: 1_790_000_001, recipients: &recipients[..1] };
    let one_kept = Rotation::issue(&seed, &MasterSeed([12; 32]), claims, [13; 32]).expect("a rotation");
    write(root, "rotation", &[rotation.to_bytes(), one_kept.to_bytes(), rotation.to_text().into_bytes()]);

    let key = SigningKey::from_bytes(&[6; 32]);
    let token = |audience: &str, issued_at: i64, lifetime: i64| {
        let token = Token {
            issuer: JOINER.into(),
            audience: audience.into(),
            issued_at,
            expires_at: issued_at + lifetime,
            nonce: [3; 16],
        };
        token.sign(&key).expect("a valid token").into_bytes()
    };
    // Signed by a key the fuzz target's verifier does not know: every check
    // but the signature's passes on the first, later ones fail earlier.
    write(
        root,
        "token",
        &[
            token("01a20806-d44d-7d33-90d7-0d66fd9bc558", 1_790_000_000, 60),
            token(JOINER, 1_790_000_000, 60),
            token("01a20806-d44d-7d33-90d7-0d66fd9bc558", 1_700_000_000, 300),
        ],
    );

    let sealed = |kek: [u8; 32]| roost_identity::seal::seal_machine_keys_at_rest(&[4; 32], &[5; 32], &kek, &[6; 12]);
    write(root, "sealed_keys", &[sealed([7; 32]), sealed([8; 32])]);

    let export = roost_identity::export::export(&seed, "correct horse battery", KdfParams::DEFAULT, [1; 16], [2; 12]);
    write(root, "export_file", &[export.expect("an export file").into_bytes()]);

    let entry = |seq: u64, op: Op, row: &str| Entry {
        origin: CHAIN.into(),
        seq,
        lamport: Lamport(seq + 4),
        prev_hash: if seq == 1 { GENESIS } else { [seq as u8; 32] },
        table: Table::Memories,
        op,
        row_id: RowId::v7(1_790_000_000_000, [5; 10]),
        vector: [(CHAIN.to_string(), seq), (JOINER.to_string(), 2)].into(),
        row: row.into(),
    };
    let first = entry(1, Op::Insert, r#"{"id":"x","content":"Prefers green tea","importance":7}"#);
    let heads: Heads = [(CHAIN.to_string(), 3), (JOINER.to_string(), 9)].into();
    let machines = vec![
        Machine { certificate: home.to_text(), addresses: vec!["http://home.lan:7151".into()] },
        Machine { certificate: laptop.to_text(), addresses: vec![] },
    ];
    let messages = [
        Message::Hello {
            version: PROTOCOL_VERSION,
            software: "0.1.0".into(),
            keeps_data: true,
            machines: machines.clone(),
            heads: heads.clone(),
            relays: vec!["http://vps.example:3340/".into()],
        },
        Message::Hello {
            version: PROTOCOL_VERSION,
            software: "0.1.0".into(),
            keeps_data: false,
            machines: vec![],
            heads: Heads::new(),
            relays: vec![],
        },
        Message::Entries(vec![
            SignedEntry { entry: first.clone(), signature: [7; 64] },
            SignedEntry { entry: entry(2, Op::Delete, "{}"), signature: [8; 64] },
        ]),
        Message::Heads(heads.clone()),
        Message::Machines(machines),
        Message::Revocations(revocations.iter().map(Revocation::to_text).collect()),
        Message::Rotations(vec![rotation.to_text(), one_kept.to_text()]),
    ];
    let mut sync: Vec<Vec<u8>> = messages.iter().map(Message::encode).collect();
    sync.push(first.encode());
    write(root, "sync_message", &sync);

    let ballot = Ballot::new(7, CHAIN);
    let lease = [
        Lease::Prepare { req: 1, ballot: ballot.clone(), force: false },
        Lease::Promise { req: 1, ballot: ballot.clone() },
        Lease::Propose { req: 2, ballot: ballot.clone(), ttl: Duration::from_secs(3) },
        Lease::Accepted { req: 2, ballot: ballot.clone() },
        Lease::Reject { req: 3, why: Refusal::Promised(ballot.clone()) },
        Lease::Reject { req: 3, why: Refusal::Open { holder: ballot.clone(), remaining: Duration::from_millis(900) } },
        Lease::Reject { req: 3, why: Refusal::Reserved { successor: JOINER.into() } },
        Lease::Release { req: 4, ballot: ballot.clone(), successor: Some(JOINER.into()) },
        Lease::Released { req: 4, ballot },
        Lease::Heartbeat { claim: Some(7), eligible: true, witness: false, leaving: false, able: true },
        Lease::Incompatible { version: 9 },
        Lease::HandoffAsk { epoch: 7 },
        Lease::HandoffBegin { epoch: 7, head: heads.clone() },
        Lease::HandoffAck { epoch: 7, head: heads },
        Lease::HandoffYield { epoch: 7 },
        Lease::HandoffAbort { epoch: 7, reason: "log not caught up".into() },
        Lease::View(View::new(7, 2, vec![CHAIN.into(), JOINER.into()])),
    ];
    let view = Some(View::new(7, 1, vec![CHAIN.into()]).id);
    let mut envelopes: Vec<Vec<u8>> = lease
        .into_iter()
        .map(|message| Envelope { version: roost_lease::PROTOCOL_VERSION, view, message: Some(message) }.encode())
        .collect();
    envelopes.push(
        Envelope { version: roost_lease::PROTOCOL_VERSION, view: None, message: Some(Lease::HandoffAsk { epoch: 1 }) }
            .encode(),
    );
    write(root, "lease_envelope", &envelopes);

    let (_, spake) = pairing::start(Side::Joiner, &PairingCode::generate([1, 2, 3, 4]));
    let request = JoinRequest {
        instance_id: JOINER.into(),
        name: "laptop".into(),
        signing_key: hex(&SigningKey::from_bytes(&[3; 32]).verifying_key().to_bytes()),
        x25519_key: hex(&[4; 32]),
        addresses: vec![
            "http://laptop.lan:7151".into(),
            "http://[fd00::2]:7151".into(),
            "http://127.0.0.1:7151".into(),
        ],
    };
    let grant = JoinGrant {
        seed: hex(&seed.0),
        certificate: laptop.to_text(),
        chain: KnownMachine { certificate: home.to_text(), addresses: vec!["http://home.lan:7151".into()] },
        machines: vec![KnownMachine { certificate: laptop.to_text(), addresses: vec!["http://10.0.0.3:7151".into()] }],
        relays: vec!["https://relay.example".into()],
        rotations: vec![rotation.to_text()],
    };
    let request = serde_json::to_vec(&request).expect("a request serialises");
    let grant = serde_json::to_vec(&grant).expect("a grant serialises");
    write(root, "pairing", &[spake, request, grant]);

    let addresses = [
        "http://home.lan:7151",
        "http://[::1]:7151/mcp",
        "10.0.0.2:80",
        "https://vps.example.org",
        "http://LOCALHOST:1",
    ];
    write(root, "peer_address", &addresses.map(|a| a.as_bytes().to_vec()));
}

/// A certificate the identity of `seed` issues.
fn certificate(seed: &MasterSeed, id: &str, name: &str, role: Role, urls: &[&str]) -> Certificate {
    let claims = MachineClaims {
        instance_id: id.into(),
        name: name.into(),
        role,
        signing_key: SigningKey::from_bytes(&[name.len() as u8; 32]).verifying_key().to_bytes(),
        x25519_key: [4; 32],
        gateway_urls: urls.iter().map(|u| u.to_string()).collect(),
        issued_at: 1_790_000_000,
    };
    Certificate::issue(claims, &seed.identity_key()).expect("a valid certificate")
}

fn write(root: &Path, target: &str, seeds: &[Vec<u8>]) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).expect("creating the seed directory");
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed).expect("writing a seed");
    }
}
