//! This machine's own secret keys at rest: its Ed25519 signing key (its
//! identity on the wire and in the log) and its X25519 key, sealed together
//! with AES-256-GCM under the local key-encryption key in
//! `keys/machine.sealed`, as the seed is. A home written before sealing
//! (`keys/machine.key` and `keys/machine.x25519` in hex) is sealed at its
//! next open and the plain files removed.

use std::path::Path;

use ed25519_dalek::SigningKey;
use roost_identity::seal::{open_machine_keys_at_rest, seal_machine_keys_at_rest};
use x25519_dalek::StaticSecret;

use crate::{InstanceError, Result, files, identity};

const SEALED_KEYS: &str = "keys/machine.sealed";
const PLAIN_SIGNING: &str = "keys/machine.key";
const PLAIN_X25519: &str = "keys/machine.x25519";

/// Creates fresh keys, keeping those an interrupted creation already wrote.
pub(crate) fn create(home: &Path) -> Result<()> {
    let kek = identity::local_kek(home)?;
    let sealed = seal_machine_keys_at_rest(&rand::random(), &rand::random(), &kek, &rand::random());
    files::write_new_or_keep(&home.join(SEALED_KEYS), &sealed)
}

/// This machine's keys, sealing them first if they are still in plain files.
pub(crate) fn read(home: &Path) -> Result<(SigningKey, StaticSecret)> {
    let kek = identity::local_kek(home)?;
    let path = home.join(SEALED_KEYS);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && home.join(PLAIN_SIGNING).exists() => {
            seal_plain_keys(home, &kek)?;
            std::fs::read(&path).map_err(|source| InstanceError::Io { path: path.clone(), source })?
        }
        Err(source) => return Err(InstanceError::Io { path, source }),
    };
    let (signing, x25519) = open_machine_keys_at_rest(&bytes, &kek)
        .map_err(|e| InstanceError::Corrupt { path: path.clone(), reason: e.to_string() })?;
    Ok((SigningKey::from_bytes(&signing), StaticSecret::from(x25519)))
}

/// Seals the keys of a home written before sealing and removes the plain
/// files. Another process doing the same at once keeps whichever sealed
/// file came first: both hold the same keys.
fn seal_plain_keys(home: &Path, kek: &[u8; 32]) -> Result<()> {
    let signing = crate::read_secret(&home.join(PLAIN_SIGNING))?;
    let x25519 = crate::read_secret(&home.join(PLAIN_X25519))?;
    files::write_new_or_keep(
        &home.join(SEALED_KEYS),
        &seal_machine_keys_at_rest(&signing, &x25519, kek, &rand::random()),
    )?;
    for plain in [PLAIN_SIGNING, PLAIN_X25519] {
        files::remove_if_present(&home.join(plain))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_of_an_older_home_are_sealed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        std::fs::create_dir_all(home.join("keys")).unwrap();
        std::fs::write(home.join(PLAIN_SIGNING), roost_identity::hex(&[7; 32])).unwrap();
        std::fs::write(home.join(PLAIN_X25519), roost_identity::hex(&[8; 32])).unwrap();
        let (signing, x25519) = read(home).unwrap();
        assert_eq!(signing.to_bytes(), [7; 32]);
        assert_eq!(x25519.to_bytes(), [8; 32]);
        assert!(!home.join(PLAIN_SIGNING).exists() && !home.join(PLAIN_X25519).exists());
        let sealed = std::fs::read(home.join(SEALED_KEYS)).unwrap();
        assert!(!sealed.windows(32).any(|w| w == [7; 32] || w == [8; 32]), "no key in clear");
        let (again, _) = read(home).unwrap();
        assert_eq!(again.to_bytes(), [7; 32], "the sealed file opens again");
    }
}
