//! Storage behind two small traits, one per kind of guarantee the ledger needs.
//!
//! - [`ObjectStore`]: write-once blobs, for entry objects. S3 under Object Lock
//!   ([`aws`]), or the embedded engine ([`local`]).
//! - [`IndexStore`]: each ledger's head (`META`), changed only by compare-and-set, plus one
//!   `SEQ#` item per entry. DynamoDB conditional writes, or the embedded engine.
//!
//! The commit protocol in [`crate::ledger`] is written once over these traits; every backend
//! passes the same [`conformance`] suite. Every method's doc states its contract, including
//! what a crash halfway through leaves behind.

mod around;
pub mod aws;
pub mod breaker;
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
#[cfg(any(test, feature = "test-support"))]
pub mod fault;
pub mod local;
mod open;

pub use open::{Access, BackendConfig, OpenError, open};

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use prometheus::{CounterVec, IntCounterVec, Opts, Registry};

use crate::chain::entry::{IdempotencyKey, LedgerId, Timestamp};
use crate::chain::hash::Hash;

/// Errors from a store. Variants say what went wrong, not which dependency said so.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The dependency could not be reached or refused service for now (timeouts, throttling,
    /// 5xx, a full disk). Retrying later may succeed; nothing was left half-written.
    #[error("{dependency} is unavailable: {detail}")]
    Unavailable {
        dependency: &'static str,
        detail: String,
    },
    /// The dependency is throttling (DynamoDB `ProvisionedThroughputExceededException`,
    /// `ThrottlingException`, `RequestLimitExceeded`), still after the SDK's own retries. A
    /// normal state on DynamoDB, not an outage (it does not count towards the circuit
    /// breaker). As with [`StoreError::Unavailable`], a write's outcome is unknown: an
    /// earlier attempt of the same call may have been applied.
    #[error("{dependency} is throttling requests: {detail}")]
    Throttled {
        dependency: &'static str,
        detail: String,
    },
    /// The call was refused before it was sent (an open circuit breaker): it had no effect.
    #[error(
        "{dependency} is unavailable: circuit open after repeated failures; failing fast until it recovers"
    )]
    Refused { dependency: &'static str },
    /// Stored data cannot be read back as what was written (undecodable item or object).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Which storage backend a [`Stores`] runs on (`ELEANOR_LEDGER_BACKEND`).
///
/// It derives `clap::ValueEnum` so that configuration parses this one enum rather than a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded store under the data directory.
    Local,
    /// S3 (Object Lock) for entries, DynamoDB for the index.
    Aws,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Aws => "aws",
        }
    }

    /// The dependencies its objects and index stores call, as errors, metrics and `/health`
    /// name them (one engine for both on the embedded backend).
    pub const fn dependencies(self) -> (&'static str, &'static str) {
        match self {
            Backend::Local => ("local", "local"),
            Backend::Aws => ("s3", "dynamodb"),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An S3 Object Lock retention mode (`ELEANOR_LEDGER_S3_LOCK_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LockMode {
    /// Nobody, not even the root account, can delete or shorten the retention of a version.
    #[default]
    #[value(name = "COMPLIANCE", alias = "compliance")]
    Compliance,
    /// Principals with `s3:BypassGovernanceRetention` can remove a version (for test
    /// environments; audit ledgers in production use [`LockMode::Compliance`]).
    #[value(name = "GOVERNANCE", alias = "governance")]
    Governance,
}

impl LockMode {
    /// The mode's name in the S3 API.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An object to create with [`ObjectStore::put_new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewObject {
    pub key: String,
    pub body: Bytes,
}

/// What [`ObjectStore::put_new`] did with one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written; `version` is the store's version id for it (S3's `VersionId`;
    /// `None` on stores without versions).
    Created { version: Option<String> },
    /// An object already existed under the key. It was not touched; the caller decides
    /// whether the existing bytes are the ones it meant to write.
    AlreadyExists,
}

/// How the store itself protects an object against change or deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retention {
    /// The store has no object locks (the embedded store enforces write-once by refusing
    /// overwrites).
    NotSupported,
    /// Under a lock in `mode` until `until_unix` (seconds).
    Locked { mode: LockMode, until_unix: i64 },
    /// The store supports locks, but this object has none.
    Unlocked,
}

/// An object read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub body: Bytes,
    pub version: Option<String>,
    /// The object's lock, as the read reported it.
    pub retention: Retention,
}

