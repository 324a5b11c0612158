//! The commit protocol (`docs/PROTOCOL.md`), the whole of it, written once over the two storage
//! traits. It reads top to bottom as the doc's table of steps:
//!
//! 0. **Head**: read `META` (or use the cached head this writer last wrote or read).
//! 1. **Previous batch**: if `META.pending` is not known to be written out, check it
//!    ([`check_head`]) and roll it forward (steps 3-4 for that batch) first.
//! 2. **Claim** (the commit point): one compare-and-set of `META` moves `seq_counter` past the
//!    batch and stores the batch's entries (their full stored bytes) as `META.pending`, so the
//!    content is durable atomically with the claim. On a store with an [`AtomicBatchStore`]
//!    (the embedded store), steps 2-4 are this one call.
//! 3. **Objects**: write every entry object (write-once).
//! 4. **Index**: write every `SEQ#` item (write-once).
//!
//! Steps 3 and 4 are the **roll-forward**: idempotent, derived only from `META.pending`, safe to
//! run concurrently by any writer in any process. A batch whose objects and `SEQ#` items all
//! exist is **written out**; that is the one word for that state here and in the docs.
//!
//! **Idempotency keys** ride on step 2: before its claim, a writer records in each key's
//! `IDEM#` item ([`KeyClaim`]) the head it claims from and the seq it gives the key's entry.
//! Claims from one head are exclusive, so of all writers named in one item at most one
//! commits the key; a writer that finds the item decides it ([`KeyState`]): joins the writers
//! still claiming from the current head, takes over an item whose head has passed without the
//! key, or answers with the entry that holds the key. `docs/PROTOCOL.md` has the rules and a
//! row per crash point.
//!
//! [`Writer`] owns what one writer knows (the head it last saw, which head it checked, how far
//! batches are written out); [`Writer::commit`] runs a batch through every step and
//! [`Writer::finish_pending`] (reads, verification, export, checkpoints) runs steps 0-1 alone.
//!
//! The file is ~1000 lines (and its unit tests) on purpose: the protocol, idempotency keys
//! included, is read in one place.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::try_join_all;
use tokio::time::Instant;
use tracing::{error, warn};

use super::cap::LedgerCap;
use super::{Append, LedgerError, LedgerMetrics, Options};
use crate::chain::entry::{
    self, EntryHeader, IdempotencyKey, LedgerId, MAX_SEQ, Record, Timestamp, encode,
};
use crate::chain::hash::Hash;
use crate::chain::keys::entry_key;
use crate::chain::verify::{Evidence, check_entry};
use crate::store::{
    AtomicBatchStore, BatchCommit, BatchWrites, CasOutcome, KeyClaim, KeyPut, KeyWrite, Meta,
    NewObject, PendingBatch, PutOutcome, SeqItem, SeqPut, StoreError, Stores, Taken,
};

/// What [`Writer::commit`] achieved for a batch, per request in order: its appends' entries,
/// or why the whole request was refused (nothing of it was appended). The seqs and hashes it
/// names are final.
pub(crate) type Committed = Vec<Result<Vec<Appended>, LedgerError>>;

/// One append's entry.
#[derive(Debug, Clone)]
pub(crate) struct Appended {
    pub entry: PendingEntry,
    /// Its key was already committed, to this entry, with the same record: nothing new was
    /// appended for it.
    pub replayed: bool,
    /// `false`: claimed (durable in `META`) but not written out yet; the next claim, a read
    /// or startup finishes it (`202`).
    pub written_out: bool,
}

/// One writer of one ledger.
pub(crate) struct Writer {
    ledger: LedgerId,
    stores: Stores,
    options: Arc<Options>,
    metrics: LedgerMetrics,
    /// Creates the ledger on its first append, within `ELEANOR_LEDGER_MAX_LEDGERS`.
    cap: Arc<LedgerCap>,
    /// The last `META` seen; `None` means read it before the next claim.
    head: Option<Meta>,
    /// Every seq up to this one is written out.
    written_out_through: u64,
    /// The `seq_counter` of the last head this writer wrote or checked ([`check_head`]).
    trusted_seq: Option<u64>,
}

/// What one claim attempt (step 2) did.
enum Attempt {
    Applied,
    /// A key's item was not what this writer expected; it was read again.
    KeyMoved,
    /// `META` had moved; this is what it holds now.
    Conflict(Option<Meta>),
    /// The call failed; whether it took effect is not known (unless it was
    /// [`StoreError::Refused`]).
    Failed(StoreError),
}

impl Writer {
    pub fn new(
        ledger: LedgerId,
        stores: Stores,
        options: Arc<Options>,
        metrics: LedgerMetrics,
        cap: Arc<LedgerCap>,
    ) -> Writer {
        Writer {
            ledger,
            stores,
            options,
            metrics,
            cap,
            head: None,
            written_out_through: 0,
            trusted_seq: None,
        }
    }

    /// Runs `requests` through every step as one batch: the records of each request are
    /// claimed together at consecutive seqs, or (a key reused with another record) none of
    /// them is. On an error nothing of the batch is committed, except
    /// [`LedgerError::OutcomeUnknown`] (it may be) and [`LedgerError::Corrupt`] raised while
    /// writing it out (it is, but storage disagrees).
    pub async fn commit(&mut self, requests: &[Vec<Append>]) -> Result<Committed, LedgerError> {
        let (plan, entries, one_step) = self.claim(requests).await?;
        let written_out = if one_step || entries.is_empty() {
            true
        } else {
            match roll_forward(&self.stores, &self.ledger, &entries).await {
                Ok(()) => true,
                Err(e @ LedgerError::Corrupt { .. }) => {
                    self.head = None;
                    return Err(self.integrity_error(e));
                }
                Err(e) => {
                    // Committed (durable in META) but not yet written out: the next claim, a
                    // read, verification, export or checkpoint of the ledger finishes it. Clients get 202, not an error, so
                    // that they do not append the same event twice.
                    warn!(error = %e, "batch committed; writing it out failed and will be retried");
                    false
                }
            }
        };
        if written_out && let Some(last) = entries.last() {
            self.written_out_through = last.seq;
        }
        Ok(plan.answers(&entries, written_out))
    }

