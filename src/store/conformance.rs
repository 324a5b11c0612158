//! The storage conformance suite: one check per behaviour that the commit protocol relies on,
//! run against every backend (the embedded one in `tests/conformance_local.rs`, the AWS one
//! against the emulator in `tests/conformance_aws.rs`).
//!
//! The checks are written once, inside `conformance_suite!` below, which both defines each
//! check as a `pub async fn` here and generates the exported `store_conformance_tests!` macro
//! that turns every one of them into a test for a backend: `store_conformance_tests!(local,
//! super::fresh())` makes `local::put_new_never_overwrites` and so on, so a failure names the
//! behaviour and the backend, and a new check cannot be left out of the tests. Every check
//! works under its own ledger ids and key prefixes, so all checks can share one bucket and one
//! table and run in parallel.
//!
//! Test support, compiled only for tests and with the `test-support` feature (which the
//! integration tests and benches turn on); like a test, a failed check panics with the reason.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::ops::Deref;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::{
    Backend, BatchCommit, BatchWrites, CasOutcome, KeyClaim, KeyPut, KeyWrite, Meta, NewObject,
    PendingBatch, PutOutcome, SeqItem, SeqPut, StoreError, Stores, Taken,
};
use crate::chain::entry::{IdempotencyKey, LedgerId, Timestamp};
use crate::chain::hash::Hash;

/// A backend under test: its stores, and how to open the same data again (for the check of
/// [`ObjectStore::close`](super::ObjectStore::close)). Derefs to its [`Stores`], which is all
/// most checks use.
pub struct Fixture {
    stores: Stores,
    reopen: Box<dyn Fn() -> BoxFuture<'static, Stores> + Send + Sync>,
}

impl Fixture {
    /// `stores` over some data, and `reopen`, which opens new stores over the same data.
    pub fn new<F, Fut>(stores: Stores, reopen: F) -> Fixture
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Stores> + Send + 'static,
    {
        Fixture {
            stores,
            reopen: Box::new(move || Box::pin(reopen())),
        }
    }

    /// New stores over the same data, as a restarted process would open them.
    pub async fn reopen(&self) -> Stores {
        (self.reopen)().await
    }
}

impl Deref for Fixture {
    type Target = Stores;

    fn deref(&self) -> &Stores {
        &self.stores
    }
}

/// A ledger id and key prefix no other check (or test run) uses.
pub fn unique_ledger() -> LedgerId {
    LedgerId::parse(&format!("conf-{:016x}", fastrand::u64(..))).expect("valid by construction")
}

fn object(prefix: &LedgerId, name: &str, body: &str) -> NewObject {
    NewObject {
        key: format!("{prefix}/{name}"),
        body: Bytes::from(body.to_owned()),
    }
}

fn seq_item(seq: u64, tag: u8) -> SeqItem {
    SeqItem {
        seq,
        entry_hash: Hash([tag; 32]),
        prev_hash: Hash([tag.wrapping_add(1); 32]),
        timestamp: Timestamp::from_unix_micros(1_700_000_000_000_000 + seq as i64)
            .expect("in range"),
        object_key: format!("k/{seq:018}"),
        version_id: None,
    }
}

/// A one-step batch of these objects and items, with no key items.
fn writes(objects: &[NewObject], items: &[SeqItem]) -> BatchWrites {
    BatchWrites {
        objects: objects.to_vec(),
        items: items.to_vec(),
        keys: Vec::new(),
    }
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(text).unwrap()
}

fn claim(base: u64, seqs: &[u64]) -> KeyClaim {
    KeyClaim {
        base,
        seqs: seqs.to_vec(),
    }
}

/// Whether each object's key holds exactly that object.
async fn stored(s: &Stores, objects: &[NewObject]) -> Vec<bool> {
    let mut out = Vec::new();
    for o in objects {
        let current = s.objects.get(&o.key, None).await.unwrap();
        out.push(current.is_some_and(|c| c.body == o.body));
    }
    out
}

