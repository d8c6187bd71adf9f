//! S3 adapter: [`S3ArtifactStore`], an [`ArtifactStore`] on any S3-compatible server (AWS S3,
//! MinIO, moto).
//!
//! * **Configuration**: an [`S3Config`] filled by the caller (`ccm-bin` maps
//!   `ARTIFACT_STORAGE_ENDPOINT`, `_ACCESS_KEY`, `_SECRET_KEY`, `_BUCKET`, `_REGION`, `_USE_SSL`
//!   onto it; the adapter reads no environment), checked by [`S3Config::validate`]. Path-style
//!   addressing always. The secret key never appears in `Debug` output or logs ([`Secret`]).
//! * **Bucket**: created when missing; versioning is turned on where the server supports it
//!   (a server that refuses is logged and the store reports one version per key).
//! * **Key layout**: lab YAML lives at [`ccm_core::store::artifact::definition_key`]:
//!   `definitions/{slug}/{version}/cml.yaml`.
//! * **Integrity**: the hex SHA-256 of the content is stored as object metadata `sha256`
//!   (`x-amz-meta-sha256`) and checked on every read; a mismatch (or a missing hash) is
//!   [`ArtifactError::Corrupted`], never a silently bad lab.
//! * **Conditional writes**: [`WriteCondition::IfAbsent`] sends `If-None-Match: *`,
//!   [`WriteCondition::IfMatch`] sends `If-Match: <etag>`; a 412 (or 409 conflict, or 404 for
//!   `If-Match` on a missing key) is [`ArtifactError::PreconditionFailed`].
//! * **Encryption**: optional server-side encryption, SSE-S3 (`AES256`) or SSE-KMS with a key
//!   id ([`Sse`]).
//! * **Streaming**: objects at or above [`S3Config::multipart_threshold`] are uploaded in
//!   parts (the condition applies to the completing request); reads are streamed chunk by
//!   chunk while hashing.

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
    VersioningConfiguration,
};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use ccm_core::store::artifact::{
    sha256_hex, ArtifactError, ArtifactMeta, ArtifactStore, WriteCondition,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub use crate::secret::Secret;

/// Metadata key holding the hex SHA-256 (`x-amz-meta-sha256`).
pub const SHA256_METADATA: &str = "sha256";
/// Default bucket of lab YAML artifacts.
pub const DEFAULT_BUCKET: &str = "lablet-artifacts";
/// S3's smallest part size for multipart uploads (all parts but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Server-side encryption of stored objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3: the server's own keys (`AES256`).
    S3,
    /// SSE-KMS with this key id (`aws:kms`).
    Kms {
        /// KMS key id or ARN.
        key_id: String,
    },
}

/// Connection settings of the S3 artifact store.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `host:port` or a full URL; `http://`/`https://` is added from `use_ssl` when missing.
    pub endpoint: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: Secret,
    /// Bucket name.
    pub bucket: String,
    /// Region (signing only for most S3-compatible servers).
    pub region: String,
    /// HTTPS when true.
    pub use_ssl: bool,
    /// Server-side encryption of written objects.
    pub sse: Option<Sse>,
    /// Objects of this many bytes or more are uploaded in parts.
    pub multipart_threshold: usize,
    /// Part size of multipart uploads (at least [`MIN_PART_SIZE`]).
    pub part_size: usize,
}

impl S3Config {
    /// Settings with the defaults: bucket `lablet-artifacts`, region `us-east-1`, no TLS, no
    /// SSE, multipart from 16 MiB in 8 MiB parts.
    pub fn new(endpoint: &str, access_key: &str, secret_key: &str) -> Self {
        S3Config {
            endpoint: endpoint.to_string(),
            access_key: access_key.to_string(),
            secret_key: Secret::new(secret_key),
            bucket: DEFAULT_BUCKET.to_string(),
            region: "us-east-1".to_string(),
            use_ssl: false,
            sse: None,
            multipart_threshold: 16 * 1024 * 1024,
            part_size: 8 * 1024 * 1024,
        }
    }

    /// Checks the settings: a part size S3 accepts, and TLS asked for (`use_ssl`) never
    /// silently dropped by an explicit `http://` endpoint.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        if self.part_size < MIN_PART_SIZE {
            return Err(ArtifactError::Backend(format!(
                "part size {} is below the S3 minimum {MIN_PART_SIZE}",
                self.part_size
            )));
        }
        if self.use_ssl
            && self
                .endpoint
                .trim()
                .to_ascii_lowercase()
                .starts_with("http://")
        {
            return Err(ArtifactError::Backend(format!(
                "ARTIFACT_STORAGE_USE_SSL is true but the endpoint {} is plain http://: use https:// or turn use_ssl off",
                ccm_core::redact::redact_url(&self.endpoint)
            )));
        }
        Ok(())
    }

    /// The endpoint URL with its scheme.
    pub fn endpoint_url(&self) -> String {
        if self.endpoint.contains("://") {
            self.endpoint.clone()
        } else if self.use_ssl {
            format!("https://{}", self.endpoint)
        } else {
            format!("http://{}", self.endpoint)
        }
    }
}

