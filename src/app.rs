//! Startup and shutdown: open the configured backend, check it answers, bind, serve until
//! told to stop, then drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::chain::checkpoint::Signer;
use crate::config::Config;
use crate::http::auth::Authenticator;
use crate::http::metrics::HttpMetrics;
use crate::http::serve::{ConnectionLimits, ConnectionMetrics, serve};
use crate::http::{AppState, Shared, router};
use crate::keyfile::{self, KeySource};
use crate::ledger::{Ledger, LedgerMetrics};
use crate::store::{self, Access, BackendConfig, BackendMetrics, StoreError, Stores, breaker};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration or environment is wrong in a way the operator must fix (exit 2).
    #[error("{0}")]
    Config(String),
    /// Anything else that stopped startup (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// A bound, ready-to-serve service.
pub struct Application {
    listener: TcpListener,
    connections: ConnectionLimits,
    connection_metrics: ConnectionMetrics,
    state: AppState,
    /// Retrying the storage part of startup, if storage did not answer at first.
    startup: Option<JoinHandle<()>>,
}

impl Application {
    /// Opens storage, checks both stores answer, and binds the listener
    /// (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    pub async fn build(config: Config) -> Result<Application, StartError> {
        let registry = prometheus::Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .map_err(registry_failed)?;
        let backend_metrics = BackendMetrics::new(&registry).map_err(registry_failed)?;
        let stores = store::open(&config.backend, Access::ReadWrite, backend_metrics)
            .await
            .map_err(|e| StartError::Config(e.to_string()))?;
        Application::over(config, stores, registry).await
    }

    /// [`build`](Self::build) over stores already open (`build` opens the configured ones; a
    /// test may wrap them first), whose metrics are in `registry`.
    pub async fn over(
        config: Config,
        stores: Stores,
        registry: prometheus::Registry,
    ) -> Result<Application, StartError> {
        let failed = registry_failed;
        let (stores, circuits) =
            breaker::guard(&stores, config.breaker, &registry).map_err(failed)?;
        let mut config = config;
        if let Some(path) = &config.default_signing_key {
            config.ledger.signer = Some(Arc::new(default_signing_key(path)?));
        }
        match &config.ledger.signer {
            None if matches!(config.backend, BackendConfig::Aws(_)) => tracing::warn!(
                "signing is off: ELEANOR_LEDGER_SIGNING_KEY_FILE is unset, so checkpoints and receipts are not signed and /health shows signing: off; set it (ledger-init --gen-key FILE writes a key)"
            ),
            None => tracing::warn!(
                "signing is off (ELEANOR_LEDGER_SIGNING=off): checkpoints and receipts are not signed"
            ),
            Some(signer) => tracing::info!(
                key_id = %signer.key_id(),
                public_key = %signer.public_key().to_hex(),
                checkpoint_interval_secs = config.ledger.checkpoint_interval.as_secs(),
                "signing checkpoints and receipts"
            ),
        }
        let ledger = Ledger::new(
            stores,
            config.ledger.clone(),
            LedgerMetrics::new(&registry).map_err(failed)?,
        );
        let started = Arc::new(AtomicBool::new(false));
        let startup = match start_storage(&ledger).await {
            Ok(()) => {
                started.store(true, Ordering::SeqCst);
                None
            }
            Err(e) if e.retryable => {
                tracing::warn!(error = %e.message, "storage does not answer yet: serving /livez, /health answers 503 until it does, retrying in the background");
                Some(tokio::spawn(retry_start_storage(
                    ledger.clone(),
                    started.clone(),
                )))
            }
            Err(e) => return Err(StartError::Failed(e.message)),
        };
        let auth = match &config.auth {
            None => {
                if !config.listen.ip().is_loopback() {
                    tracing::warn!(
                        listen = %config.listen,
                        "AUTHENTICATION IS OFF on a non-loopback address: anyone who can reach it can append and read; set ELEANOR_LEDGER_AUTH=jwt"
                    );
                }
                None
            }
            Some((file, leeway)) => {
                let auth =
                    Arc::new(Authenticator::load(file, *leeway).map_err(StartError::Config)?);
                // The runbook checks a restart after a secret rotation with
                // `grep -i "secret.*refresh"`: the first load says so as a change does.
                tracing::info!(file = %file.display(), "jwt secret refreshed: keys file loaded at startup");
                auth.watch();
                Some(auth)
            }
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| StartError::Config(format!("cannot listen on {}: {e}", config.listen)))?;
        let metrics = Arc::new(HttpMetrics::new(&registry).map_err(failed)?);
        Ok(Application {
            listener,
            connections: config.connections,
            connection_metrics: ConnectionMetrics::new(&registry).map_err(failed)?,
            startup,
            state: AppState::new(Shared {
                ledger,
                metrics,
                registry,
                limits: config.limits,
                circuits,
                auth,
                started,
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops accepting, answers requests in flight,
    /// lets every queued batch commit, and returns.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let ledger = self.state.ledger.clone();
        tracing::info!(addr = %self.local_addr(), backend = %ledger.stores().backend, "serving");
        let interval = ledger.options().checkpoint_interval;
        let checkpoints = tokio::spawn(
            ledger
                .clone()
                .run_checkpoints(interval, std::future::pending()),
        );
        serve(
            self.listener,
            router(self.state),
            self.connections,
            self.connection_metrics,
            shutdown,
        )
        .await;
        // A round cut short leaves each checkpoint object whole or absent (write-once).
        checkpoints.abort();
        if let Some(startup) = self.startup {
            startup.abort();
        }
        ledger.shutdown().await;
        ledger.stores().objects.close().await;
        tracing::info!("stopped");
    }
}

/// The embedded backend's own signing key in its data dir, created (and its public key logged)
/// on first start.
fn default_signing_key(path: &std::path::Path) -> Result<Signer, StartError> {
    let (signer, source) =
        keyfile::load_or_create(path).map_err(|e| StartError::Config(e.to_string()))?;
    if source == KeySource::Created {
        tracing::info!(
            file = %path.display(),
            key_id = %signer.key_id(),
            public_key = %signer.public_key().to_hex(),
            "created a signing key: give auditors this public key (GET /v1/keys serves it), and back the file up with the data"
        );
    }
    Ok(signer)
}

/// Why the storage part of startup failed, and whether trying again can help.
struct StorageStartError {
    message: String,
    /// Storage did not answer (an outage, a network partition): worth retrying. Otherwise
    /// (corrupt data) it is not.
    retryable: bool,
}

/// The part of startup that needs storage: both stores answer. `/health` is `503` until it
/// does. Nothing here walks the ledgers, so startup costs the same with one ledger or a
/// million: a batch an earlier run committed but did not write out is rolled forward by the
/// first append, read, verification, export or checkpoint of its ledger (`docs/PROTOCOL.md`,
/// "Crash points").
async fn start_storage(ledger: &Ledger) -> Result<(), StorageStartError> {
    let stores = ledger.stores();
    let (objects, index) = tokio::join!(stores.objects.check(), stores.index.check());
    let (objects_what, index_what) = stores.backend.dependencies();
    for (what, result) in [(objects_what, objects), (index_what, index)] {
        result.map_err(|e| StorageStartError {
            retryable: !matches!(e, StoreError::Corrupt(_)),
            message: format!("{what} is not usable: {e}"),
        })?;
    }
    Ok(())
}

/// Retries [`start_storage`] (1 s, doubling to 30 s between tries) until it succeeds, then
/// marks the service started.
async fn retry_start_storage(ledger: Ledger, started: Arc<AtomicBool>) {
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::time::sleep(wait).await;
        match start_storage(&ledger).await {
            Ok(()) => {
                started.store(true, Ordering::SeqCst);
                tracing::info!("storage answers: startup finished, /health follows the stores");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e.message, retry_in_secs = wait.as_secs(), "storage still does not answer");
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[expect(clippy::needless_pass_by_value, reason = "a map_err callback")]
fn registry_failed(e: prometheus::Error) -> StartError {
    StartError::Failed(format!("metrics registry: {e}"))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
