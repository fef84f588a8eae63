//! The log entry: what one write did, in a form another instance can verify
//! and apply.
//!
//! The write door appends exactly one entry per mutation of a synced table, in
//! the same transaction as the row write, signed by the machine's key. An entry
//! is immutable once appended: re-sending never re-stamps it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sync::VersionVector;
use crate::wire::{Reader, WireError, Writer};
use crate::{Lamport, RowId, Table};

/// The kind of mutation a change records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Insert,
    Update,
    /// A tombstone: the row stays, marked deleted, so deletes take part in
    /// conflict detection like any other write.
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "insert" => Some(Op::Insert),
            "update" => Some(Op::Update),
            "delete" => Some(Op::Delete),
            _ => None,
        }
    }
}

/// Hash of the entry before an origin's first one.
pub const GENESIS: [u8; 32] = [0; 32];

const DOMAIN: &[u8] = b"roost/log-entry/v2\0";
const MAGIC: &[u8] = b"RLE2";

/// Bounds that keep a decoded entry small enough to handle safely.
const MAX_ROW_BYTES: usize = 4 << 20;
const MAX_VECTOR_LEN: usize = 1024;

/// One entry of an origin's append-only log: one mutation of a synced row.
///
/// Entries of one origin are numbered from 1 and chained: each carries the
/// hash of the one before, so the origin's signature over an entry's hash
/// authenticates its whole history. `row` is the row's JSON exactly as the
/// write door stored it; the signature covers those bytes, never a
/// re-serialisation. `vector` is the version vector of the row version this
/// entry writes (see [`crate::sync`]): it names the entry itself and every
/// version the write had seen, which is what conflict detection compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub origin: String,
    pub seq: u64,
    pub lamport: Lamport,
    pub prev_hash: [u8; 32],
    pub table: Table,
    pub op: Op,
    pub row_id: RowId,
    pub vector: VersionVector,
    pub row: String,
}

impl Entry {
    /// The canonical binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(MAGIC)
            .str(&self.origin)
            .i64(self.seq as i64)
            .i64(self.lamport.0 as i64)
            .bytes(&self.prev_hash)
            .str(self.table.name())
            .str(self.op.as_str())
            .str(self.row_id.as_str());
        w.bytes(&(self.vector.len() as u16).to_be_bytes());
        for (origin, seq) in &self.vector {
            w.str(origin).i64(*seq as i64);
        }
        w.blob(self.row.as_bytes());
        w.0
    }

    /// Decodes [`Entry::encode`]'s output, refusing anything that is not the
    /// one canonical encoding of a well-formed entry.
    pub fn decode(bytes: &[u8]) -> Result<Entry, WireError> {
        let mut r = Reader::new(bytes, "log entry");
        let entry = Entry::read(&mut r)?;
        r.finish()?;
        Ok(entry)
    }

    /// Reads one entry from `r`, leaving whatever follows it.
    pub fn read(r: &mut Reader) -> Result<Entry, WireError> {
        let bad = |why: &str| WireError(format!("log entry: {why}"));
        if r.take(MAGIC.len())? != MAGIC {
            return Err(bad("unknown format"));
        }
        let origin = r.str()?;
        let seq = positive(r.i64()?).ok_or_else(|| bad("sequence numbers start at 1"))?;
        let lamport = Lamport(positive(r.i64()?).ok_or_else(|| bad("Lamport stamps start at 1"))?);
        let prev_hash = r.array()?;
        let table = Table::parse(&r.str()?).ok_or_else(|| bad("unknown table"))?;
        let op = Op::parse(&r.str()?).ok_or_else(|| bad("unknown operation"))?;
        let row_id_text = r.str()?;
        let row_id = RowId::parse(&row_id_text)
            .filter(|id| id.as_str() == row_id_text)
            .ok_or_else(|| bad("row id is not a canonical UUID"))?;
        let count = u16::from_be_bytes(r.array()?) as usize;
        if count > MAX_VECTOR_LEN {
            return Err(bad("version vector too long"));
        }
        let mut vector = VersionVector::new();
        for _ in 0..count {
            let key = r.str()?;
            let value = positive(r.i64()?).ok_or_else(|| bad("version vector entries start at 1"))?;
            if vector.last_key_value().is_some_and(|(last, _)| *last >= key) {
                return Err(bad("version vector is not in canonical order"));
            }
            vector.insert(key, value);
        }
        let row = r.blob()?;
        if row.len() > MAX_ROW_BYTES {
            return Err(bad("row too large"));
        }
        let row = String::from_utf8(row.to_vec()).map_err(|_| bad("row is not UTF-8"))?;
        Ok(Entry { origin, seq, lamport, prev_hash, table, op, row_id, vector, row })
    }

    /// SHA-256 over the domain and the encoding: what the origin signs, and
    /// what the next entry names as its `prev_hash`.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::new().chain_update(DOMAIN).chain_update(self.encode()).finalize().into()
    }
}

fn positive(n: i64) -> Option<u64> {
    u64::try_from(n).ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            origin: "01a20806-d444-7c97-be1f-ef8bd5bf8a9d".into(),
            seq: 1,
            lamport: Lamport(1),
            prev_hash: GENESIS,
            table: Table::Memories,
            op: Op::Insert,
            row_id: RowId::v7(1, [0; 10]),
            vector: [("01a20806-d444-7c97-be1f-ef8bd5bf8a9d".to_string(), 1)].into(),
            row: r#"{"content":"x"}"#.into(),
        }
    }

    #[test]
    fn decoding_inverts_encoding_and_refuses_any_other_bytes() {
        let e = entry();
        let bytes = e.encode();
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Entry::decode(&longer).is_err(), "trailing byte");
        let unordered = Entry { vector: [("b".to_string(), 1), ("a".to_string(), 2)].into(), ..e.clone() };
        let mut bytes = unordered.encode();
        // BTreeMap encodes in order; swap the two pairs by hand.
        let at = bytes.windows(3).position(|w| w == [0, 1, b'a']).unwrap();
        let pair_a = bytes[at..at + 11].to_vec();
        let pair_b = bytes[at + 11..at + 22].to_vec();
        bytes.splice(at..at + 22, pair_b.into_iter().chain(pair_a));
        assert!(Entry::decode(&bytes).is_err(), "vector out of order");
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let base = entry();
        let variants = [
            Entry { origin: "01a20806-d444-7c97-be1f-ef8bd5bf8a9e".into(), ..base.clone() },
            Entry { seq: 2, ..base.clone() },
            Entry { lamport: Lamport(2), ..base.clone() },
            Entry { prev_hash: [1; 32], ..base.clone() },
            Entry { table: Table::Notes, ..base.clone() },
            Entry { op: Op::Update, ..base.clone() },
            Entry { row_id: RowId::v7(2, [0; 10]), ..base.clone() },
            Entry { vector: [("x".to_string(), 1)].into(), ..base.clone() },
            Entry { row: r#"{"content":"y"}"#.into(), ..base.clone() },
        ];
        for v in variants {
            assert_ne!(v.hash(), base.hash(), "{v:?}");
        }
    }
}
