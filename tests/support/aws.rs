//! Setting up the AWS emulator (moto) for tests: where it is, fresh buckets and tables (made
//! with the backend's own provisioning calls), and raw SDK clients for doing to S3 what the
//! service never would (tampering).
//!
//! `scripts/test.sh` starts the emulator and exports its address as
//! `ELEANOR_LEDGER_TEST_AWS_ENDPOINT`. Without it these helpers panic with a message saying
//! so: the AWS tests fail, they never pass or skip silently.
//!
//! Include it with `#[path = "support/aws.rs"] mod aws_support;`.
#![allow(dead_code)] // Each test crate uses a different part.

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use eleanor_ledger::store::aws::admin::AwsAdmin;
use eleanor_ledger::store::aws::{AwsSettings, connect};
use eleanor_ledger::store::{BackendMetrics, Stores};

pub const ENDPOINT_VAR: &str = "ELEANOR_LEDGER_TEST_AWS_ENDPOINT";
pub const REGION: &str = "us-east-1";

/// The emulator's address. Panics when it is not configured.
pub fn endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{ENDPOINT_VAR} is not set: the AWS backend tests need the S3/DynamoDB emulator. \
             Run them with scripts/test.sh, which starts moto and sets it."
        ),
    }
}

async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint())
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "eleanor-ledger-tests",
        ))
        .load()
        .await
}

/// An S3 client of the test's own, pointed at the emulator.
pub async fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&sdk_config().await)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A DynamoDB client of the test's own, pointed at the emulator.
pub async fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config().await)
}

/// A name no other test (or test run) uses: lowercase, valid for buckets and tables.
pub fn unique_name() -> String {
    format!("eleanor-test-{:016x}", fastrand::u64(..))
}

fn emulator_refused(what: &str, e: impl std::fmt::Display) -> ! {
    panic!(
        "could not {what} at {}: {e}. Is the emulator up? Run the tests with scripts/test.sh.",
        endpoint()
    )
}

/// Settings for a bucket and table that do not exist yet.
pub fn unique_settings() -> AwsSettings {
    let mut settings = AwsSettings::new(unique_name(), unique_name(), REGION);
    settings.endpoint_url = Some(endpoint());
    settings
}

/// Settings for a fresh bucket and table of this test's own, both created on the emulator.
pub async fn fresh_settings() -> AwsSettings {
    let settings = unique_settings();
    let admin = AwsAdmin::connect(&settings, BackendMetrics::unregistered())
        .await
        .expect("valid settings");
    if let Err(e) = admin.create_bucket().await {
        emulator_refused(&format!("create bucket {}", settings.bucket), e);
    }
    if let Err(e) = admin.ensure_table().await {
        emulator_refused(&format!("create table {}", settings.table), e);
    }
    settings
}

/// The storage flags of `ledger-server` and `ledger-verify` for `settings` on the emulator
/// at `endpoint` (the emulator's own, or a proxy in front of it).
pub fn storage_flags(settings: &AwsSettings, endpoint: &str) -> Vec<String> {
    [
        "--backend",
        "aws",
        "--s3-bucket",
        &settings.bucket,
        "--s3-prefix",
        &settings.prefix,
        "--ddb-table",
        &settings.table,
        "--ddb-region",
        REGION,
        "--aws-endpoint-url",
        endpoint,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Connects the backend with `settings`.
pub async fn connect_with(settings: &AwsSettings, metrics: BackendMetrics) -> Stores {
    connect(settings, metrics).await.expect("valid settings")
}
