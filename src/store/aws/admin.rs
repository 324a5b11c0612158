//! Provisioning for `ledger-init`: create the index table, check (or, for development,
//! create) the entry bucket.
//!
//! These calls need more than the runtime IAM policy: `dynamodb:CreateTable` and
//! `dynamodb:DescribeTable`; `s3:ListBucket` (for `HeadBucket`), `s3:CreateBucket`,
//! `s3:PutBucketVersioning` and `s3:GetBucketObjectLockConfiguration`;
//! `s3:GetLifecycleConfiguration` (and, with `--create-bucket`, `s3:PutLifecycleConfiguration`)
//! for the rule that expires pending batch objects ([`super::pending`]). The service itself
//! never calls the ones beyond its runtime policy.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, BucketVersioningStatus,
    CreateBucketConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter, NoncurrentVersionExpiration, ObjectLockEnabled, VersioningConfiguration,
};

use super::pending::{PENDING_DIR, PENDING_EXPIRATION_DAYS};
use super::{AwsSettings, ConnectError, clients, key_prefix, unavailable};
use crate::store::{BackendMetrics, StoreResult};

/// Whether a provisioning call made something or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioned {
    Created,
    AlreadyExisted,
}

/// The index table as DynamoDB describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableState {
    Missing,
    /// Being created (or updated); not usable yet.
    Creating,
    Active,
    /// The table exists with another key schema than `ledger_id` (HASH, S) + `seq` (RANGE, S).
    WrongKeySchema(String),
    /// Any other status DynamoDB reports (for example `DELETING`).
    Other(String),
}

/// What the entry bucket needs and has. Versioning is not asked separately: S3 turns it on
/// with Object Lock and refuses to suspend it on a bucket that has Object Lock. (moto's
/// `GetBucketVersioning` answer does not parse in the Rust SDK either.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    pub exists: bool,
    pub object_lock_enabled: bool,
}

impl BucketState {
    /// One sentence per thing to fix, empty when the bucket is ready.
    pub fn problems(&self, bucket: &str) -> Vec<String> {
        if !self.exists {
            return vec![format!(
                "bucket {bucket} does not exist: create it with Object Lock enabled \
                 (ledger-init --create-bucket does so for development)"
            )];
        }
        let mut problems = Vec::new();
        if !self.object_lock_enabled {
            problems.push(format!(
                "bucket {bucket} does not have Object Lock enabled: enable versioning and then \
                 Object Lock on it (PutBucketVersioning, then PutObjectLockConfiguration with \
                 ObjectLockEnabled=Enabled), or use a new bucket created with Object Lock"
            ));
        }
        problems
    }
}

/// Provisioning access to one bucket and one table.
pub struct AwsAdmin {
    s3: aws_sdk_s3::Client,
    ddb: aws_sdk_dynamodb::Client,
    bucket: String,
    /// The store's key prefix (normalised), under which pending objects live.
    prefix: String,
    table: String,
    region: String,
}

/// The id of the lifecycle rule that expires pending batch objects.
pub const PENDING_RULE_ID: &str = "eleanor-ledger-pending-batches";

impl AwsAdmin {
    /// Builds the clients as [`connect`](super::connect) does. Sends no request.
    pub async fn connect(
        settings: &AwsSettings,
        metrics: BackendMetrics,
    ) -> Result<AwsAdmin, ConnectError> {
        let (s3, ddb) = clients(settings, &metrics).await?;
        Ok(AwsAdmin {
            s3,
            ddb,
            bucket: settings.bucket.clone(),
            prefix: key_prefix(settings),
            table: settings.table.clone(),
            region: settings.region.clone(),
        })
    }

