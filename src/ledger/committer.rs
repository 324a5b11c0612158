//! One committer task per ledger: queueing, batching and replies around the protocol's
//! [`Writer`] (in [`super::commit`]).
//!
//! Appends queue on a bounded channel. The task takes everything queued (up to the batch's
//! record and byte bounds, optionally lingering a moment for more), hands the whole batch to
//! the writer, and answers every request. While it works, new appends queue up and form the
//! next batch, so batches grow with load and a lone append is a batch of one with no added
//! wait.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, info_span};

use super::cap::LedgerCap;
use super::checkpoint::MovedLedgers;
use super::commit::Writer;
use super::{Append, LedgerError, LedgerMetrics, Options, Receipt};
use crate::chain::entry::LedgerId;
use crate::store::Stores;

/// One request waiting for its batch: one record, or a batch request's records, which are
/// claimed together.
pub(crate) struct Request {
    pub appends: Vec<Append>,
    pub reply: oneshot::Sender<Result<Vec<Receipt>, LedgerError>>,
}

impl Request {
    /// Bytes the records add to a batch (their stored size, near enough for bounding).
    fn size(&self) -> usize {
        self.appends.iter().map(Append::stored_size).sum()
    }
}

pub(crate) struct Committer {
    ledger: LedgerId,
    options: Arc<Options>,
    metrics: LedgerMetrics,
    writer: Writer,
    /// Told of every batch committed, for the checkpoint rounds.
    moved: Arc<MovedLedgers>,
}

impl Committer {
    pub fn new(
        ledger: LedgerId,
        stores: Stores,
        options: Arc<Options>,
        metrics: LedgerMetrics,
        cap: Arc<LedgerCap>,
        moved: Arc<MovedLedgers>,
    ) -> Committer {
        Committer {
            writer: Writer::new(
                ledger.clone(),
                stores,
                options.clone(),
                metrics.clone(),
                cap,
            ),
            ledger,
            options,
            metrics,
            moved,
        }
    }

    /// Serves the queue until every sender is gone and the queue is empty, or until no append
    /// came for [`Options::committer_idle`]: then it closes the queue (appends that find it
    /// closed start a new committer), finishes what is already queued, and ends.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut carried: Option<Request> = None;
        loop {
            let first = match carried.take() {
                Some(r) => r,
                None => match tokio::time::timeout(self.options.committer_idle, rx.recv()).await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(_idle) => {
                        rx.close();
                        continue;
                    }
                },
            };
            let (mut bytes, mut records) = (first.size(), first.appends.len());
            let mut batch = vec![first];
            let linger_until = Instant::now() + self.options.batch_linger;
            while records < self.options.batch_max_records {
                let next = match rx.try_recv() {
                    Ok(r) => Some(r),
                    Err(_) if self.options.batch_linger.is_zero() => None,
                    Err(_) => tokio::time::timeout_at(linger_until, rx.recv())
                        .await
                        .ok()
                        .flatten(),
                };
                let Some(next) = next else { break };
                if bytes + next.size() > self.options.batch_max_bytes
                    || records + next.appends.len() > self.options.batch_max_records
                {
                    carried = Some(next);
                    break;
                }
                bytes += next.size();
                records += next.appends.len();
                batch.push(next);
            }
            let span = info_span!("batch", ledger_id = %self.ledger, size = records);
            self.commit(batch).instrument(span).await;
        }
    }

    async fn commit(&mut self, batch: Vec<Request>) {
        let (requests, replies): (Vec<Vec<Append>>, Vec<_>) =
            batch.into_iter().map(|r| (r.appends, r.reply)).unzip();
        let results = match self.writer.commit(&requests).await {
            Err(e) => vec![Err(e); requests.len()],
            Ok(committed) => {
                let appended = committed.iter().flatten().flatten();
                let replays = appended.clone().filter(|a| a.replayed).count();
                let new = appended.count() - replays;
                if new > 0 {
                    self.metrics.batch_size.observe(new as f64);
                }
                let seqs = committed
                    .iter()
                    .flatten()
                    .flatten()
                    .filter(|a| !a.replayed)
                    .map(|a| a.entry.seq);
                if let (Some(first), Some(last)) = (seqs.clone().min(), seqs.max()) {
                    self.moved.note(&self.ledger, first, last);
                }
                self.metrics.replays.inc_by(replays as u64);
                committed
                    .into_iter()
                    .map(|appended| {
                        Ok(appended?
                            .iter()
                            .map(|a| Receipt::new(&self.ledger, a))
                            .collect())
                    })
                    .collect()
            }
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // A client that went away still had its record committed; nothing to undo.
            let _ = reply.send(result);
        }
    }
}
