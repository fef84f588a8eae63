//! The nonces of the machine tokens this gateway accepted, kept until their
//! tokens expire, so that a token used once is refused after a restart too.
//! Local bookkeeping: never synced, never in the log.

use rusqlite::OptionalExtension;

use crate::{Result, Store};

impl Store {
    /// Records `nonce`, whose token expires at `expires_at` (unix seconds);
    /// false if it was recorded already (the token is a replay). Drops the
    /// nonces of tokens expired by `now`.
    pub fn remember_token_nonce(&self, nonce: &[u8; 16], expires_at: i64, now: i64) -> Result<bool> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = writer.raw_mut().transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM token_nonces WHERE expires_at <= ?1", [now])?;
        let seen = tx.query_row("SELECT 1 FROM token_nonces WHERE nonce = ?1", [&nonce[..]], |_| Ok(())).optional()?;
        if seen.is_some() {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO token_nonces (nonce, expires_at) VALUES (?1, ?2)",
            rusqlite::params![&nonce[..], expires_at],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Every recorded nonce whose token has not expired by `now`, with its
    /// expiry.
    pub fn live_token_nonces(&self, now: i64) -> Result<Vec<([u8; 16], i64)>> {
        self.read(|c| {
            let mut statement = c.prepare("SELECT nonce, expires_at FROM token_nonces WHERE expires_at > ?1")?;
            let rows = statement.query_map([now], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
            let mut live = Vec::new();
            for row in rows {
                let (nonce, expires_at) = row?;
                if let Ok(nonce) = <[u8; 16]>::try_from(nonce) {
                    live.push((nonce, expires_at));
                }
            }
            Ok(live)
        })
    }
}
