//! Applying entries received from other instances.
//!
//! [`Store::apply`] takes a batch of signed entries and, in one transaction,
//! verifies and applies each one: signature by the origin's machine key (from
//! the registry, whose certificates were verified on entry), the hash chain,
//! revocation, causal readiness, then the conflict rules of
//! `roost_core::sync`, and appends the entry to the log. The log is the
//! per-origin checkpoint, written in the same transaction as the rows, so a
//! crash at any point neither loses an entry nor applies one twice.
//!
//! Signatures are checked per chain run: within a batch, an origin's
//! consecutive entries are linked by `prev_hash`, so one valid signature on
//! the last of them authenticates every entry before it. Only when that
//! signature fails are the others checked one by one.

use std::collections::HashMap;
use std::sync::LazyLock;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior};
use serde_json::{Map, Value};

use roost_core::protocol::SignedEntry;
pub use roost_core::session::Verdict;
use roost_core::sync::{Outcome, RowState, Version, ready, resolve, supersedes};
use roost_core::validate::Fields;
use roost_core::{EPOCH, Entry, Lamport, RowId, Table};

use crate::door::{NewRow, insert_change, insert_row, log_head, overwrite_row, parse_vector, per_table, vector_text};
use crate::fence::{self, epoch_of};
use crate::{Result, Store};

/// What the registry says of an origin.
#[derive(Clone)]
struct OriginKey {
    key: VerifyingKey,
    /// For a revoked origin, the last sequence number accepted.
    revoked_after: Option<u64>,
}

/// Per-batch caches of heads and keys, and whether any conflict is open.
#[derive(Default)]
struct Context {
    heads: HashMap<String, (u64, [u8; 32])>,
    keys: HashMap<String, Option<OriginKey>>,
    conflicts_open: Option<bool>,
}

impl Context {
    /// Whether any conflict is open: with none, no entry of the batch can
    /// settle one, and the per-entry lookup is skipped.
    fn conflicts_open(&mut self, tx: &Transaction) -> Result<bool> {
        if let Some(open) = self.conflicts_open {
            return Ok(open);
        }
        let open = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM sync_conflicts WHERE resolved = 0)")?
            .query_row([], |r| r.get(0))?;
        self.conflicts_open = Some(open);
        Ok(open)
    }

    fn head(&mut self, tx: &Transaction, origin: &str) -> Result<(u64, [u8; 32])> {
        if let Some(head) = self.heads.get(origin) {
            return Ok(*head);
        }
        let head = log_head(tx, origin)?;
        self.heads.insert(origin.to_string(), head);
        Ok(head)
    }

    fn key(&mut self, tx: &Transaction, origin: &str) -> Result<Option<OriginKey>> {
        if let Some(key) = self.keys.get(origin) {
            return Ok(key.clone());
        }
        let found: Option<(String, crate::Standing, Option<i64>)> = tx
            .prepare_cached("SELECT signing_key, status, revoked_after FROM instances WHERE id = ?1")?
            .query_row([origin], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let key = found.and_then(|(hex, status, revoked_after)| {
            let bytes: [u8; 32] = roost_core::hex::decode_array(&hex)?;
            let key = VerifyingKey::from_bytes(&bytes).ok()?;
            let revoked_after = (status == crate::Standing::Revoked).then(|| revoked_after.unwrap_or(0) as u64);
            Some(OriginKey { key, revoked_after })
        });
        self.keys.insert(origin.to_string(), key.clone());
        Ok(key)
    }
}

impl Store {
    /// Verifies and applies `batch` in one transaction; one verdict per entry.
    pub fn apply(&self, batch: &[SignedEntry]) -> Result<Vec<Verdict>> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let verdicts = writer.with_door_open(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut ctx = Context::default();
            let authentic = authenticate(&tx, &mut ctx, batch)?;
            let now = self.author.now();
            let mut newest = Lamport(0);
            let mut verdicts = Vec::with_capacity(batch.len());
            for (signed, authentic) in batch.iter().zip(authentic) {
                let verdict = apply_one(&tx, &mut ctx, signed, authentic, &now)?;
                if verdict == Verdict::Applied {
                    newest = newest.max(signed.entry.lamport);
                }
                verdicts.push(verdict);
            }
            if newest.0 > 0 {
                let clock: i64 = tx.query_row("SELECT lamport FROM clock WHERE id = 1", [], |r| r.get(0))?;
                let next = Lamport(clock as u64).observe(newest);
                tx.execute("UPDATE clock SET lamport = ?1 WHERE id = 1", [next.0 as i64])?;
            }
            tx.commit()?;
            Ok(verdicts)
        });
        drop(writer);
        if verdicts.as_ref().is_ok_and(|v| v.contains(&Verdict::Applied)) {
            self.committed();
        }
        verdicts
    }
}

