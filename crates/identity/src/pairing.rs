//! Pairing crypto: short codes, SPAKE2, key confirmation, the short
//! authentication string (SAS) and the sealed channel.
//!
//! A code is `WORD-WORD-NNNN`: two words from a 256-word list and four
//! digits, 8 + 8 + log2(10^4) ≈ 29.3 bits. SPAKE2 turns it into a strong
//! session key; a wrong guess yields a different key, which the confirmation
//! MAC exposes, and the exchange reveals nothing else about the code. With at
//! most 3 guesses per code, an attacker's chance is 3 in 655,360,000 (about
//! 1 in 218 million).

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::IdentityError;
use crate::seal::{open, seal};
use crate::words::{WORDS, index_of};

/// The QUIC protocol of pairing through a relay: the same exchange as the
/// HTTP endpoints, as JSON frames on one stream.
pub const ALPN: &[u8] = b"roost/pair/1";

/// Bits of entropy in a pairing code.
pub const CODE_ENTROPY_BITS: f64 = 29.3;

/// A pairing code, normalised to lowercase `word-word-nnnn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingCode(String);

impl PairingCode {
    /// A code from four random bytes.
    pub fn generate(random: [u8; 4]) -> PairingCode {
        let number = u16::from_be_bytes([random[2], random[3]]) % 10_000;
        PairingCode(format!("{}-{}-{number:04}", WORDS[random[0] as usize], WORDS[random[1] as usize]))
    }

    pub fn parse(text: &str) -> Result<PairingCode, IdentityError> {
        let bad = || IdentityError::Invalid(format!("{text:?} is not a pairing code (WORD-WORD-NNNN)"));
        let parts: Vec<&str> = text.trim().split('-').collect();
        let [a, b, n] = parts[..] else { return Err(bad()) };
        let (a, b) = (index_of(a).ok_or_else(bad)?, index_of(b).ok_or_else(bad)?);
        if n.len() != 4 || !n.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        Ok(PairingCode(format!("{}-{}-{n}", WORDS[a as usize], WORDS[b as usize])))
    }

    /// Upper-case for display: `HERON-MAPLE-0421`.
    pub fn display(&self) -> String {
        self.0.to_ascii_uppercase()
    }
}

/// Which end of the pairing this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The new machine (`roost join`).
    Joiner,
    /// The machine already in the chain (`roost pair`, its gateway).
    Chain,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Joiner => b"joiner",
            Side::Chain => b"chain",
        }
    }
    fn other(self) -> Side {
        match self {
            Side::Joiner => Side::Chain,
            Side::Chain => Side::Joiner,
        }
    }
}

/// One side's SPAKE2 exchange in progress.
pub struct Handshake {
    side: Side,
    state: Spake2<Ed25519Group>,
}

/// Starts the exchange; send the returned message to the other side.
pub fn start(side: Side, code: &PairingCode) -> (Handshake, Vec<u8>) {
    let password = Password::new(code.0.as_bytes());
    let (joiner, chain) = (Identity::new(b"roost/pair/joiner"), Identity::new(b"roost/pair/chain"));
    let (state, message) = match side {
        Side::Joiner => Spake2::<Ed25519Group>::start_a(&password, &joiner, &chain),
        Side::Chain => Spake2::<Ed25519Group>::start_b(&password, &joiner, &chain),
    };
    (Handshake { side, state }, message)
}

impl Handshake {
    /// Completes the exchange with the other side's message.
    pub fn finish(self, peer_message: &[u8]) -> Result<SessionKey, IdentityError> {
        let key = self.state.finish(peer_message).map_err(|_| IdentityError::Malformed("pairing message".into()))?;
        let mut out = [0u8; 32];
        Hkdf::<Sha256>::new(Some(b"roost/pair/v1"), &key).expand(b"session", &mut out).expect("valid length");
        Ok(SessionKey { side: self.side, key: out })
    }
}

/// The key both sides share when they used the same code.
pub struct SessionKey {
    side: Side,
    key: [u8; 32],
}

