//! One wrapper for whatever must run around every store call: the circuit breakers
//! ([`super::breaker`]) and the fault injector ([`super::fault`]) are each an [`Around`] hook,
//! so the three traits' methods are delegated once, here, instead of once per wrapper.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;

use super::{
    AtomicBatchStore, BatchCommit, BatchWrites, CasOutcome, IndexStore, KeyClaim, KeyPut, Meta,
    NewObject, ObjectStore, PutOutcome, ScannedObject, SeqItem, SeqPut, StoreResult, StoredObject,
    Stores,
};
use crate::chain::entry::{IdempotencyKey, LedgerId};

/// Which store a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Objects,
    /// The index, and the one-step batch commit (the same engine's index side).
    Index,
}

/// One store call, as a hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub side: Side,
    /// The method's name (`"put_new"`, `"head"`, ...; `check` is `"check_objects"` or
    /// `"check_index"`).
    pub op: &'static str,
    /// Whether the call writes several independent items (`put_new`, `put_seq_items`), of
    /// which a hook may pass on only a part.
    pub batch: bool,
    /// Whether the call writes (every batch call does; of single calls `create_ledger`,
    /// `compare_and_set_head`, `put_key_claim` and `commit_batch`). The circuit breaker counts
    /// write failures apart: a full disk fails writes while reads still succeed.
    pub write: bool,
}

/// How much of a batch call's items to pass on (single calls ignore it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    All,
    /// Only the fault injector (test support) passes on half a batch.
    #[cfg_attr(not(any(test, feature = "test-support")), allow(dead_code))]
    FirstHalf,
}

impl Part {
    pub fn of<T>(self, items: &[T]) -> &[T] {
        match self {
            Part::All => items,
            Part::FirstHalf => &items[..items.len() / 2],
        }
    }
}

/// What runs around each call. `run` makes the call (with `Part` of its items); the hook
/// decides whether, and what the caller hears.
pub trait Around: Send + Sync + 'static {
    fn around<'a, T: Send + 'a>(
        &'a self,
        call: Call,
        run: impl FnOnce(Part) -> BoxFuture<'a, StoreResult<T>> + Send + 'a,
    ) -> impl Future<Output = StoreResult<T>> + Send + 'a;
}

/// `inner` with `hook` around every call. The one-step batch capability is kept only when
/// `inner` has it and `keep_batches` is set.
pub fn wrap<A: Around>(inner: &Stores, hook: A, keep_batches: bool) -> Stores {
    let wrapped = Arc::new(Wrapped {
        inner: inner.clone(),
        hook,
    });
    Stores {
        backend: inner.backend,
        lock_mode: inner.lock_mode,
        objects: wrapped.clone(),
        index: wrapped.clone(),
        batches: (keep_batches && inner.batches.is_some())
            .then_some(wrapped as Arc<dyn AtomicBatchStore>),
    }
}

struct Wrapped<A> {
    inner: Stores,
    hook: A,
}

impl<A: Around> Wrapped<A> {
    /// A call that is not a batch and reads.
    fn single<'a, T: Send + 'a>(
        &'a self,
        side: Side,
        op: &'static str,
        future: BoxFuture<'a, StoreResult<T>>,
    ) -> impl Future<Output = StoreResult<T>> + Send + 'a {
        self.single_call(side, op, false, future)
    }

    /// A call that is not a batch and writes.
    fn single_write<'a, T: Send + 'a>(
        &'a self,
        side: Side,
        op: &'static str,
        future: BoxFuture<'a, StoreResult<T>>,
    ) -> impl Future<Output = StoreResult<T>> + Send + 'a {
        self.single_call(side, op, true, future)
    }

    fn single_call<'a, T: Send + 'a>(
        &'a self,
        side: Side,
        op: &'static str,
        write: bool,
        future: BoxFuture<'a, StoreResult<T>>,
    ) -> impl Future<Output = StoreResult<T>> + Send + 'a {
        let call = Call {
            side,
            op,
            batch: false,
            write,
        };
        self.hook.around(call, move |_| future)
    }

    /// A batch call: `run` gets the part of the items to write.
    fn batch<'a, T: Send + 'a>(
        &'a self,
        side: Side,
        op: &'static str,
        run: impl FnOnce(Part) -> BoxFuture<'a, StoreResult<T>> + Send + 'a,
    ) -> impl Future<Output = StoreResult<T>> + Send + 'a {
        let call = Call {
            side,
            op,
            batch: true,
            write: true,
        };
        self.hook.around(call, run)
    }
}

