//! etcd adapter: [`EtcdStateStore`] implements [`ccm_core::store::StateStore`] on etcd v3
//! (tested against etcd 3.4 and a 3-member cluster), and [`EtcdElector`] is the fenced leader
//! election over it ([`ccm_core::store::elector::StoreElector`]).
//!
//! # Key layout
//!
//! Keys are stored verbatim; ccm keeps all of its state under one configurable prefix
//! ([`EtcdConfig::prefix`], default `/ccm`):
//!
//! | key | value |
//! |---|---|
//! | `{prefix}/sessions/{session_id}` | a lablet session as JSON (the source of truth for bindings) |
//! | `{prefix}/workers/{worker_id}` | a worker as JSON, with its allocated load and port table |
//! | `{prefix}/definitions/{definition_id}` | a cached lablet definition as JSON |
//! | `{prefix}/leader/{election}` | the leader key of `scheduler` / `controller`: the candidate id, attached to the leader's lease; its `create_revision` is the fence token |
//!
//! Each binding (or batch of bindings, at most [`EtcdConfig::max_txn_ops`] operations) is one
//! etcd transaction guarded by the mod revisions the scheduler read and by the leader fence.
//!
//! # Connection
//!
//! Several endpoints are balanced by the client; a member that goes away is skipped. TLS
//! (CA, client certificate and key) and user/password auth come from [`EtcdConfig`], which
//! [`EtcdConfig::from_env`] fills from `ETCD_HOST`/`ETCD_PORT` (or `CCM_ETCD_ENDPOINTS`),
//! `ETCD_USERNAME`, `ETCD_PASSWORD`, `ETCD_CA_CERT`, `ETCD_CERT_CERT` (client certificate)
//! and `ETCD_CERT_KEY` (client key). Connection failures surface as
//! [`ccm_core::store::StoreError::Unavailable`]; reads are retried briefly, writes are not
//! (the caller re-reads and retries its guarded transaction).
//!
//! # Watches
//!
//! A watch stream survives disconnects: it re-creates the etcd watch from the revision after
//! the last event it delivered, so nothing is lost or repeated. When that revision has been
//! compacted meanwhile, the stream yields `StoreError::Compacted` and ends (re-list, then
//! watch again from the listing's revision + 1).

mod config;
mod errors;
mod store;
mod watch;

pub use config::{EtcdConfig, EtcdConfigError};
pub use store::{EtcdElector, EtcdStateStore};