    /// Where `key` stands, for a lookup: its entry, `None` if it has none (and no claim in
    /// progress can give it one), or [`LedgerError::IdempotencyKeyInFlight`] while writers are
    /// claiming it from the current head. Rolls the pending batch forward first.
    pub async fn find_key(
        &mut self,
        key: &IdempotencyKey,
    ) -> Result<Option<PendingEntry>, LedgerError> {
        for _ in 0..8 {
            let Some(head) = self.stores.index.head(&self.ledger).await? else {
                return Err(LedgerError::LedgerNotFound);
            };
            self.ensure_written_out(&head).await?;
            let claim = self.stores.index.key_claim(&self.ledger, key).await?;
            match self.key_state(key, claim, &head).await? {
                // The head moved between the two reads: read both again.
                None => continue,
                Some(KeyState::Committed(entry, _)) => return Ok(Some(entry)),
                Some(KeyState::Open(_)) => return Err(LedgerError::IdempotencyKeyInFlight),
                Some(KeyState::Free(_)) => return Ok(None),
            }
        }
        Err(LedgerError::IdempotencyKeyInFlight)
    }

    /// Steps 0 and 1 alone, on `META` read afresh: rolls forward the ledger's pending batch if
    /// it is not written out. `true` if it rolled one forward. For reads, verification, export
    /// and checkpoints, which must not see a claimed batch as missing entries.
    pub async fn finish_pending(&mut self) -> Result<bool, LedgerError> {
        let Some(head) = self.stores.index.head(&self.ledger).await? else {
            return Ok(false);
        };
        if head.pending.is_none() {
            return Ok(false);
        }
        let rolled = self.ensure_written_out(&head).await?;
        self.head = Some(head);
        Ok(rolled)
    }

    /// The first and last seq of the pending batch of the head this writer last saw.
    pub fn pending_seqs(&self) -> Option<(u64, u64)> {
        let pending = self.head.as_ref()?.pending.as_ref()?;
        Some((pending.first_seq, pending.last_seq()))
    }

