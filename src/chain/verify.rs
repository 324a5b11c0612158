//! Chain verification: re-hash stored entries and check every link, trusting nothing else.
//!
//! Work is split in two so callers can parallelise the expensive half:
//! [`check_entry`] decodes and hashes one entry on its own (pure, any order, any thread), and
//! [`ChainVerifier`] consumes the results in seq order and checks the links between them, the
//! index's claims about them, and the head.

use std::collections::{HashMap, hash_map};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::entry::{IdempotencyKey, LedgerId, Timestamp, decode};
use super::hash::Hash;

/// What went wrong at one seq. The names are stable API (`snake_case` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The entry's bytes hash to something other than the hash recorded for it.
    HashMismatch,
    /// The entry's `prev_hash` is not the hash of the stored entry before it.
    ChainBreak,
    /// No entry is stored for a seq that the ledger's head says exists.
    MissingEntry,
    /// The stored bytes are not a valid entry of this ledger at this seq.
    MalformedEntry,
    /// The index item for the seq disagrees with the stored entry.
    IndexMismatch,
    /// The entry's object key holds more than the one version that was written (someone
    /// wrote over it, or deleted it, in versioned storage).
    ExtraVersion,
    /// The entry's object is not under a write-once lock that is still in force (S3 Object
    /// Lock missing, or its retain-until date passed).
    NotLocked,
    /// The ledger head (`seq_counter`, `last_hash`) disagrees with the stored chain.
    HeadMismatch,
    /// A checkpoint's `last_hash` is not the hash of the stored entry at its seq (or its seq
    /// is past the end of the chain).
    CheckpointMismatch,
    /// A checkpoint's or receipt's signature does not verify with the trusted key.
    BadSignature,
    /// An export's end line is missing (the export may have been cut short), or disagrees
    /// with the export it ends: another ledger, other first or last seqs, or another hash of
    /// the last entry. Only verifiers of an export report it.
    EndMismatch,
    /// The entry carries the same idempotency key as an earlier entry of the walk: a key
    /// names one append, so two entries with it mean one was written around the key check.
    DuplicateIdempotencyKey,
}

/// One verification failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub seq: u64,
    pub kind: FailureKind,
    pub detail: String,
}

/// What [`check_entry`] learns from one entry's stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedEntry {
    pub hash: Hash,
    pub prev_hash: Hash,
    pub timestamp: Timestamp,
    /// The key it was appended with, if any.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// The evidence for one seq, as handed to [`ChainVerifier::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// No object is stored for the seq.
    Missing,
    /// The stored bytes decoded and hashed.
    Entry(CheckedEntry),
    /// The stored bytes hash to `hash` but are not a valid entry for this ledger and seq.
    Malformed { hash: Hash, reason: String },
}

/// Decodes and hashes one entry's stored bytes, checking it claims this ledger and seq.
pub fn check_entry(ledger_id: &LedgerId, seq: u64, stored: Option<&[u8]>) -> Evidence {
    let Some(bytes) = stored else {
        return Evidence::Missing;
    };
    let hash = Hash::of_entry(bytes);
    match decode(bytes) {
        Err(e) => Evidence::Malformed { hash, reason: e.0 },
        Ok(entry) if entry.header.seq != seq => Evidence::Malformed {
            hash,
            reason: format!(
                "the entry stored for seq {seq} says it is seq {}",
                entry.header.seq
            ),
        },
        Ok(entry) if entry.header.ledger_id != *ledger_id => Evidence::Malformed {
            hash,
            reason: format!(
                "the entry belongs to ledger {:?}",
                entry.header.ledger_id.as_str()
            ),
        },
        Ok(entry) => Evidence::Entry(CheckedEntry {
            hash,
            prev_hash: entry.header.prev_hash,
            timestamp: entry.header.timestamp,
            idempotency_key: entry.header.idempotency_key,
        }),
    }
}

/// What the index says about one seq, checked against the stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexClaim {
    pub entry_hash: Hash,
    pub prev_hash: Hash,
    pub timestamp: Timestamp,
}

/// A ledger head: the last seq and the hash of the entry at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Head {
    pub seq: u64,
    pub last_hash: Hash,
}

