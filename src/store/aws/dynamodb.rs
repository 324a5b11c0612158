//! [`IndexStore`] on one DynamoDB table: the calls. The table's items and their encoding,
//! as the runbook's "Audit Ledger Index" section lays them out, are in [`super::items`].
//!
//! Only `GetItem`, `PutItem`, `Query`, `UpdateItem` and `DescribeTable` are sent: the runtime
//! policy allows nothing else. Every read is strongly consistent. Writes ask for the consumed
//! capacity, which is counted as `ledger_backend_write_units_total{op}`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    ConsumedCapacity, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure,
};
use futures::{StreamExt, TryStreamExt};

use super::items::{
    Item, META_SK, PENDING_ATTRIBUTES, REGISTRY, REGISTRY_PREFIX, StoredPending, decode_key_claim,
    decode_meta, decode_seq_item, encode_key_claim, encode_meta, encode_pending, encode_seq_item,
    key_sk, n, s, seq_key, seqs_text, string,
};
use super::pending::PendingObjects;
use super::unavailable;
use crate::chain::entry::{IdempotencyKey, LedgerId, MAX_SEQ};
use crate::store::{
    BackendMetrics, CasOutcome, IndexStore, KeyClaim, KeyPut, Meta, SeqItem, SeqPut, StoreError,
    StoreResult,
};

const DEPENDENCY: &str = crate::store::Backend::Aws.dependencies().1;
/// The error codes DynamoDB throttles with.
const THROTTLING: [&str; 3] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
];

/// A failed call as [`StoreError::Throttled`] when DynamoDB throttled it (still after the
/// SDK's retries), else [`StoreError::Unavailable`].
fn failed<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err.code() {
        Some(code) if THROTTLING.contains(&code) => match unavailable(DEPENDENCY, err) {
            StoreError::Unavailable { dependency, detail } => {
                StoreError::Throttled { dependency, detail }
            }
            other => other,
        },
        _ => unavailable(DEPENDENCY, err),
    }
}
/// At most this many `SEQ#` writes of one call are in flight at once.
const PUT_CONCURRENCY: usize = 32;

/// The ledger index in one DynamoDB table.
#[derive(Clone)]
pub struct DynamoIndex {
    client: Client,
    /// Pending batches stored as objects (`super::pending`), which `META` points to.
    pending: PendingObjects,
    /// Whether large batches are written as objects ([`super::AwsSettings::pending_objects`]);
    /// off, every batch is written inline (objects named by an existing `META` are still read).
    write_objects: bool,
    table: String,
    /// The S3 key prefix (normalised, see [`super::key_prefix`]): `s3_key` attributes hold
    /// full S3 keys, so an auditor can fetch `s3_key` + `version_id` as they are.
    key_prefix: String,
    metrics: BackendMetrics,
}

/// Which way a conditional write went.
enum Conditional<T> {
    Written(T),
    /// The condition failed; the item as it was, when DynamoDB returned it.
    Refused(Option<Item>),
}

impl DynamoIndex {
    pub(super) fn new(
        client: Client,
        pending: PendingObjects,
        write_objects: bool,
        table: String,
        key_prefix: String,
        metrics: BackendMetrics,
    ) -> DynamoIndex {
        DynamoIndex {
            client,
            pending,
            write_objects,
            table,
            key_prefix,
            metrics,
        }
    }

    /// `META` from its item: the one place a pending batch's stored form is read (its object
    /// fetched and checked against its digest when `META` points to one).
    async fn meta(&self, ledger: &LedgerId, item: &Item) -> StoreResult<Meta> {
        let stored = decode_meta(ledger, item)?;
        let object = match &stored.pending {
            Some(StoredPending::Object { key, digest, .. }) => {
                Some(self.pending.get(key, digest).await?)
            }
            _ => None,
        };
        stored.into_meta(ledger, object.as_ref())
    }

    fn record<T, E>(&self, op: &str, result: &Result<T, E>) {
        self.metrics
            .record(op, if result.is_ok() { "ok" } else { "error" }, 1);
    }

