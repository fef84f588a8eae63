//! The write door: the only code that writes synced tables.
//!
//! [`Store::write`] takes a [`Mutation`] from any entry point (MCP over HTTP or
//! stdio, the CLI, the JSON API) and, in one `BEGIN IMMEDIATE` transaction:
//! validates it with `roost-core`, writes the row, advances the persisted
//! Lamport clock and appends one signed log entry. Either all of that commits
//! or none of it does. Deletes write tombstones, never remove rows. Rows
//! marked `local` get no log entry: the log is what replicates. Agent-owned
//! state has its own mutation, which checks the lease epoch against the
//! fence (see [`crate::fence`]); the generic ones refuse it.

use std::sync::LazyLock;

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params_from_iter};
use serde_json::{Map, Value};

use ed25519_dalek::{Signer, SigningKey};
use roost_core::sync::{Version, VersionVector, next_vector};
use roost_core::validate::{self, Fields};
use roost_core::{EPOCH, Entry, FieldKind, GENESIS, Lamport, Op, RowId, Table};

use crate::apply::settle_conflicts;
use crate::conflicts::{Keep, find_conflict};
use crate::connection::DoorConnection;
use crate::fence::{self, AgentState};
use crate::row::{select_list, to_sql};
use crate::{Result, Store, StoreError, WallClock, row};

/// Who writes through this door: the instance's id and the machine key that
/// signs its log entries.
pub(crate) struct Author {
    pub origin: String,
    pub key: SigningKey,
    /// Where timestamps and the time part of new ids come from.
    pub clock: WallClock,
}

impl Author {
    /// Now as stored text, by this store's clock.
    pub fn now(&self) -> String {
        crate::time_text((self.clock)())
    }

    fn now_unix_ms(&self) -> u64 {
        ((self.clock)().unix_timestamp_nanos() / 1_000_000) as u64
    }
}

/// One change a caller asks for. `key` is a row id, or for tables with a
/// unique field (project name, blog slug, setting key) that field's value.
#[derive(Debug, Clone)]
pub enum Mutation {
    Create {
        table: Table,
        fields: Map<String, Value>,
    },
    Update {
        table: Table,
        key: String,
        patch: Map<String, Value>,
    },
    Delete {
        table: Table,
        key: String,
    },
    /// Resolves a sync conflict (by id or unique prefix) by writing the kept
    /// version as a new version of the row, which has seen both.
    Resolve {
        conflict: String,
        keep: Keep,
    },
    /// Creates or updates the agent state under `key`, written under lease
    /// `epoch`; refused with [`StoreError::StaleEpoch`] when `epoch` is below
    /// the highest this instance has seen.
    AgentState {
        key: String,
        value: String,
        epoch: u64,
    },
}

impl Store {
    /// Applies `mutation` and returns the row as written (for a delete, the
    /// tombstone). An update that changes nothing writes nothing.
    pub fn write(&self, mutation: Mutation) -> Result<Map<String, Value>> {
        let mut rows = self.write_all(vec![mutation])?;
        Ok(rows.pop().expect("one row per mutation"))
    }

