//! The ledger service: appends (group commit over the commit protocol), reads, verification
//! and crash recovery, over any pair of stores.
//!
//! - [`commit`]: the protocol itself, all of it (claim with content, idempotent
//!   roll-forward, recovery).
//! - [`committer`]: one group-commit task per ledger: queueing, batching, replies.
//! - [`read`]: records, heads and ledger listings.
//! - [`verify`]: re-reads and re-hashes stored entries with the pure verifier; the one
//!   verification engine of the API and `ledger-verify`.
//! - [`checkpoint`]: signed checkpoints in storage, the signing key file.

mod cap;
pub mod checkpoint;
mod commit;
mod committer;
mod read;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::chain::checkpoint::{ReceiptBody, ReceiptSignature, Signer};
use crate::chain::entry::{
    ENTRY_OVERHEAD, IdempotencyKey, LedgerId, Record, Timestamp, key_overhead,
};
use crate::chain::hash::Hash;
use crate::store::{Backend, StoreError, Stores};
use commit::Appended;
use committer::{Committer, Request};

pub use read::{
    Export, ExportCheckpointLine, ExportEndLine, ExportEntryLine, ExportLine, ExportedEntry,
    LedgerSummary, RecordPage, StoredRecord,
};
pub use verify::{VerifyOptions, VerifyRange, VerifyReport, stored_entry, verify_stores};

/// Errors of the ledger service. The HTTP layer maps each to one status and code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error("the ledger does not exist")]
    LedgerNotFound,
    #[error("no record with that seq")]
    RecordNotFound,
    #[error("the range is not valid: {0}")]
    InvalidRange(String),
    #[error("the ledger has reached its highest seq")]
    LedgerFull,
    /// Creating the ledger would make more ledgers than `ELEANOR_LEDGER_MAX_LEDGERS`.
    #[error(
        "the ledger does not exist and this service holds as many ledgers as it may ({max}, ELEANOR_LEDGER_MAX_LEDGERS); nothing was appended; append to an existing ledger, or ask an operator to raise the limit"
    )]
    LedgerLimitReached { max: u64 },
    #[error("too many appends are queued for this ledger")]
    Overloaded,
    #[error("too many writers are appending to this ledger at once; the append was not committed")]
    Contention,
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("{dependency} is unavailable: {detail}")]
    Unavailable {
        dependency: &'static str,
        detail: String,
    },
    #[error("storage failed mid-commit and the outcome is unknown: {0}")]
    OutcomeUnknown(String),
    #[error("integrity failure at {}: {detail}", seq.map_or_else(|| "an unknown seq".to_owned(), |s| format!("seq {s}")))]
    Corrupt {
        /// The seq whose data failed, when the failure names one.
        seq: Option<u64>,
        detail: String,
    },
    #[error("no signing key is configured (ELEANOR_LEDGER_SIGNING_KEY_FILE)")]
    SigningDisabled,
    #[error("the ledger has no checkpoint yet")]
    CheckpointNotFound,
    /// A key already committed with another record (or given to another record of the same
    /// batch). Nothing of the request was appended.
    #[error("{}the idempotency key was already used for a different record{}; use a new key for a new record", index.map_or_else(String::new, |i| format!("record {i}: ")), seq.map_or_else(String::new, |s| format!(" (seq {s})")))]
    IdempotencyKeyReused {
        /// The record's index in a batch request.
        index: Option<usize>,
        /// The seq that holds the key, when it is committed.
        seq: Option<u64>,
    },
    /// A writer is claiming the key right now; its outcome is not decided yet.
    #[error(
        "an append with this idempotency key is in progress; retry the append with the same key, or look it up again shortly"
    )]
    IdempotencyKeyInFlight,
    /// A batch request that gives one key to two of its records.
    #[error(
        "record {index}: its idempotency key is also the key of record {first}; each record of a batch needs its own key"
    )]
    KeyRepeatedInRequest { index: usize, first: usize },
    /// A batch request too large to be claimed in one batch.
    /// The index throttled the claim (or a read before it) until the claim's deadline. The
    /// append may still be committed (an attempt whose answer was lost may have been
    /// applied), so it is not "not stored": retry with the same key.
    #[error("{dependency} is throttling writes to this ledger: {detail}")]
    Throttled {
        dependency: &'static str,
        detail: String,
    },
    #[error("{0}")]
    BatchTooLarge(String),
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> LedgerError {
        match e {
            StoreError::Unavailable { dependency, detail } => {
                LedgerError::Unavailable { dependency, detail }
            }
            e @ StoreError::Refused { dependency } => LedgerError::Unavailable {
                dependency,
                detail: e.to_string(),
            },
            StoreError::Throttled { dependency, detail } => {
                LedgerError::Throttled { dependency, detail }
            }
            StoreError::Corrupt(detail) => LedgerError::Corrupt { seq: None, detail },
        }
    }
}

