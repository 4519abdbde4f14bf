//! [`S3Store`], the [`ObjectStore`] on an S3 bucket: client construction, every request
//! run through [`run_with_retries`], multipart uploads with abort on failure, and body
//! streaming with a per-chunk read timeout.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig as SdkRetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, DateTime, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use super::S3Config;
use super::classify::{classify, is_invalid_range, is_unparsed_completion, request_error};
use crate::error::{Error, Result};
use crate::key::{MAX_KEY_BYTES, validate_key, validate_prefix};
use crate::retry::{Failure, Operation, StoreCounters, run_with_retries};
use crate::{ObjectMeta, ObjectStore};

/// The most parts one multipart upload may have.
const MAX_PARTS: u64 = 10_000;
/// The longest presigned URL lifetime SigV4 allows.
const MAX_PRESIGN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// An [`ObjectStore`] on an S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    config: Arc<S3Config>,
    /// `prefix/`, or empty.
    key_prefix: String,
    counters: Arc<StoreCounters>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.config.bucket)
            .field("prefix", &self.config.prefix)
            .field("endpoint", &self.config.endpoint)
            .field("region", &self.config.region)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds the client for `config` with fresh counters. Nothing is sent yet.
    pub async fn new(config: S3Config) -> Result<Self> {
        Self::with_counters(config, Arc::new(StoreCounters::new())).await
    }

    /// Builds the client for `config`, recording into `counters` (which several stores may
    /// share).
    pub async fn with_counters(config: S3Config, counters: Arc<StoreCounters>) -> Result<Self> {
        config.validate()?;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(config.connect_timeout)
            .operation_attempt_timeout(config.attempt_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .retry_config(SdkRetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(credentials) = &config.credentials {
            loader = loader.credentials_provider(Credentials::new(
                credentials.access_key_id.clone(),
                credentials.secret_access_key.clone(),
                credentials.session_token.clone(),
                None,
                "duckmesh-static",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .retry_config(SdkRetryConfig::disabled());
        if let Some(endpoint) = &config.endpoint {
            // S3-compatible servers vary in their support for the newer flexible checksums
            // and aws-chunked uploads; only send checksums where the API demands them.
            builder = builder
                .endpoint_url(endpoint)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let key_prefix = config.prefix.as_ref().map_or_else(String::new, |prefix| format!("{prefix}/"));
        Ok(Self { client: Client::from_conf(builder.build()), config: Arc::new(config), key_prefix, counters })
    }

    /// The request, retry and failure counters of this store.
    pub fn counters(&self) -> Arc<StoreCounters> {
        Arc::clone(&self.counters)
    }

    /// The configuration the store was built from.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The underlying SDK client, for operations outside the [`ObjectStore`] trait (such as
    /// bucket administration in tests). Requests made through it are not retried or counted.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn full_key(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        let full = format!("{}{key}", self.key_prefix);
        if full.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidKey {
                key: key.to_owned(),
                reason: "key with the store prefix is longer than 1024 bytes",
            });
        }
        Ok(full)
    }

    async fn retry<T, F, Fut>(&self, operation: Operation, key: &str, attempt: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        run_with_retries(&self.config.retry, &self.counters, operation, key, attempt).await
    }

    /// Sorts an SDK failure into transient (retry) or a permanent typed [`Error`].
    fn classify<E>(&self, operation: &'static str, key: &str, error: SdkError<E, HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        classify(&self.config.bucket, operation, key, error)
    }

    fn meta(key: &str, size: Option<i64>, modified: Option<&DateTime>, e_tag: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            key: key.to_owned(),
            size: size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            last_modified: modified.and_then(|time| SystemTime::try_from(*time).ok()),
            e_tag: e_tag.map(str::to_owned),
        }
    }

    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<()> {
        let full = self.full_key(key)?;
        self.retry(Operation::PutObject, key, |_| {
            let request = self
                .client
                .put_object()
                .bucket(&self.config.bucket)
                .key(&full)
                .content_length(data.len() as i64)
                .body(ByteStream::from(data.clone()));
            async move { request.send().await.map(drop).map_err(|e| self.classify("put", key, e)) }
        })
        .await
    }

    async fn put_path(&self, key: &str, path: &Path) -> Result<u64> {
        let full = self.full_key(key)?;
        let size = tokio::fs::metadata(path).await.map_err(|e| Error::io("read source file metadata", path, e))?.len();
        if size <= self.config.part_size {
            self.retry(Operation::PutObject, key, |_| async {
                let body = file_stream(path, 0, size).await?;
                self.client
                    .put_object()
                    .bucket(&self.config.bucket)
                    .key(&full)
                    .content_length(size as i64)
                    .body(body)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| self.classify("put", key, e))
            })
            .await?;
            return Ok(size);
        }
        self.multipart_upload(key, &full, path, size).await?;
        Ok(size)
    }

    async fn multipart_upload(&self, key: &str, full: &str, path: &Path, size: u64) -> Result<()> {
        let upload_id = self
            .retry(Operation::CreateMultipartUpload, key, |_| async {
                let output = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.config.bucket)
                    .key(full)
                    .send()
                    .await
                    .map_err(|e| self.classify("create multipart upload", key, e))?;
                output.upload_id().map(str::to_owned).ok_or_else(|| {
                    Failure::Permanent(request_error("create multipart upload", key, "response carried no upload id"))
                })
            })
            .await?;

        match self.upload_parts_and_complete(key, full, path, size, &upload_id).await {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::warn!(
                    key,
                    error_code = error.error_code(),
                    error = %error,
                    "multipart upload failed, aborting it"
                );
                let aborted = self
                    .retry(Operation::AbortMultipartUpload, key, |_| async {
                        self.client
                            .abort_multipart_upload()
                            .bucket(&self.config.bucket)
                            .key(full)
                            .upload_id(&upload_id)
                            .send()
                            .await
                            .map(drop)
                            .map_err(|e| self.classify("abort multipart upload", key, e))
                    })
                    .await;
                if let Err(abort_error) = aborted {
                    // The upload's parts linger until a bucket lifecycle rule removes them;
                    // the caller still gets the original failure.
                    tracing::warn!(
                        key,
                        error_code = abort_error.error_code(),
                        error = %abort_error,
                        "could not abort multipart upload"
                    );
                }
                Err(error)
            }
        }
    }

    async fn upload_parts_and_complete(
        &self,
        key: &str,
        full: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<()> {
        // Grow the part size if the file would otherwise need more than 10,000 parts.
        let part_size = self.config.part_size.max(size.div_ceil(MAX_PARTS));
        let part_count = size.div_ceil(part_size);
        let parts = futures::stream::iter(0..part_count)
            .map(|index| {
                let offset = index * part_size;
                let length = part_size.min(size - offset);
                // Part numbers are 1-based and at most 10,000, so they fit an i32.
                let part_number = (index + 1) as i32;
                self.upload_part(key, full, path, upload_id, part_number, offset, length)
            })
            .buffer_unordered(self.config.upload_concurrency)
            .try_collect::<Vec<CompletedPart>>()
            .await?;
        let mut parts = parts;
        parts.sort_by_key(|part| part.part_number());
        let completed = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();

        self.retry(Operation::CompleteMultipartUpload, key, |attempt| {
            let completed = completed.clone();
            async move {
                let result = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.config.bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .multipart_upload(completed)
                    .send()
                    .await;
                match result {
                    Ok(_) => Ok(()),
                    // Some S3-compatible servers (moto) answer 200 with a completion document
                    // under a root element the SDK rejects; the upload did complete. Confirm
                    // with HEAD rather than trusting the odd document alone.
                    // A transient failure of the HEAD retries the completion, which then
                    // takes the NoSuchUpload branch below.
                    Err(error) if is_unparsed_completion(&error) => {
                        if self.head_once(key, full).await?.size == size {
                            Ok(())
                        } else {
                            Err(self.classify("complete multipart upload", key, error))
                        }
                    }
                    // An earlier attempt may have completed the upload and lost only the
                    // response; then the upload is gone and the object is in place.
                    Err(error) if attempt > 1 && error.code() == Some("NoSuchUpload") => {
                        if self.head_once(key, full).await?.size == size {
                            Ok(())
                        } else {
                            Err(self.classify("complete multipart upload", key, error))
                        }
                    }
                    Err(error) => Err(self.classify("complete multipart upload", key, error)),
                }
            }
        })
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_part(
        &self,
        key: &str,
        full: &str,
        path: &Path,
        upload_id: &str,
        part_number: i32,
        offset: u64,
        length: u64,
    ) -> Result<CompletedPart> {
        self.retry(Operation::UploadPart, key, |_| async move {
            let body = file_stream(path, offset, length).await?;
            let output = self
                .client
                .upload_part()
                .bucket(&self.config.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(part_number)
                .content_length(length as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| self.classify("upload part", key, e))?;
            let e_tag = output
                .e_tag()
                .ok_or_else(|| Failure::Permanent(request_error("upload part", key, "response carried no ETag")))?;
            Ok(CompletedPart::builder().part_number(part_number).e_tag(e_tag).build())
        })
        .await
    }

    async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        let full = self.full_key(key)?;
        self.retry(Operation::GetObject, key, |_| async {
            let output = self
                .client
                .get_object()
                .bucket(&self.config.bucket)
                .key(&full)
                .send()
                .await
                .map_err(|e| self.classify("get", key, e))?;
            let expected = output.content_length().and_then(|l| u64::try_from(l).ok());
            let data = read_body(output.body, expected, self.config.read_timeout).await?;
            Ok(data)
        })
        .await
    }

    async fn get_byte_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let full = self.full_key(key)?;
        let invalid =
            |size: Option<u64>| Error::InvalidRange { key: key.to_owned(), start: range.start, end: range.end, size };
        if range.start > range.end {
            return Err(invalid(None));
        }
        if range.start == range.end {
            // HTTP cannot express an empty range; check existence and bounds instead.
            let meta = self.head_object(key).await?;
            return if range.end <= meta.size { Ok(Bytes::new()) } else { Err(invalid(Some(meta.size))) };
        }
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let fetched = self
            .retry(Operation::GetObject, key, |_| async {
                let result =
                    self.client.get_object().bucket(&self.config.bucket).key(&full).range(&header).send().await;
                let output = match result {
                    Ok(output) => output,
                    Err(error) if is_invalid_range(&error) => return Ok(None),
                    Err(error) => return Err(self.classify("get range", key, error)),
                };
                let total = output.content_range().and_then(content_range_total);
                let expected = output.content_length().and_then(|l| u64::try_from(l).ok());
                let ranged = output.content_range().is_some();
                let data = read_body(output.body, expected, self.config.read_timeout).await?;
                Ok(Some((data, ranged, total)))
            })
            .await?;
        let wanted = range.end - range.start;
        match fetched {
            Some((data, true, total)) => {
                if data.len() as u64 == wanted {
                    Ok(data)
                } else {
                    // The object is shorter than the range end.
                    Err(invalid(total))
                }
            }
            // The server ignored the Range header and sent the whole object.
            Some((data, false, _)) => {
                let size = data.len() as u64;
                match (usize::try_from(range.start), usize::try_from(range.end)) {
                    (Ok(start), Ok(end)) if range.end <= size => Ok(data.slice(start..end)),
                    _ => Err(invalid(Some(size))),
                }
            }
            // 416: the range starts beyond the end. Look the size up for the error.
            None => {
                let meta = self.head_object(key).await?;
                Err(invalid(Some(meta.size)))
            }
        }
    }

    async fn download_to_file(&self, key: &str, destination: &Path) -> Result<ObjectMeta> {
        let full = self.full_key(key)?;
        let directory = match destination.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let file_name = destination.file_name().map(|name| name.to_string_lossy().into_owned()).ok_or_else(|| {
            Error::io("download", destination, std::io::Error::from(std::io::ErrorKind::InvalidInput))
        })?;
        tokio::fs::create_dir_all(&directory).await.map_err(|e| Error::io("create directory", &directory, e))?;
        self.retry(Operation::GetObject, key, |_| async {
            let output = self
                .client
                .get_object()
                .bucket(&self.config.bucket)
                .key(&full)
                .send()
                .await
                .map_err(|e| self.classify("get to file", key, e))?;
            let meta = Self::meta(key, output.content_length(), output.last_modified(), output.e_tag());
            let temp =
                directory.join(format!(".{file_name}.duckmesh-partial-{}", hex::encode(rand::random::<[u8; 8]>())));
            let result = write_body_to(&temp, destination, output.body, meta.size, self.config.read_timeout).await;
            if result.is_err() {
                let _ = tokio::fs::remove_file(&temp).await;
            }
            result.map(|written| ObjectMeta { size: written, ..meta })
        })
        .await
    }

    async fn head_once(&self, key: &str, full: &str) -> std::result::Result<ObjectMeta, Failure> {
        let output = self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.classify("head", key, e))?;
        Ok(Self::meta(key, output.content_length(), output.last_modified(), output.e_tag()))
    }

    async fn head_object(&self, key: &str) -> Result<ObjectMeta> {
        let full = self.full_key(key)?;
        self.retry(Operation::HeadObject, key, |_| self.head_once(key, &full)).await
    }

    async fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        validate_prefix(prefix)?;
        let full_prefix = format!("{}{prefix}", self.key_prefix);
        let mut objects = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let page = self
                .retry(Operation::ListObjects, prefix, |_| {
                    let request = self
                        .client
                        .list_objects_v2()
                        .bucket(&self.config.bucket)
                        .prefix(&full_prefix)
                        .max_keys(self.config.list_page_size)
                        .set_continuation_token(continuation.clone());
                    async move { request.send().await.map_err(|e| self.classify("list", prefix, e)) }
                })
                .await?;
            for object in page.contents() {
                let Some(full_key) = object.key() else {
                    continue;
                };
                let Some(key) = full_key.strip_prefix(&self.key_prefix) else {
                    continue;
                };
                objects.push(Self::meta(key, object.size(), object.last_modified(), object.e_tag()));
            }
            match page.next_continuation_token() {
                Some(token) if page.is_truncated().unwrap_or(true) => {
                    continuation = Some(token.to_owned());
                }
                _ => break,
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn delete_object(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        self.retry(Operation::DeleteObject, key, |_| async {
            match self.client.delete_object().bucket(&self.config.bucket).key(&full).send().await {
                Ok(_) => Ok(()),
                Err(error) => match self.classify("delete", key, error) {
                    // S3 answers 204 for missing keys; some compatible servers say 404.
                    Failure::Permanent(Error::NotFound { .. }) => Ok(()),
                    other => Err(other),
                },
            }
        })
        .await
    }

    async fn presign(&self, key: &str, ttl: Duration) -> Result<String> {
        let full = self.full_key(key)?;
        let presign_error = |message: String| Error::Presign { key: key.to_owned(), message };
        if ttl.is_zero() || ttl > MAX_PRESIGN_TTL {
            return Err(presign_error("ttl must be between 1 second and 7 days".into()));
        }
        let presigning = PresigningConfig::expires_in(ttl).map_err(|e| presign_error(e.to_string()))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(&full)
            .presigned(presigning)
            .await
            // The error never contains the signed URL; it may name the credential problem.
            .map_err(|e| presign_error(DisplayErrorContext(&e).to_string()))?;
        Ok(request.uri().to_owned())
    }
}

