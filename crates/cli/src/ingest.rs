//! `duckmesh ingest <dataset> [FILE]`: post records (NDJSON or a JSON array, from a file or
//! stdin) to a query deployment's `POST /v1/ingest/{dataset}`, in batches, and print each
//! durable ack with the visibility token to read them with.

use anyhow::Context;
use duckmesh_query::client::{ClientError, QueryClient};
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `duckmesh ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset to write.
    dataset: String,

    /// NDJSON (one JSON object per line) or a JSON array of objects; `-` or absent: stdin.
    file: Option<PathBuf>,

    /// Records per request.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch: u32,

    /// Namespace of the dataset (the server's default when absent).
    #[arg(long)]
    namespace: Option<String>,

    /// Base URL of the API. Default: the `duckmesh dev` instance running with --state-dir,
    /// else http://localhost:8080.
    #[arg(long, env = "DUCKMESH_API_URL")]
    url: Option<String>,

    /// The dev state directory whose running instance to use when no --url is given.
    #[arg(long, env = "DUCKMESH_STATE_DIR", default_value = ".duckmesh")]
    state_dir: PathBuf,

    /// API key (sent as a bearer token).
    #[arg(long, env = "DUCKMESH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// How many times a batch answered 429 or 503 is retried (after `Retry-After`).
    #[arg(long, default_value_t = 10)]
    retries: u32,
}

/// Posts every batch; each is acknowledged before the next is sent.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut text = String::new();
    match args.file.as_ref().filter(|path| path.as_os_str() != "-") {
        Some(path) => {
            text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        }
        None => {
            std::io::stdin().read_to_string(&mut text).context("reading stdin")?;
        }
    }
    let lines = records(&text)?;
    if lines.is_empty() {
        anyhow::bail!("no records to send (expected NDJSON or a JSON array of objects)");
    }
    let client = QueryClient::new(crate::connect::api_url(args.url, &args.state_dir), args.api_key)?;
    let (mut accepted, mut duplicates, mut token) = (0, 0, 0);
    for chunk in lines.chunks(args.batch as usize) {
        let body = chunk.join("\n");
        let mut attempt = 0;
        let ack = loop {
            match client.ingest(&args.dataset, args.namespace.as_deref(), body.clone()).await {
                Ok(ack) => break ack,
                Err(ClientError::Api { status: 429 | 503, retry_after, .. }) if attempt < args.retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 60))).await;
                }
                Err(error) => return Err(error.into()),
            }
        };
        accepted += ack.accepted;
        duplicates += ack.duplicates;
        token = token.max(ack.visibility_token);
    }
    crate::out::print(&format!(
        "{accepted} records accepted, {duplicates} duplicates, into {}; visible at token {token} \
         (query with --min-visibility-token {token})",
        args.dataset
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// One compact JSON text per record: the elements of a JSON array, or the non-blank lines of
/// NDJSON (checked to be JSON, so a bad line is reported with its number before anything is
/// sent).
fn records(text: &str) -> anyhow::Result<Vec<String>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(trimmed).context("the input is not a JSON array")?;
        return Ok(values.iter().map(Value::to_string).collect());
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            serde_json::from_str::<Value>(line)
                .map(|value| value.to_string())
                .with_context(|| format!("line {} is not JSON", number + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_and_ndjson_split_into_records() {
        assert_eq!(records("[{\"a\": 1}, {\"a\": 2}]").expect("array"), ["{\"a\":1}", "{\"a\":2}"]);
        assert_eq!(records("{\"a\": 1}\n\n{\"a\": 2}\n").expect("ndjson"), ["{\"a\":1}", "{\"a\":2}"]);
        let error = records("{\"a\": 1}\nnope").expect_err("bad line");
        assert!(error.to_string().contains("line 2"), "{error}");
        assert!(records("").expect("empty").is_empty());
    }
}
