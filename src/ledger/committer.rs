//! One committer task per ledger: group commit over the protocol in [`super::commit`].
//!
//! Appends queue on a bounded channel. The task takes everything queued (up to the batch's
//! record and byte bounds, optionally lingering a moment for more), claims the whole batch with
//! one `META` compare-and-set, rolls it forward, and answers every request. On a store that
//! commits batches in one step (the embedded store), the claim and the write-out are one call
//! ([`crate::store::IndexStore::commit_batch`]). While it works, new appends queue up and form
//! the next batch, so batches grow with load and a lone append is a batch of one with no added
//! wait.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, error, info_span, warn};

use super::commit::{
    PendingEntry, build_batch, check_head, decode_pending, is_rolled_forward, roll_forward,
    write_out,
};
use super::{LedgerError, LedgerMetrics, Options, Receipt};
use crate::chain::entry::{LedgerId, MAX_SEQ, Record, Timestamp};
use crate::store::{BatchCommit, CasOutcome, Meta, StoreResult, Stores, Taken, breaker};

/// A batch whose claim is committed.
struct Claimed {
    entries: Vec<PendingEntry>,
    /// Its objects and `SEQ#` items were written with the claim (no roll-forward to do).
    written_out: bool,
}

/// One append waiting for its batch.
pub(crate) struct Request {
    pub record: Record,
    pub reply: oneshot::Sender<Result<Receipt, LedgerError>>,
}

impl Request {
    /// Bytes the record adds to a batch (its stored size, near enough for bounding).
    fn size(&self) -> usize {
        self.record.as_str().len() + crate::config::ENTRY_OVERHEAD
    }
}

pub(crate) struct Committer {
    ledger: LedgerId,
    stores: Stores,
    options: Arc<Options>,
    metrics: LedgerMetrics,
    /// The last `META` seen; `None` means read it before the next claim.
    head: Option<Meta>,
    /// Every seq up to this one is known to be rolled forward (objects and `SEQ#` written).
    complete_through: u64,
    /// The `seq_counter` of the last head this writer wrote or checked ([`check_head`]).
    trusted_seq: Option<u64>,
}

impl Committer {
    pub fn new(
        ledger: LedgerId,
        stores: Stores,
        options: Arc<Options>,
        metrics: LedgerMetrics,
    ) -> Committer {
        Committer {
            ledger,
            stores,
            options,
            metrics,
            head: None,
            complete_through: 0,
            trusted_seq: None,
        }
    }

