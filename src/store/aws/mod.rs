//! The AWS backend: entry objects in S3 under Object Lock ([`s3::S3Objects`]), ledger heads
//! and the `SEQ#` index in DynamoDB ([`dynamodb::DynamoIndex`]), as the runbook's "Audit
//! Ledger Index" section lays them out.
//!
//! [`connect`] is the one way in: it builds both SDK clients from [`AwsSettings`] and returns
//! them as [`Stores`]. [`admin::AwsAdmin`] provisions the table and checks the bucket, for
//! `ledger-init`. No AWS SDK type appears in this module's public API.
//!
//! Every call has a timeout ([`AwsSettings::request_timeout`] covers one whole operation,
//! retries included) and the SDK's standard retry policy (a few attempts with jittered
//! exponential backoff for throttling, 5xx and transport errors). Whatever still fails is
//! [`StoreError::Unavailable`](super::StoreError::Unavailable) with the SDK's full error
//! chain as its detail.
//!
//! Requests are counted in [`BackendMetrics`]: each call once with its outcome (`op` is
//! `s3_put_object`, `ddb_update_item`, ...), plus one `retry` per extra attempt the SDK made,
//! so requests per record can be read off `/metrics`.

pub mod admin;
pub mod dynamodb;
mod items;
pub mod pending;
pub mod s3;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::{Backend, BackendMetrics, LockMode, Stores};

/// How many attempts the SDK makes for one call before giving up.
const MAX_ATTEMPTS: u32 = 3;

/// Called with `(service, operation)` (for example `("DynamoDB", "PutItem")`) for every
/// HTTP request the backend sends, retries included. For tests and diagnostics.
#[derive(Clone)]
pub struct RequestObserver(Arc<ObserverFn>);

type ObserverFn = dyn Fn(&str, &str) + Send + Sync;

impl RequestObserver {
    pub fn new(f: impl Fn(&str, &str) + Send + Sync + 'static) -> RequestObserver {
        RequestObserver(Arc::new(f))
    }
}

impl fmt::Debug for RequestObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestObserver(..)")
    }
}

/// Everything [`connect`] needs. Build it with [`AwsSettings::new`] and set what differs
/// from the defaults.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// The entry bucket (`ELEANOR_LEDGER_S3_BUCKET`). It must have Object Lock (and so
    /// versioning) enabled.
    pub bucket: String,
    /// Prepended to every object key (`ELEANOR_LEDGER_S3_PREFIX`). A non-empty prefix without
    /// a trailing `/` gets one, so `ledger` and `ledger/` name the same place.
    pub prefix: String,
    /// The index table (`ELEANOR_LEDGER_DDB_TABLE`).
    pub table: String,
    /// The region of both the bucket and the table (`ELEANOR_LEDGER_DDB_REGION`).
    pub region: String,
    /// Emulators only (`ELEANOR_LEDGER_AWS_ENDPOINT_URL`): send every request there, with
    /// path-style S3 addressing. Production leaves it unset.
    pub endpoint_url: Option<String>,
    /// The Object Lock mode entry objects are written with (`ELEANOR_LEDGER_S3_LOCK_MODE`).
    pub lock_mode: LockMode,
    /// Entry objects are locked until now + this many days (`ELEANOR_LEDGER_RETENTION_DAYS`).
    pub retention_days: u32,
    /// Write a pending batch over [`pending::INLINE_MAX_BYTES`] as an object that `META`
    /// points to (`ELEANOR_LEDGER_PENDING_OBJECTS`, default on); off, every batch rides
    /// inline, which replicas of versions before pending objects can read. Either way both
    /// forms are read.
    pub pending_objects: bool,
    /// The longest one store call may take, SDK retries included.
    pub request_timeout: Duration,
    /// Sees every request sent (see [`RequestObserver`]).
    pub observer: Option<RequestObserver>,
}

impl AwsSettings {
    /// Default retention: 2557 days, about 7 years.
    pub const DEFAULT_RETENTION_DAYS: u32 = 2557;
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