    /// Applies `mutations` in order in one transaction: all or none. Each goes
    /// through the door exactly as [`Store::write`] takes it; the one
    /// transaction only saves a commit per row (a bulk import).
    pub fn write_all(&self, mutations: Vec<Mutation>) -> Result<Vec<Map<String, Value>>> {
        for mutation in &mutations {
            if let Mutation::Create { table, .. } | Mutation::Update { table, .. } | Mutation::Delete { table, .. } =
                mutation
                && table.agent_owned()
            {
                return Err(StoreError::AgentOwned(table.name()));
            }
        }
        let started = std::time::Instant::now();
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let written = writer.with_door_open(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            crate::restore::refuse_while_restoring(&tx)?;
            let mut rows = Vec::with_capacity(mutations.len());
            for mutation in mutations {
                rows.push(match mutation {
                    Mutation::Create { table, fields } => create(&tx, &self.author, table, &fields)?,
                    Mutation::Update { table, key, patch } => update(&tx, &self.author, table, &key, &patch)?,
                    Mutation::Delete { table, key } => delete(&tx, &self.author, table, &key)?,
                    Mutation::Resolve { conflict, keep } => resolve_conflict(&tx, &self.author, &conflict, keep)?,
                    Mutation::AgentState { key, value, epoch } => agent_state(&tx, &self.author, &key, &value, epoch)?,
                });
            }
            tx.commit()?;
            Ok(rows)
        });
        drop(writer);
        if written.is_ok() {
            roost_metrics::metrics().write_door_seconds.observe(started.elapsed().as_secs_f64());
            self.committed();
        }
        written
    }

    /// Creates rows brought in from elsewhere (another program's database, a
    /// file), in order, in one transaction, each through the door as a
    /// create. A row's id is named by its `source`, so importing the same
    /// thing again, here or on another machine, finds the row already there
    /// (or deleted since) and skips it. A row that fails validation or names
    /// a taken unique value is skipped with the reason; nothing of it is
    /// written, and the rest go ahead.
    pub fn import(&self, rows: Vec<Imported>) -> Result<Vec<ImportOutcome>> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let outcomes = writer.with_door_open(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            crate::restore::refuse_while_restoring(&tx)?;
            let mut outcomes = Vec::with_capacity(rows.len());
            for row in rows {
                outcomes.push(import_one(&tx, &self.author, row)?);
            }
            tx.commit()?;
            Ok(outcomes)
        });
        drop(writer);
        if outcomes.as_ref().is_ok_and(|o| o.iter().any(|o| matches!(o, ImportOutcome::Added(_)))) {
            self.committed();
        }
        outcomes
    }

    /// Writes `value` under `key` as the holder of lease `epoch`: the
    /// [`Mutation::AgentState`] write, read back as agent state.
    pub fn write_agent_state(&self, key: &str, value: &str, epoch: u64) -> Result<AgentState> {
        let row = self.write(Mutation::AgentState { key: key.to_string(), value: value.to_string(), epoch })?;
        AgentState::from_row(row)
    }
}

/// A row to create from elsewhere: `source` names it there (a program, its
/// database and the row's id), once and for all.
#[derive(Debug, Clone)]
pub struct Imported {
    pub table: Table,
    pub source: String,
    pub fields: Map<String, Value>,
}

/// What [`Store::import`] did with one row.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportOutcome {
    Added(Map<String, Value>),
    /// Nothing was written; why, in one line.
    Skipped(String),
}

fn import_one(tx: &Transaction, author: &Author, row: Imported) -> Result<ImportOutcome> {
    if row.table.agent_owned() {
        return Err(StoreError::AgentOwned(row.table.name()));
    }
    let named = RowId::named("import", &row.source);
    match create_as(tx, author, row.table, &row.fields, Some(named)) {
        Ok(Some(written)) => Ok(ImportOutcome::Added(written)),
        Ok(None) if row.table.id_from_key() => Ok(ImportOutcome::Skipped(format!(
            "this {} is already set here",
            row.table.natural_key().map_or("row", |key| key.name)
        ))),
        Ok(None) => Ok(ImportOutcome::Skipped("already imported".into())),
        // Each is found before anything of the row is written.
        Err(e @ (StoreError::Invalid(_) | StoreError::Duplicate(_) | StoreError::NotFound { .. })) => {
            Ok(ImportOutcome::Skipped(e.to_string()))
        }
        Err(e) => Err(e),
    }
}

fn create(tx: &Transaction, author: &Author, table: Table, input: &Map<String, Value>) -> Result<Map<String, Value>> {
    let written = create_as(tx, author, table, input, None)?;
    Ok(written.expect("a create that is not an import always writes"))
}

