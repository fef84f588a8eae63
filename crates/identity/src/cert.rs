//! Machine certificates: the identity key vouches for one machine's keys.
//!
//! A certificate names the instance (id, name, role), its Ed25519 signing key
//! (also its transport identity) and X25519 key, its gateway URLs and when it
//! was issued, and carries the identity public key and the identity's
//! signature over the canonical encoding of all that. Anyone holding the
//! identity public key can check that a machine belongs to the chain.

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::{IdentityError, b64, read_header, sign_as_identity, unb64, uuid_bytes, uuid_string, verify_as_identity};
use roost_core::wire::{Reader, Writer};

const MAGIC: &[u8; 4] = b"RCRT";
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"roost/machine-certificate/v1\0";
/// The most gateway URLs a certificate names.
pub const MAX_URLS: usize = 8;

pub use roost_core::Role;

/// What a certificate says, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineClaims {
    pub instance_id: String,
    pub name: String,
    pub role: Role,
    pub signing_key: [u8; 32],
    pub x25519_key: [u8; 32],
    pub gateway_urls: Vec<String>,
    /// Unix seconds.
    pub issued_at: i64,
}

/// A signed machine certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub claims: MachineClaims,
    pub identity_key: [u8; 32],
    pub signature: [u8; 64],
}

/// Whether `name` can name a machine: 1 to 64 bytes of UTF-8 with no control
/// character (it is shown in every machine's listings). Certificates are
/// neither issued nor accepted with any other.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && !name.chars().any(char::is_control)
}

fn encode_claims(c: &MachineClaims, identity_key: &[u8; 32]) -> Result<Vec<u8>, IdentityError> {
    if !valid_name(&c.name) {
        return Err(IdentityError::Invalid("machine name must be 1 to 64 bytes without control characters".into()));
    }
    if c.gateway_urls.len() > MAX_URLS || c.gateway_urls.iter().any(|u| u.len() > 512) {
        return Err(IdentityError::Invalid(format!("at most {MAX_URLS} gateway URLs of at most 512 bytes")));
    }
    let mut w = Writer::default();
    w.bytes(MAGIC).u8(VERSION).bytes(&uuid_bytes(&c.instance_id)?).str(&c.name);
    w.u8(match c.role {
        Role::Home => 0,
        Role::Satellite => 1,
    });
    w.bytes(&c.signing_key).bytes(&c.x25519_key).u8(c.gateway_urls.len() as u8);
    for url in &c.gateway_urls {
        w.str(url);
    }
    w.i64(c.issued_at).bytes(identity_key);
    Ok(w.0)
}

impl Certificate {
    /// Signs `claims` with the identity key.
    pub fn issue(claims: MachineClaims, identity: &SigningKey) -> Result<Certificate, IdentityError> {
        let identity_key = identity.verifying_key().to_bytes();
        let body = encode_claims(&claims, &identity_key)?;
        let signature = sign_as_identity(DOMAIN, &body, identity);
        Ok(Certificate { claims, identity_key, signature })
    }

