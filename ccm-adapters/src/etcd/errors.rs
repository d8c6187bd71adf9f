//! Translation of etcd client errors into [`StoreError`].

use ccm_core::store::{LeaseId, StoreError};
use etcd_client::Error;
use tonic::Code;

/// Server messages that mean "try again later" (no leader, leader change, overload).
const TRANSIENT: &[&str] = &[
    "no leader",
    "leader changed",
    "request timed out",
    "too many requests",
    "timed out",
    "not capable",
    "server stopped",
];

/// Maps a client error; `lease` names the lease the call was about, if any.
pub(crate) fn map_err(e: Error, lease: Option<LeaseId>) -> StoreError {
    match e {
        Error::TransportError(t) => StoreError::Unavailable(format!("etcd transport: {t}")),
        Error::IoError(io) => StoreError::Unavailable(format!("etcd i/o: {io}")),
        Error::GRpcStatus(s) => {
            let msg = s.message().to_string();
            if msg.contains("requested lease not found") {
                if let Some(id) = lease {
                    return StoreError::LeaseNotFound(id);
                }
            }
            match s.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
                    StoreError::Unavailable(format!("etcd: {msg}"))
                }
                Code::Unknown | Code::Internal if TRANSIENT.iter().any(|t| msg.contains(t)) => {
                    StoreError::Unavailable(format!("etcd: {msg}"))
                }
                _ if TRANSIENT.iter().any(|t| msg.contains(t)) => {
                    StoreError::Unavailable(format!("etcd: {msg}"))
                }
                code => StoreError::Backend(format!("etcd {code:?}: {msg}")),
            }
        }
        Error::LeaseKeepAliveError(m) if m.contains("not found") => match lease {
            Some(id) => StoreError::LeaseNotFound(id),
            None => StoreError::Backend(format!("etcd lease keep-alive: {m}")),
        },
        Error::LeaseKeepAliveError(m) | Error::WatchError(m) => {
            StoreError::Unavailable(format!("etcd stream: {m}"))
        }
        Error::EndpointError(m) => StoreError::Unavailable(format!("etcd endpoint: {m}")),
        other => StoreError::Backend(format!("etcd: {other}")),
    }
}

/// Whether an error is worth retrying for an idempotent read.
pub(crate) fn is_transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_))
}