/// Checks links in seq order. Keeps going after a failure (up to `max_failures` recorded),
/// re-anchoring on what the stored bytes say so that one bad entry is reported once or twice,
/// not at every seq after it.
///
/// It also checks that no idempotency key is the key of two verified entries
/// (`duplicate_idempotency_key`, at the later seq). Only the entries pushed are compared: a
/// walk of seqs `from..=to` (or one starting after a checkpoint) cannot see a key that is
/// repeated from an entry before `from` or after `to`. Remembering the keys costs memory per
/// keyed entry walked (see `first_with_key`): the only state here that grows with the walk.
#[derive(Debug)]
pub struct ChainVerifier {
    next_seq: u64,
    /// Hash of the stored entry before `next_seq`; `None` when it is unknown (missing).
    prev: Option<Hash>,
    /// SHA-256 of each key seen -> the first verified seq with it. A digest rather than the
    /// key: 32 bytes whatever the key's length (up to 255), so a long walk over long keys
    /// costs a fixed ~40 bytes (plus the table's overhead) per keyed entry; two different keys
    /// sharing a digest (odds about 2^-128 per pair) is no risk worth the key's bytes.
    first_with_key: HashMap<[u8; 32], u64>,
    verified: u64,
    failures: Vec<Failure>,
    failures_total: u64,
    max_failures: usize,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Entries whose bytes were present and checked.
    pub verified: u64,
    /// The recorded failures, in seq order (at most `max_failures`).
    pub failures: Vec<Failure>,
    /// All failures found, recorded or not.
    pub failures_total: u64,
    /// The hash of the last entry pushed, when known.
    pub last_hash: Option<Hash>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failures_total == 0
    }
}

impl ChainVerifier {
    /// Starts at `first_seq`. `prev_hash` is the hash the entry at `first_seq` must link to:
    /// [`Hash::GENESIS`] for seq 1, or a trusted hash of entry `first_seq - 1`.
    pub fn new(first_seq: u64, prev_hash: Option<Hash>, max_failures: usize) -> ChainVerifier {
        ChainVerifier {
            next_seq: first_seq,
            prev: prev_hash,
            first_with_key: HashMap::new(),
            verified: 0,
            failures: Vec::new(),
            failures_total: 0,
            max_failures,
        }
    }

