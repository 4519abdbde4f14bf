//! Committed files brought local for DuckDB to read (compaction, export), in memory or on disk: each checked
//! against the size and SHA-256 the catalog recorded.

use crate::attempt::check_stop;
use crate::error::{Error, Result};
use bytes::Bytes;
use duckmesh_catalog::FileRecord;
use duckmesh_storage::{Download, Fetched, ObjectStore, download_verified, fetch_verified};
use futures::{StreamExt, TryStreamExt};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// Transfers in flight at once unless the runner says otherwise (the worker's
/// `DUCKMESH_WORKER_TRANSFER_CONCURRENCY` default). Compaction reads many small files: one at a
/// time, each would cost a full request round trip (tens of milliseconds on S3) with the CPU
/// idle meanwhile; in parallel, hashing one overlaps the transfer of the next.
pub const DEFAULT_TRANSFER_CONCURRENCY: usize = 4;

/// Inputs up to this size are fetched into memory and checked there; larger ones stream to
/// disk through a temporary file ([`download_verified`]). At most
/// `concurrency × IN_MEMORY_MAX_BYTES` are in flight at once.
const IN_MEMORY_MAX_BYTES: u64 = 8 << 20;

/// How many bytes of small inputs stay in memory (memory-backed files, [`Place::Small`]) for
/// the whole rewrite instead of being written to scratch on disk. Compaction exists for many
/// small files: on a slow or busy disk, creating and writing hundreds of scratch files costs
/// more than the rewrite reading them. Beyond the budget, small inputs are written to scratch
/// once, without the temporary file, second read and fsyncs a cache entry needs.
const MEMORY_BUDGET_BYTES: u64 = 256 << 20;

/// Most memory-backed inputs at once, whatever the budget: each holds a file descriptor for
/// the whole rewrite, and the process keeps at least half its open-file limit for everything
/// else (DuckDB's own files, sockets).
const MEMORY_MAX_FILES: u64 = 4096;

/// Committed files brought local, in the order asked for: paths DuckDB can read, some of them
/// memory-backed files that live as long as this value.
#[derive(Debug)]
pub(crate) struct Inputs {
    /// One readable path per file.
    pub(crate) paths: Vec<PathBuf>,
    /// The memory-backed files behind some of the paths; closing them frees the memory.
    held: Vec<File>,
}

impl Inputs {
    /// How many of the inputs are held in memory.
    pub(crate) fn in_memory(&self) -> usize {
        self.held.len()
    }
}

/// Where one input goes.
enum Place {
    /// Read into memory and checked there, then held in a memory-backed file (`memfd`, read
    /// through `/proc/self/fd`) if `memory` is set and one can be made (a sandbox may refuse
    /// `memfd_create`, descriptors may run out), else written to the scratch file `target` once.
    Small { target: PathBuf, memory: bool },
    /// Streamed to the scratch file through a temporary file.
    Large(PathBuf),
}

/// One fetched input.
enum Landed {
    Path(PathBuf),
    Memory(File),
}

/// Downloads `files` (numbered, in order), verified, at most `concurrency` at a time; `stop` is
/// checked before each. Small files go into memory-backed files while [`MEMORY_BUDGET_BYTES`]
/// and the open-file limit allow, the rest into `scratch/in/`. The first failure ends the
/// download (the others in flight are dropped with it).
pub(crate) async fn download(
    store: &dyn ObjectStore,
    files: &[FileRecord],
    scratch: &Path,
    concurrency: usize,
    stop: &CancellationToken,
) -> Result<Inputs> {
    download_within(store, files, scratch, concurrency, stop, memory_file_limit()).await
}