    /// Steps 0 to 2, retried on conflicts: returns what becomes of each append, the claimed
    /// entries (none when every append was answered from storage), and whether they were
    /// written out with the claim (one step).
    async fn claim(
        &mut self,
        requests: &[Vec<Append>],
    ) -> Result<(Plan, Vec<PendingEntry>, bool), LedgerError> {
        let one_step = self.stores.batches.clone();
        let started = Instant::now();
        let mut attempt: u32 = 0;
        // What this writer knows of each key's item. A key not in here is written as new
        // (`expected: None`) and read only if that is refused: in steps one request per new
        // key, in one step nothing beyond the batch's transaction.
        let mut known: HashMap<IdempotencyKey, Option<KeyClaim>> = HashMap::new();
        loop {
            // Step 0.
            let head = self.current_head().await?;
            // Step 1.
            self.ensure_written_out(&head).await?;
            // Which appends are new, which are answered by what is stored.
            let Some(plan) = self.plan(requests, &head, &known).await? else {
                // A key's item names a head past this one: ours is stale. Read it again,
                // within the attempts a claim has (an item that stays ahead of every head
                // read is none this protocol wrote).
                self.head = None;
                attempt += 1;
                if attempt >= self.options.max_claim_attempts {
                    return Err(LedgerError::Contention);
                }
                continue;
            };
            if plan.new.is_empty() {
                return Ok((plan, Vec::new(), false));
            }
            if head.seq_counter + plan.new.len() as u64 > MAX_SEQ {
                return Err(LedgerError::LedgerFull);
            }
            // Step 2.
            let (new, entries) = build_batch(&self.ledger, &head, &plan.records(requests), now());
            let outcome = match &one_step {
                Some(batches) => {
                    self.claim_in_one_step(
                        batches.as_ref(),
                        head.seq_counter,
                        &new,
                        &entries,
                        &plan,
                    )
                    .await?
                }
                None => match self.write_keys(&plan.keys, &mut known).await? {
                    false => Attempt::KeyMoved,
                    true => self.compare_and_set(head.seq_counter, &new, started).await,
                },
            };
            match outcome {
                Attempt::Applied => {
                    let mut new = new;
                    if one_step.is_some() {
                        new.pending = None; // as stored
                    }
                    self.trusted_seq = Some(new.seq_counter);
                    self.head = Some(new);
                    return Ok((plan, entries, one_step.is_some()));
                }
                Attempt::KeyMoved => {
                    // A key's item is not what this writer expected (in steps, `known` now
                    // holds what it is): decide the key again on it.
                    if one_step.is_some() {
                        known.clear();
                        self.read_keys(requests, &mut known).await?;
                    }
                }
                Attempt::Conflict(current) => {
                    self.metrics.conflicts.inc();
                    // A conflict can also be our own update, applied by an attempt whose answer
                    // was lost and then refused on the SDK's retry, with others claiming after
                    // it. Rebuilding then would append the same records twice.
                    let maybe_ours = current
                        .as_ref()
                        .is_some_and(|c| c.seq_counter >= new.seq_counter);
                    self.head = current;
                    if maybe_ours && self.was_applied(&new).await? {
                        return Ok((plan, entries, false));
                    }
                }
                Attempt::Failed(e @ StoreError::Refused { .. }) => {
                    // Refused by an open circuit: nothing was sent, nothing committed.
                    return Err(e.into());
                }
                Attempt::Failed(e) => {
                    // The update may have been applied, or may still be (a request that timed
                    // out here can land later): look for it, and say "unknown" unless found.
                    self.head = None;
                    return match self.was_applied(&new).await {
                        Ok(true) => Ok((plan, entries, false)),
                        Ok(false) | Err(_) => Err(match e {
                            // Throttled until the deadline: as unknown as any failed call.
                            StoreError::Throttled { dependency, detail } => {
                                LedgerError::Throttled { dependency, detail }
                            }
                            e => LedgerError::OutcomeUnknown(e.to_string()),
                        }),
                    };
                }
            }
            attempt += 1;
            if attempt >= self.options.max_claim_attempts
                || started.elapsed() > self.options.claim_deadline
            {
                return Err(LedgerError::Contention);
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// Step 2's compare-and-set. While the index throttles it, it is sent again after a
    /// jittered, growing pause ([`throttle_backoff`]), until the claim's deadline: with the
    /// very same `new` and the same expected head, so a retry can never apply the batch
    /// twice (if an earlier attempt was applied after all, the retry finds `META` equal to
    /// `new`, which the store reports as applied, or moved past it, which the caller checks).
    async fn compare_and_set(&self, expected_seq: u64, new: &Meta, started: Instant) -> Attempt {
        let mut throttles = 0;
        loop {
            match self
                .stores
                .index
                .compare_and_set_head(&self.ledger, expected_seq, new)
                .await
            {
                Ok(CasOutcome::Applied) => return Attempt::Applied,
                Ok(CasOutcome::Conflict(current)) => return Attempt::Conflict(current),
                Err(e @ StoreError::Throttled { .. }) => {
                    self.metrics.claims_throttled.inc();
                    throttles += 1;
                    let pause = throttle_backoff(throttles);
                    if started.elapsed() + pause >= self.options.claim_deadline {
                        warn!(error = %e, throttles, "claim throttled until its deadline");
                        return Attempt::Failed(e);
                    }
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Attempt::Failed(e),
            }
        }
    }

    /// Reads the item of every key of `requests` not in `known` (on a store that commits in
    /// one step, after it refused the batch's key writes: it does not say which).
    async fn read_keys(
        &self,
        requests: &[Vec<Append>],
        known: &mut HashMap<IdempotencyKey, Option<KeyClaim>>,
    ) -> Result<(), LedgerError> {
        for key in requests.iter().flatten().filter_map(|a| a.key.as_ref()) {
            if !known.contains_key(key) {
                let claim = self.stores.index.key_claim(&self.ledger, key).await?;
                known.insert(key.clone(), claim);
            }
        }
        Ok(())
    }

    /// Decides every append of `requests` against `head` (written out) and what is known of
    /// their keys' items. `None` when an item names a later head than `head`.
    async fn plan(
        &self,
        requests: &[Vec<Append>],
        head: &Meta,
        known: &HashMap<IdempotencyKey, Option<KeyClaim>>,
    ) -> Result<Option<Plan>, LedgerError> {
        let mut states: HashMap<&IdempotencyKey, KeyState> = HashMap::new();
        for key in requests.iter().flatten().filter_map(|a| a.key.as_ref()) {
            if states.contains_key(key) {
                continue;
            }
            let claim = known.get(key).cloned().flatten();
            let Some(state) = self.key_state(key, claim, head).await? else {
                return Ok(None);
            };
            states.insert(key, state);
        }
        Ok(Some(Plan::new(requests, head.seq_counter, &states)))
    }

    /// Where `key` stands on `head`, whose batches are all written out, given its item.
    /// `None` when the item names a later head (this one is stale).
    async fn key_state(
        &self,
        key: &IdempotencyKey,
        claim: Option<KeyClaim>,
        head: &Meta,
    ) -> Result<Option<KeyState>, LedgerError> {
        let Some(claim) = claim else {
            return Ok(Some(KeyState::Free(None)));
        };
        if claim.base > head.seq_counter {
            return Ok(None);
        }
        if claim.base == head.seq_counter {
            // Writers are claiming the key from this very head; none has yet.
            return Ok(Some(KeyState::Open(claim)));
        }
        // The head has passed `base`: the one claim from it is decided, and no claim from it
        // can come any more. The key is committed if and only if one of the seqs holds it.
        for &seq in claim.seqs.iter().filter(|&&s| s <= head.seq_counter) {
            let (entry, record) = self.stored_entry(head, seq).await?;
            if entry.idempotency_key.as_ref() == Some(key) {
                return Ok(Some(KeyState::Committed(entry, record)));
            }
        }
        Ok(Some(KeyState::Free(Some(claim))))
    }

    /// Entry `seq` (at most `head.seq_counter`, all written out) and its record's text.
    async fn stored_entry(
        &self,
        head: &Meta,
        seq: u64,
    ) -> Result<(PendingEntry, Box<str>), LedgerError> {
        let corrupt = |detail: String| LedgerError::Corrupt {
            seq: Some(seq),
            detail,
        };
        let in_pending = head
            .pending
            .as_ref()
            .filter(|p| (p.first_seq..=p.last_seq()).contains(&seq))
            .map(|p| p.entries[(seq - p.first_seq) as usize].clone());
        let bytes = match in_pending {
            Some(bytes) => bytes,
            None => {
                let key = entry_key(&self.ledger, seq);
                match self.stores.objects.get(&key, None).await? {
                    Some(object) => object.body,
                    None => {
                        return Err(self.integrity_error(corrupt(format!(
                            "an idempotency key names seq {seq}, below the head, but no entry is stored there"
                        ))));
                    }
                }
            }
        };
        let entry = match check_entry(&self.ledger, seq, Some(&bytes)) {
            Evidence::Entry(entry) => entry,
            Evidence::Malformed { reason, .. } => {
                return Err(
                    self.integrity_error(corrupt(format!("the entry is malformed: {reason}")))
                );
            }
            Evidence::Missing => unreachable!("bytes were given"),
        };
        let record = entry::decode(&bytes)
            .map(|d| d.record.get().into())
            .map_err(|e| corrupt(e.to_string()))?;
        Ok((
            PendingEntry::checked(&self.ledger, seq, bytes, entry),
            record,
        ))
    }

    /// Writes the plan's key items, one conditional write each, all at once. `false` if one
    /// was not what this writer expected: `known` then holds what it is. Nothing is claimed
    /// yet, so an error leaves nothing committed (at worst an item naming this head, which
    /// the next writer of the key joins or takes over).
    async fn write_keys(
        &self,
        writes: &[KeyWrite],
        known: &mut HashMap<IdempotencyKey, Option<KeyClaim>>,
    ) -> Result<bool, LedgerError> {
        let index = &self.stores.index;
        let outcomes = try_join_all(
            writes
                .iter()
                .map(|w| index.put_key_claim(&self.ledger, &w.key, w.expected.as_ref(), &w.new)),
        )
        .await?;
        let mut all = true;
        for (write, outcome) in writes.iter().zip(outcomes) {
            let now = match outcome {
                KeyPut::Applied => Some(write.new.clone()),
                KeyPut::Conflict(current) => {
                    all = false;
                    current
                }
            };
            known.insert(write.key.clone(), now);
        }
        Ok(all)
    }

    /// Steps 2-4 as one call ([`AtomicBatchStore::commit_batch`]), with `new` stored without
    /// its pending batch. A batch refused because something is stored where it would go is
    /// corruption. A failed call is atomic: not applied, or applied whole.
    async fn claim_in_one_step(
        &mut self,
        batches: &dyn AtomicBatchStore,
        expected_seq: u64,
        new: &Meta,
        entries: &[PendingEntry],
        plan: &Plan,
    ) -> Result<Attempt, LedgerError> {
        let stored = Meta {
            seq_counter: new.seq_counter,
            last_hash: new.last_hash,
            pending: None,
        };
        let (objects, items) = objects_and_items(entries);
        let writes = BatchWrites {
            objects,
            items,
            keys: plan.keys.clone(),
        };
        let taken = match batches
            .commit_batch(&self.ledger, expected_seq, &stored, &writes)
            .await
        {
            Ok(BatchCommit::Applied) => return Ok(Attempt::Applied),
            Ok(BatchCommit::KeyMoved) => return Ok(Attempt::KeyMoved),
            Ok(BatchCommit::Conflict(current)) => return Ok(Attempt::Conflict(current)),
            Err(e) => return Ok(Attempt::Failed(e)),
            Ok(BatchCommit::Occupied(taken)) => taken,
        };
        let (seq, what) = match taken {
            Taken::Seq(seq) => (Some(seq), "a SEQ# item".to_owned()),
            Taken::Object(key) => (
                entries.iter().find(|e| e.key == key).map(|e| e.seq),
                format!("object {key}"),
            ),
        };
        self.head = None;
        Err(self.integrity_error(LedgerError::Corrupt {
            seq,
            detail: format!("{what} is already stored past the head; the batch was not written"),
        }))
    }

    /// After a failed or lost compare-and-set: is `new`'s batch the one now committed?
    async fn was_applied(&mut self, new: &Meta) -> Result<bool, LedgerError> {
        let pending = new.pending.as_ref().expect("claims carry a pending batch");
        let head = self.current_head().await?;
        if head.pending.as_ref() == Some(pending) {
            return Ok(true);
        }
        if head.seq_counter < pending.last_seq() {
            return Ok(false);
        }
        // Someone claimed after us or instead of us: our first entry's object tells which.
        self.ensure_written_out(&head).await?;
        let key = entry_key(&self.ledger, pending.first_seq);
        let object = self.stores.objects.get(&key, None).await?;
        Ok(object.is_some_and(|o| o.body == pending.entries[0]))
    }

    /// The cached head, or `META` read afresh (creating the ledger if allowed).
    async fn current_head(&mut self) -> Result<Meta, LedgerError> {
        if let Some(head) = &self.head {
            return Ok(head.clone());
        }
        let head = match self.stores.index.head(&self.ledger).await? {
            Some(head) => head,
            None if self.options.auto_create => self.cap.create(&self.stores, &self.ledger).await?,
            None => return Err(LedgerError::LedgerNotFound),
        };
        self.head = Some(head.clone());
        Ok(head)
    }

    /// Step 1: rolls forward the head's pending batch unless it is known to be written out. A
    /// head this writer did not write is checked first ([`check_head`]). `true` if it rolled
    /// a batch forward.
    async fn ensure_written_out(&mut self, head: &Meta) -> Result<bool, LedgerError> {
        if self.trusted_seq != Some(head.seq_counter) {
            check_head(&self.stores, &self.ledger, head)
                .await
                .map_err(|e| self.integrity_error(e))?;
            self.trusted_seq = Some(head.seq_counter);
        }
        let Some(pending) = &head.pending else {
            return Ok(false);
        };
        if pending.last_seq() <= self.written_out_through {
            return Ok(false);
        }
        let entries = decode_pending(&self.ledger, pending)?;
        let rolled = !is_written_out(&self.stores, &self.ledger, &entries).await?;
        if rolled {
            roll_forward(&self.stores, &self.ledger, &entries)
                .await
                .map_err(|e| self.integrity_error(e))?;
            self.metrics.roll_forwards.inc();
            tracing::info!(
                ledger_id = %self.ledger,
                first_seq = pending.first_seq,
                last_seq = pending.last_seq(),
                "rolled forward a batch that was committed but not written out"
            );
        }
        self.written_out_through = pending.last_seq();
        Ok(rolled)
    }

    /// Counts and logs an integrity failure (other errors pass silently); returns it.
    fn integrity_error(&self, e: LedgerError) -> LedgerError {
        if matches!(e, LedgerError::Corrupt { .. }) {
            self.metrics.corruption.inc();
            error!(ledger_id = %self.ledger, error = %e, "INTEGRITY: refusing to append on a corrupt ledger");
        }
        e
    }
}

/// Where an idempotency key stands on a head whose batches are all written out.
enum KeyState {
    /// Not committed: a writer takes it with a new item, replacing `expected` (an item whose
    /// head has passed without the key; `None`: no item).
    Free(Option<KeyClaim>),
    /// Writers are claiming it from this head: join them (at most one claim wins).
    Open(KeyClaim),
    /// Committed: this entry holds it, with this record.
    Committed(PendingEntry, Box<str>),
}

/// What becomes of one append.
#[derive(Debug, Clone)]
enum Fate {
    /// The `i`th entry of the batch.
    New(usize),
    /// The key's entry is stored already, with the same record.
    Replay(PendingEntry),
    /// The key is on the `i`th entry of this batch (an earlier request's), with the same record.
    SameAs(usize),
}

/// The decisions of one claim attempt for a batch of requests.
pub(crate) struct Plan {
    /// Per request: its appends' fates, or why the whole request is refused.
    requests: Vec<Result<Vec<Fate>, LedgerError>>,
    /// The appends to claim, in seq order: (request, append) indices.
    new: Vec<(usize, usize)>,
    /// The key items to write before (or with) the claim.
    keys: Vec<KeyWrite>,
}

impl Plan {
    /// Decides each request in order on a head at `base`, given each key's state. A request
    /// that reuses a key with another record is refused whole; later requests see the keys
    /// of earlier ones in the batch.
    fn new(
        requests: &[Vec<Append>],
        base: u64,
        states: &HashMap<&IdempotencyKey, KeyState>,
    ) -> Plan {
        let mut plan = Plan {
            requests: Vec::with_capacity(requests.len()),
            new: Vec::new(),
            keys: Vec::new(),
        };
        // Keys given to an entry of this batch: key -> (entry index, request, append).
        let mut in_batch: HashMap<&IdempotencyKey, (usize, usize, usize)> = HashMap::new();
        for (r, appends) in requests.iter().enumerate() {
            let decided: Result<Vec<Fate>, LedgerError> = appends
                .iter()
                .enumerate()
                .map(|(a, append)| {
                    let Some(key) = &append.key else {
                        return Ok(None);
                    };
                    if let Some(&(i, r0, a0)) = in_batch.get(key) {
                        return if requests[r0][a0].record == append.record {
                            Ok(Some(Fate::SameAs(i)))
                        } else {
                            Err(LedgerError::IdempotencyKeyReused {
                                index: (appends.len() > 1).then_some(a),
                                seq: None,
                            })
                        };
                    }
                    match &states[key] {
                        KeyState::Committed(entry, record)
                            if **record == *append.record.as_str() =>
                        {
                            Ok(Some(Fate::Replay(entry.clone())))
                        }
                        KeyState::Committed(entry, _) => Err(LedgerError::IdempotencyKeyReused {
                            index: (appends.len() > 1).then_some(a),
                            seq: Some(entry.seq),
                        }),
                        KeyState::Free(_) | KeyState::Open(_) => Ok(None),
                    }
                })
                .map(|fate| fate.map(|f| f.unwrap_or(Fate::New(usize::MAX))))
                .collect();
            let Ok(mut fates) = decided else {
                plan.requests.push(decided);
                continue;
            };
            for (a, fate) in fates.iter_mut().enumerate() {
                let Fate::New(slot) = fate else { continue };
                *slot = plan.new.len();
                plan.new.push((r, a));
                let Some(key) = &requests[r][a].key else {
                    continue;
                };
                in_batch.insert(key, (*slot, r, a));
                let seq = base + 1 + *slot as u64;
                let (expected, new) = match &states[key] {
                    KeyState::Open(claim) => {
                        let mut seqs = claim.seqs.clone();
                        if !seqs.contains(&seq) {
                            seqs.push(seq);
                        }
                        (Some(claim.clone()), KeyClaim { base, seqs })
                    }
                    KeyState::Free(expected) => (
                        expected.clone(),
                        KeyClaim {
                            base,
                            seqs: vec![seq],
                        },
                    ),
                    KeyState::Committed(..) => unreachable!("a committed key is never new"),
                };
                plan.keys.push(KeyWrite {
                    key: key.clone(),
                    expected,
                    new,
                });
            }
            plan.requests.push(Ok(fates));
        }
        plan
    }

    /// The records to claim, in seq order, with their keys.
    fn records<'a>(
        &self,
        requests: &'a [Vec<Append>],
    ) -> Vec<(&'a Record, Option<&'a IdempotencyKey>)> {
        self.new
            .iter()
            .map(|&(r, a)| (&requests[r][a].record, requests[r][a].key.as_ref()))
            .collect()
    }

    /// Each request's answer, given the batch's claimed `entries` and whether they were
    /// written out.
    fn answers(self, entries: &[PendingEntry], written_out: bool) -> Committed {
        self.requests
            .into_iter()
            .map(|fates| {
                Ok(fates?
                    .into_iter()
                    .map(|fate| match fate {
                        Fate::New(i) => Appended {
                            entry: entries[i].clone(),
                            replayed: false,
                            written_out,
                        },
                        Fate::SameAs(i) => Appended {
                            entry: entries[i].clone(),
                            replayed: true,
                            written_out,
                        },
                        Fate::Replay(entry) => Appended {
                            entry,
                            replayed: true,
                            written_out: true,
                        },
                    })
                    .collect())
            })
            .collect()
    }
}

/// Builds the entries of a batch on top of `head`: seqs `head.seq_counter + 1 ..`, chained
/// from `head.last_hash`, all stamped `timestamp`. Returns the `META` that claims them and the
/// entries as roll-forward needs them (what [`decode_pending`] would give, without decoding).
fn build_batch(
    ledger: &LedgerId,
    head: &Meta,
    records: &[(&Record, Option<&IdempotencyKey>)],
    timestamp: Timestamp,
) -> (Meta, Vec<PendingEntry>) {
    let first_seq = head.seq_counter + 1;
    let mut prev_hash = head.last_hash;
    let entries: Vec<PendingEntry> = records
        .iter()
        .enumerate()
        .map(|(i, &(record, key))| {
            let seq = first_seq + i as u64;
            let header = EntryHeader {
                ledger_id: ledger.clone(),
                seq,
                prev_hash,
                timestamp,
                idempotency_key: key.cloned(),
            };
            let bytes = Bytes::from(encode(&header, record));
            let hash = Hash::of_entry(&bytes);
            let entry = PendingEntry {
                seq,
                bytes,
                hash,
                prev_hash,
                timestamp,
                key: entry_key(ledger, seq),
                idempotency_key: header.idempotency_key,
            };
            prev_hash = hash;
            entry
        })
        .collect();
    let meta = Meta {
        seq_counter: head.seq_counter + records.len() as u64,
        last_hash: prev_hash,
        pending: Some(PendingBatch {
            first_seq,
            entries: entries.iter().map(|e| e.bytes.clone()).collect(),
        }),
    };
    (meta, entries)
}

/// One entry of a batch, as the write-out needs it.
#[derive(Debug, Clone)]
pub(crate) struct PendingEntry {
    pub seq: u64,
    pub bytes: Bytes,
    pub hash: Hash,
    pub prev_hash: Hash,
    pub timestamp: Timestamp,
    /// Its object's key.
    pub key: String,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl PendingEntry {
    /// Entry `seq` of `ledger` from its stored `bytes`, as [`check_entry`] read them.
    fn checked(
        ledger: &LedgerId,
        seq: u64,
        bytes: Bytes,
        entry: crate::chain::verify::CheckedEntry,
    ) -> PendingEntry {
        PendingEntry {
            seq,
            bytes,
            hash: entry.hash,
            prev_hash: entry.prev_hash,
            timestamp: entry.timestamp,
            key: entry_key(ledger, seq),
            idempotency_key: entry.idempotency_key,
        }
    }

    /// The entry's object.
    fn object(&self) -> NewObject {
        NewObject {
            key: self.key.clone(),
            body: self.bytes.clone(),
        }
    }

    /// The entry's `SEQ#` item, naming object version `version_id`.
    fn seq_item(&self, version_id: Option<String>) -> SeqItem {
        SeqItem {
            seq: self.seq,
            entry_hash: self.hash,
            prev_hash: self.prev_hash,
            timestamp: self.timestamp,
            object_key: self.key.clone(),
            version_id,
        }
    }
}

/// The objects and `SEQ#` items of a batch written out in the same step as its claim
/// ([`AtomicBatchStore::commit_batch`]; such stores have no object versions).
fn objects_and_items(entries: &[PendingEntry]) -> (Vec<NewObject>, Vec<SeqItem>) {
    entries
        .iter()
        .map(|e| (e.object(), e.seq_item(None)))
        .unzip()
}

/// Decodes a pending batch and checks it is one unbroken piece of chain, so that nothing
/// inconsistent is ever written to write-once storage.
pub(crate) fn decode_pending(
    ledger: &LedgerId,
    pending: &PendingBatch,
) -> Result<Vec<PendingEntry>, LedgerError> {
    if pending.entries.is_empty() {
        return Err(LedgerError::Corrupt {
            seq: Some(pending.first_seq),
            detail: "a pending batch with no entries".into(),
        });
    }
    let mut out: Vec<PendingEntry> = Vec::with_capacity(pending.entries.len());
    for (i, bytes) in pending.entries.iter().enumerate() {
        let seq = pending.first_seq + i as u64;
        let corrupt = |detail: String| LedgerError::Corrupt {
            seq: Some(seq),
            detail,
        };
        let entry = match check_entry(ledger, seq, Some(bytes)) {
            Evidence::Entry(entry) => entry,
            Evidence::Malformed { reason, .. } => {
                return Err(corrupt(format!("pending entry is malformed: {reason}")));
            }
            Evidence::Missing => unreachable!("bytes were given"),
        };
        if let Some(prev) = out.last()
            && prev.hash != entry.prev_hash
        {
            return Err(corrupt(
                "pending entry does not link to the one before it".into(),
            ));
        }
        out.push(PendingEntry::checked(ledger, seq, bytes.clone(), entry));
    }
    Ok(out)
}

/// Whether every entry of a pending batch already has its `SEQ#` item (the last step of the
/// write-out), each agreeing with the entry. One index query.
async fn is_written_out(
    stores: &Stores,
    ledger: &LedgerId,
    entries: &[PendingEntry],
) -> Result<bool, LedgerError> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(true);
    };
    let items = stores
        .index
        .seq_items(ledger, first.seq, last.seq, entries.len())
        .await?;
    Ok(items.len() == entries.len()
        && items
            .iter()
            .zip(entries)
            .all(|(item, e)| item.entry_hash == e.hash))
}

/// Steps 3 and 4 for a claimed batch: entry objects, then `SEQ#` items. Idempotent; safe to
/// run concurrently with other writers doing the same. Existing objects or items that differ
/// from what the batch says are corruption: reported, never overwritten.
async fn roll_forward(
    stores: &Stores,
    ledger: &LedgerId,
    entries: &[PendingEntry],
) -> Result<(), LedgerError> {
    let objects: Vec<NewObject> = entries.iter().map(PendingEntry::object).collect();
    let outcomes = stores.objects.put_new(&objects).await?;
    let versions = try_join_all(
        entries
            .iter()
            .zip(outcomes)
            .map(|(entry, outcome)| async move {
                match outcome {
                    PutOutcome::Created { version } => Ok(version),
                    PutOutcome::AlreadyExists => existing_version(stores, entry).await,
                }
            }),
    )
    .await?;
    let items: Vec<SeqItem> = entries
        .iter()
        .zip(versions)
        .map(|(e, version_id)| e.seq_item(version_id))
        .collect();
    let outcomes = stores.index.put_seq_items(ledger, &items).await?;
    for (item, outcome) in items.iter().zip(outcomes) {
        if let SeqPut::AlreadyExists(existing) = outcome
            && existing != *item
        {
            return Err(LedgerError::Corrupt {
                seq: Some(item.seq),
                detail: format!(
                    "the SEQ# item already stored disagrees with the committed entry ({existing:?})"
                ),
            });
        }
    }
    Ok(())
}

/// An object already exists at an entry's key: it must be exactly this entry (a redo of an
/// earlier write); then its version is the one to index.
async fn existing_version(
    stores: &Stores,
    entry: &PendingEntry,
) -> Result<Option<String>, LedgerError> {
    let corrupt = |detail: String| LedgerError::Corrupt {
        seq: Some(entry.seq),
        detail,
    };
    match stores.objects.get(&entry.key, None).await? {
        Some(object) if object.body == entry.bytes => Ok(object.version),
        Some(_) => Err(corrupt(format!(
            "object {} holds different bytes than the committed entry",
            entry.key
        ))),
        None => Err(corrupt(format!(
            "object {} was reported to exist but cannot be read",
            entry.key
        ))),
    }
}

/// Checks that a head read from the index is one this protocol could have written, before
/// anything is built on it or written from it: its pending batch ends at `seq_counter` with the
/// hash `last_hash` and links to the stored entry before it (or to genesis), and a head without
/// a pending batch names the hash of the entry stored at `seq_counter`. A head that fails is
/// corruption (an edited `META`): writing on it would lock a broken link into WORM storage.
async fn check_head(stores: &Stores, ledger: &LedgerId, head: &Meta) -> Result<(), LedgerError> {
    let seq = head.seq_counter;
    let corrupt = |detail: String| LedgerError::Corrupt {
        seq: Some(seq),
        detail,
    };
    let (linked_seq, expected_hash) = match &head.pending {
        None if seq == 0 => {
            return if head.last_hash == Hash::GENESIS {
                Ok(())
            } else {
                Err(corrupt(
                    "META of an empty ledger has a last_hash other than genesis".into(),
                ))
            };
        }
        None => (seq, head.last_hash),
        Some(pending) => {
            let entries = decode_pending(ledger, pending)?;
            let (first, last) = (&entries[0], &entries[entries.len() - 1]);
            if last.seq != seq || last.hash != head.last_hash {
                return Err(corrupt(format!(
                    "META says seq {seq} with hash {} but its pending batch ends at seq {} with hash {}",
                    head.last_hash, last.seq, last.hash
                )));
            }
            if first.seq == 1 {
                return if first.prev_hash == Hash::GENESIS {
                    Ok(())
                } else {
                    Err(corrupt(
                        "the pending batch's first entry does not link to genesis".into(),
                    ))
                };
            }
            (first.seq - 1, first.prev_hash)
        }
    };
    match stores
        .objects
        .get(&entry_key(ledger, linked_seq), None)
        .await?
    {
        Some(object) if Hash::of_entry(&object.body) == expected_hash => Ok(()),
        Some(_) => Err(corrupt(format!(
            "META does not link to the entry stored at seq {linked_seq}"
        ))),
        None => Err(corrupt(format!(
            "META links to seq {linked_seq}, which has no stored entry"
        ))),
    }
}

/// Exponential backoff with full jitter: 1 ms doubling to 64 ms.
fn backoff(attempt: u32) -> Duration {
    let cap_us = 1_000u64 << attempt.min(6);
    Duration::from_micros(fastrand::u64(cap_us / 2..=cap_us))
}

/// The pause before the `attempt`th retry of a throttled claim: full jitter up to 50 ms
/// doubled per attempt, at most 1 s (DynamoDB refills a partition's capacity every second).
fn throttle_backoff(attempt: u32) -> Duration {
    let cap_ms = (50u64 << attempt.min(5)).min(1_000);
    Duration::from_millis(fastrand::u64(cap_ms / 4..=cap_ms))
}

/// The server's clock, as entries are stamped.
pub(crate) fn now() -> Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    Timestamp::from_unix_micros(micros).expect("the system clock is between years 1 and 9999")
}

/// The protocol driven directly, without queues, over the embedded store wrapped in the fault
/// injector (`tests/crash_points.rs` runs the whole matrix through the service).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BackendMetrics;
    use crate::store::fault::{self, Fault, FaultHandle};
    use crate::store::local::LocalStore;

