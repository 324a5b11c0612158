//! Signed checkpoints over storage.
//!
//! A checkpoint is one write-once object at `{ledger_id}/checkpoints/{seq:018}.json` holding a
//! [`Checkpoint`] as compact JSON. At most one checkpoint exists per (ledger, seq): asking for
//! a checkpoint when the head has not moved since the last one returns that one (its timestamp
//! is when it was first signed), so repeated requests and periodic rounds never pile up objects.
//!
//! The latest checkpoint of a ledger is found without an index: keys sort by seq, so one list
//! call finds it for ledgers with fewer than a thousand checkpoints, and a binary search over
//! "is there a checkpoint after seq x?" (one list call with limit 1 each) for the others. It is
//! cached after that, for a bounded number of ledgers ([`CheckpointCache`]).
//!
//! Periodic rounds (`ELEANOR_LEDGER_CHECKPOINT_INTERVAL`) look only at the ledgers this replica
//! committed to since its last round ([`MovedLedgers`]), never at the list of all ledgers, and
//! skip a ledger another replica already checkpointed during the interval
//! (`docs/PROTOCOL.md`, "Checkpoint rounds").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::commit::now;
use super::{Ledger, LedgerError};
use crate::chain::checkpoint::{Checkpoint, CheckpointBody};
use crate::chain::entry::{LedgerId, MAX_SEQ};
use crate::chain::keys::{checkpoint_key, checkpoints_prefix, seq_of_checkpoint_key};
use crate::store::{NewObject, ObjectStore, PutOutcome};

/// Checkpoint keys a round lists per moved ledger: those made since this replica's first
/// commit of the interval, of which there are few (one per replica per interval at most).
const COVERING_LISTING: usize = 100;

/// What one replica committed to one ledger since its last checkpoint round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Moved {
    /// The first and last seq it committed (or rolled forward).
    first: u64,
    last: u64,
    /// A round found another replica's checkpoint of the interval and left the ledger to
    /// the next round, which checkpoints it unless a later checkpoint covers `last`.
    deferred: bool,
}

/// The ledgers this replica committed to since its last checkpoint round: all a round looks
/// at, so a round costs in proportion to the ledgers that moved here, not to every ledger,
/// and a replica that did not write a ledger does nothing for it (whoever wrote it does).
/// Held only when rounds run (a signing key and a non-zero interval). In memory: a replica
/// that dies before its round leaves its ledgers to their next append's round or to
/// `POST .../checkpoints` (`docs/PROTOCOL.md`, "Checkpoint rounds").
pub(super) struct MovedLedgers {
    enabled: bool,
    ledgers: Mutex<HashMap<LedgerId, Moved>>,
}

impl MovedLedgers {
    pub(super) fn new(enabled: bool) -> MovedLedgers {
        MovedLedgers {
            enabled,
            ledgers: Mutex::default(),
        }
    }

    /// Notes that this replica committed (or rolled forward) seqs `first..=last` of `ledger`.
    pub(super) fn note(&self, ledger: &LedgerId, first: u64, last: u64) {
        if !self.enabled {
            return;
        }
        let mut ledgers = self
            .ledgers
            .lock()
            .expect("moved-ledgers lock is never poisoned");
        match ledgers.get_mut(ledger) {
            Some(m) => {
                m.first = m.first.min(first);
                m.last = m.last.max(last);
            }
            None => {
                ledgers.insert(
                    ledger.clone(),
                    Moved {
                        first,
                        last,
                        deferred: false,
                    },
                );
            }
        }
    }

    fn merge(&self, ledger: LedgerId, moved: Moved) {
        let mut ledgers = self
            .ledgers
            .lock()
            .expect("moved-ledgers lock is never poisoned");
        let m = ledgers.entry(ledger).or_insert(moved);
        m.first = m.first.min(moved.first);
        m.last = m.last.max(moved.last);
        m.deferred |= moved.deferred;
    }

    fn take(&self) -> HashMap<LedgerId, Moved> {
        std::mem::take(
            &mut *self
                .ledgers
                .lock()
                .expect("moved-ledgers lock is never poisoned"),
        )
    }
}

/// Ledgers whose latest checkpoint is cached, at most (~300 bytes each).
pub(super) const CACHED_CHECKPOINTS: usize = 4096;

/// The latest checkpoint seen per ledger, for at most `capacity` ledgers: when full, a new
/// ledger's checkpoint takes the place of one chosen at random (a miss costs one listing), so
/// memory is bounded however many ledgers are checkpointed.
pub(super) struct CheckpointCache {
    capacity: usize,
    entries: HashMap<LedgerId, Checkpoint>,
}

impl CheckpointCache {
    pub(super) fn new(capacity: usize) -> CheckpointCache {
        CheckpointCache {
            capacity,
            entries: HashMap::new(),
        }
    }

    fn get(&self, ledger: &LedgerId) -> Option<Checkpoint> {
        self.entries.get(ledger).cloned()
    }

