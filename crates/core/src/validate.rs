//! Checking and normalising field values before they reach a table.
//!
//! Input arrives as loosely typed JSON from MCP clients, the CLI and the HTTP
//! API. Validation turns it into one canonical form (trimmed strings, label
//! arrays, integers in range) so every entry point stores the same bytes for
//! the same intent, and every refusal says which field was wrong and why.
//!
//! **Control characters.** A single-line field (every kind but
//! [`FieldKind::Text`]: categories, tags, names, titles, keys, URLs, project
//! references) names or labels something: people type it, tools filter and
//! match on it, tables show it. A control character there (C0, DEL or C1:
//! NUL, ESC, tab, …) is never meant, makes two labels that look alike differ,
//! and carries a terminal escape into every listing, so it is refused.
//! Free text (`Text`: content, context, bodies, notes, values) is kept as
//! written, newlines, tabs and other control characters included: pasted
//! terminal output keeps its colour codes, source code its form feeds. It is
//! shown only through surfaces that neutralise them (the CLI escapes every
//! control character, the Nest escapes HTML) and given back faithfully as
//! JSON. Only NUL is refused there: it is never text, and SQLite leaves
//! strings with NUL undefined (FTS5's `snippet()` stops at the first one).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::schema::{Field, FieldKind, MAX_LABEL_CHARS, MAX_LABELS, MAX_TEXT_BYTES, Table};

/// Validated field values of one row (or of a patch), by field name.
pub type Fields = BTreeMap<&'static str, Value>;

/// Why input was refused. Displays as one line naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ValidationError {}

fn field_error(field: &Field, message: impl Into<String>) -> ValidationError {
    ValidationError { field: Some(field.name.to_string()), message: message.into() }
}

fn lookup(table: Table, name: &str) -> Result<&'static Field, ValidationError> {
    table.field(name).ok_or_else(|| {
        let known: Vec<_> = table.fields().iter().map(|f| f.name).collect();
        ValidationError {
            field: Some(name.to_string()),
            message: format!("unknown field for {}; known fields: {}", table.singular(), known.join(", ")),
        }
    })
}

/// Validates the fields of a new row, applying defaults and derived values.
pub fn validate_create(table: Table, input: &Map<String, Value>) -> Result<Fields, ValidationError> {
    let mut fields = Fields::new();
    for (name, value) in input {
        let field = lookup(table, name)?;
        if !value.is_null() {
            fields.insert(field.name, normalise(field, value)?);
        }
    }
    if table == Table::BlogPosts
        && !fields.contains_key("slug")
        && let Some(Value::String(title)) = fields.get("title")
    {
        let slug = slugify(title);
        if slug.is_empty() {
            return Err(ValidationError {
                field: Some("slug".into()),
                message: "cannot be made from this title; give a slug (lowercase letters, digits, dashes)".into(),
            });
        }
        fields.insert("slug", Value::String(slug));
    }
    for field in table.fields() {
        if fields.contains_key(field.name) {
            continue;
        }
        if let Some(default) = field.default {
            fields.insert(field.name, normalise(field, &Value::String(default.to_string()))?);
        } else if field.required {
            return Err(field_error(field, format!("is required ({})", field.doc)));
        }
    }
    Ok(fields)
}

/// Validates a partial update. `null` clears an optional field.
pub fn validate_patch(table: Table, input: &Map<String, Value>) -> Result<Fields, ValidationError> {
    if input.is_empty() {
        return Err(ValidationError { field: None, message: "nothing to update: give at least one field".into() });
    }
    let mut fields = Fields::new();
    for (name, value) in input {
        let field = lookup(table, name)?;
        if field.immutable {
            return Err(field_error(field, "cannot be changed after creation; delete and create instead"));
        }
        let value = if value.is_null() {
            if field.required {
                return Err(field_error(field, "is required and cannot be cleared"));
            }
            Value::Null
        } else {
            normalise(field, value)?
        };
        fields.insert(field.name, value);
    }
    Ok(fields)
}