/// [`download`] with at most `max_memory_files` memory-backed inputs.
async fn download_within(
    store: &dyn ObjectStore,
    files: &[FileRecord],
    scratch: &Path,
    concurrency: usize,
    stop: &CancellationToken,
    max_memory_files: u64,
) -> Result<Inputs> {
    let incoming = scratch.join("incoming");
    let inputs = scratch.join("in");
    for dir in [&incoming, &inputs] {
        std::fs::create_dir_all(dir)
            .map_err(|source| Error::Io { operation: "creating a scratch directory", source })?;
    }
    let places = plan_places(files, max_memory_files, &inputs);
    let fetches = files.iter().zip(places).map(|(file, place)| {
        let incoming = &incoming;
        async move {
            check_stop(stop)?;
            let bytes = u64::try_from(file.bytes).unwrap_or_default();
            let storage = Error::storage("downloading a committed file");
            let corrupt = |message| Error::InputCorrupt { path: file.path.clone(), message };
            match place {
                Place::Small { target, memory } => {
                    match fetch_verified(store, &file.path, bytes, &file.sha256).await.map_err(storage)? {
                        Fetched::Verified(data) => land(data, target, memory).await,
                        Fetched::Mismatch(message) => Err(corrupt(message)),
                    }
                }
                Place::Large(target) => {
                    match download_verified(store, &file.path, incoming, &target, bytes, &file.sha256)
                        .await
                        .map_err(storage)?
                    {
                        Download::Verified => Ok(Landed::Path(target)),
                        Download::Mismatch(message) => Err(corrupt(message)),
                    }
                }
            }
        }
    });
    let landed: Vec<Landed> = futures::stream::iter(fetches).buffered(concurrency.max(1)).try_collect().await?;
    let mut result = Inputs { paths: Vec::with_capacity(landed.len()), held: Vec::new() };
    for input in landed {
        match input {
            Landed::Path(path) => result.paths.push(path),
            Landed::Memory(file) => {
                result.paths.push(PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())));
                result.held.push(file);
            }
        }
    }
    Ok(result)
}

/// Puts a small input's verified `data` where [`Place::Small`] says: a memory-backed file if
/// `memory` and one can be made, else the scratch file `target`, written once.
async fn land(data: Bytes, target: PathBuf, memory: bool) -> Result<Landed> {
    if memory {
        match memory_file(&data) {
            Ok(file) => return Ok(Landed::Memory(file)),
            Err(error) => tracing::warn!(%error, path = %target.display(), "no memory-backed input; writing scratch"),
        }
    }
    let path = target.clone();
    tokio::task::spawn_blocking(move || std::fs::write(&path, &data))
        .await
        .map_err(|error| Error::Task { message: error.to_string() })?
        .map_err(|source| Error::Io { operation: "writing a scratch file", source })?;
    Ok(Landed::Path(target))
}

/// Where each file goes: small files into memory, in order, while the budget and `max_files`
/// allow; the rest to numbered files under `inputs`.
fn plan_places(files: &[FileRecord], max_files: u64, inputs: &Path) -> Vec<Place> {
    let (mut budget, mut slots) = (MEMORY_BUDGET_BYTES, max_files);
    files
        .iter()
        .enumerate()
        .map(|(index, file)| {
            let bytes = u64::try_from(file.bytes).unwrap_or(u64::MAX);
            let target = inputs.join(format!("{index:06}.parquet"));
            if bytes > IN_MEMORY_MAX_BYTES {
                return Place::Large(target);
            }
            let memory = bytes <= budget && slots > 0;
            if memory {
                budget -= bytes;
                slots -= 1;
            }
            Place::Small { target, memory }
        })
        .collect()
}

/// How many memory-backed inputs this process may hold: none where they cannot be read back
/// by path (no `/proc`), else half the soft open-file limit, at most [`MEMORY_MAX_FILES`].
fn memory_file_limit() -> u64 {
    if !Path::new("/proc/self/fd").is_dir() {
        return 0;
    }
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(MEMORY_MAX_FILES * 2);
    (soft / 2).min(MEMORY_MAX_FILES)
}