/// Creates a row. An import names its row's id (unless the table's key
/// does) and writes nothing when that row exists here, even deleted.
fn create_as(
    tx: &Transaction,
    author: &Author,
    table: Table,
    input: &Map<String, Value>,
    imported: Option<RowId>,
) -> Result<Option<Map<String, Value>>> {
    let mut fields = validate::validate_create(table, input)?;
    resolve_project(tx, table, &mut fields)?;
    let local = is_local(&fields);
    let keyed = match (table.id_from_key(), table.natural_key()) {
        // A local setting is a different row from a shared one of the same key.
        (true, Some(key)) => Some(RowId::named(
            if local { "settings/local" } else { table.name() },
            fields[key.name].as_str().unwrap_or_default(),
        )),
        _ => None,
    };
    let is_import = imported.is_some();
    let id = match keyed.or(imported) {
        Some(id) => id,
        None => RowId::v7(author.now_unix_ms(), rand::random()),
    };
    let previous = stored_vector(tx, table, &id)?;
    if is_import && previous.is_some() {
        return Ok(None);
    }
    check_unique(tx, table, &fields, None)?;
    let now = author.now();
    validate::derive(table, &mut fields, &now);
    let stamp = Stamp::next(tx, author, local, previous.as_deref())?;
    if previous.is_some() {
        // A name-based id whose row was deleted: the new row takes its place.
        write_row(tx, table, &id, &fields, &author.origin, &stamp, &now, None, Some(&now))?;
    } else {
        insert_fresh(tx, author, table, &id, &fields, &stamp, &now)?;
    }
    finish(tx, author, table, Op::Insert, &id, &stamp, &now).map(Some)
}

/// The stored version vector of row `id`, if the row exists.
fn stored_vector(tx: &Transaction, table: Table, id: &RowId) -> Result<Option<String>> {
    Ok(tx
        .prepare_cached(&format!("SELECT vv FROM {} WHERE id = ?1", table.name()))?
        .query_row([id.as_str()], |r| r.get::<_, String>(0))
        .optional()?)
}

/// Inserts a row that never existed here, stamped by `stamp`.
fn insert_fresh(
    tx: &Transaction,
    author: &Author,
    table: Table,
    id: &RowId,
    fields: &Fields,
    stamp: &Stamp,
    now: &str,
) -> Result<()> {
    let row = NewRow {
        id,
        origin: &author.origin,
        lamport: stamp.lamport,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        vector: stamp.vector_text(),
        version_seq: stamp.log.as_ref().map(|l| l.seq),
    };
    insert_row(tx, table, &row, fields)
}

fn update(
    tx: &Transaction,
    author: &Author,
    table: Table,
    key: &str,
    input: &Map<String, Value>,
) -> Result<Map<String, Value>> {
    let mut patch = validate::validate_patch(table, input)?;
    resolve_project(tx, table, &mut patch)?;
    let (id, current) = find_live(tx, table, key)?;
    let mut fields: Fields =
        table.fields().iter().map(|f| (f.name, current.get(f.name).cloned().unwrap_or(Value::Null))).collect();
    let before = fields.clone();
    fields.extend(patch);
    let now = author.now();
    validate::derive(table, &mut fields, &now);
    if fields == before {
        return Ok(current);
    }
    check_unique(tx, table, &fields, Some(&id))?;
    let stamp = Stamp::next(tx, author, is_local(&fields), Some(&row_vector(tx, table, &id)?))?;
    write_row(tx, table, &id, &fields, &author.origin, &stamp, &now, None, None)?;
    finish(tx, author, table, Op::Update, &id, &stamp, &now)
}

fn delete(tx: &Transaction, author: &Author, table: Table, key: &str) -> Result<Map<String, Value>> {
    let (id, current) = find_live(tx, table, key)?;
    let now = author.now();
    let local = current.get("local") == Some(&Value::Bool(true));
    let stamp = Stamp::next(tx, author, local, Some(&row_vector(tx, table, &id)?))?;
    // A tombstone keeps the row's identity and scope, and drops its content.
    let mut tombstone = Fields::new();
    tombstone.insert("local", Value::Bool(local));
    write_row(tx, table, &id, &tombstone, &author.origin, &stamp, &now, Some(&now), None)?;
    finish(tx, author, table, Op::Delete, &id, &stamp, &now)
}

