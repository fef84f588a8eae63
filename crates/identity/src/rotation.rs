//! Rotations: the chain moves to a new identity, leaving revoked machines
//! behind.
//!
//! A revoked machine still holds the old seed, so a revocation alone cannot
//! stop it from certifying fresh machine keys for itself. A rotation closes
//! that: a new seed, sealed to the X25519 key of each machine that stays
//! (the key its certificate names), signed by the old identity (whose word
//! it is) and by the new one (proof that the issuer holds the seed it hands
//! out). A machine that takes it opens its copy, adopts the new seed and
//! certifies itself again; from then on only certificates of the new
//! identity register a machine, so whatever the old seed certifies stays
//! out.
//!
//! Each copy is sealed with AES-256-GCM under a key derived (HKDF-SHA256)
//! from an X25519 agreement between the rotation's one-time key and the
//! recipient's key, bound to both identities and the recipient's id.

use ed25519_dalek::VerifyingKey;
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::{IdentityError, MasterSeed, RoostId, b64, read_header, unb64, uuid_bytes, uuid_string};
use roost_core::wire::{Reader, Writer};

const MAGIC: &[u8; 4] = b"RROT";
const VERSION: u8 = 1;
/// The old identity signs under this domain, the new one under the next:
/// neither signature can stand for the other.
const OLD_DOMAIN: &[u8] = b"roost/rotation/old-identity/v1\0";
const NEW_DOMAIN: &[u8] = b"roost/rotation/new-identity/v1\0";
const SEAL_LABEL: &[u8] = b"roost/rotation/sealed-seed/v1";
/// The most machines one rotation hands the new seed to.
pub const MAX_RECIPIENTS: usize = 64;
/// A sealed seed: 32 bytes and the 16-byte tag.
const SEALED_LEN: usize = 32 + 16;
/// The longest text form a rotation can have (base64 of its longest bytes).
pub const MAX_TEXT_LEN: usize = (HEADER_LEN + MAX_RECIPIENTS * RECIPIENT_LEN + 128).div_ceil(3) * 4;
const HEADER_LEN: usize = 4 + 1 + 32 + 32 + 16 + 8 + 32 + 1;
const RECIPIENT_LEN: usize = 16 + 32 + SEALED_LEN;

/// A machine that stays in the chain: who gets a copy of the new seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub instance_id: String,
    /// The X25519 key its certificate names.
    pub x25519_key: [u8; 32],
}

/// One recipient's copy of the new seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSeed {
    pub recipient: Recipient,
    pub sealed: [u8; SEALED_LEN],
}

/// A signed rotation from `old_identity` to `new_identity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub old_identity: [u8; 32],
    pub new_identity: [u8; 32],
    /// The machine that issued it.
    pub issuer: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// The public half of the one-time X25519 key the copies are sealed with.
    pub ephemeral_key: [u8; 32],
    pub copies: Vec<SealedSeed>,
    pub old_signature: [u8; 64],
    pub new_signature: [u8; 64],
}

/// What [`Rotation::issue`] needs besides the seeds: who issues it, when,
/// and who stays.
pub struct RotationClaims<'a> {
    pub issuer: &'a str,
    pub issued_at: i64,
    pub recipients: &'a [Recipient],
}

