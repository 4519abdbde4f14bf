//! [`Property::SnapshotOrder`] and [`Property::FilesIntact`]: the snapshot-consistency checks
//! of a restored catalog ([`duckmesh_maintenance::restore`]) and the integrity check against the
//! bucket, applied to a catalog after a run.

use crate::error::{Error, Result};
use crate::{HistoryReport, Property, Violation};
use duckmesh_catalog::{Catalog, ProblemKind};
use duckmesh_maintenance::restore::snapshot_violations;
use duckmesh_maintenance::{IntegrityOptions, check_dataset};
use duckmesh_storage::ObjectStore;
use std::time::Duration;

pub(crate) async fn check(
    catalog: &Catalog,
    store: &dyn ObjectStore,
    verify_hashes: bool,
    report: &mut HistoryReport,
) -> Result<()> {
    let states = catalog.dataset_states().await.map_err(Error::catalog("reading datasets, snapshots and files"))?;
    let options = IntegrityOptions { verify_hashes, orphan_grace: Duration::from_secs(3600), concurrency: 8 };
    for state in &states {
        let name = format!("{}/{}", state.dataset.namespace, state.dataset.name);
        report.checked.datasets += 1;
        report.checked.snapshots += state.snapshots.len();
        for violation in snapshot_violations(state) {
            report.violations.push(Violation::new(
                Property::SnapshotOrder,
                format!("{name}: {} — {}", violation.kind.as_str(), violation.detail),
            ));
        }
        let integrity = check_dataset(catalog, store, &state.dataset, &options).await?;
        report.checked.files += usize::try_from(integrity.counts.files_checked).unwrap_or_default();
        for problem in integrity.problems.iter().filter(|problem| problem.kind != ProblemKind::Orphan) {
            report.violations.push(Violation::new(
                Property::FilesIntact,
                format!("{name}: {} {} — {}", problem.kind.as_str(), problem.path, problem.detail),
            ));
        }
    }
    Ok(())
}
