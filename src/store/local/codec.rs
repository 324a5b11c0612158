//! The embedded store's row formats, byte for byte (`docs/STORAGE.md`, "Row formats"):
//! `META` in a fixed binary layout, `SEQ#` items as JSON with the DynamoDB attribute names.
//! Entry objects are stored verbatim and need no codec.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::corrupt;
use crate::chain::entry::Timestamp;
use crate::chain::hash::Hash;
use crate::store::{KeyClaim, Meta, PendingBatch, SeqItem};

/// `META` as stored: a fixed binary layout (all integers big-endian):
/// `seq_counter u64 | last_hash [32] | pending_first_seq u64 | n u32 | n x (len u32 | bytes)`,
/// where `pending_first_seq = 0` and `n = 0` mean no pending batch.
pub(super) fn encode_meta(meta: &Meta) -> Vec<u8> {
    let entries: &[Bytes] = meta.pending.as_ref().map_or(&[], |p| &p.entries);
    let mut out = Vec::with_capacity(52 + entries.iter().map(|e| e.len() + 4).sum::<usize>());
    out.extend_from_slice(&meta.seq_counter.to_be_bytes());
    out.extend_from_slice(&meta.last_hash.0);
    out.extend_from_slice(
        &meta
            .pending
            .as_ref()
            .map_or(0, |p| p.first_seq)
            .to_be_bytes(),
    );
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for entry in entries {
        out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        out.extend_from_slice(entry);
    }
    out
}

pub(super) fn decode_meta(bytes: &[u8]) -> Result<Meta, redb::Error> {
    let mut r = Reader(bytes);
    let seq_counter = r.u64()?;
    let last_hash = Hash(r.take(32)?.try_into().map_err(|e| corrupt("META", e))?);
    let first_seq = r.u64()?;
    let n = r.u32()?;
    let mut entries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = r.u32()? as usize;
        entries.push(Bytes::copy_from_slice(r.take(len)?));
    }
    if !r.0.is_empty() {
        return Err(corrupt("META", "trailing bytes"));
    }
    let pending = (n > 0).then_some(PendingBatch { first_seq, entries });
    Ok(Meta {
        seq_counter,
        last_hash,
        pending,
    })
}

/// An `IDEM#` item as stored: `base u64 | n u32 | n x seq u64`, big-endian.
pub(super) fn encode_key_claim(claim: &KeyClaim) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + 8 * claim.seqs.len());
    out.extend_from_slice(&claim.base.to_be_bytes());
    out.extend_from_slice(&(claim.seqs.len() as u32).to_be_bytes());
    for seq in &claim.seqs {
        out.extend_from_slice(&seq.to_be_bytes());
    }
    out
}

pub(super) fn decode_key_claim(bytes: &[u8]) -> Result<KeyClaim, redb::Error> {
    let mut r = Reader(bytes);
    let base = r.u64()?;
    let n = r.u32()?;
    let seqs = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
    if !r.0.is_empty() {
        return Err(corrupt("IDEM#", "trailing bytes"));
    }
    Ok(KeyClaim { base, seqs })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], redb::Error> {
        if self.0.len() < n {
            return Err(corrupt("META", "truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u64(&mut self) -> Result<u64, redb::Error> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().map_err(|e| corrupt("META", e))?,
        ))
    }
    fn u32(&mut self) -> Result<u32, redb::Error> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().map_err(|e| corrupt("META", e))?,
        ))
    }
}

/// A `SEQ#` item as stored: JSON with the same attribute names as the DynamoDB item.
#[derive(Serialize, Deserialize)]
struct SeqItemRow {
    entry_hash: Hash,
    prev_hash: Hash,
    timestamp: Timestamp,
    s3_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version_id: Option<String>,
}

pub(super) fn encode_seq_item(item: &SeqItem) -> Vec<u8> {
    serde_json::to_vec(&SeqItemRow {
        entry_hash: item.entry_hash,
        prev_hash: item.prev_hash,
        timestamp: item.timestamp,
        s3_key: item.object_key.clone(),
        version_id: item.version_id.clone(),
    })
    .expect("a SEQ# row always serialises")
}

pub(super) fn decode_seq_item(seq: u64, bytes: &[u8]) -> Result<SeqItem, redb::Error> {
    let row: SeqItemRow =
        serde_json::from_slice(bytes).map_err(|e| corrupt(&format!("SEQ#{seq:018}"), e))?;
    Ok(SeqItem {
        seq,
        entry_hash: row.entry_hash,
        prev_hash: row.prev_hash,
        timestamp: row.timestamp,
        object_key: row.s3_key,
        version_id: row.version_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_with_and_without_a_pending_batch() {
        let mut meta = Meta {
            seq_counter: 7,
            last_hash: Hash([3; 32]),
            pending: None,
        };
        assert_eq!(decode_meta(&encode_meta(&meta)).unwrap(), meta);
        meta.pending = Some(PendingBatch {
            first_seq: 6,
            entries: vec![Bytes::from_static(b"a"), Bytes::new()],
        });
        assert_eq!(decode_meta(&encode_meta(&meta)).unwrap(), meta);
    }

    #[test]
    fn meta_bytes_are_the_documented_layout() {
        let meta = Meta {
            seq_counter: 0x0102,
            last_hash: Hash([0xab; 32]),
            pending: Some(PendingBatch {
                first_seq: 0x0101,
                entries: vec![Bytes::from_static(b"xy")],
            }),
        };
        let mut expected = vec![0, 0, 0, 0, 0, 0, 1, 2];
        expected.extend_from_slice(&[0xab; 32]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 2, b'x', b'y']);
        assert_eq!(encode_meta(&meta), expected);
        for cut in [0, 8, 40, expected.len() - 1] {
            assert!(decode_meta(&expected[..cut]).is_err(), "truncated at {cut}");
        }
        let mut trailing = expected.clone();
        trailing.push(0);
        assert!(decode_meta(&trailing).is_err(), "trailing bytes");
    }
}
