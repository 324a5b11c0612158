//! The walk: seqs checked page by page in seq order, the next pages read and hashed ahead,
//! and a run of seqs with nothing stored skipped in one step.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, stream};

use super::super::commit::PendingEntry;
use super::checkpoints::{check_checkpoint, check_signature};
use super::entry::{EntryRules, check_fetched};
use super::page::{page_ranges, read_checkpoints, read_page};
use super::pending::PendingCheck;
use super::{LedgerError, VerifyOptions};
use crate::chain::checkpoint::PublicKey;
use crate::chain::entry::LedgerId;
use crate::chain::hash::Hash;
use crate::chain::verify::{ChainVerifier, Evidence};
use crate::store::{LockMode, Stores};

/// Pages read and hashed ahead of the one being checked.
const PAGES_AHEAD: usize = 2;

/// One verification in progress: what it reads and what it has found.
pub(super) struct Walk<'a> {
    pub(super) stores: &'a Stores,
    pub(super) ledger: &'a LedgerId,
    pub(super) keys: Arc<Vec<PublicKey>>,
    /// Read `SEQ#` items and compare them (false with [`VerifyOptions::objects_only`]).
    pub(super) use_index: bool,
    /// The decoded entries of `META`'s pending batch.
    pending: Arc<Vec<PendingEntry>>,
    /// The Object Lock mode every entry object must carry, when the store has Object Lock.
    lock_mode: Option<LockMode>,
    pub(super) verifier: ChainVerifier,
    pub(super) checkpoints_checked: u64,
    /// Seqs of the pending batch with no object yet.
    pub(super) unwritten: Vec<u64>,
    progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    first: u64,
}

impl<'a> Walk<'a> {
    /// A walk from `from`, whose first entry must link to `anchor`.
    pub(super) fn new(
        stores: &'a Stores,
        ledger: &'a LedgerId,
        options: &VerifyOptions,
        pending: Vec<PendingEntry>,
        from: u64,
        anchor: Option<Hash>,
        max_failures: usize,
    ) -> Walk<'a> {
        Walk {
            stores,
            ledger,
            keys: Arc::new(options.trusted_keys.clone()),
            use_index: !options.objects_only,
            pending: Arc::new(pending),
            lock_mode: stores.lock_mode,
            verifier: ChainVerifier::new(from, anchor, max_failures),
            checkpoints_checked: 0,
            unwritten: Vec::new(),
            progress: options.progress.clone(),
            first: from,
        }
    }
}

impl Walk<'_> {
    /// Walks seqs `from..=to`, page by page, reading ahead. A page with nothing stored at all
    /// and the run of empty seqs after it are skipped in one step (one `missing_entry`), so
    /// that a stray key far past the end costs a listing, not a walk to it.
    pub(super) async fn pages(&mut self, from: u64, to: u64) -> Result<(), LedgerError> {
        let mut start = from;
        while start <= to {
            start = self.pages_until_a_gap(start, to).await?;
        }
        Ok(())
    }

    /// Walks pages from `from` until the end or an empty page; returns where to go on.
    async fn pages_until_a_gap(&mut self, from: u64, to: u64) -> Result<u64, LedgerError> {
        let (stores, ledger, keys) = (self.stores.clone(), self.ledger.clone(), self.keys.clone());
        let (use_index, pending) = (self.use_index, self.pending.clone());
        let mut pages = stream::iter(page_ranges(from, to).map(move |(a, b)| {
            let (stores, ledger, keys, pending) = (
                stores.clone(),
                ledger.clone(),
                keys.clone(),
                pending.clone(),
            );
            async move { read_page(&stores, &ledger, a, b, keys, use_index, &pending).await }
        }))
        .buffered(PAGES_AHEAD);
        while let Some(page) = pages.try_next().await? {
            if page.empty {
                let resume = if page.last < to {
                    self.next_stored_after(page.last).await?.min(to + 1)
                } else {
                    to + 1
                };
                self.skip_gap(page.first, resume - 1).await?;
                return Ok(resume);
            }
            let mut checkpoints = page.checkpoints.into_iter().peekable();
            for mut fetched in page.entries {
                // Seqs with nothing stored at all are reported as runs, one failure each.
                if fetched.nothing {
                    while let Some(cp) = checkpoints.next_if(|c| c.seq <= fetched.seq) {
                        self.checkpoints_checked += 1;
                        check_checkpoint(&mut self.verifier, self.ledger, &cp, Some(None));
                    }
                    continue;
                }
                self.verifier.skip_missing(fetched.seq - 1);
                let evidence = fetched.evidence.take().unwrap_or(Evidence::Missing);
                let hash = match &evidence {
                    Evidence::Entry(e) => Some(e.hash),
                    Evidence::Malformed { hash, .. } => Some(*hash),
                    Evidence::Missing => None,
                };
                if fetched.pending == Some(PendingCheck::Unwritten) {
                    self.unwritten.push(fetched.seq);
                }
                let rules = EntryRules {
                    ledger: self.ledger,
                    lock_mode: self.lock_mode,
                    use_index: self.use_index,
                    pending: &self.pending,
                };
                check_fetched(&mut self.verifier, &rules, &fetched, evidence);
                while let Some(cp) = checkpoints.next_if(|c| c.seq <= fetched.seq) {
                    self.checkpoints_checked += 1;
                    check_checkpoint(
                        &mut self.verifier,
                        self.ledger,
                        &cp,
                        Some((cp.seq == fetched.seq).then_some(hash).flatten()),
                    );
                }
            }
            for cp in checkpoints {
                self.checkpoints_checked += 1;
                check_checkpoint(&mut self.verifier, self.ledger, &cp, Some(None));
            }
            if let Some(progress) = &self.progress {
                progress(self.verifier.next_seq() - self.first);
            }
        }
        self.verifier.skip_missing(to);
        Ok(to + 1)
    }

    /// Checks a stored checkpoint whose seq was not walked: `vouches_for_nothing` when no
    /// entry can exist at its seq, else only its form and signature.
    pub(super) fn check_unwalked_checkpoint(
        &mut self,
        (seq, key, bytes): (u64, String, bytes::Bytes),
        vouches_for_nothing: bool,
    ) {
        let cp = check_signature(seq, key, &bytes, &self.keys);
        self.checkpoints_checked += 1;
        let entry_hash = vouches_for_nothing.then_some(None);
        check_checkpoint(&mut self.verifier, self.ledger, &cp, entry_hash);
    }

    /// Seqs `first..=last` (from the verifier's next seq) hold nothing: one `missing_entry`
    /// for the run, and every checkpoint in it vouches for an entry that is not there.
    async fn skip_gap(&mut self, first: u64, last: u64) -> Result<(), LedgerError> {
        self.verifier.skip_missing(last);
        if let Some(progress) = &self.progress {
            progress(self.verifier.next_seq() - self.first);
        }
        for checkpoint in read_checkpoints(self.stores, self.ledger, first, Some(last)).await? {
            self.check_unwalked_checkpoint(checkpoint, true);
        }
        Ok(())
    }
}