fn resolve_conflict(tx: &Transaction, author: &Author, key: &str, keep: Keep) -> Result<Map<String, Value>> {
    let conflict = find_conflict(tx, &author.origin, key)?;
    if conflict.resolved {
        return Err(StoreError::AlreadyResolved {
            id: conflict.id.clone(),
            resolution: conflict.resolution.clone().unwrap_or_else(|| "resolved".into()),
        });
    }
    let table = Table::parse(&conflict.table)
        .ok_or_else(|| StoreError::Damaged(format!("a conflict on an unknown table {:?}", conflict.table)))?;
    if table.agent_owned() {
        // Only two machines granted the same epoch make such a conflict; the
        // holder's next write, which has seen both versions, or any write of
        // a later epoch closes it.
        return Err(StoreError::AgentOwned(table.name()));
    }
    let id = RowId::parse(&conflict.row_id)
        .ok_or_else(|| StoreError::Damaged(format!("a conflict on a malformed row id {:?}", conflict.row_id)))?;
    // The winner is the version the row shows now; keeping the loser brings
    // back the version that lost, and the resolution says which it was.
    let said = |which: &str, version: &crate::ConflictVersion| {
        let what = if std::ptr::eq(version, &conflict.winner) {
            "the version the row shows"
        } else {
            "the version that lost, over the one the row showed"
        };
        format!("kept the {which} version ({what}: entry {} of {})", version.seq, version.origin)
    };
    let (kept, resolution) = match &keep {
        Keep::Local => (conflict.local_version().row.clone(), said("local", conflict.local_version())),
        Keep::Remote => (conflict.remote_version().row.clone(), said("remote", conflict.remote_version())),
        Keep::Merge(_) => (conflict.winner.row.clone(), "merged into the version the row shows".to_string()),
    };
    let mut fields: Fields =
        table.fields().iter().map(|f| (f.name, kept.get(f.name).cloned().unwrap_or(Value::Null))).collect();
    let mut deleted = kept.get("deleted_at").is_some_and(Value::is_string);
    if let Keep::Merge(patch) = &keep {
        let patch = validate::validate_patch(table, patch)?;
        fields.extend(patch);
        deleted = false;
    }
    if !deleted {
        check_unique(tx, table, &fields, Some(&id))?;
    }
    let now = author.now();
    let stamp = Stamp::next(tx, author, false, Some(&row_vector(tx, table, &id)?))?;
    let deleted_at = deleted.then_some(now.as_str());
    write_row(tx, table, &id, &fields, &author.origin, &stamp, &now, deleted_at, None)?;
    let op = if deleted { Op::Delete } else { Op::Update };
    let written = finish(tx, author, table, op, &id, &stamp, &now)?;
    tx.prepare_cached("UPDATE sync_conflicts SET resolved = 1, resolution = ?2, resolved_at = ?3 WHERE id = ?1")?
        .execute(rusqlite::params![conflict.id, resolution, now])?;
    Ok(written)
}

/// Creates or updates `key`'s agent state under lease `epoch`, unless the
/// fence has seen a higher epoch: then another machine holds the lease, and
/// this one must not write over it.
fn agent_state(tx: &Transaction, author: &Author, key: &str, value: &str, epoch: u64) -> Result<Map<String, Value>> {
    let table = Table::AgentState;
    let input = Map::from_iter([
        ("key".to_string(), Value::from(key)),
        ("value".to_string(), Value::from(value)),
        (EPOCH.to_string(), Value::from(epoch)),
    ]);
    let fields = validate::validate_create(table, &input)?;
    let id = fence::agent_state_id(key);
    let sql = format!("SELECT {} FROM {} t WHERE t.id = ?1", select_list(table, "t"), table.name());
    let current = tx.prepare_cached(&sql)?.query_row([id.as_str()], |r| row::row_json(table, r, 0)).optional()?;
    let stored = current.as_ref().and_then(|row| fence::epoch_of(table, row)).unwrap_or(0);
    let highest = if roost_pool::is_topic_stamp(epoch) {
        let topic = fence::topic_of(tx, key)?.ok_or_else(|| StoreError::NoTopic(key.to_string()))?;
        let highest = fence::topic_highest(tx, &topic)?.max(stored);
        if epoch < highest {
            return Err(StoreError::StaleTopicEpoch { topic, given: epoch, highest });
        }
        fence::raise_topic(tx, &topic, epoch)?;
        highest.max(epoch)
    } else {
        let highest = fence::highest(tx)?;
        if epoch < highest {
            return Err(StoreError::StaleEpoch { given: epoch, highest });
        }
        if roost_pool::is_topic_stamp(stored) {
            let topic = fence::topic_of(tx, key)?.unwrap_or_default();
            return Err(StoreError::StaleTopicEpoch { topic, given: epoch, highest: stored });
        }
        fence::raise(tx, epoch)?;
        highest.max(epoch)
    };
    let now = author.now();
    let Some(previous) = stored_vector(tx, table, &id)? else {
        let stamp = Stamp::next(tx, author, false, None)?;
        insert_fresh(tx, author, table, &id, &fields, &stamp, &now)?;
        return finish(tx, author, table, Op::Insert, &id, &stamp, &now);
    };
    let current = current.expect("a row with a stored version vector was read above");
    assert!(stored <= highest, "the fence is at or above every epoch this instance holds");
    if current.get("deleted_at").is_none() && table.fields().iter().all(|f| current.get(f.name) == fields.get(f.name)) {
        return Ok(current);
    }
    let stamp = Stamp::next(tx, author, false, Some(&previous))?;
    write_row(tx, table, &id, &fields, &author.origin, &stamp, &now, None, None)?;
    finish(tx, author, table, Op::Update, &id, &stamp, &now)
}