/// Write-once blob storage.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Creates each object whose key is absent and never replaces or alters an existing one
    /// (it reports [`PutOutcome::AlreadyExists`] instead). Outcomes are in input order.
    /// Objects are independent: a crash or error halfway leaves any subset of them written,
    /// each one whole or absent, never partial. An `Err` means some outcomes are unknown;
    /// calling again with the same objects is safe.
    async fn put_new(&self, objects: &[NewObject]) -> StoreResult<Vec<PutOutcome>>;

    /// Reads the object at `key`: exactly `version` when given (stores without versions
    /// return the object only for `None` or its own reported version), else the current one.
    /// `Ok(None)` when there is no such object. Read-only.
    async fn get(&self, key: &str, version: Option<&str>) -> StoreResult<Option<StoredObject>>;

    /// Keys starting with `prefix` and sorting strictly after `start_after`, in ascending
    /// key order, at most `limit` of them. Read-only.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>>;

    /// Like [`list`](Self::list), but every key with any version is listed, including keys
    /// whose current version is a delete marker (which `list` skips on S3): for verification,
    /// where a hidden object is still evidence. Stores without versions answer as `list`.
    async fn list_versioned(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>>;

    /// How many versions are stored under `key` (0 when absent; at most 1 on stores without
    /// versions). Verification reports an entry key with more than one. Read-only.
    async fn version_count(&self, key: &str) -> StoreResult<usize>;

    /// Bulk read for verification and export: the objects whose keys start with `prefix` and
    /// sort strictly after `start_after`, in ascending key order, at most `limit` of them, each
    /// with its current body and [`version_count`](Self::version_count). Equivalent to
    /// [`list`](Self::list) then [`get`](Self::get) (current version) and `version_count` of
    /// every key, but backends answer it in as few round trips as they can (the embedded store:
    /// one range read). Keys whose current version is a delete marker are included with
    /// `body: None`. Not a snapshot across pages; read-only.
    async fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ScannedObject>> {
        let keys = self.list(prefix, start_after, limit).await?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let object = self.get(&key, None).await?;
            let versions = self.version_count(&key).await?;
            out.push(ScannedObject {
                key,
                body: object.as_ref().map(|o| o.body.clone()),
                retention: object
                    .as_ref()
                    .map_or(Retention::Unlocked, |o| o.retention.clone()),
                version: object.and_then(|o| o.version),
                versions,
            });
        }
        Ok(out)
    }

    /// A cheap round trip proving the store is reachable and usable, for `/health`.
    async fn check(&self) -> StoreResult<()>;

    /// Releases what the store holds beyond memory (the embedded store's file lock), for every
    /// handle to it: afterwards calls fail with [`StoreError::Unavailable`]. Waits for calls
    /// in flight. The service calls it last on shutdown, so a new process (or a restarted
    /// service in the same process) can open the same data at once. Default: nothing to do.
    async fn close(&self) {}
}

/// One object as [`ObjectStore::scan`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedObject {
    pub key: String,
    /// The current version's bytes (`None` when it is a delete marker).
    pub body: Option<Bytes>,
    /// The current version's id (`None` on stores without versions).
    pub version: Option<String>,
    /// How many versions (and delete markers) the key has.
    pub versions: usize,
    /// The current version's lock ([`Retention::Unlocked`] for a delete marker).
    pub retention: Retention,
}

/// A batch whose range is claimed in `META` but whose objects and `SEQ#` items may not all
/// exist yet. It carries the entries' stored bytes, so anyone can finish writing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBatch {
    /// Seq of `entries[0]`; the batch covers `first_seq .. first_seq + entries.len()`.
    pub first_seq: u64,
    /// Stored bytes of each entry, in seq order.
    pub entries: Vec<Bytes>,
}

impl PendingBatch {
    /// The seq of the last entry (`first_seq - 1` for a batch with no entries, which no
    /// writer makes and decoders refuse).
    pub fn last_seq(&self) -> u64 {
        (self.first_seq + self.entries.len() as u64).saturating_sub(1)
    }
}

/// A ledger's head item (`META`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The highest claimed seq (0 for an empty ledger).
    pub seq_counter: u64,
    /// Hash of entry `seq_counter` ([`Hash::GENESIS`] for an empty ledger).
    pub last_hash: Hash,
    /// The most recently claimed batch. It ends at `seq_counter`. It stays here after it is
    /// written out, until the next claim replaces it. `None` for an empty ledger, and when the
    /// batch was written out in the same step as its claim ([`AtomicBatchStore::commit_batch`]).
    pub pending: Option<PendingBatch>,
}

impl Meta {
    pub fn empty() -> Meta {
        Meta {
            seq_counter: 0,
            last_hash: Hash::GENESIS,
            pending: None,
        }
    }
}

