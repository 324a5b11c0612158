//! `ledger-init`: prepare an environment once (the runbook's
//! `create_ledger_ddb_table.py --wait --init-meta`). Idempotent: a second run changes nothing
//! and says so.
//!
//! Exit codes: 0 ready (whether or not anything changed); 1 a store could not be reached or
//! refused a call; 2 usage or configuration error; 3 something exists but is not usable as it
//! is (the bucket lacks Object Lock, the table has another key schema or did not become
//! active in time): the message says what to fix.

use std::fmt::Write as _;
use std::time::Duration;

use clap::Parser;

use crate::config::{ConfigError, StorageArgs};
use crate::store::aws::admin::{AwsAdmin, PENDING_RULE_ID, Provisioned, TableState};
use crate::store::{self, Access, BackendConfig, BackendMetrics, OpenError, Stores};

/// Stands in for a bucket name that was not given; never contacted.
const UNSET_BUCKET: &str = "unset-bucket";

/// Flags and environment variables of `ledger-init`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ledger-init",
    version,
    about = "Create the ledger index table and a ledger's META item, and check the entry bucket."
)]
pub struct InitArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Wait until the table is ACTIVE.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 300)]
    pub wait_timeout_secs: u64,
    /// Create META (seq_counter 0, last_hash genesis) for ELEANOR_LEDGER_DDB_LEDGER_ID if absent.
    #[arg(long)]
    pub init_meta: bool,
    /// Create the entry bucket with Object Lock if it does not exist (development only).
    #[arg(long)]
    pub create_bucket: bool,
    /// Write a new Ed25519 signing key to FILE (mode 0600, never overwriting) for
    /// ELEANOR_LEDGER_SIGNING_KEY_FILE, print its public key and key id, and do nothing else.
    #[arg(long, value_name = "FILE")]
    pub gen_key: Option<std::path::PathBuf>,
}

/// How `ledger-init` failed; each maps to its exit code.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotUsable(String),
}

impl InitError {
    pub fn exit_code(&self) -> u8 {
        match self {
            InitError::Unavailable(_) => 1,
            InitError::Config(_) => 2,
            InitError::NotUsable(_) => 3,
        }
    }
}

/// Runs `ledger-init`; returns the report to print (one line per step).
pub async fn run(args: InitArgs) -> Result<String, InitError> {
    if let Some(path) = &args.gen_key {
        let public = crate::keyfile::write_new_key(path).map_err(|e| InitError::NotUsable(e.0))?;
        let mut report = String::new();
        line(
            &mut report,
            format!("signing key written to {} (mode 0600)", path.display()),
        );
        line(&mut report, format!("public_key {}", public.to_hex()));
        line(&mut report, format!("key_id {}", public.id()));
        return Ok(report);
    }
    let ledger = args.storage.default_ledger()?;
    let mut report = String::new();
    let mut changed = false;
    // The runbook's command sets only the table, region and ledger: without a bucket, the
    // bucket check is skipped (and said so); the server itself needs the bucket.
    let mut storage = args.storage.clone();
    let bucket_unset = storage
        .s3_bucket
        .as_deref()
        .is_none_or(|b| b.trim().is_empty());
    if bucket_unset {
        storage.s3_bucket = Some(UNSET_BUCKET.into());
    }
    let config = storage.backend_config(Duration::from_secs(30))?;
    // What a fresh data directory lacks, to say what opening it created.
    let local_before = match &config {
        BackendConfig::Local { data_dir, .. } => Some(LocalFiles::of(data_dir)),
        BackendConfig::Aws(_) => None,
    };
    match &config {
        BackendConfig::Local { .. } => {}
        BackendConfig::Aws(settings) => {
            let admin = AwsAdmin::connect(settings, BackendMetrics::unregistered())
                .await
                .map_err(|e| InitError::Config(ConfigError(e.to_string())))?;
            if bucket_unset {
                line(
                    &mut report,
                    "bucket: ELEANOR_LEDGER_S3_BUCKET is not set, so it was not checked (the server needs it)",
                );
            } else {
                changed |=
                    provision_bucket(&admin, args.create_bucket, &settings.bucket, &mut report)
                        .await?;
            }
            changed |= provision_table(&admin, &args, &settings.table, &mut report).await?;
        }
    }
    let stores = store::open(&config, Access::ReadWrite, BackendMetrics::unregistered())
        .await
        .map_err(|e| match e {
            e @ OpenError::InvalidSettings(_) => InitError::Config(ConfigError(e.to_string())),
            e @ (OpenError::InUse(_) | OpenError::Io { .. }) => InitError::NotUsable(e.to_string()),
        })?;
    if let (BackendConfig::Local { data_dir, .. }, Some(before)) = (&config, local_before) {
        let created = before.created_by_open(data_dir);
        changed |= !created.is_empty();
        line(
            &mut report,
            if created.is_empty() {
                format!(
                    "embedded store at {}: already present, ready",
                    data_dir.display()
                )
            } else {
                format!(
                    "embedded store at {}: created {}",
                    data_dir.display(),
                    created.join(", ")
                )
            },
        );
    }
    if args.init_meta {
        changed |= init_meta(&stores, &ledger, &mut report).await?;
    }
    line(
        &mut report,
        if changed {
            "done: changes made"
        } else {
            "done: nothing to change"
        },
    );
    Ok(report)
}