impl Rotation {
    /// Hands `new` to every recipient, signed by `old` and `new`.
    /// `ephemeral_secret` must be fresh random bytes.
    pub fn issue(
        old: &MasterSeed,
        new: &MasterSeed,
        claims: RotationClaims<'_>,
        ephemeral_secret: [u8; 32],
    ) -> Result<Rotation, IdentityError> {
        check_recipients(claims.recipients.iter()).map_err(IdentityError::Invalid)?;
        let (old_key, new_key) = (old.identity_key(), new.identity_key());
        let (old_identity, new_identity) = (old_key.verifying_key().to_bytes(), new_key.verifying_key().to_bytes());
        let secret = StaticSecret::from(ephemeral_secret);
        let ephemeral_key = PublicKey::from(&secret).to_bytes();
        let copies = claims
            .recipients
            .iter()
            .map(|recipient| {
                let shared = secret.diffie_hellman(&PublicKey::from(recipient.x25519_key));
                let key = copy_key(shared, &ephemeral_key, recipient)
                    .ok_or_else(|| IdentityError::Invalid(format!("{}: unusable X25519 key", recipient.instance_id)))?;
                let aad = copy_aad(&old_identity, &new_identity, &recipient.instance_id)?;
                let sealed = crate::seal::seal(&key, &[0; 12], &aad, &new.0);
                Ok(SealedSeed { recipient: recipient.clone(), sealed: sealed.try_into().expect("32 bytes and a tag") })
            })
            .collect::<Result<Vec<_>, IdentityError>>()?;
        let mut rotation = Rotation {
            old_identity,
            new_identity,
            issuer: claims.issuer.to_string(),
            issued_at: claims.issued_at,
            ephemeral_key,
            copies,
            old_signature: [0; 64],
            new_signature: [0; 64],
        };
        let body = rotation.body()?;
        rotation.old_signature = crate::sign_as_identity(OLD_DOMAIN, &body, &old_key);
        rotation.new_signature = crate::sign_as_identity(NEW_DOMAIN, &body, &new_key);
        Ok(rotation)
    }

    fn body(&self) -> Result<Vec<u8>, IdentityError> {
        let mut w = Writer::default();
        w.bytes(MAGIC).u8(VERSION).bytes(&self.old_identity).bytes(&self.new_identity);
        w.bytes(&uuid_bytes(&self.issuer)?).i64(self.issued_at).bytes(&self.ephemeral_key);
        w.u8(self.copies.len() as u8);
        for copy in &self.copies {
            w.bytes(&uuid_bytes(&copy.recipient.instance_id)?).bytes(&copy.recipient.x25519_key).bytes(&copy.sealed);
        }
        Ok(w.0)
    }