    fn ledger() -> LedgerId {
        LedgerId::parse("protocol").unwrap()
    }

    /// One request of `n` records without keys.
    fn records(n: usize) -> Vec<Vec<Append>> {
        vec![
            (0..n)
                .map(|i| {
                    Append::new(
                        Record::parse(format!(r#"{{"n":{i}}}"#).as_bytes()).unwrap(),
                        None,
                    )
                })
                .collect(),
        ]
    }

    fn writer(stores: &Stores) -> Writer {
        let registry = prometheus::Registry::new();
        Writer::new(
            ledger(),
            stores.clone(),
            Arc::new(Options::default()),
            LedgerMetrics::new(&registry).unwrap(),
            Arc::new(LedgerCap::unbounded()),
        )
    }

    /// The embedded store, and the same store taken in the protocol's separate steps under
    /// the fault injector.
    fn embedded(dir: &std::path::Path) -> Stores {
        LocalStore::open(dir, BackendMetrics::unregistered())
            .unwrap()
            .into_stores()
    }

    fn stores_in_steps(dir: &std::path::Path) -> (Stores, Stores, FaultHandle) {
        let stores = embedded(dir);
        let (faulty, handle) = fault::wrap_in_steps(&stores);
        (stores, faulty, handle)
    }

    /// The entries of a batch of one request, and whether they were written out.
    fn entries(committed: Committed) -> (Vec<PendingEntry>, bool) {
        let appended = committed.into_iter().next().unwrap().unwrap();
        let written = appended.iter().all(|a| a.written_out);
        (appended.into_iter().map(|a| a.entry).collect(), written)
    }

    async fn stored_seqs(stores: &Stores) -> Vec<u64> {
        let items = stores
            .index
            .seq_items(&ledger(), 1, 100, 100)
            .await
            .unwrap();
        items.iter().map(|i| i.seq).collect()
    }

    #[tokio::test]
    async fn a_batch_in_steps_is_claimed_then_written_out_and_the_next_chains_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, faulty, handle) = stores_in_steps(dir.path());
        let mut w = writer(&faulty);
        let (first, written) = entries(w.commit(&records(2)).await.unwrap());
        assert!(written);
        assert_eq!(
            handle.calls(),
            [
                "head",
                "create_ledger",
                "compare_and_set_head",
                "put_new",
                "put_seq_items"
            ]
        );
        let (second, _) = entries(w.commit(&records(1)).await.unwrap());
        assert_eq!(second[0].seq, 3);
        assert_eq!(
            second[0].prev_hash, first[1].hash,
            "chained on the cached head"
        );
        assert_eq!(stored_seqs(&stores).await, [1, 2, 3]);
        let head = stores.index.head(&ledger()).await.unwrap().unwrap();
        assert_eq!((head.seq_counter, head.last_hash), (3, second[0].hash));
    }

