//! The storage conformance suite against the AWS backend on the emulator, plus what only S3
//! and DynamoDB have: Object Lock on every entry object, extra versions under an entry key,
//! and the runtime IAM policy's short list of DynamoDB actions.
//!
//! Needs `ELEANOR_LEDGER_TEST_AWS_ENDPOINT` (set by `scripts/test.sh`); without it every test
//! here fails with a message saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/aws.rs"]
mod aws_support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumMode, ObjectLockMode};
use bytes::Bytes;
use eleanor_ledger::store::aws::admin::{AwsAdmin, BucketState, Provisioned, TableState};
use eleanor_ledger::store::aws::{AwsSettings, RequestObserver};
use eleanor_ledger::store::conformance::{self, Fixture};
use eleanor_ledger::store::{
    BackendMetrics, CasOutcome, Meta, NewObject, PendingBatch, PutOutcome, StoreError,
};

/// The DynamoDB actions the runbook's runtime IAM policy grants.
const ALLOWED_DYNAMODB: [&str; 5] = ["GetItem", "PutItem", "Query", "UpdateItem", "DescribeTable"];

/// An observer that fails the test at the first DynamoDB request outside the runtime policy.
fn policy_guard() -> RequestObserver {
    RequestObserver::new(|service, operation| {
        if service == "DynamoDB" && !ALLOWED_DYNAMODB.contains(&operation) {
            panic!("DynamoDB {operation} was sent; the runtime policy allows {ALLOWED_DYNAMODB:?}");
        }
    })
}

/// The backend over a fresh bucket and table, with the policy guard installed; reopened with
/// the same settings.
async fn fresh() -> Fixture {
    let mut settings = aws_support::fresh_settings().await;
    settings.observer = Some(policy_guard());
    let stores = aws_support::connect_with(&settings, BackendMetrics::unregistered()).await;
    Fixture::new(stores, move || {
        let settings = settings.clone();
        async move { aws_support::connect_with(&settings, BackendMetrics::unregistered()).await }
    })
}

