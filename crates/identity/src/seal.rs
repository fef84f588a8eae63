//! Authenticated encryption (AES-256-GCM) and passphrase keys (Argon2id).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::{IdentityError, MasterSeed};

/// Encrypts `plaintext` bound to `aad`.
pub fn seal(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    Aes256Gcm::new(key.into())
        .encrypt(&Nonce::from(*nonce), Payload { msg: plaintext, aad })
        .expect("AES-GCM encrypts any message of sane size")
}

/// Decrypts, or fails if the key, nonce, `aad` or ciphertext differ from sealing.
pub fn open(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, IdentityError> {
    Aes256Gcm::new(key.into())
        .decrypt(&Nonce::from(*nonce), Payload { msg: ciphertext, aad })
        .map_err(|_| IdentityError::WrongPassphrase)
}

/// Argon2id cost parameters, stored beside what they protect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about half a second on a small machine,
    /// beyond OWASP's minimum for Argon2id.
    pub const DEFAULT: KdfParams = KdfParams { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 };

    /// Refuses parameters outside sane bounds, so a doctored file cannot make
    /// the reader allocate gigabytes or spin for hours.
    pub fn checked(self) -> Result<KdfParams, IdentityError> {
        let ok = (1..=8).contains(&self.parallelism)
            && (8 * self.parallelism..=1024 * 1024).contains(&self.memory_kib)
            && (1..=10).contains(&self.iterations);
        if ok { Ok(self) } else { Err(IdentityError::Malformed("key derivation parameters out of range".into())) }
    }
}

/// Derives a 32-byte key from a passphrase.
pub fn passphrase_key(passphrase: &str, salt: &[u8; 16], params: KdfParams) -> Result<[u8; 32], IdentityError> {
    let params = params.checked()?;
    let argon = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(params.memory_kib, params.iterations, params.parallelism, Some(32))
            .map_err(|e| IdentityError::Malformed(format!("key derivation parameters: {e}")))?,
    );
    let mut key = [0u8; 32];
    argon
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| IdentityError::Invalid(format!("key derivation failed: {e}")))?;
    Ok(key)
}

const AT_REST_MAGIC: &[u8; 4] = b"RSD1";
const AT_REST_AAD: &[u8] = b"roost/seed-at-rest/v1";

/// The seed as stored on disk: magic, nonce, then the seed sealed with the
/// machine's local key-encryption key.
pub fn seal_seed_at_rest(seed: &MasterSeed, kek: &[u8; 32], nonce: &[u8; 12]) -> Vec<u8> {
    [AT_REST_MAGIC.as_slice(), nonce, &seal(kek, nonce, AT_REST_AAD, &seed.0)].concat()
}

pub fn open_seed_at_rest(bytes: &[u8], kek: &[u8; 32]) -> Result<MasterSeed, IdentityError> {
    if bytes.len() != 4 + 12 + 32 + 16 || &bytes[..4] != AT_REST_MAGIC {
        return Err(IdentityError::Malformed("sealed seed file".into()));
    }
    let nonce: [u8; 12] = bytes[4..16].try_into().expect("12 bytes");
    let seed = open(kek, &nonce, AT_REST_AAD, &bytes[16..])
        .map_err(|_| IdentityError::Invalid("the sealed seed does not open with this machine's key file".into()))?;
    Ok(MasterSeed(seed.try_into().expect("32-byte plaintext")))
}

const KEYS_MAGIC: &[u8; 4] = b"RMK1";
const KEYS_AAD: &[u8] = b"roost/machine-keys-at-rest/v1";

/// A machine's own secret keys (Ed25519 signing, X25519) as stored on disk:
/// magic, nonce, then both sealed with the machine's local
/// key-encryption key, as the seed is.
pub fn seal_machine_keys_at_rest(signing: &[u8; 32], x25519: &[u8; 32], kek: &[u8; 32], nonce: &[u8; 12]) -> Vec<u8> {
    [KEYS_MAGIC.as_slice(), nonce, &seal(kek, nonce, KEYS_AAD, &[signing.as_slice(), x25519].concat())].concat()
}