    fn record_capacity(&self, op: &str, capacity: Option<&ConsumedCapacity>) {
        if let Some(units) = capacity.and_then(ConsumedCapacity::capacity_units) {
            self.metrics.record_write_units(op, units);
        }
    }

    async fn get_item(&self, ledger_id: &str, sk: &str) -> StoreResult<Option<Item>> {
        let result = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("ledger_id", s(ledger_id))
            .key("seq", s(sk))
            .consistent_read(true)
            .send()
            .await;
        self.record("ddb_get_item", &result);
        Ok(result.map_err(failed)?.item)
    }

    /// `PutItem` of `item` only if no item has its key.
    async fn put_if_absent(&self, item: Item) -> StoreResult<Conditional<()>> {
        self.put_if(item, "attribute_not_exists(#sk)", HashMap::new())
            .await
    }

    /// `PutItem` of `item` only if `condition` holds (`#sk` names the sort key).
    async fn put_if(
        &self,
        item: Item,
        condition: &str,
        values: HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    ) -> StoreResult<Conditional<()>> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_names("#sk", "seq")
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(output) => {
                self.metrics.record("ddb_put_item", "ok", 1);
                self.record_capacity("ddb_put_item", output.consumed_capacity());
                Ok(Conditional::Written(()))
            }
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                self.metrics.record("ddb_put_item", "conflict", 1);
                let old = match e.into_err() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                Ok(Conditional::Refused(old))
            }
            Err(e) => {
                self.metrics.record("ddb_put_item", "error", 1);
                Err(failed(e))
            }
        }
    }

    async fn put_seq_item(&self, ledger: &LedgerId, item: &SeqItem) -> StoreResult<SeqPut> {
        match self
            .put_if_absent(encode_seq_item(ledger, item, &self.key_prefix))
            .await?
        {
            Conditional::Written(()) => Ok(SeqPut::Created),
            Conditional::Refused(Some(existing)) => Ok(SeqPut::AlreadyExists(decode_seq_item(
                &existing,
                &self.key_prefix,
            )?)),
            Conditional::Refused(None) => {
                let key = seq_key(item.seq);
                let existing = self.get_item(ledger.as_str(), &key).await?.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "{ledger} {key} exists for a condition but not for a read"
                    ))
                })?;
                Ok(SeqPut::AlreadyExists(decode_seq_item(
                    &existing,
                    &self.key_prefix,
                )?))
            }
        }
    }

    /// Queries `partition` for sort keys in `lower..=upper` (or `> after` when `after` is
    /// given instead of `lower`), ascending, at most `limit` items, following pages.
    async fn query(
        &self,
        partition: &str,
        range: KeyRange<'_>,
        limit: usize,
    ) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        while items.len() < limit {
            let page = i32::try_from(limit - items.len()).unwrap_or(i32::MAX);
            let request = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_names("#pk", "ledger_id")
                .expression_attribute_names("#sk", "seq")
                .expression_attribute_values(":pk", s(partition))
                .set_exclusive_start_key(start.take())
                .limit(page);
            let request = match range {
                KeyRange::Between(lower, upper) => request
                    .key_condition_expression("#pk = :pk AND #sk BETWEEN :lower AND :upper")
                    .expression_attribute_values(":lower", s(lower))
                    .expression_attribute_values(":upper", s(upper)),
                KeyRange::After(after) => request
                    .key_condition_expression("#pk = :pk AND #sk > :after")
                    .expression_attribute_values(":after", s(after)),
            };
            let result = request.send().await;
            self.record("ddb_query", &result);
            let output = result.map_err(failed)?;
            let more = output.last_evaluated_key.filter(|k| !k.is_empty());
            items.extend(
                output
                    .items
                    .unwrap_or_default()
                    .into_iter()
                    .take(limit - items.len()),
            );
            match more {
                Some(key) => start = Some(key),
                None => break,
            }
        }
        Ok(items)
    }
}