impl SessionKey {
    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        Hkdf::<Sha256>::new(None, &self.key).expand(label, &mut out).expect("valid length");
        out
    }

    fn mac(&self, side: Side) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.derive(b"confirm")).expect("any key length");
        mac.update(side.label());
        mac
    }

    /// This side's key confirmation, proving it derived the same key.
    pub fn confirmation(&self) -> [u8; 32] {
        self.mac(self.side).finalize().into_bytes().into()
    }

    /// Checks the other side's confirmation (constant time). False means the
    /// codes differed.
    pub fn confirms(&self, tag: &[u8]) -> bool {
        self.mac(self.side.other()).verify_slice(tag).is_ok()
    }

    /// Four words both people can compare: 32 bits of the session key.
    pub fn sas(&self) -> String {
        self.derive(b"sas")[..4].iter().map(|b| WORDS[*b as usize]).collect::<Vec<_>>().join(" ")
    }

    /// Seals the `counter`-th message this side sends.
    pub fn seal(&self, counter: u32, plaintext: &[u8]) -> Vec<u8> {
        seal(&self.derive(b"channel"), &nonce(self.side, counter), b"roost/pair/channel", plaintext)
    }

    /// Opens the `counter`-th message the other side sent.
    pub fn open(&self, counter: u32, ciphertext: &[u8]) -> Result<Vec<u8>, IdentityError> {
        open(&self.derive(b"channel"), &nonce(self.side.other(), counter), b"roost/pair/channel", ciphertext)
            .map_err(|_| IdentityError::Invalid("pairing message failed authentication".into()))
    }
}

fn nonce(sender: Side, counter: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[0] = matches!(sender, Side::Chain) as u8;
    n[8..].copy_from_slice(&counter.to_be_bytes());
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(joiner_code: &PairingCode, chain_code: &PairingCode) -> (SessionKey, SessionKey) {
        let (j, jm) = start(Side::Joiner, joiner_code);
        let (c, cm) = start(Side::Chain, chain_code);
        (j.finish(&cm).unwrap(), c.finish(&jm).unwrap())
    }

    #[test]
    fn same_code_same_key_and_sas() {
        let code = PairingCode::generate([1, 2, 3, 4]);
        assert_eq!(PairingCode::parse(&code.display()).unwrap(), code);
        let (j, c) = pair(&code, &code);
        assert!(j.confirms(&c.confirmation()) && c.confirms(&j.confirmation()));
        assert_eq!(j.sas(), c.sas());
        assert_eq!(j.sas().split(' ').count(), 4);
        let sealed = c.seal(0, b"the seed");
        assert_eq!(j.open(0, &sealed).unwrap(), b"the seed");
        assert!(j.open(1, &sealed).is_err(), "a message opens only at its own position");
        assert!(c.open(0, &sealed).is_err(), "and only on the other side");
    }

    #[test]
    fn wrong_code_is_caught_by_confirmation() {
        let (j, c) = pair(&PairingCode::generate([1, 2, 3, 4]), &PairingCode::generate([1, 2, 3, 5]));
        assert!(!j.confirms(&c.confirmation()));
        assert!(!c.confirms(&j.confirmation()));
        assert!(j.open(0, &c.seal(0, b"x")).is_err());
    }

    #[test]
    fn codes_parse_strictly() {
        assert!(PairingCode::parse("heron-maple-12").is_err());
        assert!(PairingCode::parse("notaword-maple-1234").is_err());
        assert!(PairingCode::parse("HERON-MAPLE-0421").is_ok());
    }
}

/// How long a pairing code lives, in seconds.
pub const OFFER_LIFETIME: i64 = 120;
/// Guesses a code survives.
pub const MAX_ATTEMPTS: u32 = 3;

/// A pairing code on offer, as persisted by the machine that made it.
/// Wall-clock seconds, because the offer outlives any one process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Offer {
    pub code: String,
    pub expires_at: i64,
    pub attempts: u32,
    pub used: bool,
    /// The SAS of the latest exchange, for `roost pair` to show.
    pub sas: Option<String>,
    /// Name of the machine that joined with this code.
    pub joined: Option<String>,
}

/// Why a code can no longer be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OfferRefusal {
    #[error("the pairing code has expired; run `roost pair` again")]
    Expired,
    #[error("the pairing code was already used; run `roost pair` again")]
    Used,
    #[error("the pairing code failed {MAX_ATTEMPTS} times and is locked; run `roost pair` again")]
    Exhausted,
}

impl Offer {
    pub fn new(code: &PairingCode, now: i64) -> Offer {
        Offer {
            code: code.0.clone(),
            expires_at: now + OFFER_LIFETIME,
            attempts: 0,
            used: false,
            sas: None,
            joined: None,
        }
    }

    /// Whether the code can still be tried at `now`.
    pub fn check(&self, now: i64) -> Result<(), OfferRefusal> {
        if self.used {
            Err(OfferRefusal::Used)
        } else if self.attempts >= MAX_ATTEMPTS {
            Err(OfferRefusal::Exhausted)
        } else if now >= self.expires_at {
            Err(OfferRefusal::Expired)
        } else {
            Ok(())
        }
    }

    /// Counts one exchange against the code. Every exchange counts, since the
    /// server cannot tell a wrong guess from a right one until confirmation;
    /// a successful join uses one of the three.
    pub fn take_attempt(&mut self, now: i64) -> Result<PairingCode, OfferRefusal> {
        self.check(now)?;
        self.attempts += 1;
        Ok(PairingCode(self.code.clone()))
    }
}

#[cfg(test)]
mod offer_tests {
    use super::*;

