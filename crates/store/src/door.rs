//! The write door: the only code that writes synced tables.
//!
//! [`Store::write`] takes a [`Mutation`] from any entry point (MCP over HTTP or
//! stdio, the CLI, the JSON API) and, in one `BEGIN IMMEDIATE` transaction:
//! validates it with `roost-core`, writes the row, advances the persisted
//! Lamport clock and appends one change record. Either all of that commits or
//! none of it does. Deletes write tombstones, never remove rows.

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params_from_iter};
use serde_json::{Map, Value};

use ed25519_dalek::{Signer, SigningKey};
use roost_core::validate::{self, Fields};
use roost_core::{Entry, FieldKind, GENESIS, Lamport, Op, RowId, Table};

use crate::connection::DoorConnection;
use crate::row::{select_list, to_sql};
use crate::{Result, Store, StoreError, now_text, now_unix_ms, row};

/// Who writes through this door: the instance's id and the machine key that
/// signs its log entries.
pub(crate) struct Author {
    pub origin: String,
    pub key: SigningKey,
}

/// One change a caller asks for. `key` is a row id, or for tables with a
/// unique field (project name, blog slug, setting key) that field's value.
#[derive(Debug, Clone)]
pub enum Mutation {
    Create { table: Table, fields: Map<String, Value> },
    Update { table: Table, key: String, patch: Map<String, Value> },
    Delete { table: Table, key: String },
}

impl Store {
    /// Applies `mutation` and returns the row as written (for a delete, the
    /// tombstone). An update that changes nothing writes nothing.
    pub fn write(&self, mutation: Mutation) -> Result<Map<String, Value>> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writer.with_door_open(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = match mutation {
                Mutation::Create { table, fields } => create(&tx, &self.author, table, &fields)?,
                Mutation::Update { table, key, patch } => update(&tx, &self.author, table, &key, &patch)?,
                Mutation::Delete { table, key } => delete(&tx, &self.author, table, &key)?,
            };
            tx.commit()?;
            Ok(row)
        })
    }
}

fn create(tx: &Transaction, author: &Author, table: Table, input: &Map<String, Value>) -> Result<Map<String, Value>> {
    let mut fields = validate::validate_create(table, input)?;
    resolve_project(tx, table, &mut fields)?;
    check_unique(tx, table, &fields, None)?;
    let now = now_text();
    validate::derive(table, &mut fields, &now);

    let id = match (table.id_from_key(), table.natural_key()) {
        (true, Some(key)) => RowId::named(table.name(), fields[key.name].as_str().unwrap_or_default()),
        _ => RowId::v7(now_unix_ms(), rand::random()),
    };
    let lamport = advance_clock(tx)?;
    let tombstone_exists = tx
        .prepare_cached(&format!("SELECT 1 FROM {} WHERE id = ?1", table.name()))?
        .query_row([id.as_str()], |_| Ok(()))
        .optional()?
        .is_some();
    if tombstone_exists {
        // A name-based id whose row was deleted: the new row takes its place.
        write_row(tx, table, &id, &fields, lamport, &author.origin, &now, None, Some(&now))?;
    } else {
        let names: Vec<&str> = table.fields().iter().map(|f| f.name).collect();
        let sql = format!(
            "INSERT INTO {} (id, origin, lamport, created_at, updated_at, {}) VALUES (?1, ?2, ?3, ?4, ?4, {})",
            table.name(),
            names.join(", "),
            (0..names.len()).map(|i| format!("?{}", i + 5)).collect::<Vec<_>>().join(", ")
        );
        let mut values: Vec<rusqlite::types::Value> =
            vec![id.to_string().into(), author.origin.clone().into(), (lamport.0 as i64).into(), now.clone().into()];
        values.extend(table.fields().iter().map(|f| to_sql(f.kind, fields.get(f.name).unwrap_or(&Value::Null))));
        tx.prepare_cached(&sql)?.execute(params_from_iter(values))?;
    }
    append_change(tx, author, table, Op::Insert, &id, lamport, &now)
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
    let now = now_text();
    validate::derive(table, &mut fields, &now);
    if fields == before {
        return Ok(current);
    }
    check_unique(tx, table, &fields, Some(&id))?;
    let lamport = advance_clock(tx)?;
    write_row(tx, table, &id, &fields, lamport, &author.origin, &now, None, None)?;
    append_change(tx, author, table, Op::Update, &id, lamport, &now)
}

fn delete(tx: &Transaction, author: &Author, table: Table, key: &str) -> Result<Map<String, Value>> {
    let (id, _) = find_live(tx, table, key)?;
    let now = now_text();
    let lamport = advance_clock(tx)?;
    // A tombstone keeps the row's identity and drops its content.
    write_row(tx, table, &id, &Fields::new(), lamport, &author.origin, &now, Some(&now), None)?;
    append_change(tx, author, table, Op::Delete, &id, lamport, &now)
}

