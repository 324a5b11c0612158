//! [`ObjectStore`] on S3 with Object Lock.
//!
//! Object keys are relative to [`AwsSettings::prefix`]: key `k` is stored at S3 key
//! `prefix + k`, and [`list`](ObjectStore::list) returns keys with the prefix removed.
//!
//! Every object is created with `If-None-Match: *` (S3 refuses with 412 when the key has a
//! current version, and of racing writers exactly one wins), the configured Object Lock mode
//! with retain-until = now + the retention, and a SHA-256 checksum that S3 verifies before it
//! stores the bytes. Reads ask S3 to return the stored checksum, which the SDK checks.
//!
//! S3 actions used at run time: `s3:PutObject` and `s3:PutObjectRetention` (the lock headers),
//! `s3:GetObject` and `s3:GetObjectVersion`, `s3:ListBucket` (`ListObjectsV2`, `HeadBucket`),
//! `s3:ListBucketVersions` (`ListObjectVersions`).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ObjectLockMode};
use futures::{StreamExt, TryStreamExt};

use super::{AwsSettings, unavailable};
use crate::store::LockMode;
use crate::store::{
    BackendMetrics, NewObject, ObjectStore, PutOutcome, Retention, ScannedObject, StoreError,
    StoreResult, StoredObject,
};

const DEPENDENCY: &str = "s3";
/// At most this many PUTs of one [`ObjectStore::put_new`] call are in flight at once.
const PUT_CONCURRENCY: usize = 32;
/// S3's largest page for the list calls.
const MAX_PAGE: usize = 1000;
/// How often a PUT that S3 answered with 409 `ConditionalRequestConflict` (a racing
/// conditional write on the same key was in progress) is sent again.
const CONFLICT_RETRIES: u32 = 3;

/// Entry objects in one S3 bucket under one prefix.
#[derive(Clone)]
pub struct S3Objects {
    client: Client,
    bucket: String,
    prefix: String,
    lock_mode: ObjectLockMode,
    retention: Duration,
    metrics: BackendMetrics,
}

impl S3Objects {
    pub(super) fn new(
        client: Client,
        settings: &AwsSettings,
        metrics: BackendMetrics,
    ) -> S3Objects {
        let prefix = super::key_prefix(settings);
        let lock_mode = match settings.lock_mode {
            LockMode::Compliance => ObjectLockMode::Compliance,
            LockMode::Governance => ObjectLockMode::Governance,
        };
        let retention = Duration::from_secs(u64::from(settings.retention_days) * 86_400);
        S3Objects {
            client,
            bucket: settings.bucket.clone(),
            prefix,
            lock_mode,
            retention,
            metrics,
        }
    }

    /// `ListObjectVersions` over `prefix`, after `start_after`: each key (relative to the
    /// store's prefix) with its current version id (`None` when that is a delete marker) and
    /// how many versions and delete markers it has, at most `limit` keys, in key order.
    async fn list_versions(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Option<String>, usize)>> {
        // (key, current version id or None for a delete marker, versions seen)
        let mut keys: Vec<(String, Option<String>, usize)> = Vec::new();
        let full_prefix = self.full_key(prefix);
        let (mut key_marker, mut version_marker) =
            (start_after.map(|k| self.full_key(k)), None::<String>);
        'pages: loop {
            let result = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await;
            self.record("s3_list_object_versions", &result);
            let output = result.map_err(|e| unavailable(DEPENDENCY, e))?;
            let versions = output
                .versions()
                .iter()
                .map(|v| (v.key(), v.is_latest(), v.version_id(), false));
            let markers = output
                .delete_markers()
                .iter()
                .map(|m| (m.key(), m.is_latest(), m.version_id(), true));
            let mut seen: Vec<_> = versions.chain(markers).collect();
            seen.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, latest, version, is_marker) in seen {
                let Some(key) = key.and_then(|k| k.strip_prefix(self.prefix.as_str())) else {
                    continue;
                };
                if keys.last().is_none_or(|(k, _, _)| k != key) {
                    if keys.len() == limit {
                        break 'pages;
                    }
                    keys.push((key.to_owned(), None, 0));
                }
                let last = keys.last_mut().expect("pushed above");
                last.2 += 1;
                if latest == Some(true) && !is_marker {
                    last.1 = version.map(str::to_owned);
                }
            }
            if output.is_truncated() != Some(true) {
                break;
            }
            key_marker = output.next_key_marker().map(str::to_owned);
            version_marker = output.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(keys)
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn record<T, E>(&self, op: &str, result: &Result<T, E>) {
        self.metrics
            .record(op, if result.is_ok() { "ok" } else { "error" }, 1);
    }

    async fn put_one(&self, object: &NewObject) -> StoreResult<PutOutcome> {
        let key = self.full_key(&object.key);
        let mut conflicts = 0;
        loop {
            let retain_until = DateTime::from(SystemTime::now() + self.retention);
            let result = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .body(ByteStream::from(object.body.clone()))
                .if_none_match("*")
                .object_lock_mode(self.lock_mode.clone())
                .object_lock_retain_until_date(retain_until)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .send()
                .await;
            match result {
                Ok(output) => {
                    self.metrics.record("s3_put_object", "ok", 1);
                    return Ok(PutOutcome::Created {
                        version: output.version_id().map(str::to_owned),
                    });
                }
                Err(err) if err.code() == Some("PreconditionFailed") => {
                    self.metrics.record("s3_put_object", "conflict", 1);
                    return Ok(PutOutcome::AlreadyExists);
                }
                Err(err)
                    if err.code() == Some("ConditionalRequestConflict")
                        && conflicts < CONFLICT_RETRIES =>
                {
                    // Another conditional write to this key was in flight; S3 asks to retry,
                    // and the retry gets either 412 (the other one won) or 200.
                    self.metrics.record("s3_put_object", "conflict", 1);
                    conflicts += 1;
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(conflicts))).await;
                }
                Err(err) => {
                    self.metrics.record("s3_put_object", "error", 1);
                    return Err(unavailable(DEPENDENCY, err));
                }
            }
        }
    }
}

