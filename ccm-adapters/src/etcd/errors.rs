//! Translation of etcd client errors into [`StoreError`].

use ccm_core::store::{LeaseId, StoreError};
use etcd_client::Error;
use tonic::Code;

/// Messages that mean "try again later": no leader, leader change, overload — and a
/// connection that broke under the call (tonic reports those as `Unknown: transport error`;
/// the outcome of a write is then unknown, which is what `Unavailable` says).
const TRANSIENT: &[&str] = &[
    "no leader",
    "leader changed",
    "request timed out",
    "too many requests",
    "timed out",
    "not capable",
    "server stopped",
    "transport error",
    "connection reset",
    "connection refused",
    "connection closed",
    "broken pipe",
    "error trying to connect",
    "h2 protocol error",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_broken_under_the_call_is_unavailable() {
        for status in [
            tonic::Status::unknown("transport error"),
            tonic::Status::unknown("h2 protocol error: connection reset"),
            tonic::Status::internal("error trying to connect: Connection refused"),
            tonic::Status::unavailable("anything"),
        ] {
            let e = map_err(Error::GRpcStatus(status.clone()), None);
            assert!(is_transient(&e), "{status:?} -> {e:?}");
        }
    }

    #[test]
    fn a_refused_request_is_a_backend_error() {
        let e = map_err(
            Error::GRpcStatus(tonic::Status::invalid_argument(
                "too many operations in txn request",
            )),
            None,
        );
        assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
        let e = map_err(
            Error::GRpcStatus(tonic::Status::not_found("requested lease not found")),
            Some(7),
        );
        assert_eq!(e, StoreError::LeaseNotFound(7));
    }
}