#[async_trait]
impl<A: Around> ObjectStore for Wrapped<A> {
    async fn put_new(&self, objects: &[NewObject]) -> StoreResult<Vec<PutOutcome>> {
        self.batch(Side::Objects, "put_new", |part| {
            self.inner.objects.put_new(part.of(objects))
        })
        .await
    }
    async fn get(&self, key: &str, version: Option<&str>) -> StoreResult<Option<StoredObject>> {
        let o = &self.inner.objects;
        self.single(Side::Objects, "get", o.get(key, version)).await
    }
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let o = &self.inner.objects;
        self.single(Side::Objects, "list", o.list(prefix, start_after, limit))
            .await
    }
    async fn list_versioned(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let o = &self.inner.objects;
        let call = o.list_versioned(prefix, start_after, limit);
        self.single(Side::Objects, "list_versioned", call).await
    }
    async fn version_count(&self, key: &str) -> StoreResult<usize> {
        let o = &self.inner.objects;
        self.single(Side::Objects, "version_count", o.version_count(key))
            .await
    }
    async fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ScannedObject>> {
        let o = &self.inner.objects;
        self.single(Side::Objects, "scan", o.scan(prefix, start_after, limit))
            .await
    }
    async fn check(&self) -> StoreResult<()> {
        let o = &self.inner.objects;
        self.single(Side::Objects, "check_objects", o.check()).await
    }
    /// Not a call a hook can refuse: it releases the store.
    async fn close(&self) {
        self.inner.objects.close().await
    }
}

#[async_trait]
impl<A: Around> IndexStore for Wrapped<A> {
    async fn head(&self, ledger: &LedgerId) -> StoreResult<Option<Meta>> {
        let i = &self.inner.index;
        self.single(Side::Index, "head", i.head(ledger)).await
    }
    async fn create_ledger(&self, ledger: &LedgerId) -> StoreResult<Meta> {
        let i = &self.inner.index;
        self.single_write(Side::Index, "create_ledger", i.create_ledger(ledger))
            .await
    }
    async fn compare_and_set_head(
        &self,
        ledger: &LedgerId,
        expected_seq: u64,
        new: &Meta,
    ) -> StoreResult<CasOutcome> {
        let i = &self.inner.index;
        let call = i.compare_and_set_head(ledger, expected_seq, new);
        self.single_write(Side::Index, "compare_and_set_head", call)
            .await
    }
    async fn put_seq_items(
        &self,
        ledger: &LedgerId,
        items: &[SeqItem],
    ) -> StoreResult<Vec<SeqPut>> {
        self.batch(Side::Index, "put_seq_items", |part| {
            self.inner.index.put_seq_items(ledger, part.of(items))
        })
        .await
    }
    async fn seq_items(
        &self,
        ledger: &LedgerId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<SeqItem>> {
        let i = &self.inner.index;
        self.single(
            Side::Index,
            "seq_items",
            i.seq_items(ledger, from, to, limit),
        )
        .await
    }
    async fn key_claim(
        &self,
        ledger: &LedgerId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<KeyClaim>> {
        let i = &self.inner.index;
        self.single(Side::Index, "key_claim", i.key_claim(ledger, key))
            .await
    }
    async fn put_key_claim(
        &self,
        ledger: &LedgerId,
        key: &IdempotencyKey,
        expected: Option<&KeyClaim>,
        new: &KeyClaim,
    ) -> StoreResult<KeyPut> {
        let i = &self.inner.index;
        let call = i.put_key_claim(ledger, key, expected, new);
        self.single_write(Side::Index, "put_key_claim", call).await
    }
    async fn ledgers(&self, after: Option<&LedgerId>, limit: usize) -> StoreResult<Vec<LedgerId>> {
        let i = &self.inner.index;
        self.single(Side::Index, "ledgers", i.ledgers(after, limit))
            .await
    }
    async fn check(&self) -> StoreResult<()> {
        let i = &self.inner.index;
        self.single(Side::Index, "check_index", i.check()).await
    }
}

#[async_trait]
impl<A: Around> AtomicBatchStore for Wrapped<A> {
    /// One atomic step: a hook cannot pass on part of it.
    async fn commit_batch(
        &self,
        ledger: &LedgerId,
        expected_seq: u64,
        new: &Meta,
        writes: &BatchWrites,
    ) -> StoreResult<BatchCommit> {
        let batches = self
            .inner
            .batches
            .as_ref()
            .expect("offered only over stores that commit batches in one step");
        let call = batches.commit_batch(ledger, expected_seq, new, writes);
        self.single_write(Side::Index, "commit_batch", call).await
    }
}