/// Fills values that follow from others once the row's final state is known:
/// a blog post that becomes published gets `published_at = now` unless given.
pub fn derive(table: Table, row: &mut Fields, now: &str) {
    if table == Table::BlogPosts
        && row.get("status").and_then(Value::as_str) == Some("published")
        && row.get("published_at").is_none_or(Value::is_null)
    {
        row.insert("published_at", Value::String(now.to_string()));
    }
}

/// Normalises one value for `field`, or says why it is not acceptable.
pub fn normalise(field: &Field, value: &Value) -> Result<Value, ValidationError> {
    match field.kind {
        FieldKind::Line(max) => {
            let s = text(field, value)?;
            if s.contains(['\n', '\r']) {
                return Err(field_error(field, "must be a single line"));
            }
            printable(field, s)?;
            if s.chars().count() > max {
                return Err(field_error(field, format!("is longer than {max} characters")));
            }
            non_empty(field, s)
        }
        FieldKind::Text => {
            let s = string(field, value)?;
            if s.len() > MAX_TEXT_BYTES {
                return Err(field_error(field, format!("is larger than {} KiB", MAX_TEXT_BYTES / 1024)));
            }
            if s.contains('\0') {
                return Err(field_error(
                    field,
                    "contains a NUL character (U+0000); remove it: text takes any character but NUL",
                ));
            }
            if s.trim().is_empty() {
                return Err(field_error(field, "must not be empty"));
            }
            Ok(Value::String(s.to_string()))
        }
        FieldKind::Int { min, max } => {
            let n = match value {
                // A whole float is accepted only within i64's range: the cast
                // saturates, and would turn 1e30 into i64::MAX.
                Value::Number(n) => n.as_i64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && (i64::MIN as f64..i64::MAX as f64).contains(f))
                        .map(|f| f as i64)
                }),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if (min..=max).contains(&n) => Ok(Value::from(n)),
                _ => Err(field_error(field, format!("must be an integer from {min} to {max} (got {value})"))),
            }
        }
        FieldKind::Labels => labels(field, value),
        FieldKind::Choice(options) => {
            let s = text(field, value)?.to_ascii_lowercase();
            if options.contains(&s.as_str()) {
                Ok(Value::String(s))
            } else {
                Err(field_error(field, format!("must be one of {} (got {s:?})", options.join(", "))))
            }
        }
        FieldKind::Flag => match value {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::String(s) if matches!(s.trim(), "true" | "yes" | "1") => Ok(Value::Bool(true)),
            Value::String(s) if matches!(s.trim(), "false" | "no" | "0") => Ok(Value::Bool(false)),
            _ => Err(field_error(field, format!("must be true or false (got {value})"))),
        },
        FieldKind::Date => {
            let s = text(field, value)?;
            if is_date(s) {
                Ok(Value::String(s.to_string()))
            } else {
                Err(field_error(
                    field,
                    format!("must be YYYY, YYYY-MM, YYYY-MM-DD or an RFC 3339 date-time (got {s:?})"),
                ))
            }
        }
        FieldKind::Url => {
            let s = text(field, value)?;
            printable(field, s)?;
            let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
            match rest {
                Some(rest)
                    if !rest.is_empty()
                        && !rest.starts_with('/')
                        && !s.contains(char::is_whitespace)
                        && s.len() <= 2048 =>
                {
                    Ok(Value::String(s.to_string()))
                }
                _ => Err(field_error(field, format!("must be an http:// or https:// URL (got {s:?})"))),
            }
        }
        FieldKind::Slug => {
            let s = text(field, value)?;
            let valid = (1..=100).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-');
            if valid {
                Ok(Value::String(s.to_string()))
            } else {
                Err(field_error(
                    field,
                    format!("must be lowercase letters, digits and inner dashes, at most 100 (got {s:?})"),
                ))
            }
        }
        FieldKind::ProjectRef => {
            let s = text(field, value)?;
            printable(field, s)?;
            if s.chars().count() > 200 {
                return Err(field_error(field, "is longer than 200 characters"));
            }
            non_empty(field, s)
        }
    }
}

fn string<'a>(field: &Field, value: &'a Value) -> Result<&'a str, ValidationError> {
    value.as_str().ok_or_else(|| field_error(field, format!("must be a string (got {value})")))
}

