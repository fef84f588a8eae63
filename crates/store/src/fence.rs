//! The epoch fence: agent-owned state is written only under the highest lease
//! epoch this instance has seen.
//!
//! Each grant of the lease has an epoch greater than every earlier grant. The
//! machine that holds it stamps every write of agent state with that epoch
//! ([`Store::write_agent_state`]), and the door refuses a stamp below the
//! highest epoch recorded here, so a machine that wrongly believes it is
//! still awake (paused, partitioned) is stopped as soon as it has heard of a
//! newer grant — by the lease ([`Store::observe_epoch`]) or by an entry of the
//! newer holder. Whatever it wrote before hearing of one is fenced where it
//! arrives: replication ranks agent-state versions by epoch first
//! (`roost_core::sync`), so its writes never replace the real holder's,
//! whatever the timing. Correctness rests on the epochs, never on clocks.
//!
//! `epoch_fence` is local bookkeeping, not synced: the highest epoch seen and
//! how many received entries were fenced.
//!
//! With the pool, a topic's reply records are written by the topic's owner
//! under a *topic stamp* (`roost_pool::stamp`), and fenced per topic the
//! same way: `topic_fence` keeps the highest stamp seen of each topic (from
//! its grants, [`Store::observe_topic_epoch`], and from the reply records
//! written or received), and the door refuses a stamp below it. Topic stamps
//! outrank every lease epoch and never move the lease's fence.

use rusqlite::{Connection, Transaction, TransactionBehavior};
use serde::Deserialize;
use serde_json::{Map, Value};

use roost_core::{EPOCH, RowId, Table, validate};

use crate::door::find_live;
use crate::row::{row_json, select_list};
use crate::{Result, Store, StoreError};

/// One key of agent state as this instance holds it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgentState {
    pub id: String,
    pub key: String,
    pub value: String,
    /// The lease epoch it was written under.
    pub epoch: u64,
    /// The machine that wrote it.
    pub origin: String,
    pub updated_at: String,
}

impl AgentState {
    pub(crate) fn from_row(row: Map<String, Value>) -> Result<AgentState> {
        let id = row.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        serde_json::from_value(Value::Object(row))
            .map_err(|e| StoreError::SchemaMismatch(format!("agent_state row {id}: {e}")))
    }
}

impl Store {
    /// Raises the fence to `epoch` (a no-op when it is not higher) and returns
    /// the highest epoch seen. The lease calls this whenever it learns of a
    /// grant, so that a write under any earlier epoch is refused from then on.
    pub fn observe_epoch(&self, epoch: u64) -> Result<u64> {
        checked(epoch)?;
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writer.with_door_open(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            raise(&tx, epoch)?;
            let highest = highest(&tx)?;
            tx.commit()?;
            Ok(highest)
        })
    }

    /// Starts the fence afresh: this machine joined another chain, whose
    /// epochs have nothing to do with the old one's. The only way down.
    pub fn reset_epoch_fence_for_new_chain(&self) -> Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writer.with_door_open(|conn| {
            conn.execute("UPDATE epoch_fence SET highest = 0, fenced = 0 WHERE id = 1", [])?;
            Ok(())
        })
    }

    /// The highest lease epoch this instance has seen (0 for none): from its
    /// own writes, applied entries and [`Store::observe_epoch`].
    pub fn highest_epoch(&self) -> Result<u64> {
        self.read(highest)
    }

    /// How many received agent-state entries were fenced: logged, but from a
    /// lower epoch than the row they met, so they changed nothing.
    pub fn fenced_entries(&self) -> Result<u64> {
        self.read(
            |c| Ok(c.query_row("SELECT fenced FROM epoch_fence WHERE id = 1", [], |r| r.get::<_, i64>(0))? as u64),
        )
    }

    /// Raises `topic`'s fence to `stamp` (a grant of the topic this machine
    /// learnt of) and returns the highest stamp seen of the topic.
    pub fn observe_topic_epoch(&self, topic: &str, stamp: u64) -> Result<u64> {
        checked(stamp)?;
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writer.with_door_open(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            raise_topic(&tx, topic, stamp)?;
            let highest = topic_highest(&tx, topic)?;
            tx.commit()?;
            Ok(highest)
        })
    }

    /// The highest stamp this instance has seen of `topic` (0 for none).
    pub fn topic_epoch(&self, topic: &str) -> Result<u64> {
        self.read(|c| topic_highest(c, topic))
    }

    /// Every live agent state whose key starts with `prefix`, by key.
    pub fn agent_states(&self, prefix: &str) -> Result<Vec<AgentState>> {
        let table = Table::AgentState;
        let sql = format!(
            "SELECT {} FROM {} t WHERE t.deleted_at IS NULL AND substr(t.key, 1, length(?1)) = ?1 ORDER BY t.key",
            select_list(table, "t"),
            table.name()
        );
        self.read(|c| {
            let mut statement = c.prepare_cached(&sql)?;
            let rows = statement.query_map([prefix], |r| row_json(table, r, 0))?;
            rows.map(|row| AgentState::from_row(row?)).collect()
        })
    }

    /// The agent state under `key`, if any.
    pub fn agent_state(&self, key: &str) -> Result<Option<AgentState>> {
        let id = agent_state_id(key);
        self.read(|c| match find_live(c, Table::AgentState, id.as_str()) {
            Ok((_, row)) => AgentState::from_row(row).map(Some),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        })
    }
}