#[derive(Clone, Copy)]
enum KeyRange<'a> {
    Between(&'a str, &'a str),
    After(&'a str),
}

#[async_trait]
impl IndexStore for DynamoIndex {
    async fn head(&self, ledger: &LedgerId) -> StoreResult<Option<Meta>> {
        match self.get_item(ledger.as_str(), META_SK).await? {
            Some(item) => Ok(Some(self.meta(ledger, &item).await?)),
            None => Ok(None),
        }
    }

    /// Two conditional `PutItem`s: the registry item, then `META`. A failed `META` condition
    /// returns the existing item, so an existing ledger costs no extra read.
    async fn create_ledger(&self, ledger: &LedgerId) -> StoreResult<Meta> {
        let registry = Item::from([
            ("ledger_id".to_owned(), s(REGISTRY)),
            ("seq".to_owned(), s(format!("{REGISTRY_PREFIX}{ledger}"))),
        ]);
        // Already listed is fine: the registry item has nothing to update.
        self.put_if_absent(registry).await?;
        let mut item = encode_meta(ledger, &Meta::empty(), &self.key_prefix);
        item.insert("ledger_id".to_owned(), s(ledger.as_str()));
        item.insert("seq".to_owned(), s(META_SK));
        match self.put_if_absent(item).await? {
            Conditional::Written(()) => Ok(Meta::empty()),
            Conditional::Refused(Some(existing)) => self.meta(ledger, &existing).await,
            Conditional::Refused(None) => self.head(ledger).await?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "META of {ledger} exists for a condition but not for a read"
                ))
            }),
        }
    }

    /// One `UpdateItem` conditioned on `seq_counter = expected_seq`, preceded (for a batch
    /// over [`super::pending::INLINE_MAX_BYTES`]) by the `PutObject` of its pending object,
    /// which is harmless if the update then fails or loses. If the condition fails
    /// but `META` already equals `new` (an SDK retry of this very update whose first
    /// response was lost), the update is reported as applied.
    async fn compare_and_set_head(
        &self,
        ledger: &LedgerId,
        expected_seq: u64,
        new: &Meta,
    ) -> StoreResult<CasOutcome> {
        let mut values = HashMap::from([
            (":expected".to_owned(), n(expected_seq)),
            (":seq_counter".to_owned(), n(new.seq_counter)),
            (":last_hash".to_owned(), s(new.last_hash.to_hex())),
        ]);
        let pending = new
            .pending
            .as_ref()
            .map(|p| encode_pending(ledger, p, &self.key_prefix, self.write_objects));
        if let Some((key, body)) = pending.as_ref().and_then(|p| p.object.clone()) {
            // Before the claim, so that META never names an object that is not stored.
            self.pending.put(&key, body).await?;
        }
        let update = match pending.map(|p| p.attributes) {
            Some(attributes) => {
                let set: Vec<String> = attributes
                    .iter()
                    .map(|(name, _)| format!("{name} = :{name}"))
                    .collect();
                let remove: Vec<&str> = PENDING_ATTRIBUTES
                    .iter()
                    .copied()
                    .filter(|a| attributes.iter().all(|(name, _)| name != a))
                    .collect();
                for (name, value) in attributes {
                    values.insert(format!(":{name}"), value);
                }
                format!(
                    "SET seq_counter = :seq_counter, last_hash = :last_hash, {} REMOVE {}",
                    set.join(", "),
                    remove.join(", ")
                )
            }
            None => format!(
                "SET seq_counter = :seq_counter, last_hash = :last_hash REMOVE {}",
                PENDING_ATTRIBUTES.join(", ")
            ),
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("ledger_id", s(ledger.as_str()))
            .key("seq", s(META_SK))
            .update_expression(update)
            .condition_expression("attribute_exists(#sk) AND seq_counter = :expected")
            .expression_attribute_names("#sk", "seq")
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(output) => {
                self.metrics.record("ddb_update_item", "ok", 1);
                self.record_capacity("ddb_update_item", output.consumed_capacity());
                Ok(CasOutcome::Applied)
            }
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                self.metrics.record("ddb_update_item", "conflict", 1);
                let current = match e.into_err() {
                    UpdateItemError::ConditionalCheckFailedException(c) => match c.item {
                        Some(item) => Some(self.meta(ledger, &item).await?),
                        None => None,
                    },
                    _ => None,
                };
                match current {
                    Some(current) if current == *new => Ok(CasOutcome::Applied),
                    current => Ok(CasOutcome::Conflict(current)),
                }
            }
            Err(e) => {
                self.metrics.record("ddb_update_item", "error", 1);
                Err(failed(e))
            }
        }
    }

    /// One conditional `PutItem` per item, up to 32 at once.
    async fn put_seq_items(
        &self,
        ledger: &LedgerId,
        items: &[SeqItem],
    ) -> StoreResult<Vec<SeqPut>> {
        let puts: Vec<_> = items
            .iter()
            .map(|item| self.put_seq_item(ledger, item))
            .collect();
        futures::stream::iter(puts)
            .buffered(PUT_CONCURRENCY)
            .try_collect()
            .await
    }

    async fn seq_items(
        &self,
        ledger: &LedgerId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<SeqItem>> {
        // Seqs past MAX_SEQ have no 18-digit key (and cannot exist).
        let to = to.min(MAX_SEQ);
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let (lower, upper) = (seq_key(from), seq_key(to));
        let items = self
            .query(ledger.as_str(), KeyRange::Between(&lower, &upper), limit)
            .await?;
        items
            .iter()
            .map(|item| decode_seq_item(item, &self.key_prefix))
            .collect()
    }

    async fn key_claim(
        &self,
        ledger: &LedgerId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<KeyClaim>> {
        self.get_item(ledger.as_str(), &key_sk(key))
            .await?
            .map(|item| decode_key_claim(&item))
            .transpose()
    }

    /// One conditional `PutItem`. If the condition fails but the item already equals `new`
    /// (an SDK retry of this very write whose first response was lost), it is applied.
    async fn put_key_claim(
        &self,
        ledger: &LedgerId,
        key: &IdempotencyKey,
        expected: Option<&KeyClaim>,
        new: &KeyClaim,
    ) -> StoreResult<KeyPut> {
        let item = encode_key_claim(ledger, key, new);
        let written = match expected {
            None => self.put_if_absent(item).await?,
            Some(expected) => {
                let values = HashMap::from([
                    (":base".to_owned(), n(expected.base)),
                    (":seqs".to_owned(), s(seqs_text(&expected.seqs))),
                ]);
                let condition =
                    "attribute_exists(#sk) AND claim_base = :base AND claim_seqs = :seqs";
                self.put_if(item, condition, values).await?
            }
        };
        let current = match written {
            Conditional::Written(()) => return Ok(KeyPut::Applied),
            Conditional::Refused(Some(item)) => Some(decode_key_claim(&item)?),
            Conditional::Refused(None) => self.key_claim(ledger, key).await?,
        };
        Ok(match current {
            Some(current) if current == *new => KeyPut::Applied,
            current => KeyPut::Conflict(current),
        })
    }

    async fn ledgers(&self, after: Option<&LedgerId>, limit: usize) -> StoreResult<Vec<LedgerId>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Every registry key starts with REGISTRY_PREFIX, and the prefix itself sorts first.
        let after = format!("{REGISTRY_PREFIX}{}", after.map_or("", LedgerId::as_str));
        let items = self.query(REGISTRY, KeyRange::After(&after), limit).await?;
        items
            .iter()
            .map(|item| {
                let sk = string(item, "seq")?;
                sk.strip_prefix(REGISTRY_PREFIX)
                    .and_then(|id| LedgerId::parse(id).ok())
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("registry item {sk:?} does not name a ledger"))
                    })
            })
            .collect()
    }

    async fn check(&self) -> StoreResult<()> {
        let result = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await;
        self.record("ddb_describe_table", &result);
        result.map(|_| ()).map_err(failed)
    }
}
