//! The embedded store's index of idempotency keys: an LSM tree ([fjall](https://docs.rs/fjall))
//! in `<data_dir>/keys/`, beside `ledger.redb` (`docs/STORAGE.md`, "The key index").
//!
//! Why not a redb table: keys are random, so in a B-tree every key row lands on a different
//! leaf, and every commit rewrites the scattered pages it touched. In the batch's own
//! transaction that measured 0.5-0.6 of the unkeyed append rate, and a redb file of its own
//! fsync'd once a second 0.72-0.77 (`docs/PERFORMANCE.md`). An LSM tree writes a key row as
//! one sequential journal append and sorts rows in memory; its background threads write them
//! out as sorted runs and merge those. fjall is the maintained pure-Rust one (bloom filters,
//! atomic write batches across keyspaces, crash recovery of its journal to the last whole
//! batch); writing one here would be a second storage engine to own.
//!
//! Its writes are not fsync'd one by one: a batch of rows goes to the OS with the batch's
//! commit (a killed process loses nothing), and the journal is fsync'd at most once a second
//! ([`FLUSH_EVERY`]) and on close. What makes that safe on a power cut: every keyed entry
//! carries its key (`docs/FORMAT.md`), and the entries are durable in `ledger.redb` with their
//! batch. Per ledger, the index records, in the same write batch as the rows, the seq through
//! which it holds the key of every entry (`through`), and the main file records, durably and
//! once, the seq of the ledger's first keyed entry (`keyed_from`, written with the first batch
//! or key claim that has a key). After a crash `through` may be behind the head; before any use
//! of a ledger's keys the index reads the entries past both (from `META`'s pending batch or
//! the entry objects) and adds their keys. A key committed in the main file is therefore always
//! found, crash or not; a ledger that never had a key costs nothing.
//!
//! Every operation holds one lock from its catch-up to its last write, so the check of a
//! batch's keys, the batch's durable commit in the main file and the rows it adds here are
//! one step for every writer in the process (one process holds the files).

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use redb::{ReadableDatabase, ReadableTable};

use super::codec::{decode_key_claim, decode_meta, encode_key_claim};
use super::{KEYED_FROM, META, OBJECTS, corrupt, write_batch};
use crate::chain::entry::{self, IdempotencyKey, LedgerId};
use crate::chain::keys::entry_key;
use crate::store::{BatchCommit, BatchWrites, KeyClaim, KeyPut};

/// The index's directory inside the data directory.
pub const KEYS_DIR: &str = "keys";
/// Where the index lived before it was an LSM tree: a redb file, removed on open (the entries
/// rebuild what it held).
const OLD_KEYS_FILE: &str = "keys.redb";

/// At most this long between fsyncs of the index's journal.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// The index's block cache.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// The rows' in-memory write buffer before it is written out as a sorted run (fjall's default
/// is 64 MiB; a row is ~60 bytes, so this is ~100,000 keys).
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;
/// A catch-up writes what it found in batches of this many entries, so that rebuilding a long
/// ledger's keys holds a bounded number of rows in memory.
const CATCH_UP_CHUNK: u64 = 10_000;

pub(super) struct KeyIndex {
    db: Database,
    /// (ledger id, 0x00, key) -> encoded [`KeyClaim`]. Neither ledger ids nor keys hold 0x00.
    rows: Keyspace,
    /// Ledger id -> the seq (big-endian u64) through which every entry's key is in `rows`.
    through: Keyspace,
    /// Held across each operation; the time of the last fsync.
    lock: Mutex<Instant>,
}

/// The error of a key index operation, in the embedded store's error type.
fn index_error(e: fjall::Error) -> redb::Error {
    match e {
        fjall::Error::Io(io) => redb::Error::Io(io),
        other => redb::Error::Io(std::io::Error::other(format!("key index: {other}"))),
    }
}

fn row_key(ledger: &LedgerId, key: &IdempotencyKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(ledger.as_str().len() + 1 + key.as_str().len());
    out.extend_from_slice(ledger.as_str().as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_str().as_bytes());
    out
}