/// The S3 [`ArtifactStore`].
#[derive(Debug, Clone)]
pub struct S3ArtifactStore {
    client: Client,
    cfg: S3Config,
    versioning: bool,
}

/// What a failed S3 call said.
struct Failure {
    status: Option<u16>,
    code: Option<String>,
    message: String,
    unreachable: bool,
}

fn failure<E>(err: SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let unreachable = matches!(
        err,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
    );
    let code = err.code().map(str::to_string);
    let message = format!("{}", aws_sdk_s3::error::DisplayErrorContext(&err));
    Failure {
        status,
        code,
        message,
        unreachable,
    }
}

impl Failure {
    fn not_found(&self) -> bool {
        self.status == Some(404)
            || matches!(
                self.code.as_deref(),
                Some("NoSuchKey" | "NotFound" | "NoSuchVersion")
            )
    }

    fn precondition(&self) -> bool {
        matches!(self.status, Some(412) | Some(409))
            || matches!(
                self.code.as_deref(),
                Some("PreconditionFailed" | "ConditionalRequestConflict")
            )
    }

    fn into_error(self, op: &str, key: &str) -> ArtifactError {
        if self.unreachable {
            ArtifactError::Unavailable(format!("{op} {key}: {}", self.message))
        } else {
            ArtifactError::Backend(format!("{op} {key}: {}", self.message))
        }
    }
}

/// The `If-None-Match` and `If-Match` values of a write condition (sent on a single put and
/// on the request completing a multipart upload).
fn condition_headers(condition: &WriteCondition) -> (Option<String>, Option<String>) {
    match condition {
        WriteCondition::Always => (None, None),
        WriteCondition::IfAbsent => (Some("*".to_string()), None),
        WriteCondition::IfMatch(etag) => (None, Some(etag.clone())),
    }
}

/// What a completed write answered: its etag and version id.
type Written = (Option<String>, Option<String>);

/// The [`Written`] of an answer's etag and version id.
fn written(etag: Option<&str>, version_id: Option<&str>) -> Written {
    (etag.map(str::to_string), version_id.map(str::to_string))
}

fn precondition_error(key: &str, condition: &WriteCondition, f: &Failure) -> ArtifactError {
    let what = match condition {
        WriteCondition::Always => "always".to_string(),
        WriteCondition::IfAbsent => "if-absent (If-None-Match: *): the key exists".to_string(),
        WriteCondition::IfMatch(e) => format!("if-match {e}: the current object differs"),
    };
    ArtifactError::PreconditionFailed {
        key: key.to_string(),
        condition: format!("{what} [{}]", f.code.as_deref().unwrap_or("412")),
    }
}

impl S3ArtifactStore {
    /// Connects, creates the bucket when missing and turns versioning on where supported.
    pub async fn connect(cfg: S3Config) -> Result<Self, ArtifactError> {
        cfg.validate()?;
        let creds = Credentials::new(
            cfg.access_key.clone(),
            cfg.secret_key.expose().to_string(),
            None,
            None,
            "ccm-artifact-storage",
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(cfg.endpoint_url())
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(creds)
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        let client = Client::from_conf(conf);
        let mut store = S3ArtifactStore {
            client,
            cfg,
            versioning: false,
        };
        store.ensure_bucket().await?;
        Ok(store)
    }

    /// The SDK client (for tools and tests that need raw access).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.cfg.bucket
    }

    /// Whether bucket versioning is on.
    pub fn versioning(&self) -> bool {
        self.versioning
    }

    async fn ensure_bucket(&mut self) -> Result<(), ArtifactError> {
        let bucket = self.cfg.bucket.clone();
        match self.client.head_bucket().bucket(&bucket).send().await {
            Ok(_) => {}
            Err(e) => {
                let f = failure(e);
                if !f.not_found() {
                    return Err(f.into_error("head bucket", &bucket));
                }
                let mut req = self.client.create_bucket().bucket(&bucket);
                if self.cfg.region != "us-east-1" {
                    req = req.create_bucket_configuration(
                        aws_sdk_s3::types::CreateBucketConfiguration::builder()
                            .location_constraint(self.cfg.region.as_str().into())
                            .build(),
                    );
                }
                if let Err(e) = req.send().await {
                    let f = failure(e);
                    if f.code.as_deref() != Some("BucketAlreadyOwnedByYou") {
                        return Err(f.into_error("create bucket", &bucket));
                    }
                }
                tracing::info!(bucket, "artifact bucket created");
            }
        }
        let enable = self
            .client
            .put_bucket_versioning()
            .bucket(&bucket)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await;
        match enable {
            Ok(_) => self.versioning = true,
            Err(e) => {
                let f = failure(e);
                if f.unreachable {
                    return Err(f.into_error("enable versioning", &bucket));
                }
                tracing::warn!(bucket, error = %f.message, "bucket versioning not supported; keeping latest only");
            }
        }
        Ok(())
    }

