//! The local-filesystem backend for the embedded `duckmesh dev` mode: each key is a file
//! under a root directory.
//!
//! Writes are atomic: data goes to a temporary file in the destination directory, is
//! fsynced, and renamed over the destination, and the directory is fsynced; readers see
//! the old object or the new one, never a partial file. Temporary files carry a reserved
//! name prefix ([`LocalStore::TEMP_PREFIX`]) that keys may not use and listings skip.

use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::key::{validate_key, validate_prefix};
use crate::{ObjectMeta, ObjectStore};

/// Objects as files under a root directory.
///
/// A key and a longer key that extends it as a directory (`a/b` and `a/b/c`) cannot both
/// exist here, unlike in S3; DuckMesh's key layout never needs that.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// File names starting with this are in-flight writes; keys may not contain a segment
    /// starting with it.
    pub const TEMP_PREFIX: &'static str = ".duckmesh-partial-";

    /// Opens (creating if needed) a store rooted at `root`. The root is made absolute so
    /// that [`ObjectStore::presign_get`] can return `file://` URLs.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        fs::create_dir_all(root).map_err(|e| Error::io("create store root", root, e))?;
        let root = fs::canonicalize(root).map_err(|e| Error::io("resolve store root", root, e))?;
        Ok(Self { root })
    }

    /// The absolute root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key` (whether or not it exists).
    pub fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        if key.split('/').any(|segment| segment.starts_with(Self::TEMP_PREFIX)) {
            return Err(Error::InvalidKey {
                key: key.to_owned(),
                reason: "key uses the local store's reserved temporary-file prefix",
            });
        }
        Ok(self.root.join(key))
    }

    async fn blocking<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&LocalStore) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store)).await.map_err(|join_error| {
            Error::io("run filesystem task", self.root.clone(), io::Error::other(join_error.to_string()))
        })?
    }

    fn read_meta(key: &str, metadata: &fs::Metadata) -> ObjectMeta {
        let last_modified = metadata.modified().ok();
        let modified_nanos =
            last_modified.and_then(|time| time.duration_since(UNIX_EPOCH).ok()).map_or(0, |elapsed| elapsed.as_nanos());
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0u64;
        ObjectMeta {
            key: key.to_owned(),
            size: metadata.len(),
            last_modified,
            e_tag: Some(format!("{inode:x}-{modified_nanos:x}-{:x}", metadata.len())),
        }
    }

    /// Opens an object's file for reading; a missing file, a directory, or a path through
    /// a file are all "not found".
    fn open_object(&self, key: &str) -> Result<(File, fs::Metadata)> {
        let path = self.path_of(key)?;
        let not_found = || Error::NotFound { key: key.to_owned() };
        let file = File::open(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory => not_found(),
            _ => Error::io("open object", &path, e),
        })?;
        let metadata = file.metadata().map_err(|e| Error::io("stat object", &path, e))?;
        if !metadata.is_file() {
            return Err(not_found());
        }
        Ok((file, metadata))
    }
}

/// Writes a file atomically: `write` fills a temporary file in `destination`'s directory,
/// which is then fsynced and renamed over `destination`; the directory is fsynced last.
fn write_atomically(destination: &Path, write: impl FnOnce(&mut File) -> io::Result<u64>) -> Result<u64> {
    let parent = destination
        .parent()
        .ok_or_else(|| Error::io("write", destination, io::Error::from(ErrorKind::InvalidInput)))?;
    let temp_path = parent.join(format!("{}{}", LocalStore::TEMP_PREFIX, hex::encode(rand::random::<[u8; 8]>())));
    // A concurrent delete may prune the freshly created directory before the temporary
    // file exists in it; creating both again a few times rides that race out.
    let mut file = None;
    for _ in 0..5 {
        fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
        match File::create_new(&temp_path) {
            Ok(created) => {
                file = Some(created);
                break;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("create temporary file", &temp_path, e)),
        }
    }
    let mut file =
        file.ok_or_else(|| Error::io("create temporary file", &temp_path, io::Error::from(ErrorKind::NotFound)))?;
    let result = write(&mut file)
        .and_then(|written| file.sync_all().map(|()| written))
        .map_err(|e| Error::io("write temporary file", &temp_path, e))
        .and_then(|written| {
            drop(file);
            fs::rename(&temp_path, destination)
                .map(|()| written)
                .map_err(|e| Error::io("rename into place", destination, e))
        });
    match result {
        Ok(written) => {
            // Make the rename itself durable.
            File::open(parent).and_then(|dir| dir.sync_all()).map_err(|e| Error::io("sync directory", parent, e))?;
            Ok(written)
        }
        Err(error) => {
            let _ = fs::remove_file(&temp_path);
            Err(error)
        }
    }
}

