//! The DynamoDB items of the index and their encoding (the calls are in [`super::dynamodb`]).

//! section says: partition key `ledger_id` (S), sort key `seq` (S). Three kinds of items:
//!
//! - **Head** (`ledger_id` = the ledger id, `seq` = `META`): `seq_counter` (N), `last_hash`
//!   (S, 64 lowercase hex); while a batch is recorded also `pending_first_seq` (N) and either
//!   - `pending_base` (S, hex: the `prev_hash` of the batch's first entry) and
//!     `pending_records` (L of B, in seq order: each entry's 27-byte timestamp followed by its
//!     record's compact JSON). The rest of each entry follows from the key and the chain
//!     (ledger id, `pending_first_seq + i`, and each `prev_hash` the hash of the entry before),
//!     so the entries' stored bytes are rebuilt exactly ([`crate::chain::compact`]). DynamoDB bills an update by the item's
//!     size: this saves each entry's ~170-byte header (about 0.15 write units per 1 KiB record);
//!   - or `pending_entries` (L of B: the entries' stored bytes), for bytes that are not such a
//!     chain (never written by the service, but the store keeps whatever it is given).
//! - **Index** (`ledger_id` = the ledger id, `seq` = `SEQ#` + the seq as 18 zero-padded
//!   digits): `entry_hash`, `prev_hash` (S, hex), `timestamp` (S, the entry's timestamp text),
//!   `s3_key` (S, the full S3 key, `ELEANOR_LEDGER_S3_PREFIX` included), `version_id` (S,
//!   absent when the object store has no versions).
//! - **Key** (`ledger_id` = the ledger id, `seq` = `IDEM#` + the idempotency key as it is:
//!   1 to 255 printable ASCII characters, so the sort key is at most 260 bytes): `claim_base`
//!   (N) and `claim_seqs` (S, the seqs in decimal, joined by `,`), a [`KeyClaim`] (`base` is
//!   a DynamoDB reserved word). `IDEM#` sorts before `META`
//!   and `SEQ#`, so no range query over index items meets one.
//! - **Registry** (`ledger_id` = `#ledgers`, `seq` = `LEDGER#` + the ledger id): no other
//!   attributes.
//!
//! The registry partition exists because listing partition keys needs `Scan`, which the
//! runtime IAM policy does not grant. `#ledgers` is not a valid ledger id, so it cannot
//! collide with a ledger's own items.
//!
//! Only `GetItem`, `PutItem`, `Query`, `UpdateItem` and `DescribeTable` are sent: the runtime
//! policy allows nothing else. Every read is strongly consistent. Writes ask for the consumed
//! capacity, which is counted as `ledger_backend_write_units_total{op}`.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;

use super::pending;
use crate::chain::compact;
use crate::chain::entry::{IdempotencyKey, LedgerId, Timestamp};
use crate::chain::hash::Hash;
use crate::store::{KeyClaim, Meta, PendingBatch, SeqItem, StoreError, StoreResult};

pub(super) type Item = HashMap<String, AttributeValue>;

/// The partition that lists ledgers (not a valid ledger id).
pub(super) const REGISTRY: &str = "#ledgers";
pub(super) const REGISTRY_PREFIX: &str = "LEDGER#";
pub(super) const META_SK: &str = "META";
pub(super) const SEQ_PREFIX: &str = "SEQ#";
pub(super) const KEY_PREFIX: &str = "IDEM#";

/// The sort key of an idempotency key's item.
pub(super) fn key_sk(key: &IdempotencyKey) -> String {
    format!("{KEY_PREFIX}{key}")
}

/// A whole key item, key included.
pub(super) fn encode_key_claim(ledger: &LedgerId, key: &IdempotencyKey, claim: &KeyClaim) -> Item {
    Item::from([
        ("ledger_id".to_owned(), s(ledger.as_str())),
        ("seq".to_owned(), s(key_sk(key))),
        ("claim_base".to_owned(), n(claim.base)),
        ("claim_seqs".to_owned(), s(seqs_text(&claim.seqs))),
    ])
}

