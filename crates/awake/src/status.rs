//! The lease's status as the driver publishes it: `/health`'s `lease` and
//! `/api/v1/lease` send it, and `roost status`, `roost machines` and the
//! tests read it back, all through these types.

use serde::{Deserialize, Serialize};

use roost_lease::{LeaseRole, NodeId};

/// What this machine believes about the role, with the loop's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    pub backend: Backend,
    pub part: Part,
    pub role: Role,
    pub holder: Option<Machine>,
    pub epoch: Option<u64>,
    /// Machines (this one included) heard claiming the role within a TTL.
    pub claims_seen: usize,
    pub voters: usize,
    pub voter_ids: Vec<NodeId>,
    /// Every machine heard from, with what it last said of itself.
    pub peers: Vec<PeerSeen>,
    /// The view of the voters this machine holds.
    pub view: Option<String>,
    /// Voters (this one included) heard from within a TTL.
    pub voters_heard: usize,
    /// Whether a failover could happen now, and if not, why, in words.
    pub failover: String,
    /// Why this machine cannot take the role, in words, if it cannot.
    pub not_eligible: Option<String>,
    pub lease_left_ms: Option<u64>,
    pub ttl_ms: u64,
    pub protocol: u16,
    /// Every voter state asked for is on disk.
    pub votes_stored: bool,
    /// Why the last write of the voter state failed.
    pub votes_error: Option<String>,
    /// How long ago the loop last turned.
    pub loop_lag_ms: u64,
    /// The loop turns and its votes can be stored: this machine can play its
    /// part in the role.
    pub ok: bool,
    /// The last times this machine took the role, oldest first.
    #[serde(default)]
    pub takeovers: Vec<TakeoverSeen>,
}

/// One time this machine took the role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverSeen {
    pub epoch: u64,
    /// `failover`, `handoff` or `first`.
    pub how: String,
    /// A failover from the last claim heard of the holder before, a handoff
    /// from its start; none for the first.
    pub took_ms: Option<u64>,
    /// When, in seconds since the Unix epoch.
    pub at_unix: u64,
}

/// `/api/v1/lease`: the status, and what the replicated log holds of the role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReport {
    #[serde(flatten)]
    pub status: LeaseStatus,
    /// The last holder's `awake` record of agent state.
    pub record: Option<Record>,
    /// This machine's epoch fence.
    pub fence: u64,
}

/// The `awake` record as the log holds it: the epoch it was written under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub epoch: u64,
    /// `None` when the record is not one this version writes.
    pub holder: Option<AwakeRecord>,
}

/// The value of the `awake` record each new holder writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwakeRecord {
    pub epoch: u64,
    pub holder: NodeId,
    pub name: String,
}

/// Where grants come from (`[lease] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Quorum,
    Etcd,
}

/// Whether this machine may take the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// A full machine: votes, and may become awake.
    Machine,
    /// `roost witness`: votes, holds no data, never awake.
    Witness,
}

/// The part this machine plays in the role now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The loop has not read the registry yet.
    Starting,
    Awake,
    /// Awake, and handing the role to another machine.
    HandingOff,
    /// Asking the voters for the role.
    Acquiring,
    Standby,
    /// A voter that is never awake.
    Witness,
}

impl From<LeaseRole> for Role {
    fn from(role: LeaseRole) -> Role {
        match role {
            LeaseRole::Awake => Role::Awake,
            LeaseRole::HandingOff => Role::HandingOff,
            LeaseRole::Acquiring => Role::Acquiring,
            LeaseRole::Standby => Role::Standby,
            LeaseRole::Witness => Role::Witness,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Starting => "starting",
            Role::Awake => "awake",
            Role::HandingOff => "handing-off",
            Role::Acquiring => "acquiring",
            Role::Standby => "standby",
            Role::Witness => "witness",
        })
    }
}

/// A machine, by id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub id: NodeId,
    pub name: String,
}

/// A machine this one has heard from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSeen {
    pub id: NodeId,
    pub name: String,
    pub witness: bool,
    pub eligible: bool,
    pub leaving: bool,
    /// Said it could do the agent's work (reach its channels).
    pub able: bool,
    /// Heard within a TTL.
    pub live: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_parts_keep_their_wire_names() {
        let names: Vec<String> = [Role::Starting, Role::HandingOff, Role::Witness]
            .iter()
            .map(|r| serde_json::to_value(r).unwrap().as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["starting", "handing-off", "witness"]);
        assert_eq!(names, [Role::Starting, Role::HandingOff, Role::Witness].map(|r| r.to_string()));
        assert_eq!(serde_json::to_value(Part::Machine).unwrap(), "machine");
        assert_eq!(serde_json::to_value(Backend::Etcd).unwrap(), "etcd");
    }
}
