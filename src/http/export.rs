//! `GET /v1/ledgers/{ledger_id}/export?from=&to=`: the entries' exact stored bytes as NDJSON,
//! streamed, for offline verification (`scripts/verify_chain.py --jsonl`).
//!
//! One line per entry: `{"seq", "stored" (base64 of the stored bytes), "entry_hash",
//! "prev_hash", "timestamp"}`, the last three being what the index recorded. A line without
//! `stored` means the index names an object that cannot be read. A storage error mid-stream
//! aborts the response, so a truncated export can never pass for a complete one.
//!
//! When the ledger has a signed checkpoint, the first line is the latest one, in a shape no
//! entry line has: `{"checkpoint": {v, ledger_id, seq, last_hash, timestamp, key_id,
//! signature}}`. It is read before the head, so its seq is at most the head the export runs to;
//! it is left out when `to` is below its seq.
//!
//! The last line is the end line, `{"end": {v, ledger_id, from, to, last_hash, head_seq,
//! head_hash, timestamp, key_id, signature}}` (signed when the service has a key): what the
//! export holds and the head it was cut at, so an export cut short or emptied is told from a
//! whole one. The range follows the one rule verification follows ([`VerifyRange::within`]):
//! a `from` or `to` past the head is `400 invalid_range`, not an empty `200`.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::AppState;
use super::error::ApiError;
use super::extract::{LedgerPath, Params};
use crate::chain::checkpoint::{Checkpoint, ExportEnd};
use crate::ledger::{
    ExportCheckpointLine, ExportEndLine, ExportLine, ExportedEntry, LedgerError, VerifyRange,
};

fn line(entry: &ExportedEntry) -> Vec<u8> {
    ExportLine::Entry(entry.into()).to_ndjson()
}

fn checkpoint_line(checkpoint: Checkpoint) -> Vec<u8> {
    ExportLine::Checkpoint(ExportCheckpointLine { checkpoint }).to_ndjson()
}

fn end_line(end: ExportEnd) -> Vec<u8> {
    ExportLine::End(ExportEndLine { end }).to_ndjson()
}

pub async fn export(
    State(state): State<AppState>,
    path: LedgerPath,
    params: Params,
) -> Result<Response, ApiError> {
    let params = params.only(&["from", "to"])?;
    let range = VerifyRange {
        from: params.u64("from")?,
        to: params.u64("to")?,
    };
    let checkpoint = match state.ledger.latest_checkpoint(&path.ledger).await {
        Ok(checkpoint) => checkpoint,
        // An unreadable checkpoint must not block the export of the entries; verification
        // of the ledger reports it.
        Err(LedgerError::Corrupt { detail, .. }) => {
            tracing::warn!(ledger_id = %path.ledger, %detail, "export without its checkpoint");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let export = state.ledger.export(&path.ledger, range).await?;
    let to = export.end.to;
    // A checkpoint past the exported range would read as entries missing from the bundle.
    let first = checkpoint
        .filter(|cp| cp.seq <= to)
        .map(|cp| Ok(checkpoint_line(cp)));
    // The end line follows the last entry only when every entry was streamed: an error is
    // the stream's last item (and aborts the response), never followed by the end line.
    let last = futures::stream::once(futures::future::ready(Ok(end_line(export.end))));
    let lines = futures::stream::iter(first)
        .chain(export.entries.map(|entry| entry.map(|e| line(&e))))
        .chain(last)
        .scan(false, |failed, item: Result<Vec<u8>, LedgerError>| {
            let next = (!*failed).then_some(item);
            *failed |= next.as_ref().is_some_and(Result::is_err);
            futures::future::ready(next)
        });
    let body = Body::from_stream(lines);
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::chain::checkpoint::{CheckpointBody, Signer};
    use crate::chain::entry::{LedgerId, Timestamp};
    use crate::chain::hash::Hash;
    use crate::store::SeqItem;

    fn entry(stored: Option<&[u8]>) -> ExportedEntry {
        ExportedEntry {
            item: SeqItem {
                seq: 7,
                entry_hash: Hash([1; 32]),
                prev_hash: Hash([2; 32]),
                timestamp: Timestamp::from_unix_micros(1_700_000_000_123_456).unwrap(),
                object_key: "not exported".into(),
                version_id: Some("not exported either".into()),
            },
            stored: stored.map(bytes::Bytes::copy_from_slice),
        }
    }

    #[test]
    fn an_entry_line_is_the_documented_ndjson_object() {
        let h1 = "01".repeat(32);
        let h2 = "02".repeat(32);
        assert_eq!(
            String::from_utf8(line(&entry(Some(b"stored bytes")))).unwrap(),
            format!(
                "{{\"seq\":7,\"stored\":\"c3RvcmVkIGJ5dGVz\",\"entry_hash\":\"{h1}\",\"prev_hash\":\"{h2}\",\"timestamp\":\"2023-11-14T22:13:20.123456Z\"}}\n"
            )
        );
        assert_eq!(
            String::from_utf8(line(&entry(None))).unwrap(),
            format!(
                "{{\"seq\":7,\"entry_hash\":\"{h1}\",\"prev_hash\":\"{h2}\",\"timestamp\":\"2023-11-14T22:13:20.123456Z\"}}\n"
            )
        );
    }

    #[test]
    fn a_checkpoint_line_wraps_the_stored_checkpoint() {
        let checkpoint = Signer::from_seed(&[5; 32]).sign_checkpoint(CheckpointBody {
            ledger_id: LedgerId::parse("ex").unwrap(),
            seq: 3,
            last_hash: Hash([4; 32]),
            timestamp: Timestamp::from_unix_micros(0).unwrap(),
        });
        let mut expected = b"{\"checkpoint\":".to_vec();
        expected.extend_from_slice(&checkpoint.to_json());
        expected.extend_from_slice(b"}\n");
        assert_eq!(checkpoint_line(checkpoint), expected);
    }
}
