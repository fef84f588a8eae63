//! Versioned schema migrations, tracked in `PRAGMA user_version`.
//!
//! Each migration is fixed text once released: a later change to the data model
//! is a new migration, never an edit of an old one. `check_schema` then asserts
//! at every open that the tables carry a column for every field the core's
//! descriptors name, so the descriptors and the database cannot drift apart.

use rusqlite::{Connection, Transaction};

use roost_core::Table;

use crate::StoreError;

/// Columns every synced table has besides its fields. `seq` is a local row
/// number for the FTS index; it never leaves the instance.
const SYSTEM_COLUMNS: &str = "
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    lamport INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT";

/// The FTS index mirrors every memories row exactly (FTS5's integrity check
/// compares them); a tombstone's fields are NULL, so it adds no terms.
const V1_TABLES: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE clock (id INTEGER PRIMARY KEY CHECK (id = 1), lamport INTEGER NOT NULL);
INSERT INTO clock (id, lamport) VALUES (1, 0);

CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    row_id TEXT NOT NULL,
    row_json TEXT NOT NULL,
    lamport INTEGER NOT NULL,
    origin TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX changes_row ON changes (table_name, row_id);

CREATE TABLE memories (@SYSTEM,
    content TEXT, category TEXT, context TEXT, tags TEXT, source TEXT,
    importance INTEGER, project TEXT);
CREATE INDEX memories_updated ON memories (updated_at);
CREATE INDEX memories_importance ON memories (importance, updated_at);
CREATE INDEX memories_project ON memories (project);
CREATE INDEX memories_category ON memories (category);

CREATE TABLE memory_access (
    memory_id TEXT PRIMARY KEY,
    accessed_at TEXT NOT NULL,
    access_count INTEGER NOT NULL
);

CREATE TABLE projects (@SYSTEM, name TEXT, description TEXT, status TEXT, tags TEXT);
CREATE INDEX projects_name ON projects (name);
CREATE TABLE sources (@SYSTEM,
    title TEXT, authors TEXT, url TEXT, published TEXT, kind TEXT, project TEXT, notes TEXT, tags TEXT);
CREATE TABLE notes (@SYSTEM, title TEXT, body TEXT, project TEXT, tags TEXT);
CREATE TABLE blog_posts (@SYSTEM,
    slug TEXT, title TEXT, body TEXT, status TEXT, published_at TEXT, tags TEXT);
CREATE INDEX blog_posts_slug ON blog_posts (slug);
CREATE TABLE contacts (@SYSTEM,
    name TEXT, email TEXT, phone TEXT, organization TEXT, notes TEXT, tags TEXT);
CREATE TABLE settings (@SYSTEM, key TEXT, value TEXT, local INTEGER);
CREATE INDEX settings_key ON settings (key);

CREATE VIRTUAL TABLE memories_fts USING fts5(
    content, context, tags, source, category,
    content = 'memories', content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2');

CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, content, context, tags, source, category)
    VALUES (new.seq, new.content, new.context, new.tags, new.source, new.category);
END;
CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, context, tags, source, category)
    VALUES ('delete', old.seq, old.content, old.context, old.tags, old.source, old.category);
END;
CREATE TRIGGER memories_fts_update AFTER UPDATE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, context, tags, source, category)
    VALUES ('delete', old.seq, old.content, old.context, old.tags, old.source, old.category);
    INSERT INTO memories_fts (rowid, content, context, tags, source, category)
    VALUES (new.seq, new.content, new.context, new.tags, new.source, new.category);
END;
";

/// Tables only the write door may touch. The guard triggers call
/// `roost_write_door()`, a function each connection registers; it answers 1
/// only while the door is writing, so any other write aborts.
const GUARDED_TABLES: [&str; 8] =
    ["memories", "projects", "sources", "notes", "blog_posts", "contacts", "settings", "changes"];

/// The synced tables `v1` created, which `v4` extends; later tables come
/// with their own step, complete.
const V1_SYNCED_TABLES: [&str; 7] = ["memories", "projects", "sources", "notes", "blog_posts", "contacts", "settings"];

fn v1(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(&V1_TABLES.replace("@SYSTEM", SYSTEM_COLUMNS))?;
    GUARDED_TABLES.into_iter().try_for_each(|table| guard(tx, table, "synced tables are"))
}

/// Creates `table`'s guard triggers; the refusal reads "`what` written only
/// through the write door".
fn guard(tx: &Transaction, table: &str, what: &str) -> rusqlite::Result<()> {
    for op in ["INSERT", "UPDATE", "DELETE"] {
        tx.execute_batch(&format!(
            "CREATE TRIGGER {table}_door_{op} BEFORE {op} ON {table} WHEN roost_write_door() = 0 BEGIN
                 SELECT RAISE(ABORT, '{what} written only through the write door');
             END;",
            op = op.to_lowercase()
        ))?;
    }
    Ok(())
}

