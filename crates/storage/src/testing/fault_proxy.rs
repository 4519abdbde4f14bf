//! A fault-injecting HTTP proxy for S3 tests: it sits on a loopback port in front of an
//! S3-compatible server and, driven by a seeded RNG, answers a fraction of requests with a
//! real S3-style error (`503 SlowDown` by default) or drops the connection, and can delay
//! requests. Everything else is forwarded unchanged (the `Host` header included, so SigV4
//! signatures stay valid).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The failure a faulty request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `503 Service Unavailable` with S3's `SlowDown` error body.
    SlowDown,
    /// `500 Internal Server Error` with S3's `InternalError` error body.
    InternalError,
    /// `403 Forbidden` with S3's `AccessDenied` error body (a permanent failure).
    AccessDenied,
    /// The connection is closed without any response.
    ConnectionReset,
}

impl FaultKind {
    fn status_code_message(self) -> Option<(StatusCode, &'static str, &'static str)> {
        match self {
            FaultKind::SlowDown => {
                Some((StatusCode::SERVICE_UNAVAILABLE, "SlowDown", "Please reduce your request rate."))
            }
            FaultKind::InternalError => Some((
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error. Please try again.",
            )),
            FaultKind::AccessDenied => Some((StatusCode::FORBIDDEN, "AccessDenied", "Access Denied")),
            FaultKind::ConnectionReset => None,
        }
    }
}

/// What the proxy does to requests.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Fraction of requests (0.0–1.0) that fail.
    pub failure_rate: f64,
    /// How they fail.
    pub failure: FaultKind,
    /// Forward failing requests to the server before failing them, as when a response is
    /// lost after the server acted (retries must then be idempotent).
    pub forward_failed: bool,
    /// Fraction of requests (0.0–1.0) that are delayed.
    pub latency_rate: f64,
    /// How long delayed requests wait before being handled.
    pub latency: Duration,
    /// Seed of the RNG that picks the faulty requests.
    pub seed: u64,
    /// Only requests with this HTTP method are failed or delayed (e.g. `PUT` to hit part
    /// uploads but not the creation or abort of a multipart upload); `None` for all.
    pub only_method: Option<http::Method>,
    /// Only requests whose path contains this text are failed or delayed (e.g. `/_catalog/`
    /// to refuse the commit records but not the data files); `None` for all.
    pub only_path_containing: Option<String>,
}

impl Default for FaultConfig {
    /// No faults at all: a transparent proxy.
    fn default() -> Self {
        Self {
            failure_rate: 0.0,
            failure: FaultKind::SlowDown,
            forward_failed: false,
            latency_rate: 0.0,
            latency: Duration::ZERO,
            seed: 0x00D0_C3ED,
            only_method: None,
            only_path_containing: None,
        }
    }
}

impl FaultConfig {
    /// A fraction of requests failing with `503 SlowDown`.
    pub fn slow_down(failure_rate: f64, seed: u64) -> Self {
        Self { failure_rate, seed, ..Self::default() }
    }
}

/// Counts of what the proxy did, at the time of [`FaultProxy::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Requests received.
    pub requests: u64,
    /// Requests answered with an injected failure (or a dropped connection).
    pub injected_failures: u64,
    /// Requests that were delayed.
    pub delayed: u64,
    /// Requests forwarded to the server.
    pub forwarded: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    injected_failures: AtomicU64,
    delayed: AtomicU64,
    forwarded: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    config: Mutex<(FaultConfig, StdRng)>,
    counters: Counters,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// The proxy; it runs on the Tokio runtime that started it until dropped.