    fn metadata(sha: &str) -> HashMap<String, String> {
        HashMap::from([(SHA256_METADATA.to_string(), sha.to_string())])
    }

    /// The `x-amz-server-side-encryption` and `…-aws-kms-key-id` values of a write (of a
    /// single object and of the start of a multipart upload alike).
    fn sse_headers(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.cfg.sse {
            None => (None, None),
            Some(Sse::S3) => (Some(ServerSideEncryption::Aes256), None),
            Some(Sse::Kms { key_id }) => (Some(ServerSideEncryption::AwsKms), Some(key_id.clone())),
        }
    }

    async fn put_single(
        &self,
        key: &str,
        data: Bytes,
        sha: &str,
        condition: &WriteCondition,
    ) -> Result<Written, Failure> {
        let req = self
            .client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .content_type("application/yaml")
            .set_metadata(Some(Self::metadata(sha)))
            .body(ByteStream::from(data));
        let (if_none_match, if_match) = condition_headers(condition);
        let (sse, kms_key_id) = self.sse_headers();
        let out = req
            .set_if_none_match(if_none_match)
            .set_if_match(if_match)
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key_id)
            .send()
            .await
            .map_err(failure)?;
        Ok(written(out.e_tag(), out.version_id()))
    }

    async fn put_multipart(
        &self,
        key: &str,
        data: Bytes,
        sha: &str,
        condition: &WriteCondition,
    ) -> Result<Written, Failure> {
        // The condition is also sent on CompleteMultipartUpload (atomic on AWS S3), but some
        // S3-compatible servers ignore it there; checking first keeps those from silently
        // overwriting (and avoids uploading parts that would be refused).
        self.precheck(key, condition).await?;
        let (sse, kms_key_id) = self.sse_headers();
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(key)
            .content_type("application/yaml")
            .set_metadata(Some(Self::metadata(sha)))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key_id)
            .send()
            .await
            .map_err(failure)?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = self.upload_parts(key, &upload_id, data, condition).await;
        if result.is_err() {
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&self.cfg.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = abort {
                tracing::warn!(key, error = %failure(e).message, "abort of multipart upload failed");
            }
        }
        result
    }

    /// Evaluates a write condition against the current object (a 412-like failure when it
    /// does not hold).
    async fn precheck(&self, key: &str, condition: &WriteCondition) -> Result<(), Failure> {
        if *condition == WriteCondition::Always {
            return Ok(());
        }
        let current = self
            .client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await;
        let etag = match current {
            Ok(o) => Some(o.e_tag().unwrap_or_default().to_string()),
            Err(e) => {
                let f = failure(e);
                if !f.not_found() {
                    return Err(f);
                }
                None
            }
        };
        let holds = match (condition, &etag) {
            (WriteCondition::IfAbsent, None) => true,
            (WriteCondition::IfMatch(want), Some(have)) => want == have,
            _ => false,
        };
        if holds {
            Ok(())
        } else {
            Err(Failure {
                status: Some(412),
                code: Some("PreconditionFailed".to_string()),
                message: format!("current etag {etag:?}"),
                unreachable: false,
            })
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        data: Bytes,
        condition: &WriteCondition,
    ) -> Result<Written, Failure> {
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < data.len() {
            let end = (offset + self.cfg.part_size).min(data.len());
            let out = self
                .client
                .upload_part()
                .bucket(&self.cfg.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(data.slice(offset..end)))
                .send()
                .await
                .map_err(failure)?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
            offset = end;
            number += 1;
        }
        let (if_none_match, if_match) = condition_headers(condition);
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .set_if_none_match(if_none_match)
            .set_if_match(if_match)
            .send()
            .await
            .map_err(failure)?;
        Ok(written(out.e_tag(), out.version_id()))
    }

    async fn head_version(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<ArtifactMeta>, ArtifactError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await;
        match out {
            Ok(o) => Ok(Some(ArtifactMeta {
                key: key.to_string(),
                sha256: o
                    .metadata()
                    .and_then(|m| m.get(SHA256_METADATA))
                    .cloned()
                    .unwrap_or_default(),
                size: o.content_length().unwrap_or_default().max(0) as u64,
                version_id: o.version_id().map(str::to_string),
                etag: o.e_tag().map(str::to_string),
            })),
            Err(e) => {
                let f = failure(e);
                if f.not_found() {
                    Ok(None)
                } else {
                    Err(f.into_error("head", key))
                }
            }
        }
    }
}