/// The instance registry: machines of this chain that this instance knows.
/// Local bookkeeping, written by `registry.rs`, not a synced table.
fn v2(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('home', 'satellite')),
            gateway_url TEXT,
            certificate TEXT NOT NULL,
            signing_key TEXT NOT NULL,
            encryption_key TEXT NOT NULL,
            last_seen TEXT,
            status TEXT NOT NULL DEFAULT 'unknown'
                CHECK (status IN ('unknown', 'online', 'syncing', 'offline', 'revoked')),
            created_at TEXT NOT NULL
        );",
    )
}

/// The change table becomes the signed log: per-origin sequence numbers, the
/// hash chain and the origin's signature. Rows written before this step are
/// signed at the next open (`Store::open`), when the machine key is at hand.
fn v3(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE changes ADD COLUMN origin_seq INTEGER;
         ALTER TABLE changes ADD COLUMN prev_hash BLOB;
         ALTER TABLE changes ADD COLUMN hash BLOB;
         ALTER TABLE changes ADD COLUMN signature BLOB;
         CREATE UNIQUE INDEX changes_origin_seq ON changes (origin, origin_seq);",
    )
}

/// Replication: each synced row records the version vector it has absorbed
/// (`vv`) and the log position of the version it shows (`version_seq`, with
/// `origin`); every table gains the `local` flag (settings had it already);
/// log entries carry their version vector; conflicts are kept; a revoked
/// origin's entries are accepted only up to the head held at revocation.
///
/// No entry had left its instance before this step, so the log is re-signed
/// in the new entry format at the next open, and entries of local settings,
/// which never belonged in it, are dropped. Runs with the door open.
fn v4(tx: &Transaction) -> rusqlite::Result<()> {
    for name in V1_SYNCED_TABLES {
        tx.execute_batch(&format!(
            "ALTER TABLE {name} ADD COLUMN vv TEXT NOT NULL DEFAULT '{{}}';
             ALTER TABLE {name} ADD COLUMN version_seq INTEGER;"
        ))?;
        if name != "settings" {
            tx.execute_batch(&format!("ALTER TABLE {name} ADD COLUMN local INTEGER;"))?;
        }
    }
    tx.execute_batch(
        "ALTER TABLE changes ADD COLUMN vector TEXT;
         DELETE FROM changes WHERE table_name = 'settings' AND row_id IN (SELECT id FROM settings WHERE local = 1);
         UPDATE changes SET origin_seq = NULL, prev_hash = NULL, hash = NULL, signature = NULL;
         ALTER TABLE instances ADD COLUMN revoked_after INTEGER;
         CREATE TABLE sync_conflicts (
            id TEXT PRIMARY KEY,
            table_name TEXT NOT NULL,
            row_id TEXT NOT NULL,
            winner_origin TEXT NOT NULL,
            winner_seq INTEGER NOT NULL,
            winner_lamport INTEGER NOT NULL,
            winner_op TEXT NOT NULL,
            winner_row TEXT NOT NULL,
            loser_origin TEXT NOT NULL,
            loser_seq INTEGER NOT NULL,
            loser_lamport INTEGER NOT NULL,
            loser_op TEXT NOT NULL,
            loser_row TEXT NOT NULL,
            loser_vector TEXT NOT NULL,
            resolved INTEGER NOT NULL DEFAULT 0,
            resolution TEXT,
            resolved_at TEXT,
            created_at TEXT NOT NULL
         );
         CREATE INDEX sync_conflicts_row ON sync_conflicts (table_name, row_id) WHERE resolved = 0;",
    )
}

/// Agent-owned state: `agent_state` rows, written only by the machine
/// holding the lease, each stamped with its epoch (no `local` column: agent
/// state always replicates); and `epoch_fence`, this instance's own record of
/// the highest epoch it has seen (the door refuses a write below it) and of
/// how many received entries were fenced. Both are guarded like the synced
/// tables, so only the store's code moves the fence.
fn v5(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(&format!(
        "CREATE TABLE agent_state ({SYSTEM_COLUMNS},
            key TEXT, value TEXT, epoch INTEGER,
            vv TEXT NOT NULL DEFAULT '{{}}', version_seq INTEGER);
         CREATE INDEX agent_state_key ON agent_state (key);
         CREATE TABLE epoch_fence (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            highest INTEGER NOT NULL CHECK (highest >= 0),
            fenced INTEGER NOT NULL
         );
         INSERT INTO epoch_fence (id, highest, fenced) VALUES (1, 0, 0);"
    ))?;
    guard(tx, "agent_state", "synced tables are")?;
    guard(tx, "epoch_fence", "the epoch fence is")
}