/// The signing and X25519 secret keys sealed by [`seal_machine_keys_at_rest`].
pub fn open_machine_keys_at_rest(bytes: &[u8], kek: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), IdentityError> {
    if bytes.len() != 4 + 12 + 64 + 16 || &bytes[..4] != KEYS_MAGIC {
        return Err(IdentityError::Malformed("sealed machine keys file".into()));
    }
    let nonce: [u8; 12] = bytes[4..16].try_into().expect("12 bytes");
    let keys = open(kek, &nonce, KEYS_AAD, &bytes[16..]).map_err(|_| {
        IdentityError::Invalid("the sealed machine keys do not open with this machine's key file".into())
    })?;
    let (signing, x25519) = keys.split_at(32);
    Ok((signing.try_into().expect("32 bytes"), x25519.try_into().expect("32 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_keys_at_rest_round_trip_and_tamper() {
        let sealed = seal_machine_keys_at_rest(&[3; 32], &[4; 32], &[1; 32], &[2; 12]);
        assert_eq!(open_machine_keys_at_rest(&sealed, &[1; 32]).unwrap(), ([3; 32], [4; 32]));
        assert!(open_machine_keys_at_rest(&sealed, &[9; 32]).is_err());
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 1;
            assert!(open_machine_keys_at_rest(&tampered, &[1; 32]).is_err(), "byte {i}");
        }
        assert!(open_machine_keys_at_rest(&sealed[..sealed.len() - 1], &[1; 32]).is_err());
        let sealed_seed = seal_seed_at_rest(&MasterSeed([3; 32]), &[1; 32], &[2; 12]);
        assert!(open_machine_keys_at_rest(&sealed_seed, &[1; 32]).is_err(), "a seed file is not a keys file");
    }

    #[test]
    fn seed_at_rest_round_trip_and_tamper() {
        let seed = MasterSeed([4; 32]);
        let sealed = seal_seed_at_rest(&seed, &[1; 32], &[2; 12]);
        assert_eq!(open_seed_at_rest(&sealed, &[1; 32]).unwrap(), seed);
        assert!(open_seed_at_rest(&sealed, &[9; 32]).is_err());
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(open_seed_at_rest(&tampered, &[1; 32]).is_err());
    }

    #[test]
    fn kdf_bounds() {
        assert!(KdfParams::DEFAULT.checked().is_ok());
        assert!(KdfParams { memory_kib: 1 << 30, ..KdfParams::DEFAULT }.checked().is_err());
        assert!(KdfParams { iterations: 0, ..KdfParams::DEFAULT }.checked().is_err());
    }
}

const PASSPHRASE_MAGIC: &[u8; 4] = b"RSP1";
const PASSPHRASE_AAD: &[u8] = b"roost/seed-at-rest/passphrase/v1";

/// The seed sealed with a passphrase instead of the key file: magic, Argon2id
/// parameters, salt, nonce, ciphertext.
pub fn seal_seed_with_passphrase(
    seed: &MasterSeed,
    passphrase: &str,
    kdf: KdfParams,
    salt: [u8; 16],
    nonce: [u8; 12],
) -> Result<Vec<u8>, IdentityError> {
    under_passphrase(PASSPHRASE_MAGIC, PASSPHRASE_AAD, &seed.0, passphrase, kdf, salt, nonce)
}

/// `plaintext` sealed under `passphrase`: `magic`, the Argon2id parameters,
/// salt, nonce, ciphertext.
fn under_passphrase(
    magic: &[u8; 4],
    aad: &[u8],
    plaintext: &[u8],
    passphrase: &str,
    kdf: KdfParams,
    salt: [u8; 16],
    nonce: [u8; 12],
) -> Result<Vec<u8>, IdentityError> {
    let key = passphrase_key(passphrase, &salt, kdf)?;
    let mut out = magic.to_vec();
    for n in [kdf.memory_kib, kdf.iterations, kdf.parallelism] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&seal(&key, &nonce, aad, plaintext));
    Ok(out)
}

