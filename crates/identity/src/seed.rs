//! The master seed, the identity key derived from it, and the Roost ID.

use std::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::IdentityError;

const IDENTITY_LABEL: &[u8] = b"roost/identity-key/v1";

/// The secret from which the chain's identity key is derived. Whoever holds
/// it can certify machines into the chain.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterSeed(pub [u8; 32]);

impl fmt::Debug for MasterSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterSeed(..)")
    }
}

impl MasterSeed {
    /// The identity signing key: HKDF-SHA256 over the seed with a versioned label.
    pub fn identity_key(&self) -> SigningKey {
        let mut out = [0u8; 32];
        Hkdf::<Sha256>::new(None, &self.0).expand(IDENTITY_LABEL, &mut out).expect("32 bytes is a valid HKDF length");
        SigningKey::from_bytes(&out)
    }

    pub fn roost_id(&self) -> RoostId {
        RoostId::of(&self.identity_key().verifying_key())
    }
}

/// Crockford's base32 alphabet: no I, L, O or U, so it reads aloud cleanly.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Check symbols: the alphabet plus five more (Crockford's mod-37 check).
const CHECK: &[u8; 37] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ*~$=U";

/// The chain's short, human-checkable name: 80 bits of the identity public
/// key's SHA-256 in Crockford base32, grouped by four, then a mod-37 check
/// symbol that catches any single typo or swapped pair, e.g.
/// `7K3M-9QXD-2F8T-HWAB-Z`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoostId(String);

impl RoostId {
    pub fn of(identity: &VerifyingKey) -> RoostId {
        let digest = Sha256::digest(identity.as_bytes());
        let value = digest[..10].iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
        let symbols: Vec<u8> = (0..16).rev().map(|i| ALPHABET[((value >> (5 * i)) & 31) as usize]).collect();
        let check = CHECK[(value % 37) as usize] as char;
        let groups: Vec<&str> = symbols.chunks(4).map(|c| std::str::from_utf8(c).expect("ASCII")).collect();
        RoostId(format!("{}-{check}", groups.join("-")))
    }

    /// Parses a typed Roost ID: case, dashes and spaces are free; O reads as 0
    /// and I or L as 1; the check symbol must match.
    pub fn parse(text: &str) -> Result<RoostId, IdentityError> {
        let bad =
            || IdentityError::Invalid(format!("{text:?} is not a Roost ID (a typo? its check symbol does not match)"));
        let cleaned: Vec<u8> = text
            .bytes()
            .filter(|b| !matches!(b, b'-' | b' '))
            .map(|b| match b.to_ascii_uppercase() {
                b'O' => b'0',
                b'I' | b'L' => b'1',
                other => other,
            })
            .collect();
        if cleaned.len() != 17 {
            return Err(bad());
        }
        let mut value = 0u128;
        for b in &cleaned[..16] {
            let digit = ALPHABET.iter().position(|a| a == b).ok_or_else(bad)?;
            value = (value << 5) | digit as u128;
        }
        if CHECK[(value % 37) as usize] != cleaned[16] {
            return Err(bad());
        }
        let groups: Vec<&str> = cleaned[..16].chunks(4).map(|c| std::str::from_utf8(c).expect("ASCII")).collect();
        Ok(RoostId(format!("{}-{}", groups.join("-"), cleaned[16] as char)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roost_id_round_trips_and_catches_typos() {
        let id = MasterSeed([7; 32]).roost_id();
        assert_eq!(id.as_str().len(), 21);
        assert_eq!(RoostId::parse(id.as_str()).unwrap(), id);
        assert_eq!(RoostId::parse(&id.as_str().to_lowercase().replace('-', " ")).unwrap(), id);
        let mut typo = id.as_str().as_bytes().to_vec();
        typo[0] = if typo[0] == b'2' { b'3' } else { b'2' };
        assert!(RoostId::parse(std::str::from_utf8(&typo).unwrap()).is_err());
        let mut swapped = id.as_str().as_bytes().to_vec();
        if swapped[1] != swapped[2] {
            swapped.swap(1, 2);
            assert!(RoostId::parse(std::str::from_utf8(&swapped).unwrap()).is_err());
        }
        assert_ne!(MasterSeed([8; 32]).roost_id(), id);
    }

    #[test]
    fn the_identity_key_is_derived_not_the_seed() {
        let seed = MasterSeed([1; 32]);
        assert_ne!(seed.identity_key().to_bytes(), seed.0);
        assert_eq!(seed.identity_key().to_bytes(), MasterSeed([1; 32]).identity_key().to_bytes());
    }
}
