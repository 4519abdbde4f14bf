//! Test support (feature `testing`): a store-agnostic conformance suite that every
//! backend must pass, a harness that runs the real `moto_server` (or points at an external
//! S3-compatible server such as MinIO), and a fault-injecting HTTP proxy.
//!
//! The conformance functions take `&dyn ObjectStore`, panic with a message on the first
//! violated expectation, and each works in its own random key namespace so that they can
//! share a bucket and run concurrently.

mod conformance;
mod fault_proxy;
mod moto;

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use conformance::{
    ConformanceOptions, delete_is_idempotent, empty_objects, get_range, get_to_file_round_trip, head_reports_metadata,
    invalid_keys_rejected, keys_with_special_characters, list_by_prefix, list_paginates, not_found_is_typed,
    overwrite_replaces, presigned_get_is_fetchable, put_file_single_and_multipart, put_get_round_trip, run_all,
};
pub use fault_proxy::{FaultConfig, FaultKind, FaultProxy, ProxyStats};
pub use moto::{HarnessError, MotoServer};

/// Fetches `url` the way a client without credentials would: `http://` with a plain
/// HTTP GET, `file://` by reading the file. Returns the body, or a description of the
/// failure (non-200 status, unreadable file, unsupported scheme).
pub async fn fetch_url(url: &str) -> Result<Bytes, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    match parsed.scheme() {
        "http" => {
            let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URI: {e}"))?;
            let response = client.get(uri).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            if status != http::StatusCode::OK {
                return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
            }
            Ok(body)
        }
        "file" => {
            let path = parsed.to_file_path().map_err(|()| "file URL without a local path".to_owned())?;
            read_file(&path).await
        }
        other => Err(format!("unsupported URL scheme {other}")),
    }
}

async fn read_file(path: &Path) -> Result<Bytes, String> {
    tokio::fs::read(path).await.map(Bytes::from).map_err(|e| format!("{}: {e}", path.display()))
}
