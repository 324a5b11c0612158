//! The embedded backend: both stores in one [redb](https://docs.rs/redb) file under the data
//! directory (`<data_dir>/ledger.redb`), and the index of idempotency keys beside it
//! ([`keys`], an LSM tree in `<data_dir>/keys/`), which the entries can always rebuild.
//!
//! Why redb (see `docs/STORAGE.md`): it is pure Rust (nothing to build or install), every
//! write transaction is atomic, and a commit returns only after its pages and the new header
//! are flushed with `fsync`, so a returned commit survives a crash or power cut; the header
//! and pages carry checksums, so a torn write is detected on open and the last good commit is
//! used. One process holds the file lock: a second `ledger-server` on the same directory is
//! refused at startup with a clear message instead of sharing (and corrupting) it.
//!
//! Each trait call is one write transaction. A batch of appends is one of them
//! ([`AtomicBatchStore::commit_batch`]: the claim, the entry objects and the `SEQ#` items), so one
//! commit and one fsync cover the whole batch: group commit at the storage level.
//!
//! Its length (~700 lines and tests) is the three traits implemented over one engine; the row
//! formats are apart in [`codec`], the key index in [`keys`].

mod codec;
mod keys;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{
    Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

use super::{
    AtomicBatchStore, Backend, BackendMetrics, BatchCommit, BatchWrites, CasOutcome, IndexStore,
    KeyClaim, KeyPut, Meta, NewObject, ObjectStore, OpenError, PutOutcome, Retention,
    ScannedObject, SeqItem, SeqPut, StoreError, StoreResult, StoredObject, Stores, Taken,
};
use crate::chain::entry::{IdempotencyKey, LedgerId};
use codec::{decode_meta, decode_seq_item, encode_meta, encode_seq_item};

/// Entry objects: key -> stored bytes.
pub(super) const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// Ledger heads: ledger id -> encoded [`Meta`]. Its keys are also the list of ledgers.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `SEQ#` items: (ledger id, seq) -> encoded [`SeqItem`].
const SEQ: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("seq");
/// Per ledger, the seq of its first entry that may carry an idempotency key (absent: none
/// does); the key rows themselves are in [`keys`], a file of their own.
pub(super) const KEYED_FROM: TableDefinition<&str, u64> = TableDefinition::new("keyed_from");

const DEPENDENCY: &str = crate::store::Backend::Local.dependencies().0;
/// redb's page cache by default (`ELEANOR_LEDGER_CACHE_MIB`).
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The file name inside the data directory.
pub const DB_FILE: &str = "ledger.redb";
pub use keys::KEYS_DIR;
/// Page cache of a read-only open ([`LocalStore::open_read_only`]).
const READ_ONLY_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The embedded backend. Cheap to clone; all clones share one database handle, which
/// [`close`](ObjectStore::close) releases (and with it the file lock) for all of them.
#[derive(Clone)]
pub struct LocalStore {
    db: Arc<std::sync::RwLock<Option<Arc<Handle>>>>,
    metrics: BackendMetrics,
    /// Set when a write failed: `/health` then reports the store unusable (redb accepts no
    /// write after a failed commit until the file is reopened, which a restart does).
    failed_write: Arc<std::sync::atomic::AtomicBool>,
}

/// The operations that write (their names as counted in metrics).
const WRITES: [&str; 6] = [
    "put_objects",
    "put_seq_items",
    "cas_head",
    "commit_batch",
    "create_ledger",
    "put_key_claim",
];

/// The database, opened for reading and writing (the service) or only for reading
/// (`ledger-verify`, which must never change what it audits).
enum Handle {
    ReadWrite(Database, keys::KeyIndex),
    ReadOnly(ReadOnlyDatabase),
}

impl Handle {
    fn begin_read(&self) -> Result<ReadTransaction, redb::Error> {
        Ok(match self {
            Handle::ReadWrite(db, _) => db.begin_read()?,
            Handle::ReadOnly(db) => db.begin_read()?,
        })
    }