/// Which parts of an embedded store exist in a data directory.
struct LocalFiles {
    dir: bool,
    db_file: bool,
    keys_dir: bool,
}

impl LocalFiles {
    fn of(data_dir: &std::path::Path) -> LocalFiles {
        LocalFiles {
            dir: data_dir.is_dir(),
            db_file: data_dir.join(store::local::DB_FILE).is_file(),
            keys_dir: data_dir.join(store::local::KEYS_DIR).is_dir(),
        }
    }

    /// What exists now that did not before (`self`), named for the report.
    fn created_by_open(&self, data_dir: &std::path::Path) -> Vec<String> {
        let now = LocalFiles::of(data_dir);
        let mut created = Vec::new();
        if now.dir && !self.dir {
            created.push("the directory".to_owned());
        }
        if now.db_file && !self.db_file {
            created.push(format!(
                "the store file {} (entries, index and heads)",
                store::local::DB_FILE
            ));
        }
        if now.keys_dir && !self.keys_dir {
            created.push(format!(
                "the idempotency key index {}/",
                store::local::KEYS_DIR
            ));
        }
        created
    }
}

fn line(report: &mut String, text: impl std::fmt::Display) {
    let _ = writeln!(report, "{text}");
}

fn unavailable(e: impl std::fmt::Display) -> InitError {
    InitError::Unavailable(e.to_string())
}

async fn provision_bucket(
    admin: &AwsAdmin,
    create: bool,
    bucket: &str,
    report: &mut String,
) -> Result<bool, InitError> {
    let mut changed = false;
    if create && admin.create_bucket().await.map_err(unavailable)? == Provisioned::Created {
        changed = true;
        line(report, format!("bucket {bucket}: created with Object Lock"));
    }
    let problems = admin
        .bucket_state()
        .await
        .map_err(unavailable)?
        .problems(bucket);
    if !problems.is_empty() {
        return Err(InitError::NotUsable(problems.join("; ")));
    }
    line(report, format!("bucket {bucket}: Object Lock enabled"));
    if create && admin.ensure_pending_rule().await.map_err(unavailable)? == Provisioned::Created {
        changed = true;
        line(
            report,
            format!("bucket {bucket}: lifecycle rule {PENDING_RULE_ID} added"),
        );
    } else if admin.has_pending_rule().await.map_err(unavailable)? {
        line(
            report,
            format!("bucket {bucket}: lifecycle rule {PENDING_RULE_ID} present"),
        );
    } else {
        line(
            report,
            format!(
                "bucket {bucket}: warning: no lifecycle rule {PENDING_RULE_ID}; pending batch objects are kept (and billed) until it exists (docs/OPERATIONS.md, \"Pending batch objects\")"
            ),
        );
    }
    Ok(changed)
}

async fn provision_table(
    admin: &AwsAdmin,
    args: &InitArgs,
    table: &str,
    report: &mut String,
) -> Result<bool, InitError> {
    let mut changed = false;
    match admin.ensure_table().await.map_err(unavailable)? {
        Provisioned::Created => {
            changed = true;
            line(
                report,
                format!("table {table}: created (ledger_id HASH S, seq RANGE S, on-demand)"),
            );
        }
        Provisioned::AlreadyExisted => line(report, format!("table {table}: already exists")),
    }
    let state = if args.wait {
        admin
            .wait_for_table(Duration::from_secs(args.wait_timeout_secs))
            .await
            .map_err(unavailable)?
    } else {
        admin.table_state().await.map_err(unavailable)?
    };
    match state {
        TableState::Active => line(report, format!("table {table}: ACTIVE")),
        TableState::Creating if !args.wait => line(
            report,
            format!("table {table}: CREATING (use --wait to wait)"),
        ),
        TableState::WrongKeySchema(schema) => {
            return Err(InitError::NotUsable(format!(
                "table {table} exists with key schema {schema}; the ledger needs ledger_id (HASH, S) and seq (RANGE, S): use another table name"
            )));
        }
        other => {
            return Err(InitError::NotUsable(format!(
                "table {table} is not usable: {other:?}"
            )));
        }
    }
    Ok(changed)
}

async fn init_meta(
    stores: &Stores,
    ledger: &crate::chain::entry::LedgerId,
    report: &mut String,
) -> Result<bool, InitError> {
    let before = stores.index.head(ledger).await.map_err(unavailable)?;
    let meta = stores
        .index
        .create_ledger(ledger)
        .await
        .map_err(unavailable)?;
    let created = before.is_none();
    line(
        report,
        if created {
            format!(
                "ledger {ledger}: META created (seq_counter {}, last_hash {})",
                meta.seq_counter, meta.last_hash
            )
        } else {
            format!(
                "ledger {ledger}: META already present (seq_counter {}), unchanged",
                meta.seq_counter
            )
        },
    );
    Ok(created)
}