/// A body stream of `length` bytes of the file at `path` starting at `offset`; opened anew
/// for every attempt so that a retry re-reads the data.
async fn file_stream(path: &Path, offset: u64, length: u64) -> std::result::Result<ByteStream, Failure> {
    ByteStream::read_from()
        .path(path)
        .offset(offset)
        .length(Length::Exact(length))
        .build()
        .await
        .map_err(|e| Failure::Permanent(Error::io("read source file", path, std::io::Error::other(e.to_string()))))
}

/// The next body chunk, giving up (transiently) when none arrives within `timeout`.
async fn next_chunk(body: &mut ByteStream, timeout: Duration) -> std::result::Result<Option<Bytes>, Failure> {
    match tokio::time::timeout(timeout, body.try_next()).await {
        Err(_) => Err(Failure::Transient { message: "timed out waiting for response body data".into(), source: None }),
        Ok(Err(error)) => Err(Failure::Transient {
            message: format!("reading response body: {}", DisplayErrorContext(&error)),
            source: Some(Box::new(error)),
        }),
        Ok(Ok(chunk)) => Ok(chunk),
    }
}

fn truncated(expected: u64, received: u64) -> Failure {
    Failure::Transient { message: format!("response body ended after {received} of {expected} bytes"), source: None }
}

