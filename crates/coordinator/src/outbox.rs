//! The outbox dispatcher: delivers the catalog's outbox rows at least once (docs/catalog.md,
//! "The outbox").
//!
//! Each round claims up to [`OutboxOptions::batch`] due rows (`FOR UPDATE SKIP LOCKED`, so any
//! number of dispatchers may run) and delivers them:
//!
//! - `snapshot_committed`: the snapshot's **commit record** (dataset identity and snapshot row,
//!   read from the catalog in one query for the whole batch) is written to the bucket at
//!   `_catalog/<namespace>/<dataset>/snapshots/<id>.json`, the input of
//!   `duckmesh catalog rebuild`. Writing it again writes the same record, so redelivery is
//!   harmless. A snapshot that no longer exists (its dataset was deleted) completes the row
//!   with a log line.
//! - every other kind (`task_succeeded`, `task_retrying`, `task_failed`, `job_finished`, …) has
//!   no external consumer yet: it is completed as delivered, so the outbox drains and its
//!   depth and age metrics mean what they say.
//!
//! A failed delivery is offered again after the catalog's backoff (1 s → 5 min); after the
//! configured number of deliveries the row becomes `Failed` and alerts (runbook
//! `docs/runbooks/outbox-failed-rows.md`).

use duckmesh_catalog::{Catalog, OutboxMessage};
use duckmesh_core::{DatasetId, SnapshotId};
use duckmesh_storage::{ObjectStore, layout};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The longest pause after failed rounds.
const FAILURE_PAUSE_MAX: Duration = Duration::from_secs(30);

/// The pauses after failed rounds: twice the poll, doubling to 32 polls or 30 s, whichever is
/// less, for ever (`backon`; a successful round starts a fresh series).
fn failure_pauses(poll: Duration) -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(poll.saturating_mul(2).min(FAILURE_PAUSE_MAX))
        .with_max_delay(poll.saturating_mul(32).min(FAILURE_PAUSE_MAX))
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// The kind of the rows that become commit records.
pub const SNAPSHOT_COMMITTED: &str = "snapshot_committed";

/// How the dispatcher works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxOptions {
    /// Rows claimed per round.
    pub batch: i64,
    /// How long a claimed row stays invisible to other dispatchers (a dispatcher that dies
    /// mid-delivery lets it run out).
    pub visibility: Duration,
    /// Pause after a round that found less than a full batch.
    pub poll: Duration,
    /// Records written at once.
    pub concurrency: usize,
}

impl Default for OutboxOptions {
    /// 100 rows a round, 60 s visibility, a round every second while idle, 8 writes at once.
    fn default() -> Self {
        Self { batch: 100, visibility: Duration::from_secs(60), poll: Duration::from_secs(1), concurrency: 8 }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Commit records written.
    pub records_written: usize,
    /// Rows completed without an external delivery (other kinds, vanished snapshots).
    pub completed_without_delivery: usize,
    /// Deliveries that failed (offered again later, or now `Failed`).
    pub failed: usize,
    /// Rows that used their last delivery and are now `Failed`.
    pub exhausted: usize,
}

/// Delivers the outbox (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct OutboxDispatcher {
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    options: OutboxOptions,
}

/// A row that becomes a commit record.
struct Commit {
    message: OutboxMessage,
    key: (DatasetId, SnapshotId),
}

impl OutboxDispatcher {
    /// A dispatcher delivering `catalog`'s outbox to `store`.
    pub fn new(catalog: Catalog, store: Arc<dyn ObjectStore>, options: OutboxOptions) -> Self {
        Self { catalog, store, options }
    }

