//! Row ids: globally unique from birth.
//!
//! A fresh row gets a UUIDv7 (48-bit millisecond time, then randomness), so ids
//! from different instances never collide and sort roughly by creation time.
//! Rows whose identity is a natural key (a setting's key) get a name-based id
//! instead, so two instances creating the same key name the same row.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A row id in canonical hyphenated UUID form (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RowId(String);

impl RowId {
    /// A UUIDv7 from the caller's clock reading and random bytes.
    pub fn v7(unix_ms: u64, random: [u8; 10]) -> RowId {
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        bytes[6..].copy_from_slice(&random);
        bytes[6] = 0x70 | (bytes[6] & 0x0f);
        bytes[8] = 0x80 | (bytes[8] & 0x3f);
        RowId::from_bytes(bytes)
    }

    /// A name-based UUIDv8: the same `namespace` and `name` give the same id
    /// on every instance.
    pub fn named(namespace: &str, name: &str) -> RowId {
        let digest = Sha256::new()
            .chain_update(b"roost/row-id/v1\0")
            .chain_update(namespace.as_bytes())
            .chain_update([0u8])
            .chain_update(name.as_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes[6] = 0x80 | (bytes[6] & 0x0f);
        bytes[8] = 0x80 | (bytes[8] & 0x3f);
        RowId::from_bytes(bytes)
    }

    fn from_bytes(b: [u8; 16]) -> RowId {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        RowId(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
    }

    /// Parses a canonical id; accepts upper-case hex and normalises it.
    pub fn parse(s: &str) -> Option<RowId> {
        let s = s.trim();
        let ok = s.len() == 36
            && s.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            });
        ok.then(|| RowId(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RowId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RowId::parse(&s).ok_or_else(|| format!("not a row id: {s:?}"))
    }
}

impl From<RowId> for String {
    fn from(id: RowId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_has_version_variant_and_time_order() {
        let a = RowId::v7(1_700_000_000_000, [0xff; 10]);
        let b = RowId::v7(1_700_000_000_001, [0x00; 10]);
        assert_eq!(&a.as_str()[14..15], "7");
        assert!(matches!(&a.as_str()[19..20], "8" | "9" | "a" | "b"));
        assert!(a < b, "ids sort by creation time");
        assert_eq!(RowId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn named_ids_are_stable_and_distinct() {
        assert_eq!(RowId::named("setting", "theme"), RowId::named("setting", "theme"));
        assert_ne!(RowId::named("setting", "theme"), RowId::named("setting", "them"));
        assert_ne!(RowId::named("a", "bc"), RowId::named("ab", "c"));
    }

    #[test]
    fn parse_rejects_malformed() {
        assert!(RowId::parse("not-an-id").is_none());
        assert!(RowId::parse("0190f3b2-7c1a-7def-8abc-0123456789ag").is_none());
        assert_eq!(
            RowId::parse("0190F3B2-7C1A-7DEF-8ABC-0123456789AB").unwrap().as_str(),
            "0190f3b2-7c1a-7def-8abc-0123456789ab"
        );
    }
}