    /// The canonical bytes: the signed body, then both signatures.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.body().expect("issued rotations encode");
        bytes.extend_from_slice(&self.old_signature);
        bytes.extend_from_slice(&self.new_signature);
        bytes
    }

    /// Strict decoding; does not check the signatures (see [`Rotation::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Rotation, IdentityError> {
        let mut r = Reader::new(bytes, "rotation");
        read_header(&mut r, MAGIC, VERSION, "rotation")?;
        let old_identity = r.array()?;
        let new_identity = r.array()?;
        let issuer = uuid_string(&r.array()?);
        let issued_at = r.i64()?;
        let ephemeral_key = r.array()?;
        let count = r.u8()? as usize;
        let mut copies = Vec::with_capacity(count.min(MAX_RECIPIENTS));
        for _ in 0..count {
            let recipient = Recipient { instance_id: uuid_string(&r.array()?), x25519_key: r.array()? };
            copies.push(SealedSeed { recipient, sealed: r.array()? });
        }
        let old_signature = r.array()?;
        let new_signature = r.array()?;
        r.finish()?;
        check_recipients(copies.iter().map(|c| &c.recipient))
            .map_err(|why| IdentityError::Malformed(format!("rotation: {why}")))?;
        if old_identity == new_identity {
            return Err(IdentityError::Malformed("rotation: the new identity is the old one".into()));
        }
        Ok(Rotation {
            old_identity,
            new_identity,
            issuer,
            issued_at,
            ephemeral_key,
            copies,
            old_signature,
            new_signature,
        })
    }

    pub fn to_text(&self) -> String {
        b64(&self.to_bytes())
    }

    pub fn from_text(text: &str) -> Result<Rotation, IdentityError> {
        if text.len() > MAX_TEXT_LEN {
            return Err(IdentityError::Malformed("rotation: too long".into()));
        }
        Rotation::from_bytes(&unb64(text, "rotation")?)
    }

    /// Checks that `identity` (the chain's identity until now) issued this,
    /// and that the issuer held the new identity's key.
    pub fn verify(&self, identity: &VerifyingKey) -> Result<(), IdentityError> {
        let body = self.body()?;
        crate::verify_as_identity(OLD_DOMAIN, &body, &self.old_identity, &self.old_signature, identity, "rotation")?;
        let new = self.new_identity_key()?;
        crate::verify_as_identity(NEW_DOMAIN, &body, &self.new_identity, &self.new_signature, &new, "rotation")
    }

    /// The new identity's public key, if it is a valid curve point.
    pub fn new_identity_key(&self) -> Result<VerifyingKey, IdentityError> {
        VerifyingKey::from_bytes(&self.new_identity)
            .map_err(|_| IdentityError::Malformed("rotation: invalid new identity key".into()))
    }

    pub fn old_roost_id(&self) -> Option<RoostId> {
        VerifyingKey::from_bytes(&self.old_identity).ok().map(|k| RoostId::of(&k))
    }

    pub fn new_roost_id(&self) -> Option<RoostId> {
        self.new_identity_key().ok().map(|k| RoostId::of(&k))
    }

    /// Whether the machine `instance_id` gets a copy of the new seed.
    pub fn keeps(&self, instance_id: &str) -> bool {
        self.copies.iter().any(|c| c.recipient.instance_id == instance_id)
    }

    /// Opens the copy sealed to `instance_id` with its X25519 secret; the
    /// seed must be the new identity's. Check [`Rotation::verify`] first.
    pub fn open_seed(&self, instance_id: &str, x25519: &StaticSecret) -> Result<MasterSeed, IdentityError> {
        let not_ours = || IdentityError::Invalid("this machine is not among those the rotation keeps".into());
        let own_key = PublicKey::from(x25519).to_bytes();
        let copy = self
            .copies
            .iter()
            .find(|c| c.recipient.instance_id == instance_id && c.recipient.x25519_key == own_key)
            .ok_or_else(not_ours)?;
        let shared = x25519.diffie_hellman(&PublicKey::from(self.ephemeral_key));
        let key = copy_key(shared, &self.ephemeral_key, &copy.recipient).ok_or_else(not_ours)?;
        let aad = copy_aad(&self.old_identity, &self.new_identity, instance_id)?;
        let opened = crate::seal::open(&key, &[0; 12], &aad, &copy.sealed)
            .map_err(|_| IdentityError::BadSignature("rotation's sealed seed"))?;
        let seed = MasterSeed(opened.try_into().map_err(|_| IdentityError::Malformed("rotation: seed length".into()))?);
        if seed.identity_key().verifying_key().to_bytes() != self.new_identity {
            return Err(IdentityError::Invalid("the rotation's seed is not its new identity's".into()));
        }
        Ok(seed)
    }
}

/// Recipients are 1 to [`MAX_RECIPIENTS`], each machine once.
fn check_recipients<'a>(recipients: impl ExactSizeIterator<Item = &'a Recipient>) -> Result<(), String> {
    let count = recipients.len();
    if count == 0 || count > MAX_RECIPIENTS {
        return Err(format!("a rotation keeps 1 to {MAX_RECIPIENTS} machines, not {count}"));
    }
    let mut ids: Vec<&str> = recipients.map(|r| r.instance_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != count {
        return Err("a machine is named twice".into());
    }
    Ok(())
}

/// The key one copy is sealed under, from the X25519 agreement between the
/// one-time key and the recipient's (either side reaches it); `None` if the
/// agreement is degenerate (a low-order point).
fn copy_key(shared: x25519_dalek::SharedSecret, ephemeral_key: &[u8; 32], recipient: &Recipient) -> Option<[u8; 32]> {
    if !shared.was_contributory() {
        return None;
    }
    let salt = [ephemeral_key.as_slice(), &recipient.x25519_key].concat();
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes())
        .expand(SEAL_LABEL, &mut key)
        .expect("32 bytes is a valid length");
    Some(key)
}

