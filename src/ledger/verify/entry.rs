//! The checks on one entry beyond its hash and link (which [`ChainVerifier`] makes): its
//! object is under Object Lock in the configured mode, it has exactly one version, and the
//! index's `SEQ#` item (or `META`'s pending batch, for an entry not indexed yet) names it.

use super::super::commit::PendingEntry;
use super::page::Fetched;
use super::pending::{self, PendingCheck};
use crate::chain::entry::LedgerId;
use crate::chain::keys::{entry_key, seq_of_entry_key};
use crate::chain::verify::{ChainVerifier, Evidence, FailureKind, IndexClaim};
use crate::store::{LockMode, Retention};

/// What one entry is checked against, beyond the chain.
pub(super) struct EntryRules<'a> {
    pub(super) ledger: &'a LedgerId,
    /// The Object Lock mode every entry object must carry, when the store has Object Lock.
    pub(super) lock_mode: Option<LockMode>,
    /// Compare the `SEQ#` items (false with `objects_only`).
    pub(super) use_index: bool,
    /// The decoded entries of `META`'s pending batch.
    pub(super) pending: &'a [PendingEntry],
}

/// Checks the entry read for `f.seq`, then feeds it to the verifier with the index's claim.
pub(super) fn check_fetched(
    verifier: &mut ChainVerifier,
    rules: &EntryRules<'_>,
    f: &Fetched,
    evidence: Evidence,
) {
    let ledger = rules.ledger;
    let key = || entry_key(ledger, f.seq);
    // Only objects that exist can be locked or not; a missing one is reported as missing.
    let stored = matches!(evidence, Evidence::Entry(_) | Evidence::Malformed { .. })
        && f.pending != Some(PendingCheck::Unwritten);
    if stored {
        check_lock(verifier, f, rules.lock_mode, &key());
    }
    if f.versions > 1 {
        verifier.report(
            f.seq,
            FailureKind::ExtraVersion,
            format!(
                "object {} has {} versions; an entry is written exactly once",
                key(),
                f.versions
            ),
        );
    }
    let (claim, problem) = index_claim(rules, f);
    if let Some(detail) = problem {
        verifier.report(f.seq, FailureKind::IndexMismatch, detail);
    }
    verifier.push(evidence, claim.as_ref());
}

/// What the index claims about `f`'s entry (`None`: nothing to compare), and what is wrong
/// with its `SEQ#` item: missing, or naming another object. An entry of the pending batch
/// that is not indexed yet is compared with the batch instead.
fn index_claim(rules: &EntryRules<'_>, f: &Fetched) -> (Option<IndexClaim>, Option<String>) {
    match &f.item {
        _ if !rules.use_index => (None, None),
        None if f.pending.is_some() => {
            let claim = pending::entry_at(rules.pending, f.seq).map(|e| IndexClaim {
                entry_hash: e.hash,
                prev_hash: e.prev_hash,
                timestamp: e.timestamp,
            });
            (claim, None)
        }
        None => (None, Some("the index has no SEQ# item for this seq".into())),
        Some(item) => {
            let problem =
                (seq_of_entry_key(&item.object_key, rules.ledger) != Some(f.seq)).then(|| {
                    format!(
                        "the index names object {} instead of {}",
                        item.object_key,
                        entry_key(rules.ledger, f.seq)
                    )
                });
            let claim = IndexClaim {
                entry_hash: item.entry_hash,
                prev_hash: item.prev_hash,
                timestamp: item.timestamp,
            };
            (Some(claim), problem)
        }
    }
}

/// An entry object must be locked, in the mode the store writes, until a time still ahead.
fn check_lock(verifier: &mut ChainVerifier, f: &Fetched, expected: Option<LockMode>, key: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if let Some(detail) = lock_problem(&f.retention, expected, key, now) {
        verifier.report(f.seq, FailureKind::NotLocked, detail);
    }
}

