//! `duckmesh dev`: run the pipeline described by YAML files on this machine (no Kubernetes).
//! The work is `duckmesh_dev::run`.

use duckmesh_dev::{DevArgs, DevOptions, DevOutcome};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `duckmesh dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// YAML files or directories of Dataset, Job and Task resources (the same files
    /// `kubectl apply -f` takes).
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    pub files: Vec<PathBuf>,

    /// Where the private PostgreSQL, object store, caches and logs live. A rerun with the same
    /// directory resumes: tasks that committed are not run again.
    #[arg(long, env = "DUCKMESH_STATE_DIR", default_value = ".duckmesh")]
    pub state_dir: PathBuf,

    /// Use this PostgreSQL as the catalog instead of a private one.
    #[arg(long, env = "DUCKMESH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Where the query API and /metrics listen.
    #[arg(long, env = "DUCKMESH_DEV_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Keep serving the API (queries and ingest) after the jobs end, until Ctrl-C, and keep
    /// scheduling (the Datasets' scheduled maintenance, the scheduler's gauges on /metrics).
    /// Files with only Datasets (an ingest setup) always serve until Ctrl-C.
    #[arg(long)]
    pub keep_serving: bool,

    /// Workers running at once at most (default: the number of CPUs).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_parallel: Option<u16>,

    /// Store data in this S3 bucket instead of under the state directory (credentials from
    /// the usual AWS_* variables).
    #[arg(long, env = "DUCKMESH_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000 for MinIO.
    #[arg(long, env = "DUCKMESH_S3_ENDPOINT", requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,

    #[command(flatten)]
    pub knobs: DevArgs,
}

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Dev mode reads its knobs, and its components theirs, from this overlay of the
    // environment; a flag given here wins over the variable.
    let mut extra_env = vec![("DUCKMESH_DEV_CACHE_MAX_MB".to_owned(), args.knobs.dev_cache_max_mb.to_string())];
    if let Some(bucket) = &args.s3_bucket {
        extra_env.push(("DUCKMESH_STORAGE_BACKEND".to_owned(), "s3".to_owned()));
        extra_env.push(("DUCKMESH_S3_BUCKET".to_owned(), bucket.clone()));
    }
    if let Some(endpoint) = &args.s3_endpoint {
        extra_env.push(("DUCKMESH_S3_ENDPOINT".to_owned(), endpoint.clone()));
        extra_env.push(("DUCKMESH_S3_FORCE_PATH_STYLE".to_owned(), "true".to_owned()));
    }
    let options = DevOptions {
        files: args.files,
        state_dir: args.state_dir,
        database_url: args.database_url,
        listen: args.listen,
        keep_serving: args.keep_serving,
        max_parallel: args
            .max_parallel
            .map(usize::from)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
        program: std::env::current_exe()?,
        extra_env,
    };
    match duckmesh_dev::run(options).await {
        Ok(outcome) => Ok(ExitCode::from(outcome.exit_code())),
        Err(error) => {
            tracing::error!(%error, error_code = error.error_code(), "duckmesh dev failed");
            eprintln!("error [{}]: {error}", error.error_code());
            Ok(ExitCode::from(match error {
                duckmesh_dev::DevError::Source(_) | duckmesh_dev::DevError::Config(_) => 2,
                _ => DevOutcome::Failed.exit_code(),
            }))
        }
    }
}
