//! A circuit breaker per storage dependency (S3, DynamoDB, the embedded store).
//!
//! After `threshold` consecutive calls fail with [`StoreError::Unavailable`], the circuit
//! opens: for `cooldown`, every call fails at once, without waiting on a dependency that is
//! down (appends answer `503 dependency_unavailable` quickly instead of piling up). Then one
//! call is let through as a probe (half-open): success closes the circuit, failure opens it
//! again. Other outcomes (success, conflicts, corruption) reset the failure count: they prove
//! the dependency answers.
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
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe call is in flight; everything else fails fast until it reports.
    HalfOpen,
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
            inner: Mutex::new(Inner::Closed { failures: 0 }),
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
            Inner::HalfOpen => CircuitState::HalfOpen,
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
            Inner::HalfOpen => CircuitState::HalfOpen,
        };
        self.gauge.set(state.gauge_value());
    }

    /// Whether a call may go ahead now.
    fn admit(&self) -> StoreResult<()> {
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { .. } => Ok(()),
            Inner::Open { until } if Instant::now() >= until => {
                self.set(&mut inner, Inner::HalfOpen);
                Ok(())
            }
            Inner::Open { .. } | Inner::HalfOpen => Err(StoreError::Refused {
                dependency: self.dependency,
            }),
        }
    }

    fn record<T>(&self, result: &StoreResult<T>) {
        let failed = matches!(result, Err(StoreError::Unavailable { .. }));
        let mut inner = self.lock();
        let next = match (&*inner, failed) {
            (_, false) => Inner::Closed { failures: 0 },
            (Inner::Closed { failures }, true) if failures + 1 < self.threshold => Inner::Closed {
                failures: failures + 1,
            },
            (Inner::Closed { .. } | Inner::HalfOpen, true) => {
                tracing::warn!(dependency = self.dependency, cooldown = ?self.cooldown, "circuit opened");
                Inner::Open {
                    until: Instant::now() + self.cooldown,
                }
            }
            // A call admitted before the circuit opened: the circuit is already open.
            (Inner::Open { until }, true) => Inner::Open { until: *until },
        };
        if matches!(*inner, Inner::Open { .. } | Inner::HalfOpen)
            && matches!(next, Inner::Closed { .. })
        {
            tracing::info!(dependency = self.dependency, "circuit closed");
        }
        self.set(&mut inner, next);
    }

    async fn call<T>(&self, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        self.admit()?;
        // A call dropped before it finishes (a request timeout, a client that went away) never
        // reaches `record`; if it was the half-open probe, the guard reopens the circuit, or
        // every later call would be refused for good.
        let mut guard = Unfinished(Some(self));
        let result = call.await;
        guard.0 = None;
        self.record(&result);
        result
    }

    /// A probe that never reported counts as a failed probe.
    fn abandoned(&self) {
        let mut inner = self.lock();
        if matches!(*inner, Inner::HalfOpen) {
            self.set(
                &mut inner,
                Inner::Open {
                    until: Instant::now() + self.cooldown,
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
        breaker.call(run(Part::All))
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
            b.call(async { down() }).await.unwrap_err();
        }
        assert_eq!(b.state(), CircuitState::Closed, "below the threshold");
        b.call(async { down() }).await.unwrap_err();
        assert_eq!(b.state(), CircuitState::Open);
        let mut reached = false;
        let fast = b
            .call(async {
                reached = true;
                Ok(())
            })
            .await;
        assert!(
            fast.is_err() && !reached,
            "an open circuit does not call the dependency"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        b.call(async { Ok(()) }).await.unwrap();
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
            b.call(async { down() }).await.unwrap_err();
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        let probe = b.call(std::future::pending::<StoreResult<()>>());
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
        b.call(async { Ok(()) }).await.unwrap();
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
            b.call(async { down() }).await.unwrap_err();
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        b.call(async { down() }).await.unwrap_err();
        assert_eq!(b.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(6)).await;
        b.call(async { Err::<(), _>(StoreError::Corrupt("x".into())) })
            .await
            .unwrap_err();
        assert_eq!(b.state(), CircuitState::Closed, "the dependency answered");
    }
}