impl KeyIndex {
    pub fn open(data_dir: &Path) -> Result<KeyIndex, redb::Error> {
        let old = data_dir.join(OLD_KEYS_FILE);
        if old.is_file() {
            std::fs::remove_file(&old)?;
            tracing::info!(path = %old.display(), "removed the old key index file; the new index is rebuilt from the entries as each ledger is used");
        }
        let db = Database::builder(data_dir.join(KEYS_DIR))
            .cache_size(CACHE_BYTES)
            .open()
            .map_err(index_error)?;
        let rows = db
            .keyspace("idempotency_keys", || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(index_error)?;
        let through = db
            .keyspace("indexed_through", KeyspaceCreateOptions::default)
            .map_err(index_error)?;
        Ok(KeyIndex {
            db,
            rows,
            through,
            lock: Mutex::new(Instant::now()),
        })
    }

    /// The key's row, after catching up with `main`.
    pub fn get(
        &self,
        main: &redb::Database,
        ledger: &LedgerId,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyClaim>, redb::Error> {
        let mut flushed = self.locked();
        self.catch_up(main, ledger)?;
        let found = self.read_row(ledger, key)?;
        self.persist_if_due(&mut flushed)?;
        Ok(found)
    }

    /// Writes `new` if the row is `expected`.
    pub fn put(
        &self,
        main: &redb::Database,
        ledger: &LedgerId,
        key: &IdempotencyKey,
        expected: Option<&KeyClaim>,
        new: &KeyClaim,
    ) -> Result<KeyPut, redb::Error> {
        // A claim from head `base` can give the key to an entry past it.
        keyed_from(main, ledger, new.base + 1)?;
        let mut flushed = self.locked();
        self.catch_up(main, ledger)?;
        let current = self.read_row(ledger, key)?;
        if current.as_ref() != expected {
            return Ok(KeyPut::Conflict(current));
        }
        self.rows
            .insert(row_key(ledger, key), encode_key_claim(new))
            .map_err(index_error)?;
        self.persist_if_due(&mut flushed)?;
        Ok(KeyPut::Applied)
    }

    /// [`AtomicBatchStore::commit_batch`](crate::store::AtomicBatchStore::commit_batch): checks
    /// the batch's keys here, commits `META`, objects and items in `main` (durable), then adds
    /// the key rows here, all under the lock.
    pub fn commit_batch(
        &self,
        main: &redb::Database,
        ledger: &LedgerId,
        expected_seq: u64,
        meta: &[u8],
        new_seq: u64,
        writes: &BatchWrites,
    ) -> Result<BatchCommit, redb::Error> {
        let mut flushed = self.locked();
        // Caught up through `expected_seq` is enough: if the head is elsewhere the commit below
        // is refused whatever the keys say. So the common case reads nothing from `main`.
        if self.through_of(ledger)? != Some(expected_seq) {
            self.catch_up(main, ledger)?;
        }
        for write in &writes.keys {
            if self.read_row(ledger, &write.key)? != write.expected {
                return Ok(BatchCommit::KeyMoved);
            }
        }
        let batch = main.begin_write()?;
        let outcome = write_batch(&batch, ledger, expected_seq, meta, writes)?;
        if outcome != BatchCommit::Applied {
            return Ok(outcome); // dropped: nothing of it is written
        }
        batch.commit()?;
        // Durable in the main file: from here a crash leaves the rows to the catch-up.
        let mut rows = self.db.batch();
        for write in &writes.keys {
            rows.insert(
                &self.rows,
                row_key(ledger, &write.key),
                encode_key_claim(&write.new),
            );
        }
        rows.insert(&self.through, ledger.as_str(), new_seq.to_be_bytes());
        rows.commit().map_err(index_error)?;
        self.persist_if_due(&mut flushed)?;
        Ok(BatchCommit::Applied)
    }

    /// Makes every row durable (on close).
    pub fn flush(&self) -> Result<(), redb::Error> {
        let mut flushed = self.locked();
        self.db.persist(PersistMode::SyncAll).map_err(index_error)?;
        *flushed = Instant::now();
        Ok(())
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.lock.lock().expect("key index lock is never poisoned")
    }

    /// Fsyncs the journal if [`FLUSH_EVERY`] has passed since the last time.
    fn persist_if_due(&self, flushed: &mut Instant) -> Result<(), redb::Error> {
        if flushed.elapsed() >= FLUSH_EVERY {
            self.db
                .persist(PersistMode::SyncData)
                .map_err(index_error)?;
            *flushed = Instant::now();
        }
        Ok(())
    }

    fn read_row(
        &self,
        ledger: &LedgerId,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyClaim>, redb::Error> {
        self.rows
            .get(row_key(ledger, key))
            .map_err(index_error)?
            .map(|v| decode_key_claim(&v))
            .transpose()
    }

    fn through_of(&self, ledger: &LedgerId) -> Result<Option<u64>, redb::Error> {
        let Some(v) = self.through.get(ledger.as_str()).map_err(index_error)? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = v
            .as_ref()
            .try_into()
            .map_err(|_| corrupt("key index", format!("{ledger}: a through seq not 8 bytes")))?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    /// Adds the key of every entry of `ledger` past its `through` seq (and before its first
    /// keyed entry, none), up to the head in `main`, and moves `through` to the head.
    fn catch_up(&self, main: &redb::Database, ledger: &LedgerId) -> Result<(), redb::Error> {
        let read = main.begin_read()?;
        let Some(keyed_from) = read
            .open_table(KEYED_FROM)?
            .get(ledger.as_str())?
            .map(|v| v.value())
        else {
            return Ok(()); // no entry of this ledger has a key
        };
        let Some(meta) = read
            .open_table(META)?
            .get(ledger.as_str())?
            .map(|v| decode_meta(v.value()))
            .transpose()?
        else {
            return Ok(());
        };
        let mut done = self.through_of(ledger)?.unwrap_or(0).max(keyed_from - 1);
        let objects = read.open_table(OBJECTS)?;
        while done < meta.seq_counter {
            let last = meta.seq_counter.min(done + CATCH_UP_CHUNK);
            let mut rows = self.db.batch();
            for seq in done + 1..=last {
                let pending = meta
                    .pending
                    .as_ref()
                    .filter(|p| (p.first_seq..=p.last_seq()).contains(&seq))
                    .map(|p| p.entries[(seq - p.first_seq) as usize].to_vec());
                let bytes = match pending {
                    Some(bytes) => bytes,
                    None => match objects.get(entry_key(ledger, seq).as_str())? {
                        Some(v) => v.value().to_vec(),
                        None => {
                            return Err(corrupt(
                                "key index",
                                format!("{ledger} seq {seq} is below the head but has no entry"),
                            ));
                        }
                    },
                };
                let decoded = entry::decode(&bytes).map_err(|e| corrupt("key index", e))?;
                if let Some(key) = decoded.header.idempotency_key {
                    let claim = KeyClaim {
                        base: seq - 1,
                        seqs: vec![seq],
                    };
                    rows.insert(&self.rows, row_key(ledger, &key), encode_key_claim(&claim));
                }
            }
            rows.insert(&self.through, ledger.as_str(), last.to_be_bytes());
            rows.commit().map_err(index_error)?;
            done = last;
        }
        Ok(())
    }
}

/// Records in `main`, durably, that `ledger`'s entries may carry keys from `seq` on, unless
/// an earlier seq is recorded.
fn keyed_from(main: &redb::Database, ledger: &LedgerId, seq: u64) -> Result<(), redb::Error> {
    let recorded = main
        .begin_read()?
        .open_table(KEYED_FROM)?
        .get(ledger.as_str())?
        .map(|v| v.value());
    if recorded.is_some_and(|r| r <= seq) {
        return Ok(());
    }
    // Read again in the write transaction: redb's one writer makes the check and the write
    // one step, so a later seq never replaces an earlier one.
    let txn = main.begin_write()?;
    {
        let mut table = txn.open_table(KEYED_FROM)?;
        let recorded = table.get(ledger.as_str())?.map(|v| v.value());
        if recorded.is_none_or(|r| r > seq) {
            table.insert(ledger.as_str(), seq)?;
        }
    }
    txn.commit()?;
    Ok(())
}
