//! Machine-to-machine bearer tokens.
//!
//! A token is the calling machine's Ed25519 signature over (issuer machine id,
//! audience instance id, issued-at, expiry, nonce), encoded compactly as
//! `rt1.<base64url>`. Tokens live at most five minutes and are single-use: the
//! verifier remembers every nonce until its token expires and refuses a second
//! presentation. Callers mint one per request (a signature costs microseconds).

use std::collections::HashMap;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use thiserror::Error;

use crate::{IdentityError, b64, unb64, uuid_bytes, uuid_string};
use roost_core::wire::{Reader, Writer};

const PREFIX: &str = "rt1.";
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"roost/bearer-token/v1\0";
/// Longest lifetime a token may claim, in seconds.
pub const MAX_LIFETIME: i64 = 300;
/// How far in the future an issued-at may lie (clock skew), in seconds.
pub const MAX_SKEW: i64 = 30;

/// The signed content of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub issuer: String,
    pub audience: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub nonce: [u8; 16],
}

/// Why a token was refused. The gateway answers 401 for all of them and logs
/// the reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("issuer {0} is not a registered instance")]
    UnknownIssuer(String),
    #[error("issuer {0} is revoked")]
    RevokedIssuer(String),
    #[error("token is for instance {0}, not this one")]
    WrongAudience(String),
    #[error("token expired")]
    Expired,
    #[error("token issued in the future (beyond the allowed clock skew)")]
    FromTheFuture,
    #[error("token lifetime exceeds {MAX_LIFETIME} seconds")]
    TooLong,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token already used (replay)")]
    Replayed,
}

/// What the verifier knows of an issuer, from the registry. A revoked
/// issuer keeps its key, so only a validly signed token learns of the
/// revocation.
pub enum Issuer {
    Unknown,
    Revoked(VerifyingKey),
    Active(VerifyingKey),
}

impl Token {
    fn body(&self) -> Result<Vec<u8>, IdentityError> {
        let mut w = Writer::default();
        w.u8(VERSION)
            .bytes(&uuid_bytes(&self.issuer)?)
            .bytes(&uuid_bytes(&self.audience)?)
            .i64(self.issued_at)
            .i64(self.expires_at)
            .bytes(&self.nonce);
        Ok(w.0)
    }

    /// Signs the token with the issuing machine's key.
    pub fn sign(&self, machine: &SigningKey) -> Result<String, IdentityError> {
        let body = self.body()?;
        let signature = machine.sign(&[DOMAIN, &body].concat());
        Ok(format!("{PREFIX}{}", b64(&[body.as_slice(), &signature.to_bytes()].concat())))
    }

    /// Decodes a token's text without checking anything but its shape.
    pub fn decode(text: &str) -> Result<(Token, [u8; 64]), TokenError> {
        let rest = text.strip_prefix(PREFIX).ok_or_else(|| TokenError::Malformed("not a Roost token".into()))?;
        let bytes = unb64(rest, "token").map_err(malformed)?;
        let mut r = Reader::new(&bytes, "token");
        if r.u8().map_err(malformed)? != VERSION {
            return Err(TokenError::Malformed("unknown version".into()));
        }
        let token = Token {
            issuer: uuid_string(&r.array().map_err(malformed)?),
            audience: uuid_string(&r.array().map_err(malformed)?),
            issued_at: r.i64().map_err(malformed)?,
            expires_at: r.i64().map_err(malformed)?,
            nonce: r.array().map_err(malformed)?,
        };
        let signature = r.array().map_err(malformed)?;
        r.finish().map_err(malformed)?;
        Ok((token, signature))
    }
}

fn malformed(e: impl std::fmt::Display) -> TokenError {
    TokenError::Malformed(e.to_string())
}

/// Checks tokens for one instance and remembers the nonces it has accepted.
pub struct TokenVerifier {
    audience: String,
    seen: HashMap<[u8; 16], i64>,
    /// When expired nonces were last dropped; at most once a second, so
    /// verification stays O(1) however many tokens are live.
    pruned_at: i64,
}

impl TokenVerifier {
    pub fn new(audience: &str) -> TokenVerifier {
        TokenVerifier { audience: audience.to_string(), seen: HashMap::new(), pruned_at: i64::MIN }
    }

    /// Counts `nonce` as used (its token expires at `expires_at`): for the
    /// nonces an earlier run of the gateway accepted.
    pub fn remember(&mut self, nonce: [u8; 16], expires_at: i64) {
        self.seen.insert(nonce, expires_at);
    }

