//! Revocations: the identity key's word that one machine is no longer part
//! of the chain.
//!
//! A revocation names the machine (instance id and machine key), the last
//! sequence number of its log that stays acceptable, and when it was
//! issued, signed by the identity key. Any machine holding the seed can
//! issue one; every machine checks it against the identity public key before
//! acting on it, so a revocation travels between machines like a
//! certificate does, and no machine has to take another's word for it.

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::{IdentityError, b64, read_header, sign_as_identity, unb64, uuid_bytes, uuid_string, verify_as_identity};
use roost_core::wire::{Reader, Writer};

const MAGIC: &[u8; 4] = b"RREV";
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"roost/revocation/v1\0";
/// The length of every revocation's canonical bytes.
pub const ENCODED_LEN: usize = 4 + 1 + 16 + 32 + 8 + 8 + 32 + 64;

/// What a revocation says, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationClaims {
    pub instance_id: String,
    /// The revoked machine's signing key, as its certificate named it.
    pub machine_key: [u8; 32],
    /// The last sequence number of the machine's log accepted: what it wrote
    /// before the revocation stays, nothing later is taken.
    pub revoked_after: u64,
    /// Unix seconds.
    pub issued_at: i64,
}

/// A signed revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub claims: RevocationClaims,
    pub identity_key: [u8; 32],
    pub signature: [u8; 64],
}

fn encode_claims(c: &RevocationClaims, identity_key: &[u8; 32]) -> Result<Vec<u8>, IdentityError> {
    let mut w = Writer::default();
    w.bytes(MAGIC).u8(VERSION).bytes(&uuid_bytes(&c.instance_id)?).bytes(&c.machine_key);
    w.bytes(&c.revoked_after.to_be_bytes()).i64(c.issued_at).bytes(identity_key);
    Ok(w.0)
}

impl Revocation {
    /// Signs `claims` with the identity key.
    pub fn issue(claims: RevocationClaims, identity: &SigningKey) -> Result<Revocation, IdentityError> {
        let identity_key = identity.verifying_key().to_bytes();
        let body = encode_claims(&claims, &identity_key)?;
        let signature = sign_as_identity(DOMAIN, &body, identity);
        Ok(Revocation { claims, identity_key, signature })
    }

    /// The canonical bytes: the signed body, then the signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = encode_claims(&self.claims, &self.identity_key).expect("issued revocations encode");
        bytes.extend_from_slice(&self.signature);
        bytes
    }

    /// Strict decoding; does not check the signature (see [`Revocation::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Revocation, IdentityError> {
        let mut r = Reader::new(bytes, "revocation");
        read_header(&mut r, MAGIC, VERSION, "revocation")?;
        let instance_id = uuid_string(&r.array()?);
        let machine_key = r.array()?;
        let revoked_after = r.u64()?;
        let issued_at = r.i64()?;
        let identity_key = r.array()?;
        let signature = r.array()?;
        r.finish()?;
        let claims = RevocationClaims { instance_id, machine_key, revoked_after, issued_at };
        Ok(Revocation { claims, identity_key, signature })
    }

    pub fn to_text(&self) -> String {
        b64(&self.to_bytes())
    }

    pub fn from_text(text: &str) -> Result<Revocation, IdentityError> {
        Revocation::from_bytes(&unb64(text, "revocation")?)
    }

    /// Checks that the chain whose identity key is `identity` signed this.
    pub fn verify(&self, identity: &VerifyingKey) -> Result<(), IdentityError> {
        let body = encode_claims(&self.claims, &self.identity_key)?;
        verify_as_identity(DOMAIN, &body, &self.identity_key, &self.signature, identity, "revocation")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterSeed;

    fn sample(seed: &MasterSeed) -> Revocation {
        let claims = RevocationClaims {
            instance_id: "01a20806-d444-7c97-be1f-ef8bd5bf8a9d".into(),
            machine_key: [3; 32],
            revoked_after: 41,
            issued_at: 1_790_000_000,
        };
        Revocation::issue(claims, &seed.identity_key()).unwrap()
    }

    #[test]
    fn issue_encode_decode_verify() {
        let seed = MasterSeed([1; 32]);
        let revocation = sample(&seed);
        assert_eq!(revocation.to_bytes().len(), ENCODED_LEN);
        let decoded = Revocation::from_text(&revocation.to_text()).unwrap();
        assert_eq!(decoded, revocation);
        decoded.verify(&seed.identity_key().verifying_key()).unwrap();
        let other = MasterSeed([2; 32]).identity_key().verifying_key();
        assert!(matches!(decoded.verify(&other), Err(IdentityError::ForeignIdentity { .. })));
    }

    #[test]
    fn an_altered_revocation_does_not_verify() {
        let seed = MasterSeed([1; 32]);
        let mut revocation = sample(&seed);
        revocation.claims.revoked_after += 1;
        assert_eq!(
            revocation.verify(&seed.identity_key().verifying_key()),
            Err(IdentityError::BadSignature("revocation"))
        );
    }

    #[test]
    fn short_long_and_foreign_bytes_are_malformed() {
        let bytes = sample(&MasterSeed([1; 32])).to_bytes();
        assert!(Revocation::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(Revocation::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());
        let mut foreign = bytes.clone();
        foreign[0] = b'X';
        assert!(Revocation::from_bytes(&foreign).is_err());
    }
}