/// One record to append, and the idempotency key it was sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    pub record: Record,
    pub key: Option<IdempotencyKey>,
}

impl Append {
    pub fn new(record: Record, key: Option<IdempotencyKey>) -> Append {
        Append { record, key }
    }

    /// Bytes it adds to a batch at most (its stored size, near enough for bounding).
    pub fn stored_size(&self) -> usize {
        self.record.as_str().len() + ENTRY_OVERHEAD + key_overhead(self.key.as_ref())
    }
}

/// A record without a key.
impl From<Record> for Append {
    fn from(record: Record) -> Append {
        Append::new(record, None)
    }
}

/// Tuning and behaviour of the service (from [`crate::config`]).
#[derive(Debug, Clone)]
pub struct Options {
    /// Create a ledger on its first append (`ELEANOR_LEDGER_AUTO_CREATE`).
    pub auto_create: bool,
    /// Most ledgers appends may create (`ELEANOR_LEDGER_MAX_LEDGERS`; see [`cap`]).
    pub max_ledgers: u64,
    pub batch_max_records: usize,
    pub batch_max_bytes: usize,
    /// How long a batch waits for more appends after the first; zero takes only what is queued.
    pub batch_linger: Duration,
    /// Appends that may wait per ledger before new ones are refused (load shedding).
    pub queue_depth: usize,
    pub max_claim_attempts: u32,
    pub claim_deadline: Duration,
    /// Failures a verification records before it only counts them.
    pub max_verify_failures: usize,
    /// Signs checkpoints and append receipts (`ELEANOR_LEDGER_SIGNING_KEY_FILE`); `None`:
    /// neither is signed.
    pub signer: Option<Arc<Signer>>,
    /// How often moved ledgers are checkpointed (`ELEANOR_LEDGER_CHECKPOINT_INTERVAL`);
    /// zero: only on request.
    pub checkpoint_interval: Duration,
    /// A ledger's committer task ends after this long without an append (the next append
    /// starts a new one), so memory follows the ledgers in use, not every ledger ever written.
    pub committer_idle: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            auto_create: true,
            max_ledgers: 100_000,
            batch_max_records: 1024,
            batch_max_bytes: 320 * 1024,
            batch_linger: Duration::ZERO,
            queue_depth: 4096,
            max_claim_attempts: 64,
            claim_deadline: Duration::from_secs(10),
            max_verify_failures: 1000,
            signer: None,
            checkpoint_interval: Duration::ZERO,
            committer_idle: Duration::from_secs(60),
        }
    }
}

/// Ledger-level metrics.
#[derive(Clone)]
pub struct LedgerMetrics {
    batch_size: Histogram,
    conflicts: IntCounter,
    claims_throttled: IntCounter,
    replays: IntCounter,
    roll_forwards: IntCounter,
    corruption: IntCounter,
    verifications: prometheus::IntCounterVec,
    verify_failing: prometheus::IntGauge,
    verify_last_timestamp: prometheus::Gauge,
    /// The ledgers whose last verification through this replica found failures: the only
    /// per-ledger state behind the verification metrics, which carry no ledger label.
    failing: Arc<Mutex<HashSet<LedgerId>>>,
    verify_entries: IntCounter,
    verify_running: prometheus::IntGauge,
    committers: prometheus::IntGauge,
}