    /// Keeps `checkpoint` unless a later one of its ledger is cached.
    fn insert(&mut self, checkpoint: &Checkpoint) {
        match self.entries.get_mut(&checkpoint.ledger_id) {
            Some(cached) if cached.seq > checkpoint.seq => {}
            Some(cached) => *cached = checkpoint.clone(),
            None => {
                if self.entries.len() >= self.capacity {
                    let skip = fastrand::usize(..self.entries.len());
                    let evicted = self.entries.keys().nth(skip).cloned();
                    if let Some(evicted) = evicted {
                        self.entries.remove(&evicted);
                    }
                }
                self.entries
                    .insert(checkpoint.ledger_id.clone(), checkpoint.clone());
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Ledger {
    /// Signs a checkpoint of the ledger's current head and stores it. Returns it and whether
    /// it is new (`false`: the head had not moved since the checkpoint at that seq, which is
    /// returned as stored). Refused for an empty ledger and without a signing key.
    pub async fn checkpoint(&self, ledger: &LedgerId) -> Result<(Checkpoint, bool), LedgerError> {
        let signer = self
            .options()
            .signer
            .clone()
            .ok_or(LedgerError::SigningDisabled)?;
        // Write out an interrupted batch first: the checkpoint vouches for stored entries.
        self.finish_pending(ledger).await?;
        let head = self.head(ledger).await?;
        if head.seq == 0 {
            return Err(LedgerError::InvalidRange(
                "the ledger is empty; there is nothing to checkpoint".into(),
            ));
        }
        let checkpoint = signer.sign_checkpoint(CheckpointBody {
            ledger_id: ledger.clone(),
            seq: head.seq,
            last_hash: head.last_hash,
            timestamp: now(),
        });
        let key = checkpoint_key(ledger, head.seq);
        let outcome = self
            .stores()
            .objects
            .put_new(&[NewObject {
                key: key.clone(),
                body: checkpoint.to_json().into(),
            }])
            .await?;
        let (stored, created) = match outcome.first() {
            Some(PutOutcome::Created { .. }) => (checkpoint, true),
            _ => {
                let existing =
                    self.read_checkpoint(&key)
                        .await?
                        .ok_or_else(|| LedgerError::Unavailable {
                            dependency: "objects",
                            detail: format!("{key} exists but could not be read back"),
                        })?;
                if existing.ledger_id != *ledger
                    || existing.seq != head.seq
                    || existing.last_hash != head.last_hash
                {
                    return Err(LedgerError::Corrupt {
                        seq: Some(head.seq),
                        detail: format!(
                            "the stored checkpoint {key} disagrees with the head (last_hash {})",
                            head.last_hash
                        ),
                    });
                }
                (existing, false)
            }
        };
        self.cache_checkpoint(&stored);
        Ok((stored, created))
    }

    /// The ledger's latest stored checkpoint, `None` if it has none. Checks the ledger exists.
    pub async fn latest_checkpoint(
        &self,
        ledger: &LedgerId,
    ) -> Result<Option<Checkpoint>, LedgerError> {
        self.head(ledger).await?;
        if let Some(cached) = self.cached_checkpoint(ledger) {
            return Ok(Some(cached));
        }
        let Some(seq) = latest_checkpoint_seq(self.stores().objects.as_ref(), ledger).await? else {
            return Ok(None);
        };
        let found = self.read_checkpoint(&checkpoint_key(ledger, seq)).await?;
        if let Some(cp) = &found {
            self.cache_checkpoint(cp);
        }
        Ok(found)
    }

    async fn read_checkpoint(&self, key: &str) -> Result<Option<Checkpoint>, LedgerError> {
        let Some(object) = self.stores().objects.get(key, None).await? else {
            return Ok(None);
        };
        let seq = seq_of_checkpoint_key(key).unwrap_or(0);
        Checkpoint::from_json(&object.body)
            .map(Some)
            .map_err(|e| LedgerError::Corrupt {
                seq: Some(seq),
                detail: format!("{key}: {e}"),
            })
    }

    fn cached_checkpoint(&self, ledger: &LedgerId) -> Option<Checkpoint> {
        self.inner
            .latest_checkpoints
            .lock()
            .expect("checkpoint cache lock is never poisoned")
            .get(ledger)
    }

    fn cache_checkpoint(&self, checkpoint: &Checkpoint) {
        self.inner
            .latest_checkpoints
            .lock()
            .expect("checkpoint cache lock is never poisoned")
            .insert(checkpoint);
    }

    /// One periodic round over the ledgers this replica moved since the last round (see
    /// [`MovedLedgers`]): each is checkpointed unless a checkpoint already covers what this
    /// replica committed, or another replica checkpointed it during the interval (then it
    /// waits for the next round). Costs nothing with no moved ledger and one listing per
    /// moved ledger, plus the checkpoint itself where one is made. Returns how many
    /// checkpoints it wrote. A ledger that fails is logged and left for the next round.
    pub async fn checkpoint_moved_ledgers(&self) -> Result<u64, LedgerError> {
        let mut written = 0;
        for (ledger, moved) in self.inner.moved.take() {
            match self.checkpoint_moved(&ledger, moved).await {
                Ok(true) => written += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(ledger_id = %ledger, error = %e, "checkpoint round: cannot checkpoint the ledger; the next round retries");
                    self.inner.moved.merge(ledger, moved);
                }
            }
        }
        Ok(written)
    }

    /// Decides one moved ledger of a round; `true` if it wrote a checkpoint.
    async fn checkpoint_moved(&self, ledger: &LedgerId, moved: Moved) -> Result<bool, LedgerError> {
        // Checkpoints at or after the first seq this replica committed since its last round:
        // made during this interval, since that seq did not exist before.
        let prefix = checkpoints_prefix(ledger);
        let after = checkpoint_key(ledger, moved.first.saturating_sub(1));
        let recent = self
            .stores()
            .objects
            .list(&prefix, Some(&after), COVERING_LISTING)
            .await?;
        let newest = recent.iter().filter_map(|k| seq_of_checkpoint_key(k)).max();
        match newest {
            // Another replica's round (or a request) came after this replica's last commit.
            Some(seq) if seq >= moved.last => Ok(false),
            // Another replica checkpointed the ledger during this interval, before this
            // replica's last commit: one checkpoint per interval, so the next round decides.
            Some(_) if !moved.deferred => {
                self.inner.moved.merge(
                    ledger.clone(),
                    Moved {
                        deferred: true,
                        ..moved
                    },
                );
                Ok(false)
            }
            _ => {
                let (cp, created) = self.checkpoint(ledger).await?;
                if created {
                    tracing::info!(ledger_id = %ledger, seq = cp.seq, "checkpoint signed");
                }
                Ok(created)
            }
        }
    }

    /// Runs [`checkpoint_moved_ledgers`](Self::checkpoint_moved_ledgers) every `interval`
    /// until `shutdown` resolves. Does nothing without a signing key or with a zero interval.
    pub async fn run_checkpoints(
        self,
        interval: Duration,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        if self.options().signer.is_none() || interval.is_zero() {
            return;
        }
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate; start one interval in
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {
                    if let Err(e) = self.checkpoint_moved_ledgers().await {
                        tracing::warn!(error = %e, "checkpoint round failed");
                    }
                }
            }
        }
    }
}

/// The largest seq with a checkpoint object, if any (see the module doc).
pub async fn latest_checkpoint_seq(
    objects: &dyn ObjectStore,
    ledger: &LedgerId,
) -> Result<Option<u64>, LedgerError> {
    const PAGE: usize = 1000;
    let prefix = checkpoints_prefix(ledger);
    let first = objects.list(&prefix, None, PAGE).await?;
    if first.len() < PAGE {
        return Ok(first.iter().rev().find_map(|k| seq_of_checkpoint_key(k)));
    }
    // Invariant: a checkpoint exists after `lo`; none exists after `hi`.
    let (mut lo, mut hi) = (0u64, MAX_SEQ);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let after = checkpoint_key(ledger, mid);
        if objects.list(&prefix, Some(&after), 1).await?.is_empty() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(Some(hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::checkpoint::Signer;
    use crate::chain::entry::Timestamp;
    use crate::chain::hash::Hash;

    fn checkpoint(ledger: &str, seq: u64) -> Checkpoint {
        Signer::from_seed(&[7; 32]).sign_checkpoint(CheckpointBody {
            ledger_id: LedgerId::parse(ledger).unwrap(),
            seq,
            last_hash: Hash::GENESIS,
            timestamp: Timestamp::from_unix_micros(0).unwrap(),
        })
    }

    #[test]
    fn the_checkpoint_cache_holds_at_most_its_capacity_however_many_ledgers_pass() {
        let mut cache = CheckpointCache::new(100);
        let mut cp = checkpoint("l0", 1);
        for i in 0..10_000 {
            cp.ledger_id = LedgerId::parse(&format!("l{i}")).unwrap();
            cache.insert(&cp);
        }
        assert_eq!(cache.len(), 100);
        let last = LedgerId::parse("l9999").unwrap();
        assert_eq!(
            cache.get(&last).map(|c| c.seq),
            Some(1),
            "the newest is kept"
        );
    }

    #[test]
    fn the_checkpoint_cache_keeps_a_ledger_s_latest_checkpoint() {
        let mut cache = CheckpointCache::new(2);
        cache.insert(&checkpoint("a", 5));
        cache.insert(&checkpoint("a", 3));
        let a = LedgerId::parse("a").unwrap();
        assert_eq!(cache.get(&a).map(|c| c.seq), Some(5));
        cache.insert(&checkpoint("a", 9));
        assert_eq!(cache.get(&a).map(|c| c.seq), Some(9));
        assert_eq!(cache.len(), 1);
    }
}
