//! A circuit breaker per storage dependency (S3, DynamoDB, the embedded store).
//!
//! After `threshold` consecutive calls fail with [`StoreError::Unavailable`], or `threshold`
//! consecutive writes do, the circuit opens: for `cooldown`, every call fails at once, without
//! waiting on a dependency that is down (appends answer `503 dependency_unavailable` quickly
//! instead of piling up). Then one call is let through as a probe (half-open): success closes
//! the circuit, failure opens it again. Other outcomes (success, conflicts, corruption) reset
//! the failure counts of their kind: they prove the dependency answers. A read that succeeds
//! does not reset the count of failed writes: on a full disk every write fails while reads go
//! on succeeding, and each append would otherwise wait out its own failure.
//!
//! The state is exported as `circuit_breaker_state{dependency}` (0 closed, 1 open,
//! 2 half-open) and shown by `/health`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus::{IntGaugeVec, Opts, Registry};
use tokio::time::Instant;

use super::around::{self, Around, Call, Part, Side};
use super::{StoreError, StoreResult, Stores};

/// A circuit's state, as `/health` and the metric show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    fn gauge_value(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        /// Consecutive failed calls of any kind.
        failures: u32,
        /// Consecutive failed writes, reads in between notwithstanding.
        write_failures: u32,
    },
    Open {
        until: Instant,
        /// It opened on failing writes (see [`Inner::HalfOpen`]).
        writes: bool,
    },
    /// A probe call is in flight; everything else fails fast until it reports. If the circuit
    /// opened on failing writes and the probe is a read that succeeds, the circuit closes one
    /// write failure short of opening again: a read proves nothing about the writes.
    HalfOpen { writes: bool },
}

/// One dependency's circuit.
pub struct CircuitBreaker {
    dependency: &'static str,
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
    gauge: prometheus::IntGauge,
}

/// Breaker settings (`ELEANOR_LEDGER_CIRCUIT_FAILURES`, `ELEANOR_LEDGER_CIRCUIT_COOLDOWN_MS`).
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    pub threshold: u32,
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> BreakerSettings {
        BreakerSettings {
            threshold: 5,
            cooldown: Duration::from_secs(5),
        }
    }
}

impl CircuitBreaker {
    fn new(
        dependency: &'static str,
        settings: BreakerSettings,
        gauges: &IntGaugeVec,
    ) -> CircuitBreaker {
        let gauge = gauges.with_label_values(&[dependency]);
        gauge.set(0);
        CircuitBreaker {
            dependency,
            threshold: settings.threshold.max(1),
            cooldown: settings.cooldown,
            inner: Mutex::new(Inner::Closed {
                failures: 0,
                write_failures: 0,
            }),
            gauge,
        }
    }

    pub fn dependency(&self) -> &'static str {
        self.dependency
    }

    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { .. } => CircuitState::Open,
            Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("circuit state lock is never poisoned")
    }

    fn set(&self, inner: &mut Inner, next: Inner) {
        *inner = next;
        let state = match inner {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { .. } => CircuitState::Open,
            Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        };
        self.gauge.set(state.gauge_value());
    }

    /// Whether a call may go ahead now.
    fn admit(&self) -> StoreResult<()> {
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { .. } => Ok(()),
            Inner::Open { until, writes } if Instant::now() >= until => {
                self.set(&mut inner, Inner::HalfOpen { writes });
                Ok(())
            }
            Inner::Open { .. } | Inner::HalfOpen { .. } => Err(StoreError::Refused {
                dependency: self.dependency,
            }),
        }
    }

    fn record<T>(&self, write: bool, result: &StoreResult<T>) {
        let failed = matches!(result, Err(StoreError::Unavailable { .. }));
        let threshold = self.threshold;
        let mut inner = self.lock();
        let open = |writes: bool| {
            tracing::warn!(dependency = self.dependency, cooldown = ?self.cooldown, writes, "circuit opened");
            Inner::Open {
                until: Instant::now() + self.cooldown,
                writes,
            }
        };
        let next = match (&*inner, failed) {
            (Inner::Closed { write_failures, .. }, false) => Inner::Closed {
                failures: 0,
                write_failures: if write { 0 } else { *write_failures },
            },
            // A successful probe, or a call admitted before the circuit opened, that succeeded.
            (Inner::HalfOpen { writes } | Inner::Open { writes, .. }, false) => Inner::Closed {
                failures: 0,
                write_failures: if *writes && !write { threshold - 1 } else { 0 },
            },
            (
                Inner::Closed {
                    failures,
                    write_failures,
                },
                true,
            ) => {
                let failures = failures + 1;
                let write_failures = write_failures + u32::from(write);
                if failures < threshold && write_failures < threshold {
                    Inner::Closed {
                        failures,
                        write_failures,
                    }
                } else {
                    open(write_failures >= threshold)
                }
            }
            (Inner::HalfOpen { writes }, true) => open(*writes || write),
            // A call admitted before the circuit opened: the circuit is already open.
            (Inner::Open { until, writes }, true) => Inner::Open {
                until: *until,
                writes: *writes || write,
            },
        };
        if matches!(*inner, Inner::Open { .. } | Inner::HalfOpen { .. })
            && matches!(next, Inner::Closed { .. })
        {
            tracing::info!(dependency = self.dependency, "circuit closed");
        }
        self.set(&mut inner, next);
    }

    /// Runs `call` (a write when `write`) through the circuit.
    async fn call<T>(
        &self,
        write: bool,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.admit()?;
        // A call dropped before it finishes (a request timeout, a client that went away) never
        // reaches `record`; if it was the half-open probe, the guard reopens the circuit, or
        // every later call would be refused for good.
        let mut guard = Unfinished(Some(self));
        let result = call.await;
        guard.0 = None;
        self.record(write, &result);
        result
    }

    /// A probe that never reported counts as a failed probe.
    fn abandoned(&self) {
        let mut inner = self.lock();
        if let Inner::HalfOpen { writes } = *inner {
            self.set(
                &mut inner,
                Inner::Open {
                    until: Instant::now() + self.cooldown,
                    writes,
                },
            );
        }
    }
}