impl LedgerMetrics {
    /// Records the outcome of a verification of `ledger`: counted by outcome, the ledger added
    /// to (or, intact, removed from) the failing ones, and the time. A failure is logged with
    /// the ledger's id, which the metrics do not carry (one series per ledger would not scale).
    pub(crate) fn verified(&self, ledger: &LedgerId, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.verifications.with_label_values(&[outcome]).inc();
        let failing = {
            let mut failing = self
                .failing
                .lock()
                .expect("failing-ledgers lock is never poisoned");
            if ok {
                failing.remove(ledger);
            } else {
                failing.insert(ledger.clone());
            }
            failing.len()
        };
        self.verify_failing
            .set(i64::try_from(failing).unwrap_or(i64::MAX));
        if !ok {
            tracing::error!(ledger_id = %ledger, "verification found failures: see GET /v1/ledgers/{{id}}/verify for the report");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.verify_last_timestamp.set(now);
    }

    /// Counts entries checked by a verification in progress.
    pub(crate) fn verify_progress(&self, entries: u64) {
        self.verify_entries.inc_by(entries);
    }

    /// Counts a verification as running until the guard is dropped.
    pub(crate) fn verify_running(&self) -> impl Drop + use<> {
        struct Running(prometheus::IntGauge);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        self.verify_running.inc();
        Running(self.verify_running.clone())
    }

    pub fn new(registry: &Registry) -> prometheus::Result<LedgerMetrics> {
        let buckets = vec![
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
        ];
        let m = LedgerMetrics {
            batch_size: Histogram::with_opts(
                HistogramOpts::new(
                    "ledger_batch_size",
                    "Records per committed batch (one META update each).",
                )
                .buckets(buckets),
            )?,
            conflicts: IntCounter::new(
                "ledger_commit_conflicts_total",
                "META compare-and-set attempts lost to another writer and retried.",
            )?,
            claims_throttled: IntCounter::new(
                "ledger_claims_throttled_total",
                "META compare-and-set attempts the index throttled (DynamoDB ProvisionedThroughputExceeded/Throttling), each retried with the same claim while the claim's deadline allows.",
            )?,
            replays: IntCounter::new(
                "ledger_idempotent_replays_total",
                "Appends answered with the original receipt of their idempotency key (nothing appended).",
            )?,
            roll_forwards: IntCounter::new(
                "ledger_roll_forwards_total",
                "Pending batches found unfinished (another writer's, or left by a crash) and written out.",
            )?,
            corruption: IntCounter::new(
                "ledger_integrity_errors_total",
                "Stored data found to disagree with the committed chain.",
            )?,
            verifications: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "ledger_verifications_total",
                    "Verifications through the service, by outcome: ok (intact) or failed (failures found).",
                ),
                &["outcome"],
            )?,
            verify_failing: prometheus::IntGauge::new(
                "ledger_verify_failing_ledgers",
                "Ledgers whose last verification through this replica found failures (GET .../verify names them).",
            )?,
            verify_last_timestamp: prometheus::Gauge::new(
                "ledger_verify_last_timestamp_seconds",
                "When the last verification through this replica finished, of any ledger (Unix time).",
            )?,
            failing: Arc::default(),
            verify_entries: IntCounter::new(
                "ledger_verify_entries_total",
                "Entries checked by verifications through the service; its rate is their progress.",
            )?,
            verify_running: prometheus::IntGauge::new(
                "ledger_verifications_running",
                "Verifications through the service in progress.",
            )?,
            committers: prometheus::IntGauge::new(
                "ledger_committers",
                "Committer tasks running: ledgers appended to within the idle time.",
            )?,
        };
        registry.register(Box::new(m.batch_size.clone()))?;
        registry.register(Box::new(m.conflicts.clone()))?;
        registry.register(Box::new(m.claims_throttled.clone()))?;
        registry.register(Box::new(m.replays.clone()))?;
        registry.register(Box::new(m.roll_forwards.clone()))?;
        registry.register(Box::new(m.corruption.clone()))?;
        registry.register(Box::new(m.verifications.clone()))?;
        registry.register(Box::new(m.verify_failing.clone()))?;
        registry.register(Box::new(m.verify_last_timestamp.clone()))?;
        registry.register(Box::new(m.verify_entries.clone()))?;
        registry.register(Box::new(m.verify_running.clone()))?;
        registry.register(Box::new(m.committers.clone()))?;
        Ok(m)
    }
}

/// The answer to an append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub ledger_id: LedgerId,
    pub seq: u64,
    pub entry_hash: Hash,
    pub prev_hash: Hash,
    pub timestamp: Timestamp,
    pub object_key: String,
    /// `false` when the record is committed (durable in `META`, its seq and hash final) but
    /// not written out yet (its object and index item); it will be, by the next append, read,
    /// verification, export or checkpoint of the ledger.
    #[serde(skip)]
    pub written_out: bool,
    /// The record's key was committed before, to this entry: this is its original receipt,
    /// and nothing new was appended (`Idempotent-Replayed: true`).
    #[serde(skip)]
    pub replayed: bool,
    /// The signature over `(ledger_id, seq, entry_hash, prev_hash, timestamp)` when the
    /// service has a signing key (`docs/FORMAT.md`, "Receipts").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptSignature>,
}

