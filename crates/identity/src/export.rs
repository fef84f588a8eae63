//! The identity export file: the master seed sealed with a passphrase.
//!
//! ```text
//! -----BEGIN ROOST IDENTITY-----
//! Version: 1
//! Roost-ID: 7K3M-9QXD-2F8T-HWAB-Z
//! KDF: argon2id m=65536 t=3 p=1
//! Salt: <base64url>
//! Nonce: <base64url>
//!
//! <base64url ciphertext>
//! -----END ROOST IDENTITY-----
//! ```
//!
//! The headers are authenticated as AES-GCM associated data, so the visible
//! Roost ID or the cost parameters cannot be changed without detection, and
//! after decryption the seed must produce the Roost ID the header shows.

use crate::seal::{KdfParams, open, passphrase_key, seal};
use crate::{IdentityError, MasterSeed, RoostId, b64, unb64};

pub const MIN_PASSPHRASE: usize = 12;
const BEGIN: &str = "-----BEGIN ROOST IDENTITY-----";
const END: &str = "-----END ROOST IDENTITY-----";

fn headers(id: &RoostId, kdf: KdfParams, salt: &[u8; 16], nonce: &[u8; 12]) -> String {
    format!(
        "Version: 1\nRoost-ID: {id}\nKDF: argon2id m={} t={} p={}\nSalt: {}\nNonce: {}\n",
        kdf.memory_kib,
        kdf.iterations,
        kdf.parallelism,
        b64(salt),
        b64(nonce)
    )
}

/// Seals `seed` under `passphrase`; `salt` and `nonce` must be fresh random bytes.
pub fn export(
    seed: &MasterSeed,
    passphrase: &str,
    kdf: KdfParams,
    salt: [u8; 16],
    nonce: [u8; 12],
) -> Result<String, IdentityError> {
    if passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(IdentityError::WeakPassphrase(MIN_PASSPHRASE));
    }
    let head = headers(&seed.roost_id(), kdf, &salt, &nonce);
    let key = passphrase_key(passphrase, &salt, kdf)?;
    let body = b64(&seal(&key, &nonce, head.as_bytes(), &seed.0));
    Ok(format!("{BEGIN}\n{head}\n{body}\n{END}\n"))
}

/// Reads the Roost ID an export file claims, without the passphrase.
pub fn peek_roost_id(text: &str) -> Result<RoostId, IdentityError> {
    parse(text).map(|p| p.id)
}

struct Parsed {
    id: RoostId,
    kdf: KdfParams,
    salt: [u8; 16],
    nonce: [u8; 12],
    ciphertext: Vec<u8>,
}

fn parse(text: &str) -> Result<Parsed, IdentityError> {
    let bad = |why: &str| IdentityError::Malformed(format!("identity file: {why}"));
    let inner = text
        .trim()
        .strip_prefix(BEGIN)
        .and_then(|t| t.strip_suffix(END))
        .ok_or_else(|| bad("missing BEGIN/END lines (truncated?)"))?;
    let mut lines = inner.trim_start_matches(['\r', '\n']).lines();
    let mut field = |name: &str| -> Result<String, IdentityError> {
        let line = lines.next().ok_or_else(|| bad("truncated headers"))?;
        line.strip_prefix(name)
            .and_then(|v| v.strip_prefix(": "))
            .map(str::to_string)
            .ok_or_else(|| bad(&format!("expected {name} header")))
    };
    if field("Version")? != "1" {
        return Err(bad("unknown version"));
    }
    let id = RoostId::parse(&field("Roost-ID")?)?;
    let kdf_line = field("KDF")?;
    let nums: Vec<u32> = kdf_line
        .strip_prefix("argon2id ")
        .ok_or_else(|| bad("unknown KDF"))?
        .split(' ')
        .map(|kv| kv.split_once('=').and_then(|(_, v)| v.parse().ok()).ok_or_else(|| bad("KDF parameters")))
        .collect::<Result<_, _>>()?;
    let [memory_kib, iterations, parallelism] = nums[..] else { return Err(bad("KDF parameters")) };
    let kdf = KdfParams { memory_kib, iterations, parallelism }.checked()?;
    let salt = unb64(&field("Salt")?, "salt")?.try_into().map_err(|_| bad("salt length"))?;
    let nonce = unb64(&field("Nonce")?, "nonce")?.try_into().map_err(|_| bad("nonce length"))?;
    if lines.next() != Some("") {
        return Err(bad("expected a blank line after the headers"));
    }
    let body: String = lines.collect::<Vec<_>>().concat();
    let ciphertext = unb64(&body, "body")?;
    if ciphertext.len() != 32 + 16 {
        return Err(bad("body length (truncated?)"));
    }
    Ok(Parsed { id, kdf, salt, nonce, ciphertext })
}

/// Opens an export file with `passphrase`.
pub fn import(text: &str, passphrase: &str) -> Result<MasterSeed, IdentityError> {
    let p = parse(text)?;
    let key = passphrase_key(passphrase, &p.salt, p.kdf)?;
    let head = headers(&p.id, p.kdf, &p.salt, &p.nonce);
    let seed = MasterSeed(open(&key, &p.nonce, head.as_bytes(), &p.ciphertext)?.try_into().expect("32 bytes"));
    if seed.roost_id() != p.id {
        return Err(IdentityError::WrongPassphrase);
    }
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };

    #[test]
    fn round_trip_and_refusals() {
        let seed = MasterSeed([3; 32]);
        let text = export(&seed, "correct horse battery", FAST, [1; 16], [2; 12]).unwrap();
        assert!(text.contains(seed.roost_id().as_str()), "the Roost ID is visible outside the ciphertext");
        assert_eq!(peek_roost_id(&text).unwrap(), seed.roost_id());
        assert_eq!(import(&text, "correct horse battery").unwrap(), seed);
        assert_eq!(import(&text, "wrong horse battery"), Err(IdentityError::WrongPassphrase));
        assert!(matches!(export(&seed, "short", FAST, [1; 16], [2; 12]), Err(IdentityError::WeakPassphrase(12))));
        let truncated = &text[..text.len() / 2];
        assert!(matches!(import(truncated, "correct horse battery"), Err(IdentityError::Malformed(_))));
        let other_id = MasterSeed([4; 32]).roost_id();
        let relabelled = text.replace(seed.roost_id().as_str(), other_id.as_str());
        assert!(import(&relabelled, "correct horse battery").is_err(), "the visible Roost ID is authenticated");
        let cheaper = text.replace("t=1", "t=2");
        assert!(import(&cheaper, "correct horse battery").is_err());
    }
}
