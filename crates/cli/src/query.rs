//! `duckmesh query "<sql>"`: a thin client of a query deployment's `/v1/query` that prints the
//! result as a table, JSON or CSV.

use duckmesh_query::QueryRequest;
use duckmesh_query::client::{QueryClient, render_csv, render_json, render_table};
use std::process::ExitCode;

/// How to print the result.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    /// A table for the terminal.
    Table,
    /// The API's JSON answer.
    Json,
    /// CSV with a header line.
    Csv,
}

/// Arguments of `duckmesh query`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One read-only SQL query; datasets are tables.
    sql: String,

    /// Base URL of the query API. Default: the `duckmesh dev` instance running with
    /// --state-dir, else http://localhost:8080.
    #[arg(long, env = "DUCKMESH_API_URL")]
    url: Option<String>,

    /// The dev state directory whose running instance to query when no --url is given.
    #[arg(long, env = "DUCKMESH_STATE_DIR", default_value = ".duckmesh")]
    state_dir: std::path::PathBuf,

    /// API key (sent as a bearer token).
    #[arg(long, env = "DUCKMESH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Output,

    /// Pin a dataset to a snapshot, as `dataset=snapshot` (repeatable).
    #[arg(long = "snapshot", value_name = "DATASET=ID", value_parser = parse_pin)]
    snapshots: Vec<(String, i64)>,

    /// Wait until the datasets are visible at this token (strict barrier).
    #[arg(long)]
    min_visibility_token: Option<i64>,

    /// Time limit in milliseconds (capped by the server's limit for the endpoint).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    timeout_ms: Option<i64>,

    /// Namespace of the datasets (the server's default when absent).
    #[arg(long)]
    namespace: Option<String>,
}

fn parse_pin(text: &str) -> Result<(String, i64), String> {
    let (dataset, id) = text.split_once('=').ok_or("expected dataset=snapshot")?;
    let id = id.trim().parse().map_err(|_| format!("{id:?} is not a snapshot id"))?;
    Ok((dataset.trim().to_owned(), id))
}

/// Runs the query and prints the result; a refused or failed query is an error naming its code.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let url = crate::connect::api_url(args.url, &args.state_dir);
    let client = QueryClient::new(url, args.api_key)?;
    let request = QueryRequest {
        snapshots: args.snapshots.into_iter().collect(),
        min_visibility_token: args.min_visibility_token,
        timeout_ms: args.timeout_ms,
        namespace: args.namespace,
        ..QueryRequest::new(args.sql)
    };
    let response = client.query(&request).await?;
    let text = match args.format {
        Output::Table => render_table(&response),
        Output::Json => render_json(&response),
        Output::Csv => render_csv(&response),
    };
    crate::out::print(text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}