/// The `claim_seqs` attribute: decimal seqs joined by `,`.
pub(super) fn seqs_text(seqs: &[u64]) -> String {
    seqs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn decode_key_claim(item: &Item) -> StoreResult<KeyClaim> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("idempotency key item: {what}"));
    let base = number(item, "claim_base")?;
    let seqs = string(item, "claim_seqs")?
        .split(',')
        .map(|seq| seq.parse::<u64>().ok().filter(|&s| s > base))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| corrupt("claim_seqs is not a list of seqs above claim_base"))?;
    Ok(KeyClaim { base, seqs })
}

/// The sort key of entry `seq`'s index item.
pub fn seq_key(seq: u64) -> String {
    format!("{SEQ_PREFIX}{seq:018}")
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Every attribute a pending batch may use (see the module documentation).
pub(super) const PENDING_ATTRIBUTES: [&str; 7] = [
    "pending_first_seq",
    "pending_base",
    "pending_records",
    "pending_entries",
    "pending_count",
    "pending_object",
    "pending_digest",
];

/// How a pending batch is stored: its attributes in `META`, and for the object form the
/// object to write before `META` names it.
pub(super) struct EncodedPending {
    pub attributes: Vec<(&'static str, AttributeValue)>,
    /// `(full S3 key, bytes)` of the pending object, for a batch stored as one.
    pub object: Option<(String, Bytes)>,
}

/// A pending batch's attributes: inline while its compact records (or, for bytes that are
/// not such a chain, its entries) take at most [`pending::INLINE_MAX_BYTES`], in the compact
/// form when its entries are a chain of this ledger's entries at their seqs, else their bytes
/// as they are; above that (when `objects` allows it), a pointer to an object holding its
/// entries.
pub(super) fn encode_pending(
    ledger: &LedgerId,
    pending: &PendingBatch,
    key_prefix: &str,
    objects: bool,
) -> EncodedPending {
    let first = ("pending_first_seq", n(pending.first_seq));
    let run = compact::compact(ledger, pending.first_seq, &pending.entries);
    let inline_bytes = match &run {
        Some(run) => run.records.iter().map(Vec::len).sum::<usize>(),
        None => pending.entries.iter().map(Bytes::len).sum(),
    };
    if objects && inline_bytes > pending::INLINE_MAX_BYTES {
        let body = pending::encode(&pending.entries);
        let digest = pending::digest(&body);
        let key = pending::object_key(key_prefix, ledger, pending.first_seq, &digest);
        return EncodedPending {
            attributes: vec![
                first,
                ("pending_count", n(pending.entries.len() as u64)),
                ("pending_object", s(key.clone())),
                ("pending_digest", s(digest.to_hex())),
            ],
            object: Some((key, body)),
        };
    }
    let attributes = match run {
        Some(run) => vec![
            first,
            ("pending_base", s(run.base.to_hex())),
            (
                "pending_records",
                AttributeValue::L(
                    run.records
                        .into_iter()
                        .map(|r| AttributeValue::B(Blob::new(r)))
                        .collect(),
                ),
            ),
        ],
        None => vec![
            first,
            (
                "pending_entries",
                AttributeValue::L(
                    pending
                        .entries
                        .iter()
                        .map(|e| AttributeValue::B(Blob::new(e.to_vec())))
                        .collect(),
                ),
            ),
        ],
    };
    EncodedPending {
        attributes,
        object: None,
    }
}

/// `META`'s attributes other than its key, with its pending batch (if any) inline: the
/// ledger's first `META` (no pending batch), and tests.
pub(super) fn encode_meta(ledger: &LedgerId, meta: &Meta, key_prefix: &str) -> Item {
    let mut item = Item::from([
        ("seq_counter".to_owned(), n(meta.seq_counter)),
        ("last_hash".to_owned(), s(meta.last_hash.to_hex())),
    ]);
    if let Some(pending) = &meta.pending {
        for (name, value) in encode_pending(ledger, pending, key_prefix, false).attributes {
            item.insert(name.to_owned(), value);
        }
    }
    item
}

/// `META` as stored: its pending batch inline, or the object that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredMeta {
    pub seq_counter: u64,
    pub last_hash: Hash,
    pub pending: Option<StoredPending>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StoredPending {
    Inline(PendingBatch),
    /// In the object `key` (a full S3 key) whose bytes hash to `digest`, `count` entries.
    Object {
        first_seq: u64,
        count: u64,
        key: String,
        digest: Hash,
    },
}

impl StoredMeta {
    /// The head, given the entries of its pending object (read only for the object form).
    pub fn into_meta(self, ledger: &LedgerId, object: Option<&Bytes>) -> StoreResult<Meta> {
        let corrupt = |what: String| StoreError::Corrupt(format!("META of {ledger}: {what}"));
        let pending = match self.pending {
            None => None,
            Some(StoredPending::Inline(batch)) => Some(batch),
            Some(StoredPending::Object {
                first_seq, count, ..
            }) => {
                let body =
                    object.ok_or_else(|| corrupt("its pending object was not read".to_owned()))?;
                let entries = pending::decode(body).map_err(corrupt)?;
                if entries.len() as u64 != count {
                    return Err(corrupt(format!(
                        "pending_count is {count} but its object holds {} entries",
                        entries.len()
                    )));
                }
                Some(PendingBatch { first_seq, entries })
            }
        };
        Ok(Meta {
            seq_counter: self.seq_counter,
            last_hash: self.last_hash,
            pending,
        })
    }
}

pub(super) fn decode_meta(ledger: &LedgerId, item: &Item) -> StoreResult<StoredMeta> {
    let corrupt = |what: String| StoreError::Corrupt(format!("META of {ledger}: {what}"));
    let seq_counter = number(item, "seq_counter").map_err(|e| corrupt(e.to_string()))?;
    let last_hash = hash(item, "last_hash").map_err(|e| corrupt(e.to_string()))?;
    let first_seq = || number(item, "pending_first_seq").map_err(|e| corrupt(e.to_string()));
    let inline_only = !item.contains_key("pending_count")
        && !item.contains_key("pending_object")
        && !item.contains_key("pending_digest");
    let pending = match (
        item.get("pending_first_seq"),
        item.get("pending_entries"),
        item.get("pending_records"),
    ) {
        (None, None, None) if !item.contains_key("pending_base") && inline_only => None,
        (Some(_), None, None) if !item.contains_key("pending_base") && !inline_only => {
            let first_seq = first_seq()?;
            let count = number(item, "pending_count").map_err(|e| corrupt(e.to_string()))?;
            let key = string(item, "pending_object").map_err(|e| corrupt(e.to_string()))?;
            let digest = hash(item, "pending_digest").map_err(|e| corrupt(e.to_string()))?;
            if count == 0 || first_seq == 0 {
                return Err(corrupt(
                    "a pending batch holds no entries or starts at seq 0".to_owned(),
                ));
            }
            Some(StoredPending::Object {
                first_seq,
                count,
                key: key.to_owned(),
                digest,
            })
        }
        (Some(_), None, Some(AttributeValue::L(records))) if inline_only => {
            let first_seq = first_seq()?;
            let base = hash(item, "pending_base").map_err(|e| corrupt(e.to_string()))?;
            if records.is_empty() || first_seq == 0 {
                return Err(corrupt(
                    "a pending batch holds no entries or starts at seq 0".to_owned(),
                ));
            }
            let records = records
                .iter()
                .map(|r| match r {
                    AttributeValue::B(blob) => Ok(blob.as_ref()),
                    _ => Err(corrupt(
                        "pending_records holds something other than binary".to_owned(),
                    )),
                })
                .collect::<StoreResult<Vec<_>>>()?;
            let entries = compact::rebuild(ledger, first_seq, base, records)
                .map_err(|e| corrupt(e.to_string()))?
                .into_iter()
                .map(Bytes::from)
                .collect();
            Some(StoredPending::Inline(PendingBatch { first_seq, entries }))
        }
        (Some(_), Some(AttributeValue::L(entries)), None)
            if !item.contains_key("pending_base") && inline_only =>
        {
            let first_seq = first_seq()?;
            let entries = entries
                .iter()
                .map(|e| match e {
                    AttributeValue::B(blob) => Ok(Bytes::copy_from_slice(blob.as_ref())),
                    _ => Err(corrupt(
                        "pending_entries holds something other than binary".to_owned(),
                    )),
                })
                .collect::<StoreResult<Vec<_>>>()?;
            if entries.is_empty() || first_seq == 0 {
                return Err(corrupt(
                    "a pending batch holds no entries or starts at seq 0".to_owned(),
                ));
            }
            Some(StoredPending::Inline(PendingBatch { first_seq, entries }))
        }
        _ => {
            return Err(corrupt(
                "a pending batch is pending_first_seq with pending_base and pending_records, with pending_entries, or with pending_count, pending_object and pending_digest".to_owned(),
            ));
        }
    };
    Ok(StoredMeta {
        seq_counter,
        last_hash,
        pending,
    })
}

/// A whole `SEQ#` item, key included.
pub(super) fn encode_seq_item(ledger: &LedgerId, item: &SeqItem, key_prefix: &str) -> Item {
    let mut out = Item::from([
        ("ledger_id".to_owned(), s(ledger.as_str())),
        ("seq".to_owned(), s(seq_key(item.seq))),
        ("entry_hash".to_owned(), s(item.entry_hash.to_hex())),
        ("prev_hash".to_owned(), s(item.prev_hash.to_hex())),
        ("timestamp".to_owned(), s(item.timestamp.to_string())),
        (
            "s3_key".to_owned(),
            s(format!("{key_prefix}{}", item.object_key)),
        ),
    ]);
    if let Some(version) = &item.version_id {
        out.insert("version_id".to_owned(), s(version.clone()));
    }
    out
}

pub(super) fn decode_seq_item(item: &Item, key_prefix: &str) -> StoreResult<SeqItem> {
    let sk = string(item, "seq")?;
    let corrupt = |what: String| StoreError::Corrupt(format!("index item {sk}: {what}"));
    let seq = sk
        .strip_prefix(SEQ_PREFIX)
        .filter(|digits| digits.len() == 18 && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<u64>().ok())
        .ok_or_else(|| corrupt("the sort key is not SEQ# and 18 digits".to_owned()))?;
    let timestamp = string(item, "timestamp")?;
    let timestamp = Timestamp::parse(timestamp).map_err(|e| corrupt(format!("timestamp: {e}")))?;
    let version_id = match item.get("version_id") {
        None => None,
        Some(_) => Some(string(item, "version_id")?.to_owned()),
    };
    Ok(SeqItem {
        seq,
        entry_hash: hash(item, "entry_hash").map_err(|e| corrupt(e.to_string()))?,
        prev_hash: hash(item, "prev_hash").map_err(|e| corrupt(e.to_string()))?,
        timestamp,
        // A key outside the prefix is kept whole, so verification reports it as not the key
        // the seq determines.
        object_key: {
            let key = string(item, "s3_key")?;
            key.strip_prefix(key_prefix).unwrap_or(key).to_owned()
        },
        version_id,
    })
}

pub(super) fn string<'a>(item: &'a Item, name: &str) -> StoreResult<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        Some(_) => Err(StoreError::Corrupt(format!(
            "attribute {name} is not a string"
        ))),
        None => Err(StoreError::Corrupt(format!("attribute {name} is missing"))),
    }
}