struct Unfinished<'a>(Option<&'a CircuitBreaker>);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(breaker) = self.0 {
            breaker.abandoned();
        }
    }
}

/// Wraps both stores of `stores` in circuit breakers, one per dependency
/// ([`Backend::dependencies`](super::Backend::dependencies): one for both stores of the embedded
/// backend). Returns the guarded stores and the breakers, for `/health`.
pub fn guard(
    stores: &Stores,
    settings: BreakerSettings,
    registry: &Registry,
) -> prometheus::Result<(Stores, Vec<Arc<CircuitBreaker>>)> {
    let gauges = IntGaugeVec::new(
        Opts::new(
            "circuit_breaker_state",
            "Circuit breaker per dependency: 0 closed, 1 open, 2 half-open.",
        ),
        &["dependency"],
    )?;
    registry.register(Box::new(gauges.clone()))?;
    let (objects_dependency, index_dependency) = stores.backend.dependencies();
    let objects_breaker = Arc::new(CircuitBreaker::new(objects_dependency, settings, &gauges));
    let index_breaker = if index_dependency == objects_dependency {
        objects_breaker.clone()
    } else {
        Arc::new(CircuitBreaker::new(index_dependency, settings, &gauges))
    };
    let mut breakers = vec![objects_breaker.clone()];
    if !Arc::ptr_eq(&objects_breaker, &index_breaker) {
        breakers.push(index_breaker.clone());
    }
    let hook = Breakers {
        objects: objects_breaker,
        index: index_breaker,
    };
    Ok((around::wrap(stores, hook, true), breakers))
}

/// The breakers of both sides, as the hook around every store call.
struct Breakers {
    objects: Arc<CircuitBreaker>,
    index: Arc<CircuitBreaker>,
}