fn check_range(key: &str, range: &Range<u64>, size: u64) -> Result<()> {
    if range.start > range.end || range.end > size {
        return Err(Error::InvalidRange { key: key.to_owned(), start: range.start, end: range.end, size: Some(size) });
    }
    Ok(())
}

impl LocalStore {
    fn put_sync(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path_of(key)?;
        write_atomically(&path, |file| {
            file.write_all(data)?;
            Ok(data.len() as u64)
        })?;
        Ok(())
    }

    fn put_file_sync(&self, key: &str, source: &Path) -> Result<u64> {
        let path = self.path_of(key)?;
        let mut input = File::open(source).map_err(|e| Error::io("open source file", source, e))?;
        write_atomically(&path, |file| io::copy(&mut input, file))
    }

    fn get_sync(&self, key: &str) -> Result<Bytes> {
        let (mut file, metadata) = self.open_object(key)?;
        let mut data = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
        file.read_to_end(&mut data).map_err(|e| Error::io("read object", self.root.join(key), e))?;
        Ok(Bytes::from(data))
    }

    fn get_range_sync(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let (mut file, metadata) = self.open_object(key)?;
        check_range(key, &range, metadata.len())?;
        let length = usize::try_from(range.end - range.start).map_err(|_| Error::InvalidRange {
            key: key.to_owned(),
            start: range.start,
            end: range.end,
            size: Some(metadata.len()),
        })?;
        let mut data = vec![0u8; length];
        file.seek(SeekFrom::Start(range.start))
            .and_then(|_| file.read_exact(&mut data))
            .map_err(|e| Error::io("read object range", self.root.join(key), e))?;
        Ok(Bytes::from(data))
    }

    fn get_to_file_sync(&self, key: &str, destination: &Path) -> Result<ObjectMeta> {
        let (mut file, metadata) = self.open_object(key)?;
        let meta = Self::read_meta(key, &metadata);
        write_atomically(destination, |output| io::copy(&mut file, output))?;
        Ok(meta)
    }

    fn head_sync(&self, key: &str) -> Result<ObjectMeta> {
        let (_, metadata) = self.open_object(key)?;
        Ok(Self::read_meta(key, &metadata))
    }

