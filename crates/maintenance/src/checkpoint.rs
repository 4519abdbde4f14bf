//! GC checkpoints: before garbage collection deletes anything, the oldest retained snapshot of
//! the dataset is written to the bucket whole — its live files, its row, the expired snapshots
//! that added any of those files, the dataset's identity — at
//! `_catalog/<namespace>/<dataset>/checkpoints/<id>.json`. A catalog rebuild starts from it, so
//! the commit records of older snapshots (which describe files GC deletes) and older
//! checkpoints are then deleted.
//!
//! A dataset whose oldest retained snapshot is its first needs no checkpoint: its commit
//! records are complete.

use crate::error::{Error, Result};
use duckmesh_catalog::{Catalog, DatasetRecord};
use duckmesh_storage::{ObjectStore, layout};

/// What checkpointing did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckpointReport {
    /// The checkpoint written (`None`: none needed).
    pub checkpoint: Option<String>,
    /// Commit records and checkpoints older than it, deleted.
    pub deleted: Vec<String>,
}

/// Writes the checkpoint of `dataset` at its oldest retained snapshot and deletes the records
/// it supersedes. `expired` are the snapshots this run expires (a dry run has not expired them,
/// so the checkpoint it would write is past them).
pub async fn checkpoint_dataset(
    catalog: &Catalog,
    store: &dyn ObjectStore,
    dataset: &DatasetRecord,
    expired: &[i64],
    dry_run: bool,
) -> Result<CheckpointReport> {
    let Some(checkpoint) = catalog.checkpoint(dataset.id).await.map_err(Error::catalog("reading the checkpoint"))?
    else {
        return Ok(CheckpointReport::default());
    };
    let oldest = match expired.last() {
        Some(last) if dry_run => checkpoint.snapshot.id.max(last + 1),
        _ => checkpoint.snapshot.id,
    };
    if checkpoint.snapshot.parent.is_none() && oldest == checkpoint.snapshot.id {
        return Ok(CheckpointReport::default());
    }
    let key = layout::checkpoint_key(&dataset.namespace, &dataset.name, oldest).map_err(Error::storage("naming"))?;
    if !dry_run {
        let body = serde_json::to_vec_pretty(&checkpoint).map_err(|error| Error::Task {
            message: format!("cannot encode the checkpoint of dataset {:?}: {error}", dataset.name),
        })?;
        store.put(&key, body.into()).await.map_err(Error::storage("writing the checkpoint"))?;
    }
    let mut report = CheckpointReport { checkpoint: Some(key), deleted: Vec::new() };
    for prefix in [
        layout::checkpoints_prefix(&dataset.namespace, &dataset.name),
        layout::commit_records_prefix(&dataset.namespace, &dataset.name),
    ] {
        let prefix = prefix.map_err(Error::storage("naming"))?;
        for object in store.list(&prefix).await.map_err(Error::storage("listing catalog records"))? {
            if layout::record_snapshot_id(&object.key).is_some_and(|id| id < oldest) {
                if !dry_run {
                    crate::gc::delete(store, &object.key).await?;
                }
                report.deleted.push(object.key);
            }
        }
    }
    tracing::info!(dataset = %dataset.name, namespace = %dataset.namespace, snapshot = oldest, dry_run, deleted = report.deleted.len(), "GC checkpoint");
    Ok(report)
}