    /// Verifies `text` at time `now` (unix seconds). `lookup` answers what
    /// the registry knows of an issuer.
    pub fn verify(&mut self, text: &str, now: i64, lookup: impl FnOnce(&str) -> Issuer) -> Result<Token, TokenError> {
        let (token, signature) = Token::decode(text)?;
        if token.audience != self.audience {
            return Err(TokenError::WrongAudience(token.audience));
        }
        if token.expires_at.checked_sub(token.issued_at).is_none_or(|life| !(0..=MAX_LIFETIME).contains(&life)) {
            return Err(TokenError::TooLong);
        }
        if token.issued_at > now + MAX_SKEW {
            return Err(TokenError::FromTheFuture);
        }
        if now >= token.expires_at {
            return Err(TokenError::Expired);
        }
        let (key, revoked) = match lookup(&token.issuer) {
            Issuer::Unknown => return Err(TokenError::UnknownIssuer(token.issuer)),
            Issuer::Revoked(key) => (key, true),
            Issuer::Active(key) => (key, false),
        };
        let body = token.body().map_err(|e| TokenError::Malformed(e.to_string()))?;
        key.verify(&[DOMAIN, &body].concat(), &Signature::from_bytes(&signature))
            .map_err(|_| TokenError::BadSignature)?;
        if revoked {
            return Err(TokenError::RevokedIssuer(token.issuer));
        }
        if now > self.pruned_at {
            // A nonce may be forgotten once its token has expired: the expiry
            // check above refuses that token anyway.
            self.seen.retain(|_, expires| *expires > now);
            self.pruned_at = now;
        }
        if self.seen.insert(token.nonce, token.expires_at).is_some() {
            return Err(TokenError::Replayed);
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ISSUER: &str = "01a20806-d444-7c97-be1f-ef8bd5bf8a9d";
    const AUDIENCE: &str = "01a20806-d44d-7d33-90d7-0d66fd9bc558";
    const NOW: i64 = 1_790_000_000;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[5; 32])
    }

    fn token(nonce: u8) -> Token {
        Token {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            issued_at: NOW,
            expires_at: NOW + 300,
            nonce: [nonce; 16],
        }
    }

    fn active(_: &str) -> Issuer {
        Issuer::Active(key().verifying_key())
    }

    fn check(text: &str, now: i64) -> Result<Token, TokenError> {
        TokenVerifier::new(AUDIENCE).verify(text, now, active)
    }

    #[test]
    fn accepts_a_good_token_once() {
        let text = token(1).sign(&key()).unwrap();
        let mut verifier = TokenVerifier::new(AUDIENCE);
        assert_eq!(verifier.verify(&text, NOW + 1, active).unwrap(), token(1));
        assert_eq!(verifier.verify(&text, NOW + 2, active), Err(TokenError::Replayed));
        let other = token(2).sign(&key()).unwrap();
        assert!(verifier.verify(&other, NOW + 2, active).is_ok());
    }

    #[test]
    fn refuses_each_reason() {
        let sign = |t: Token| t.sign(&key()).unwrap();
        assert_eq!(check(&sign(token(1)), NOW + 300), Err(TokenError::Expired));
        assert_eq!(check(&sign(token(1)), NOW - 31), Err(TokenError::FromTheFuture));
        assert!(check(&sign(token(1)), NOW - 29).is_ok(), "small skew is allowed");
        let long = Token { expires_at: NOW + 301, ..token(1) };
        assert_eq!(check(&sign(long), NOW), Err(TokenError::TooLong));
        let overflowing = Token { issued_at: i64::MIN, expires_at: i64::MAX, ..token(1) };
        assert_eq!(check(&sign(overflowing), NOW), Err(TokenError::TooLong));
        let wrapping = Token { issued_at: -1, expires_at: i64::MAX, ..token(1) };
        assert_eq!(check(&sign(wrapping), NOW), Err(TokenError::TooLong));
        let elsewhere = Token { audience: ISSUER.into(), ..token(1) };
        assert!(matches!(check(&sign(elsewhere), NOW), Err(TokenError::WrongAudience(_))));
        let forged = token(1).sign(&SigningKey::from_bytes(&[6; 32])).unwrap();
        assert_eq!(check(&forged, NOW), Err(TokenError::BadSignature));
        let mut v = TokenVerifier::new(AUDIENCE);
        assert!(matches!(v.verify(&sign(token(1)), NOW, |_| Issuer::Unknown), Err(TokenError::UnknownIssuer(_))));
        let revoked = |_: &str| Issuer::Revoked(key().verifying_key());
        assert!(matches!(v.verify(&sign(token(1)), NOW, revoked), Err(TokenError::RevokedIssuer(_))));
        assert_eq!(v.verify(&forged, NOW, revoked), Err(TokenError::BadSignature), "revocation is not told to forgers");
        assert!(matches!(check("Bearer nonsense", NOW), Err(TokenError::Malformed(_))));
        assert!(matches!(check("rt1.AAAA", NOW), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn forgotten_nonces_are_only_those_of_expired_tokens() {
        let mut v = TokenVerifier::new(AUDIENCE);
        let text = token(1).sign(&key()).unwrap();
        v.verify(&text, NOW, active).unwrap();
        v.verify(&token(2).sign(&key()).unwrap(), NOW + 299, active).unwrap();
        assert_eq!(v.verify(&text, NOW + 299, active), Err(TokenError::Replayed));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Any single-bit change anywhere in a token's text is refused.
        #[test]
        fn any_single_bit_change_is_refused(bit in 0usize..(176 * 8)) {
            let text = token(1).sign(&key()).unwrap();
            let mut bytes = text.into_bytes();
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            if let Ok(changed) = String::from_utf8(bytes) {
                prop_assert!(check(&changed, NOW).is_err(), "accepted {changed}");
            }
        }
    }
}
