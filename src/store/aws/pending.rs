//! Pending batches too large to ride in `META` cheaply, as S3 objects that `META` points to.
//!
//! DynamoDB bills an update by the larger of the item before and after it, in 1 KiB units,
//! and all of a ledger's items share one partition (1,000 write units per second). A batch
//! of 64 records of 1 KiB inline in `META` makes `META` ~68 KiB: ~1.06 write units per record
//! on the hot partition, on top of each record's `SEQ#` item. So a batch whose compact
//! records take more than [`INLINE_MAX_BYTES`] is written first as one object, and `META`
//! holds only its first seq, its entry count, its key and the SHA-256 of its bytes: `META`
//! stays under 1 KiB (one write unit per batch). `docs/PROTOCOL.md` ("The pending batch as an
//! object") gives the crash points, `docs/SCALING.md` the figures.
//!
//! - **Key**: `{prefix}.pending/{ledger_id}/{first_seq:018}-{digest}`, with `digest` the
//!   SHA-256 (hex) of the object's bytes. `.` starts no ledger id, so the keys lie outside
//!   every ledger's entry keys, and one lifecycle rule on `{prefix}.pending/` covers them
//!   all. The key is content-addressed: two writers that write the same batch write the same
//!   object (the second `PutObject` gets 412, which is fine: the bytes are equal), and writers
//!   that race with different batches for one head write different keys; the loser's object
//!   is referenced by nothing.
//! - **Bytes** ([`encode`]): `eleanor-ledger/pending/v1\n`, then per entry its length
//!   (u32, big endian) and its stored bytes.
//! - **Lock and expiry**: each object is written with the entry bucket's lock mode and a
//!   retain-until of now + [`PENDING_RETENTION_DAYS`] (an explicit per-object retention,
//!   which overrides any bucket default), so nobody can delete or change it while a crashed
//!   writer's batch may still need it. `ledger-init` puts a lifecycle rule on the prefix
//!   ([`lifecycle_rule`](super::admin::AwsAdmin::ensure_pending_lifecycle)) that expires
//!   them after [`PENDING_EXPIRATION_DAYS`]: S3 lifecycle never removes a locked version, and
//!   the runtime role needs no `s3:DeleteObject`.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ObjectLockMode};
use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::{AwsSettings, unavailable};
use crate::chain::entry::LedgerId;
use crate::chain::hash::Hash;
use crate::store::{BackendMetrics, LockMode, StoreError, StoreResult};

/// A batch whose compact records (or entries) take at most this many bytes stays inline in
/// `META` (which then stays within one write unit: the rest of the item is ~200 bytes); a
/// larger one is written as an object first. Inline saves a PUT (S3 bills a PUT like 8
/// DynamoDB write units) where it costs no extra write unit.
pub const INLINE_MAX_BYTES: usize = 768;
/// How long a pending object is locked: a batch left pending by a crashed writer must be
/// rolled forward (any append, read, verification, export or checkpoint of its ledger does
/// it) within this time.
pub const PENDING_RETENTION_DAYS: u32 = 30;
/// When the lifecycle rule expires a pending object (after its lock has run out).
pub const PENDING_EXPIRATION_DAYS: i32 = 31;
/// Where pending objects live, under the store's prefix.
pub const PENDING_DIR: &str = ".pending/";

const MAGIC: &[u8] = b"eleanor-ledger/pending/v1\n";
const DEPENDENCY: &str = "s3";

/// The object's bytes for `entries` (see the module documentation).
pub(super) fn encode(entries: &[Bytes]) -> Bytes {
    let total = MAGIC.len() + entries.iter().map(|e| 4 + e.len()).sum::<usize>();
    let mut out = BytesMut::with_capacity(total);
    out.put_slice(MAGIC);
    for entry in entries {
        let len = u32::try_from(entry.len()).expect("an entry is far below 4 GiB");
        out.put_u32(len);
        out.put_slice(entry);
    }
    out.freeze()
}

/// The entries of an object written by [`encode`].
pub(super) fn decode(body: &Bytes) -> Result<Vec<Bytes>, String> {
    let Some(mut rest) = body.strip_prefix(MAGIC) else {
        return Err("the pending object does not start with its format line".to_owned());
    };
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or("the pending object ends inside a length")?;
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err("the pending object ends inside an entry".to_owned());
        }
        let offset = body.len() - tail.len();
        entries.push(body.slice(offset..offset + len));
        rest = &tail[len..];
    }
    Ok(entries)
}

/// SHA-256 of an object's bytes, as `META` names it.
pub(super) fn digest(body: &[u8]) -> Hash {
    Hash(Sha256::digest(body).into())
}