    /// Serves the queue until every sender is gone and the queue is empty, or until no append
    /// came for [`Options::committer_idle`]: then it closes the queue (appends that find it
    /// closed start a new committer), finishes what is already queued, and ends.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut carried: Option<Request> = None;
        loop {
            let first = match carried.take() {
                Some(r) => r,
                None => match tokio::time::timeout(self.options.committer_idle, rx.recv()).await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(_idle) => {
                        rx.close();
                        continue;
                    }
                },
            };
            let mut bytes = first.size();
            let mut batch = vec![first];
            let linger_until = Instant::now() + self.options.batch_linger;
            while batch.len() < self.options.batch_max_records {
                let next = match rx.try_recv() {
                    Ok(r) => Some(r),
                    Err(_) if self.options.batch_linger.is_zero() => None,
                    Err(_) => tokio::time::timeout_at(linger_until, rx.recv())
                        .await
                        .ok()
                        .flatten(),
                };
                let Some(next) = next else { break };
                if bytes + next.size() > self.options.batch_max_bytes {
                    carried = Some(next);
                    break;
                }
                bytes += next.size();
                batch.push(next);
            }
            let span = info_span!("batch", ledger_id = %self.ledger, size = batch.len());
            self.commit(batch).instrument(span).await;
        }
    }

    async fn commit(&mut self, batch: Vec<Request>) {
        self.metrics.batch_size.observe(batch.len() as f64);
        let (records, replies): (Vec<Record>, Vec<_>) =
            batch.into_iter().map(|r| (r.record, r.reply)).unzip();
        let results = match self.claim(&records).await {
            Err(e) => vec![Err(e); records.len()],
            Ok(Claimed {
                entries,
                written_out,
            }) => {
                let written = if written_out {
                    Ok(())
                } else {
                    roll_forward(&self.stores, &self.ledger, &entries).await
                };
                let materialized = match written {
                    Ok(()) => {
                        self.complete_through =
                            entries.last().map_or(self.complete_through, |e| e.seq);
                        true
                    }
                    Err(e @ LedgerError::Corrupt { .. }) => {
                        self.integrity_error(&e);
                        self.head = None;
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                        return;
                    }
                    Err(e) => {
                        // Committed (durable in META) but not yet written out: the next claim,
                        // a read or startup recovery finishes it. Clients get 202, not an error,
                        // so that they do not append the same event twice.
                        warn!(error = %e, "batch committed; writing it out failed and will be retried");
                        false
                    }
                };
                entries
                    .iter()
                    .map(|e| Ok(Receipt::new(&self.ledger, e, materialized)))
                    .collect()
            }
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // A client that went away still had its record committed; nothing to undo.
            let _ = reply.send(result);
        }
    }

    /// Claims seqs for `records` on the current head, retrying on conflicts. Returns the
    /// committed entries.
    async fn claim(&mut self, records: &[Record]) -> Result<Claimed, LedgerError> {
        let one_step = self.stores.index.commits_batches();
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let head = self.current_head().await?;
            self.ensure_rolled_forward(&head).await?;
            if head.seq_counter + records.len() as u64 > MAX_SEQ {
                return Err(LedgerError::LedgerFull);
            }
            let (new, entries) = build_batch(&self.ledger, &head, records, now());
            let outcome = if one_step {
                self.commit_in_one_step(head.seq_counter, &new, &entries)
                    .await?
            } else {
                self.stores
                    .index
                    .compare_and_set_head(&self.ledger, head.seq_counter, &new)
                    .await
            };
            let claimed = Claimed {
                entries,
                written_out: one_step,
            };
            match outcome {
                Ok(CasOutcome::Applied) => {
                    let mut new = new;
                    if one_step {
                        new.pending = None; // as stored
                    }
                    self.trusted_seq = Some(new.seq_counter);
                    self.head = Some(new);
                    return Ok(claimed);
                }
                Ok(CasOutcome::Conflict(current)) => {
                    self.metrics.conflicts.inc();
                    // A conflict can also be our own update, applied by an attempt whose answer
                    // was lost and then refused on the SDK's retry, with others claiming after
                    // it. Rebuilding then would append the same records twice.
                    let maybe_ours = current
                        .as_ref()
                        .is_some_and(|c| c.seq_counter >= new.seq_counter);
                    self.head = current;
                    if maybe_ours && self.was_applied(&new).await? {
                        return Ok(claimed);
                    }
                }
                Err(e) if breaker::never_sent(&e) => {
                    // Refused by an open circuit: nothing was sent, nothing committed.
                    return Err(e.into());
                }
                Err(e) => {
                    // The update may have been applied, or may still be (a request that timed
                    // out here can land later): look for it, and say "unknown" unless found.
                    self.head = None;
                    return match self.was_applied(&new).await {
                        Ok(true) => Ok(claimed),
                        Ok(false) | Err(_) => Err(LedgerError::OutcomeUnknown(e.to_string())),
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

    /// The claim and the write-out as one step ([`crate::store::IndexStore::commit_batch`]),
    /// with `new` stored without its pending batch. What the store did, as a compare-and-set
    /// outcome; a batch refused because something is stored where it would go is corruption.
    async fn commit_in_one_step(
        &mut self,
        expected_seq: u64,
        new: &Meta,
        entries: &[PendingEntry],
    ) -> Result<StoreResult<CasOutcome>, LedgerError> {
        let stored = Meta {
            seq_counter: new.seq_counter,
            last_hash: new.last_hash,
            pending: None,
        };
        let (objects, items) = write_out(entries);
        let outcome = self
            .stores
            .index
            .commit_batch(&self.ledger, expected_seq, &stored, &objects, &items)
            .await;
        let (seq, what) = match outcome {
            Ok(BatchCommit::Applied) => return Ok(Ok(CasOutcome::Applied)),
            Ok(BatchCommit::Conflict(current)) => return Ok(Ok(CasOutcome::Conflict(current))),
            Err(e) => return Ok(Err(e)),
            Ok(BatchCommit::Occupied(Taken::Seq(seq))) => (seq, "a SEQ# item".to_owned()),
            Ok(BatchCommit::Occupied(Taken::Object(key))) => (
                entries.iter().find(|e| e.key == key).map_or(0, |e| e.seq),
                format!("object {key}"),
            ),
        };
        self.head = None;
        let e = LedgerError::Corrupt {
            seq,
            detail: format!("{what} is already stored past the head; the batch was not written"),
        };
        self.integrity_error(&e);
        Err(e)
    }

    /// After a failed compare-and-set call: is `new`'s batch the one now committed?
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
        let key = crate::chain::entry::entry_key("", &self.ledger, pending.first_seq);
        self.ensure_rolled_forward(&head).await?;
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
            None if self.options.auto_create => {
                self.stores.index.create_ledger(&self.ledger).await?
            }
            None => return Err(LedgerError::LedgerNotFound),
        };
        self.head = Some(head.clone());
        Ok(head)
    }

    /// Counts and logs an integrity failure (other errors pass silently).
    fn integrity_error(&self, e: &LedgerError) {
        if matches!(e, LedgerError::Corrupt { .. }) {
            self.metrics.corruption.inc();
            error!(ledger_id = %self.ledger, error = %e, "INTEGRITY: refusing to append on a corrupt ledger");
        }
    }

    /// Rolls forward the head's pending batch unless it is known to be written out already.
    /// A head this writer did not write is checked first ([`check_head`]).
    async fn ensure_rolled_forward(&mut self, head: &Meta) -> Result<(), LedgerError> {
        if self.trusted_seq != Some(head.seq_counter) {
            check_head(&self.stores, &self.ledger, head)
                .await
                .inspect_err(|e| self.integrity_error(e))?;
            self.trusted_seq = Some(head.seq_counter);
        }
        let Some(pending) = &head.pending else {
            return Ok(());
        };
        if pending.last_seq() <= self.complete_through {
            return Ok(());
        }
        let entries = decode_pending(&self.ledger, pending)?;
        if !is_rolled_forward(&self.stores, &self.ledger, &entries).await? {
            roll_forward(&self.stores, &self.ledger, &entries)
                .await
                .inspect_err(|e| self.integrity_error(e))?;
            self.metrics.roll_forwards.inc();
        }
        self.complete_through = pending.last_seq();
        Ok(())
    }
}

/// Exponential backoff with full jitter: 1 ms doubling to 64 ms.
fn backoff(attempt: u32) -> Duration {
    let cap_us = 1_000u64 << attempt.min(6);
    Duration::from_micros(fastrand::u64(cap_us / 2..=cap_us))
}

fn now() -> Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    Timestamp::from_unix_micros(micros).expect("the system clock is between years 1 and 9999")
}
