//! Converting between table rows and their JSON form.
//!
//! A row's JSON form is what tools return and what the change record carries:
//! `id`, every field of the table (labels as arrays, flags as booleans), then
//! `created_at`, `updated_at`, `origin`, `lamport`, and `deleted_at` for a
//! tombstone.

use rusqlite::types::ValueRef;
use serde_json::{Map, Value};

use roost_core::{FieldKind, Table};

/// The SELECT list for `table`, prefixed with `alias.`.
pub(crate) fn select_list(table: Table, alias: &str) -> String {
    let mut cols = vec!["id", "origin", "lamport", "created_at", "updated_at", "deleted_at"];
    cols.extend(table.fields().iter().map(|f| f.name));
    cols.iter().map(|c| format!("{alias}.{c}")).collect::<Vec<_>>().join(", ")
}

/// Number of columns [`select_list`] yields.
pub(crate) fn column_count(table: Table) -> usize {
    6 + table.fields().len()
}

/// Reads the columns of [`select_list`] starting at `offset` into JSON.
pub(crate) fn row_json(table: Table, row: &rusqlite::Row, offset: usize) -> rusqlite::Result<Map<String, Value>> {
    let mut out = Map::new();
    out.insert("id".into(), Value::String(row.get(offset)?));
    for (i, field) in table.fields().iter().enumerate() {
        let value = match row.get_ref(offset + 6 + i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) if field.kind == FieldKind::Flag => Value::Bool(n != 0),
            ValueRef::Integer(n) => Value::from(n),
            ValueRef::Real(f) => Value::from(f),
            ValueRef::Text(t) => {
                let text = String::from_utf8_lossy(t).into_owned();
                if field.kind == FieldKind::Labels {
                    serde_json::from_str(&text).unwrap_or(Value::Null)
                } else {
                    Value::String(text)
                }
            }
            ValueRef::Blob(_) => Value::Null,
        };
        out.insert(field.name.into(), value);
    }
    out.insert("created_at".into(), Value::String(row.get(offset + 3)?));
    out.insert("updated_at".into(), Value::String(row.get(offset + 4)?));
    out.insert("origin".into(), Value::String(row.get(offset + 1)?));
    out.insert("lamport".into(), Value::from(row.get::<_, i64>(offset + 2)?));
    if let Some(deleted) = row.get::<_, Option<String>>(offset + 5)? {
        out.insert("deleted_at".into(), Value::String(deleted));
    }
    Ok(out)
}

/// The SQL value stored for a validated field value.
pub(crate) fn to_sql(kind: FieldKind, value: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as Sql;
    match value {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Number(n) => n.as_i64().map(Sql::Integer).unwrap_or_else(|| Sql::Real(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => Sql::Text(s.clone()),
        Value::Array(_) | Value::Object(_) => {
            debug_assert!(kind == FieldKind::Labels, "only labels are stored as JSON");
            Sql::Text(value.to_string())
        }
    }
}
