//! The embedded store's index of idempotency keys: a second redb file, `keys.redb`, beside
//! `ledger.redb` (`docs/STORAGE.md`, "The key index").
//!
//! Why a file of its own: keys are random, so every key row lands on a different B-tree leaf,
//! and a durable commit writes and fsyncs every page changed since the last one. In the batch's
//! own transaction that is one more scattered page per keyed record on every commit, which
//! measured at 0.5-0.6 of the unkeyed append rate (`docs/PERFORMANCE.md`). Here key rows are
//! committed without fsync, and the file is made durable at most once a second (and on
//! close), so a page written by many batches in between is flushed once.
//!
//! What makes that safe: every keyed entry carries its key (`docs/FORMAT.md`), and the
//! entries are durable in `ledger.redb` with their batch. Per ledger, the index records the
//! seq through which it holds the key of every entry (`through`), and the main file records,
//! durably and once, the seq of the ledger's first keyed entry (`keyed_from`, written with the
//! first batch or key claim that has a key). After a crash `through` may be behind the head;
//! before any use of a ledger's keys the index reads the entries past both (from `META`'s
//! pending batch or the entry objects) and adds their keys. A key committed in the main file
//! is therefore always found, crash or not; a ledger that never had a key costs nothing.
//!
//! Every operation holds one lock from its catch-up to its last write, so the check of a
//! batch's keys, the batch's durable commit in the main file and the rows it adds here are
//! one step for every writer in the process (one process holds the files).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::codec::{decode_key_claim, decode_meta, encode_key_claim};
use super::{KEYED_FROM, META, OBJECTS, corrupt, write_batch};
use crate::chain::entry::{self, IdempotencyKey, LedgerId};
use crate::chain::keys::entry_key;
use crate::store::{BatchCommit, BatchWrites, KeyClaim, KeyPut};

/// The file name inside the data directory.
pub const KEYS_FILE: &str = "keys.redb";

/// Key rows: (ledger id, idempotency key) -> encoded [`KeyClaim`].
const KEYS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("idempotency_keys");
/// Per ledger, the seq through which every entry's key is in [`KEYS`].
const THROUGH: TableDefinition<&str, u64> = TableDefinition::new("indexed_through");

/// At most this long between durable commits of the index.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub(super) struct KeyIndex {
    db: Database,
    /// Held across each operation; the time of the last durable commit.
    lock: Mutex<Instant>,
}

