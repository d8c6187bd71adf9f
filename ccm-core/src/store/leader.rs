//! Leader election with fencing: only the leader of a loop writes, and every write it makes
//! carries a guard that fails once it is no longer the leader.

use super::state::{CmpOp, Compare, LeaseId, Revision, StoreError, Txn};
use async_trait::async_trait;
use std::time::Duration;

/// The fencing token of one term of leadership: the leader key and the revision at which this
/// leader created it. Any later leader creates the key at a higher revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The election's leader key.
    pub key: String,
    /// `create_revision` of the key in this term (monotonic across terms).
    pub token: Revision,
}

impl Fence {
    /// The guard every leader write carries.
    pub fn compare(&self) -> Compare {
        Compare::CreateRevision {
            key: self.key.clone(),
            op: CmpOp::Equal,
            revision: self.token,
        }
    }

    /// Adds the guard to a transaction.
    pub fn guard(&self, txn: Txn) -> Txn {
        txn.when(self.compare())
    }
}

/// One held leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// Election name (`scheduler`, `controller`).
    pub election: String,
    /// This candidate's id.
    pub candidate: String,
    /// The lease keeping the leader key alive.
    pub lease: LeaseId,
    /// The fence for writes.
    pub fence: Fence,
    /// Lease TTL.
    pub ttl: Duration,
}

/// Who leads an election now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// Candidate id.
    pub candidate: String,
    /// Fence token of its term.
    pub token: Revision,
}

/// Campaign / observe / resign for named elections.
#[async_trait]
pub trait LeaderElector: Send + Sync + 'static {
    /// One attempt to become leader; `None` when someone else leads.
    async fn try_campaign(
        &self,
        election: &str,
        candidate: &str,
        ttl: Duration,
    ) -> Result<Option<Leadership>, StoreError>;
    /// Who leads now, if anyone.
    async fn observe(&self, election: &str) -> Result<Option<LeaderInfo>, StoreError>;
    /// Refreshes the lease; an error means leadership is lost (stop writing).
    async fn keep_alive(&self, leadership: &Leadership) -> Result<(), StoreError>;
    /// Gives leadership up at once (revokes the lease) so a standby takes over.
    async fn resign(&self, leadership: &Leadership) -> Result<(), StoreError>;
}
