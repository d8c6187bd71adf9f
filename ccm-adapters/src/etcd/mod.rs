//! etcd adapter.
