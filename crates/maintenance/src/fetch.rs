//! Committed files brought to local disk for DuckDB to read (compaction, export): each checked
//! against the size and SHA-256 the catalog recorded.

use crate::attempt::check_stop;
use crate::error::{Error, Result};
use duckmesh_catalog::FileRecord;
use duckmesh_storage::{Download, ObjectStore, download_verified};
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// Downloads `files` into `scratch/in/` (numbered, in order), verified; `stop` is checked
/// before each.
pub(crate) async fn download(
    store: &dyn ObjectStore,
    files: &[FileRecord],
    scratch: &Path,
    stop: &CancellationToken,
) -> Result<Vec<PathBuf>> {
    let incoming = scratch.join("incoming");
    let inputs = scratch.join("in");
    for dir in [&incoming, &inputs] {
        std::fs::create_dir_all(dir)
            .map_err(|source| Error::Io { operation: "creating a scratch directory", source })?;
    }
    let mut paths = Vec::with_capacity(files.len());
    for (index, file) in files.iter().enumerate() {
        check_stop(stop)?;
        let target = inputs.join(format!("{index:06}.parquet"));
        let bytes = u64::try_from(file.bytes).unwrap_or_default();
        match download_verified(store, &file.path, &incoming, &target, bytes, &file.sha256)
            .await
            .map_err(Error::storage("downloading a committed file"))?
        {
            Download::Verified => paths.push(target),
            Download::Mismatch(message) => return Err(Error::InputCorrupt { path: file.path.clone(), message }),
        }
    }
    Ok(paths)
}