fn text<'a>(field: &Field, value: &'a Value) -> Result<&'a str, ValidationError> {
    string(field, value).map(str::trim)
}

/// Refuses a control character (C0, DEL, C1) in a single-line value.
fn printable(field: &Field, s: &str) -> Result<(), ValidationError> {
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(field_error(
            field,
            format!(
                "contains the control character U+{:04X}; remove it: this field takes one line of printable text",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

fn non_empty(field: &Field, s: &str) -> Result<Value, ValidationError> {
    if s.is_empty() { Err(field_error(field, "must not be empty")) } else { Ok(Value::String(s.to_string())) }
}

/// Labels come as a JSON array or a comma-separated string; the result is
/// trimmed, de-duplicated in first-seen order, without empty entries.
fn labels(field: &Field, value: &Value) -> Result<Value, ValidationError> {
    let raw: Vec<&str> = match value {
        Value::String(s) => s.split(',').collect(),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| field_error(field, format!("entries must be strings (got {v})"))))
            .collect::<Result<_, _>>()?,
        _ => return Err(field_error(field, "must be a list of strings or a comma-separated string")),
    };
    let mut out: Vec<String> = Vec::new();
    for label in raw.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        printable(field, label)?;
        if label.chars().count() > MAX_LABEL_CHARS {
            return Err(field_error(field, format!("entry {label:?} is longer than {MAX_LABEL_CHARS} characters")));
        }
        if !out.iter().any(|l| l == label) {
            out.push(label.to_string());
        }
    }
    if out.len() > MAX_LABELS {
        return Err(field_error(field, format!("has more than {MAX_LABELS} entries")));
    }
    Ok(Value::Array(out.into_iter().map(Value::String).collect()))
}

fn is_date(s: &str) -> bool {
    let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let date_ok = match parts.as_slice() {
        [y] => digits(y, 4),
        [y, m] => digits(y, 4) && digits(m, 2) && in_range(m, 1, 12),
        [y, m, d] => digits(y, 4) && digits(m, 2) && digits(d, 2) && in_range(m, 1, 12) && in_range(d, 1, 31),
        _ => false,
    };
    let time_ok = time.is_none_or(|t| {
        parts.len() == 3
            && t.len() >= 6
            && t.as_bytes()[2] == b':'
            && t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b':' | b'.' | b'Z' | b'z' | b'+' | b'-'))
    });
    date_ok && time_ok
}

fn in_range(s: &str, lo: u32, hi: u32) -> bool {
    s.parse::<u32>().is_ok_and(|n| (lo..=hi).contains(&n))
}

