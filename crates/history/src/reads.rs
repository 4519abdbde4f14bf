//! Reading a dataset as of one snapshot, straight from its committed files (each verified
//! against the catalog's size and SHA-256), and the pinned reads built on it.

use crate::error::{Error, Result};
use crate::{Property, Violation};
use duckmesh_catalog::{Catalog, DatasetRecord};
use duckmesh_core::SnapshotId;
use duckmesh_engine::sql::path_literal;
use duckmesh_engine::{Database, Limits};
use duckmesh_storage::{Download, ObjectStore, fetch_verified_scratch};
use std::path::PathBuf;

/// Rows, every value as DuckDB's text (`None` for `NULL`).
pub(crate) type Rows = Vec<Vec<Option<String>>>;

/// Downloads the files of `dataset` at `snapshot` and runs `query` over them, where `query`
/// gets the SQL of the relation (`read_parquet([...])`). `Ok(Err(..))` when a file does not
/// match what the catalog recorded (a finding for the caller to report); no files give no rows.
pub(crate) async fn query_snapshot(
    catalog: &Catalog,
    store: &dyn ObjectStore,
    dataset: &DatasetRecord,
    snapshot: SnapshotId,
    query: impl FnOnce(&str) -> String + Send + 'static,
) -> Result<Result<Rows, String>> {
    let files =
        catalog.snapshot_files(dataset.id, snapshot).await.map_err(Error::catalog("listing a snapshot's files"))?;
    if files.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let scratch = tempfile::tempdir()?;
    let mut paths: Vec<PathBuf> = Vec::with_capacity(files.len());
    for (index, file) in files.iter().enumerate() {
        let target = scratch.path().join(format!("{index:06}.parquet"));
        let bytes = u64::try_from(file.bytes).unwrap_or_default();
        match fetch_verified_scratch(store, &file.path, &target, bytes, &file.sha256).await {
            Ok(Download::Verified) => paths.push(target),
            Ok(Download::Mismatch(message)) => return Ok(Err(format!("{}: {message}", file.path))),
            Err(duckmesh_storage::Error::NotFound { .. }) => return Ok(Err(format!("{} is missing", file.path))),
            Err(source) => {
                return Err(Error::Storage { step: "downloading a committed file", source: Box::new(source) });
            }
        }
    }
    let spill = scratch.path().join("spill");
    let rows = tokio::task::spawn_blocking(move || -> Result<Rows> {
        let database = Database::open(&Limits { memory_limit_bytes: None, threads: Some(2), spill_dir: spill })?;
        let list: Vec<String> = paths.iter().map(|path| path_literal(path)).collect();
        let relation = format!("read_parquet([{}], union_by_name = true)", list.join(", "));
        Ok(database.query_text(&query(&relation))?)
    })
    .await
    .map_err(|error| Error::Expectation(format!("reading a snapshot panicked: {error}")))??;
    drop(scratch);
    Ok(Ok(rows))
}

/// A read pinned to one snapshot, taken during a run and repeated by [`crate::check`]: the
/// dataset's rows at that snapshot (sorted, so the multiset is compared) must not change,
/// whatever commits, compactions and GC ran in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedRead {
    /// The dataset's namespace.
    pub namespace: String,
    /// The dataset's name.
    pub dataset: String,
    /// The snapshot read.
    pub snapshot: SnapshotId,
    /// Its rows when first read, each value as text, sorted.
    pub rows: Vec<Vec<Option<String>>>,
}

impl PinnedRead {
    /// Reads `namespace/name` at `snapshot` (its latest when `None`; an error when it has none).
    pub async fn take(
        catalog: &Catalog,
        store: &dyn ObjectStore,
        namespace: &str,
        name: &str,
        snapshot: Option<SnapshotId>,
    ) -> Result<Self> {
        let dataset = catalog.dataset_by_name(namespace, name).await.map_err(Error::catalog("reading a dataset"))?;
        let Some(snapshot) = snapshot.or(dataset.current_snapshot) else {
            return Err(Error::Expectation(format!("{namespace}/{name} has no snapshot to pin")));
        };
        let rows = query_snapshot(catalog, store, &dataset, snapshot, all_rows)
            .await?
            .map_err(|message| Error::Expectation(format!("pinning {namespace}/{name}@{snapshot}: {message}")))?;
        Ok(Self { namespace: namespace.to_owned(), dataset: name.to_owned(), snapshot, rows })
    }

    /// Reads it again: a violation when the rows differ or can no longer be read.
    pub async fn verify(&self, catalog: &Catalog, store: &dyn ObjectStore) -> Result<Option<Violation>> {
        let what = format!("{}/{}@{}", self.namespace, self.dataset, self.snapshot);
        let dataset = catalog
            .dataset_by_name(&self.namespace, &self.dataset)
            .await
            .map_err(Error::catalog("reading a pinned dataset"))?;
        let now = match catalog.snapshot(dataset.id, self.snapshot).await {
            Ok(_) => query_snapshot(catalog, store, &dataset, self.snapshot, all_rows).await?,
            Err(error) => Err(format!("the snapshot is gone: {error}")),
        };
        Ok(match now {
            Err(message) => {
                Some(Violation::new(Property::PinnedReadStable, format!("{what} cannot be read: {message}")))
            }
            Ok(rows) if rows == self.rows => None,
            Ok(rows) => Some(Violation::new(
                Property::PinnedReadStable,
                format!(
                    "{what} returned {} rows, {} when pinned; first difference: {}",
                    rows.len(),
                    self.rows.len(),
                    {
                        let index = rows
                            .iter()
                            .zip(&self.rows)
                            .position(|(a, b)| a != b)
                            .unwrap_or(rows.len().min(self.rows.len()));
                        format!("row {index}: now {:?}, then {:?}", rows.get(index), self.rows.get(index))
                    }
                ),
            )),
        })
    }
}

fn all_rows(relation: &str) -> String {
    format!("SELECT COLUMNS(*)::VARCHAR FROM {relation} ORDER BY ALL")
}