/// Opens what [`under_passphrase`] sealed with `magic` and `aad`.
fn from_passphrase(magic: &[u8; 4], aad: &[u8], bytes: &[u8], passphrase: &str) -> Result<Vec<u8>, IdentityError> {
    if bytes.len() < 4 + 12 + 16 + 12 + 16 || !bytes.starts_with(magic) {
        return Err(IdentityError::Malformed("passphrase-sealed data".into()));
    }
    let word = |i: usize| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes"));
    let kdf = KdfParams { memory_kib: word(0), iterations: word(1), parallelism: word(2) };
    let salt: [u8; 16] = bytes[16..32].try_into().expect("16 bytes");
    let nonce: [u8; 12] = bytes[32..44].try_into().expect("12 bytes");
    let key = passphrase_key(passphrase, &salt, kdf)?;
    open(&key, &nonce, aad, &bytes[44..])
}

const BACKUP_MAGIC: &[u8; 4] = b"RBS1";
const BACKUP_AAD: &[u8] = b"roost/backup-secrets/v1";

/// A backup's secrets (the machine's keys, the seed) sealed under a passphrase.
pub fn seal_backup_secrets(
    secrets: &[u8],
    passphrase: &str,
    kdf: KdfParams,
    salt: [u8; 16],
    nonce: [u8; 12],
) -> Result<Vec<u8>, IdentityError> {
    under_passphrase(BACKUP_MAGIC, BACKUP_AAD, secrets, passphrase, kdf, salt, nonce)
}

/// Opens what [`seal_backup_secrets`] sealed; a wrong passphrase is
/// [`IdentityError::WrongPassphrase`].
pub fn open_backup_secrets(bytes: &[u8], passphrase: &str) -> Result<Vec<u8>, IdentityError> {
    from_passphrase(BACKUP_MAGIC, BACKUP_AAD, bytes, passphrase)
}

/// Whether a stored seed needs a passphrase to open.
pub fn needs_passphrase(bytes: &[u8]) -> bool {
    bytes.starts_with(PASSPHRASE_MAGIC)
}

pub fn open_seed_with_passphrase(bytes: &[u8], passphrase: &str) -> Result<MasterSeed, IdentityError> {
    if bytes.len() != 4 + 12 + 16 + 12 + 48 || !needs_passphrase(bytes) {
        return Err(IdentityError::Malformed("passphrase-sealed seed file".into()));
    }
    let seed = from_passphrase(PASSPHRASE_MAGIC, PASSPHRASE_AAD, bytes, passphrase)?;
    Ok(MasterSeed(seed.try_into().expect("32-byte plaintext")))
}

#[cfg(test)]
mod passphrase_tests {
    use super::*;

    #[test]
    fn passphrase_sealed_seed_round_trip() {
        let fast = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
        let seed = MasterSeed([6; 32]);
        let sealed = seal_seed_with_passphrase(&seed, "a long passphrase", fast, [1; 16], [2; 12]).unwrap();
        assert!(needs_passphrase(&sealed));
        assert_eq!(open_seed_with_passphrase(&sealed, "a long passphrase").unwrap(), seed);
        assert_eq!(open_seed_with_passphrase(&sealed, "another one"), Err(IdentityError::WrongPassphrase));
    }

    #[test]
    fn backup_secrets_round_trip_and_are_not_a_seed_file() {
        let fast = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
        let sealed = seal_backup_secrets(&[5; 96], "a long passphrase", fast, [1; 16], [2; 12]).unwrap();
        assert_eq!(open_backup_secrets(&sealed, "a long passphrase").unwrap(), vec![5; 96]);
        assert_eq!(open_backup_secrets(&sealed, "wrong"), Err(IdentityError::WrongPassphrase));
        assert!(open_seed_with_passphrase(&sealed, "a long passphrase").is_err());
        assert!(open_backup_secrets(&sealed[..40], "a long passphrase").is_err());
    }
}