impl KeyIndex {
    pub fn open(db: Database) -> Result<KeyIndex, redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(KEYS)?;
        txn.open_table(THROUGH)?;
        txn.commit()?;
        Ok(KeyIndex {
            db,
            lock: Mutex::new(Instant::now()),
        })
    }

    /// The key's row, after catching up with `main`.
    pub fn get(
        &self,
        main: &Database,
        ledger: &LedgerId,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyClaim>, redb::Error> {
        self.with_rows(main, ledger, |rows| read_row(rows, ledger, key))
    }

    /// Writes `new` if the row is `expected`.
    pub fn put(
        &self,
        main: &Database,
        ledger: &LedgerId,
        key: &IdempotencyKey,
        expected: Option<&KeyClaim>,
        new: &KeyClaim,
    ) -> Result<KeyPut, redb::Error> {
        // A claim from head `base` can give the key to an entry past it.
        keyed_from(main, ledger, new.base + 1)?;
        self.with_rows(main, ledger, |rows| {
            let current = read_row(rows, ledger, key)?;
            if current.as_ref() != expected {
                return Ok(KeyPut::Conflict(current));
            }
            rows.insert(
                (ledger.as_str(), key.as_str()),
                encode_key_claim(new).as_slice(),
            )?;
            Ok(KeyPut::Applied)
        })
    }

    /// Runs `work` on the key rows under the lock, caught up with `main`, and commits.
    fn with_rows<T>(
        &self,
        main: &Database,
        ledger: &LedgerId,
        work: impl FnOnce(&mut Rows<'_>) -> Result<T, redb::Error>,
    ) -> Result<T, redb::Error> {
        let mut flushed = self.lock.lock().expect("key index lock is never poisoned");
        let txn = self.begin(&mut flushed)?;
        let out = {
            let mut rows = txn.open_table(KEYS)?;
            catch_up(main, &txn, ledger, &mut rows)?;
            work(&mut rows)?
        };
        txn.commit()?;
        Ok(out)
    }

    /// [`AtomicBatchStore::commit_batch`](crate::store::AtomicBatchStore::commit_batch): checks
    /// the batch's keys here, commits `META`, objects and items in `main` (durable), then adds
    /// the key rows here, all under the lock.
    pub fn commit_batch(
        &self,
        main: &Database,
        ledger: &LedgerId,
        expected_seq: u64,
        meta: &[u8],
        new_seq: u64,
        writes: &BatchWrites,
    ) -> Result<BatchCommit, redb::Error> {
        let mut flushed = self.lock.lock().expect("key index lock is never poisoned");
        let txn = self.begin(&mut flushed)?;
        {
            let mut table = txn.open_table(KEYS)?;
            catch_up(main, &txn, ledger, &mut table)?;
            for write in &writes.keys {
                if read_row(&table, ledger, &write.key)? != write.expected {
                    return Ok(BatchCommit::KeyMoved);
                }
            }
        }
        let batch = main.begin_write()?;
        let outcome = write_batch(&batch, ledger, expected_seq, meta, writes)?;
        if outcome != BatchCommit::Applied {
            return Ok(outcome); // dropped: nothing of it is written
        }
        batch.commit()?;
        // Durable in the main file: from here a crash leaves the rows to the catch-up.
        {
            let mut table = txn.open_table(KEYS)?;
            for write in &writes.keys {
                let row = (ledger.as_str(), write.key.as_str());
                table.insert(row, encode_key_claim(&write.new).as_slice())?;
            }
            txn.open_table(THROUGH)?.insert(ledger.as_str(), new_seq)?;
        }
        txn.commit()?;
        Ok(BatchCommit::Applied)
    }

    /// Makes every row durable (on close).
    pub fn flush(&self) -> Result<(), redb::Error> {
        let mut flushed = self.lock.lock().expect("key index lock is never poisoned");
        let txn = self.db.begin_write()?;
        txn.commit()?;
        *flushed = Instant::now();
        Ok(())
    }

    /// A write transaction: without fsync, except the first one after [`FLUSH_EVERY`].
    fn begin(&self, flushed: &mut Instant) -> Result<WriteTransaction, redb::Error> {
        let mut txn = self.db.begin_write()?;
        if flushed.elapsed() < FLUSH_EVERY {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))?;
        } else {
            *flushed = Instant::now();
        }
        Ok(txn)
    }
}

/// The key rows table.
type Rows<'t> = redb::Table<'t, (&'static str, &'static str), &'static [u8]>;

fn read_row(
    rows: &Rows<'_>,
    ledger: &LedgerId,
    key: &IdempotencyKey,
) -> Result<Option<KeyClaim>, redb::Error> {
    rows.get((ledger.as_str(), key.as_str()))?
        .map(|v| decode_key_claim(v.value()))
        .transpose()
}

/// Records in `main`, durably, that `ledger`'s entries may carry keys from `seq` on, unless
/// an earlier seq is recorded.
fn keyed_from(main: &Database, ledger: &LedgerId, seq: u64) -> Result<(), redb::Error> {
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

/// Adds to `table` the key of every entry of `ledger` past its `through` seq (and before
/// its first keyed entry, none), up to the head in `main`, and moves `through` to the head.
fn catch_up(
    main: &Database,
    txn: &WriteTransaction,
    ledger: &LedgerId,
    table: &mut Rows<'_>,
) -> Result<(), redb::Error> {
    let mut through = txn.open_table(THROUGH)?;
    let read = main.begin_read()?;
    let Some(keyed_from) = read
        .open_table(KEYED_FROM)?
        .get(ledger.as_str())?
        .map(|v| v.value())
    else {
        return Ok(()); // no entry of this ledger has a key
    };
    let done = through
        .get(ledger.as_str())?
        .map_or(0, |v| v.value())
        .max(keyed_from - 1);
    let Some(meta) = read
        .open_table(META)?
        .get(ledger.as_str())?
        .map(|v| decode_meta(v.value()))
        .transpose()?
    else {
        return Ok(());
    };
    if meta.seq_counter <= done {
        return Ok(());
    }
    let objects = read.open_table(OBJECTS)?;
    for seq in done + 1..=meta.seq_counter {
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
            table.insert(
                (ledger.as_str(), key.as_str()),
                encode_key_claim(&claim).as_slice(),
            )?;
        }
    }
    through.insert(ledger.as_str(), meta.seq_counter)?;
    Ok(())
}
