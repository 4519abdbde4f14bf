//! Committed files brought to local disk for DuckDB to read (compaction, export): each checked
//! against the size and SHA-256 the catalog recorded.

use crate::attempt::check_stop;
use crate::error::{Error, Result};
use duckmesh_catalog::FileRecord;
use duckmesh_storage::{Download, ObjectStore, download_verified, fetch_verified_scratch};
use futures::{StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// Transfers in flight at once unless the runner says otherwise (the worker's
/// `DUCKMESH_WORKER_TRANSFER_CONCURRENCY` default). Compaction reads many small files: one at a
/// time, each would cost a full request round trip (tens of milliseconds on S3) with the CPU
/// idle meanwhile; in parallel, hashing one overlaps the transfer of the next.
pub const DEFAULT_TRANSFER_CONCURRENCY: usize = 4;

/// Inputs up to this size are fetched into memory, checked there and written to scratch once
/// ([`fetch_verified_scratch`]); larger ones stream to disk through a temporary file
/// ([`download_verified`]). The small files compaction exists for would otherwise cost a
/// temporary file, a second read and two fsyncs each. At most
/// `concurrency × IN_MEMORY_MAX_BYTES` are held at once.
const IN_MEMORY_MAX_BYTES: u64 = 8 << 20;

/// Downloads `files` into `scratch/in/` (numbered, in order), verified, at most `concurrency`
/// at a time; `stop` is checked before each. The first failure ends the download (the others
/// in flight are dropped with it).
pub(crate) async fn download(
    store: &dyn ObjectStore,
    files: &[FileRecord],
    scratch: &Path,
    concurrency: usize,
    stop: &CancellationToken,
) -> Result<Vec<PathBuf>> {
    let incoming = scratch.join("incoming");
    let inputs = scratch.join("in");
    for dir in [&incoming, &inputs] {
        std::fs::create_dir_all(dir)
            .map_err(|source| Error::Io { operation: "creating a scratch directory", source })?;
    }
    let fetches = files.iter().enumerate().map(|(index, file)| {
        let (incoming, target) = (&incoming, inputs.join(format!("{index:06}.parquet")));
        async move {
            check_stop(stop)?;
            let bytes = u64::try_from(file.bytes).unwrap_or_default();
            let fetched = if bytes <= IN_MEMORY_MAX_BYTES {
                fetch_verified_scratch(store, &file.path, &target, bytes, &file.sha256).await
            } else {
                download_verified(store, &file.path, incoming, &target, bytes, &file.sha256).await
            };
            match fetched.map_err(Error::storage("downloading a committed file"))? {
                Download::Verified => Ok(target),
                Download::Mismatch(message) => Err(Error::InputCorrupt { path: file.path.clone(), message }),
            }
        }
    });
    futures::stream::iter(fetches).buffered(concurrency.max(1)).try_collect().await
}