/// The registry keeps every address a machine can be reached at (a JSON
/// list, freshest first) and the Roost version it runs; its status says only
/// whether it is revoked, since whether it answers is known live, never
/// from a stored word that a crash would leave behind.
fn v6(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE instances_v6 (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('home', 'satellite')),
            addresses TEXT NOT NULL DEFAULT '[]',
            certificate TEXT NOT NULL,
            signing_key TEXT NOT NULL,
            encryption_key TEXT NOT NULL,
            version TEXT,
            last_seen TEXT,
            status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
            revoked_after INTEGER,
            created_at TEXT NOT NULL
         );
         INSERT INTO instances_v6 (id, name, role, addresses, certificate, signing_key, encryption_key,
                                   last_seen, status, revoked_after, created_at)
            SELECT id, name, role, CASE WHEN gateway_url IS NULL THEN '[]' ELSE json_array(gateway_url) END,
                   certificate, signing_key, encryption_key, last_seen,
                   CASE WHEN status = 'revoked' THEN 'revoked' ELSE 'active' END, revoked_after, created_at
            FROM instances;
         DROP TABLE instances;
         ALTER TABLE instances_v6 RENAME TO instances;",
    )
}

/// The search index's triggers stand still while `meta` holds
/// `search_index_deferred` (a large catch-up; `search_index.rs`), for every
/// process writing the database alike.
fn v7(tx: &Transaction) -> rusqlite::Result<()> {
    let live = "WHEN NOT EXISTS (SELECT 1 FROM meta WHERE key = 'search_index_deferred')";
    tx.execute_batch(&format!(
        "DROP TRIGGER memories_fts_insert;
         DROP TRIGGER memories_fts_delete;
         DROP TRIGGER memories_fts_update;
         CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories {live} BEGIN
             INSERT INTO memories_fts (rowid, content, context, tags, source, category)
             VALUES (new.seq, new.content, new.context, new.tags, new.source, new.category);
         END;
         CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories {live} BEGIN
             INSERT INTO memories_fts (memories_fts, rowid, content, context, tags, source, category)
             VALUES ('delete', old.seq, old.content, old.context, old.tags, old.source, old.category);
         END;
         CREATE TRIGGER memories_fts_update AFTER UPDATE ON memories {live} BEGIN
             INSERT INTO memories_fts (memories_fts, rowid, content, context, tags, source, category)
             VALUES ('delete', old.seq, old.content, old.context, old.tags, old.source, old.category);
             INSERT INTO memories_fts (rowid, content, context, tags, source, category)
             VALUES (new.seq, new.content, new.context, new.tags, new.source, new.category);
         END;"
    ))
}

/// The nonces of accepted machine tokens, until their tokens expire
/// (`nonces.rs`): local, never synced.
fn v8(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE token_nonces (nonce BLOB PRIMARY KEY, expires_at INTEGER NOT NULL) WITHOUT ROWID;
         CREATE INDEX token_nonces_by_expiry ON token_nonces (expires_at);",
    )
}

/// Revocations signed by the identity, kept to pass on to every peer; a
/// machine may be revoked here before its certificate ever arrived.
fn v9(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE revocations (
             instance_id TEXT PRIMARY KEY,
             machine_key TEXT NOT NULL,
             revocation TEXT NOT NULL,
             revoked_after INTEGER NOT NULL,
             received_at TEXT NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX revocations_by_key ON revocations (machine_key);",
    )
}

/// The agent's inbound messages: one row per channel message (its id is
/// derived from the channel and the channel's message id), recorded by any
/// machine; the replies are agent state.
fn v10(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(&format!(
        "CREATE TABLE agent_messages ({SYSTEM_COLUMNS},
            key TEXT, channel TEXT, topic TEXT, message_id TEXT, sender TEXT, text TEXT,
            vv TEXT NOT NULL DEFAULT '{{}}', version_seq INTEGER);
         CREATE INDEX agent_messages_key ON agent_messages (key);
         CREATE INDEX agent_messages_topic ON agent_messages (topic, created_at);"
    ))?;
    guard(tx, "agent_messages", "synced tables are")
}

/// The pool's fence: per topic, the highest topic stamp this instance has
/// seen (local bookkeeping, guarded like `epoch_fence`).
fn v11(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE topic_fence (
             topic TEXT PRIMARY KEY,
             highest INTEGER NOT NULL
         ) WITHOUT ROWID;",
    )?;
    guard(tx, "topic_fence", "the topic fence is")
}

type Migration = fn(&Transaction) -> rusqlite::Result<()>;
const MIGRATIONS: &[Migration] = &[v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11];

/// Brings the database up to the newest schema, each step in one transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError::TooNew { found: current, known: MIGRATIONS.len() });
    }
    for (index, step) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now = tx.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
        if now > index {
            continue;
        }
        step(&tx)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    check_schema(conn)
}

/// Asserts that every field the core describes has a column.
fn check_schema(conn: &Connection) -> Result<(), StoreError> {
    for table in Table::ALL {
        let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{}')", table.name()))?;
        let columns: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        for field in table.fields() {
            if !columns.iter().any(|c| c == field.name) {
                return Err(StoreError::SchemaMismatch(format!("{}.{}", table.name(), field.name)));
            }
        }
    }
    Ok(())
}
