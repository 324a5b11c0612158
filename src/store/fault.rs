//! A fault-injecting wrapper around any pair of stores, to test every crash point of the
//! commit protocol (test support; not used by the service).
//!
//! Every call through the wrapper is numbered from 0. A [`Fault`] planned for call `n` makes
//! that call fail before doing anything, or do its work (all of it, or only the first half of a
//! batch) and then "crash": from then on every call fails, as if the writer process had died
//! at that point. A fresh service over the unwrapped stores then plays the restarted writer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{
    AtomicBatchStore, BatchCommit, CasOutcome, IndexStore, Meta, NewObject, ObjectStore,
    PutOutcome, ScannedObject, SeqItem, SeqPut, StoreError, StoreResult, StoredObject, Stores,
};
use crate::chain::entry::LedgerId;

/// What happens at the planned call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails without effect; later calls work (a transient error).
    FailBefore,
    /// The call takes full effect, then the writer dies.
    CrashAfter,
    /// A batch call writes only its first half, then the writer dies (single calls: as
    /// [`Fault::CrashAfter`]).
    CrashHalfway,
    /// The call takes full effect, but its answer is lost: the caller gets an error and the
    /// writer lives on (a timeout after the request was applied).
    LoseAnswer,
}

#[derive(Default)]
struct Plan {
    calls: AtomicUsize,
    crashed: AtomicBool,
    fault: Mutex<Option<(usize, Fault)>>,
    log: Mutex<Vec<&'static str>>,
}

/// What the wrapper decided for one call.
enum Step {
    Run,
    Fail,
    RunThenCrash { halfway: bool },
    RunThenFail,
}

impl Plan {
    fn step(&self, op: &'static str) -> Step {
        if self.crashed.load(Ordering::SeqCst) {
            return Step::Fail;
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.log.lock().expect("log lock").push(op);
        let fault = *self.fault.lock().expect("plan lock");
        match fault {
            Some((at, Fault::FailBefore)) if at == n => Step::Fail,
            Some((at, Fault::CrashAfter)) if at == n => Step::RunThenCrash { halfway: false },
            Some((at, Fault::CrashHalfway)) if at == n => Step::RunThenCrash { halfway: true },
            Some((at, Fault::LoseAnswer)) if at == n => Step::RunThenFail,
            _ => Step::Run,
        }
    }

    fn crash(&self) -> StoreError {
        self.crashed.store(true, Ordering::SeqCst);
        injected()
    }
}

fn injected() -> StoreError {
    StoreError::Unavailable {
        dependency: "fault-injection",
        detail: "injected fault".into(),
    }
}

/// Wraps `inner`; returns the wrapped stores and the handle that plans faults.
pub fn wrap(inner: &Stores) -> (Stores, FaultHandle) {
    wrap_with(inner, true)
}

/// Like [`wrap`], but the wrapped stores do not offer [`AtomicBatchStore`]: over the
/// embedded store, the service then commits in the protocol's separate steps (claim, objects,
/// items), as it does for S3 + DynamoDB and to finish a batch an earlier version left pending.
pub fn wrap_in_steps(inner: &Stores) -> (Stores, FaultHandle) {
    wrap_with(inner, false)
}

fn wrap_with(inner: &Stores, one_step: bool) -> (Stores, FaultHandle) {
    let plan = Arc::new(Plan::default());
    let wrapper = Arc::new(Faulty {
        inner: inner.clone(),
        plan: plan.clone(),
    });
    let batches =
        (one_step && inner.batches.is_some()).then(|| wrapper.clone() as Arc<dyn AtomicBatchStore>);
    let stores = Stores {
        backend: inner.backend,
        lock_mode: inner.lock_mode,
        objects: wrapper.clone(),
        index: wrapper,
        batches,
    };
    (stores, FaultHandle { plan })
}

/// Plans faults and reports what was called.
#[derive(Clone)]
pub struct FaultHandle {
    plan: Arc<Plan>,
}

impl FaultHandle {
    /// Makes call number `at` (counting from the next call) behave as `fault`.
    pub fn plan(&self, at: usize, fault: Fault) {
        let base = self.plan.calls.load(Ordering::SeqCst);
        *self.plan.fault.lock().expect("plan lock") = Some((base + at, fault));
    }

    /// Calls made so far, in order, by operation name.
    pub fn calls(&self) -> Vec<&'static str> {
        self.plan.log.lock().expect("log lock").clone()
    }

    pub fn crashed(&self) -> bool {
        self.plan.crashed.load(Ordering::SeqCst)
    }
}

struct Faulty {
    inner: Stores,
    plan: Arc<Plan>,
}

