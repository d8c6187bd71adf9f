//! etcd v3 gRPC messages and client stubs, generated from the .proto copies in
//! `ccm-adapters/proto/` by `tools/etcd-codegen` (run `scripts/gen-etcd-proto.sh`; CI checks
//! the committed files are what it generates). Do not edit the generated files by hand.
#![allow(missing_docs, unreachable_pub, dead_code)]
#![allow(clippy::all, clippy::pedantic, rustdoc::all)]

/// etcd's API messages and services (`etcdserverpb`), trimmed to the calls ccm makes.
pub mod etcdserverpb {
    include!("etcdserverpb.rs");
}

/// etcd's storage messages (`mvccpb`: key-values and watch events).
pub mod mvccpb {
    include!("mvccpb.rs");
}
