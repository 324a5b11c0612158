//! A fault-injecting wrapper around any pair of stores, to test every crash point of the
//! commit protocol (test support; not used by the service).
//!
//! Every call through the wrapper is numbered from 0. A [`Fault`] planned for call `n` makes
//! that call fail before doing anything, or do its work (all of it, or only the first half of a
//! batch) and then "crash": from then on every call fails, as if the writer process had died
//! at that point. A fresh service over the unwrapped stores then plays the restarted writer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::around::{self, Around, Call, Part};
use super::{StoreError, StoreResult, Stores};

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
    /// Every call of this operation waits this long before it runs (a slow dependency).
    stall: Mutex<Option<(&'static str, Duration)>>,
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
    let stores = around::wrap(inner, Faulty { plan: plan.clone() }, one_step);
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

    /// Makes every later call of `op` wait `delay` before it runs (and take effect as usual).
    pub fn stall(&self, op: &'static str, delay: Duration) {
        *self.plan.stall.lock().expect("stall lock") = Some((op, delay));
    }

    /// Calls made so far, in order, by operation name.
    pub fn calls(&self) -> Vec<&'static str> {
        self.plan.log.lock().expect("log lock").clone()
    }

    pub fn crashed(&self) -> bool {
        self.plan.crashed.load(Ordering::SeqCst)
    }
}

/// The fault plan, as the hook around every store call.
struct Faulty {
    plan: Arc<Plan>,
}

impl Around for Faulty {
    /// A single call that "crashes halfway" crashes after (it has no halves), and so does the
    /// one-step batch commit (it is atomic).
    fn around<'a, T: Send + 'a>(
        &'a self,
        call: Call,
        run: impl FnOnce(Part) -> BoxFuture<'a, StoreResult<T>> + Send + 'a,
    ) -> impl Future<Output = StoreResult<T>> + Send + 'a {
        let step = self.plan.step(call.op);
        let stall = *self.plan.stall.lock().expect("stall lock");
        async move {
            if let Some((_, delay)) = stall.filter(|(op, _)| *op == call.op) {
                tokio::time::sleep(delay).await;
            }
            match step {
                Step::Fail => Err(injected()),
                Step::Run => run(Part::All).await,
                Step::RunThenCrash { halfway } => {
                    let part = if halfway && call.batch {
                        Part::FirstHalf
                    } else {
                        Part::All
                    };
                    let _ = run(part).await;
                    Err(self.plan.crash())
                }
                Step::RunThenFail => {
                    let _ = run(Part::All).await;
                    Err(injected())
                }
            }
        }
    }
}
