//! The awake lease held in etcd, for people who already run etcd.
//!
//! Roost runs one awake machine at a time under a lease. Besides its own
//! quorum of voters it can keep that lease in etcd: one key per identity
//! (e.g. `/roost/<identity-id>/awake`) whose value names the holder, attached
//! to an etcd lease so that it disappears when the holder stops renewing.
//! The **epoch**, the fencing token the holder stamps on what it does, is
//! etcd's revision of the write that created the key: revisions only grow,
//! so every grant has a strictly greater epoch than every grant before it.
//!
//! [`EtcdLease`] is only the client: acquire, renew, release, look up. When
//! to renew, when to fence itself and how to hand over are the driver's
//! decisions.
//!
//! It speaks etcd's v3 JSON gateway over HTTP (`/v3/kv/txn`,
//! `/v3/lease/grant`, …; etcd 3.4 and later), rather than gRPC: the
//! handful of calls a lease needs do not justify tonic, protobuf code
//! generation and a second HTTP stack next to the reqwest Roost already has.
//!
//! Every request is bounded by the timeout given at construction, per
//! endpoint tried; a call makes at most three requests (acquire: grant, txn,
//! revoke), so it ends within 3 × endpoints × timeout. Every request is safe
//! to repeat, which is what lets a request that timed out on one endpoint be
//! sent to the next. A request given up on may still take effect later (etcd
//! had it and was slow): a failed release may yet delete the key, a failed
//! acquire may yet leave it held by its lease until the TTL runs out.

mod error;
mod gateway;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

use serde_json::json;

pub use error::EtcdError;
use gateway::{Gateway, KeepAlive, KeyValue, LeaseGrant, Range, Txn, base64};

/// gRPC's NOT_FOUND, what revoking a lease that is already gone answers.
const NOT_FOUND: i64 = 5;

/// A client for one lease key on one etcd cluster.
#[derive(Debug)]
pub struct EtcdLease {
    key: String,
    gateway: Gateway,
}

/// The lease, held: what the holder needs to renew, release and fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// etcd's revision of the write that took the key; the fencing token.
    pub epoch: u64,
    /// The etcd lease the key is attached to.
    pub lease_id: i64,
    pub holder: String,
    /// The TTL etcd granted, which may be longer than asked: etcd raises
    /// every TTL to its minimum (1.5 election timeouts rounded up: 2 s with
    /// its default 1 s election timeout).
    pub ttl: Duration,
}

/// The answer to [`EtcdLease::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    Granted(Grant),
    /// Someone holds the lease: who, and the epoch of their grant.
    Held {
        holder: String,
        epoch: u64,
    },
}

impl EtcdLease {
    /// A client for `key` on the cluster at `endpoints` (`http://host:port`
    /// or `https://…`, tried in order), each request bounded by `timeout`.
    pub fn new(endpoints: Vec<String>, key: String, timeout: Duration) -> Result<EtcdLease, EtcdError> {
        if key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        Ok(EtcdLease { key, gateway: Gateway::new(endpoints, timeout)? })
    }

