//! Three real stores that know each other's keys, for the tests that ship
//! entries between them.

use ed25519_dalek::SigningKey;
use roost_store::{InstanceEntry, Standing, Store};

pub const IDS: [&str; 3] = [
    "01900000-0000-7000-8000-00000000000a",
    "01900000-0000-7000-8000-00000000000b",
    "01900000-0000-7000-8000-00000000000c",
];

pub fn key(i: usize) -> SigningKey {
    SigningKey::from_bytes(&[i as u8 + 1; 32])
}

pub struct Node {
    _dir: tempfile::TempDir,
    pub store: Store,
}

/// One store per id of [`IDS`], each with every machine registered.
pub fn nodes() -> Vec<Node> {
    (0..IDS.len())
        .map(|i| {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("roost.db"), IDS[i], key(i)).unwrap();
            for (j, id) in IDS.iter().enumerate() {
                store
                    .register_instance(&InstanceEntry {
                        id: id.to_string(),
                        name: format!("node-{j}"),
                        role: roost_core::Role::Home,
                        addresses: Vec::new(),
                        certificate: "test".into(),
                        signing_key: roost_core::hex::encode(key(j).verifying_key().as_bytes()),
                        encryption_key: "00".repeat(32),
                        version: None,
                        last_seen: None,
                        status: Standing::Active,
                        created_at: "2026-01-01T00:00:00.000Z".into(),
                    })
                    .unwrap();
            }
            Node { _dir: dir, store }
        })
        .collect()
}