async fn read_body(
    mut body: ByteStream,
    expected: Option<u64>,
    timeout: Duration,
) -> std::result::Result<Bytes, Failure> {
    let capacity = expected.and_then(|length| usize::try_from(length).ok()).unwrap_or(0);
    let mut data = BytesMut::with_capacity(capacity);
    while let Some(chunk) = next_chunk(&mut body, timeout).await? {
        data.extend_from_slice(&chunk);
    }
    if let Some(expected) = expected
        && data.len() as u64 != expected
    {
        return Err(truncated(expected, data.len() as u64));
    }
    Ok(data.freeze())
}

/// Streams `body` into `temp`, fsyncs it and renames it to `destination`.
async fn write_body_to(
    temp: &Path,
    destination: &Path,
    mut body: ByteStream,
    expected: u64,
    timeout: Duration,
) -> std::result::Result<u64, Failure> {
    let local = |operation: &'static str, path: &Path| {
        let path = path.to_owned();
        move |e: std::io::Error| Failure::Permanent(Error::io(operation, path, e))
    };
    let mut file = tokio::fs::File::create_new(temp).await.map_err(local("create temporary file", temp))?;
    let mut written = 0u64;
    while let Some(chunk) = next_chunk(&mut body, timeout).await? {
        file.write_all(&chunk).await.map_err(local("write temporary file", temp))?;
        written += chunk.len() as u64;
    }
    if written != expected {
        return Err(truncated(expected, written));
    }
    file.sync_all().await.map_err(local("sync temporary file", temp))?;
    drop(file);
    tokio::fs::rename(temp, destination).await.map_err(local("rename into place", destination))?;
    Ok(written)
}