    /// Grants an etcd lease of `ttl` (whole seconds, at least 1, rounded
    /// up) and, in one txn, puts key = `holder` attached to it only if the
    /// key does not exist. The grant's epoch is that txn's revision. When the
    /// key exists, the new lease is revoked and the answer is who holds it.
    ///
    /// The txn is safe to send again after its answer was lost (as moving to
    /// the next endpoint does): finding the key attached to its own lease,
    /// it answers with that grant.
    pub async fn acquire(&self, holder: &str, ttl: Duration) -> Result<Acquire, EtcdError> {
        let seconds = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
        let lease: LeaseGrant =
            self.gateway.post("lease grant", "/v3/lease/grant", &json!({ "TTL": seconds.to_string() })).await?;
        if lease.id == 0 || lease.ttl <= 0 {
            return Err(unexpected("lease grant", format!("lease {} with TTL {}", lease.id, lease.ttl)));
        }
        let granted = |epoch| Grant {
            epoch,
            lease_id: lease.id,
            holder: holder.to_string(),
            ttl: Duration::from_secs(lease.ttl.unsigned_abs()),
        };
        let key = base64(self.key.as_bytes());
        let put_if_absent = json!({
            "compare": [{ "key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }],
            "success": [{ "request_put": { "key": key, "value": base64(holder.as_bytes()), "lease": lease.id.to_string() } }],
            "failure": [{ "request_range": { "key": key } }],
        });
        let txn: Txn = match self.gateway.post("acquire txn", "/v3/kv/txn", &put_if_absent).await {
            Ok(txn) => txn,
            Err(e) => {
                // The put may have landed without its answer reaching us.
                // Revoking frees the key at once instead of after the TTL;
                // the txn's error is the one worth reporting.
                let _ = self.revoke(lease.id).await;
                return Err(e);
            }
        };
        if txn.succeeded {
            return Ok(Acquire::Granted(granted(epoch("acquire txn", txn.header.revision)?)));
        }
        let kv = txn
            .responses
            .into_iter()
            .find_map(|op| op.response_range)
            .and_then(|range| range.kvs.into_iter().next())
            .ok_or_else(|| unexpected("acquire txn", "the key exists but its range came back empty".into()))?;
        let held = epoch("acquire txn", kv.mod_revision)?;
        if kv.lease == lease.id {
            return Ok(Acquire::Granted(granted(held)));
        }
        // Left alone, the unused lease would expire within its TTL anyway,
        // so a failed revoke is not worth failing the answer for.
        let _ = self.revoke(lease.id).await;
        Ok(Acquire::Held { holder: String::from_utf8_lossy(&kv.value).into_owned(), epoch: held })
    }

    /// Keeps the grant's lease alive. `Ok(false)` when etcd says the lease is
    /// gone or the key no longer belongs to this grant (its mod revision is
    /// not the epoch, or its value not the holder): the holder must stop.
    pub async fn renew(&self, grant: &Grant) -> Result<bool, EtcdError> {
        let alive: KeepAlive =
            self.gateway.post("keepalive", "/v3/lease/keepalive", &json!({ "ID": grant.lease_id.to_string() })).await?;
        if alive.result.ttl <= 0 {
            return Ok(false);
        }
        Ok(self.read("renew range").await?.is_some_and(|kv| belongs(&kv, grant)))
    }

    /// Deletes the key if it still belongs to this grant (its mod revision
    /// is the epoch), then revokes the grant's lease. Releasing a grant that
    /// has already lapsed or been released is not an error.
    pub async fn release(&self, grant: &Grant) -> Result<(), EtcdError> {
        let key = base64(self.key.as_bytes());
        let delete_if_ours = json!({
            "compare": [{ "key": key, "target": "MOD", "result": "EQUAL", "mod_revision": grant.epoch.to_string() }],
            "success": [{ "request_delete_range": { "key": key } }],
        });
        let _: Txn = self.gateway.post("release txn", "/v3/kv/txn", &delete_if_ours).await?;
        self.revoke(grant.lease_id).await
    }

    /// Who holds the lease now, if anyone: (holder, epoch).
    pub async fn current(&self) -> Result<Option<(String, u64)>, EtcdError> {
        match self.read("range").await? {
            None => Ok(None),
            Some(kv) => Ok(Some((String::from_utf8_lossy(&kv.value).into_owned(), epoch("range", kv.mod_revision)?))),
        }
    }

    async fn read(&self, call: &'static str) -> Result<Option<KeyValue>, EtcdError> {
        let range: Range =
            self.gateway.post(call, "/v3/kv/range", &json!({ "key": base64(self.key.as_bytes()) })).await?;
        Ok(range.kvs.into_iter().next())
    }

    /// Revokes a lease (deleting the keys attached to it); one already gone
    /// counts as revoked.
    async fn revoke(&self, lease_id: i64) -> Result<(), EtcdError> {
        let body = json!({ "ID": lease_id.to_string() });
        match self.gateway.post::<serde_json::Value>("lease revoke", "/v3/lease/revoke", &body).await {
            Ok(_) | Err(EtcdError::Refused { code: NOT_FOUND, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn belongs(kv: &KeyValue, grant: &Grant) -> bool {
    u64::try_from(kv.mod_revision) == Ok(grant.epoch) && kv.value == grant.holder.as_bytes()
}

/// A revision as an epoch; etcd's revisions start at 1.
fn epoch(call: &'static str, revision: i64) -> Result<u64, EtcdError> {
    match u64::try_from(revision) {
        Ok(epoch) if epoch > 0 => Ok(epoch),
        _ => Err(unexpected(call, format!("revision {revision}"))),
    }
}

fn unexpected(call: &'static str, reason: String) -> EtcdError {
    EtcdError::Unexpected { call, reason }
}