/// The S3 key (prefix included) of the pending object of `ledger` from `first_seq` with bytes
/// hashing to `digest`.
pub(super) fn object_key(
    key_prefix: &str,
    ledger: &LedgerId,
    first_seq: u64,
    digest: &Hash,
) -> String {
    format!(
        "{key_prefix}{PENDING_DIR}{ledger}/{first_seq:018}-{}",
        digest.to_hex()
    )
}

/// Writes and reads pending objects in the entry bucket.
#[derive(Clone)]
pub(super) struct PendingObjects {
    client: Client,
    bucket: String,
    lock_mode: ObjectLockMode,
    metrics: BackendMetrics,
}

impl PendingObjects {
    pub(super) fn new(client: Client, settings: &AwsSettings, metrics: BackendMetrics) -> Self {
        let lock_mode = match settings.lock_mode {
            LockMode::Compliance => ObjectLockMode::Compliance,
            LockMode::Governance => ObjectLockMode::Governance,
        };
        PendingObjects {
            client,
            bucket: settings.bucket.clone(),
            lock_mode,
            metrics,
        }
    }

    /// Creates the object at `key` (a full S3 key from [`object_key`]) unless it exists; an
    /// existing one has the same bytes, since the key names their digest.
    pub(super) async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        let retention = Duration::from_secs(u64::from(PENDING_RETENTION_DAYS) * 86_400);
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .if_none_match("*")
            .object_lock_mode(self.lock_mode.clone())
            .object_lock_retain_until_date(DateTime::from(SystemTime::now() + retention))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await;
        match result {
            Ok(_) => {
                self.metrics.record("s3_put_object", "ok", 1);
                Ok(())
            }
            Err(err)
                if matches!(
                    err.code(),
                    Some("PreconditionFailed" | "ConditionalRequestConflict")
                ) =>
            {
                // Another writer wrote (or is writing) this very batch: same key, same bytes.
                // A conflicting write in flight is checked by the read that uses the object.
                self.metrics.record("s3_put_object", "conflict", 1);
                Ok(())
            }
            Err(err) => {
                self.metrics.record("s3_put_object", "error", 1);
                Err(unavailable(DEPENDENCY, err))
            }
        }
    }

    /// The bytes at `key`, checked against `digest`; `Corrupt` when absent or different (a
    /// `META` names only objects written before it).
    pub(super) async fn get(&self, key: &str, expected: &Hash) -> StoreResult<Bytes> {
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        let output = match result {
            Ok(output) => {
                self.metrics.record("s3_get_object", "ok", 1);
                output
            }
            Err(err) if err.code() == Some("NoSuchKey") => {
                self.metrics.record("s3_get_object", "ok", 1);
                return Err(StoreError::Corrupt(format!(
                    "META names the pending batch object {key}, which does not exist (expired after {PENDING_EXPIRATION_DAYS} days, or removed)"
                )));
            }
            Err(err) => {
                self.metrics.record("s3_get_object", "error", 1);
                return Err(unavailable(DEPENDENCY, err));
            }
        };
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| unavailable(DEPENDENCY, e))?
            .into_bytes();
        if digest(&body) != *expected {
            return Err(StoreError::Corrupt(format!(
                "the pending batch object {key} does not hash to the digest META names"
            )));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_object_round_trips_its_entries() {
        let entries = vec![
            Bytes::from_static(b"{\"a\":1}"),
            Bytes::new(),
            Bytes::from(vec![7u8; 3000]),
        ];
        let body = encode(&entries);
        assert_eq!(decode(&body).unwrap(), entries);
    }

    #[test]
    fn a_truncated_or_foreign_pending_object_is_refused() {
        let body = encode(&[Bytes::from_static(b"abcdef")]);
        for cut in 0..body.len() {
            let cut = body.slice(..cut);
            if cut.len() == MAGIC.len() {
                assert_eq!(decode(&cut).unwrap(), Vec::<Bytes>::new());
            } else {
                assert!(decode(&cut).is_err(), "cut at {}", cut.len());
            }
        }
        assert!(decode(&Bytes::from_static(b"something else")).is_err());
    }

    #[test]
    fn pending_keys_lie_outside_every_ledger_and_name_their_digest() {
        let ledger = LedgerId::parse("orders").unwrap();
        let d = digest(b"x");
        let key = object_key("audit/", &ledger, 5, &d);
        assert_eq!(
            key,
            format!("audit/.pending/orders/000000000000000005-{}", d.to_hex())
        );
        assert!(LedgerId::parse(".pending").is_err());
    }
}
