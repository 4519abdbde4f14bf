//! Every finished maintenance run is recorded in the catalog (`maintenance_runs`), where the
//! scheduler that serves `/metrics` counts it: runners are short-lived processes no Prometheus
//! scrapes.

use crate::compact::CompactionOutcome;
use crate::error::Error;
use crate::gc::GcReport;
use crate::integrity::IntegrityReport;
use duckmesh_catalog::{AttemptRef, Catalog, MaintenanceRun};
use duckmesh_core::DatasetId;

/// Records `run`; a failure to record is logged (the run itself is done).
pub(crate) async fn record(catalog: &Catalog, run: MaintenanceRun) {
    if let Err(error) = catalog.record_maintenance_run(&run).await {
        tracing::warn!(%error, error_code = error.error_code(), kind = %run.kind, "cannot record a maintenance run");
    }
}

/// Records a run that did not finish.
pub async fn record_failure(catalog: &Catalog, kind: &str, dataset: Option<DatasetId>, error: &Error) {
    let run = MaintenanceRun {
        dataset,
        kind: kind.to_owned(),
        result: "failed".into(),
        error_code: Some(error.error_code().to_owned()),
        ..MaintenanceRun::default()
    };
    record(catalog, run).await;
}

/// The dataset a leased maintenance attempt works on, when the catalog still says.
pub(crate) async fn dataset_of(catalog: &Catalog, attempt: AttemptRef) -> Option<DatasetId> {
    let record = catalog.attempt(attempt.attempt).await.ok()?;
    catalog.task(record.task).await.ok()?.output.map(|output| output.dataset)
}

/// A compaction's record.
pub(crate) fn compaction(dataset: Option<DatasetId>, outcome: &CompactionOutcome) -> MaintenanceRun {
    let (result, bytes_rewritten) = match outcome {
        CompactionOutcome::Committed { bytes_written, .. } => ("succeeded", *bytes_written),
        CompactionOutcome::Unchanged { .. } => ("noop", 0),
    };
    MaintenanceRun {
        dataset,
        kind: "compact".into(),
        result: result.into(),
        bytes_rewritten,
        ..MaintenanceRun::default()
    }
}

/// A collection's record.
pub(crate) fn gc(dataset: Option<DatasetId>, report: &GcReport) -> MaintenanceRun {
    let count = |items: &[String]| i64::try_from(items.len()).unwrap_or(i64::MAX);
    let deleted = report.files.len()
        + report.manifests.len()
        + report.staging.len()
        + report.exports.len()
        + report.records.len();
    MaintenanceRun {
        dataset,
        kind: "gc".into(),
        result: if deleted == 0 && report.expired_snapshots.is_empty() { "noop" } else { "succeeded" }.into(),
        unreferenced_deleted: count(&report.files) + count(&report.manifests),
        staging_deleted: count(&report.staging),
        exports_deleted: count(&report.exports),
        ..MaintenanceRun::default()
    }
}

/// An integrity run's record.
pub(crate) fn integrity(dataset: DatasetId, report: &IntegrityReport) -> MaintenanceRun {
    let counts = report.counts;
    MaintenanceRun {
        dataset: Some(dataset),
        kind: "integrity".into(),
        result: if report.is_clean() { "succeeded" } else { "issues_found" }.into(),
        files_checked: counts.files_checked,
        missing_files: counts.missing_files,
        size_mismatch_files: counts.size_mismatch_files,
        ..MaintenanceRun::default()
    }
}