/// The row id of `key`'s agent state: named from the key, so the same key is
/// the same row on every machine and its versions meet the fence.
pub(crate) fn agent_state_id(key: &str) -> RowId {
    RowId::named(Table::AgentState.name(), key.trim())
}

/// The epoch a row of `table` carries: `Some` for agent-owned tables only.
pub(crate) fn epoch_of(table: Table, row: &Map<String, Value>) -> Option<u64> {
    if table.agent_owned() { row.get(EPOCH).and_then(Value::as_u64) } else { None }
}

/// Refuses an epoch outside the `epoch` field's range (1 to `i64::MAX`, what
/// SQLite stores), with the field's own message.
fn checked(epoch: u64) -> Result<()> {
    let field = Table::AgentState.field(EPOCH).expect("agent state has an epoch field");
    validate::normalise(field, &Value::from(epoch))?;
    Ok(())
}

pub(crate) fn highest(conn: &Connection) -> Result<u64> {
    Ok(conn.prepare_cached("SELECT highest FROM epoch_fence WHERE id = 1")?.query_row([], |r| r.get::<_, i64>(0))?
        as u64)
}

/// Raises the highest epoch seen to `epoch`, already checked to be in range.
pub(crate) fn raise(tx: &Transaction, epoch: u64) -> Result<()> {
    let epoch = i64::try_from(epoch).expect("epochs are checked against the field's range first");
    tx.prepare_cached("UPDATE epoch_fence SET highest = max(highest, ?1) WHERE id = 1")?.execute([epoch])?;
    Ok(())
}

/// The topic of the agent state under `key`: a reply record's, when its
/// message is held here.
pub(crate) fn topic_of(conn: &Connection, key: &str) -> Result<Option<String>> {
    let Some(message) = key.strip_prefix(roost_agent::ledger::REPLY_PREFIX) else { return Ok(None) };
    let mut statement = conn.prepare_cached("SELECT topic FROM agent_messages WHERE id = ?1")?;
    let mut rows = statement.query([message])?;
    Ok(match rows.next()? {
        Some(row) => row.get(0)?,
        None => None,
    })
}

pub(crate) fn topic_highest(conn: &Connection, topic: &str) -> Result<u64> {
    let mut statement = conn.prepare_cached("SELECT highest FROM topic_fence WHERE topic = ?1")?;
    let mut rows = statement.query([topic])?;
    Ok(match rows.next()? {
        Some(row) => row.get::<_, i64>(0)? as u64,
        None => 0,
    })
}

/// Raises `topic`'s fence to `stamp`, already checked to be in range.
pub(crate) fn raise_topic(tx: &Transaction, topic: &str, stamp: u64) -> Result<()> {
    let stamp = i64::try_from(stamp).expect("stamps are checked against the field's range first");
    tx.prepare_cached(
        "INSERT INTO topic_fence (topic, highest) VALUES (?1, ?2)
         ON CONFLICT (topic) DO UPDATE SET highest = max(highest, excluded.highest)",
    )?
    .execute(rusqlite::params![topic, stamp])?;
    Ok(())
}

/// Raises the fence an applied version's epoch belongs to: its topic's for
/// a topic stamp (when the topic is known here), else the lease's.
pub(crate) fn raise_for(tx: &Transaction, key: Option<&str>, epoch: u64) -> Result<()> {
    if !roost_pool::is_topic_stamp(epoch) {
        return raise(tx, epoch);
    }
    match key.map(|key| topic_of(tx, key)).transpose()?.flatten() {
        Some(topic) => raise_topic(tx, &topic, epoch),
        None => Ok(()),
    }
}

/// Counts one received entry fenced.
pub(crate) fn count_fenced(tx: &Transaction) -> Result<()> {
    tx.prepare_cached("UPDATE epoch_fence SET fenced = fenced + 1 WHERE id = 1")?.execute([])?;
    Ok(())
}