eleanor_ledger::store_conformance_tests!(aws, super::fresh());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_sends_only_the_dynamodb_actions_the_runtime_policy_allows() {
    let sent = Arc::new(Mutex::new(BTreeSet::new()));
    let mut settings = aws_support::fresh_settings().await;
    let record = sent.clone();
    settings.observer = Some(RequestObserver::new(move |service, operation| {
        if service == "DynamoDB" {
            record.lock().unwrap().insert(operation.to_owned());
        }
    }));
    let s = aws_support::connect_with(&settings, BackendMetrics::unregistered()).await;

    conformance::head_of_an_unknown_ledger_is_none(&s).await;
    conformance::create_ledger_is_idempotent_and_lists_the_ledger(&s).await;
    conformance::compare_and_set_applies_only_at_the_expected_seq(&s).await;
    conformance::racing_compare_and_set_has_one_winner(&s).await;
    conformance::a_pending_batch_round_trips_byte_for_byte(&s).await;
    conformance::seq_items_are_written_once_and_returned_when_present(&s).await;
    conformance::seq_items_query_is_ascending_bounded_and_per_ledger(&s).await;
    conformance::ledgers_are_listed_in_order_and_paged(&s).await;
    conformance::health_checks_pass(&s).await;

    let sent = sent.lock().unwrap().clone();
    let outside: Vec<_> = sent
        .iter()
        .filter(|op| !ALLOWED_DYNAMODB.contains(&op.as_str()))
        .collect();
    assert!(
        outside.is_empty(),
        "DynamoDB actions outside the runtime IAM policy were sent: {outside:?}"
    );
    let expected: BTreeSet<String> = ALLOWED_DYNAMODB.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        sent, expected,
        "the run exercised every allowed action (so the observer saw the traffic)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_objects_are_compliance_locked_and_extra_versions_are_counted() {
    let mut settings: AwsSettings = aws_support::fresh_settings().await;
    settings.prefix = "entries".into();
    let s = aws_support::connect_with(&settings, BackendMetrics::unregistered()).await;
    let raw = aws_support::s3_client().await;

    let object = NewObject {
        key: "default/000000000000000001.json".into(),
        body: Bytes::from_static(b"{\"v\":1}"),
    };
    let outcome = s
        .objects
        .put_new(std::slice::from_ref(&object))
        .await
        .unwrap();
    let [
        PutOutcome::Created {
            version: Some(version),
        },
    ] = outcome.as_slice()
    else {
        panic!("expected a created object with a version id, got {outcome:?}")
    };
    let s3_key = format!("entries/{}", object.key);

    let head = raw
        .head_object()
        .bucket(&settings.bucket)
        .key(&s3_key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert!(
        head.checksum_sha256().is_some(),
        "stored with a SHA-256 checksum: {head:?}"
    );
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    let retain_until = head
        .object_lock_retain_until_date()
        .expect("a retain-until date")
        .secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let years_6 = 6 * 365 * 86_400;
    assert!(
        retain_until > now + years_6,
        "retained for the default ~7 years, not until {retain_until}"
    );
    assert_eq!(head.version_id(), Some(version.as_str()));
    assert_eq!(
        s.objects.list("default/", None, 10).await.unwrap(),
        vec![object.key.clone()]
    );
    assert_eq!(s.objects.version_count(&object.key).await.unwrap(), 1);

    // Tampering: a plain PUT (no If-None-Match) stacks a new version on the locked one.
    raw.put_object()
        .bucket(&settings.bucket)
        .key(&s3_key)
        .body(ByteStream::from_static(b"forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.objects.version_count(&object.key).await.unwrap(),
        2,
        "the extra version is reported"
    );
    let pinned = s
        .objects
        .get(&object.key, Some(version))
        .await
        .unwrap()
        .expect("the locked version is still there");
    assert_eq!(
        pinned.body, object.body,
        "reads pinned to the indexed version see the original bytes"
    );
    assert_eq!(
        s.objects
            .get(&object.key, None)
            .await
            .unwrap()
            .unwrap()
            .body,
        Bytes::from_static(b"forged")
    );

    // A delete without a version id hides the key behind a delete marker: also a change.
    raw.delete_object()
        .bucket(&settings.bucket)
        .key(&s3_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.objects.version_count(&object.key).await.unwrap(),
        3,
        "a delete marker is counted too"
    );
    assert_eq!(s.objects.get(&object.key, None).await.unwrap(), None);
    assert_eq!(
        s.objects
            .get(&object.key, Some(version))
            .await
            .unwrap()
            .unwrap()
            .body,
        object.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_write_units_are_counted() {
    let registry = prometheus::Registry::new();
    let metrics = BackendMetrics::new(&registry).unwrap();
    let settings = aws_support::fresh_settings().await;
    let s = aws_support::connect_with(&settings, metrics).await;
    let ledger = conformance::unique_ledger();
    s.index.create_ledger(&ledger).await.unwrap();
    let next = Meta {
        seq_counter: 1,
        ..Meta::empty()
    };
    assert_eq!(
        s.index
            .compare_and_set_head(&ledger, 0, &next)
            .await
            .unwrap(),
        CasOutcome::Applied
    );
    assert_eq!(
        s.index
            .compare_and_set_head(&ledger, 0, &next)
            .await
            .unwrap(),
        CasOutcome::Applied,
        "an identical META counts as applied"
    );
    let stale = Meta {
        seq_counter: 5,
        ..Meta::empty()
    };
    assert_eq!(
        s.index
            .compare_and_set_head(&ledger, 0, &stale)
            .await
            .unwrap(),
        CasOutcome::Conflict(Some(next))
    );

    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    for line in [
        r#"ledger_backend_requests_total{op="ddb_put_item",outcome="ok"} 2"#,
        r#"ledger_backend_requests_total{op="ddb_update_item",outcome="ok"} 1"#,
        r#"ledger_backend_requests_total{op="ddb_update_item",outcome="conflict"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(
        text.contains(r#"ledger_backend_write_units_total{op="ddb_update_item"}"#),
        "write units counted:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_is_idempotent_and_reports_what_the_bucket_lacks() {
    let settings = aws_support::unique_settings();
    let admin = AwsAdmin::connect(&settings, BackendMetrics::unregistered())
        .await
        .unwrap();

    assert_eq!(admin.table_state().await.unwrap(), TableState::Missing);
    assert_eq!(admin.ensure_table().await.unwrap(), Provisioned::Created);
    assert_eq!(
        admin.ensure_table().await.unwrap(),
        Provisioned::AlreadyExisted
    );
    let state = admin.wait_for_table(Duration::from_secs(30)).await.unwrap();
    assert_eq!(state, TableState::Active);

    let missing = admin.bucket_state().await.unwrap();
    assert!(!missing.exists);
    assert_eq!(missing.problems(&settings.bucket).len(), 1);
    assert_eq!(admin.create_bucket().await.unwrap(), Provisioned::Created);
    assert_eq!(
        admin.create_bucket().await.unwrap(),
        Provisioned::AlreadyExisted
    );
    let ready = admin.bucket_state().await.unwrap();
    assert_eq!(
        ready,
        BucketState {
            exists: true,
            object_lock_enabled: true
        }
    );
    assert!(ready.problems(&settings.bucket).is_empty());

    // A plain bucket, as someone might create by hand: the missing lock is named.
    let plain = aws_support::unique_settings();
    aws_support::s3_client()
        .await
        .create_bucket()
        .bucket(&plain.bucket)
        .send()
        .await
        .unwrap();
    let admin = AwsAdmin::connect(&plain, BackendMetrics::unregistered())
        .await
        .unwrap();
    let state = admin.bucket_state().await.unwrap();
    assert_eq!(
        state,
        BucketState {
            exists: true,
            object_lock_enabled: false
        }
    );
    assert_eq!(state.problems(&plain.bucket).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_pending_batch_is_one_locked_object_that_meta_names_by_digest() {
    let mut settings = aws_support::fresh_settings().await;
    settings.prefix = "audit/".into();
    let s = aws_support::connect_with(&settings, BackendMetrics::unregistered()).await;
    let ledger = conformance::unique_ledger();
    s.index.create_ledger(&ledger).await.unwrap();
    let batch = |fill: u8| PendingBatch {
        first_seq: 1,
        entries: vec![Bytes::from(vec![fill; 600]), Bytes::from(vec![fill; 600])],
    };
    let new = Meta {
        seq_counter: 2,
        last_hash: eleanor_ledger::chain::hash::Hash([7; 32]),
        pending: Some(batch(b'a')),
    };
    assert_eq!(
        s.index
            .compare_and_set_head(&ledger, 0, &new)
            .await
            .unwrap(),
        CasOutcome::Applied
    );
    assert_eq!(s.index.head(&ledger).await.unwrap(), Some(new.clone()));

    // META holds a pointer and a digest, not the bytes; the object is locked like entries.
    let item = aws_support::dynamodb_client()
        .await
        .get_item()
        .table_name(&settings.table)
        .key("ledger_id", AttributeValue::S(ledger.to_string()))
        .key("seq", AttributeValue::S("META".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(!item.contains_key("pending_entries") && !item.contains_key("pending_records"));
    let key = item["pending_object"].as_s().unwrap().clone();
    assert!(
        key.starts_with(&format!("audit/.pending/{ledger}/000000000000000001-")),
        "{key}"
    );
    let s3 = aws_support::s3_client().await;
    let head = s3
        .head_object()
        .bucket(&settings.bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    let until = head.object_lock_retain_until_date().unwrap().secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days = (until - now) as f64 / 86_400.0;
    assert!(
        (29.9..=30.1).contains(&days),
        "locked for {days} days, not the entries' retention"
    );

    // The same claim again (an SDK retry) is applied; a loser's object names nothing.
    assert_eq!(
        s.index
            .compare_and_set_head(&ledger, 0, &new)
            .await
            .unwrap(),
        CasOutcome::Applied
    );
    let loser = Meta {
        pending: Some(batch(b'b')),
        ..new.clone()
    };
    assert_eq!(
        s.index
            .compare_and_set_head(&ledger, 0, &loser)
            .await
            .unwrap(),
        CasOutcome::Conflict(Some(new.clone()))
    );
    assert_eq!(s.index.head(&ledger).await.unwrap(), Some(new));

    // Bytes put on top of the pending object (a new version; S3 keeps the locked one) fail
    // the digest: the head is refused as corrupt, never used.
    s3.put_object()
        .bucket(&settings.bucket)
        .key(&key)
        .body(ByteStream::from_static(b"eleanor-ledger/pending/v1\n"))
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();
    assert!(matches!(
        s.index.head(&ledger).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_objects_lifecycle_rule_is_added_once_and_keeps_other_rules() {
    let mut settings = aws_support::fresh_settings().await;
    settings.prefix = "audit".into();
    let s3 = aws_support::s3_client().await;
    let other = aws_sdk_s3::types::LifecycleRule::builder()
        .id("someone-elses")
        .status(aws_sdk_s3::types::ExpirationStatus::Enabled)
        .filter(
            aws_sdk_s3::types::LifecycleRuleFilter::builder()
                .prefix("tmp/")
                .build(),
        )
        .expiration(
            aws_sdk_s3::types::LifecycleExpiration::builder()
                .days(3)
                .build(),
        )
        .build()
        .unwrap();
    s3.put_bucket_lifecycle_configuration()
        .bucket(&settings.bucket)
        .lifecycle_configuration(
            aws_sdk_s3::types::BucketLifecycleConfiguration::builder()
                .rules(other)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let admin = AwsAdmin::connect(&settings, BackendMetrics::unregistered())
        .await
        .unwrap();
    assert!(!admin.has_pending_rule().await.unwrap());
    assert_eq!(
        admin.ensure_pending_rule().await.unwrap(),
        Provisioned::Created
    );
    assert_eq!(
        admin.ensure_pending_rule().await.unwrap(),
        Provisioned::AlreadyExisted
    );
    assert!(admin.has_pending_rule().await.unwrap());
    let rules = s3
        .get_bucket_lifecycle_configuration()
        .bucket(&settings.bucket)
        .send()
        .await
        .unwrap()
        .rules()
        .to_vec();
    let ids: BTreeSet<&str> = rules.iter().filter_map(|r| r.id()).collect();
    assert_eq!(
        ids,
        BTreeSet::from(["someone-elses", "eleanor-ledger-pending-batches"])
    );
    let ours = rules
        .iter()
        .find(|r| r.id() == Some("eleanor-ledger-pending-batches"))
        .unwrap();
    assert_eq!(
        ours.filter().and_then(|f| f.prefix()),
        Some("audit/.pending/")
    );
    assert_eq!(ours.expiration().and_then(|e| e.days()), Some(31));
}