    /// A write transaction whose commit is not fsync'd by itself: redb makes it durable with
    /// the next durable commit (the next batch's claim, or [`close`](ObjectStore::close)).
    /// Used for entry objects and `SEQ#` items only: until then the batch's bytes are durable
    /// in `META.pending`, from which recovery rewrites them after a crash. One fsync per batch
    /// instead of three.
    fn begin_write_deferred(&self) -> Result<WriteTransaction, redb::Error> {
        let mut txn = self.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))?;
        Ok(txn)
    }

    /// The main database and the key index (a read-only open has no key index).
    fn with_keys(&self) -> Result<(&Database, &keys::KeyIndex), redb::Error> {
        match self {
            Handle::ReadWrite(db, keys) => Ok((db, keys)),
            Handle::ReadOnly(_) => Err(redb::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the embedded store was opened read-only: its idempotency keys are not read",
            ))),
        }
    }

    fn begin_write(&self) -> Result<WriteTransaction, redb::Error> {
        match self {
            Handle::ReadWrite(db, _) => Ok(db.begin_write()?),
            Handle::ReadOnly(_) => Err(redb::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the embedded store was opened read-only",
            ))),
        }
    }
}

impl LocalStore {
    /// Opens (creating if needed) the store in `data_dir`, with the default page cache.
    pub fn open(data_dir: &Path, metrics: BackendMetrics) -> Result<LocalStore, OpenError> {
        LocalStore::open_with_cache(data_dir, CACHE_BYTES, metrics)
    }

    /// [`open`](Self::open) with a page cache of `cache_bytes`.
    pub fn open_with_cache(
        data_dir: &Path,
        cache_bytes: usize,
        metrics: BackendMetrics,
    ) -> Result<LocalStore, OpenError> {
        let io = |detail: String| OpenError::Io {
            path: data_dir.to_owned(),
            detail,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| io(e.to_string()))?;
        // A bounded page cache: memory stays flat however large the ledger grows (redb's
        // default cache is 1 GiB); reads beyond it come from the OS page cache.
        let db = match Database::builder()
            .set_cache_size(cache_bytes)
            .create(data_dir.join(DB_FILE))
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(OpenError::InUse(data_dir.to_owned()));
            }
            Err(e) => return Err(io(e.to_string())),
        };
        let txn = db.begin_write().map_err(|e| io(e.to_string()))?;
        {
            txn.open_table(OBJECTS).map_err(|e| io(e.to_string()))?;
            txn.open_table(META).map_err(|e| io(e.to_string()))?;
            txn.open_table(SEQ).map_err(|e| io(e.to_string()))?;
            txn.open_table(KEYED_FROM).map_err(|e| io(e.to_string()))?;
        }
        txn.commit().map_err(|e| io(e.to_string()))?;
        // Opened after the main file, whose lock keeps a second process out of both.
        let keys = keys::KeyIndex::open(data_dir).map_err(|e| io(e.to_string()))?;
        Ok(LocalStore::from_handle(
            Handle::ReadWrite(db, keys),
            metrics,
        ))
    }

    /// Opens an existing store in `data_dir` for reading only: nothing is created, repaired or
    /// written. redb allows no reader beside a running writer, so this is refused with
    /// [`OpenError::InUse`] while a `ledger-server` has the directory open.
    pub fn open_read_only(
        data_dir: &Path,
        metrics: BackendMetrics,
    ) -> Result<LocalStore, OpenError> {
        let path = data_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(OpenError::Io {
                path: data_dir.to_owned(),
                detail: format!("{} does not exist", path.display()),
            });
        }
        // A bounded page cache: a verification reads the file once, front to back.
        let db = match redb::Builder::new()
            .set_cache_size(READ_ONLY_CACHE_BYTES)
            .open_read_only(&path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(OpenError::InUse(data_dir.to_owned()));
            }
            Err(e) => {
                return Err(OpenError::Io {
                    path: data_dir.to_owned(),
                    detail: e.to_string(),
                });
            }
        };
        Ok(LocalStore::from_handle(Handle::ReadOnly(db), metrics))
    }

    fn from_handle(handle: Handle, metrics: BackendMetrics) -> LocalStore {
        LocalStore {
            db: Arc::new(std::sync::RwLock::new(Some(Arc::new(handle)))),
            metrics,
            failed_write: Arc::default(),
        }
    }

    /// Both trait objects over this one store.
    pub fn into_stores(self) -> Stores {
        let this = Arc::new(self);
        Stores {
            backend: Backend::Local,
            lock_mode: None,
            objects: this.clone(),
            index: this.clone(),
            batches: Some(this),
        }
    }

    /// Runs blocking database work off the async runtime and counts it as one request.
    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        work: impl FnOnce(&Handle) -> Result<T, redb::Error> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self
            .db
            .read()
            .expect("handle lock is never poisoned")
            .clone();
        let Some(db) = db else {
            return Err(unavailable("the embedded store is closed".into()));
        };
        let result = tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| unavailable(format!("storage task failed: {e}")))?
            .map_err(|e| match e {
                redb::Error::Corrupted(detail) => StoreError::Corrupt(detail),
                other => unavailable(other.to_string()),
            });
        if let Err(StoreError::Unavailable { detail, .. }) = &result
            && WRITES.contains(&op)
        {
            // redb refuses every write after a failed commit until the file is reopened.
            tracing::error!(op, error = %detail, "an embedded store write failed; restart the service to reopen it");
            self.failed_write
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.metrics
            .record(op, if result.is_ok() { "ok" } else { "error" }, 1);
        result
    }
}