pub(super) fn number(item: &Item, name: &str) -> StoreResult<u64> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("attribute {name} = {value} is not a seq"))),
        Some(_) => Err(StoreError::Corrupt(format!(
            "attribute {name} is not a number"
        ))),
        None => Err(StoreError::Corrupt(format!("attribute {name} is missing"))),
    }
}

pub(super) fn hash(item: &Item, name: &str) -> StoreResult<Hash> {
    let text = string(item, name)?;
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("attribute {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::entry::MAX_SEQ;
    use crate::chain::entry::{self, EntryHeader, Record};

    fn ledger() -> LedgerId {
        LedgerId::parse("unit").unwrap()
    }

    #[test]
    fn meta_round_trips_through_attributes() {
        let mut meta = Meta {
            seq_counter: 7,
            last_hash: Hash([3; 32]),
            pending: None,
        };
        assert_eq!(
            decode_meta(&ledger(), &encode_meta(&ledger(), &meta, ""))
                .unwrap()
                .into_meta(&ledger(), None)
                .unwrap(),
            meta
        );
        meta.pending = Some(PendingBatch {
            first_seq: 6,
            entries: vec![Bytes::from_static(b"a"), Bytes::new()],
        });
        let item = encode_meta(&ledger(), &meta, "");
        assert!(
            item.contains_key("pending_entries"),
            "bytes that are no chain are kept as such"
        );
        assert_eq!(
            decode_meta(&ledger(), &item)
                .unwrap()
                .into_meta(&ledger(), None)
                .unwrap(),
            meta
        );
    }

    /// A batch as a writer builds it: three chained entries of `ledger()` from seq 6.
    fn chained_batch() -> PendingBatch {
        let mut prev_hash = Hash([9; 32]);
        let entries = (6..9u64)
            .map(|seq| {
                let header = EntryHeader {
                    ledger_id: ledger(),
                    seq,
                    prev_hash,
                    timestamp: Timestamp::from_unix_micros(1_764_000_000_000_000 + seq as i64)
                        .unwrap(),
                    idempotency_key: (seq == 7).then(|| IdempotencyKey::parse("k-7").unwrap()),
                };
                let record =
                    Record::parse(format!(r#"{{"n":{seq},"s":"é\u00e9 x"}}"#).as_bytes()).unwrap();
                let bytes = Bytes::from(entry::encode(&header, &record));
                prev_hash = Hash::of_entry(&bytes);
                bytes
            })
            .collect();
        PendingBatch {
            first_seq: 6,
            entries,
        }
    }

    #[test]
    fn a_chained_batch_is_stored_compactly_and_rebuilt_byte_for_byte() {
        let batch = chained_batch();
        let meta = Meta {
            seq_counter: 8,
            last_hash: Hash::of_entry(batch.entries.last().unwrap()),
            pending: Some(batch.clone()),
        };
        let item = encode_meta(&ledger(), &meta, "");
        assert!(item.contains_key("pending_records") && !item.contains_key("pending_entries"));
        let AttributeValue::L(records) = &item["pending_records"] else {
            panic!("a list")
        };
        let stored: usize = records
            .iter()
            .map(|r| r.as_b().unwrap().as_ref().len())
            .sum();
        let full: usize = batch.entries.iter().map(|e| e.len()).sum();
        assert!(stored + 3 * 100 < full, "{stored} bytes stored for {full}");
        assert_eq!(
            decode_meta(&ledger(), &item)
                .unwrap()
                .into_meta(&ledger(), None)
                .unwrap(),
            meta
        );
        // Another ledger's, out of seq order or unchained: kept as bytes, still round-tripped.
        for broken in [
            PendingBatch {
                first_seq: 7,
                ..batch.clone()
            },
            PendingBatch {
                first_seq: 6,
                entries: vec![batch.entries[0].clone(), batch.entries[2].clone()],
            },
        ] {
            let meta = Meta {
                pending: Some(broken),
                ..meta.clone()
            };
            let item = encode_meta(&ledger(), &meta, "");
            assert!(item.contains_key("pending_entries"));
            assert_eq!(
                decode_meta(&ledger(), &item)
                    .unwrap()
                    .into_meta(&ledger(), None)
                    .unwrap(),
                meta
            );
        }
        let other = LedgerId::parse("other").unwrap();
        assert!(encode_meta(&other, &meta, "").contains_key("pending_entries"));
    }

    #[test]
    fn an_edited_compact_record_is_corrupt() {
        let batch = chained_batch();
        let meta = Meta {
            seq_counter: 8,
            last_hash: Hash([0; 32]),
            pending: Some(batch),
        };
        let mut item = encode_meta(&ledger(), &meta, "");
        let AttributeValue::L(records) = item["pending_records"].clone() else {
            panic!("a list")
        };
        for bad in [
            &b"2025-11-29T00:00:00.000000Z{ \"n\":1}"[..],
            b"short",
            b"2025-13-29T00:00:00.000000Z{}",
        ] {
            let mut edited = records.clone();
            edited[1] = AttributeValue::B(Blob::new(bad.to_vec()));
            item.insert("pending_records".into(), AttributeValue::L(edited));
            assert!(
                matches!(decode_meta(&ledger(), &item), Err(StoreError::Corrupt(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_half_recorded_pending_batch_is_corrupt() {
        let mut item = encode_meta(&ledger(), &Meta::empty(), "");
        item.insert("pending_first_seq".to_owned(), n(1));
        assert!(matches!(
            decode_meta(&ledger(), &item),
            Err(StoreError::Corrupt(_))
        ));
        let mut both = encode_meta(
            &ledger(),
            &Meta {
                seq_counter: 8,
                last_hash: Hash([0; 32]),
                pending: Some(chained_batch()),
            },
            "",
        );
        both.insert("pending_entries".to_owned(), AttributeValue::L(Vec::new()));
        assert!(matches!(
            decode_meta(&ledger(), &both),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_large_batch_is_stored_as_an_object_that_meta_names_by_digest() {
        let big = PendingBatch {
            first_seq: 6,
            entries: vec![Bytes::from(vec![b'x'; 500]), Bytes::from(vec![b'y'; 500])],
        };
        let meta = Meta {
            seq_counter: 7,
            last_hash: Hash([3; 32]),
            pending: Some(big.clone()),
        };
        assert!(
            encode_pending(&ledger(), &big, "p/", false)
                .object
                .is_none(),
            "inline when objects are off (a rolling upgrade)"
        );
        let encoded = encode_pending(&ledger(), &big, "p/", true);
        let (key, body) = encoded.object.clone().expect("over the inline bound");
        assert!(
            key.starts_with("p/.pending/unit/000000000000000006-"),
            "{key}"
        );
        let mut item = Item::from([
            ("seq_counter".to_owned(), n(7)),
            ("last_hash".to_owned(), s(Hash([3; 32]).to_hex())),
        ]);
        for (name, value) in encoded.attributes {
            item.insert(name.to_owned(), value);
        }
        // META itself stays small: a pointer and a digest, well under one write unit.
        let size: usize = item.iter().map(|(k, v)| k.len() + value_len(v)).sum();
        assert!(size < 400, "{size} bytes");
        let stored = decode_meta(&ledger(), &item).unwrap();
        assert_eq!(
            stored.pending,
            Some(StoredPending::Object {
                first_seq: 6,
                count: 2,
                key,
                digest: pending::digest(&body),
            })
        );
        assert_eq!(
            stored.clone().into_meta(&ledger(), Some(&body)).unwrap(),
            meta
        );
        assert!(matches!(
            stored.clone().into_meta(&ledger(), None),
            Err(StoreError::Corrupt(_))
        ));
        // An object with other entries than META counts is corrupt.
        let short = pending::encode(&big.entries[..1]);
        assert!(matches!(
            stored.into_meta(&ledger(), Some(&short)),
            Err(StoreError::Corrupt(_))
        ));
        // A pointer mixed with an inline form is corrupt.
        item.insert("pending_entries".to_owned(), AttributeValue::L(Vec::new()));
        assert!(matches!(
            decode_meta(&ledger(), &item),
            Err(StoreError::Corrupt(_))
        ));
    }

    fn value_len(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => n.len(),
            AttributeValue::B(b) => b.as_ref().len(),
            AttributeValue::L(l) => 3 + l.iter().map(|x| 1 + value_len(x)).sum::<usize>(),
            _ => 0,
        }
    }

    #[test]
    fn seq_items_round_trip_and_keys_sort_by_seq() {
        let item = SeqItem {
            seq: 42,
            entry_hash: Hash([1; 32]),
            prev_hash: Hash([2; 32]),
            timestamp: Timestamp::from_unix_micros(1_700_000_000_123_456).unwrap(),
            object_key: "default/000000000000000042.json".into(),
            version_id: Some("v1".into()),
        };
        assert_eq!(
            decode_seq_item(&encode_seq_item(&ledger(), &item, "p/"), "p/").unwrap(),
            item
        );
        let unversioned = SeqItem {
            version_id: None,
            ..item
        };
        assert_eq!(
            decode_seq_item(&encode_seq_item(&ledger(), &unversioned, ""), "").unwrap(),
            unversioned
        );
        assert_eq!(seq_key(1), "SEQ#000000000000000001");
        assert!(seq_key(9) < seq_key(10));
        assert_eq!(seq_key(MAX_SEQ).len(), 22);
    }

    #[test]
    fn a_malformed_seq_item_is_corrupt() {
        let mut item = encode_seq_item(
            &ledger(),
            &SeqItem {
                seq: 1,
                entry_hash: Hash([1; 32]),
                prev_hash: Hash([2; 32]),
                timestamp: Timestamp::from_unix_micros(0).unwrap(),
                object_key: "k".into(),
                version_id: None,
            },
            "",
        );
        item.insert("entry_hash".to_owned(), s("not hex"));
        assert!(matches!(
            decode_seq_item(&item, ""),
            Err(StoreError::Corrupt(_))
        ));
    }
}
