//! Translation of etcd gRPC statuses into [`StoreError`].

use ccm_core::store::{LeaseId, StoreError};
use tonic::{Code, Status};

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

/// Maps a gRPC status; `lease` names the lease the call was about, if any.
///
/// A rejected auth token (`Unauthenticated`, "invalid auth token") is `Unavailable`: the
/// connection authenticates again on the next call (etcd forgets its tokens when it
/// restarts), so it is not a permanent failure. Wrong credentials are.
pub(crate) fn map_status(s: &Status, lease: Option<LeaseId>) -> StoreError {
    let msg = s.message();
    if msg.contains("requested lease not found") {
        if let Some(id) = lease {
            return StoreError::LeaseNotFound(id);
        }
    }
    if msg.contains("too many operations in txn request") {
        // etcd's --max-txn-ops; the server does not say the number.
        return StoreError::TooManyOperations { limit: None };
    }
    if msg.contains("authentication failed") {
        return StoreError::Backend(format!("etcd: {msg} (check ETCD_USERNAME / ETCD_PASSWORD)"));
    }
    if super::client::is_auth_rejection(s) {
        return StoreError::Unavailable(format!("etcd auth: {msg}"));
    }
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
            StoreError::Unavailable(format!("etcd: {msg}"))
        }
        _ if TRANSIENT.iter().any(|t| msg.contains(t)) => {
            StoreError::Unavailable(format!("etcd: {msg}"))
        }
        code => StoreError::Backend(format!("etcd {code:?}: {msg}")),
    }
}

/// Whether a call failed before its request left this process (no connection to the member
/// the channel picked): safe to send again, whatever the request.
pub(crate) fn never_sent(s: &Status) -> bool {
    let m = s.message();
    s.code() == Code::Unavailable
        && (m.contains("tcp connect error")
            || m.contains("error trying to connect")
            || m.contains("Connection refused"))
}

/// Whether an error is worth retrying for an idempotent read.
pub(crate) fn is_transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_call_that_never_connected_counts_as_never_sent() {
        let refused = Status::unavailable("tcp connect error");
        assert!(never_sent(&refused));
        assert!(never_sent(&Status::unavailable(
            "error trying to connect: tcp connect error: Connection refused (os error 111)"
        )));
        // Sent, outcome unknown: not resent blindly.
        assert!(!never_sent(&Status::unavailable(
            "error reading a body from connection"
        )));
        assert!(!never_sent(&Status::deadline_exceeded("tcp connect error")));
        assert!(!never_sent(&Status::unknown("transport error")));
    }

    #[test]
    fn a_connection_broken_under_the_call_is_unavailable() {
        for status in [
            Status::unknown("transport error"),
            Status::unknown("h2 protocol error: connection reset"),
            Status::internal("error trying to connect: Connection refused"),
            Status::unavailable("anything"),
        ] {
            let e = map_status(&status, None);
            assert!(is_transient(&e), "{status:?} -> {e:?}");
        }
    }

    #[test]
    fn a_refused_request_is_a_backend_error() {
        let e = map_status(
            &Status::invalid_argument("etcdserver: too many operations in txn request"),
            None,
        );
        assert_eq!(e, StoreError::TooManyOperations { limit: None });
        assert!(!is_transient(&e));
        let e = map_status(
            &Status::invalid_argument("etcdserver: duplicate key given in txn request"),
            None,
        );
        assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
        let e = map_status(
            &Status::not_found("etcdserver: requested lease not found"),
            Some(7),
        );
        assert_eq!(e, StoreError::LeaseNotFound(7));
    }

    #[test]
    fn a_rejected_token_is_transient_but_wrong_credentials_are_not() {
        for status in [
            Status::unauthenticated("etcdserver: invalid auth token"),
            Status::invalid_argument("etcdserver: user name is empty"),
            Status::invalid_argument("etcdserver: revision of auth store is old"),
        ] {
            let e = map_status(&status, None);
            assert!(is_transient(&e), "{status:?} -> {e:?}");
        }
        let e = map_status(
            &Status::invalid_argument(
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            None,
        );
        assert!(
            matches!(&e, StoreError::Backend(m) if m.contains("ETCD_PASSWORD")),
            "{e:?}"
        );
        let e = map_status(
            &Status::permission_denied("etcdserver: permission denied"),
            None,
        );
        assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
    }
}