fn unavailable(detail: String) -> StoreError {
    StoreError::Unavailable {
        dependency: DEPENDENCY,
        detail,
    }
}

/// Decoding failures are reported as corruption through redb's error type.
pub(super) fn corrupt(what: &str, e: impl std::fmt::Display) -> redb::Error {
    redb::Error::Corrupted(format!("{what}: {e}"))
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn close(&self) {
        let Some(handle) = self
            .db
            .write()
            .expect("handle lock is never poisoned")
            .take()
        else {
            return;
        };
        // Calls already running hold their own reference for a moment; the file lock goes
        // when the last one does.
        let mut handle = handle;
        for _ in 0..10_000 {
            match Arc::try_unwrap(handle) {
                Ok(db) => {
                    // Make deferred commits durable before the files are released.
                    if let Handle::ReadWrite(_, keys) = &db {
                        if let Err(e) = db.begin_write().and_then(|txn| Ok(txn.commit()?)) {
                            tracing::error!(error = %e, "final commit of the embedded store failed; recovery will redo the last batch");
                        }
                        if let Err(e) = keys.flush() {
                            tracing::error!(error = %e, "final commit of the key index failed; the next open rebuilds what it lacks from the entries");
                        }
                    }
                    drop(db);
                    return;
                }
                Err(still_shared) => handle = still_shared,
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        tracing::error!(
            "the embedded store is still in use 10 s after close; its lock is released when that work ends"
        );
    }

    async fn put_new(&self, objects: &[NewObject]) -> StoreResult<Vec<PutOutcome>> {
        let objects = objects.to_vec();
        self.run("put_objects", move |db| {
            let txn = db.begin_write_deferred()?;
            let mut outcomes = Vec::with_capacity(objects.len());
            {
                let mut table = txn.open_table(OBJECTS)?;
                for object in &objects {
                    if table.get(object.key.as_str())?.is_some() {
                        outcomes.push(PutOutcome::AlreadyExists);
                    } else {
                        table.insert(object.key.as_str(), object.body.as_ref())?;
                        outcomes.push(PutOutcome::Created { version: None });
                    }
                }
            }
            txn.commit()?;
            Ok(outcomes)
        })
        .await
    }

    async fn get(&self, key: &str, version: Option<&str>) -> StoreResult<Option<StoredObject>> {
        if version.is_some() {
            // This store has no versions: a versioned read names something that is not here.
            return Ok(None);
        }
        let key = key.to_owned();
        self.run("get_object", move |db| {
            let table = db.begin_read()?.open_table(OBJECTS)?;
            Ok(table.get(key.as_str())?.map(|v| StoredObject {
                body: Bytes::copy_from_slice(v.value()),
                version: None,
                retention: Retention::NotSupported,
            }))
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let (prefix, start_after) = (prefix.to_owned(), start_after.map(str::to_owned));
        self.run("list_objects", move |db| {
            let table = db.begin_read()?.open_table(OBJECTS)?;
            let start = match &start_after {
                Some(after) if after.as_str() >= prefix.as_str() => after.as_str(),
                _ => prefix.as_str(),
            };
            let mut keys = Vec::new();
            for item in table.range(start..)? {
                let (key, _) = item?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) || keys.len() == limit {
                    break;
                }
                if start_after.as_deref() != Some(key) {
                    keys.push(key.to_owned());
                }
            }
            Ok(keys)
        })
        .await
    }

    /// One read transaction over one key range.
    async fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ScannedObject>> {
        let (prefix, start_after) = (prefix.to_owned(), start_after.map(str::to_owned));
        self.run("scan_objects", move |db| {
            let table = db.begin_read()?.open_table(OBJECTS)?;
            let start = match &start_after {
                Some(after) if after.as_str() >= prefix.as_str() => after.as_str(),
                _ => prefix.as_str(),
            };
            let mut out = Vec::with_capacity(limit.min(4096));
            for item in table.range(start..)? {
                let (key, value) = item?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) || out.len() == limit {
                    break;
                }
                if start_after.as_deref() != Some(key) {
                    out.push(ScannedObject {
                        key: key.to_owned(),
                        body: Some(Bytes::copy_from_slice(value.value())),
                        version: None,
                        versions: 1,
                        retention: Retention::NotSupported,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn list_versioned(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        // No versions, no delete markers: every key is listed either way.
        self.list(prefix, start_after, limit).await
    }

    async fn version_count(&self, key: &str) -> StoreResult<usize> {
        let key = key.to_owned();
        self.run("count_versions", move |db| {
            let table = db.begin_read()?.open_table(OBJECTS)?;
            Ok(usize::from(table.get(key.as_str())?.is_some()))
        })
        .await
    }

    async fn check(&self) -> StoreResult<()> {
        if self.failed_write.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(unavailable(
                "a write failed (disk full or I/O error?); the store refuses writes until the service restarts".into(),
            ));
        }
        self.run("check", |db| {
            db.begin_read()?.open_table(OBJECTS)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl IndexStore for LocalStore {
    async fn head(&self, ledger: &LedgerId) -> StoreResult<Option<Meta>> {
        let ledger = ledger.clone();
        self.run("get_head", move |db| {
            let table = db.begin_read()?.open_table(META)?;
            table
                .get(ledger.as_str())?
                .map(|v| decode_meta(v.value()))
                .transpose()
        })
        .await
    }

    async fn create_ledger(&self, ledger: &LedgerId) -> StoreResult<Meta> {
        let ledger = ledger.clone();
        self.run("create_ledger", move |db| {
            let txn = db.begin_write()?;
            let meta = {
                let mut table = txn.open_table(META)?;
                let existing = table
                    .get(ledger.as_str())?
                    .map(|v| decode_meta(v.value()))
                    .transpose()?;
                match existing {
                    Some(meta) => meta,
                    None => {
                        table.insert(ledger.as_str(), encode_meta(&Meta::empty()).as_slice())?;
                        Meta::empty()
                    }
                }
            };
            txn.commit()?;
            Ok(meta)
        })
        .await
    }

    async fn compare_and_set_head(
        &self,
        ledger: &LedgerId,
        expected_seq: u64,
        new: &Meta,
    ) -> StoreResult<CasOutcome> {
        let (ledger, encoded) = (ledger.clone(), encode_meta(new));
        let result = self
            .run("cas_head", move |db| {
                let txn = db.begin_write()?;
                let outcome = {
                    let mut table = txn.open_table(META)?;
                    let current = table
                        .get(ledger.as_str())?
                        .map(|v| decode_meta(v.value()))
                        .transpose()?;
                    match current {
                        Some(meta) if meta.seq_counter == expected_seq => {
                            table.insert(ledger.as_str(), encoded.as_slice())?;
                            CasOutcome::Applied
                        }
                        other => CasOutcome::Conflict(other),
                    }
                };
                txn.commit()?;
                Ok(outcome)
            })
            .await;
        if let Ok(CasOutcome::Conflict(_)) = result {
            self.metrics.record("cas_head", "conflict", 1);
        }
        result
    }

    async fn put_seq_items(
        &self,
        ledger: &LedgerId,
        items: &[SeqItem],
    ) -> StoreResult<Vec<SeqPut>> {
        let (ledger, items) = (ledger.clone(), items.to_vec());
        self.run("put_seq_items", move |db| {
            let txn = db.begin_write_deferred()?;
            let mut outcomes = Vec::with_capacity(items.len());
            {
                let mut table = txn.open_table(SEQ)?;
                for item in &items {
                    let key = (ledger.as_str(), item.seq);
                    let existing = table
                        .get(key)?
                        .map(|v| decode_seq_item(item.seq, v.value()))
                        .transpose()?;
                    match existing {
                        Some(existing) => outcomes.push(SeqPut::AlreadyExists(existing)),
                        None => {
                            table.insert(key, encode_seq_item(item).as_slice())?;
                            outcomes.push(SeqPut::Created);
                        }
                    }
                }
            }
            txn.commit()?;
            Ok(outcomes)
        })
        .await
    }

    async fn seq_items(
        &self,
        ledger: &LedgerId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<SeqItem>> {
        let ledger = ledger.clone();
        self.run("query_seq_items", move |db| {
            let table = db.begin_read()?.open_table(SEQ)?;
            let mut items = Vec::new();
            if from > to {
                return Ok(items);
            }
            for item in table
                .range((ledger.as_str(), from)..=(ledger.as_str(), to))?
                .take(limit)
            {
                let (key, value) = item?;
                items.push(decode_seq_item(key.value().1, value.value())?);
            }
            Ok(items)
        })
        .await
    }

    async fn key_claim(
        &self,
        ledger: &LedgerId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<KeyClaim>> {
        let (ledger, key) = (ledger.clone(), key.clone());
        self.run("get_key_claim", move |db| {
            let (main, keys) = db.with_keys()?;
            keys.get(main, &ledger, &key)
        })
        .await
    }

    async fn put_key_claim(
        &self,
        ledger: &LedgerId,
        key: &IdempotencyKey,
        expected: Option<&KeyClaim>,
        new: &KeyClaim,
    ) -> StoreResult<KeyPut> {
        let (ledger, key) = (ledger.clone(), key.clone());
        let (expected, new) = (expected.cloned(), new.clone());
        let result = self
            .run("put_key_claim", move |db| {
                let (main, keys) = db.with_keys()?;
                keys.put(main, &ledger, &key, expected.as_ref(), &new)
            })
            .await;
        if let Ok(KeyPut::Conflict(_)) = result {
            self.metrics.record("put_key_claim", "conflict", 1);
        }
        result
    }

    async fn ledgers(&self, after: Option<&LedgerId>, limit: usize) -> StoreResult<Vec<LedgerId>> {
        let after = after.cloned();
        self.run("list_ledgers", move |db| {
            let table = db.begin_read()?.open_table(META)?;
            let mut ids = Vec::new();
            let range = match &after {
                Some(a) => table.range::<&str>((
                    std::ops::Bound::Excluded(a.as_str()),
                    std::ops::Bound::Unbounded,
                ))?,
                None => table.range::<&str>(..)?,
            };
            for item in range.take(limit) {
                let (key, _) = item?;
                ids.push(LedgerId::parse(key.value()).map_err(|e| corrupt("ledger id", e))?);
            }
            Ok(ids)
        })
        .await
    }

    async fn check(&self) -> StoreResult<()> {
        ObjectStore::check(self).await
    }
}

#[async_trait]
impl AtomicBatchStore for LocalStore {
    /// One write transaction, fsync'd: `META`, the objects and the items together. Nothing of
    /// the batch is written twice (no pending batch in `META`), and one commit per batch
    /// instead of three.
    async fn commit_batch(
        &self,
        ledger: &LedgerId,
        expected_seq: u64,
        new: &Meta,
        writes: &BatchWrites,
    ) -> StoreResult<BatchCommit> {
        let (ledger, meta, writes) = (ledger.clone(), encode_meta(new), writes.clone());
        let new_seq = new.seq_counter;
        let result = self
            .run("commit_batch", move |db| {
                if writes.keys.is_empty() {
                    let txn = db.begin_write()?;
                    let outcome = write_batch(&txn, &ledger, expected_seq, &meta, &writes)?;
                    if outcome == BatchCommit::Applied {
                        txn.commit()?;
                    }
                    // Otherwise dropped: the transaction aborts, and whatever it wrote with it.
                    return Ok(outcome);
                }
                let (main, keys) = db.with_keys()?;
                keys.commit_batch(main, &ledger, expected_seq, &meta, new_seq, &writes)
            })
            .await;
        if let Ok(BatchCommit::Conflict(_) | BatchCommit::Occupied(_) | BatchCommit::KeyMoved) =
            result
        {
            self.metrics.record("commit_batch", "conflict", 1);
        }
        result
    }
}

/// The writes of [`AtomicBatchStore::commit_batch`] inside `txn`, which the caller commits only if
/// they were all made.
pub(super) fn write_batch(
    txn: &WriteTransaction,
    ledger: &LedgerId,
    expected_seq: u64,
    meta: &[u8],
    writes: &BatchWrites,
) -> Result<BatchCommit, redb::Error> {
    let mut heads = txn.open_table(META)?;
    let current = heads
        .get(ledger.as_str())?
        .map(|v| decode_meta(v.value()))
        .transpose()?;
    match current {
        Some(current) if current.seq_counter == expected_seq => {}
        other => return Ok(BatchCommit::Conflict(other)),
    }
    // An insert that replaced something is undone with the rest: the caller aborts.
    if !writes.keys.is_empty() {
        // The first keyed batch of the ledger marks where the key index must look.
        let mut keyed_from = txn.open_table(KEYED_FROM)?;
        if keyed_from.get(ledger.as_str())?.is_none() {
            keyed_from.insert(ledger.as_str(), expected_seq + 1)?;
        }
    }
    let mut table = txn.open_table(OBJECTS)?;
    for object in &writes.objects {
        if table
            .insert(object.key.as_str(), object.body.as_ref())?
            .is_some()
        {
            return Ok(BatchCommit::Occupied(Taken::Object(object.key.clone())));
        }
    }
    let mut table = txn.open_table(SEQ)?;
    for item in &writes.items {
        let key = (ledger.as_str(), item.seq);
        if table
            .insert(key, encode_seq_item(item).as_slice())?
            .is_some()
        {
            return Ok(BatchCommit::Occupied(Taken::Seq(item.seq)));
        }
    }
    heads.insert(ledger.as_str(), meta)?;
    Ok(BatchCommit::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = LocalStore::open(dir.path(), BackendMetrics::unregistered()).unwrap();
        let second = LocalStore::open(dir.path(), BackendMetrics::unregistered());
        assert!(matches!(second, Err(OpenError::InUse(_))));
    }

    /// The key index may lose what it wrote since its last durable commit (a crash), or the
    /// whole file: the keys are rebuilt from the entries, which hold them.
    #[tokio::test]
    async fn a_lost_key_index_is_rebuilt_from_the_entries() {
        use crate::chain::entry::{EntryHeader, Record, Timestamp, encode};
        use crate::chain::hash::Hash;
        use crate::store::{KeyWrite, NewObject};

        let dir = tempfile::tempdir().unwrap();
        let ledger = LedgerId::parse("rebuilt").unwrap();
        let key = IdempotencyKey::parse("k-2").unwrap();
        let store = LocalStore::open(dir.path(), BackendMetrics::unregistered()).unwrap();
        store.create_ledger(&ledger).await.unwrap();
        // Two entries, the second keyed, committed in one step as a writer does.
        let mut prev_hash = Hash::GENESIS;
        let mut objects = Vec::new();
        for seq in 1..=2u64 {
            let header = EntryHeader {
                ledger_id: ledger.clone(),
                seq,
                prev_hash,
                timestamp: Timestamp::from_unix_micros(1_764_000_000_000_000).unwrap(),
                idempotency_key: (seq == 2).then(|| key.clone()),
            };
            let bytes = encode(&header, &Record::parse(b"{}").unwrap());
            prev_hash = Hash::of_entry(&bytes);
            objects.push(NewObject {
                key: crate::chain::keys::entry_key(&ledger, seq),
                body: Bytes::from(bytes),
            });
        }
        let meta = Meta {
            seq_counter: 2,
            last_hash: prev_hash,
            pending: None,
        };
        let writes = BatchWrites {
            objects,
            items: Vec::new(),
            keys: vec![KeyWrite {
                key: key.clone(),
                expected: None,
                new: KeyClaim {
                    base: 0,
                    seqs: vec![2],
                },
            }],
        };
        assert_eq!(
            store
                .commit_batch(&ledger, 0, &meta, &writes)
                .await
                .unwrap(),
            BatchCommit::Applied
        );
        ObjectStore::close(&store).await;
        std::fs::remove_dir_all(dir.path().join(KEYS_DIR)).unwrap();

        let reopened = LocalStore::open(dir.path(), BackendMetrics::unregistered()).unwrap();
        let found = reopened.key_claim(&ledger, &key).await.unwrap();
        assert_eq!(found.map(|c| c.seqs), Some(vec![2]), "rebuilt from entry 2");
        let other = IdempotencyKey::parse("k-1").unwrap();
        assert_eq!(reopened.key_claim(&ledger, &other).await.unwrap(), None);
        // And a writer that believed the key new is refused.
        let mut again = writes.clone();
        again.keys[0].new.seqs = vec![3];
        let next = Meta {
            seq_counter: 3,
            ..meta
        };
        assert_eq!(
            reopened
                .commit_batch(&ledger, 2, &next, &again)
                .await
                .unwrap(),
            BatchCommit::KeyMoved
        );
    }
}
