//! A real `/metrics` server to scrape, an OpenMetrics text parser, and the repository root:
//! the telemetry crate's test helpers, shared rather than copied, with every scrape required to
//! answer 200.

#[path = "../../../telemetry/tests/common/mod.rs"]
mod telemetry_common;

pub use telemetry_common::{Scrape, families, repo_root, sample_names, series_names};

use duckmesh_telemetry::Metrics;

/// Serves `metrics` on an ephemeral loopback port, scrapes it once over real HTTP and checks
/// the answer is 200.
pub async fn scrape(metrics: &Metrics) -> Scrape {
    let scrape = telemetry_common::scrape(metrics).await;
    assert!(scrape.status_line.starts_with("HTTP/1.1 200 "), "{}", scrape.status_line);
    scrape
}