    /// Settings with the defaults: no prefix, COMPLIANCE lock, 2557 days of retention, a
    /// 10 s request timeout, AWS's own endpoints.
    pub fn new(
        bucket: impl Into<String>,
        table: impl Into<String>,
        region: impl Into<String>,
    ) -> AwsSettings {
        AwsSettings {
            bucket: bucket.into(),
            prefix: String::new(),
            table: table.into(),
            region: region.into(),
            endpoint_url: None,
            lock_mode: LockMode::default(),
            retention_days: Self::DEFAULT_RETENTION_DAYS,
            pending_objects: true,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            observer: None,
        }
    }
}

/// The S3 key prefix as used: a non-empty prefix always ends with `/`.
fn key_prefix(settings: &AwsSettings) -> String {
    let mut prefix = settings.prefix.clone();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    prefix
}

/// Why [`connect`] refused the settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid AWS backend settings: {0}")]
    InvalidSettings(String),
}

/// Builds the S3 and DynamoDB clients. Sends no request: use the stores' `check` to prove
/// the bucket and table are reachable.
///
/// Credentials come from the SDK's default provider chain (environment, profile, web
/// identity, container and instance metadata). With `endpoint_url` set (an emulator), only
/// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` from the environment are used, and fixed test
/// credentials when those are absent, so nothing but the emulator is ever contacted.
pub async fn connect(
    settings: &AwsSettings,
    metrics: BackendMetrics,
) -> Result<Stores, ConnectError> {
    let (s3_client, ddb_client) = clients(settings, &metrics).await?;
    let pending = pending::PendingObjects::new(s3_client.clone(), settings, metrics.clone());
    let objects = s3::S3Objects::new(s3_client, settings, metrics.clone());
    let index = dynamodb::DynamoIndex::new(
        ddb_client,
        pending,
        settings.pending_objects,
        settings.table.clone(),
        key_prefix(settings),
        metrics,
    );
    Ok(Stores {
        backend: Backend::Aws,
        lock_mode: Some(settings.lock_mode),
        objects: Arc::new(objects),
        index: Arc::new(index),
        batches: None,
    })
}

/// Both SDK clients, configured as [`connect`] describes.
async fn clients(
    settings: &AwsSettings,
    metrics: &BackendMetrics,
) -> Result<(aws_sdk_s3::Client, aws_sdk_dynamodb::Client), ConnectError> {
    validate(settings)?;
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(settings.request_timeout)
        .connect_timeout(settings.request_timeout.min(Duration::from_secs(5)))
        .build();
    let retries = RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(2));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(settings.region.clone()))
        .timeout_config(timeouts)
        .retry_config(retries);
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader
            .endpoint_url(endpoint)
            .credentials_provider(emulator_credentials());
    }
    let sdk_config = loader.load().await;

    let observer = settings.observer.clone();
    let s3_config = aws_sdk_s3::config::Builder::from(&sdk_config)
        .force_path_style(settings.endpoint_url.is_some())
        .interceptor(RequestHook::new("s3", metrics.clone(), observer.clone()))
        .build();
    let ddb_config = aws_sdk_dynamodb::config::Builder::from(&sdk_config)
        .interceptor(RequestHook::new("ddb", metrics.clone(), observer))
        .build();
    Ok((
        aws_sdk_s3::Client::from_conf(s3_config),
        aws_sdk_dynamodb::Client::from_conf(ddb_config),
    ))
}

fn validate(settings: &AwsSettings) -> Result<(), ConnectError> {
    let invalid = |s: &str| Err(ConnectError::InvalidSettings(s.to_owned()));
    if settings.bucket.is_empty() {
        return invalid("the S3 bucket name is empty");
    }
    if settings.table.is_empty() {
        return invalid("the DynamoDB table name is empty");
    }
    if settings.region.is_empty() {
        return invalid("the AWS region is empty");
    }
    if settings.retention_days == 0 {
        return invalid("the retention must be at least 1 day");
    }
    if settings.request_timeout.is_zero() {
        return invalid("the request timeout must be longer than zero");
    }
    if let Some(url) = &settings.endpoint_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ConnectError::InvalidSettings(format!(
            "the endpoint URL {url:?} must start with http:// or https://"
        )));
    }
    Ok(())
}