    /// Creates the index table (on-demand billing) unless a table of that name exists. Does
    /// not wait for it to become active: see [`wait_for_table`](Self::wait_for_table).
    pub async fn ensure_table(&self) -> StoreResult<Provisioned> {
        let key = |name: &str, key_type| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .expect("name and key type are set")
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("name and type are set")
        };
        let result = self
            .ddb
            .create_table()
            .table_name(&self.table)
            .key_schema(key("ledger_id", KeyType::Hash))
            .key_schema(key("seq", KeyType::Range))
            .attribute_definitions(attribute("ledger_id"))
            .attribute_definitions(attribute("seq"))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Provisioned::Created),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                Ok(Provisioned::AlreadyExisted)
            }
            Err(e) => Err(unavailable("dynamodb", e)),
        }
    }

    /// The table's state, including whether its key schema is the one the ledger needs.
    pub async fn table_state(&self) -> StoreResult<TableState> {
        let output = match self
            .ddb
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(TableState::Missing);
            }
            Err(e) => return Err(unavailable("dynamodb", e)),
        };
        let Some(table) = output.table() else {
            return Ok(TableState::Missing);
        };
        let schema: Vec<(&str, &str)> = table
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name(), k.key_type().as_str()))
            .collect();
        let types: Vec<(&str, &str)> = table
            .attribute_definitions()
            .iter()
            .map(|a| (a.attribute_name(), a.attribute_type().as_str()))
            .collect();
        let key_types_ok = ["ledger_id", "seq"]
            .iter()
            .all(|name| types.iter().any(|(n, t)| n == name && *t == "S"));
        if schema != [("ledger_id", "HASH"), ("seq", "RANGE")] || !key_types_ok {
            return Ok(TableState::WrongKeySchema(format!(
                "keys {schema:?}, attribute types {types:?}"
            )));
        }
        Ok(match table.table_status() {
            Some(TableStatus::Active) => TableState::Active,
            Some(TableStatus::Creating | TableStatus::Updating) | None => TableState::Creating,
            Some(other) => TableState::Other(other.as_str().to_owned()),
        })
    }

    /// Polls [`table_state`](Self::table_state) until the table is active or not being
    /// created, or `timeout` passes; returns the last state seen.
    pub async fn wait_for_table(&self, timeout: Duration) -> StoreResult<TableState> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = self.table_state().await?;
            if state != TableState::Creating || tokio::time::Instant::now() >= deadline {
                return Ok(state);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn bucket_exists(&self) -> StoreResult<bool> {
        match self.s3.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
            Err(e) => Err(unavailable("s3", e)),
        }
    }

    /// Whether the bucket exists with Object Lock (and so versioning) enabled.
    pub async fn bucket_state(&self) -> StoreResult<BucketState> {
        if !self.bucket_exists().await? {
            return Ok(BucketState {
                exists: false,
                object_lock_enabled: false,
            });
        }
        let object_lock_enabled = match self
            .s3
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(output) => output
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| *e == ObjectLockEnabled::Enabled),
            Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => false,
            Err(e) => return Err(unavailable("s3", e)),
        };
        Ok(BucketState {
            exists: true,
            object_lock_enabled,
        })
    }

    /// Creates the bucket with Object Lock enabled (which turns versioning on) unless it
    /// exists. For development and emulators; production buckets come from infrastructure
    /// code. An existing bucket is left as it is: check it with
    /// [`bucket_state`](Self::bucket_state).
    pub async fn create_bucket(&self) -> StoreResult<Provisioned> {
        // Asked first because us-east-1 answers a repeated CreateBucket with 200.
        if self.bucket_exists().await? {
            return Ok(Provisioned::AlreadyExisted);
        }
        let mut request = self
            .s3
            .create_bucket()
            .bucket(&self.bucket)
            .object_lock_enabled_for_bucket(true);
        if self.region != "us-east-1" {
            let location = CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                .build();
            request = request.create_bucket_configuration(location);
        }
        match request.send().await {
            Ok(_) => {}
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou")) => {
                return Ok(Provisioned::AlreadyExisted);
            }
            Err(e) => return Err(unavailable("s3", e)),
        }
        // Object Lock implies versioning on S3; saying so explicitly costs one call and makes
        // emulators agree.
        let versioning = VersioningConfiguration::builder()
            .status(BucketVersioningStatus::Enabled)
            .build();
        self.s3
            .put_bucket_versioning()
            .bucket(&self.bucket)
            .versioning_configuration(versioning)
            .send()
            .await
            .map_err(|e| unavailable("s3", e))?;
        Ok(Provisioned::Created)
    }

    /// The lifecycle rule pending batch objects need: under `{prefix}.pending/`, the current
    /// version expires [`PENDING_EXPIRATION_DAYS`] after it was written (one day after its
    /// lock ends; S3 never expires a locked version early), and the version it leaves
    /// noncurrent is removed a day later.
    pub fn pending_rule(&self) -> LifecycleRule {
        LifecycleRule::builder()
            .id(PENDING_RULE_ID)
            .status(ExpirationStatus::Enabled)
            .filter(
                LifecycleRuleFilter::builder()
                    .prefix(format!("{}{PENDING_DIR}", self.prefix))
                    .build(),
            )
            .expiration(
                LifecycleExpiration::builder()
                    .days(PENDING_EXPIRATION_DAYS)
                    .build(),
            )
            .noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(1)
                    .build(),
            )
            .build()
            .expect("the rule sets its required status")
    }

    /// The bucket's lifecycle rules (none when it has no lifecycle configuration).
    async fn lifecycle_rules(&self) -> StoreResult<Vec<LifecycleRule>> {
        match self
            .s3
            .get_bucket_lifecycle_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(output) => Ok(output.rules().to_vec()),
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => Ok(Vec::new()),
            Err(e) => Err(unavailable("s3", e)),
        }
    }

    /// Whether the bucket has [`pending_rule`](Self::pending_rule) (by id and content).
    pub async fn has_pending_rule(&self) -> StoreResult<bool> {
        let wanted = self.pending_rule();
        Ok(self
            .lifecycle_rules()
            .await?
            .iter()
            .any(|r| same_rule(r, &wanted)))
    }

    /// Adds [`pending_rule`](Self::pending_rule) to the bucket's lifecycle rules (replacing a
    /// rule with its id, keeping every other rule). For development buckets, like
    /// [`create_bucket`](Self::create_bucket); production puts the rule with the bucket.
    pub async fn ensure_pending_rule(&self) -> StoreResult<Provisioned> {
        let wanted = self.pending_rule();
        let mut rules = self.lifecycle_rules().await?;
        if rules.iter().any(|r| same_rule(r, &wanted)) {
            return Ok(Provisioned::AlreadyExisted);
        }
        rules.retain(|r| r.id() != Some(PENDING_RULE_ID));
        rules.push(wanted);
        let configuration = BucketLifecycleConfiguration::builder()
            .set_rules(Some(rules))
            .build()
            .expect("the configuration has its rules");
        self.s3
            .put_bucket_lifecycle_configuration()
            .bucket(&self.bucket)
            .lifecycle_configuration(configuration)
            .send()
            .await
            .map_err(|e| unavailable("s3", e))?;
        Ok(Provisioned::Created)
    }
}

/// Two rules with the same id, prefix, status and expirations (what S3 echoes back may
/// differ in fields it fills in itself).
fn same_rule(a: &LifecycleRule, b: &LifecycleRule) -> bool {
    a.id() == b.id()
        && a.status() == b.status()
        && a.filter().and_then(|f| f.prefix()) == b.filter().and_then(|f| f.prefix())
        && a.expiration().and_then(|e| e.days()) == b.expiration().and_then(|e| e.days())
        && a.noncurrent_version_expiration()
            .and_then(|e| e.noncurrent_days())
            == b.noncurrent_version_expiration()
                .and_then(|e| e.noncurrent_days())
}