fn is_local(fields: &Fields) -> bool {
    fields.get("local") == Some(&Value::Bool(true))
}

/// The stamps of one local write: its Lamport time and, for a row that
/// replicates, its place in the log and its version vector.
struct Stamp {
    lamport: Lamport,
    log: Option<LogPosition>,
}

struct LogPosition {
    seq: u64,
    prev_hash: [u8; 32],
    vector: VersionVector,
}

impl Stamp {
    /// Ticks the clock and, unless the row is local, takes the next log
    /// position; `previous` is the row's stored vector, if the row exists.
    fn next(tx: &Transaction, author: &Author, local: bool, previous: Option<&str>) -> Result<Stamp> {
        let lamport = advance_clock(tx)?;
        if local {
            return Ok(Stamp { lamport, log: None });
        }
        let (head, prev_hash) = log_head(tx, &author.origin)?;
        let previous = previous.map(parse_vector).transpose()?;
        let vector = next_vector(previous.as_ref(), &author.origin, head + 1);
        Ok(Stamp { lamport, log: Some(LogPosition { seq: head + 1, prev_hash, vector }) })
    }

    fn vector_text(&self) -> String {
        self.log.as_ref().map_or_else(|| "{}".to_string(), |l| vector_text(&l.vector))
    }
}

pub(crate) fn vector_text(vector: &VersionVector) -> String {
    serde_json::to_string(vector).expect("a version vector serialises")
}

pub(crate) fn parse_vector(text: &str) -> Result<VersionVector> {
    serde_json::from_str(text).map_err(|_| StoreError::SchemaMismatch(format!("bad version vector {text:?}")))
}

fn row_vector(tx: &Transaction, table: Table, id: &RowId) -> Result<String> {
    Ok(tx
        .prepare_cached(&format!("SELECT vv FROM {} WHERE id = ?1", table.name()))?
        .query_row([id.as_str()], |r| r.get(0))?)
}

/// A row about to be inserted: its system columns.
pub(crate) struct NewRow<'a> {
    pub id: &'a RowId,
    pub origin: &'a str,
    pub lamport: Lamport,
    pub created_at: &'a str,
    pub updated_at: &'a str,
    pub deleted_at: Option<&'a str>,
    pub vector: String,
    pub version_seq: Option<u64>,
}

