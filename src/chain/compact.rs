//! A compact form of a run of chained entries, for storing a pending batch in fewer bytes
//! (the DynamoDB `META` item, billed by size; `docs/STORAGE.md`).
//!
//! Of a run of entries of one ledger at consecutive seqs, each linking to the one before,
//! only this cannot be derived: the `prev_hash` of the first entry (the run's `base`), and per
//! entry its timestamp, its idempotency key if it has one, and its record. Each compact record
//! is the entry's 27-byte timestamp, then the key as the entry spells it (a JSON string, so it
//! starts with `"` where a record starts with `{`), then its record's compact JSON; the ledger
//! id, the seqs and every other `prev_hash` follow from the key and the chain, so [`rebuild`]
//! gives back the exact stored bytes.

use super::entry::{self, EntryHeader, IdempotencyKey, LedgerId, Record, TIMESTAMP_LEN, Timestamp};
use super::hash::Hash;

/// A run of entries in compact form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactRun {
    /// The `prev_hash` of the run's first entry.
    pub base: Hash,
    /// Per entry, in seq order: its timestamp's 27 bytes, its key's JSON string if it has
    /// one, then its record.
    pub records: Vec<Vec<u8>>,
}

/// The compact form of `entries` (stored bytes of `ledger`'s entries from `first_seq` on),
/// or `None` when they are not such a run (another ledger's, out of seq order, unchained,
/// undecodable, or empty): those must be kept as they are.
pub fn compact(
    ledger: &LedgerId,
    first_seq: u64,
    entries: &[impl AsRef<[u8]>],
) -> Option<CompactRun> {
    let mut base = None;
    let mut prev: Option<Hash> = None;
    let mut records = Vec::with_capacity(entries.len());
    for (i, bytes) in entries.iter().enumerate() {
        let bytes = bytes.as_ref();
        let entry = entry::decode(bytes).ok()?;
        let header = &entry.header;
        let links = prev.is_none_or(|p| p == header.prev_hash);
        if header.ledger_id != *ledger || header.seq != first_seq + i as u64 || !links {
            return None;
        }
        base.get_or_insert(header.prev_hash);
        prev = Some(Hash::of_entry(bytes));
        let mut record = header.timestamp.to_string().into_bytes();
        if let Some(key) = &header.idempotency_key {
            record.extend_from_slice(&serde_json::to_vec(key.as_str()).ok()?);
        }
        record.extend_from_slice(entry.record.get().as_bytes());
        records.push(record);
    }
    Some(CompactRun {
        base: base?,
        records,
    })
}

/// Why compact records cannot be rebuilt into entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebuildError {
    #[error("compact record {0} is shorter than its timestamp")]
    Short(usize),
    #[error("compact record {0} does not start with a timestamp")]
    BadTimestamp(usize),
    #[error("compact record {0} is not a compact JSON object")]
    BadRecord(usize),
    #[error("compact record {0} has a malformed idempotency key")]
    BadKey(usize),
}

/// The stored bytes of the entries that `records` (see [`compact`]) stand for: `ledger`'s, from
/// `first_seq` on, chained from `base`.
pub fn rebuild<'a>(
    ledger: &LedgerId,
    first_seq: u64,
    base: Hash,
    records: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Vec<u8>>, RebuildError> {
    let mut prev_hash = base;
    let mut entries = Vec::new();
    for (i, compact) in records.into_iter().enumerate() {
        let (timestamp, record) = compact
            .split_at_checked(TIMESTAMP_LEN)
            .ok_or(RebuildError::Short(i))?;
        let timestamp = std::str::from_utf8(timestamp)
            .ok()
            .and_then(|t| Timestamp::parse(t).ok())
            .ok_or(RebuildError::BadTimestamp(i))?;
        let (idempotency_key, record) = split_key(record).ok_or(RebuildError::BadKey(i))?;
        let record = Record::parse(record)
            .ok()
            .filter(|r| r.as_str().as_bytes() == record)
            .ok_or(RebuildError::BadRecord(i))?;
        let header = EntryHeader {
            ledger_id: ledger.clone(),
            seq: first_seq + i as u64,
            prev_hash,
            timestamp,
            idempotency_key,
        };
        let bytes = entry::encode(&header, &record);
        prev_hash = Hash::of_entry(&bytes);
        entries.push(bytes);
    }
    Ok(entries)
}