/// A memory-backed file (`memfd`, closed on exec) holding `data`.
fn memory_file(data: &[u8]) -> std::io::Result<File> {
    let mut file = File::from(rustix::fs::memfd_create("duckmesh-input", rustix::fs::MemfdFlags::CLOEXEC)?);
    file.write_all(data)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckmesh_core::SnapshotId;
    use duckmesh_storage::LocalStore;
    use sha2::{Digest, Sha256};

    fn record(path: &str, content: &[u8]) -> FileRecord {
        FileRecord {
            path: path.into(),
            bytes: i64::try_from(content.len()).expect("size"),
            rows: 1,
            sha256: hex::encode(Sha256::digest(content)),
            partition: None,
            added_in: SnapshotId(1),
        }
    }

    #[test]
    fn small_files_go_to_memory_until_the_file_budget_runs_out_and_large_ones_never_do() {
        let big = FileRecord { bytes: i64::try_from(IN_MEMORY_MAX_BYTES + 1).expect("size"), ..record("big", b"") };
        let files = [record("a", b"a"), big, record("b", b"b"), record("c", b"c")];
        let places = plan_places(&files, 2, Path::new("/scratch/in"));
        let described: Vec<String> = places
            .iter()
            .map(|place| match place {
                Place::Small { memory: true, .. } => "memory".to_owned(),
                Place::Small { target, memory: false } => format!("small {}", target.display()),
                Place::Large(path) => format!("large {}", path.display()),
            })
            .collect();
        assert_eq!(
            described,
            ["memory", "large /scratch/in/000001.parquet", "memory", "small /scratch/in/000003.parquet"]
        );
    }

    #[test]
    fn the_byte_budget_bounds_what_stays_in_memory() {
        let file =
            |name: &str| FileRecord { bytes: i64::try_from(IN_MEMORY_MAX_BYTES).expect("size"), ..record(name, b"") };
        let files: Vec<FileRecord> = (0..40).map(|i| file(&format!("f{i}"))).collect();
        let places = plan_places(&files, u64::MAX, Path::new("/scratch/in"));
        let in_memory = places.iter().filter(|place| matches!(place, Place::Small { memory: true, .. })).count() as u64;
        assert_eq!(in_memory, MEMORY_BUDGET_BYTES / IN_MEMORY_MAX_BYTES);
        assert!(matches!(places.last(), Some(Place::Small { memory: false, .. })));
    }

    #[tokio::test]
    async fn inputs_in_memory_and_on_disk_read_back_verified_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let store = LocalStore::new(dir.path().join("store")).expect("store");
        let contents: [&[u8]; 3] = [b"first", b"second", b"third"];
        let mut files = Vec::new();
        for (index, content) in contents.iter().enumerate() {
            let key = format!("data/{index}.parquet");
            store.put(&key, bytes::Bytes::copy_from_slice(content)).await.expect("put");
            files.push(record(&key, content));
        }
        let scratch = dir.path().join("scratch");
        let stop = CancellationToken::new();
        let inputs = download_within(&store, &files, &scratch, 2, &stop, 1).await.expect("download");
        assert_eq!(inputs.in_memory(), 1);
        assert!(inputs.paths[0].starts_with("/proc/self/fd"), "{:?}", inputs.paths[0]);
        assert!(inputs.paths[1].starts_with(scratch.join("in")), "{:?}", inputs.paths[1]);
        for (path, content) in inputs.paths.iter().zip(contents) {
            assert_eq!(std::fs::read(path).expect("read back"), content, "{}", path.display());
        }
    }

    #[tokio::test]
    async fn a_corrupt_input_is_refused_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().expect("dir");
        let store = LocalStore::new(dir.path().join("store")).expect("store");
        store.put("data/x.parquet", bytes::Bytes::from_static(b"tampered")).await.expect("put");
        let files = [record("data/x.parquet", b"original")];
        for max_memory_files in [1, 0] {
            let scratch = dir.path().join(format!("scratch-{max_memory_files}"));
            let error = download_within(&store, &files, &scratch, 1, &CancellationToken::new(), max_memory_files)
                .await
                .expect_err("corrupt");
            assert!(matches!(error, Error::InputCorrupt { .. }), "{error:?}");
        }
    }
}
