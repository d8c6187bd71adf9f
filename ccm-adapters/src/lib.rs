//! # ccm-adapters
//!
//! Thin adapters from the `ccm-core` traits to real systems, one cargo feature each:
//!
//! | feature | adapter | crate |
//! |---|---|---|
//! | `etcd` | [`etcd`]: StateStore + LeaderElector | `tonic` (committed generated code) |
//! | `mongodb` | [`mongo`]: SpecStore | `mongodb` |
//! | `s3` | [`s3`]: ArtifactStore | `aws-sdk-s3` |
//! | `cloudevents` | [`cloudevents`]: EventSink | `cloudevents-sdk` |
//! | `cml` | [`cml`]: LabRuntime | `reqwest` |
//! | `ec2` | [`ec2`]: WorkerProvider | `aws-sdk-ec2` |
//!
//! Adapters translate; they hold no scheduling logic.
#![deny(missing_docs)]

#[cfg(feature = "cloudevents")]
pub mod cloudevents;
#[cfg(feature = "cml")]
pub mod cml;
#[cfg(feature = "ec2")]
pub mod ec2;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "mongodb")]
pub mod mongo;
#[cfg(feature = "s3")]
pub mod s3;

/// Helpers of the adapters' unit tests.
#[cfg(test)]
pub(crate) mod test_env {
    use std::collections::HashMap;

    /// An environment lookup over fixed pairs (what `from_lookup` constructors read).
    #[allow(dead_code)] // used by the etcd and cloudevents features only
    pub(crate) fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }
}
