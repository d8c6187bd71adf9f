//! # ccm-adapters
//!
//! Thin adapters from the `ccm-core` traits to real systems, one cargo feature each:
//!
//! | feature | adapter | crate |
//! |---|---|---|
//! | `etcd` | [`etcd`]: StateStore + LeaderElector | `etcd-client` |
//! | `mongodb` | [`mongo`]: SpecStore | `mongodb` |
//! | `s3` | [`s3`]: ArtifactStore | `aws-sdk-s3` |
//! | `cloudevents` | [`cloudevents`]: EventSink | `cloudevents-sdk` |
//!
//! Adapters translate; they hold no scheduling logic.
#![deny(missing_docs)]

#[cfg(feature = "cloudevents")]
pub mod cloudevents;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "mongodb")]
pub mod mongo;
#[cfg(feature = "s3")]
pub mod s3;