fn copy_aad(old: &[u8; 32], new: &[u8; 32], instance_id: &str) -> Result<Vec<u8>, IdentityError> {
    Ok([old.as_slice(), new, &uuid_bytes(instance_id)?].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "01a20806-d444-7c97-be1f-ef8bd5bf8a9d";
    const VPS: &str = "01a20806-d444-7c97-be1f-ef8bd5bf8a9e";

    fn x25519(byte: u8) -> StaticSecret {
        StaticSecret::from([byte; 32])
    }

    fn recipient(id: &str, secret: &StaticSecret) -> Recipient {
        Recipient { instance_id: id.into(), x25519_key: PublicKey::from(secret).to_bytes() }
    }

    fn sample() -> (MasterSeed, MasterSeed, Rotation) {
        let (old, new) = (MasterSeed([1; 32]), MasterSeed([2; 32]));
        let recipients = [recipient(HOME, &x25519(5)), recipient(VPS, &x25519(6))];
        let claims = RotationClaims { issuer: HOME, issued_at: 1_790_000_000, recipients: &recipients };
        let rotation = Rotation::issue(&old, &new, claims, [7; 32]).unwrap();
        (old, new, rotation)
    }

    #[test]
    fn each_machine_kept_opens_the_new_seed_and_no_other_can() {
        let (old, new, rotation) = sample();
        let decoded = Rotation::from_text(&rotation.to_text()).unwrap();
        assert_eq!(decoded, rotation);
        decoded.verify(&old.identity_key().verifying_key()).unwrap();
        assert_eq!(decoded.open_seed(HOME, &x25519(5)).unwrap(), new);
        assert_eq!(decoded.open_seed(VPS, &x25519(6)).unwrap(), new);
        assert!(decoded.open_seed(HOME, &x25519(6)).is_err(), "another machine's key opens nothing");
        assert!(decoded.open_seed("01a20806-d444-7c97-be1f-ef8bd5bf8a9f", &x25519(9)).is_err());
        assert_eq!(decoded.new_roost_id(), Some(new.roost_id()));
        assert_eq!(decoded.old_roost_id(), Some(old.roost_id()));
        assert!(decoded.keeps(VPS) && !decoded.keeps("01a20806-d444-7c97-be1f-ef8bd5bf8a9f"));
    }

    #[test]
    fn only_the_old_identity_issues_and_only_with_the_new_key() {
        let (old, _, rotation) = sample();
        let other = MasterSeed([3; 32]).identity_key().verifying_key();
        assert!(matches!(rotation.verify(&other), Err(IdentityError::ForeignIdentity { .. })));
        // A rotation re-pointed at a seed the issuer does not hold fails the
        // new identity's signature.
        let mut hijacked = rotation.clone();
        hijacked.new_identity = MasterSeed([4; 32]).identity_key().verifying_key().to_bytes();
        assert!(hijacked.verify(&old.identity_key().verifying_key()).is_err());
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let (old, _, rotation) = sample();
        let identity = old.identity_key().verifying_key();
        let bytes = rotation.to_bytes();
        for i in 0..bytes.len() * 8 {
            let mut tampered = bytes.clone();
            tampered[i / 8] ^= 1 << (i % 8);
            let verdict = Rotation::from_bytes(&tampered).and_then(|r| {
                r.verify(&identity)?;
                r.open_seed(HOME, &x25519(5))
            });
            assert!(verdict.is_err(), "bit {i} flipped was accepted");
        }
    }

    #[test]
    fn recipients_are_one_to_the_limit_and_each_once() {
        let (old, new) = (MasterSeed([1; 32]), MasterSeed([2; 32]));
        let twice = [recipient(HOME, &x25519(5)), recipient(HOME, &x25519(6))];
        let none: [Recipient; 0] = [];
        for recipients in [&twice[..], &none[..]] {
            let claims = RotationClaims { issuer: HOME, issued_at: 0, recipients };
            assert!(matches!(Rotation::issue(&old, &new, claims, [7; 32]), Err(IdentityError::Invalid(_))));
        }
        let (_, _, rotation) = sample();
        let bytes = rotation.to_bytes();
        assert!(Rotation::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(Rotation::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());
        assert!(rotation.to_text().len() <= MAX_TEXT_LEN);
    }
}