/// Makes a slug from a title: ASCII letters and digits kept, the rest folded
/// into single dashes, at most 80 characters.
pub fn slugify(title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 80 {
            break;
        }
    }
    slug.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn create_applies_defaults_and_normalises() {
        let f = validate_create(
            Table::Memories,
            &obj(json!({"content": "  likes tea ", "tags": "a, b,a,", "importance": "7"})),
        )
        .unwrap();
        assert_eq!(f["content"], json!("  likes tea "));
        assert_eq!(f["tags"], json!(["a", "b"]));
        assert_eq!(f["importance"], json!(7));
        assert_eq!(f["category"], json!("general"));
    }

    #[test]
    fn refusals_name_the_field() {
        let err = validate_create(Table::Memories, &obj(json!({"content": "x", "importance": 11}))).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("importance"));
        assert!(err.to_string().contains("from 1 to 10"));
        let err = validate_create(Table::Memories, &obj(json!({"importance": 3}))).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("content"));
        let err = validate_create(Table::Notes, &obj(json!({"body": "x", "colour": "red"}))).unwrap_err();
        assert!(err.to_string().contains("unknown field"));
        let err = validate_patch(Table::Settings, &obj(json!({"key": "other"}))).unwrap_err();
        assert!(err.to_string().contains("cannot be changed"));
        assert!(validate_patch(Table::Notes, &Map::new()).is_err());
        assert!(validate_patch(Table::Notes, &obj(json!({"body": null}))).is_err());
        let epoch = |e: Value| validate_create(Table::AgentState, &obj(json!({"key": "k", "value": "v", "epoch": e})));
        assert_eq!(epoch(json!(3.0)).unwrap()["epoch"], json!(3));
        for beyond in [json!(u64::MAX), json!(1e30), json!(0)] {
            assert_eq!(epoch(beyond).unwrap_err().field.as_deref(), Some("epoch"), "out of range, not saturated");
        }
    }

    #[test]
    fn single_line_fields_refuse_control_characters_naming_the_field() {
        let memory = |v: Value| validate_create(Table::Memories, &obj(v));
        let cases = [
            (Table::Memories, json!({"content": "x", "category": "work\u{1b}[2J"}), "category"),
            (Table::Memories, json!({"content": "x", "tags": ["ok", "bad\u{0}"]}), "tags"),
            (Table::Memories, json!({"content": "x", "tags": "a,b\tc"}), "tags"),
            (Table::Memories, json!({"content": "x", "source": "a\u{9b}31m"}), "source"),
            (Table::Memories, json!({"content": "x", "project": "p\u{7f}"}), "project"),
            (Table::Projects, json!({"name": "roost\u{1b}]52;c;eA==\u{7}"}), "name"),
            (Table::Contacts, json!({"name": "Ada\u{0}"}), "name"),
            (Table::Sources, json!({"title": "t", "url": "https://a.example/\u{1b}"}), "url"),
            (Table::Settings, json!({"key": "ui\u{1b}theme", "value": "v"}), "key"),
            (Table::Notes, json!({"title": "a\u{8}b", "body": "x"}), "title"),
        ];
        for (table, input, field) in cases {
            let err = validate_create(table, &obj(input.clone())).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{input}");
            assert!(err.to_string().contains("control character U+"), "{err}");
            assert!(!err.to_string().chars().any(char::is_control), "the error itself is printable: {err:?}");
        }
        let err = validate_patch(Table::Memories, &obj(json!({"category": "a\u{1b}"}))).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("category"));
        assert!(memory(json!({"content": "x", "category": "Café ☕", "tags": ["naïve"]})).is_ok());
    }

    #[test]
    fn text_keeps_control_characters_but_nul() {
        let content = "line one\n\tcoloured \u{1b}[31mred\u{1b}[0m\r\n\u{c}page two";
        let f = validate_create(Table::Memories, &obj(json!({"content": content}))).unwrap();
        assert_eq!(f["content"], json!(content), "stored exactly as written");
        let err = validate_create(Table::Memories, &obj(json!({"content": "a\u{0}b"}))).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("content"));
        assert!(err.to_string().contains("NUL"), "{err}");
        let err = validate_patch(Table::Notes, &obj(json!({"body": "\u{0}"}))).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("body"));
    }

    #[test]
    fn blog_slug_comes_from_title_and_publish_stamps_time() {
        let mut f =
            validate_create(Table::BlogPosts, &obj(json!({"title": "Hello, Wörld! 2026", "status": "published"})))
                .unwrap();
        assert_eq!(f["slug"], json!("hello-w-rld-2026"));
        derive(Table::BlogPosts, &mut f, "2026-11-23T10:00:00.000Z");
        assert_eq!(f["published_at"], json!("2026-11-23T10:00:00.000Z"));
    }

    #[test]
    fn dates_urls_and_flags() {
        let source = |v: Value| validate_create(Table::Sources, &obj(v));
        assert!(source(json!({"title": "t", "published": "2024-02-29"})).is_ok());
        assert!(source(json!({"title": "t", "published": "2024-13"})).is_err());
        assert!(source(json!({"title": "t", "published": "2024-01-01T10:00:00Z"})).is_ok());
        assert!(source(json!({"title": "t", "url": "ftp://x"})).is_err());
        assert!(source(json!({"title": "t", "url": "https://example.org/a"})).is_ok());
        let s = validate_create(Table::Settings, &obj(json!({"key": "k", "value": "v", "local": "yes"}))).unwrap();
        assert_eq!(s["local"], json!(true));
    }
}