    fn list_sync(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        validate_prefix(prefix)?;
        // Walk only the deepest directory that the prefix fully names.
        let (start_key, start_dir) = match prefix.rfind('/') {
            Some(slash) => (&prefix[..=slash], self.root.join(&prefix[..slash])),
            None => ("", self.root.clone()),
        };
        let mut objects = Vec::new();
        let mut pending = vec![(start_key.to_owned(), start_dir)];
        while let Some((dir_key, dir)) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    continue;
                }
                Err(e) => return Err(Error::io("list directory", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("list directory", &dir, e))?;
                // Names that are not UTF-8 cannot be keys; such files were not written by us.
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if name.starts_with(Self::TEMP_PREFIX) {
                    continue;
                }
                let key = format!("{dir_key}{name}");
                let file_type = entry.file_type().map_err(|e| Error::io("list directory", entry.path(), e))?;
                if file_type.is_dir() {
                    let dir_prefix = format!("{key}/");
                    if dir_prefix.starts_with(prefix) || prefix.starts_with(&dir_prefix) {
                        pending.push((dir_prefix, entry.path()));
                    }
                } else if file_type.is_file() && key.starts_with(prefix) {
                    match entry.metadata() {
                        Ok(metadata) => objects.push(Self::read_meta(&key, &metadata)),
                        // Deleted between read_dir and stat: it is simply not listed.
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io("stat object", entry.path(), e)),
                    }
                }
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    fn delete_sync(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory) => {
                return Ok(());
            }
            Err(e) => return Err(Error::io("delete object", &path, e)),
        }
        // Prune directories left empty so that deleted prefixes do not pile up; a directory
        // that is not empty (or is being written to) stops the walk.
        let mut dir = path.parent();
        while let Some(current) = dir {
            if current == self.root || fs::remove_dir(current).is_err() {
                break;
            }
            dir = current.parent();
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let key = key.to_owned();
        self.blocking(move |store| store.put_sync(&key, &data)).await
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<u64> {
        let key = key.to_owned();
        let source = path.to_owned();
        self.blocking(move |store| store.put_file_sync(&key, &source)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let key = key.to_owned();
        self.blocking(move |store| store.get_sync(&key)).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let key = key.to_owned();
        self.blocking(move |store| store.get_range_sync(&key, range)).await
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<ObjectMeta> {
        let key = key.to_owned();
        let destination = path.to_owned();
        self.blocking(move |store| store.get_to_file_sync(&key, &destination)).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let key = key.to_owned();
        self.blocking(move |store| store.head_sync(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = prefix.to_owned();
        self.blocking(move |store| store.list_sync(&prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.blocking(move |store| store.delete_sync(&key)).await
    }

    /// Returns the `file://` URL of the object's absolute path. It grants nothing: it is
    /// only usable by processes on this machine that can read the store's root, and `ttl`
    /// is ignored.
    async fn presign_get(&self, key: &str, _ttl: Duration) -> Result<String> {
        let path = self.path_of(key)?;
        url::Url::from_file_path(&path).map(String::from).map_err(|()| Error::Presign {
            key: key.to_owned(),
            message: "path cannot be expressed as a file:// URL".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_reserved_temp_names_and_hides_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        let reserved = format!("a/{}x", LocalStore::TEMP_PREFIX);
        let error = store.put(&reserved, Bytes::from_static(b"x")).await.expect_err("reserved");
        assert_eq!(error.error_code(), "invalid_object_key");

        store.put("a/visible", Bytes::from_static(b"x")).await.expect("put");
        fs::write(dir.path().join("a").join(format!("{}left-over", LocalStore::TEMP_PREFIX)), b"partial")
            .expect("write leftover");
        let keys: Vec<String> = store.list("").await.expect("list").into_iter().map(|meta| meta.key).collect();
        assert_eq!(keys, ["a/visible"]);
    }

    #[tokio::test]
    async fn delete_prunes_empty_directories_but_not_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        store.put("x/y/z/object", Bytes::from_static(b"1")).await.expect("put");
        store.put("x/keep", Bytes::from_static(b"2")).await.expect("put");
        store.delete("x/y/z/object").await.expect("delete");
        assert!(!dir.path().join("x/y").exists());
        assert!(dir.path().join("x/keep").exists());
        store.delete("x/keep").await.expect("delete");
        assert!(!dir.path().join("x").exists());
        assert!(dir.path().exists());
    }

    #[tokio::test]
    async fn rewrite_changes_the_e_tag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        store.put("k", Bytes::from_static(b"one")).await.expect("put");
        let first = store.head("k").await.expect("head");
        store.put("k", Bytes::from_static(b"two")).await.expect("put");
        let second = store.head("k").await.expect("head");
        assert_eq!(first.size, second.size);
        assert_ne!(first.e_tag, second.e_tag);
    }

    #[tokio::test]
    async fn presign_is_a_file_url_of_the_absolute_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        let url = store.presign_get("a/b c.parquet", Duration::from_secs(60)).await.expect("presign");
        let parsed = url::Url::parse(&url).expect("url");
        assert_eq!(parsed.scheme(), "file");
        assert_eq!(parsed.to_file_path().expect("path"), store.root().join("a/b c.parquet"));
    }
}