impl Around for Breakers {
    fn around<'a, T: Send + 'a>(
        &'a self,
        call: Call,
        run: impl FnOnce(Part) -> BoxFuture<'a, StoreResult<T>> + Send + 'a,
    ) -> impl Future<Output = StoreResult<T>> + Send + 'a {
        let breaker = match call.side {
            Side::Objects => &self.objects,
            Side::Index => &self.index,
        };
        breaker.call(call.write, run(Part::All))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        let gauges = IntGaugeVec::new(Opts::new("g", "g"), &["dependency"]).unwrap();
        CircuitBreaker::new(
            "dep",
            BreakerSettings {
                threshold: 3,
                cooldown: Duration::from_secs(5),
            },
            &gauges,
        )
    }

    fn down() -> StoreResult<()> {
        Err(StoreError::Unavailable {
            dependency: "dep",
            detail: "down".into(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_fails_fast_then_probes_and_closes() {
        let b = breaker();
        for _ in 0..2 {
            b.call(false, async { down() }).await.unwrap_err();
        }
        assert_eq!(b.state(), CircuitState::Closed, "below the threshold");
        b.call(false, async { down() }).await.unwrap_err();
        assert_eq!(b.state(), CircuitState::Open);
        let mut reached = false;
        let fast = b
            .call(false, async {
                reached = true;
                Ok(())
            })
            .await;
        assert!(
            fast.is_err() && !reached,
            "an open circuit does not call the dependency"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        b.call(false, async { Ok(()) }).await.unwrap();
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "a successful probe closes the circuit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_is_dropped_unfinished_does_not_wedge_the_circuit() {
        let b = breaker();
        for _ in 0..3 {
            b.call(false, async { down() }).await.unwrap_err();
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        let probe = b.call(false, std::future::pending::<StoreResult<()>>());
        assert!(
            tokio::time::timeout(Duration::from_millis(10), probe)
                .await
                .is_err()
        );
        assert_eq!(
            b.state(),
            CircuitState::Open,
            "the abandoned probe counts as a failure"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        b.call(false, async { Ok(()) }).await.unwrap();
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "a later probe can still close it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_the_circuit_again_and_other_errors_do_not_count() {
        let b = breaker();
        for _ in 0..3 {
            b.call(false, async { down() }).await.unwrap_err();
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        b.call(false, async { down() }).await.unwrap_err();
        assert_eq!(b.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(6)).await;
        b.call(false, async {
            Err::<(), _>(StoreError::Corrupt("x".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(b.state(), CircuitState::Closed, "the dependency answered");
    }

    /// The embedded store over the fault injector, guarded by a breaker of threshold 3.
    fn guarded_local(
        dir: &std::path::Path,
    ) -> (
        Stores,
        super::super::fault::FaultHandle,
        Arc<CircuitBreaker>,
    ) {
        let local = super::super::local::LocalStore::open(
            dir,
            super::super::BackendMetrics::unregistered(),
        )
        .unwrap()
        .into_stores();
        let (faulty, faults) = super::super::fault::wrap(&local);
        let settings = BreakerSettings {
            threshold: 3,
            cooldown: Duration::from_secs(5),
        };
        let (stores, breakers) = guard(&faulty, settings, &Registry::new()).unwrap();
        assert_eq!(breakers.len(), 1, "one circuit for the embedded store");
        let breaker = breakers[0].clone();
        (stores, faults, breaker)
    }

    fn ledger() -> crate::chain::entry::LedgerId {
        crate::chain::entry::LedgerId::parse("disk-full").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_write_failures_open_the_circuit_even_when_reads_succeed_in_between() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, faults, breaker) = guarded_local(dir.path());
        for n in 0..3 {
            assert_eq!(
                breaker.state(),
                CircuitState::Closed,
                "after {n} failed writes"
            );
            // A full disk: reads still work, the write after them fails.
            assert!(stores.index.head(&ledger()).await.unwrap().is_none());
            faults.plan(0, super::super::fault::Fault::FailBefore);
            stores.index.create_ledger(&ledger()).await.unwrap_err();
        }
        assert_eq!(breaker.state(), CircuitState::Open);
        let calls = faults.calls().len();
        assert!(matches!(
            stores.index.create_ledger(&ledger()).await,
            Err(StoreError::Refused { .. })
        ));
        assert_eq!(
            faults.calls().len(),
            calls,
            "an open circuit fails writes fast"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_probe_after_failing_writes_leaves_one_write_failure_to_reopen_the_circuit() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, faults, breaker) = guarded_local(dir.path());
        for _ in 0..3 {
            faults.plan(0, super::super::fault::Fault::FailBefore);
            stores.index.create_ledger(&ledger()).await.unwrap_err();
        }
        assert_eq!(breaker.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(stores.index.head(&ledger()).await.unwrap().is_none());
        assert_eq!(
            breaker.state(),
            CircuitState::Closed,
            "the read probe closed it"
        );
        faults.plan(0, super::super::fault::Fault::FailBefore);
        stores.index.create_ledger(&ledger()).await.unwrap_err();
        assert_eq!(
            breaker.state(),
            CircuitState::Open,
            "one more failed write reopens the circuit"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        stores.index.create_ledger(&ledger()).await.unwrap();
        stores.index.head(&ledger()).await.unwrap().unwrap();
        faults.plan(0, super::super::fault::Fault::FailBefore);
        stores.index.create_ledger(&ledger()).await.unwrap_err();
        assert_eq!(
            breaker.state(),
            CircuitState::Closed,
            "a write that succeeded cleared the count"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn read_failures_alone_still_need_consecutive_failures() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, faults, breaker) = guarded_local(dir.path());
        for _ in 0..5 {
            faults.plan(0, super::super::fault::Fault::FailBefore);
            stores.index.head(&ledger()).await.unwrap_err();
            stores.index.head(&ledger()).await.unwrap();
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
    }
}