/// Whether a failed read means "no such object (version)" rather than a failure.
fn is_absent<E: ProvideErrorMetadata, R>(
    err: &SdkError<E, R>,
    status: Option<u16>,
    versioned: bool,
) -> bool {
    match err.code() {
        Some("NoSuchKey" | "NoSuchVersion") => true,
        // A malformed version id (S3 checks its syntax) names no version of this key.
        Some("InvalidArgument") => versioned,
        _ => match status {
            Some(404) => true,
            // GET of a version that is a delete marker.
            Some(405) => versioned,
            _ => false,
        },
    }
}

#[async_trait]
impl ObjectStore for S3Objects {
    async fn put_new(&self, objects: &[NewObject]) -> StoreResult<Vec<PutOutcome>> {
        // Collected first: a lazy `map` in the stream trips the compiler's higher-ranked
        // lifetime check for `Send` futures.
        let puts: Vec<_> = objects.iter().map(|o| self.put_one(o)).collect();
        futures::stream::iter(puts)
            .buffered(PUT_CONCURRENCY)
            .try_collect()
            .await
    }

    async fn get(&self, key: &str, version: Option<&str>) -> StoreResult<Option<StoredObject>> {
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_version_id(version.map(str::to_owned))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(err) => {
                let status = err.raw_response().map(|r| r.status().as_u16());
                if is_absent(&err, status, version.is_some()) {
                    self.metrics.record("s3_get_object", "ok", 1);
                    return Ok(None);
                }
                self.metrics.record("s3_get_object", "error", 1);
                return Err(unavailable(DEPENDENCY, err));
            }
        };
        let version = output.version_id().map(str::to_owned);
        let retention = match (
            output.object_lock_mode(),
            output.object_lock_retain_until_date(),
        ) {
            (Some(ObjectLockMode::Compliance), Some(until)) => Retention::Locked {
                mode: LockMode::Compliance,
                until_unix: until.secs(),
            },
            (Some(ObjectLockMode::Governance), Some(until)) => Retention::Locked {
                mode: LockMode::Governance,
                until_unix: until.secs(),
            },
            (Some(other), Some(_)) => {
                // S3 defines only the two modes above; a lock we cannot name protects nothing
                // we can vouch for, so verification reports the object as not locked.
                tracing::warn!(
                    key,
                    mode = other.as_str(),
                    "S3 reported an unknown Object Lock mode"
                );
                Retention::Unlocked
            }
            _ => Retention::Unlocked,
        };
        let body = output.body.collect().await.map(|b| b.into_bytes());
        self.record("s3_get_object", &body);
        let body = body.map_err(|e| unavailable(DEPENDENCY, e))?;
        Ok(Some(StoredObject {
            body,
            version,
            retention,
        }))
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        while keys.len() < limit {
            let page = (limit - keys.len()).min(MAX_PAGE) as i32;
            let result = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full_key(prefix))
                .set_start_after(start_after.map(|s| self.full_key(s)))
                .set_continuation_token(token.take())
                .max_keys(page)
                .send()
                .await;
            self.record("s3_list_objects_v2", &result);
            let output = result.map_err(|e| unavailable(DEPENDENCY, e))?;
            for object in output.contents() {
                let Some(full) = object.key() else { continue };
                let key = full.strip_prefix(self.prefix.as_str()).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "S3 listed {full:?}, which is outside the prefix {:?}",
                        self.prefix
                    ))
                })?;
                if keys.len() < limit {
                    keys.push(key.to_owned());
                }
            }
            match output.next_continuation_token() {
                Some(next) if output.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(keys)
    }

    /// Counts the versions *and delete markers* under the exact key: a delete marker on an
    /// entry key is as much a change to it as a new version, and verification should report
    /// both.
    async fn list_versioned(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let listed = self.list_versions(prefix, start_after, limit).await?;
        Ok(listed.into_iter().map(|(key, _, _)| key).collect())
    }

    async fn version_count(&self, key: &str) -> StoreResult<usize> {
        let listed = self.list_versions(key, None, 1).await?;
        Ok(listed
            .into_iter()
            .find(|(k, _, _)| k == key)
            .map_or(0, |(_, _, count)| count))
    }

    /// One `ListObjectVersions` walk gives every key with all its versions and delete
    /// markers (so a key whose current version is a delete marker is still seen), then the
    /// current versions are read concurrently.
    async fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ScannedObject>> {
        let keys = self.list_versions(prefix, start_after, limit).await?;
        futures::stream::iter(keys.into_iter().map(|(key, current, versions)| async move {
            let object = match &current {
                Some(version) => self.get(&key, Some(version)).await?,
                None => None,
            };
            let retention = object
                .as_ref()
                .map_or(Retention::Unlocked, |o| o.retention.clone());
            Ok::<_, StoreError>(ScannedObject {
                key,
                body: object.map(|o| o.body),
                version: current,
                versions,
                retention,
            })
        }))
        .buffered(PUT_CONCURRENCY)
        .try_collect()
        .await
    }

    async fn check(&self) -> StoreResult<()> {
        let result = self.client.head_bucket().bucket(&self.bucket).send().await;
        self.record("s3_head_bucket", &result);
        result.map(|_| ()).map_err(|e| unavailable(DEPENDENCY, e))
    }
}