impl Receipt {
    fn new(ledger: &LedgerId, appended: &Appended) -> Receipt {
        let e = &appended.entry;
        Receipt {
            ledger_id: ledger.clone(),
            seq: e.seq,
            entry_hash: e.hash,
            prev_hash: e.prev_hash,
            timestamp: e.timestamp,
            object_key: e.key.clone(),
            written_out: appended.written_out,
            replayed: appended.replayed,
            receipt: None,
        }
    }

    /// The fields a receipt signature covers.
    pub fn body(&self) -> ReceiptBody {
        ReceiptBody {
            ledger_id: self.ledger_id.clone(),
            seq: self.seq,
            entry_hash: self.entry_hash,
            prev_hash: self.prev_hash,
            timestamp: self.timestamp,
        }
    }
}

/// What a check of one store found, as `/health` names it (the cause goes to the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreCheck {
    Ok,
    /// The store did not answer, or refused service.
    Unavailable,
    /// Not called: its circuit is open.
    CircuitOpen,
    /// It answered with data that cannot be read.
    Corrupt,
}

impl StoreCheck {
    /// A stable code.
    pub fn code(self) -> &'static str {
        match self {
            StoreCheck::Ok => "ok",
            StoreCheck::Unavailable => "unavailable",
            StoreCheck::CircuitOpen => "circuit_open",
            StoreCheck::Corrupt => "corrupt",
        }
    }
}

/// What [`Ledger::check_storage`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageHealth {
    pub backend: Backend,
    pub objects: StoreCheck,
    pub index: StoreCheck,
}

/// The service. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    stores: Stores,
    options: Arc<Options>,
    metrics: LedgerMetrics,
    committers: Arc<Mutex<Committers>>,
    /// Counts the ledgers appends create, against [`Options::max_ledgers`].
    cap: Arc<cap::LedgerCap>,
    /// The latest checkpoint seen per ledger (see [`checkpoint`]).
    latest_checkpoints: Mutex<checkpoint::CheckpointCache>,
    /// What this replica committed since its last checkpoint round (see [`checkpoint`]).
    moved: Arc<checkpoint::MovedLedgers>,
}

/// The running committers. A committer's entry leaves with it (it removes its own when it
/// ends, idle), so this holds the ledgers appended to within the idle time, not every ledger
/// ever appended to.
#[derive(Default)]
struct Committers {
    closed: bool,
    /// Numbers the committers, so one that ends removes its own entries and not a successor's.
    started: u64,
    queues: HashMap<LedgerId, (u64, mpsc::Sender<Request>)>,
    /// Committers still running, including one whose queue was replaced while it finished
    /// what it had queued.
    tasks: HashMap<u64, JoinHandle<()>>,
}

/// Appends queued by [`Ledger::submit`], awaiting their batch.
#[must_use = "queued appends may be committed whether or not their outcome is awaited"]
pub struct Submitted {
    answer: oneshot::Receiver<Result<Vec<Receipt>, LedgerError>>,
    signer: Option<Arc<Signer>>,
}

impl Submitted {
    /// The receipts, in request order, once the batch is committed (signed when a key is
    /// configured), or why it was not.
    pub async fn outcome(self) -> Result<Vec<Receipt>, LedgerError> {
        // Dropped unanswered: the committer stopped, perhaps mid-commit.
        let stopped = |_| {
            LedgerError::OutcomeUnknown("the ledger's committer stopped before it answered".into())
        };
        let mut receipts = self.answer.await.map_err(stopped)??;
        if let Some(signer) = &self.signer {
            for receipt in &mut receipts {
                receipt.receipt = Some(signer.sign_receipt(&receipt.body()));
            }
        }
        Ok(receipts)
    }
}

impl Ledger {
    pub fn new(stores: Stores, options: Options, metrics: LedgerMetrics) -> Ledger {
        let rounds = options.signer.is_some() && !options.checkpoint_interval.is_zero();
        Ledger {
            inner: Arc::new(Inner {
                stores,
                cap: Arc::new(cap::LedgerCap::new(options.max_ledgers)),
                options: Arc::new(options),
                metrics,
                committers: Arc::new(Mutex::new(Committers::default())),
                latest_checkpoints: Mutex::new(checkpoint::CheckpointCache::new(
                    checkpoint::CACHED_CHECKPOINTS,
                )),
                moved: Arc::new(checkpoint::MovedLedgers::new(rounds)),
            }),
        }
    }

