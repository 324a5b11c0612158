//! Configuration: one typed [`Config`] from command-line flags with `ELEANOR_LEDGER_*`
//! environment fallbacks, validated at startup so a bad setting fails in one clear sentence.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

use crate::chain::entry::LedgerId;
use crate::chain::entry::{ENTRY_OVERHEAD, MAX_KEY_OVERHEAD};
use crate::http::Limits;
use crate::http::serve::ConnectionLimits;
use crate::ledger::Options;
use crate::store::aws::AwsSettings;
use crate::store::breaker::BreakerSettings;
use crate::store::{Backend, BackendConfig, LockMode};

/// Who may call the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// No authentication (local development; warned about on non-loopback addresses).
    None,
    /// Bearer JWTs checked against `ELEANOR_LEDGER_JWT_KEYS_FILE`.
    Jwt,
}

/// Whether checkpoints and receipts are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SigningMode {
    /// With the key in `ELEANOR_LEDGER_SIGNING_KEY_FILE`; unset, with `signing.key` in the
    /// embedded backend's data dir (created on first start), and off (warned about) on aws.
    Auto,
    /// Nothing is signed: `POST .../checkpoints` answers `409 signing_disabled`.
    Off,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the ledger is stored: flags and environment shared by every binary.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// Storage backend.
    #[arg(
        long,
        env = "ELEANOR_LEDGER_BACKEND",
        value_enum,
        default_value = "local"
    )]
    pub backend: Backend,
    /// Directory of the embedded store (local backend).
    #[arg(long, env = "ELEANOR_LEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The embedded store's page cache, in MiB (local backend): memory it holds once warm.
    #[arg(long, env = "ELEANOR_LEDGER_CACHE_MIB", default_value_t = 32)]
    pub cache_mib: usize,
    /// S3 bucket with Object Lock for entry objects (aws backend).
    #[arg(long, env = "ELEANOR_LEDGER_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// Key prefix under which the service keeps its objects (aws backend), e.g. `ledger/`.
    #[arg(long, env = "ELEANOR_LEDGER_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,
    /// Object Lock mode of entry objects.
    #[arg(
        long,
        env = "ELEANOR_LEDGER_S3_LOCK_MODE",
        value_enum,
        default_value = "COMPLIANCE"
    )]
    pub s3_lock_mode: LockMode,
    /// Days each entry object stays locked.
    #[arg(long, env = "ELEANOR_LEDGER_RETENTION_DAYS", default_value_t = 2557)]
    pub retention_days: u32,
    /// aws backend: write a pending batch over 768 bytes of records as one S3 object that
    /// `META` points to (`docs/PROTOCOL.md`). `false` keeps every batch inline in `META`, as
    /// versions before it did: set it while replicas of such a version still run.
    #[arg(
        long,
        env = "ELEANOR_LEDGER_PENDING_OBJECTS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub pending_objects: bool,
    /// DynamoDB index table (aws backend).
    #[arg(long, env = "ELEANOR_LEDGER_DDB_TABLE")]
    pub ddb_table: Option<String>,
    /// AWS region of the table and bucket.
    #[arg(long, env = "ELEANOR_LEDGER_DDB_REGION")]
    pub ddb_region: Option<String>,
    /// The ledger `ledger-init --init-meta` creates (the runbook's `default`).
    #[arg(long, env = "ELEANOR_LEDGER_DDB_LEDGER_ID", default_value = "default")]
    pub ddb_ledger_id: String,
    /// Endpoint override for S3 and DynamoDB emulators; leave unset in production.
    #[arg(long, env = "ELEANOR_LEDGER_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
}