    /// Rounds until `shutdown`: at once again after a full batch, after [`OutboxOptions::poll`]
    /// otherwise. A catalog failure is logged and retried after a growing pause (at most 30 s).
    /// A round in progress finishes (its writes are bounded by the store's timeouts).
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut failures = failure_pauses(self.options.poll);
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let pause = match self.dispatch_once().await {
                Ok(report) => {
                    failures = failure_pauses(self.options.poll);
                    if report.claimed >= usize::try_from(self.options.batch).unwrap_or(usize::MAX) {
                        Duration::ZERO
                    } else {
                        self.options.poll
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, error_code = error.error_code(), "outbox round failed; retrying");
                    failures.next().unwrap_or(FAILURE_PAUSE_MAX)
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One round: claims due rows and delivers them. Only a catalog failure is an error (the
    /// claimed rows then come back when their visibility runs out).
    pub async fn dispatch_once(&self) -> Result<DispatchReport, duckmesh_catalog::Error> {
        let messages = self.catalog.claim_outbox(self.options.batch, self.options.visibility).await?;
        let mut report = DispatchReport { claimed: messages.len(), ..DispatchReport::default() };
        if messages.is_empty() {
            return Ok(report);
        }
        let mut done = Vec::new();
        let mut commits = Vec::new();
        for message in messages {
            if message.kind != SNAPSHOT_COMMITTED {
                // No external consumer yet: delivered by completing it.
                done.push(message.id);
                report.completed_without_delivery += 1;
                continue;
            }
            let id = |field: &str| message.payload.get(field).and_then(serde_json::Value::as_i64);
            match (id("dataset"), id("snapshot")) {
                (Some(dataset), Some(snapshot)) => {
                    commits.push(Commit { key: (DatasetId(dataset), SnapshotId(snapshot)), message });
                }
                _ => {
                    let error = format!("the payload names no dataset and snapshot: {}", message.payload);
                    self.fail(&message, &error, &mut report).await?;
                }
            }
        }

        let keys: Vec<_> = commits.iter().map(|commit| commit.key).collect();
        let records: HashMap<_, _> = self
            .catalog
            .commit_records(&keys)
            .await?
            .into_iter()
            .map(|record| ((DatasetId(record.dataset.id), SnapshotId(record.snapshot.id)), record))
            .collect();
        let writes = commits.into_iter().map(|commit| {
            let record = records.get(&commit.key);
            let span =
                tracing::info_span!("outbox.dispatch", kind = %commit.message.kind, attempts = commit.message.attempts);
            async move {
                let Some(record) = record else {
                    return (commit, Ok(false));
                };
                let written = write_record(self.store.as_ref(), record).await;
                (commit, written.map(|()| true))
            }
            .instrument(span)
        });
        let outcomes: Vec<_> =
            futures::stream::iter(writes).buffer_unordered(self.options.concurrency.max(1)).collect().await;
        for (commit, outcome) in outcomes {
            match outcome {
                Ok(true) => {
                    done.push(commit.message.id);
                    report.records_written += 1;
                }
                Ok(false) => {
                    tracing::info!(outbox_id = commit.message.id, dataset = %commit.key.0, snapshot = %commit.key.1, "the committed snapshot no longer exists; no commit record written");
                    done.push(commit.message.id);
                    report.completed_without_delivery += 1;
                }
                Err(error) => self.fail(&commit.message, &error, &mut report).await?,
            }
        }
        self.catalog.complete_outbox_batch(&done).await?;
        Ok(report)
    }

    async fn fail(
        &self,
        message: &OutboxMessage,
        error: &str,
        report: &mut DispatchReport,
    ) -> Result<(), duckmesh_catalog::Error> {
        report.failed += 1;
        tracing::warn!(outbox_id = message.id, kind = %message.kind, attempts = message.attempts, error, error_code = "outbox_delivery_failed", "outbox delivery failed");
        if self.catalog.fail_outbox(message.id, error).await? {
            report.exhausted += 1;
        }
        Ok(())
    }
}

/// Writes one commit record at its key.
async fn write_record(
    store: &dyn ObjectStore,
    record: &duckmesh_contracts::catalog_record::CommitRecord,
) -> Result<(), String> {
    let key = layout::commit_record_key(&record.dataset.namespace, &record.dataset.name, record.snapshot.id)
        .map_err(|error| error.to_string())?;
    let body = serde_json::to_vec_pretty(record).map_err(|error| error.to_string())?;
    store.put(&key, body.into()).await.map_err(|error| format!("writing {key}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_pauses_double_from_two_polls_to_32_polls_or_30_seconds() {
        let millis = |poll: Duration| -> Vec<u64> {
            // backon computes in f32 seconds: compare whole milliseconds.
            failure_pauses(poll).take(7).map(|pause| (pause.as_secs_f64() * 1000.0).round() as u64).collect()
        };
        assert_eq!(millis(Duration::from_secs(1)), [2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
        assert_eq!(millis(Duration::from_millis(10)), [20, 40, 80, 160, 320, 320, 320]);
        assert_eq!(millis(Duration::from_secs(20)), [30_000; 7]);
    }
}