/// The hash of each entry of the batch that carries a valid origin
/// signature, directly or through the hash chain of a later entry that does;
/// None for the others.
fn authenticate(tx: &Transaction, ctx: &mut Context, batch: &[SignedEntry]) -> Result<Vec<Option<[u8; 32]>>> {
    let mut authentic = vec![None; batch.len()];
    // Origin → hash that an authenticated later entry names as its predecessor.
    let mut vouched: HashMap<&str, [u8; 32]> = HashMap::new();
    for (i, signed) in batch.iter().enumerate().rev() {
        let entry = &signed.entry;
        if entry.seq <= ctx.head(tx, &entry.origin)?.0 {
            continue;
        }
        let Some(origin) = ctx.key(tx, &entry.origin)? else { continue };
        let hash = entry.hash();
        let ok = vouched.get(entry.origin.as_str()) == Some(&hash)
            || origin.key.verify(&hash, &Signature::from_bytes(&signed.signature)).is_ok();
        authentic[i] = ok.then_some(hash);
        if ok {
            vouched.insert(&entry.origin, entry.prev_hash);
        } else {
            vouched.remove(entry.origin.as_str());
        }
    }
    Ok(authentic)
}

/// Applies one entry; `hash` is its hash if its signature checked out.
fn apply_one(
    tx: &Transaction,
    ctx: &mut Context,
    signed: &SignedEntry,
    hash: Option<[u8; 32]>,
    now: &str,
) -> Result<Verdict> {
    let entry = &signed.entry;
    let (head, head_hash) = ctx.head(tx, &entry.origin)?;
    if entry.seq <= head {
        return Ok(Verdict::Duplicate);
    }
    let Some(origin) = ctx.key(tx, &entry.origin)? else {
        return Ok(refuse(format!("unknown origin {}: not in this instance's registry", entry.origin)));
    };
    let Some(hash) = hash else {
        return Ok(refuse(format!("bad signature on entry {} of {}", entry.seq, entry.origin)));
    };
    if origin.revoked_after.is_some_and(|last| entry.seq > last) {
        return Ok(refuse(format!("origin {} is revoked", entry.origin)));
    }
    if entry.seq > head + 1 {
        return Ok(Verdict::NotReady);
    }
    if entry.prev_hash != head_hash {
        return Ok(refuse(format!("entry {} of {} does not continue its hash chain", entry.seq, entry.origin)));
    }
    let mut heads = std::collections::BTreeMap::new();
    for o in entry.vector.keys() {
        heads.insert(o.clone(), ctx.head(tx, o)?.0);
    }
    if entry.vector.get(&entry.origin) != Some(&entry.seq) {
        return Ok(refuse(format!("entry {} of {} has a malformed version vector", entry.seq, entry.origin)));
    }
    if !ready(&entry.origin, entry.seq, &entry.vector, &heads) {
        return Ok(Verdict::NotReady);
    }
    let row = match row_of(entry) {
        Ok(row) => row,
        Err(why) => return Ok(refuse(format!("entry {} of {}: {why}", entry.seq, entry.origin))),
    };
    insert_change(tx, entry, &hash, &signed.signature, now)?;
    apply_version(tx, ctx, entry, &row, now)?;
    ctx.heads.insert(entry.origin.clone(), (entry.seq, hash));
    Ok(Verdict::Applied)
}

fn refuse(why: String) -> Verdict {
    tracing::warn!(reason = %why, "refused a log entry");
    Verdict::Refused(why)
}

/// The entry's row, checked against the entry's own stamps.
fn row_of(entry: &Entry) -> Result<Map<String, Value>, &'static str> {
    let Ok(Value::Object(row)) = serde_json::from_str::<Value>(&entry.row) else {
        return Err("row is not a JSON object");
    };
    let consistent = row.get("id").and_then(Value::as_str) == Some(entry.row_id.as_str())
        && row.get("origin").and_then(Value::as_str) == Some(entry.origin.as_str())
        && row.get("lamport").and_then(Value::as_u64) == Some(entry.lamport.0)
        && row.get("created_at").is_some_and(Value::is_string)
        && row.get("updated_at").is_some_and(Value::is_string);
    if !consistent {
        return Err("row does not match the entry's id and stamps");
    }
    if row.get("local") == Some(&Value::Bool(true)) {
        return Err("an instance-local row never leaves its instance");
    }
    if entry.table.agent_owned() && row.get(EPOCH).and_then(Value::as_i64).is_none_or(|e| e < 1) {
        return Err("agent state without a lease epoch");
    }
    Ok(row)
}