/// Flags and environment variables of `ledger-server`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ledger-server",
    version,
    about = "The eleanor-ledger audit ledger service."
)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "ELEANOR_LEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Create a ledger on its first append; when false, appends to unknown ledgers get 404.
    #[arg(long, env = "ELEANOR_LEDGER_AUTO_CREATE", default_value_t = true, action = ArgAction::Set)]
    pub auto_create: bool,
    /// Most ledgers appends may create; an append that would create one more is refused with
    /// `403 ledger_limit_reached` (appends to existing ledgers go on).
    #[arg(long, env = "ELEANOR_LEDGER_MAX_LEDGERS", default_value_t = 100_000)]
    pub max_ledgers: u64,
    /// Largest append body accepted, in bytes.
    #[arg(
        long,
        env = "ELEANOR_LEDGER_MAX_RECORD_BYTES",
        default_value_t = 262_144
    )]
    pub max_record_bytes: usize,
    /// Most records in one group-commit batch.
    #[arg(long, env = "ELEANOR_LEDGER_BATCH_MAX_RECORDS", default_value_t = 1024)]
    pub batch_max_records: usize,
    /// Most bytes of entries in one batch (one META update carries them all).
    #[arg(
        long,
        env = "ELEANOR_LEDGER_BATCH_MAX_BYTES",
        default_value_t = 327_680
    )]
    pub batch_max_bytes: usize,
    /// Most records in one batch append request (`POST .../records:batch`); at most
    /// ELEANOR_LEDGER_BATCH_MAX_RECORDS, since a request is committed in one batch.
    #[arg(
        long,
        env = "ELEANOR_LEDGER_BATCH_REQUEST_MAX_RECORDS",
        default_value_t = 1000
    )]
    pub batch_request_max_records: usize,
    /// Largest batch append request body, in bytes.
    #[arg(
        long,
        env = "ELEANOR_LEDGER_BATCH_REQUEST_MAX_BYTES",
        default_value_t = 327_680
    )]
    pub batch_request_max_bytes: usize,
    /// Microseconds a batch waits for more appends after its first; 0 takes only what is queued.
    #[arg(long, env = "ELEANOR_LEDGER_BATCH_LINGER_US", default_value_t = 0)]
    pub batch_linger_us: u64,
    /// Appends that may wait per ledger before new ones are refused with 503.
    #[arg(long, env = "ELEANOR_LEDGER_QUEUE_DEPTH", default_value_t = 4096)]
    pub queue_depth: usize,
    /// Milliseconds without an append after which a ledger's committer ends (and its memory
    /// is freed); the next append starts another.
    #[arg(
        long,
        env = "ELEANOR_LEDGER_COMMITTER_IDLE_MS",
        default_value_t = 60_000
    )]
    pub committer_idle_ms: u64,
    /// Time allowed for one request (verification excepted), in milliseconds.
    #[arg(
        long,
        env = "ELEANOR_LEDGER_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub request_timeout_ms: u64,
    /// API requests processed at once; more are refused at once with `503 server_busy`.
    #[arg(long, env = "ELEANOR_LEDGER_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Time a client has to send a request head, counted from the connection's start (its
    /// first request) or from the head's first byte, in milliseconds.
    #[arg(
        long,
        env = "ELEANOR_LEDGER_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,
    /// Time an idle kept-alive connection is held open, in milliseconds (keep it longer
    /// than the idle timeout of a load balancer in front, 60 s on an AWS ALB).
    #[arg(long, env = "ELEANOR_LEDGER_IDLE_TIMEOUT_MS", default_value_t = 75_000)]
    pub idle_timeout_ms: u64,
    /// Most client connections open at once; at the cap a new connection closes the oldest
    /// one with no request in progress. Default 10000, and never more than the descriptor
    /// limit (raised to its hard limit at startup) less 256.
    #[arg(long, env = "ELEANOR_LEDGER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Authentication of `/v1` requests.
    #[arg(long, env = "ELEANOR_LEDGER_AUTH", value_enum, default_value = "none")]
    pub auth: AuthMode,
    /// JSON file of JWT verification keys (`ELEANOR_LEDGER_AUTH=jwt`); re-read when it changes.
    #[arg(long, env = "ELEANOR_LEDGER_JWT_KEYS_FILE")]
    pub jwt_keys_file: Option<PathBuf>,
    /// Clock leeway for token expiry (`exp`), not-before (`nbf`) and issue time (`iat`), in
    /// seconds.
    #[arg(long, env = "ELEANOR_LEDGER_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
    /// With auth on, `/metrics` needs a token with the metrics, auditor or admin role (its
    /// labels name ledgers); false makes it public. No effect with auth off.
    #[arg(long, env = "ELEANOR_LEDGER_METRICS_AUTH", default_value_t = true, action = ArgAction::Set)]
    pub metrics_auth: bool,
    /// Ed25519 signing key for checkpoints and receipts: a file holding the 32-byte seed, raw
    /// or as 64 hex characters, mode 0600 or stricter (`ledger-init --gen-key FILE` writes one).
    /// Unset: the local backend signs with `signing.key` in its data dir, created on first
    /// start; the aws backend signs nothing (a startup warning, `signing: off` in `/health`).
    #[arg(long, env = "ELEANOR_LEDGER_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// `auto` signs as ELEANOR_LEDGER_SIGNING_KEY_FILE says; `off` signs nothing.
    #[arg(
        long,
        env = "ELEANOR_LEDGER_SIGNING",
        value_enum,
        default_value = "auto"
    )]
    pub signing: SigningMode,
    /// Seconds between signed checkpoints of ledgers whose head moved; 0 turns them off
    /// (`POST .../checkpoints` still works).
    #[arg(
        long,
        env = "ELEANOR_LEDGER_CHECKPOINT_INTERVAL",
        default_value_t = 300
    )]
    pub checkpoint_interval: u64,
    /// Consecutive storage failures that open a dependency's circuit breaker.
    #[arg(long, env = "ELEANOR_LEDGER_CIRCUIT_FAILURES", default_value_t = 5)]
    pub circuit_failures: u32,
    /// How long an open circuit fails calls fast before probing again, in milliseconds.
    #[arg(
        long,
        env = "ELEANOR_LEDGER_CIRCUIT_COOLDOWN_MS",
        default_value_t = 5_000
    )]
    pub circuit_cooldown_ms: u64,
    /// Instead of serving: ask the server this configuration describes for `GET /livez` (on
    /// loopback when it listens on every address) and exit 0 on 200, else 1. The Dockerfile's
    /// HEALTHCHECK, which needs no curl in the image.
    #[arg(long)]
    pub probe: bool,
    /// Log format.
    #[arg(
        long,
        env = "ELEANOR_LEDGER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// Everything the server needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub backend: BackendConfig,
    pub ledger: Options,
    pub limits: Limits,
    pub connections: ConnectionLimits,
    pub breaker: BreakerSettings,
    /// With no key configured on the local backend (and signing not off): the key file the
    /// server loads at startup, creating it on first start ([`crate::keyfile::load_or_create`]).
    pub default_signing_key: Option<PathBuf>,
    /// The JWT keys file and clock leeway, when auth is on.
    pub auth: Option<(PathBuf, Duration)>,
    pub log_format: LogFormat,
}

