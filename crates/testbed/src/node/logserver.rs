//! The node's log endpoint, the part of the kubelet API that `kubectl logs` reaches through the
//! API server: `GET /containerLogs/{namespace}/{pod}/{container}` with `previous`, `tailLines`,
//! `limitBytes` and `follow`, over HTTPS with the bed's `kubelet` certificate, accepting only
//! clients with certificates signed by the bed's CA (the API server's kubelet client
//! certificate).

use super::status::RunState;
use super::{NODE_IP, NodeContext, log_path};
use crate::pki::CertFiles;
use crate::{Error, Result};
use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::convert::Infallible;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

type Body = BoxBody<Bytes, Infallible>;

fn tls_error(step: &str) -> impl FnOnce(String) -> Error + '_ {
    move |message| Error::Tls { step: step.to_owned(), message }
}

fn server_config(cert: &CertFiles, ca: &Path) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert)
        .map_err(|e| tls_error("reading the kubelet certificate")(e.to_string()))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error("reading the kubelet certificate")(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_file(&cert.key).map_err(|e| tls_error("reading the kubelet key")(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca_cert in CertificateDer::pem_file_iter(ca).map_err(|e| tls_error("reading the CA")(e.to_string()))? {
        let ca_cert = ca_cert.map_err(|e| tls_error("reading the CA")(e.to_string()))?;
        roots.add(ca_cert).map_err(|e| tls_error("adding the CA")(e.to_string()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| tls_error("building the client verifier")(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("TLS versions")(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("the kubelet certificate")(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Binds `127.0.0.1:0` and serves; returns the port and the server task.
pub(crate) async fn start(context: Arc<NodeContext>, cert: &CertFiles, ca: &Path) -> Result<(u16, JoinHandle<()>)> {
    let acceptor = TlsAcceptor::from(Arc::new(server_config(cert, ca)?));
    let listener =
        TcpListener::bind((NODE_IP, 0)).await.map_err(Error::io("binding the test node's log server".to_owned()))?;
    let port = listener.local_addr().map_err(Error::io("binding the test node's log server".to_owned()))?.port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let acceptor = acceptor.clone();
            let context = Arc::clone(&context);
            tokio::spawn(async move {
                let tls = match acceptor.accept(stream).await {
                    Ok(tls) => tls,
                    Err(error) => {
                        tracing::debug!(%error, "log server: TLS handshake failed");
                        return;
                    }
                };
                let service = service_fn(move |request| {
                    let context = Arc::clone(&context);
                    async move { Ok::<_, Infallible>(serve(&context, request).await) }
                });
                if let Err(error) =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await
                {
                    tracing::debug!(%error, "log server: connection ended");
                }
            });
        }
    });
    Ok((port, task))
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    response
}

/// Query parameters of a log request.
#[derive(Debug, Default, PartialEq)]
struct LogQuery {
    previous: bool,
    follow: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
}

fn parse_query(query: Option<&str>) -> LogQuery {
    let mut parsed = LogQuery::default();
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "previous" => parsed.previous = value == "true",
            "follow" => parsed.follow = value == "true",
            "tailLines" => parsed.tail_lines = value.parse().ok(),
            "limitBytes" => parsed.limit_bytes = value.parse().ok(),
            _ => {}
        }
    }
    parsed
}

/// The last `lines` lines of `text` (all of it when `None`).
fn tail_lines(text: &[u8], lines: Option<usize>) -> &[u8] {
    let Some(lines) = lines else { return text };
    if lines == 0 {
        return &text[text.len()..];
    }
    let end = if text.ends_with(b"\n") { text.len() - 1 } else { text.len() };
    let mut seen = 0;
    for i in (0..end).rev() {
        if text[i] == b'\n' {
            seen += 1;
            if seen == lines {
                return &text[i + 1..];
            }
        }
    }
    text
}

async fn serve(context: &Arc<NodeContext>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok".into());
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", namespace, pod, container] = parts.as_slice() else {
        return text(StatusCode::NOT_FOUND, format!("the test node serves only /containerLogs, not {path}\n"));
    };
    let query = parse_query(request.uri().query());
    let file = match log_path(context, namespace, pod, container, query.previous) {
        Ok(file) => file,
        Err(error) => return text(StatusCode::NOT_FOUND, format!("{error}\n")),
    };
    let bytes = match tokio::fs::read(&file).await {
        Ok(bytes) => bytes,
        Err(error) => return text(StatusCode::NOT_FOUND, format!("reading {}: {error}\n", file.display())),
    };
    let mut body = tail_lines(&bytes, query.tail_lines).to_vec();
    if let Some(limit) = query.limit_bytes {
        body.truncate(limit);
    }
    if !query.follow || query.previous {
        return Response::new(Full::new(Bytes::from(body)).boxed());
    }
    let offset = bytes.len() as u64;
    let first = futures::stream::once(async move { Ok::<_, Infallible>(Frame::data(Bytes::from(body))) });
    let rest = follow(Arc::clone(context), namespace.to_string(), pod.to_string(), container.to_string(), file, offset);
    Response::new(BodyExt::boxed(StreamBody::new(first.chain(rest))))
}

fn container_running(context: &NodeContext, namespace: &str, pod: &str, container: &str) -> bool {
    let Some(record) = context.record(namespace, pod) else { return false };
    record.state.lock().ok().is_some_and(|state| {
        state
            .init
            .iter()
            .chain(state.containers.iter())
            .any(|c| c.name == container && matches!(c.state, RunState::Running { .. }))
    })
}

/// What a followed log appends, until its container stops running.
fn follow(
    context: Arc<NodeContext>,
    namespace: String,
    pod: String,
    container: String,
    file: PathBuf,
    offset: u64,
) -> impl futures::Stream<Item = std::result::Result<Frame<Bytes>, Infallible>> {
    futures::stream::unfold((offset, false), move |(offset, done)| {
        let (context, namespace, pod, container, file) =
            (Arc::clone(&context), namespace.clone(), pod.clone(), container.clone(), file.clone());
        async move {
            if done {
                return None;
            }
            loop {
                let running = container_running(&context, &namespace, &pod, &container);
                let mut chunk = Vec::new();
                if let Ok(mut handle) = tokio::fs::File::open(&file).await
                    && handle.seek(SeekFrom::Start(offset)).await.is_ok()
                {
                    let _ = handle.read_to_end(&mut chunk).await;
                }
                if !chunk.is_empty() {
                    let next = offset + chunk.len() as u64;
                    return Some((Ok(Frame::data(Bytes::from(chunk))), (next, false)));
                }
                if !running {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_tails() {
        assert_eq!(
            parse_query(Some("previous=true&tailLines=2&follow=false&limitBytes=10")),
            LogQuery { previous: true, follow: false, tail_lines: Some(2), limit_bytes: Some(10) }
        );
        assert_eq!(tail_lines(b"a\nb\nc\n", Some(2)), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", Some(2)), b"b\nc");
        assert_eq!(tail_lines(b"a\nb\n", Some(5)), b"a\nb\n");
        assert_eq!(tail_lines(b"a\nb\n", None), b"a\nb\n");
        assert_eq!(tail_lines(b"a\nb\n", Some(0)), b"");
    }
}