    #[test]
    fn three_attempts_then_locked_and_expiry() {
        let mut offer = Offer::new(&PairingCode::generate([0; 4]), 1000);
        for _ in 0..3 {
            offer.take_attempt(1001).unwrap();
        }
        assert_eq!(offer.take_attempt(1001), Err(OfferRefusal::Exhausted));
        let offer = Offer::new(&PairingCode::generate([0; 4]), 1000);
        assert_eq!(offer.check(1000 + OFFER_LIFETIME), Err(OfferRefusal::Expired));
        let used = Offer { used: true, ..offer };
        assert_eq!(used.check(1001), Err(OfferRefusal::Used));
    }
}

/// What a joining machine sends, sealed, once the keys are confirmed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JoinRequest {
    pub instance_id: String,
    pub name: String,
    /// Hex Ed25519 public key.
    pub signing_key: String,
    /// Hex X25519 public key.
    pub x25519_key: String,
    /// The gateway URLs the joiner advertises.
    pub addresses: Vec<String>,
}

/// A machine of the chain as the grant names it: its certificate and where
/// it can be reached.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KnownMachine {
    pub certificate: String,
    pub addresses: Vec<String>,
}

/// What the chain answers, sealed: the seed, both certificates, and every
/// machine of the chain the admitting one knows, so the joiner knows them
/// all at once.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JoinGrant {
    /// Hex master seed.
    pub seed: String,
    /// The joiner's new certificate.
    pub certificate: String,
    /// The machine that let it in.
    pub chain: KnownMachine,
    /// The other machines it knows.
    pub machines: Vec<KnownMachine>,
    /// The relays the admitting machine uses (`[sync] relays`): the joiner
    /// uses them too.
    #[serde(default)]
    pub relays: Vec<String>,
    /// The rotations that led to the chain's identity (text form, oldest
    /// first): the joiner keeps the chain's votes under the Roost ID it was
    /// created with, as the others do.
    #[serde(default)]
    pub rotations: Vec<String>,
}

/// A chain machine as a joiner on another network reaches it: its machine
/// key (the QUIC endpoint id) and the relays it keeps a connection to,
/// written `roost:KEY?relay=URL&relay=URL` with the key in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedMachine {
    pub machine_key: [u8; 32],
    pub relays: Vec<String>,
}

impl RelayedMachine {
    const SCHEME: &str = "roost:";

    /// Whether `text` is written as one (it may still be malformed).
    pub fn is_one(text: &str) -> bool {
        text.trim().starts_with(Self::SCHEME)
    }

    pub fn parse(text: &str) -> Result<RelayedMachine, IdentityError> {
        let bad = |why: &str| IdentityError::Malformed(format!("machine address {text:?}: {why}"));
        let rest = text.trim().strip_prefix(Self::SCHEME).ok_or_else(|| bad("does not start with roost:"))?;
        let (key, query) = rest.split_once('?').ok_or_else(|| bad("names no relay"))?;
        let machine_key = roost_core::hex::decode_array(key).ok_or_else(|| bad("the key is not 64 hex digits"))?;
        let relays: Vec<String> = query
            .split('&')
            .map(|pair| pair.strip_prefix("relay=").map(str::to_string).ok_or_else(|| bad("expected relay=URL")))
            .collect::<Result<_, _>>()?;
        if relays.iter().any(|r| !(r.starts_with("http://") || r.starts_with("https://"))) {
            return Err(bad("a relay is not an http:// or https:// URL"));
        }
        Ok(RelayedMachine { machine_key, relays })
    }
}

impl std::fmt::Display for RelayedMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let relays: Vec<String> = self.relays.iter().map(|r| format!("relay={r}")).collect();
        write!(f, "{}{}?{}", Self::SCHEME, roost_core::hex::encode(&self.machine_key), relays.join("&"))
    }
}

#[cfg(test)]
mod relayed_tests {
    use super::*;

    #[test]
    fn a_relayed_machine_reads_back_and_bad_ones_are_refused() {
        let machine = RelayedMachine {
            machine_key: [0xab; 32],
            relays: vec!["https://relay.example".into(), "http://10.0.0.1:3340".into()],
        };
        let text = machine.to_string();
        assert!(RelayedMachine::is_one(&text));
        assert_eq!(RelayedMachine::parse(&text).unwrap(), machine);
        let key = "ab".repeat(32);
        for bad in [
            format!("roost:{key}"),
            format!("roost:{}?relay=https://r", "ab".repeat(31)),
            format!("roost:{key}?relay=ftp://r"),
            format!("roost:{key}?via=https://r"),
        ] {
            assert!(RelayedMachine::parse(&bad).is_err(), "{bad}");
        }
        assert!(!RelayedMachine::is_one("http://home.lan:7151"));
    }
}