    /// One cheap round trip to each store, for `/health`. A failure's cause is logged here;
    /// the answer only names it.
    pub async fn check_storage(&self) -> StorageHealth {
        let stores = &self.inner.stores;
        let (objects, index) = tokio::join!(stores.objects.check(), stores.index.check());
        let check = |store: &'static str, result: Result<(), StoreError>| match result {
            Ok(()) => StoreCheck::Ok,
            Err(e) => {
                tracing::warn!(store, error = %e, "health check failed");
                match e {
                    StoreError::Unavailable { .. } | StoreError::Throttled { .. } => {
                        StoreCheck::Unavailable
                    }
                    StoreError::Refused { .. } => StoreCheck::CircuitOpen,
                    StoreError::Corrupt(_) => StoreCheck::Corrupt,
                }
            }
        };
        StorageHealth {
            backend: stores.backend,
            objects: check("objects", objects),
            index: check("index", index),
        }
    }

    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    pub(crate) fn inner_metrics(&self) -> &LedgerMetrics {
        &self.inner.metrics
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Appends one record; resolves once its batch is committed. With a key, a record whose
    /// key is committed already is answered with its original receipt (`replayed`).
    pub async fn append(
        &self,
        ledger: &LedgerId,
        append: impl Into<Append>,
    ) -> Result<Receipt, LedgerError> {
        let mut receipts = self.append_all(ledger, vec![append.into()]).await?;
        Ok(receipts.pop().expect("one receipt per record"))
    }

    /// Appends `appends` at consecutive seqs in one claim, or none of them; receipts in the
    /// same order. Each key may occur once.
    pub async fn append_all(
        &self,
        ledger: &LedgerId,
        appends: Vec<Append>,
    ) -> Result<Vec<Receipt>, LedgerError> {
        self.submit(ledger, appends)?.outcome().await
    }

    /// Checks `appends` as [`append_all`](Self::append_all) does and queues them for their
    /// ledger's next batch. From the moment this returns `Ok` the records may be committed,
    /// whether or not anyone awaits [`Submitted::outcome`]: a caller that gives up waiting
    /// must say the outcome is unknown, never that nothing was appended.
    pub fn submit(
        &self,
        ledger: &LedgerId,
        appends: Vec<Append>,
    ) -> Result<Submitted, LedgerError> {
        let options = &self.inner.options;
        let bytes: usize = appends.iter().map(Append::stored_size).sum();
        if appends.len() > options.batch_max_records || bytes > options.batch_max_bytes {
            return Err(LedgerError::BatchTooLarge(format!(
                "the records take {} records and about {bytes} bytes as entries, more than one commit takes (ELEANOR_LEDGER_BATCH_MAX_RECORDS = {}, ELEANOR_LEDGER_BATCH_MAX_BYTES = {}); send fewer records per request",
                appends.len(),
                options.batch_max_records,
                options.batch_max_bytes
            )));
        }
        let mut first_with: HashMap<&IdempotencyKey, usize> = HashMap::new();
        for (index, key) in appends
            .iter()
            .enumerate()
            .filter_map(|(i, a)| Some((i, a.key.as_ref()?)))
        {
            if let Some(&first) = first_with.get(key) {
                return Err(LedgerError::KeyRepeatedInRequest { index, first });
            }
            first_with.insert(key, index);
        }
        let (reply, answer) = oneshot::channel();
        let refused = |e| match e {
            mpsc::error::TrySendError::Full(_) => LedgerError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => LedgerError::ShuttingDown,
        };
        let queue = self.queue(ledger, None)?;
        match queue.try_send(Request { appends, reply }) {
            Err(mpsc::error::TrySendError::Closed(request)) => {
                // The ledger's committer ended, idle: start another (once; closed again means
                // the service is shutting down).
                self.queue(ledger, Some(&queue))?
                    .try_send(request)
                    .map_err(refused)?;
            }
            sent => sent.map_err(refused)?,
        }
        Ok(Submitted {
            answer,
            signer: self.inner.options.signer.clone(),
        })
    }

    fn writer(&self, ledger: &LedgerId) -> commit::Writer {
        commit::Writer::new(
            ledger.clone(),
            self.inner.stores.clone(),
            self.inner.options.clone(),
            self.inner.metrics.clone(),
            self.inner.cap.clone(),
        )
    }

    /// The ledger's queue, starting its committer if it has none; `ended`: a queue found
    /// closed (its committer ended, idle), to be replaced.
    fn queue(
        &self,
        ledger: &LedgerId,
        ended: Option<&mpsc::Sender<Request>>,
    ) -> Result<mpsc::Sender<Request>, LedgerError> {
        let mut committers = self
            .inner
            .committers
            .lock()
            .expect("committer map lock is never poisoned");
        if committers.closed {
            return Err(LedgerError::ShuttingDown);
        }
        match committers.queues.get(ledger) {
            Some((_, queue)) if ended.is_some_and(|e| e.same_channel(queue)) => {}
            Some((_, queue)) => return Ok(queue.clone()),
            None => {}
        }
        let (tx, rx) = mpsc::channel(self.inner.options.queue_depth);
        let committer = Committer::new(
            ledger.clone(),
            self.inner.stores.clone(),
            self.inner.options.clone(),
            self.inner.metrics.clone(),
            self.inner.cap.clone(),
            self.inner.moved.clone(),
        );
        let gauge = self.inner.metrics.committers.clone();
        gauge.inc();
        committers.started += 1;
        let id = committers.started;
        let (map, key) = (Arc::downgrade(&self.inner.committers), ledger.clone());
        // Spawned under the lock, so the task's own removal below comes after its insertion.
        let task = tokio::spawn(async move {
            committer.run(rx).await;
            gauge.dec();
            if let Some(map) = map.upgrade() {
                let mut committers = map.lock().expect("committer map lock is never poisoned");
                committers.tasks.remove(&id);
                if committers.queues.get(&key).is_some_and(|(i, _)| *i == id) {
                    committers.queues.remove(&key);
                }
            }
        });
        committers.tasks.insert(id, task);
        committers.queues.insert(ledger.clone(), (id, tx.clone()));
        Ok(tx)
    }

    /// Stops taking appends, lets every queued batch finish, and waits for the committers.
    pub async fn shutdown(&self) {
        let tasks = {
            let mut committers = self
                .inner
                .committers
                .lock()
                .expect("committer map lock is never poisoned");
            committers.closed = true;
            committers.queues.clear();
            std::mem::take(&mut committers.tasks)
        };
        for task in tasks.into_values() {
            let _ = task.await;
        }
    }

    /// Rolls forward the ledger's pending batch if it is not written out (the protocol's
    /// [`commit::Writer::finish_pending`]). `true` if it was.
    pub(crate) async fn finish_pending(&self, ledger: &LedgerId) -> Result<bool, LedgerError> {
        let mut writer = self.writer(ledger);
        let rolled = writer.finish_pending().await?;
        if rolled && let Some((first, last)) = writer.pending_seqs() {
            // Written out here, perhaps by a writer that died before its round: this
            // replica's round checkpoints it.
            self.inner.moved.note(ledger, first, last);
        }
        Ok(rolled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BackendMetrics;
    use crate::store::local::LocalStore;

    /// Entries of the committer map: (queues, tasks).
    fn committer_entries(ledger: &Ledger) -> (usize, usize) {
        let committers = ledger
            .inner
            .committers
            .lock()
            .expect("committer map lock is never poisoned");
        (committers.queues.len(), committers.tasks.len())
    }

    /// The committer map held a queue per ledger ever appended to (issue 20: ~2.6 KB each).
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_committer_that_ends_idle_leaves_nothing_of_its_ledger_behind() {
        let dir = tempfile::tempdir().unwrap();
        let stores = LocalStore::open(dir.path(), BackendMetrics::unregistered())
            .unwrap()
            .into_stores();
        let idle = Duration::from_millis(100);
        let ledger = Ledger::new(
            stores,
            Options {
                committer_idle: idle,
                ..Options::default()
            },
            LedgerMetrics::new(&Registry::new()).unwrap(),
        );
        let record = || Record::parse(br#"{"a":1}"#).unwrap();
        for i in 0..50 {
            let id = LedgerId::parse(&format!("l{i}")).unwrap();
            ledger.append(&id, record()).await.unwrap();
        }
        assert_eq!(committer_entries(&ledger), (50, 50));
        tokio::time::sleep(idle * 3).await;
        assert_eq!(committer_entries(&ledger), (0, 0), "all ended, idle");

        // A ledger appended to again gets a committer again, and it too leaves when idle.
        let id = LedgerId::parse("l7").unwrap();
        let receipt = ledger.append(&id, record()).await.unwrap();
        assert_eq!(receipt.seq, 2);
        assert_eq!(committer_entries(&ledger), (1, 1));
        tokio::time::sleep(idle * 3).await;
        assert_eq!(committer_entries(&ledger), (0, 0));
        ledger.shutdown().await;
    }
}