/// Splits a leading JSON string (the key) off `rest`, if it starts with one. The rebuilt entry
/// is decoded again by its reader, so a spelling `encode` would not write is caught there too;
/// here the key only has to be a key.
fn split_key(rest: &[u8]) -> Option<(Option<IdempotencyKey>, &[u8])> {
    if rest.first() != Some(&b'"') {
        return Some((None, rest));
    }
    let mut strings = serde_json::Deserializer::from_slice(rest).into_iter::<String>();
    let key = strings.next()?.ok()?;
    let end = strings.byte_offset();
    Some((Some(IdempotencyKey::parse(&key).ok()?), &rest[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> LedgerId {
        LedgerId::parse("unit").unwrap()
    }

    /// Entries 6..=8 of `ledger()`, chained from a base hash.
    fn run() -> Vec<Vec<u8>> {
        let mut prev_hash = Hash([7; 32]);
        (6..=8)
            .map(|seq| {
                let header = EntryHeader {
                    ledger_id: ledger(),
                    seq,
                    prev_hash,
                    timestamp: Timestamp::parse("2025-11-29T00:00:00.000001Z").unwrap(),
                    idempotency_key: (seq == 7)
                        .then(|| IdempotencyKey::parse(r#"retry "7" \ "#).unwrap()),
                };
                let record = Record::parse(
                    format!(r#"{{"n":{seq},"pad":"{}"}}"#, "x".repeat(100)).as_bytes(),
                )
                .unwrap();
                let bytes = entry::encode(&header, &record);
                prev_hash = Hash::of_entry(&bytes);
                bytes
            })
            .collect()
    }

    #[test]
    fn a_chained_run_is_rebuilt_byte_for_byte_from_fewer_bytes() {
        let entries = run();
        let c = compact(&ledger(), 6, &entries).unwrap();
        assert_eq!(c.base, Hash([7; 32]));
        let stored: usize = c.records.iter().map(Vec::len).sum();
        let full: usize = entries.iter().map(Vec::len).sum();
        assert!(stored + 3 * 100 < full, "{stored} bytes for {full}");
        let rebuilt = rebuild(&ledger(), 6, c.base, c.records.iter().map(Vec::as_slice)).unwrap();
        assert_eq!(rebuilt, entries);
    }

    #[test]
    fn a_run_that_is_not_this_ledgers_chain_at_its_seqs_has_no_compact_form() {
        let entries = run();
        assert_eq!(compact(&ledger(), 7, &entries), None, "seqs shifted");
        assert_eq!(
            compact(&ledger(), 6, &[entries[0].clone(), entries[2].clone()]),
            None,
            "unchained"
        );
        assert_eq!(
            compact(&LedgerId::parse("other").unwrap(), 6, &entries),
            None
        );
        assert_eq!(compact(&ledger(), 6, &Vec::<Vec<u8>>::new()), None, "empty");
        assert_eq!(compact(&ledger(), 6, &[b"not an entry".to_vec()]), None);
    }

    #[test]
    fn an_edited_compact_record_is_refused_with_its_index() {
        let c = compact(&ledger(), 6, &run()).unwrap();
        for (bad, error) in [
            (
                &b"2025-11-29T00:00:00.000000Z{ \"n\":1}"[..],
                RebuildError::BadRecord(1),
            ),
            (b"short", RebuildError::Short(1)),
            (
                b"2025-13-29T00:00:00.000000Z{}",
                RebuildError::BadTimestamp(1),
            ),
        ] {
            let mut records = c.records.clone();
            records[1] = bad.to_vec();
            assert_eq!(
                rebuild(&ledger(), 6, c.base, records.iter().map(Vec::as_slice)),
                Err(error)
            );
        }
    }
}
