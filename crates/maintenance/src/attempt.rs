//! One leased attempt of a maintenance task: confirmed, its lease renewed while it works, and
//! its failure reported — the same protocol as the worker's `sql` attempts.

use crate::error::{Error, Result};
use duckmesh_catalog::{AttemptRecord, AttemptRef, Catalog, DatasetRecord, Failure, TaskRecord};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A leased attempt about to run.
pub(crate) struct Leased<'a> {
    pub catalog: &'a Catalog,
    pub attempt: AttemptRef,
    pub runner: Option<&'a str>,
    pub heartbeat: Duration,
}

impl Leased<'_> {
    /// Confirms the attempt, runs `work` while heartbeating (a refused heartbeat cancels the
    /// token `work` is given), and reports a failure that is not a lost fence to the catalog.
    pub async fn run<T, F, Fut>(self, work: F) -> Result<T>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.catalog.confirm_attempt(self.attempt, self.runner).await.map_err(Error::catalog("confirming"))?;
        let stop = CancellationToken::new();
        let beat = tokio::spawn(heartbeat(self.catalog.clone(), self.attempt, self.heartbeat, stop.clone()));
        let result = work(stop.clone()).await;
        stop.cancel();
        let _ = beat.await;
        if let Err(error) = &result
            && !error.is_fenced()
        {
            let failure = Failure {
                code: error.error_code().to_owned(),
                message: error.to_string(),
                retryable: error.is_retryable(),
            };
            if let Err(report) = self.catalog.fail_attempt(self.attempt, &failure).await {
                tracing::warn!(error = %report, code = report.error_code(), "could not report the failure");
            }
        }
        result
    }
}

/// A maintenance attempt with its task and the dataset the task names as its output.
pub(crate) struct Maintained {
    pub attempt: AttemptRecord,
    pub task: TaskRecord,
    pub dataset: DatasetRecord,
}

impl Maintained {
    /// Reads them, checking the task is of `kind` and names a dataset (`verb` says what the
    /// task would do to it, for the error).
    pub async fn read(catalog: &Catalog, attempt: AttemptRef, kind: &str, verb: &str) -> Result<Self> {
        let record = catalog.attempt(attempt.attempt).await.map_err(Error::catalog("reading the attempt"))?;
        let task = catalog.task(record.task).await.map_err(Error::catalog("reading the task"))?;
        if task.kind != kind {
            return Err(Error::InvalidSpec {
                message: format!("task {:?} is of kind {:?}, not {kind}", task.name, task.kind),
            });
        }
        let Some(output) = &task.output else {
            return Err(Error::InvalidSpec { message: format!("task {:?} names no dataset to {verb}", task.name) });
        };
        let dataset = catalog.dataset(output.dataset).await.map_err(Error::catalog("reading the dataset"))?;
        Ok(Self { attempt: record, task, dataset })
    }
}

/// `Err(Fenced)` once the attempt's heartbeat was refused.
pub(crate) fn check_stop(stop: &CancellationToken) -> Result<()> {
    if stop.is_cancelled() { Err(Error::Fenced { message: "the attempt lost its lease".into() }) } else { Ok(()) }
}

/// Renews the lease every `interval` until `stop`; a lost fence cancels `stop`.
async fn heartbeat(catalog: Catalog, attempt: AttemptRef, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match catalog.heartbeat(attempt).await {
            Ok(_) => {}
            Err(error) if error.is_fencing() => {
                tracing::warn!(code = error.error_code(), "maintenance attempt fenced out: stopping");
                stop.cancel();
                return;
            }
            Err(error) => tracing::warn!(code = error.error_code(), error = %error, "heartbeat failed; trying again"),
        }
    }
}