/// SQL text that depends only on the table, built once per table (the
/// statement cache is keyed by the text; building it for every row showed
/// in a catch-up's profile).
pub(crate) fn per_table(cache: &'static LazyLock<Vec<String>>, table: Table) -> &'static str {
    &cache[Table::ALL.iter().position(|t| *t == table).expect("every table is in Table::ALL")]
}

static INSERT_ROW: LazyLock<Vec<String>> = LazyLock::new(|| {
    Table::ALL
        .iter()
        .map(|table| {
            let names: Vec<&str> = table.fields().iter().map(|f| f.name).collect();
            format!(
                "INSERT INTO {} (id, origin, lamport, created_at, updated_at, deleted_at, vv, version_seq, {})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, {})",
                table.name(),
                names.join(", "),
                (0..names.len()).map(|i| format!("?{}", i + 9)).collect::<Vec<_>>().join(", ")
            )
        })
        .collect()
});

static OVERWRITE_ROW: LazyLock<Vec<String>> = LazyLock::new(|| {
    Table::ALL
        .iter()
        .map(|table| {
            let sets: Vec<String> =
                table.fields().iter().enumerate().map(|(i, f)| format!("{} = ?{}", f.name, i + 9)).collect();
            format!(
                "UPDATE {} SET origin = ?2, lamport = ?3, updated_at = ?4, deleted_at = ?5,
                    created_at = CASE WHEN ?6 IS NULL THEN created_at ELSE ?6 END, vv = ?7, version_seq = ?8, {}
                 WHERE id = ?1",
                table.name(),
                sets.join(", ")
            )
        })
        .collect()
});

pub(crate) fn insert_row(tx: &Transaction, table: Table, row: &NewRow, fields: &Fields) -> Result<()> {
    let sql = per_table(&INSERT_ROW, table);
    let mut values: Vec<rusqlite::types::Value> = vec![
        row.id.to_string().into(),
        row.origin.to_string().into(),
        (row.lamport.0 as i64).into(),
        row.created_at.to_string().into(),
        row.updated_at.to_string().into(),
        row.deleted_at.map(str::to_string).into(),
        row.vector.clone().into(),
        row.version_seq.map(|s| s as i64).into(),
    ];
    values.extend(table.fields().iter().map(|f| to_sql(f.kind, fields.get(f.name).unwrap_or(&Value::Null))));
    tx.prepare_cached(sql)?.execute(params_from_iter(values))?;
    Ok(())
}

/// Overwrites every field of row `id`, plus its stamps and version.
#[allow(clippy::too_many_arguments)]
fn write_row(
    tx: &Transaction,
    table: Table,
    id: &RowId,
    fields: &Fields,
    origin: &str,
    stamp: &Stamp,
    now: &str,
    deleted_at: Option<&str>,
    created_at: Option<&str>,
) -> Result<()> {
    let row = NewRow {
        id,
        origin,
        lamport: stamp.lamport,
        created_at: created_at.unwrap_or_default(),
        updated_at: now,
        deleted_at,
        vector: stamp.vector_text(),
        version_seq: stamp.log.as_ref().map(|l| l.seq),
    };
    overwrite_row(tx, table, &row, created_at.is_none(), fields)
}

/// Overwrites row `row.id` with `row` and `fields`; keeps the stored
/// `created_at` when `keep_created` is set.
pub(crate) fn overwrite_row(
    tx: &Transaction,
    table: Table,
    row: &NewRow,
    keep_created: bool,
    fields: &Fields,
) -> Result<()> {
    let sql = per_table(&OVERWRITE_ROW, table);
    let mut values: Vec<rusqlite::types::Value> = vec![
        row.id.to_string().into(),
        row.origin.to_string().into(),
        (row.lamport.0 as i64).into(),
        row.updated_at.to_string().into(),
        row.deleted_at.map(str::to_string).into(),
        (!keep_created).then(|| row.created_at.to_string()).into(),
        row.vector.clone().into(),
        row.version_seq.map(|s| s as i64).into(),
    ];
    values.extend(table.fields().iter().map(|f| to_sql(f.kind, fields.get(f.name).unwrap_or(&Value::Null))));
    let changed = tx.prepare_cached(sql)?.execute(params_from_iter(values))?;
    assert_eq!(changed, 1, "a row overwrite must hit exactly the row it was given");
    Ok(())
}

/// Advances the persisted Lamport clock by one tick and returns the new stamp.
fn advance_clock(tx: &Transaction) -> Result<Lamport> {
    let current: i64 = tx.prepare_cached("SELECT lamport FROM clock WHERE id = 1")?.query_row([], |r| r.get(0))?;
    let next = Lamport(current as u64).tick();
    tx.prepare_cached("UPDATE clock SET lamport = ?1 WHERE id = 1")?.execute([next.0 as i64])?;
    Ok(next)
}

/// Reads the row back as written and, unless it is local, appends its log
/// entry at the position the stamp took, chained and signed.
fn finish(
    tx: &Transaction,
    author: &Author,
    table: Table,
    op: Op,
    id: &RowId,
    stamp: &Stamp,
    now: &str,
) -> Result<Map<String, Value>> {
    let sql = format!("SELECT {} FROM {} t WHERE t.id = ?1", select_list(table, "t"), table.name());
    let written = tx.prepare_cached(&sql)?.query_row([id.as_str()], |r| row::row_json(table, r, 0))?;
    assert_eq!(written["lamport"], Value::from(stamp.lamport.0), "row and entry must carry the same stamp");
    let Some(log) = &stamp.log else { return Ok(written) };
    let entry = Entry {
        origin: author.origin.clone(),
        seq: log.seq,
        lamport: stamp.lamport,
        prev_hash: log.prev_hash,
        table,
        op,
        row_id: id.clone(),
        vector: log.vector.clone(),
        row: Value::Object(written.clone()).to_string(),
    };
    let hash = entry.hash();
    let signature = author.key.sign(&hash).to_bytes();
    insert_change(tx, &entry, &hash, &signature, now)?;
    let version = Version {
        origin: entry.origin,
        seq: entry.seq,
        lamport: entry.lamport,
        vector: entry.vector,
        epoch: fence::epoch_of(table, &written),
        row: String::new(),
    };
    settle_conflicts(tx, table, id, &version, now)?;
    Ok(written)
}

/// Appends a verified or freshly signed entry, whose hash is `hash`, to the
/// log table.
pub(crate) fn insert_change(
    tx: &Transaction,
    entry: &Entry,
    hash: &[u8; 32],
    signature: &[u8; 64],
    now: &str,
) -> Result<()> {
    debug_assert_eq!(*hash, entry.hash(), "the hash stored is the entry's");
    tx.prepare_cached(
        "INSERT INTO changes (table_name, op, row_id, row_json, lamport, origin, created_at,
                              origin_seq, prev_hash, hash, signature, vector)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(rusqlite::params![
        entry.table.name(),
        entry.op.as_str(),
        entry.row_id.as_str(),
        entry.row,
        entry.lamport.0 as i64,
        entry.origin,
        now,
        entry.seq as i64,
        entry.prev_hash.as_slice(),
        hash.as_slice(),
        signature.as_slice(),
        vector_text(&entry.vector),
    ])?;
    Ok(())
}

/// The origin's last sequence number and entry hash (0 and [`GENESIS`] for none).
pub(crate) fn log_head(tx: &Transaction, origin: &str) -> Result<(u64, [u8; 32])> {
    let head: Option<(i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT origin_seq, hash FROM changes WHERE origin = ?1 AND origin_seq IS NOT NULL
             ORDER BY origin_seq DESC LIMIT 1",
        )?
        .query_row([origin], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match head {
        Some((seq, hash)) => {
            let hash =
                hash.try_into().map_err(|_| StoreError::Damaged(format!("a malformed hash of {origin}'s log")))?;
            (seq as u64, hash)
        }
        None => (0, GENESIS),
    })
}

/// Signs, in order, this origin's change records that have no log position
/// yet (databases from before the signed log or before version vectors), and
/// gives each row the vector and version of its latest entry.
pub(crate) fn sign_unsigned(writer: &mut DoorConnection, author: &Author) -> Result<()> {
    writer.with_door_open(|conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let unsigned: Vec<(i64, String, String, String, String, i64)> = {
            let mut stmt = tx.prepare(
                "SELECT seq, table_name, op, row_id, row_json, lamport FROM changes
                 WHERE origin = ?1 AND origin_seq IS NULL ORDER BY seq",
            )?;
            stmt.query_map([&author.origin], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?
            .collect::<Result<_, _>>()?
        };
        for (local, table, op, row_id, row, lamport) in unsigned {
            let (seq, prev_hash) = log_head(&tx, &author.origin)?;
            let corrupt = || StoreError::SchemaMismatch(format!("change {local} cannot be signed"));
            let table = Table::parse(&table).ok_or_else(corrupt)?;
            let row_id = RowId::parse(&row_id).ok_or_else(corrupt)?;
            let previous = parse_vector(&row_vector(&tx, table, &row_id)?)?;
            let vector = next_vector(Some(&previous), &author.origin, seq + 1);
            let entry = Entry {
                origin: author.origin.clone(),
                seq: seq + 1,
                lamport: Lamport(lamport as u64),
                prev_hash,
                table,
                op: Op::parse(&op).ok_or_else(corrupt)?,
                row_id,
                vector,
                row,
            };
            let hash = entry.hash();
            tx.execute(
                "UPDATE changes SET origin_seq = ?2, prev_hash = ?3, hash = ?4, signature = ?5, vector = ?6
                 WHERE seq = ?1",
                rusqlite::params![
                    local,
                    entry.seq as i64,
                    entry.prev_hash.as_slice(),
                    hash.as_slice(),
                    author.key.sign(&hash).to_bytes().as_slice(),
                    vector_text(&entry.vector),
                ],
            )?;
            tx.execute(
                &format!("UPDATE {} SET vv = ?2, version_seq = ?3 WHERE id = ?1", table.name()),
                rusqlite::params![entry.row_id.as_str(), vector_text(&entry.vector), entry.seq as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    })
}

/// Finds a live row by id, or by the table's unique field.
pub(crate) fn find_live(conn: &rusqlite::Connection, table: Table, key: &str) -> Result<(RowId, Map<String, Value>)> {
    let key = key.trim();
    let by = match (RowId::parse(key), table.natural_key()) {
        (Some(_), _) => "id",
        (None, Some(field)) => field.name,
        (None, None) => {
            return Err(StoreError::NotFound { what: table.singular(), key: key.to_string() });
        }
    };
    let lookup = RowId::parse(key).map_or_else(|| key.to_string(), |id| id.to_string());
    let sql = format!(
        "SELECT {} FROM {} t WHERE t.{by} = ?1 AND t.deleted_at IS NULL ORDER BY t.id LIMIT 1",
        select_list(table, "t"),
        table.name()
    );
    let row = conn.prepare_cached(&sql)?.query_row([lookup], |r| row::row_json(table, r, 0)).optional()?;
    let row = row.ok_or_else(|| StoreError::NotFound { what: table.singular(), key: key.to_string() })?;
    let stored_id = row["id"].as_str().unwrap_or_default();
    let id = RowId::parse(stored_id)
        .ok_or_else(|| StoreError::Damaged(format!("a malformed id {stored_id:?} in {}", table.name())))?;
    Ok((id, row))
}

/// Replaces a project reference (id or name) with the project's id.
fn resolve_project(tx: &Transaction, table: Table, fields: &mut Fields) -> Result<()> {
    for field in table.fields().iter().filter(|f| f.kind == FieldKind::ProjectRef) {
        if let Some(Value::String(reference)) = fields.get(field.name) {
            let id = resolve_project_ref(tx, reference)?;
            fields.insert(field.name, Value::String(id));
        }
    }
    Ok(())
}

pub(crate) fn resolve_project_ref(conn: &rusqlite::Connection, reference: &str) -> Result<String> {
    find_live(conn, Table::Projects, reference).map(|(id, _)| id.to_string()).map_err(|e| match e {
        StoreError::NotFound { key, .. } => StoreError::NotFound { what: "project", key },
        other => other,
    })
}

/// Refuses a second live row with the same value in the table's unique field.
fn check_unique(tx: &Transaction, table: Table, fields: &Fields, own_id: Option<&RowId>) -> Result<()> {
    let Some(field) = table.natural_key() else { return Ok(()) };
    let Some(Value::String(value)) = fields.get(field.name) else { return Ok(()) };
    let sql =
        format!("SELECT id FROM {} WHERE {} = ?1 AND deleted_at IS NULL AND id IS NOT ?2", table.name(), field.name);
    let existing: Option<String> = tx
        .prepare_cached(&sql)?
        .query_row(rusqlite::params![value, own_id.map(RowId::as_str)], |r| r.get(0))
        .optional()?;
    match existing {
        Some(id) => Err(StoreError::Duplicate(format!(
            "a {} with {} {value:?} already exists (id {id}); update it or choose another {}",
            table.singular(),
            field.name,
            field.name
        ))),
        None => Ok(()),
    }
}