/// The total size from a `Content-Range: bytes a-b/total` header.
fn content_range_total(header: &str) -> Option<u64> {
    header.rsplit_once('/')?.1.trim().parse().ok()
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_bytes(key, data).await
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<u64> {
        self.put_path(key, path).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.get_bytes(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.get_byte_range(key, range).await
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<ObjectMeta> {
        self.download_to_file(key, path).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.head_object(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.list_objects(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.delete_object(key).await
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String> {
        self.presign(key, ttl).await
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range_totals() {
        assert_eq!(content_range_total("bytes 0-9/100"), Some(100));
        assert_eq!(content_range_total("bytes */100"), Some(100));
        assert_eq!(content_range_total("bytes 0-9/*"), None);
    }

    #[tokio::test]
    async fn store_rejects_keys_that_are_too_long_with_the_prefix() {
        let config = S3Config::new("lake")
            .with_endpoint("http://127.0.0.1:9")
            .with_credentials("id", "secret")
            .with_prefix("p".repeat(1000));
        let store = S3Store::new(config).await.expect("client");
        let error = store.get(&"k".repeat(100)).await.expect_err("too long");
        assert_eq!(error.error_code(), "invalid_object_key");
        assert_eq!(store.counters().total_requests(), 0);
        let printed = format!("{store:?}");
        assert!(!printed.contains("secret"), "{printed}");
    }
}
