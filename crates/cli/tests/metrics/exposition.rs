//! A real `/metrics` server to scrape, an OpenMetrics text parser, and the repository root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use duckmesh_telemetry::{Metrics, metrics_router};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Root of the repository (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

/// A scraped `/metrics` response.
pub struct Scrape {
    /// Body text.
    pub body: String,
}

/// Serves `metrics` on an ephemeral loopback port and scrapes it once over real HTTP.
pub async fn scrape(metrics: &Metrics) -> Scrape {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    let app = metrics_router(metrics);
    let server = tokio::spawn(async move {
        duckmesh_query::serve(listener, app, std::future::pending()).await.expect("serve");
    });

    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send request");
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("response within 20 s")
        .expect("read response");
    server.abort();

    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header/body split");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    Scrape { body }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size_line, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size_line.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Metric families of an OpenMetrics exposition: family name → type.
pub fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut parts = rest.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

/// Series names a Prometheus server stores from this exposition: counters get `_total`,
/// histograms `_bucket`, `_count` and `_sum`, gauges keep their name. Includes names of
/// families that have no sample yet (labelled families before first use).
pub fn series_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (family, kind) in families(exposition) {
        match kind.as_str() {
            "counter" => {
                names.insert(format!("{family}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_count", "_sum"] {
                    names.insert(format!("{family}{suffix}"));
                }
            }
            _ => {
                names.insert(family);
            }
        }
    }
    names
}

/// Names of the samples actually present (with values) in the exposition.
pub fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}