static CURRENT: LazyLock<Vec<String>> = LazyLock::new(|| {
    Table::ALL
        .iter()
        .map(|table| {
            let epoch = if table.agent_owned() { EPOCH } else { "NULL" };
            format!("SELECT origin, lamport, version_seq, vv, {epoch} FROM {} WHERE id = ?1", table.name())
        })
        .collect()
});

/// The row's current version and absorbed vector, if the row exists.
fn current(tx: &Transaction, table: Table, id: &RowId) -> Result<Option<RowState>> {
    let found = tx
        .prepare_cached(per_table(&CURRENT, table))?
        .query_row([id.as_str()], |r| {
            let version = Version {
                origin: r.get(0)?,
                seq: r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
                lamport: Lamport(r.get::<_, i64>(1)? as u64),
                vector: Default::default(),
                epoch: r.get::<_, Option<i64>>(4)?.map(|e| e as u64),
                row: String::new(),
            };
            Ok((version, r.get::<_, String>(3)?))
        })
        .optional()?;
    let Some((mut version, vv)) = found else { return Ok(None) };
    version.vector = version_vector(tx, &version.origin, version.seq)?;
    Ok(Some(RowState { version, vector: parse_vector(&vv)? }))
}

/// The vector an entry in the log carried (empty for none).
fn version_vector(tx: &Transaction, origin: &str, seq: u64) -> Result<roost_core::sync::VersionVector> {
    let text: Option<String> = tx
        .prepare_cached("SELECT vector FROM changes WHERE origin = ?1 AND origin_seq = ?2")?
        .query_row(rusqlite::params![origin, seq as i64], |r| r.get(0))
        .optional()?
        .flatten();
    text.map_or_else(|| Ok(Default::default()), |t| parse_vector(&t))
}

/// Runs the conflict rules for `entry` against the row and writes the result.
fn apply_version(
    tx: &Transaction,
    ctx: &mut Context,
    entry: &Entry,
    row: &Map<String, Value>,
    now: &str,
) -> Result<()> {
    let incoming = Version {
        origin: entry.origin.clone(),
        seq: entry.seq,
        lamport: entry.lamport,
        vector: entry.vector.clone(),
        epoch: epoch_of(entry.table, row),
        row: String::new(),
    };
    if let Some(epoch) = incoming.epoch {
        fence::raise_for(tx, row.get("key").and_then(Value::as_str), epoch)?;
    }
    let current = current(tx, entry.table, &entry.row_id)?;
    match resolve(current.as_ref(), &incoming) {
        // In the log already; a fenced version supersedes nothing either.
        Outcome::Fenced => {
            tracing::info!(origin = %entry.origin, seq = entry.seq, row = %entry.row_id, "fenced an entry of a past epoch");
            return fence::count_fenced(tx);
        }
        Outcome::Known => {}
        Outcome::Replace(state) => write_incoming(tx, entry, row, &state.vector, current.is_some())?,
        Outcome::Conflict { state, loser } => {
            if state.version.origin == incoming.origin && state.version.seq == incoming.seq {
                write_incoming(tx, entry, row, &state.vector, true)?;
            } else {
                tx.prepare_cached(&format!("UPDATE {} SET vv = ?2 WHERE id = ?1", entry.table.name()))?
                    .execute(rusqlite::params![entry.row_id.as_str(), vector_text(&state.vector)])?;
            }
            // An inbound message is written once, by whichever machines
            // received it, all with what the channel sent: two creations
            // are one message, not a choice for a person to make.
            if entry.table != Table::AgentMessages {
                record_conflict(tx, entry.table, &entry.row_id, &state.version, &loser, now)?;
                ctx.conflicts_open = Some(true);
            }
        }
    }
    if !ctx.conflicts_open(tx)? {
        return Ok(());
    }
    settle_conflicts(tx, entry.table, &entry.row_id, &incoming, now)
}

fn write_incoming(
    tx: &Transaction,
    entry: &Entry,
    row: &Map<String, Value>,
    vector: &roost_core::sync::VersionVector,
    exists: bool,
) -> Result<()> {
    let text = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or_default();
    let fields: Fields =
        entry.table.fields().iter().map(|f| (f.name, row.get(f.name).cloned().unwrap_or(Value::Null))).collect();
    let new = NewRow {
        id: &entry.row_id,
        origin: &entry.origin,
        lamport: entry.lamport,
        created_at: text("created_at"),
        updated_at: text("updated_at"),
        deleted_at: row.get("deleted_at").and_then(Value::as_str),
        vector: vector_text(vector),
        version_seq: Some(entry.seq),
    };
    if exists {
        overwrite_row(tx, entry.table, &new, false, &fields)
    } else {
        insert_row(tx, entry.table, &new, &fields)
    }
}