impl Faulty {
    /// Runs a single (non-batch) call under the plan.
    async fn single<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        match self.plan.step(op) {
            Step::Fail => Err(injected()),
            Step::Run => call.await,
            Step::RunThenCrash { .. } => {
                let _ = call.await;
                Err(self.plan.crash())
            }
            Step::RunThenFail => {
                let _ = call.await;
                Err(injected())
            }
        }
    }

    /// Decides a batch call: which items to pass on, and what the caller hears afterwards.
    fn batch<'a, T>(&self, op: &'static str, items: &'a [T]) -> StoreResult<(&'a [T], After)> {
        match self.plan.step(op) {
            Step::Fail => Err(injected()),
            Step::Run => Ok((items, After::Answer)),
            Step::RunThenFail => Ok((items, After::LoseAnswer)),
            Step::RunThenCrash { halfway } => Ok((
                if halfway {
                    &items[..items.len() / 2]
                } else {
                    items
                },
                After::Crash,
            )),
        }
    }

    /// Finishes a batch call: after a planned crash or a lost answer the caller sees only the
    /// error.
    fn after<R>(&self, result: StoreResult<R>, after: After) -> StoreResult<R> {
        match after {
            After::Answer => result,
            After::Crash => Err(self.plan.crash()),
            After::LoseAnswer => Err(injected()),
        }
    }
}

/// What the caller of a batch call hears once the call has run.
#[derive(Clone, Copy)]
enum After {
    Answer,
    Crash,
    LoseAnswer,
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn close(&self) {
        self.inner.objects.close().await
    }
    async fn put_new(&self, objects: &[NewObject]) -> StoreResult<Vec<PutOutcome>> {
        let (part, after) = self.batch("put_new", objects)?;
        let result = self.inner.objects.put_new(part).await;
        self.after(result, after)
    }
    async fn get(&self, key: &str, version: Option<&str>) -> StoreResult<Option<StoredObject>> {
        self.single("get", self.inner.objects.get(key, version))
            .await
    }
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.single("list", self.inner.objects.list(prefix, start_after, limit))
            .await
    }
    async fn list_versioned(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.single(
            "list_versioned",
            self.inner
                .objects
                .list_versioned(prefix, start_after, limit),
        )
        .await
    }
    async fn version_count(&self, key: &str) -> StoreResult<usize> {
        self.single("version_count", self.inner.objects.version_count(key))
            .await
    }
    async fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ScannedObject>> {
        self.single("scan", self.inner.objects.scan(prefix, start_after, limit))
            .await
    }
    async fn check(&self) -> StoreResult<()> {
        self.single("check_objects", self.inner.objects.check())
            .await
    }
}

#[async_trait]
impl IndexStore for Faulty {
    async fn head(&self, ledger: &LedgerId) -> StoreResult<Option<Meta>> {
        self.single("head", self.inner.index.head(ledger)).await
    }
    async fn create_ledger(&self, ledger: &LedgerId) -> StoreResult<Meta> {
        self.single("create_ledger", self.inner.index.create_ledger(ledger))
            .await
    }
    async fn compare_and_set_head(
        &self,
        ledger: &LedgerId,
        expected_seq: u64,
        new: &Meta,
    ) -> StoreResult<CasOutcome> {
        self.single(
            "compare_and_set_head",
            self.inner
                .index
                .compare_and_set_head(ledger, expected_seq, new),
        )
        .await
    }
    async fn put_seq_items(
        &self,
        ledger: &LedgerId,
        items: &[SeqItem],
    ) -> StoreResult<Vec<SeqPut>> {
        let (part, after) = self.batch("put_seq_items", items)?;
        let result = self.inner.index.put_seq_items(ledger, part).await;
        self.after(result, after)
    }
    async fn seq_items(
        &self,
        ledger: &LedgerId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<SeqItem>> {
        self.single(
            "seq_items",
            self.inner.index.seq_items(ledger, from, to, limit),
        )
        .await
    }
    async fn ledgers(&self, after: Option<&LedgerId>, limit: usize) -> StoreResult<Vec<LedgerId>> {
        self.single("ledgers", self.inner.index.ledgers(after, limit))
            .await
    }
    async fn check(&self) -> StoreResult<()> {
        self.single("check_index", self.inner.index.check()).await
    }
}

#[async_trait]
impl AtomicBatchStore for Faulty {
    /// A crash "halfway" is a crash after: the step is atomic.
    async fn commit_batch(
        &self,
        ledger: &LedgerId,
        expected_seq: u64,
        new: &Meta,
        objects: &[NewObject],
        items: &[SeqItem],
    ) -> StoreResult<BatchCommit> {
        let Some(batches) = &self.inner.batches else {
            unreachable!("offered only over stores that commit batches in one step")
        };
        self.single(
            "commit_batch",
            batches.commit_batch(ledger, expected_seq, new, objects, items),
        )
        .await
    }
}