/// Credentials for an emulator: the environment's if it has a key pair, else fixed ones
/// (emulators accept any).
fn emulator_credentials() -> SharedCredentialsProvider {
    let from_env = std::env::var("AWS_ACCESS_KEY_ID")
        .ok()
        .zip(std::env::var("AWS_SECRET_ACCESS_KEY").ok());
    let (key, secret) = from_env.unwrap_or_else(|| ("test".to_owned(), "test".to_owned()));
    let token = std::env::var("AWS_SESSION_TOKEN").ok();
    SharedCredentialsProvider::new(Credentials::new(
        key,
        secret,
        token,
        None,
        "eleanor-ledger-emulator",
    ))
}

/// Sees every HTTP attempt: counts SDK retries and tells the observer.
struct RequestHook {
    /// `"s3"` or `"ddb"`: the metric `op` prefix.
    prefix: &'static str,
    metrics: BackendMetrics,
    observer: Option<RequestObserver>,
}

impl fmt::Debug for RequestHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHook")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RequestHook {
    fn new(
        prefix: &'static str,
        metrics: BackendMetrics,
        observer: Option<RequestObserver>,
    ) -> RequestHook {
        RequestHook {
            prefix,
            metrics,
            observer,
        }
    }
}

impl Intercept for RequestHook {
    fn name(&self) -> &'static str {
        "EleanorLedgerRequestHook"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(metadata) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        if let Some(observer) = &self.observer {
            (observer.0)(metadata.service(), metadata.name());
        }
        if cfg
            .load::<RequestAttempts>()
            .is_some_and(|a| a.attempts() > 1)
        {
            let op = format!("{}_{}", self.prefix, snake_case(metadata.name()));
            self.metrics.record(&op, "retry", 1);
        }
        Ok(())
    }
}

/// `PutObject` -> `put_object`, `ListObjectsV2` -> `list_objects_v2`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Turns any SDK error into [`StoreError::Unavailable`](super::StoreError::Unavailable)
/// whose detail is one sentence, the error's causes in order; the SDK's full dump (its
/// `Debug` of every layer) goes to the debug log.
fn unavailable(dependency: &'static str, err: impl std::error::Error) -> super::StoreError {
    tracing::debug!(
        dependency,
        error = %aws_smithy_types::error::display::DisplayErrorContext(&err),
        "storage call failed"
    );
    super::StoreError::Unavailable {
        dependency,
        detail: causes(&err),
    }
}

/// The error and its sources as one line (`dispatch failure: io error: ...: Connection
/// refused (os error 111)`), a cause the previous one already states left out.
fn causes(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_become_metric_ops() {
        assert_eq!(snake_case("PutObject"), "put_object");
        assert_eq!(snake_case("ListObjectsV2"), "list_objects_v2");
        assert_eq!(snake_case("GetItem"), "get_item");
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_unavailable_not_a_hang() {
        let mut settings = AwsSettings::new("no-bucket", "no-table", "us-east-1");
        // A loopback port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        settings.endpoint_url = Some(format!("http://127.0.0.1:{port}"));
        settings.request_timeout = Duration::from_secs(3);
        let stores = connect(&settings, BackendMetrics::unregistered())
            .await
            .unwrap();
        let err = stores.index.check().await.unwrap_err();
        assert!(
            matches!(
                err,
                crate::store::StoreError::Unavailable {
                    dependency: "dynamodb",
                    ..
                }
            ),
            "{err}"
        );
        // One sentence: the causes in order, not the SDK's Debug dump of every layer.
        let text = err.to_string();
        assert!(
            !text.contains('{') && !text.contains("Some(") && !text.contains('\n'),
            "{text}"
        );
        assert!(
            text.contains("refused") || text.contains("connect"),
            "{text}"
        );
        let err = stores.objects.check().await.unwrap_err();
        assert!(
            matches!(
                err,
                crate::store::StoreError::Unavailable {
                    dependency: "s3",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn settings_are_validated() {
        let ok = AwsSettings::new("b", "t", "us-east-1");
        assert_eq!(validate(&ok), Ok(()));
        let mut bad = ok.clone();
        bad.retention_days = 0;
        assert!(validate(&bad).is_err());
        let mut bad = ok.clone();
        bad.endpoint_url = Some("127.0.0.1:5000".into());
        assert!(validate(&bad).is_err());
        let mut bad = ok;
        bad.bucket.clear();
        assert!(validate(&bad).is_err());
    }
}