    /// The canonical bytes: the signed body, then the signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = encode_claims(&self.claims, &self.identity_key).expect("issued certificates encode");
        bytes.extend_from_slice(&self.signature);
        bytes
    }

    /// Strict decoding; does not check the signature (see [`Certificate::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Certificate, IdentityError> {
        let mut r = Reader::new(bytes, "certificate");
        read_header(&mut r, MAGIC, VERSION, "certificate")?;
        let instance_id = uuid_string(&r.array()?);
        let name = r.str()?;
        let role = match r.u8()? {
            0 => Role::Home,
            1 => Role::Satellite,
            _ => return Err(IdentityError::Malformed("certificate: unknown role".into())),
        };
        let signing_key = r.array()?;
        let x25519_key = r.array()?;
        let count = r.u8()? as usize;
        if count > MAX_URLS {
            return Err(IdentityError::Malformed("certificate: too many URLs".into()));
        }
        let gateway_urls = (0..count).map(|_| r.str()).collect::<Result<_, _>>()?;
        let issued_at = r.i64()?;
        let identity_key = r.array()?;
        let signature = r.array()?;
        r.finish()?;
        let cert = Certificate {
            claims: MachineClaims { instance_id, name, role, signing_key, x25519_key, gateway_urls, issued_at },
            identity_key,
            signature,
        };
        // Re-encoding must succeed (names and URLs within limits) and give the
        // same bytes: one value, one encoding.
        let body = encode_claims(&cert.claims, &cert.identity_key)
            .map_err(|e| IdentityError::Malformed(format!("certificate: {e}")))?;
        if [body.as_slice(), &cert.signature].concat() != bytes {
            return Err(IdentityError::Malformed("certificate: non-canonical encoding".into()));
        }
        Ok(cert)
    }

    pub fn to_text(&self) -> String {
        b64(&self.to_bytes())
    }

    pub fn from_text(text: &str) -> Result<Certificate, IdentityError> {
        Certificate::from_bytes(&unb64(text, "certificate")?)
    }

    /// Checks that the chain whose identity key is `identity` signed this.
    pub fn verify(&self, identity: &VerifyingKey) -> Result<(), IdentityError> {
        let body = encode_claims(&self.claims, &self.identity_key)?;
        verify_as_identity(DOMAIN, &body, &self.identity_key, &self.signature, identity, "certificate")
    }

    /// The machine's signing key, if it is a valid curve point.
    pub fn machine_key(&self) -> Result<VerifyingKey, IdentityError> {
        VerifyingKey::from_bytes(&self.claims.signing_key)
            .map_err(|_| IdentityError::Malformed("certificate: invalid machine key".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterSeed;

    fn sample(seed: &MasterSeed) -> Certificate {
        let machine = SigningKey::from_bytes(&[3; 32]);
        Certificate::issue(
            MachineClaims {
                instance_id: "01a20806-d444-7c97-be1f-ef8bd5bf8a9d".into(),
                name: "laptop".into(),
                role: Role::Satellite,
                signing_key: machine.verifying_key().to_bytes(),
                x25519_key: [9; 32],
                gateway_urls: vec!["http://127.0.0.1:7151".into()],
                issued_at: 1_790_000_000,
            },
            &seed.identity_key(),
        )
        .unwrap()
    }

    #[test]
    fn issue_encode_decode_verify() {
        let seed = MasterSeed([1; 32]);
        let cert = sample(&seed);
        let decoded = Certificate::from_text(&cert.to_text()).unwrap();
        assert_eq!(decoded, cert);
        decoded.verify(&seed.identity_key().verifying_key()).unwrap();
        let other = MasterSeed([2; 32]).identity_key().verifying_key();
        assert!(matches!(decoded.verify(&other), Err(IdentityError::ForeignIdentity { .. })));
    }

    /// Found by the fuzzer: a certificate whose name is empty decoded, then
    /// panicked when re-encoded.
    #[test]
    fn out_of_limit_fields_are_malformed_not_a_panic() {
        let seed = MasterSeed([1; 32]);
        let good = sample(&seed).to_bytes();
        let name_at = 4 + 1 + 16;
        let mut empty_name = good[..name_at].to_vec();
        empty_name.extend_from_slice(&[0, 0]);
        empty_name.extend_from_slice(&good[name_at + 2 + "laptop".len()..]);
        assert!(matches!(Certificate::from_bytes(&empty_name), Err(IdentityError::Malformed(_))));
    }

    #[test]
    fn a_name_with_a_control_character_is_neither_issued_nor_decoded() {
        let seed = MasterSeed([1; 32]);
        let mut claims = sample(&seed).claims;
        claims.name = "lap\u{1b}]52;c;eA==\u{7}".into();
        assert!(matches!(Certificate::issue(claims, &seed.identity_key()), Err(IdentityError::Invalid(_))));
        // The same certificate as another machine could send it: "laptop"
        // with its first byte turned into ESC.
        let mut bytes = sample(&seed).to_bytes();
        let name_at = 4 + 1 + 16 + 2;
        assert_eq!(&bytes[name_at..name_at + 6], b"laptop");
        bytes[name_at] = 0x1b;
        assert!(matches!(Certificate::from_bytes(&bytes), Err(IdentityError::Malformed(_))));
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let seed = MasterSeed([1; 32]);
        let identity = seed.identity_key().verifying_key();
        let bytes = sample(&seed).to_bytes();
        for i in 0..bytes.len() * 8 {
            let mut tampered = bytes.clone();
            tampered[i / 8] ^= 1 << (i % 8);
            let verdict = Certificate::from_bytes(&tampered).and_then(|c| c.verify(&identity));
            assert!(verdict.is_err(), "bit {i} flipped was accepted");
        }
    }
}