/// A setting that cannot work, in one sentence that names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// DynamoDB items hold at most 400 KiB and a batch's entries ride in the `META` item.
const AWS_MAX_BATCH_BYTES: usize = 380_000;

fn bounded<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    if min <= value && value <= max {
        Ok(value)
    } else {
        Err(ConfigError(format!(
            "{name} must be between {min} and {max}, got {value}"
        )))
    }
}

impl ServerArgs {
    pub fn into_config(self) -> Result<Config, ConfigError> {
        bounded(
            "ELEANOR_LEDGER_MAX_RECORD_BYTES",
            self.max_record_bytes,
            2,
            16 * 1024 * 1024,
        )?;
        bounded(
            "ELEANOR_LEDGER_BATCH_MAX_RECORDS",
            self.batch_max_records,
            1,
            10_000,
        )?;
        bounded(
            "ELEANOR_LEDGER_BATCH_REQUEST_MAX_RECORDS",
            self.batch_request_max_records,
            1,
            self.batch_max_records,
        )?;
        bounded(
            "ELEANOR_LEDGER_BATCH_REQUEST_MAX_BYTES",
            self.batch_request_max_bytes,
            2,
            16 * 1024 * 1024,
        )?;
        bounded(
            "ELEANOR_LEDGER_BATCH_LINGER_US",
            self.batch_linger_us,
            0,
            1_000_000,
        )?;
        bounded("ELEANOR_LEDGER_QUEUE_DEPTH", self.queue_depth, 1, 1_000_000)?;
        bounded(
            "ELEANOR_LEDGER_MAX_LEDGERS",
            self.max_ledgers,
            1,
            1_000_000_000,
        )?;
        bounded(
            "ELEANOR_LEDGER_COMMITTER_IDLE_MS",
            self.committer_idle_ms,
            10,
            3_600_000,
        )?;
        bounded(
            "ELEANOR_LEDGER_REQUEST_TIMEOUT_MS",
            self.request_timeout_ms,
            100,
            600_000,
        )?;
        bounded(
            "ELEANOR_LEDGER_MAX_IN_FLIGHT",
            self.max_in_flight,
            1,
            1_000_000,
        )?;
        bounded(
            "ELEANOR_LEDGER_CIRCUIT_FAILURES",
            self.circuit_failures,
            1,
            1000,
        )?;
        bounded(
            "ELEANOR_LEDGER_CIRCUIT_COOLDOWN_MS",
            self.circuit_cooldown_ms,
            10,
            600_000,
        )?;
        let entry_overhead = ENTRY_OVERHEAD + MAX_KEY_OVERHEAD;
        if self.batch_max_bytes < self.max_record_bytes + entry_overhead {
            return Err(ConfigError(format!(
                "ELEANOR_LEDGER_BATCH_MAX_BYTES ({}) must be at least ELEANOR_LEDGER_MAX_RECORD_BYTES + {entry_overhead} ({}) so that every record fits in a batch",
                self.batch_max_bytes,
                self.max_record_bytes + entry_overhead
            )));
        }
        let request_timeout = Duration::from_millis(self.request_timeout_ms);
        if Duration::from_micros(self.batch_linger_us) >= request_timeout {
            return Err(ConfigError(format!(
                "ELEANOR_LEDGER_BATCH_LINGER_US ({} µs) must be shorter than ELEANOR_LEDGER_REQUEST_TIMEOUT_MS ({} ms): an append would wait out its whole timeout before its batch even started",
                self.batch_linger_us, self.request_timeout_ms
            )));
        }
        bounded(
            "ELEANOR_LEDGER_HEADER_READ_TIMEOUT_MS",
            self.header_read_timeout_ms,
            100,
            600_000,
        )?;
        bounded(
            "ELEANOR_LEDGER_IDLE_TIMEOUT_MS",
            self.idle_timeout_ms,
            100,
            3_600_000,
        )?;
        if self.max_connections == Some(0) {
            return Err(ConfigError(
                "ELEANOR_LEDGER_MAX_CONNECTIONS must be at least 1".into(),
            ));
        }
        bounded(
            "ELEANOR_LEDGER_CHECKPOINT_INTERVAL",
            self.checkpoint_interval,
            0,
            31_536_000,
        )?;
        let signer = match (self.signing, &self.signing_key_file) {
            (SigningMode::Off, Some(_)) => {
                return Err(ConfigError(
                    "ELEANOR_LEDGER_SIGNING=off and ELEANOR_LEDGER_SIGNING_KEY_FILE contradict each other: unset one".into(),
                ));
            }
            (_, None) => None,
            (SigningMode::Auto, Some(path)) => Some(std::sync::Arc::new(
                crate::keyfile::load_signing_key(path).map_err(|e| ConfigError(e.0))?,
            )),
        };
        bounded(
            "ELEANOR_LEDGER_JWT_LEEWAY_SECS",
            self.jwt_leeway_secs,
            0,
            300,
        )?;
        let auth = match (self.auth, &self.jwt_keys_file) {
            (AuthMode::None, _) => None,
            (AuthMode::Jwt, Some(file)) => {
                Some((file.clone(), Duration::from_secs(self.jwt_leeway_secs)))
            }
            (AuthMode::Jwt, None) => {
                return Err(ConfigError(
                    "ELEANOR_LEDGER_AUTH=jwt needs ELEANOR_LEDGER_JWT_KEYS_FILE to be set".into(),
                ));
            }
        };
        let backend = self.storage.backend_config(request_timeout)?;
        if matches!(backend, BackendConfig::Aws(_)) && self.batch_max_bytes > AWS_MAX_BATCH_BYTES {
            return Err(ConfigError(format!(
                "ELEANOR_LEDGER_BATCH_MAX_BYTES must be at most {AWS_MAX_BATCH_BYTES} with the aws backend (a batch rides in one DynamoDB item, 400 KiB at most), got {}",
                self.batch_max_bytes
            )));
        }
        let default_signing_key = match (&backend, self.signing, &signer) {
            (BackendConfig::Local { data_dir, .. }, SigningMode::Auto, None) => {
                Some(data_dir.join(crate::keyfile::DEFAULT_KEY_FILE))
            }
            _ => None,
        };
        Ok(Config {
            listen: self.listen,
            default_signing_key,
            backend,
            ledger: Options {
                auto_create: self.auto_create,
                max_ledgers: self.max_ledgers,
                batch_max_records: self.batch_max_records,
                batch_max_bytes: self.batch_max_bytes,
                batch_linger: Duration::from_micros(self.batch_linger_us),
                queue_depth: self.queue_depth,
                signer,
                checkpoint_interval: Duration::from_secs(self.checkpoint_interval),
                committer_idle: Duration::from_millis(self.committer_idle_ms),
                // A claim retries (conflicts, throttling) for half the request's deadline at
                // most, leaving the rest to look for an attempt that may have been applied,
                // write the batch out and answer before the request times out.
                claim_deadline: request_timeout / 2,
                ..Options::default()
            },
            limits: Limits {
                max_record_bytes: self.max_record_bytes,
                max_batch_bytes: self.batch_request_max_bytes,
                max_batch_records: self.batch_request_max_records,
                request_timeout,
                protect_metrics: self.metrics_auth,
                max_in_flight: self.max_in_flight,
            },
            connections: ConnectionLimits {
                header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
                idle_timeout: Duration::from_millis(self.idle_timeout_ms),
                max_connections: self.max_connections,
            },
            breaker: BreakerSettings {
                threshold: self.circuit_failures,
                cooldown: Duration::from_millis(self.circuit_cooldown_ms),
            },
            auth,
            log_format: self.log_format,
        })
    }
}