/// What is wrong with the lock on object `key` at unix time `now`, if anything.
fn lock_problem(
    retention: &Retention,
    expected: Option<LockMode>,
    key: &str,
    now: i64,
) -> Option<String> {
    match retention {
        Retention::NotSupported => None,
        Retention::Unlocked => Some(format!(
            "object {key} is not under Object Lock: it could be deleted or overwritten"
        )),
        Retention::Locked { mode, until_unix } if *until_unix <= now => Some(format!(
            "object {key}'s {mode} lock expired at unix time {until_unix}"
        )),
        Retention::Locked { mode, .. } => match expected {
            Some(expected) if expected != *mode => {
                let lifted = match mode {
                    LockMode::Governance => {
                        " (a GOVERNANCE lock can be lifted by anyone allowed s3:BypassGovernanceRetention)"
                    }
                    LockMode::Compliance => "",
                };
                Some(format!(
                    "object {key} is locked in {mode} mode, not the configured {expected}{lifted}"
                ))
            }
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::pending::tests::batch;
    use super::*;
    use crate::chain::entry::Timestamp;
    use crate::chain::hash::Hash;
    use crate::store::SeqItem;

    const NOW: i64 = 1_000;

    fn locked(mode: LockMode, until_unix: i64) -> Retention {
        Retention::Locked { mode, until_unix }
    }

    fn ledger() -> LedgerId {
        LedgerId::parse("acme").unwrap()
    }

    fn fetched(seq: u64, item: Option<SeqItem>, pending: Option<PendingCheck>) -> Fetched {
        Fetched {
            seq,
            body: None,
            versions: 1,
            retention: Retention::NotSupported,
            item,
            pending,
            nothing: false,
            evidence: None,
        }
    }

    fn item(seq: u64, object_key: String) -> SeqItem {
        SeqItem {
            seq,
            entry_hash: Hash([seq as u8; 32]),
            prev_hash: Hash([0; 32]),
            timestamp: Timestamp::from_unix_micros(0).unwrap(),
            object_key,
            version_id: None,
        }
    }

    fn rules<'a>(ledger: &'a LedgerId, pending: &'a [PendingEntry]) -> EntryRules<'a> {
        EntryRules {
            ledger,
            lock_mode: None,
            use_index: true,
            pending,
        }
    }

    #[test]
    fn a_store_without_object_lock_needs_no_lock() {
        let expected = Some(LockMode::Compliance);
        assert_eq!(
            lock_problem(&Retention::NotSupported, expected, "k", NOW),
            None
        );
    }

    #[test]
    fn an_unlocked_object_is_a_problem() {
        let problem = lock_problem(&Retention::Unlocked, None, "k", NOW).unwrap();
        assert!(problem.contains("is not under Object Lock"));
    }

    #[test]
    fn a_lock_that_expired_is_a_problem_even_at_the_instant_it_ends() {
        let at_now = locked(LockMode::Compliance, NOW);
        assert!(
            lock_problem(&at_now, None, "k", NOW)
                .unwrap()
                .contains("expired")
        );
        let before = locked(LockMode::Compliance, NOW - 1);
        assert!(lock_problem(&before, None, "k", NOW).is_some());
    }

    #[test]
    fn a_lock_still_ahead_in_the_configured_mode_is_fine() {
        let lock = locked(LockMode::Compliance, NOW + 1);
        assert_eq!(
            lock_problem(&lock, Some(LockMode::Compliance), "k", NOW),
            None
        );
    }

    #[test]
    fn a_lock_in_any_mode_is_fine_when_no_mode_is_configured() {
        let lock = locked(LockMode::Governance, NOW + 1);
        assert_eq!(lock_problem(&lock, None, "k", NOW), None);
    }

    #[test]
    fn a_governance_lock_where_compliance_is_configured_says_it_can_be_lifted() {
        let lock = locked(LockMode::Governance, NOW + 1);
        let problem = lock_problem(&lock, Some(LockMode::Compliance), "k", NOW).unwrap();
        assert!(problem.contains("locked in GOVERNANCE mode, not the configured COMPLIANCE"));
        assert!(problem.contains("can be lifted"));
    }

    #[test]
    fn a_compliance_lock_where_governance_is_configured_is_a_problem_too() {
        let lock = locked(LockMode::Compliance, NOW + 1);
        let problem = lock_problem(&lock, Some(LockMode::Governance), "k", NOW).unwrap();
        assert!(!problem.contains("can be lifted"));
    }

    #[test]
    fn an_item_naming_the_entry_s_own_object_is_its_claim() {
        let id = ledger();
        let f = fetched(3, Some(item(3, entry_key(&id, 3))), None);
        let (claim, problem) = index_claim(&rules(&id, &[]), &f);
        assert_eq!(claim.map(|c| c.entry_hash), Some(Hash([3; 32])));
        assert_eq!(problem, None);
    }

    #[test]
    fn an_item_naming_another_object_is_still_compared_but_reported() {
        let id = ledger();
        let f = fetched(3, Some(item(3, entry_key(&id, 4))), None);
        let (claim, problem) = index_claim(&rules(&id, &[]), &f);
        assert!(claim.is_some());
        assert!(problem.unwrap().starts_with("the index names object"));
    }

    #[test]
    fn a_missing_item_is_reported_and_nothing_is_compared() {
        let id = ledger();
        let (claim, problem) = index_claim(&rules(&id, &[]), &fetched(3, None, None));
        assert!(claim.is_none());
        assert_eq!(problem.unwrap(), "the index has no SEQ# item for this seq");
    }

    #[test]
    fn a_pending_entry_not_indexed_yet_is_compared_with_the_batch() {
        let (id, pending) = (ledger(), batch(2, 4));
        let f = fetched(3, None, Some(PendingCheck::Unindexed));
        let (claim, problem) = index_claim(&rules(&id, &pending), &f);
        assert_eq!(claim.map(|c| c.entry_hash), Some(pending[1].hash));
        assert_eq!(problem, None);
    }

    #[test]
    fn without_the_index_there_is_no_claim_and_no_item_problem() {
        let id = ledger();
        let rules = EntryRules {
            use_index: false,
            ..rules(&id, &[])
        };
        assert_eq!(index_claim(&rules, &fetched(3, None, None)).1, None);
    }
}