/// What [`IndexStore::compare_and_set_head`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    Applied,
    /// `META` did not have the expected `seq_counter`; this is what it holds now
    /// (`None` if the ledger does not exist).
    Conflict(Option<Meta>),
}

/// An idempotency key's `IDEM#` item: the seqs writers chose for the key's entry, every one of
/// them in a batch claimed from the head whose `seq_counter` is `base`. Of any number of
/// claims from one head at most one is applied, so at most one of `seqs` ever holds an entry
/// with this key; while `META.seq_counter == base` none is decided yet. `docs/PROTOCOL.md`
/// ("Idempotency keys") gives the rules that read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyClaim {
    /// The `seq_counter` every writer named here claims from.
    pub base: u64,
    /// Each writer's seq for the key's entry (each above `base`), in the order they joined.
    pub seqs: Vec<u64>,
}

/// What [`IndexStore::put_key_claim`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPut {
    Applied,
    /// The item was not `expected`; this is what it holds now.
    Conflict(Option<KeyClaim>),
}

/// One key item to write with [`AtomicBatchStore::commit_batch`]: `new` if the item is still
/// `expected` (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWrite {
    pub key: IdempotencyKey,
    pub expected: Option<KeyClaim>,
    pub new: KeyClaim,
}

/// What [`AtomicBatchStore::commit_batch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchCommit {
    /// `META`, every object and every item were written, in one durable step.
    Applied,
    /// `META` did not have the expected `seq_counter`; this is what it holds now (`None` if
    /// the ledger does not exist). Nothing was written.
    Conflict(Option<Meta>),
    /// Something is already stored where the batch writes, past the head `META` states (no
    /// writer of this protocol puts it there). Nothing was written.
    Occupied(Taken),
    /// A key's item was not what its [`KeyWrite`] expected (another writer changed it).
    /// Nothing was written.
    KeyMoved,
}

/// Where [`AtomicBatchStore::commit_batch`] found something already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// An object under this key.
    Object(String),
    /// A `SEQ#` item for this seq.
    Seq(u64),
}

/// One `SEQ#` index item: where entry `seq` is stored and what it hashes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqItem {
    pub seq: u64,
    pub entry_hash: Hash,
    pub prev_hash: Hash,
    pub timestamp: Timestamp,
    pub object_key: String,
    /// The exact object version written for this entry (`None` on stores without versions).
    pub version_id: Option<String>,
}

/// What [`IndexStore::put_seq_items`] did with one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqPut {
    Created,
    /// An item already existed for that seq; it was left as it is and is returned here.
    AlreadyExists(SeqItem),
}

/// Ledger heads with compare-and-set, and the per-entry index.
#[async_trait]
pub trait IndexStore: Send + Sync + 'static {
    /// The ledger's `META`, or `None` if the ledger does not exist. Read-only; strongly
    /// consistent (reflects every completed compare-and-set).
    async fn head(&self, ledger: &LedgerId) -> StoreResult<Option<Meta>>;

    /// Creates the ledger if it does not exist: lists it in [`ledgers`](Self::ledgers) and
    /// writes `META` = [`Meta::empty`] only if absent. Returns the `META` stored afterwards
    /// (the existing one when the ledger already existed). Idempotent: a crash halfway leaves
    /// at worst a listed ledger without `META`, which the next call completes.
    async fn create_ledger(&self, ledger: &LedgerId) -> StoreResult<Meta>;

    /// Replaces `META` with `new` if and only if its current `seq_counter` equals
    /// `expected_seq`, atomically. Of any number of concurrent calls with the same
    /// `expected_seq`, at most one is applied. A crash leaves either the old or the new `META`.
    async fn compare_and_set_head(
        &self,
        ledger: &LedgerId,
        expected_seq: u64,
        new: &Meta,
    ) -> StoreResult<CasOutcome>;

    /// Writes each `SEQ#` item whose seq has no item yet; never changes an existing item
    /// (returns it in [`SeqPut::AlreadyExists`] instead). Outcomes are in input order. Items
    /// are independent: a crash or error halfway leaves any subset written, each whole.
    async fn put_seq_items(&self, ledger: &LedgerId, items: &[SeqItem])
    -> StoreResult<Vec<SeqPut>>;

    /// The `SEQ#` items with `from <= seq <= to`, ascending, at most `limit`. Read-only.
    async fn seq_items(
        &self,
        ledger: &LedgerId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<SeqItem>>;

    /// The `IDEM#` item of `key` in `ledger`, or `None`. Read-only; strongly consistent.
    async fn key_claim(
        &self,
        ledger: &LedgerId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<KeyClaim>>;

    /// Writes `new` as the `IDEM#` item of `key` if and only if the item is `expected` now
    /// (`None`: there is none), atomically: of concurrent calls expecting the same value at
    /// most one is applied. A crash leaves the old item or the new one.
    async fn put_key_claim(
        &self,
        ledger: &LedgerId,
        key: &IdempotencyKey,
        expected: Option<&KeyClaim>,
        new: &KeyClaim,
    ) -> StoreResult<KeyPut>;

    /// Ledger ids sorting strictly after `after`, ascending, at most `limit`. Read-only.
    async fn ledgers(&self, after: Option<&LedgerId>, limit: usize) -> StoreResult<Vec<LedgerId>>;

    /// A cheap round trip proving the index is reachable and usable, for `/health`.
    async fn check(&self) -> StoreResult<()>;
}

/// A capability only a backend that keeps entry objects, `SEQ#` items and `META` in one
/// transactional engine has (the embedded store): a batch's claim and its write-out in one
/// step. Held as [`Stores::batches`]; backends without it leave that `None`.
#[async_trait]
pub trait AtomicBatchStore: Send + Sync + 'static {
    /// If and only if `META`'s `seq_counter` equals `expected_seq`, no object key of
    /// `objects` and no seq of `items` is taken, and every key item is what its [`KeyWrite`]
    /// expects, replaces `META` with `new`, creates every object (with no version) and item,
    /// and writes every key item, in one atomic, durable step. A crash leaves all of it or
    /// none of it, so `new` needs no pending batch.
    async fn commit_batch(
        &self,
        ledger: &LedgerId,
        expected_seq: u64,
        new: &Meta,
        writes: &BatchWrites,
    ) -> StoreResult<BatchCommit>;
}