/// The id a conflict has on every instance: named from the losing version.
pub(crate) fn conflict_id(table: Table, row_id: &RowId, loser_origin: &str, loser_seq: u64) -> RowId {
    RowId::named("sync_conflicts", &format!("{}/{row_id}/{loser_origin}/{loser_seq}", table.name()))
}

/// Keeps the losing version of a concurrent pair, once.
fn record_conflict(
    tx: &Transaction,
    table: Table,
    row_id: &RowId,
    winner: &Version,
    loser: &Version,
    now: &str,
) -> Result<()> {
    let logged = |v: &Version| -> Result<(String, String)> {
        Ok(tx
            .prepare_cached("SELECT op, row_json FROM changes WHERE origin = ?1 AND origin_seq = ?2")?
            .query_row(rusqlite::params![v.origin, v.seq as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or_default())
    };
    let (winner_op, winner_row) = logged(winner)?;
    let (loser_op, loser_row) = logged(loser)?;
    tx.prepare_cached(
        "INSERT INTO sync_conflicts (id, table_name, row_id, winner_origin, winner_seq, winner_lamport, winner_op,
             winner_row, loser_origin, loser_seq, loser_lamport, loser_op, loser_row, loser_vector, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (id) DO NOTHING",
    )?
    .execute(rusqlite::params![
        conflict_id(table, row_id, &loser.origin, loser.seq).as_str(),
        table.name(),
        row_id.as_str(),
        winner.origin,
        winner.seq as i64,
        winner.lamport.0 as i64,
        winner_op,
        winner_row,
        loser.origin,
        loser.seq as i64,
        loser.lamport.0 as i64,
        loser_op,
        loser_row,
        vector_text(&loser.vector),
        now,
    ])?;
    Ok(())
}

/// After `by`, a version just written or applied (not fenced): resolves the
/// row's open conflicts it supersedes by the rule of `roost_core::sync`, and
/// makes the row's current version the winner of those still open. The
/// winner of an open conflict is always the version the row shows, so every
/// machine, whatever order versions reached it in, names the same one, and
/// keeping "the winner" never brings back a version the row has moved past.
pub(crate) fn settle_conflicts(tx: &Transaction, table: Table, row_id: &RowId, by: &Version, now: &str) -> Result<()> {
    if supersede(tx, table, row_id, by, now)? == 0 {
        return Ok(());
    }
    let shown: Option<(String, Option<i64>, i64)> = tx
        .prepare_cached(&format!("SELECT origin, version_seq, lamport FROM {} WHERE id = ?1", table.name()))?
        .query_row([row_id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((origin, Some(seq), lamport)) = shown else { return Ok(()) };
    tx.prepare_cached(
        "UPDATE sync_conflicts SET winner_origin = c.origin, winner_seq = c.origin_seq, winner_lamport = ?5,
             winner_op = c.op, winner_row = c.row_json
         FROM (SELECT origin, origin_seq, op, row_json FROM changes WHERE origin = ?3 AND origin_seq = ?4) AS c
         WHERE table_name = ?1 AND row_id = ?2 AND resolved = 0
             AND (winner_origin, winner_seq) IS NOT (?3, ?4)",
    )?
    .execute(rusqlite::params![table.name(), row_id.as_str(), origin, seq, lamport])?;
    Ok(())
}

/// Resolves the row's open conflicts that `by` supersedes; how many are
/// still open.
fn supersede(tx: &Transaction, table: Table, row_id: &RowId, by: &Version, now: &str) -> Result<usize> {
    let open: Vec<(String, String, i64, i64, String, String)> = tx
        .prepare_cached(
            "SELECT id, loser_origin, loser_seq, loser_lamport, loser_vector, loser_row FROM sync_conflicts
             WHERE table_name = ?1 AND row_id = ?2 AND resolved = 0",
        )?
        .query_map([table.name(), row_id.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut still_open = open.len();
    for (id, origin, seq, lamport, vector, row) in open {
        let epoch =
            if table.agent_owned() { epoch_of(table, &serde_json::from_str(&row).unwrap_or_default()) } else { None };
        let loser = Version {
            origin,
            seq: seq as u64,
            lamport: Lamport(lamport as u64),
            vector: parse_vector(&vector)?,
            epoch,
            row: String::new(),
        };
        if supersedes(by, &loser) {
            tx.prepare_cached(
                "UPDATE sync_conflicts SET resolved = 1, resolution = ?2, resolved_at = ?3 WHERE id = ?1",
            )?
            .execute(rusqlite::params![
                id,
                format!("superseded by entry {} of {}", by.seq, by.origin),
                now
            ])?;
            still_open -= 1;
        }
    }
    Ok(still_open)
}