#[async_trait]
impl ArtifactStore for S3ArtifactStore {
    async fn put(
        &self,
        key: &str,
        data: Bytes,
        condition: WriteCondition,
    ) -> Result<ArtifactMeta, ArtifactError> {
        let sha = sha256_hex(&data);
        let size = data.len() as u64;
        let result = if data.len() >= self.cfg.multipart_threshold {
            self.put_multipart(key, data, &sha, &condition).await
        } else {
            self.put_single(key, data, &sha, &condition).await
        };
        match result {
            Ok((etag, version_id)) => {
                tracing::debug!(key, size, sha256 = %sha, "artifact stored in S3");
                Ok(ArtifactMeta {
                    key: key.to_string(),
                    sha256: sha,
                    size,
                    version_id,
                    etag,
                })
            }
            Err(f) if f.precondition() => Err(precondition_error(key, &condition, &f)),
            Err(f) if f.not_found() && matches!(condition, WriteCondition::IfMatch(_)) => {
                Err(precondition_error(key, &condition, &f))
            }
            Err(f) => Err(f.into_error("put", key)),
        }
    }

    async fn get(&self, key: &str) -> Result<(Bytes, ArtifactMeta), ArtifactError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                let f = failure(e);
                if f.not_found() {
                    ArtifactError::NotFound(key.to_string())
                } else {
                    f.into_error("get", key)
                }
            })?;
        let expected = out.metadata().and_then(|m| m.get(SHA256_METADATA)).cloned();
        let version_id = out.version_id().map(str::to_string);
        let etag = out.e_tag().map(str::to_string);
        let mut body = out.body;
        let mut hasher = Sha256::new();
        let mut buf = BytesMut::new();
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| ArtifactError::Unavailable(format!("read {key}: {e}")))?
        {
            hasher.update(&chunk);
            buf.extend_from_slice(&chunk);
        }
        let actual = hex::encode(hasher.finalize());
        let expected = expected.unwrap_or_else(|| "<no sha256 metadata>".to_string());
        if expected != actual {
            tracing::error!(key, %expected, %actual, "artifact corrupted");
            return Err(ArtifactError::Corrupted {
                key: key.to_string(),
                expected,
                actual,
            });
        }
        let data = buf.freeze();
        Ok((
            data.clone(),
            ArtifactMeta {
                key: key.to_string(),
                sha256: actual,
                size: data.len() as u64,
                version_id,
                etag,
            },
        ))
    }

    async fn head(&self, key: &str) -> Result<Option<ArtifactMeta>, ArtifactError> {
        self.head_version(key, None).await
    }

    async fn versions(&self, key: &str) -> Result<Vec<ArtifactMeta>, ArtifactError> {
        if !self.versioning {
            return Ok(self.head(key).await?.into_iter().collect());
        }
        let mut ids = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_object_versions()
                .bucket(&self.cfg.bucket)
                .prefix(key)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(version_marker.clone())
                .send()
                .await
                .map_err(|e| failure(e).into_error("list versions", key))?;
            ids.extend(
                out.versions()
                    .iter()
                    .filter(|v| v.key() == Some(key))
                    .filter_map(|v| v.version_id().map(str::to_string)),
            );
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_string);
            version_marker = out.next_version_id_marker().map(str::to_string);
        }
        let mut metas = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = self.head_version(key, Some(&id)).await? {
                metas.push(m);
            }
        }
        Ok(metas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_from_use_ssl_and_secret_hidden() {
        let mut cfg = S3Config::new("minio:9000", "ak", "super-secret-value");
        assert_eq!(cfg.endpoint_url(), "http://minio:9000");
        cfg.use_ssl = true;
        assert_eq!(cfg.endpoint_url(), "https://minio:9000");
        cfg.validate().unwrap();
        assert_eq!(cfg.bucket, DEFAULT_BUCKET);
        let shown = format!("{cfg:?} {}", cfg.secret_key);
        assert!(!shown.contains("super-secret-value"), "{shown}");
    }

    #[test]
    fn use_ssl_with_a_plain_http_endpoint_is_refused_not_ignored() {
        let mut cfg = S3Config::new("http://minio:9000", "ak", "sk");
        cfg.validate().unwrap();
        cfg.use_ssl = true;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.contains("ARTIFACT_STORAGE_USE_SSL") && e.contains("http://minio:9000"),
            "{e}"
        );
        cfg.endpoint = "https://minio:9000".into();
        cfg.validate().unwrap();
        let mut cfg = S3Config::new("minio:9000", "ak", "sk");
        cfg.part_size = 1024;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("part size"));
    }
}
