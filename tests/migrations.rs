//! The files in `migrations/` say what they must: the table the runbook names, with the key
//! schema the service needs, and IAM policies that grant the runtime exactly the runbook's
//! DynamoDB actions and nobody anything that deletes, reconfigures the bucket or bypasses
//! retention. (`tests/aws_e2e.rs` checks the same files against the emulator: the table
//! against what `ledger-init` creates, the runtime policy against every request the service
//! sends.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

const POLICIES: [&str; 3] = [
    "iam-runtime-policy.json",
    "iam-init-policy.json",
    "iam-auditor-policy.json",
];

/// The runbook's runtime DynamoDB actions ("Audit Ledger Index (DynamoDB)", IAM).
const RUNBOOK_DYNAMODB: [&str; 5] = [
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
];

fn path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(name)
}

fn load(name: &str) -> Value {
    let path = path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

/// A string or a list of strings (IAM allows both for `Action` and `Resource`).
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().expect("a list of strings").to_owned())
            .collect(),
        other => panic!("expected a string or a list of strings, got {other}"),
    }
}

/// Every `(action, resource)` an Allow statement of the policy grants; panics on anything
/// this repository's policies should never contain (Deny, NotAction, NotResource, wildcards).
fn grants(name: &str) -> Vec<(String, String)> {
    let policy = load(name);
    assert_eq!(
        policy["Version"], "2012-10-17",
        "{name}: policy language version"
    );
    let statements = policy["Statement"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: Statement is a list"));
    assert!(!statements.is_empty(), "{name}: no statements");
    let mut sids = BTreeSet::new();
    let mut out = Vec::new();
    for statement in statements {
        let sid = statement["Sid"]
            .as_str()
            .expect("every statement has a Sid");
        assert!(sids.insert(sid.to_owned()), "{name}: Sid {sid} repeats");
        assert_eq!(statement["Effect"], "Allow", "{name} {sid}: only Allow");
        for field in ["NotAction", "NotResource", "Principal"] {
            assert!(
                statement.get(field).is_none(),
                "{name} {sid}: {field} has no place in an identity policy here"
            );
        }
        let actions = strings(&statement["Action"]);
        let resources = strings(&statement["Resource"]);
        assert!(!actions.is_empty() && !resources.is_empty(), "{name} {sid}");
        for action in &actions {
            assert!(
                !action.contains('*'),
                "{name} {sid}: wildcard action {action}: name each action"
            );
            assert!(
                action.starts_with("dynamodb:") || action.starts_with("s3:"),
                "{name} {sid}: {action} is neither DynamoDB nor S3"
            );
            for resource in &resources {
                check_resource(name, sid, action, resource);
                out.push((action.clone(), resource.clone()));
            }
        }
    }
    out
}

/// DynamoDB actions go to the runbook's table; S3 object actions to objects under the prefix;
/// S3 bucket actions to the bucket itself.
fn check_resource(name: &str, sid: &str, action: &str, resource: &str) {
    let context = format!("{name} {sid}: {action} on {resource}");
    if action.starts_with("dynamodb:") {
        assert_eq!(
            resource,
            "arn:aws:dynamodb:us-east-1:ACCOUNT_ID:table/eleanor-stone-tablet-ledger-index",
            "{context}"
        );
    } else if action.starts_with("s3:ListBucket")
        || action.starts_with("s3:GetBucket")
        || action == "s3:GetLifecycleConfiguration"
    {
        assert_eq!(resource, "arn:aws:s3:::BUCKET_NAME", "{context}");
    } else {
        assert_eq!(resource, "arn:aws:s3:::BUCKET_NAME/S3_PREFIX*", "{context}");
    }
}

fn actions(name: &str) -> BTreeSet<String> {
    grants(name).into_iter().map(|(a, _)| a).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_table_definition_is_the_runbooks_table_with_the_keys_the_service_needs() {
    let table = load("ledger-index-table.json");
    assert_eq!(table["TableName"], "eleanor-stone-tablet-ledger-index");
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    let keys: Vec<(&str, &str)> = table["KeySchema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().unwrap(),
                k["KeyType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys, [("ledger_id", "HASH"), ("seq", "RANGE")]);
    let attributes: Vec<(&str, &str)> = table["AttributeDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["AttributeName"].as_str().unwrap(),
                a["AttributeType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(attributes, [("ledger_id", "S"), ("seq", "S")]);
    // ensure_table sets nothing else; neither may the file (create-table would accept, say, a
    // provisioned throughput or an index that ledger-init never makes, and the two would differ).
    let fields: BTreeSet<&str> = table.as_object().unwrap().keys().map(|k| &**k).collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "TableName",
            "AttributeDefinitions",
            "KeySchema",
            "BillingMode"
        ])
    );
}

#[test]
fn the_bucket_configuration_enables_object_lock_without_a_default_retention() {
    let config = load("bucket-object-lock.json");
    assert_eq!(config["ObjectLockEnabled"], "Enabled");
    assert!(
        config.get("Rule").is_none(),
        "every PUT sets its own retention; see migrations/README.md"
    );
}

#[test]
fn the_runtime_policy_grants_exactly_the_runbooks_dynamodb_actions() {
    let dynamodb: BTreeSet<String> = actions("iam-runtime-policy.json")
        .into_iter()
        .filter(|a| a.starts_with("dynamodb:"))
        .collect();
    assert_eq!(dynamodb, set(&RUNBOOK_DYNAMODB));
}

#[test]
fn the_runtime_policy_grants_the_least_s3_actions_the_service_calls() {
    // What src/store/aws/s3.rs sends: PutObject with lock headers, GetObject with and without
    // a version id, ListObjectsV2 and HeadBucket (s3:ListBucket), ListObjectVersions.
    let s3: BTreeSet<String> = actions("iam-runtime-policy.json")
        .into_iter()
        .filter(|a| a.starts_with("s3:"))
        .collect();
    assert_eq!(
        s3,
        set(&[
            "s3:GetObject",
            "s3:GetObjectVersion",
            "s3:ListBucket",
            "s3:ListBucketVersions",
            "s3:PutObject",
            "s3:PutObjectRetention",
        ])
    );
}

#[test]
fn the_init_policy_adds_only_creating_the_table_and_reading_the_lock_and_lifecycle_configuration() {
    let init = actions("iam-init-policy.json");
    assert_eq!(
        init,
        set(&[
            "dynamodb:CreateTable",
            "s3:GetBucketObjectLockConfiguration",
            "s3:GetLifecycleConfiguration"
        ])
    );
    // With the runtime policy it covers every call ledger-init makes without --create-bucket
    // (src/store/aws/admin.rs and src/init.rs).
    let both: BTreeSet<String> = init
        .union(&actions("iam-runtime-policy.json"))
        .cloned()
        .collect();
    for needed in [
        "dynamodb:CreateTable",
        "dynamodb:DescribeTable",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "s3:ListBucket",
        "s3:GetBucketObjectLockConfiguration",
        "s3:GetLifecycleConfiguration",
    ] {
        assert!(both.contains(needed), "ledger-init needs {needed}");
    }
}

#[test]
fn no_policy_grants_deletion_bucket_changes_retention_bypass_or_table_deletion() {
    for name in POLICIES {
        for action in actions(name) {
            let forbidden = action.starts_with("s3:DeleteObject")
                || action.starts_with("s3:PutBucket")
                || action == "s3:BypassGovernanceRetention"
                || action == "s3:DeleteBucket"
                || action == "dynamodb:DeleteTable"
                || action == "dynamodb:DeleteItem";
            assert!(!forbidden, "{name} grants {action}");
        }
    }
}

#[test]
fn the_auditor_policy_only_reads() {
    let auditor = actions("iam-auditor-policy.json");
    assert_eq!(
        auditor,
        set(&[
            "dynamodb:DescribeTable",
            "dynamodb:GetItem",
            "dynamodb:Query",
            "s3:GetObject",
            "s3:GetObjectRetention",
            "s3:GetObjectVersion",
            "s3:ListBucket",
            "s3:ListBucketVersions",
        ])
    );
    let read_prefixes = [
        "dynamodb:Describe",
        "dynamodb:Get",
        "dynamodb:Query",
        "s3:Get",
        "s3:List",
    ];
    for action in &auditor {
        assert!(
            read_prefixes.iter().any(|p| action.starts_with(p)),
            "the auditor policy grants {action}, which is not a read"
        );
    }
}

#[test]
fn every_migration_file_is_explained_in_the_readme() {
    let readme = std::fs::read_to_string(path("README.md")).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    for file in files {
        assert!(
            readme.contains(&format!("## `{file}`")),
            "migrations/README.md has no section on {file}"
        );
    }
}