    #[tokio::test]
    async fn a_batch_in_one_step_leaves_no_pending_batch() {
        let dir = tempfile::tempdir().unwrap();
        let stores = embedded(dir.path());
        let (faulty, handle) = fault::wrap(&stores);
        let (written, ok) = entries(writer(&faulty).commit(&records(3)).await.unwrap());
        assert!(ok);
        assert_eq!(written.len(), 3);
        assert_eq!(handle.calls(), ["head", "create_ledger", "commit_batch"]);
        let head = stores.index.head(&ledger()).await.unwrap().unwrap();
        assert_eq!(head.pending, None);
        assert_eq!(stored_seqs(&stores).await, [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_claim_whose_answer_was_lost_is_found_and_not_claimed_again() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, faulty, handle) = stores_in_steps(dir.path());
        handle.plan(2, Fault::LoseAnswer); // compare_and_set_head
        let (got, written) = entries(writer(&faulty).commit(&records(2)).await.unwrap());
        assert!(written);
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        let head = stores.index.head(&ledger()).await.unwrap().unwrap();
        assert_eq!(head.seq_counter, 2, "applied once");
        assert_eq!(stored_seqs(&stores).await, [1, 2]);
    }

    #[tokio::test]
    async fn a_claim_that_failed_unapplied_is_an_unknown_outcome_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, faulty, handle) = stores_in_steps(dir.path());
        handle.plan(2, Fault::FailBefore);
        let err = writer(&faulty).commit(&records(1)).await.err().unwrap();
        assert!(matches!(err, LedgerError::OutcomeUnknown(_)), "{err}");
        let head = stores.index.head(&ledger()).await.unwrap().unwrap();
        assert_eq!(head.seq_counter, 0);
    }

    #[tokio::test]
    async fn a_writer_that_died_after_its_claim_is_finished_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, faulty, handle) = stores_in_steps(dir.path());
        handle.plan(2, Fault::CrashAfter);
        assert!(writer(&faulty).commit(&records(2)).await.is_err());
        assert!(handle.crashed());
        assert_eq!(stored_seqs(&stores).await, Vec::<u64>::new());

        let mut next = writer(&stores);
        assert!(next.finish_pending().await.unwrap(), "rolled forward");
        assert_eq!(stored_seqs(&stores).await, [1, 2]);
        assert!(!next.finish_pending().await.unwrap(), "nothing left to do");
    }

    #[tokio::test]
    async fn a_writer_with_a_stale_head_loses_the_race_and_rebuilds_on_the_winner() {
        let dir = tempfile::tempdir().unwrap();
        let stores = embedded(dir.path());
        let (in_steps, _) = fault::wrap_in_steps(&stores);
        let (mut a, mut b) = (writer(&in_steps), writer(&in_steps));
        a.commit(&records(1)).await.unwrap();
        b.commit(&records(1)).await.unwrap(); // b caches the head at seq 2
        let (won, _) = entries(a.commit(&records(1)).await.unwrap());
        let (rebuilt, _) = entries(b.commit(&records(2)).await.unwrap());
        assert_eq!(won[0].seq, 3);
        assert_eq!(rebuilt[0].seq, 4);
        assert_eq!(rebuilt[0].prev_hash, won[0].hash);
        assert_eq!(stored_seqs(&stores).await, [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn an_edited_head_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let stores = embedded(dir.path());
        writer(&stores).commit(&records(1)).await.unwrap();
        let mut head = stores.index.head(&ledger()).await.unwrap().unwrap();
        let edited = Meta {
            last_hash: Hash([9; 32]),
            ..head.clone()
        };
        stores
            .index
            .compare_and_set_head(&ledger(), 1, &edited)
            .await
            .unwrap();
        head = edited;
        let err = writer(&stores).commit(&records(1)).await.err().unwrap();
        assert!(
            matches!(err, LedgerError::Corrupt { seq: Some(1), .. }),
            "{err}"
        );
        assert_eq!(
            stores.index.head(&ledger()).await.unwrap(),
            Some(head),
            "nothing built on it"
        );
        assert_eq!(stored_seqs(&stores).await, [1]);
    }

    fn keyed(key: &str, body: &str) -> Append {
        Append::new(
            Record::parse(body.as_bytes()).unwrap(),
            Some(IdempotencyKey::parse(key).unwrap()),
        )
    }

    /// The one append of a one-request batch.
    async fn one(w: &mut Writer, append: Append) -> Result<Appended, LedgerError> {
        let mut answers = w.commit(&[vec![append]]).await?;
        Ok(answers.pop().unwrap()?.pop().unwrap())
    }

    #[tokio::test]
    async fn a_retried_key_gets_its_entry_back_and_nothing_new_on_both_paths() {
        for in_steps in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (stores, faulty, handle) = stores_in_steps(dir.path());
            let used = if in_steps { &faulty } else { &stores };
            let mut w = writer(used);
            let first = one(&mut w, keyed("k1", r#"{"a":1}"#)).await.unwrap();
            assert!(!first.replayed);
            assert_eq!(first.entry.idempotency_key.as_ref().unwrap().as_str(), "k1");
            if in_steps {
                assert_eq!(
                    handle.calls(),
                    [
                        "head",
                        "create_ledger",
                        "put_key_claim",
                        "compare_and_set_head",
                        "put_new",
                        "put_seq_items"
                    ],
                    "one key write, no key read, before the claim"
                );
            }
            // The same key and record, from this writer and from a fresh one.
            for mut w in [w, writer(used)] {
                let again = one(&mut w, keyed("k1", "{ \"a\" : 1 }")).await.unwrap();
                assert!(again.replayed, "in steps: {in_steps}");
                assert_eq!((again.entry.seq, again.entry.hash), (1, first.entry.hash));
                assert_eq!(again.entry.timestamp, first.entry.timestamp);
            }
            // Another record under the same key is refused and names the key's seq.
            let err = one(&mut writer(used), keyed("k1", r#"{"a":2}"#))
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    LedgerError::IdempotencyKeyReused {
                        seq: Some(1),
                        index: None
                    }
                ),
                "{err}"
            );
            assert_eq!(stored_seqs(&stores).await, [1]);
        }
    }

    #[tokio::test]
    async fn a_key_given_twice_in_one_batch_is_appended_once() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, faulty, _) = stores_in_steps(dir.path());
        for used in [&stores, &faulty] {
            let mut w = writer(used);
            let key = format!("dup-{}", used.batches.is_some());
            let requests = [
                vec![keyed(&key, r#"{"n":1}"#)],
                vec![keyed(&key, r#"{"n":1}"#)],
                vec![keyed(&key, r#"{"n":2}"#), keyed("other", "{}")],
            ];
            let answers = w.commit(&requests).await.unwrap();
            let a = answers[0].as_ref().unwrap();
            let b = answers[1].as_ref().unwrap();
            assert_eq!(a[0].entry.seq, b[0].entry.seq);
            assert!(!a[0].replayed && b[0].replayed);
            assert!(
                matches!(
                    answers[2],
                    Err(LedgerError::IdempotencyKeyReused { index: Some(0), .. })
                ),
                "the third request reuses the key with another record: refused whole"
            );
        }
        assert_eq!(stored_seqs(&stores).await, [1, 2], "one entry per batch");
    }

    #[tokio::test]
    async fn a_writer_that_died_after_its_key_write_leaves_a_key_the_retry_commits_once() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, faulty, handle) = stores_in_steps(dir.path());
        handle.plan(2, Fault::CrashAfter); // put_key_claim
        assert!(one(&mut writer(&faulty), keyed("k", "{}")).await.is_err());
        let claim = stores
            .index
            .key_claim(&ledger(), &IdempotencyKey::parse("k").unwrap())
            .await
            .unwrap();
        assert_eq!(
            claim,
            Some(KeyClaim {
                base: 0,
                seqs: vec![1]
            }),
            "left behind"
        );
        let (in_steps, _) = fault::wrap_in_steps(&stores);
        let mut w = writer(&in_steps);
        assert!(
            matches!(
                w.find_key(&IdempotencyKey::parse("k").unwrap()).await,
                Err(LedgerError::IdempotencyKeyInFlight)
            ),
            "undecided while the head is the one it names"
        );
        let retried = one(&mut w, keyed("k", "{}")).await.unwrap();
        assert!(!retried.replayed, "joined the dead writer's claim and won");
        assert_eq!(one(&mut w, keyed("k", "{}")).await.unwrap().entry.seq, 1);
        assert_eq!(
            w.find_key(&IdempotencyKey::parse("k").unwrap())
                .await
                .unwrap()
                .map(|e| e.seq),
            Some(1)
        );
        assert_eq!(stored_seqs(&stores).await, [1]);
    }

    #[tokio::test]
    async fn a_key_whose_claim_lost_is_taken_over_and_a_racing_retry_replays() {
        let dir = tempfile::tempdir().unwrap();
        let stores = embedded(dir.path());
        let (in_steps, _) = fault::wrap_in_steps(&stores);
        let (mut a, mut b) = (writer(&in_steps), writer(&in_steps));
        one(&mut a, keyed("x", "{}")).await.unwrap();
        one(&mut b, keyed("y", "{}")).await.unwrap(); // b caches the head at seq 2
        // A writer died after naming key "z" at seq 3 from head 2; then a claims seq 3
        // without it: that item is decided (stale) and is taken over.
        let z = IdempotencyKey::parse("z").unwrap();
        let stale = KeyClaim {
            base: 2,
            seqs: vec![3],
        };
        stores
            .index
            .put_key_claim(&ledger(), &z, None, &stale)
            .await
            .unwrap();
        one(&mut a, keyed("w", "{}")).await.unwrap();
        assert_eq!(
            a.find_key(&z).await.unwrap().map(|e| e.seq),
            None,
            "decided: not committed"
        );
        // b, on its stale head, and a, race for "z" with the same record.
        let from_b = one(&mut b, keyed("z", r#"{"z":1}"#)).await.unwrap();
        let from_a = one(&mut a, keyed("z", r#"{"z":1}"#)).await.unwrap();
        assert_eq!(from_b.entry.seq, 4);
        assert!(!from_b.replayed && from_a.replayed);
        assert_eq!(from_a.entry.hash, from_b.entry.hash);
        assert_eq!(stored_seqs(&stores).await, [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_keyed_claim_whose_answer_was_lost_is_not_appended_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, faulty, handle) = stores_in_steps(dir.path());
        handle.plan(3, Fault::LoseAnswer); // compare_and_set_head
        let mut w = writer(&faulty);
        let got = one(&mut w, keyed("lost", "{}")).await.unwrap();
        assert_eq!(got.entry.seq, 1);
        assert_eq!(one(&mut w, keyed("lost", "{}")).await.unwrap().entry.seq, 1);
        assert_eq!(stored_seqs(&stores).await, [1]);
    }
}