impl StorageArgs {
    /// The backend these settings name, validated; `request_timeout` bounds each AWS call.
    pub fn backend_config(&self, request_timeout: Duration) -> Result<BackendConfig, ConfigError> {
        match self.backend {
            Backend::Local if self.data_dir.as_os_str().is_empty() => Err(ConfigError(
                "ELEANOR_LEDGER_DATA_DIR must not be empty".into(),
            )),
            Backend::Local => Ok(BackendConfig::Local {
                data_dir: self.data_dir.clone(),
                cache_bytes: bounded("ELEANOR_LEDGER_CACHE_MIB", self.cache_mib, 1, 65_536)?
                    * 1024
                    * 1024,
            }),
            Backend::Aws => self.aws_settings(request_timeout).map(BackendConfig::Aws),
        }
    }

    /// The ledger named by `ELEANOR_LEDGER_DDB_LEDGER_ID`.
    pub fn default_ledger(&self) -> Result<LedgerId, ConfigError> {
        LedgerId::parse(&self.ddb_ledger_id).map_err(|e| {
            ConfigError(format!(
                "ELEANOR_LEDGER_DDB_LEDGER_ID {:?} is not a valid ledger id: {e}",
                self.ddb_ledger_id
            ))
        })
    }

    fn aws_settings(&self, request_timeout: Duration) -> Result<AwsSettings, ConfigError> {
        let required = |value: &Option<String>, name: &str| match value.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v.to_owned()),
            _ => Err(ConfigError(format!(
                "ELEANOR_LEDGER_BACKEND=aws needs {name} to be set"
            ))),
        };
        let bucket = required(&self.s3_bucket, "ELEANOR_LEDGER_S3_BUCKET")?;
        let table = required(&self.ddb_table, "ELEANOR_LEDGER_DDB_TABLE")?;
        let region = required(&self.ddb_region, "ELEANOR_LEDGER_DDB_REGION")?;
        let prefix = self.s3_prefix.clone();
        if prefix.starts_with('/') || prefix.contains("//") || prefix.len() > 512 {
            return Err(ConfigError(format!(
                "ELEANOR_LEDGER_S3_PREFIX {prefix:?} must not start with '/' or contain '//' (and at most 512 bytes)"
            )));
        }
        bounded(
            "ELEANOR_LEDGER_RETENTION_DAYS",
            self.retention_days,
            1,
            36_500,
        )?;
        if let Some(url) = &self.aws_endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError(format!(
                "ELEANOR_LEDGER_AWS_ENDPOINT_URL must be an http(s) URL, got {url:?}"
            )));
        }
        let mut settings = AwsSettings::new(bucket, table, region);
        settings.prefix = prefix;
        settings.endpoint_url = self.aws_endpoint_url.clone();
        settings.lock_mode = self.s3_lock_mode;
        settings.retention_days = self.retention_days;
        settings.pending_objects = self.pending_objects;
        settings.request_timeout = request_timeout;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn args(extra: &[&str]) -> ServerArgs {
        let mut argv = vec!["ledger-server"];
        argv.extend_from_slice(extra);
        ServerArgs::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_make_a_local_server_on_loopback() {
        let config = args(&[]).into_config().unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(
            matches!(&config.backend, BackendConfig::Local { data_dir, .. } if data_dir == Path::new("./data"))
        );
        assert_eq!(config.limits.max_record_bytes, 262_144);
        assert_eq!(config.ledger.max_ledgers, 100_000);
        assert!(
            config.limits.protect_metrics,
            "with auth on, /metrics needs a token unless made public"
        );
        assert_eq!(
            config.default_signing_key.as_deref(),
            Some(Path::new("./data/signing.key")),
            "signed by default, with a key kept in the data dir"
        );
    }

    #[test]
    fn a_ledger_cap_of_zero_is_refused() {
        let err = args(&["--max-ledgers", "0"]).into_config().unwrap_err();
        assert_eq!(
            err.0,
            "ELEANOR_LEDGER_MAX_LEDGERS must be between 1 and 1000000000, got 0"
        );
    }

    #[test]
    fn signing_is_off_only_when_asked_or_on_aws_without_a_key() {
        let off = args(&["--signing", "off"]).into_config().unwrap();
        assert!(off.default_signing_key.is_none() && off.ledger.signer.is_none());
        let aws = args(&[
            "--backend",
            "aws",
            "--s3-bucket",
            "b",
            "--ddb-table",
            "t",
            "--ddb-region",
            "us-east-1",
        ])
        .into_config()
        .unwrap();
        assert!(aws.default_signing_key.is_none() && aws.ledger.signer.is_none());
        let err = args(&["--signing", "off", "--signing-key-file", "/k"])
            .into_config()
            .unwrap_err();
        assert!(err.0.contains("contradict"), "{err}");
    }

    #[test]
    fn the_aws_backend_names_the_first_missing_setting() {
        let err = args(&["--backend", "aws", "--s3-bucket", "b"])
            .into_config()
            .unwrap_err();
        assert_eq!(
            err.0,
            "ELEANOR_LEDGER_BACKEND=aws needs ELEANOR_LEDGER_DDB_TABLE to be set"
        );
    }

    #[test]
    fn a_batch_too_small_for_one_record_is_refused() {
        let err = args(&["--batch-max-bytes", "1000"])
            .into_config()
            .unwrap_err();
        assert!(
            err.0
                .starts_with("ELEANOR_LEDGER_BATCH_MAX_BYTES (1000) must be at least"),
            "{}",
            err.0
        );
    }

    #[test]
    fn aws_batches_must_fit_one_dynamodb_item() {
        let aws = [
            "--backend",
            "aws",
            "--s3-bucket",
            "b",
            "--ddb-table",
            "t",
            "--ddb-region",
            "us-east-1",
        ];
        assert!(args(&aws).into_config().is_ok());
        let mut big = aws.to_vec();
        big.extend_from_slice(&["--batch-max-bytes", "500000"]);
        assert!(args(&big).into_config().unwrap_err().0.contains("400 KiB"));
    }
}
