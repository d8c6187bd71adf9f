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
//! Adapters translate and take typed config; they hold no scheduling logic and read no
//! environment (`ccm-bin`'s settings are the one place that does). Shared between them:
//! [`secret::Secret`], the wrapper of the passwords and keys their configs hold (never shown by
//! `Debug` or `Display`), and `backoff::Backoff`, the jittered retry back-off of the HTTP
//! adapters (`cloudevents`, `cml`).
#![deny(missing_docs)]

#[cfg(any(feature = "cloudevents", feature = "cml"))]
pub mod backoff;
pub mod secret;

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