    /// The seq the next [`push`](Self::push) is for.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn fail(&mut self, seq: u64, kind: FailureKind, detail: String) {
        self.failures_total += 1;
        if self.failures.len() < self.max_failures {
            self.failures.push(Failure { seq, kind, detail });
        }
    }

    /// Feeds the evidence for [`next_seq`](Self::next_seq) and, if the index has an item for
    /// it, that item.
    pub fn push(&mut self, evidence: Evidence, claim: Option<&IndexClaim>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        match evidence {
            Evidence::Missing => {
                self.fail(
                    seq,
                    FailureKind::MissingEntry,
                    format!("no entry is stored for seq {seq}"),
                );
                self.prev = claim.map(|c| c.entry_hash);
            }
            Evidence::Malformed { hash, reason } => {
                self.fail(seq, FailureKind::MalformedEntry, reason);
                self.prev = Some(hash);
            }
            Evidence::Entry(entry) => {
                self.verified += 1;
                if let Some(prev) = self.prev
                    && prev != entry.prev_hash
                {
                    self.fail(
                        seq,
                        FailureKind::ChainBreak,
                        format!(
                            "prev_hash is {} but the stored entry before it hashes to {prev}",
                            entry.prev_hash
                        ),
                    );
                }
                if let Some(claim) = claim {
                    self.check_claim(seq, &entry, claim);
                }
                if let Some(key) = &entry.idempotency_key {
                    self.check_key(seq, key);
                }
                self.prev = Some(entry.hash);
            }
        }
    }

    /// Remembers `key` as the key of `seq`, or reports it if an earlier entry has it. The
    /// first entry stays the one named: a key at seqs 3, 5 and 9 is reported at 5 and at 9,
    /// both times as the key of seq 3.
    fn check_key(&mut self, seq: u64, key: &IdempotencyKey) {
        let digest: [u8; 32] = Sha256::digest(key.as_str().as_bytes()).into();
        match self.first_with_key.entry(digest) {
            hash_map::Entry::Vacant(slot) => {
                slot.insert(seq);
            }
            hash_map::Entry::Occupied(first) => {
                let first = *first.get();
                // `{:?}` of printable ASCII escapes only `"` and `\`: the entry's own spelling.
                self.fail(
                    seq,
                    FailureKind::DuplicateIdempotencyKey,
                    format!(
                        "idempotency key {:?} is also the key of seq {first}",
                        key.as_str()
                    ),
                );
            }
        }
    }

    fn check_claim(&mut self, seq: u64, entry: &CheckedEntry, claim: &IndexClaim) {
        if claim.entry_hash != entry.hash {
            self.fail(
                seq,
                FailureKind::HashMismatch,
                format!(
                    "the stored bytes hash to {} but {} was recorded for them",
                    entry.hash, claim.entry_hash
                ),
            );
        }
        let mut differs = Vec::new();
        if claim.prev_hash != entry.prev_hash {
            differs.push("prev_hash");
        }
        if claim.timestamp != entry.timestamp {
            differs.push("timestamp");
        }
        if !differs.is_empty() {
            self.fail(
                seq,
                FailureKind::IndexMismatch,
                format!(
                    "the index item's {} differ from the stored entry",
                    differs.join(" and ")
                ),
            );
        }
    }

    /// Skips seqs from [`next_seq`](Self::next_seq) to `last`, none of them stored: one
    /// `missing_entry` failure for the whole run (so a long gap costs one report, not one per
    /// seq); the link of the entry after it cannot be checked.
    pub fn skip_missing(&mut self, last: u64) {
        let first = self.next_seq;
        if last < first {
            return;
        }
        let detail = if first == last {
            format!("no entry is stored for seq {first}")
        } else {
            format!(
                "no entry is stored for seqs {first}..={last} ({} seqs)",
                last - first + 1
            )
        };
        self.fail(first, FailureKind::MissingEntry, detail);
        self.next_seq = last + 1;
        self.prev = None;
    }

    /// Reports a failure found outside the entries themselves (an index item naming the wrong
    /// object, say), counted like any other.
    pub fn report(&mut self, seq: u64, kind: FailureKind, detail: String) {
        self.fail(seq, kind, detail);
    }

    /// Ends the walk. With `head`, also checks that the chain ends exactly at the head: the
    /// last seq pushed is `head.seq` and it hashes to `head.last_hash`.
    pub fn finish(mut self, head: Option<Head>) -> Outcome {
        let last_seq = self.next_seq - 1;
        if let Some(head) = head {
            if head.seq != last_seq {
                self.fail(
                    head.seq,
                    FailureKind::HeadMismatch,
                    format!(
                        "the head says seq {} but the stored chain ends at {last_seq}",
                        head.seq
                    ),
                );
            } else if self.prev.is_some_and(|p| p != head.last_hash) {
                let found = self.prev.map(|p| p.to_hex()).unwrap_or_default();
                self.fail(
                    head.seq,
                    FailureKind::HeadMismatch,
                    format!(
                        "the head's last_hash is {} but entry {last_seq} hashes to {found}",
                        head.last_hash
                    ),
                );
            }
        }
        let mut failures = self.failures;
        failures.sort_by_key(|f| f.seq);
        Outcome {
            verified: self.verified,
            failures,
            failures_total: self.failures_total,
            last_hash: self.prev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::entry::{EntryHeader, Record, encode};
    use proptest::prelude::*;

    fn chain(n: u64) -> Vec<Vec<u8>> {
        keyed_chain(&vec![None; n as usize])
    }

    /// A chain of ledger `t` from seq 1, entry `i + 1` appended with key `keys[i]`.
    fn keyed_chain(keys: &[Option<&str>]) -> Vec<Vec<u8>> {
        let ledger_id = LedgerId::parse("t").unwrap();
        let mut prev = Hash::GENESIS;
        (1..)
            .zip(keys)
            .map(|(seq, key)| {
                let header = EntryHeader {
                    ledger_id: ledger_id.clone(),
                    seq,
                    prev_hash: prev,
                    timestamp: Timestamp::from_unix_micros(1_700_000_000_000_000 + seq as i64)
                        .unwrap(),
                    idempotency_key: key.map(|k| IdempotencyKey::parse(k).unwrap()),
                };
                let record = Record::parse(format!(r#"{{"n":{seq},"s":"é"}}"#).as_bytes()).unwrap();
                let bytes = encode(&header, &record);
                prev = Hash::of_entry(&bytes);
                bytes
            })
            .collect()
    }

    fn claims(entries: &[Vec<u8>]) -> Vec<IndexClaim> {
        let id = LedgerId::parse("t").unwrap();
        entries
            .iter()
            .enumerate()
            .map(|(i, b)| match check_entry(&id, i as u64 + 1, Some(b)) {
                Evidence::Entry(e) => IndexClaim {
                    entry_hash: e.hash,
                    prev_hash: e.prev_hash,
                    timestamp: e.timestamp,
                },
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn verify(entries: &[Option<Vec<u8>>], claims: &[IndexClaim], head: Head) -> Outcome {
        let id = LedgerId::parse("t").unwrap();
        let mut v = ChainVerifier::new(1, Some(Hash::GENESIS), 100);
        for (i, e) in entries.iter().enumerate() {
            v.push(check_entry(&id, i as u64 + 1, e.as_deref()), claims.get(i));
        }
        v.finish(Some(head))
    }

    /// Verifies `entries` from seq 1 as they are, with their own claims and head.
    fn verify_all(entries: &[Vec<u8>]) -> Outcome {
        let stored: Vec<_> = entries.iter().cloned().map(Some).collect();
        verify(&stored, &claims(entries), head_of(entries))
    }

    fn kinds(out: &Outcome) -> Vec<(u64, FailureKind)> {
        out.failures.iter().map(|f| (f.seq, f.kind)).collect()
    }

    fn head_of(entries: &[Vec<u8>]) -> Head {
        Head {
            seq: entries.len() as u64,
            last_hash: Hash::of_entry(entries.last().unwrap()),
        }
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let c = chain(5);
        let out = verify(
            &c.iter().cloned().map(Some).collect::<Vec<_>>(),
            &claims(&c),
            head_of(&c),
        );
        assert!(out.ok(), "{:?}", out.failures);
        assert_eq!(out.verified, 5);
    }

    #[test]
    fn a_missing_entry_is_named_and_the_walk_goes_on() {
        let c = chain(5);
        let mut stored: Vec<_> = c.iter().cloned().map(Some).collect();
        stored[2] = None;
        let out = verify(&stored, &claims(&c), head_of(&c));
        assert_eq!(out.failures.len(), 1, "{:?}", out.failures);
        assert_eq!(
            (out.failures[0].seq, out.failures[0].kind),
            (3, FailureKind::MissingEntry)
        );
    }

    #[test]
    fn a_run_of_missing_seqs_is_skipped_as_one_failure() {
        let c = chain(5);
        let mut v = ChainVerifier::new(1, Some(Hash::GENESIS), 10);
        v.push(
            check_entry(&LedgerId::parse("t").unwrap(), 1, Some(&c[0])),
            None,
        );
        v.skip_missing(1_000_000);
        assert_eq!(v.next_seq(), 1_000_001);
        v.skip_missing(7); // nothing left to skip
        assert_eq!(v.next_seq(), 1_000_001);
        let out = v.finish(None);
        assert_eq!(out.failures_total, 1);
        assert_eq!(
            (out.failures[0].seq, out.failures[0].kind),
            (2, FailureKind::MissingEntry)
        );
        assert!(
            out.failures[0].detail.contains("2..=1000000"),
            "{:?}",
            out.failures
        );
        assert_eq!(out.last_hash, None, "the link after a gap is unknown");
    }

    #[test]
    fn swapped_entries_are_reported_at_both_seqs() {
        let c = chain(5);
        let mut stored: Vec<_> = c.iter().cloned().map(Some).collect();
        stored.swap(1, 2);
        let out = verify(&stored, &claims(&c), head_of(&c));
        let seqs: Vec<_> = out.failures.iter().map(|f| f.seq).collect();
        assert!(seqs.contains(&2) && seqs.contains(&3), "{:?}", out.failures);
    }

    #[test]
    fn a_head_that_is_not_the_chain_end_is_a_head_mismatch() {
        let c = chain(3);
        let stored: Vec<_> = c.iter().cloned().map(Some).collect();
        let out = verify(
            &stored,
            &claims(&c),
            Head {
                seq: 4,
                last_hash: Hash::GENESIS,
            },
        );
        assert_eq!(out.failures[0].kind, FailureKind::HeadMismatch);
        let out = verify(
            &stored,
            &claims(&c),
            Head {
                seq: 3,
                last_hash: Hash::GENESIS,
            },
        );
        assert_eq!(out.failures[0].kind, FailureKind::HeadMismatch);
    }

    #[test]
    fn failures_beyond_the_bound_are_counted_not_kept() {
        let id = LedgerId::parse("t").unwrap();
        let mut v = ChainVerifier::new(1, Some(Hash::GENESIS), 2);
        for seq in 1..=5 {
            v.push(check_entry(&id, seq, None), None);
        }
        let out = v.finish(None);
        assert_eq!((out.failures.len(), out.failures_total), (2, 5));
    }

    #[test]
    fn a_key_used_twice_is_named_at_the_later_seq_with_both_seqs() {
        let k = r#"retry "7" C:\jobs"#;
        let c = keyed_chain(&[Some("a"), None, Some(k), Some("b"), Some(k)]);
        let out = verify_all(&c);
        assert_eq!(
            kinds(&out),
            [(5, FailureKind::DuplicateIdempotencyKey)],
            "{:?}",
            out.failures
        );
        assert_eq!(
            out.failures[0].detail,
            r#"idempotency key "retry \"7\" C:\\jobs" is also the key of seq 3"#
        );
        assert_eq!(out.verified, 5, "the entries themselves are sound");
        assert_eq!(
            serde_json::to_value(FailureKind::DuplicateIdempotencyKey).unwrap(),
            "duplicate_idempotency_key"
        );
    }

    #[test]
    fn every_later_use_of_a_key_names_its_first_seq() {
        let out = verify_all(&keyed_chain(&[Some("k"), Some("k"), None, Some("k")]));
        assert_eq!(
            kinds(&out),
            [
                (2, FailureKind::DuplicateIdempotencyKey),
                (4, FailureKind::DuplicateIdempotencyKey)
            ]
        );
        assert!(out.failures.iter().all(|f| f.detail.ends_with("of seq 1")));
    }

    #[test]
    fn distinct_keys_and_unkeyed_entries_pass() {
        // Keys that differ only in case, a trailing space, or a quote against a backslash.
        let keys = [
            None,
            Some("a"),
            Some("A"),
            None,
            Some("a "),
            Some("\""),
            Some("\\"),
        ];
        let out = verify_all(&keyed_chain(&keys));
        assert!(out.ok(), "{:?}", out.failures);
        assert_eq!(out.verified, keys.len() as u64);
        let out = verify_all(&chain(4));
        assert!(out.ok(), "{:?}", out.failures);
    }

    #[test]
    fn only_verified_entries_and_the_walked_range_count() {
        let c = keyed_chain(&[Some("k"), None, Some("k")]);
        // The key's first entry is malformed (another seq's bytes): its key is not trusted.
        let mut stored: Vec<_> = c.iter().cloned().map(Some).collect();
        stored[0] = Some(c[1].clone());
        let out = verify(&stored, &[], head_of(&c));
        assert!(
            !kinds(&out).contains(&(3, FailureKind::DuplicateIdempotencyKey)),
            "{:?}",
            out.failures
        );
        // A walk from seq 2 never sees seq 1's key.
        let id = LedgerId::parse("t").unwrap();
        let mut v = ChainVerifier::new(2, Some(Hash::of_entry(&c[0])), 10);
        for seq in 2..=3 {
            v.push(check_entry(&id, seq, Some(&c[seq as usize - 1])), None);
        }
        assert!(v.finish(Some(head_of(&c))).ok());
    }

    proptest! {
        #[test]
        fn flipping_any_byte_names_that_seq(target in 0usize..6, pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let c = keyed_chain(&[None, Some(r#"k "2" \"#), None, Some("k4"), None, Some("~6")]);
            let claims = claims(&c);
            let head = head_of(&c);
            let mut stored: Vec<_> = c.iter().cloned().map(Some).collect();
            let bytes = stored[target].as_mut().unwrap();
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let out = verify(&stored, &claims, head);
            prop_assert!(!out.ok());
            let seq = target as u64 + 1;
            prop_assert!(
                out.failures.iter().any(|f| f.seq == seq),
                "flipped byte {} of seq {}: {:?}", i, seq, out.failures
            );
        }
    }
}