/// What [`AtomicBatchStore::commit_batch`] writes besides `META`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchWrites {
    pub objects: Vec<NewObject>,
    pub items: Vec<SeqItem>,
    pub keys: Vec<KeyWrite>,
}

/// The two stores of one backend, as the service holds them.
#[derive(Clone)]
pub struct Stores {
    /// For `/health` and logs.
    pub backend: Backend,
    /// The Object Lock mode the objects store writes entries with; `None` for a store without
    /// Object Lock. Verification holds every entry object to it.
    pub lock_mode: Option<LockMode>,
    pub objects: Arc<dyn ObjectStore>,
    pub index: Arc<dyn IndexStore>,
    /// The same engine as `objects` and `index`, for a batch in one step; `None` on backends
    /// that take the protocol's separate steps (S3 + DynamoDB).
    pub batches: Option<Arc<dyn AtomicBatchStore>>,
}

/// Counts backend requests as `ledger_backend_requests_total{op, outcome}`. Backends count
/// what they really send (one S3 PUT is one request), so requests per record can be read off.
/// Backends that bill writes by capacity also count it as `ledger_backend_write_units_total{op}`.
#[derive(Clone)]
pub struct BackendMetrics {
    requests: IntCounterVec,
    write_units: CounterVec,
}

impl BackendMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<BackendMetrics> {
        let metrics = BackendMetrics::unregistered();
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.write_units.clone()))?;
        Ok(metrics)
    }

    /// Counters that no registry exports (tools and tests that need no `/metrics`).
    pub fn unregistered() -> BackendMetrics {
        let requests = IntCounterVec::new(
            Opts::new(
                "ledger_backend_requests_total",
                "Requests sent to the storage backend.",
            ),
            &["op", "outcome"],
        )
        .expect("static metric definition is valid");
        let write_units = CounterVec::new(
            Opts::new(
                "ledger_backend_write_units_total",
                "Write capacity units the backend reported consuming.",
            ),
            &["op"],
        )
        .expect("static metric definition is valid");
        BackendMetrics {
            requests,
            write_units,
        }
    }

    /// Counts `n` requests of kind `op` (`"put_object"`, `"update_item"`, ...) that ended
    /// with `outcome` (`"ok"`, `"conflict"`, `"error"`).
    pub fn record(&self, op: &str, outcome: &str, n: u64) {
        self.requests.with_label_values(&[op, outcome]).inc_by(n);
    }

    /// Counts `units` write capacity units consumed by a request of kind `op`.
    pub fn record_write_units(&self, op: &str, units: f64) {
        if units.is_finite() && units > 0.0 {
            self.write_units.with_label_values(&[op]).inc_by(units);
        }
    }
}