/// Defines each check (`pub async fn name(s: &Stores)`, or `s: &Fixture` for one that also
/// reopens the data) and, from the same list, the exported `store_conformance_tests!`.
///
/// `$d` is a literal `$` token, passed in so that the generated macro can have metavariables
/// of its own.
macro_rules! conformance_suite {
    ($d:tt $($(#[$attr:meta])* pub async fn $case:ident($s:ident: &$arg:ty) $body:block)*) => {
        $($(#[$attr])* pub async fn $case($s: &$arg) $body)*

        /// Generates one `#[tokio::test]` per conformance check, inside `mod $backend`, each
        /// calling `$make` (an async expression returning a [`Fixture`]) for its backend.
        /// The list of tests is the list of checks in `src/store/conformance.rs`: both come
        /// from one macro there.
        #[macro_export]
        macro_rules! store_conformance_tests {
            ($d backend:ident, $d make:expr) => {
                mod $d backend {
                    #[allow(unused_imports)]
                    use super::*;
                    $(
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $case() {
                            let fixture: $crate::store::conformance::Fixture = $d make.await;
                            $crate::store::conformance::$case(&fixture).await;
                        }
                    )*
                }
            };
        }
    };
}

// rustfmt does not format inside a macro invocation: keep the checks formatted as it would.
conformance_suite! { $
    pub async fn put_new_creates_and_get_reads_back(s: &Stores) {
        let p = unique_ledger();
        let o = object(&p, "a", "hello");
        let outcome = s.objects.put_new(std::slice::from_ref(&o)).await.unwrap();
        let PutOutcome::Created { version } = &outcome[0] else {
            panic!("expected Created, got {outcome:?}")
        };
        let current = s
            .objects
            .get(&o.key, None)
            .await
            .unwrap()
            .expect("object exists");
        assert_eq!(current.body, o.body);
        assert_eq!(
            &current.version, version,
            "get reports the version put_new created"
        );
        if let Some(v) = version {
            let pinned = s
                .objects
                .get(&o.key, Some(v))
                .await
                .unwrap()
                .expect("that version exists");
            assert_eq!(pinned.body, o.body);
        }
    }

    pub async fn put_new_never_overwrites(s: &Stores) {
        let p = unique_ledger();
        let first = object(&p, "a", "first");
        s.objects
            .put_new(std::slice::from_ref(&first))
            .await
            .unwrap();
        let second = object(&p, "a", "second");
        let outcome = s.objects.put_new(&[second]).await.unwrap();
        assert_eq!(outcome, vec![PutOutcome::AlreadyExists]);
        assert_eq!(
            s.objects.get(&first.key, None).await.unwrap().unwrap().body,
            first.body
        );
        assert_eq!(
            s.objects.version_count(&first.key).await.unwrap(),
            1,
            "no second version was made"
        );
    }

    pub async fn put_new_reports_each_object_in_order(s: &Stores) {
        let p = unique_ledger();
        s.objects.put_new(&[object(&p, "b", "old")]).await.unwrap();
        let batch = [
            object(&p, "a", "1"),
            object(&p, "b", "2"),
            object(&p, "c", "3"),
        ];
        let outcome = s.objects.put_new(&batch).await.unwrap();
        assert!(matches!(outcome[0], PutOutcome::Created { .. }));
        assert_eq!(outcome[1], PutOutcome::AlreadyExists);
        assert!(matches!(outcome[2], PutOutcome::Created { .. }));
    }

    pub async fn racing_put_new_on_one_key_has_one_winner(s: &Stores) {
        let p = unique_ledger();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (objects, o) = (
                    s.objects.clone(),
                    object(&p, "race", &format!("writer {i}")),
                );
                tokio::spawn(async move { objects.put_new(&[o]).await.unwrap().remove(0) })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), PutOutcome::Created { .. }) {
                created += 1;
            }
        }
        assert_eq!(created, 1);
    }

    pub async fn get_of_a_missing_key_or_version_is_none(s: &Stores) {
        let p = unique_ledger();
        assert_eq!(
            s.objects.get(&format!("{p}/nothing"), None).await.unwrap(),
            None
        );
        assert_eq!(
            s.objects
                .version_count(&format!("{p}/nothing"))
                .await
                .unwrap(),
            0
        );
        let o = object(&p, "a", "x");
        s.objects.put_new(std::slice::from_ref(&o)).await.unwrap();
        let made_up = "3HL4kqtJvjVBH40Nrjfkd";
        assert_eq!(
            s.objects.get(&o.key, Some(made_up)).await.ok().flatten(),
            None
        );
    }

    pub async fn list_is_in_key_order_and_honours_prefix_start_after_and_limit(s: &Stores) {
        let p = unique_ledger();
        let names = ["e/03", "e/01", "e/10", "e/02", "f/01"];
        let batch: Vec<_> = names.iter().map(|n| object(&p, n, n)).collect();
        s.objects.put_new(&batch).await.unwrap();
        let prefix = format!("{p}/e/");
        let all = s.objects.list(&prefix, None, 100).await.unwrap();
        let expect: Vec<_> = ["01", "02", "03", "10"]
            .iter()
            .map(|n| format!("{prefix}{n}"))
            .collect();
        assert_eq!(all, expect);
        let page = s.objects.list(&prefix, Some(&expect[0]), 2).await.unwrap();
        assert_eq!(page, expect[1..3].to_vec());
        assert!(
            s.objects
                .list(&prefix, Some(&expect[3]), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn scan_returns_bodies_and_version_counts_in_key_order_like_list(s: &Stores) {
        let p = unique_ledger();
        let names = ["e/03", "e/01", "e/10", "e/02", "f/01"];
        let batch: Vec<_> = names.iter().map(|n| object(&p, n, n)).collect();
        s.objects.put_new(&batch).await.unwrap();
        let prefix = format!("{p}/e/");
        let all = s.objects.scan(&prefix, None, 100).await.unwrap();
        let keys: Vec<_> = all.iter().map(|o| o.key.clone()).collect();
        assert_eq!(keys, s.objects.list(&prefix, None, 100).await.unwrap());
        assert_eq!(keys.len(), 4);
        // With nothing hidden, the versioned listing lists the same keys, paged the same way.
        assert_eq!(
            keys,
            s.objects.list_versioned(&prefix, None, 100).await.unwrap()
        );
        assert_eq!(
            s.objects
                .list_versioned(&prefix, Some(&keys[0]), 2)
                .await
                .unwrap(),
            keys[1..3].to_vec()
        );
        for o in &all {
            let name = o.key.strip_prefix(&format!("{p}/")).unwrap();
            assert_eq!(o.body.as_deref(), Some(name.as_bytes()), "{}", o.key);
            assert_eq!(o.versions, 1, "{}", o.key);
            let current = s.objects.get(&o.key, None).await.unwrap().unwrap();
            assert_eq!(o.version, current.version, "{}", o.key);
        }
        let page = s.objects.scan(&prefix, Some(&keys[0]), 2).await.unwrap();
        let page_keys: Vec<_> = page.into_iter().map(|o| o.key).collect();
        assert_eq!(page_keys, keys[1..3].to_vec());
        assert!(
            s.objects
                .scan(&prefix, Some(&keys[3]), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn head_of_an_unknown_ledger_is_none(s: &Stores) {
        assert_eq!(s.index.head(&unique_ledger()).await.unwrap(), None);
    }

    pub async fn create_ledger_is_idempotent_and_lists_the_ledger(s: &Stores) {
        let l = unique_ledger();
        assert_eq!(s.index.create_ledger(&l).await.unwrap(), Meta::empty());
        assert_eq!(s.index.head(&l).await.unwrap(), Some(Meta::empty()));
        let advanced = Meta {
            seq_counter: 1,
            last_hash: Hash([1; 32]),
            pending: None,
        };
        assert_eq!(
            s.index
                .compare_and_set_head(&l, 0, &advanced)
                .await
                .unwrap(),
            CasOutcome::Applied
        );
        assert_eq!(
            s.index.create_ledger(&l).await.unwrap(),
            advanced,
            "a second create changes nothing"
        );
        let after = LedgerId::parse(&l.as_str()[..l.as_str().len() - 1]).unwrap();
        let listed = s.index.ledgers(Some(&after), 1).await.unwrap();
        assert_eq!(listed, vec![l]);
    }

    pub async fn compare_and_set_applies_only_at_the_expected_seq(s: &Stores) {
        let l = unique_ledger();
        let next = Meta {
            seq_counter: 2,
            last_hash: Hash([2; 32]),
            pending: None,
        };
        assert_eq!(
            s.index.compare_and_set_head(&l, 0, &next).await.unwrap(),
            CasOutcome::Conflict(None),
            "no META, no update"
        );
        s.index.create_ledger(&l).await.unwrap();
        assert_eq!(
            s.index.compare_and_set_head(&l, 0, &next).await.unwrap(),
            CasOutcome::Applied
        );
        let stale = Meta {
            seq_counter: 1,
            last_hash: Hash([9; 32]),
            pending: None,
        };
        assert_eq!(
            s.index.compare_and_set_head(&l, 0, &stale).await.unwrap(),
            CasOutcome::Conflict(Some(next.clone())),
            "a conflict returns what META holds now"
        );
        assert_eq!(s.index.head(&l).await.unwrap(), Some(next));
    }

    pub async fn racing_compare_and_set_has_one_winner(s: &Stores) {
        let l = unique_ledger();
        s.index.create_ledger(&l).await.unwrap();
        let tasks: Vec<_> = (0..8u8)
            .map(|i| {
                let (index, l) = (s.index.clone(), l.clone());
                let meta = Meta {
                    seq_counter: 1,
                    last_hash: Hash([i; 32]),
                    pending: None,
                };
                tokio::spawn(async move { index.compare_and_set_head(&l, 0, &meta).await.unwrap() })
            })
            .collect();
        let mut applied = 0;
        for t in tasks {
            if t.await.unwrap() == CasOutcome::Applied {
                applied += 1;
            }
        }
        assert_eq!(applied, 1);
    }

    pub async fn a_pending_batch_round_trips_byte_for_byte(s: &Stores) {
        let l = unique_ledger();
        s.index.create_ledger(&l).await.unwrap();
        let entries: Vec<Bytes> = (0..50u8)
            .map(|i| {
                Bytes::from(
                    (0..2000)
                        .map(|j| (j as u8).wrapping_mul(i))
                        .collect::<Vec<u8>>(),
                )
            })
            .collect();
        let meta = Meta {
            seq_counter: 50,
            last_hash: Hash([5; 32]),
            pending: Some(PendingBatch {
                first_seq: 1,
                entries,
            }),
        };
        s.index.compare_and_set_head(&l, 0, &meta).await.unwrap();
        assert_eq!(s.index.head(&l).await.unwrap(), Some(meta));
    }

    pub async fn a_batch_commit_writes_all_of_it_or_none_of_it(s: &Stores) {
        let l = unique_ledger();
        s.index.create_ledger(&l).await.unwrap();
        let batch = [object(&l, "1", "one"), object(&l, "2", "two")];
        let items = [seq_item(1, 1), seq_item(2, 2)];
        let meta = Meta {
            seq_counter: 2,
            last_hash: Hash([2; 32]),
            pending: None,
        };
        // The capability is a backend's own (`Stores::batches`); without it there is no call.
        let Some(batches) = &s.batches else { return };
        assert_eq!(
            batches
                .commit_batch(&l, 0, &meta, &writes(&batch, &items))
                .await
                .unwrap(),
            BatchCommit::Applied
        );
        assert_eq!(s.index.head(&l).await.unwrap(), Some(meta.clone()));
        assert_eq!(stored(s, &batch).await, [true, true]);
        assert_eq!(s.index.seq_items(&l, 1, 2, 10).await.unwrap(), items);

        // A stale claim: nothing of it is written.
        let stale = [object(&l, "3", "three")];
        assert_eq!(
            batches
                .commit_batch(&l, 0, &meta, &writes(&stale, &[seq_item(3, 3)]))
                .await
                .unwrap(),
            BatchCommit::Conflict(Some(meta.clone()))
        );
        assert_eq!(stored(s, &stale).await, [false]);

        // Something already stored under one key or seq of the batch: nothing of it is written.
        let next = Meta {
            seq_counter: 4,
            last_hash: Hash([4; 32]),
            pending: None,
        };
        let planted = object(&l, "4", "planted");
        s.objects
            .put_new(std::slice::from_ref(&planted))
            .await
            .unwrap();
        let clashing = [object(&l, "3", "three"), object(&l, "4", "four")];
        let next_items = [seq_item(3, 3), seq_item(4, 4)];
        assert_eq!(
            batches
                .commit_batch(&l, 2, &next, &writes(&clashing, &next_items))
                .await
                .unwrap(),
            BatchCommit::Occupied(Taken::Object(planted.key.clone()))
        );
        assert_eq!(
            stored(s, std::slice::from_ref(&planted)).await,
            [true],
            "the object found in the way is left as it was"
        );
        s.index.put_seq_items(&l, &[seq_item(4, 9)]).await.unwrap();
        let fresh = [object(&l, "3", "three"), object(&l, "5", "five")];
        assert_eq!(
            batches
                .commit_batch(&l, 2, &next, &writes(&fresh, &next_items))
                .await
                .unwrap(),
            BatchCommit::Occupied(Taken::Seq(4))
        );
        assert_eq!(s.index.head(&l).await.unwrap(), Some(meta));
        assert_eq!(stored(s, &fresh).await, [false, false]);
        assert_eq!(
            s.index.seq_items(&l, 3, 4, 10).await.unwrap(),
            [seq_item(4, 9)]
        );
    }

    pub async fn racing_batch_commits_have_one_winner(s: &Stores) {
        let Some(batches_store) = &s.batches else {
            return;
        };
        let l = unique_ledger();
        s.index.create_ledger(&l).await.unwrap();
        let batches: Vec<Vec<NewObject>> = (0..8u8)
            .map(|i| vec![object(&l, &format!("{i}"), &format!("batch {i}"))])
            .collect();
        let tasks: Vec<_> = batches
            .iter()
            .enumerate()
            .map(|(i, objects)| {
                let (store, l, objects) = (batches_store.clone(), l.clone(), objects.clone());
                let meta = Meta {
                    seq_counter: 1,
                    last_hash: Hash([i as u8; 32]),
                    pending: None,
                };
                tokio::spawn(async move {
                    store
                        .commit_batch(&l, 0, &meta, &writes(&objects, &[seq_item(1, i as u8)]))
                        .await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(BatchCommit::Applied) => winners.push(i),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        for (i, objects) in batches.iter().enumerate() {
            assert_eq!(
                stored(s, objects).await,
                [i == winners[0]],
                "only the winner's objects exist"
            );
        }
        let items = s.index.seq_items(&l, 1, 1, 10).await.unwrap();
        assert_eq!(items, [seq_item(1, winners[0] as u8)]);
        let head = s.index.head(&l).await.unwrap().unwrap();
        assert_eq!(
            head.last_hash,
            Hash([winners[0] as u8; 32]),
            "META is the winner's"
        );
    }

    pub async fn seq_items_are_written_once_and_returned_when_present(s: &Stores) {
        let l = unique_ledger();
        let mut with_version = seq_item(2, 2);
        with_version.version_id = Some("v-2".into());
        assert_eq!(
            s.index
                .put_seq_items(&l, &[seq_item(1, 1), with_version.clone()])
                .await
                .unwrap(),
            vec![SeqPut::Created, SeqPut::Created]
        );
        let outcome = s
            .index
            .put_seq_items(&l, &[seq_item(2, 7), seq_item(3, 3)])
            .await
            .unwrap();
        assert_eq!(
            outcome,
            vec![SeqPut::AlreadyExists(with_version.clone()), SeqPut::Created]
        );
        let items = s.index.seq_items(&l, 1, 3, 10).await.unwrap();
        assert_eq!(items, vec![seq_item(1, 1), with_version, seq_item(3, 3)]);
    }

    pub async fn seq_items_query_is_ascending_bounded_and_per_ledger(s: &Stores) {
        let (l, other) = (unique_ledger(), unique_ledger());
        let items: Vec<_> = (1..=12).rev().map(|n| seq_item(n, n as u8)).collect();
        s.index.put_seq_items(&l, &items).await.unwrap();
        s.index
            .put_seq_items(&other, &[seq_item(5, 99)])
            .await
            .unwrap();
        let got: Vec<u64> = s
            .index
            .seq_items(&l, 3, 11, 100)
            .await
            .unwrap()
            .iter()
            .map(|i| i.seq)
            .collect();
        assert_eq!(
            got,
            (3..=11).collect::<Vec<_>>(),
            "10 sorts after 9: seqs are not compared as text"
        );
        let got: Vec<u64> = s
            .index
            .seq_items(&l, 2, 12, 4)
            .await
            .unwrap()
            .iter()
            .map(|i| i.seq)
            .collect();
        assert_eq!(got, vec![2, 3, 4, 5]);
        assert!(s.index.seq_items(&l, 13, 20, 10).await.unwrap().is_empty());
    }

    pub async fn ledgers_are_listed_in_order_and_paged(s: &Stores) {
        let base = unique_ledger();
        let ids: Vec<_> = ["c", "a", "b"]
            .iter()
            .map(|x| LedgerId::parse(&format!("{base}-{x}")).unwrap())
            .collect();
        for id in &ids {
            s.index.create_ledger(id).await.unwrap();
        }
        let first = s.index.ledgers(Some(&base), 2).await.unwrap();
        assert_eq!(first, vec![ids[1].clone(), ids[2].clone()]);
        let next = s.index.ledgers(Some(&first[1]), 1).await.unwrap();
        assert_eq!(next, vec![ids[0].clone()]);
    }

    pub async fn a_key_item_is_created_once_then_replaced_only_from_what_it_holds(s: &Stores) {
        let l = unique_ledger();
        // Keys are printable ASCII, quotes and backslashes included, up to 255 characters.
        let (k, long) = (key(r#"order "42" \ #1"#), key(&"z".repeat(255)));
        assert_eq!(s.index.key_claim(&l, &k).await.unwrap(), None);
        let first = claim(4, &[6]);
        assert_eq!(
            s.index.put_key_claim(&l, &k, None, &first).await.unwrap(),
            KeyPut::Applied
        );
        assert_eq!(
            s.index.put_key_claim(&l, &long, None, &claim(0, &[1])).await.unwrap(),
            KeyPut::Applied
        );
        assert_eq!(s.index.key_claim(&l, &k).await.unwrap(), Some(first.clone()));
        assert_eq!(
            s.index.key_claim(&l, &long).await.unwrap(),
            Some(claim(0, &[1]))
        );
        // Created only where there is none.
        assert_eq!(
            s.index.put_key_claim(&l, &k, None, &claim(9, &[10])).await.unwrap(),
            KeyPut::Conflict(Some(first.clone()))
        );
        // Replaced only from exactly what it holds.
        assert_eq!(
            s.index
                .put_key_claim(&l, &k, Some(&claim(4, &[7])), &claim(9, &[10]))
                .await
                .unwrap(),
            KeyPut::Conflict(Some(first.clone()))
        );
        let joined = claim(4, &[6, 8]);
        assert_eq!(
            s.index.put_key_claim(&l, &k, Some(&first), &joined).await.unwrap(),
            KeyPut::Applied
        );
        assert_eq!(s.index.key_claim(&l, &k).await.unwrap(), Some(joined));
        // Per ledger, and never in the way of SEQ# items or META.
        assert_eq!(s.index.key_claim(&unique_ledger(), &k).await.unwrap(), None);
        assert!(s.index.seq_items(&l, 1, 100, 100).await.unwrap().is_empty());
        assert_eq!(s.index.head(&l).await.unwrap(), None);
    }

    pub async fn racing_key_writes_from_one_value_have_one_winner(s: &Stores) {
        let l = unique_ledger();
        let k = key("race");
        let tasks: Vec<_> = (0..8u64)
            .map(|i| {
                let (index, l, k) = (s.index.clone(), l.clone(), k.clone());
                tokio::spawn(async move {
                    index.put_key_claim(&l, &k, None, &claim(i, &[i + 1])).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            if t.await.unwrap().unwrap() == KeyPut::Applied {
                winners.push(i as u64);
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        let w = winners[0];
        assert_eq!(s.index.key_claim(&l, &k).await.unwrap(), Some(claim(w, &[w + 1])));
    }

    pub async fn a_batch_commit_writes_its_key_items_or_nothing(s: &Stores) {
        let Some(batches) = &s.batches else { return };
        let l = unique_ledger();
        s.index.create_ledger(&l).await.unwrap();
        let (a, b) = (key("a"), key("b"));
        s.index.put_key_claim(&l, &b, None, &claim(0, &[3])).await.unwrap();
        let meta = Meta {
            seq_counter: 2,
            last_hash: Hash([2; 32]),
            pending: None,
        };
        let mut batch = writes(&[object(&l, "1", "one")], &[seq_item(1, 1)]);
        batch.keys = vec![
            KeyWrite { key: a.clone(), expected: None, new: claim(0, &[1]) },
            // Not what the item holds: the whole batch is refused.
            KeyWrite { key: b.clone(), expected: None, new: claim(0, &[2]) },
        ];
        assert_eq!(
            batches.commit_batch(&l, 0, &meta, &batch).await.unwrap(),
            BatchCommit::KeyMoved
        );
        assert_eq!(s.index.key_claim(&l, &a).await.unwrap(), None);
        assert_eq!(s.index.head(&l).await.unwrap(), Some(Meta::empty()));
        assert_eq!(stored(s, &batch.objects).await, [false]);
        batch.keys[1].expected = Some(claim(0, &[3]));
        assert_eq!(
            batches.commit_batch(&l, 0, &meta, &batch).await.unwrap(),
            BatchCommit::Applied
        );
        assert_eq!(s.index.key_claim(&l, &a).await.unwrap(), Some(claim(0, &[1])));
        assert_eq!(s.index.key_claim(&l, &b).await.unwrap(), Some(claim(0, &[2])));
        assert_eq!(s.index.head(&l).await.unwrap(), Some(meta));
    }

    pub async fn health_checks_pass(s: &Stores) {
        s.objects.check().await.unwrap();
        s.index.check().await.unwrap();
    }

    /// [`ObjectStore::close`](super::ObjectStore::close) releases what the store holds beyond
    /// memory, for every handle to it, after which calls fail with [`StoreError::Unavailable`]; a
    /// new open of the same data (a restarted service) then works and sees what was written.
    /// A backend with nothing beyond memory to release keeps the default no-op close (the AWS
    /// backend: its SDK clients hold connections only), so its handles keep answering.
    pub async fn close_releases_the_store_and_a_new_open_of_the_same_data_works(s: &Fixture) {
        let p = unique_ledger();
        let o = object(&p, "a", "written before close");
        s.objects.put_new(std::slice::from_ref(&o)).await.unwrap();
        s.index.create_ledger(&p).await.unwrap();
        s.objects.close().await;
        match s.backend {
            Backend::Local => {
                let read = s.objects.get(&o.key, None).await;
                assert!(
                    matches!(read, Err(StoreError::Unavailable { .. })),
                    "a read after close: {read:?}"
                );
                let head = s.index.head(&p).await;
                assert!(
                    matches!(head, Err(StoreError::Unavailable { .. })),
                    "the index shares the closed engine: {head:?}"
                );
                let put = s.objects.put_new(&[object(&p, "b", "after close")]).await;
                assert!(
                    matches!(put, Err(StoreError::Unavailable { .. })),
                    "a write after close: {put:?}"
                );
            }
            Backend::Aws => {
                let current = s.objects.get(&o.key, None).await.unwrap();
                assert_eq!(
                    current.map(|c| c.body),
                    Some(o.body.clone()),
                    "close is a no-op here: the handle still reads"
                );
                assert_eq!(s.index.head(&p).await.unwrap(), Some(Meta::empty()));
            }
        }
        let reopened = s.reopen().await;
        let current = reopened.objects.get(&o.key, None).await.unwrap();
        assert_eq!(
            current.map(|c| c.body),
            Some(o.body.clone()),
            "the new open reads what was written before close"
        );
        assert_eq!(reopened.index.head(&p).await.unwrap(), Some(Meta::empty()));
        let outcome = reopened
            .objects
            .put_new(&[object(&p, "b", "after reopen")])
            .await
            .unwrap();
        assert!(
            matches!(outcome[..], [PutOutcome::Created { .. }]),
            "the new open writes: {outcome:?}"
        );
        reopened.objects.close().await;
    }
}
