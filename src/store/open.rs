//! The one place that opens the configured backend (the server, `ledger-init` and
//! `ledger-verify` all call [`open`]).

use std::path::PathBuf;

use super::aws::{self, AwsSettings};
use super::local::LocalStore;
use super::{Backend, BackendMetrics, Stores};

/// Which backend to open, and where: built by [`crate::config`] from flags and environment.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    /// The embedded store in this directory, with a page cache of `cache_bytes` when opened
    /// for writing.
    Local {
        data_dir: PathBuf,
        cache_bytes: usize,
    },
    /// S3 and DynamoDB.
    Aws(AwsSettings),
}

impl BackendConfig {
    pub fn backend(&self) -> Backend {
        match self {
            BackendConfig::Local { .. } => Backend::Local,
            BackendConfig::Aws(_) => Backend::Aws,
        }
    }
}

/// Whether the opener may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Create what is missing; appends allowed.
    ReadWrite,
    /// Change nothing (verification). The embedded store then needs an existing store that no
    /// other process holds open; the AWS backend is the same either way (IAM decides).
    ReadOnly,
}

/// Why a backend could not be opened. Each is something the operator must fix.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The embedded store is held open by another process (redb admits one).
    #[error(
        "the data directory {0} is in use by another ledger process; stop it or choose another ELEANOR_LEDGER_DATA_DIR"
    )]
    InUse(PathBuf),
    /// The embedded store's directory or file cannot be created or read.
    #[error("cannot open the embedded store at {path}: {detail}")]
    Io { path: PathBuf, detail: String },
    /// The AWS settings cannot make clients.
    #[error("invalid AWS backend settings: {0}")]
    InvalidSettings(String),
}

/// Opens the stores `config` names. Sends no request to AWS: call the stores' `check` to prove
/// the bucket and table are reachable.
pub async fn open(
    config: &BackendConfig,
    access: Access,
    metrics: BackendMetrics,
) -> Result<Stores, OpenError> {
    match (config, access) {
        (
            BackendConfig::Local {
                data_dir,
                cache_bytes,
            },
            Access::ReadWrite,
        ) => Ok(LocalStore::open_with_cache(data_dir, *cache_bytes, metrics)?.into_stores()),
        (BackendConfig::Local { data_dir, .. }, Access::ReadOnly) => {
            Ok(LocalStore::open_read_only(data_dir, metrics)?.into_stores())
        }
        (BackendConfig::Aws(settings), _) => aws::connect(settings, metrics)
            .await
            .map_err(|aws::ConnectError::InvalidSettings(e)| OpenError::InvalidSettings(e)),
    }
}
