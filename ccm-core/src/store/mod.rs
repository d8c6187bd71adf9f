//! The traits ccm's loops are written against, and their shared error type.
//!
//! Each trait has an in-memory implementation in [`crate::memory`] with the same semantics as
//! the real system (the embedded default), and an adapter in `ccm-adapters`.

pub mod artifact;
pub mod clock;
pub mod elector;
pub mod events;
pub mod intercept;
pub mod lab;
pub mod leader;
pub mod provider;
pub mod spec;
pub mod state;

pub use artifact::{ArtifactError, ArtifactMeta, ArtifactStore, WriteCondition};
pub use clock::{Clock, SystemClock, VirtualClock};
pub use events::{Event, EventError, EventSink};
pub use lab::{
    LabCall, LabDetails, LabEndpoint, LabError, LabId, LabRuntime, LabState, LabSummary, NodeId,
    NodeInfo, NodeState, SystemInfo,
};
pub use leader::{Fence, LeaderElector, LeaderInfo, Leadership};
pub use provider::{LaunchRequest, ManagedInstance, ProviderError, ProviderEvent, WorkerProvider};
pub use spec::{AuditEvent, AuditQuery, RegisterOutcome, SeedReport, SpecError, SpecStore};
pub use state::{
    CmpOp, Compare, KeyValue, LeaseId, ListResponse, Revision, StateStore, StoreError, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchEvent, WatchStream,
};