#[derive(Debug)]
pub struct FaultProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ProxyError(String);

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `upstream`
    /// (e.g. `http://127.0.0.1:9000`).
    pub async fn start(upstream: &str, config: FaultConfig) -> std::io::Result<Self> {
        let upstream_url =
            url::Url::parse(upstream).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let authority = match (upstream_url.host_str(), upstream_url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "upstream URL needs a host"));
            }
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let rng = StdRng::seed_from_u64(config.seed);
        let shared = Arc::new(Shared {
            upstream: format!("http://{authority}"),
            config: Mutex::new((config, rng)),
            counters: Counters::default(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let server = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { address, shared, server })
    }

    /// The proxy's endpoint URL, to use as the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Replaces the fault configuration (and reseeds the RNG with its seed).
    pub fn set_config(&self, config: FaultConfig) {
        if let Ok(mut guard) = self.shared.config.lock() {
            let rng = StdRng::seed_from_u64(config.seed);
            *guard = (config, rng);
        }
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> ProxyStats {
        let counters = &self.shared.counters;
        ProxyStats {
            requests: counters.requests.load(Ordering::Relaxed),
            injected_failures: counters.injected_failures.load(Ordering::Relaxed),
            delayed: counters.delayed.load(Ordering::Relaxed),
            forwarded: counters.forwarded.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.server.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let service = service_fn(move |request| handle(Arc::clone(&shared), request));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Decides the request's fate: the failure to inject (if any) and the delay.
fn decide(shared: &Shared, method: &http::Method, path: &str) -> (Option<Injected>, Duration) {
    let Ok(mut guard) = shared.config.lock() else {
        return (None, Duration::ZERO);
    };
    let (config, rng) = &mut *guard;
    if config.only_method.as_ref().is_some_and(|only| only != method)
        || config.only_path_containing.as_deref().is_some_and(|only| !path.contains(only))
    {
        return (None, Duration::ZERO);
    }
    let fail = rng.random_bool(config.failure_rate.clamp(0.0, 1.0));
    let delay = rng.random_bool(config.latency_rate.clamp(0.0, 1.0));
    (
        fail.then_some(Injected { kind: config.failure, forward: config.forward_failed }),
        if delay { config.latency } else { Duration::ZERO },
    )
}

/// A failure chosen for one request.
#[derive(Debug, Clone, Copy)]
struct Injected {
    kind: FaultKind,
    forward: bool,
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, ProxyError> {
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let (failure, delay) = decide(&shared, request.method(), request.uri().path());
    if !delay.is_zero() {
        shared.counters.delayed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(delay).await;
    }
    let is_head = request.method() == http::Method::HEAD;
    let (parts, body) = request.into_parts();
    // Read the whole request first so that an injected failure never races the upload.
    let body = body.collect().await.map_err(|e| ProxyError(format!("reading request body: {e}")))?.to_bytes();

    let forward = failure.is_none_or(|injected| injected.forward);
    let forwarded = if forward { Some(forward_request(&shared, parts, body).await?) } else { None };
    match failure {
        None => forwarded.ok_or_else(|| ProxyError("nothing forwarded".into())),
        Some(injected) => {
            shared.counters.injected_failures.fetch_add(1, Ordering::Relaxed);
            match injected.kind.status_code_message() {
                None => Err(ProxyError("injected connection reset".into())),
                Some((status, code, message)) => Ok(error_response(status, code, message, is_head)),
            }
        }
    }
}

async fn forward_request(
    shared: &Shared,
    mut parts: http::request::Parts,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    let path = parts.uri.path_and_query().map_or("/", |path_and_query| path_and_query.as_str());
    parts.uri =
        format!("{}{path}", shared.upstream).parse().map_err(|e| ProxyError(format!("bad upstream URI: {e}")))?;
    strip_hop_by_hop(&mut parts.headers);
    let response = shared
        .client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
        .map_err(|e| ProxyError(format!("upstream request failed: {e}")))?;
    shared.counters.forwarded.fetch_add(1, Ordering::Relaxed);
    let (mut parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| ProxyError(format!("reading upstream body: {e}")))?.to_bytes();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    for name in [header::CONNECTION, header::TRANSFER_ENCODING, header::UPGRADE, header::TE, header::TRAILER] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

fn error_response(status: StatusCode, code: &str, message: &str, is_head: bool) -> Response<Full<Bytes>> {
    let request_id = format!("{:016X}", rand::random::<u64>());
    let body = if is_head {
        Bytes::new()
    } else {
        Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
             <RequestId>{request_id}</RequestId><HostId>duckmesh-fault-proxy</HostId></Error>"
        ))
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amz-request-id", value);
    }
    response
}
