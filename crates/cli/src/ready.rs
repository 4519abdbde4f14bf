//! `duckmesh ready`: waits until a query API answers `GET /v1/ready` with 200. The image has no
//! shell or curl, so this is how a `helm test` pod or an init container checks the API.

use anyhow::Context;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Arguments of `duckmesh ready`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the query API. Default: the `duckmesh dev` instance running with
    /// --state-dir, else http://localhost:8080.
    #[arg(long, env = "DUCKMESH_API_URL")]
    url: Option<String>,

    /// The dev state directory whose running instance to check when no --url is given.
    #[arg(long, env = "DUCKMESH_STATE_DIR", default_value = ".duckmesh")]
    state_dir: std::path::PathBuf,

    /// Keep asking (every second) for up to this many seconds; 0 asks once.
    #[arg(long, default_value_t = 0)]
    timeout_seconds: u64,
}

/// Exits 0 with the answer printed once `/v1/ready` answers 200; 1 with the last answer or
/// error when it did not within the timeout.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let base = crate::connect::api_url(args.url, &args.state_dir);
    let url = format!("{}/v1/ready", base.trim_end_matches('/'));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().context("HTTP client")?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    loop {
        let last = match http.get(&url).send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                if status.is_success() {
                    println!("{}", body.trim_end());
                    return Ok(ExitCode::SUCCESS);
                }
                format!("{url} answered {status}: {}", body.trim_end())
            }
            Err(error) => format!("{url}: {error}"),
        };
        if Instant::now() >= deadline {
            eprintln!("not ready: {last}");
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