/// Overwrites every field of row `id`, plus its stamps.
#[allow(clippy::too_many_arguments)]
fn write_row(
    tx: &Transaction,
    table: Table,
    id: &RowId,
    fields: &Fields,
    lamport: Lamport,
    origin: &str,
    now: &str,
    deleted_at: Option<&str>,
    created_at: Option<&str>,
) -> Result<()> {
    let sets: Vec<String> =
        table.fields().iter().enumerate().map(|(i, f)| format!("{} = ?{}", f.name, i + 7)).collect();
    let sql = format!(
        "UPDATE {} SET origin = ?2, lamport = ?3, updated_at = ?4, deleted_at = ?5, created_at = coalesce(?6, created_at), {} WHERE id = ?1",
        table.name(),
        sets.join(", ")
    );
    let mut values: Vec<rusqlite::types::Value> = vec![
        id.to_string().into(),
        origin.to_string().into(),
        (lamport.0 as i64).into(),
        now.to_string().into(),
        deleted_at.map(str::to_string).into(),
        created_at.map(str::to_string).into(),
    ];
    values.extend(table.fields().iter().map(|f| to_sql(f.kind, fields.get(f.name).unwrap_or(&Value::Null))));
    let changed = tx.prepare_cached(&sql)?.execute(params_from_iter(values))?;
    assert_eq!(changed, 1, "write_row must hit exactly the row it was given");
    Ok(())
}

/// Advances the persisted Lamport clock by one tick and returns the new stamp.
fn advance_clock(tx: &Transaction) -> Result<Lamport> {
    let current: i64 = tx.prepare_cached("SELECT lamport FROM clock WHERE id = 1")?.query_row([], |r| r.get(0))?;
    let next = Lamport(current as u64).tick();
    tx.prepare_cached("UPDATE clock SET lamport = ?1 WHERE id = 1")?.execute([next.0 as i64])?;
    Ok(next)
}

/// Reads the row back as written and appends its log entry: the origin's
/// next sequence number, chained to its previous entry and signed.
fn append_change(
    tx: &Transaction,
    author: &Author,
    table: Table,
    op: Op,
    id: &RowId,
    lamport: Lamport,
    now: &str,
) -> Result<Map<String, Value>> {
    let sql = format!("SELECT {} FROM {} t WHERE t.id = ?1", select_list(table, "t"), table.name());
    let written = tx.prepare_cached(&sql)?.query_row([id.as_str()], |r| row::row_json(table, r, 0))?;
    assert_eq!(written["lamport"], Value::from(lamport.0), "row and entry must carry the same stamp");
    let (seq, prev_hash) = log_head(tx, &author.origin)?;
    let entry = Entry {
        origin: author.origin.clone(),
        seq: seq + 1,
        lamport,
        prev_hash,
        table,
        op,
        row_id: id.clone(),
        row: Value::Object(written.clone()).to_string(),
    };
    let hash = entry.hash();
    tx.prepare_cached(
        "INSERT INTO changes (table_name, op, row_id, row_json, lamport, origin, created_at,
                              origin_seq, prev_hash, hash, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(rusqlite::params![
        table.name(),
        op.as_str(),
        id.as_str(),
        entry.row,
        lamport.0 as i64,
        author.origin,
        now,
        entry.seq as i64,
        entry.prev_hash.as_slice(),
        hash.as_slice(),
        author.key.sign(&hash).to_bytes().as_slice(),
    ])?;
    Ok(written)
}

/// The origin's last sequence number and entry hash (0 and [`GENESIS`] for none).
fn log_head(tx: &Transaction, origin: &str) -> Result<(u64, [u8; 32])> {
    let head: Option<(i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT origin_seq, hash FROM changes WHERE origin = ?1 AND origin_seq IS NOT NULL
             ORDER BY origin_seq DESC LIMIT 1",
        )?
        .query_row([origin], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match head {
        Some((seq, hash)) => (seq as u64, hash.try_into().expect("stored hashes are 32 bytes")),
        None => (0, GENESIS),
    })
}

/// Signs, in order, this origin's change records written before the log was
/// signed (databases created before schema version 3).
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
            let entry = Entry {
                origin: author.origin.clone(),
                seq: seq + 1,
                lamport: Lamport(lamport as u64),
                prev_hash,
                table: Table::parse(&table).ok_or_else(corrupt)?,
                op: Op::parse(&op).ok_or_else(corrupt)?,
                row_id: RowId::parse(&row_id).ok_or_else(corrupt)?,
                row,
            };
            let hash = entry.hash();
            tx.execute(
                "UPDATE changes SET origin_seq = ?2, prev_hash = ?3, hash = ?4, signature = ?5 WHERE seq = ?1",
                rusqlite::params![
                    local,
                    entry.seq as i64,
                    entry.prev_hash.as_slice(),
                    hash.as_slice(),
                    author.key.sign(&hash).to_bytes().as_slice()
                ],
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
        "SELECT {} FROM {} t WHERE t.{by} = ?1 AND t.deleted_at IS NULL ORDER BY t.seq LIMIT 1",
        select_list(table, "t"),
        table.name()
    );
    let row = conn.prepare_cached(&sql)?.query_row([lookup], |r| row::row_json(table, r, 0)).optional()?;
    let row = row.ok_or_else(|| StoreError::NotFound { what: table.singular(), key: key.to_string() })?;
    let id = RowId::parse(row["id"].as_str().unwrap_or_default()).expect("stored ids are canonical");
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
