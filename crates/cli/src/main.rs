//! `duckmesh`: one binary, one subcommand per role. This file only parses arguments and hands
//! over to the libraries.

mod api;
mod catalog_cmd;
mod configuration;
mod connect;
mod coordinator;
mod dead_letters;
mod dev;
mod ingest;
mod maintain;
mod metrics;
mod migrate;
mod operator;
mod out;
mod query;
mod read_only;
mod ready;
mod restore_drill;
mod signals;
mod status;
mod worker;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

/// DuckMesh: Kubernetes-native data pipelines on DuckDB, Parquet and a Postgres catalog.
#[derive(Debug, Parser)]
#[command(name = "duckmesh", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Logs (stderr, JSON unless DUCKMESH_LOG_FORMAT=pretty) and OTLP traces, for every
    /// subcommand.
    #[command(flatten)]
    telemetry: duckmesh_telemetry::TelemetryArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the catalog's schema migrations (also done at start-up by every component).
    ///
    /// Without --database-url, runs against the private PostgreSQL that `duckmesh dev` uses
    /// (under --state-dir), creating it on first use.
    Migrate(migrate::Args),

    /// Run exactly one leased attempt of a task: inputs → DuckDB → Parquet → fenced commit.
    ///
    /// Started by the operator (one pod per attempt) or by `duckmesh dev`; the exit code says
    /// how the attempt ended (0 committed, 10 failed permanently, 11 failed and will retry,
    /// 12 fenced out, 13 failure not recorded). See docs/worker.md.
    Worker(worker::Args),

    /// Run the Kubernetes operator: Dataset, Job and Task controllers, one worker Pod per
    /// leased attempt, leader election on a Lease. See docs/operator.md.
    Operator(Box<operator::Args>),

    /// Print the CustomResourceDefinitions (Dataset, Job, Task) as YAML, for `kubectl apply -f -`.
    Crds,

    /// Print the knob tables of docs/configuration.md, generated from every component's flags.
    #[command(hide = true)]
    ConfigurationReference,

    /// Run the pipeline of YAML files on this machine: private PostgreSQL, local object store,
    /// workers as child processes, the API on 127.0.0.1:8080. No Kubernetes needed.
    ///
    /// Shows live progress, prints a summary, and exits 0 when every job succeeded, 1 when one
    /// failed, 2 for invalid files, 130 when stopped. Ctrl-C once lets running tasks finish;
    /// twice stops them. Rerunning resumes: committed tasks are not run again. Logs go to
    /// <state-dir>/logs/dev.log (workers: <state-dir>/logs/<job>/<task>-a<attempt>.log).
    Dev(dev::Args),

    /// List jobs and datasets (or one job's tasks) with their state.
    Status(status::Args),

    /// Serve the query API (`/v1/query`, `/v1/ingest`, `/v1/datasets`, health, metrics): the
    /// query deployment.
    Api(api::Args),

    /// Run the ingest coordinator: claim batches of acknowledged ingest events, write them as
    /// Parquet and commit each batch as an ingest snapshot, exactly once; records that do not
    /// convert to the dataset's types are dead-lettered. Serves /metrics, /healthz and /readyz
    /// on --listen. Any number of replicas may run; SIGTERM stops it after the batch in hand.
    /// See docs/coordinator.md.
    Coordinator(coordinator::Args),

    /// Run one read-only SQL query against a query API and print the result.
    Query(query::Args),

    /// Wait until a query API answers `GET /v1/ready` with 200 (a health check for images
    /// without a shell: init containers, `helm test`).
    Ready(ready::Args),

    /// Post records (NDJSON or a JSON array, from a file or stdin) to a dataset through the
    /// ingest API, in batches; prints the visibility token that makes them readable.
    Ingest(ingest::Args),

    /// List ingest records parked in the dead-letter table, or re-queue them once fixed.
    DeadLetters(dead_letters::Args),

    /// Turn emergency read-only mode on or off (refuses ingest and commits everywhere, queries
    /// keep working), or show it. See docs/runbooks/emergency-read-only.md.
    ReadOnly(read_only::Args),

    /// Check datasets against the bucket: every file a retained snapshot references present
    /// with its size (and with --verify-hashes its SHA-256), every manifest agreeing with its
    /// commit, orphans listed. Records each run (GET /v1/integrity); exits 1 on damage. See
    /// docs/maintenance.md and docs/runbooks/integrity-failures.md.
    Integrity(maintain::IntegrityArgs),

    /// Rewrite a dataset's small files, per partition, into target-size files as one fenced
    /// `compact` snapshot (same rows; concurrent appends kept). Runs as a leased task. See
    /// docs/maintenance.md and docs/runbooks/compaction-rollback.md.
    Compact(maintain::CompactArgs),

    /// Expire snapshots by the dataset's retention and delete the files no retained snapshot
    /// references (after a grace), and staging and the tenant's query exports older than 7
    /// days; first checkpoints the oldest retained snapshot to the bucket (for `catalog
    /// rebuild`). Runs as a leased task; --dry-run lists what would go. See docs/maintenance.md.
    Gc(maintain::GcArgs),

    /// Export a dataset as of a snapshot (default: the current one) as Parquet or CSV under
    /// `_exports/<namespace>/<prefix>/` of the bucket, with a manifest. Runs as a leased task.
    /// See docs/maintenance.md.
    Export(maintain::ExportArgs),

    /// Restore the catalog from a base backup and WAL archive into a scratch PostgreSQL (to
    /// --target-time, or the end of the archive), check snapshot consistency and the bucket,
    /// and print RPO and RTO; --rehearse runs a whole backup, disaster and restore on this
    /// machine. Exits 0 consistent, 1 inconsistent, 2 when the drill cannot run. See
    /// docs/runbooks/restore-from-backup.md.
    RestoreDrill(Box<restore_drill::Args>),

    /// Operations on the catalog as a whole: `catalog rebuild` restores a lost catalog from the
    /// bucket (the last resort when there is no backup). See docs/maintenance.md.
    Catalog(catalog_cmd::Args),
}

fn main() -> ExitCode {
    // A variable set but blank counts as unset, as it always has.
    let mut matches = duckmesh_config::without_blank_env(Cli::command()).get_matches();
    let log_flag = matches.value_source("log") == Some(clap::parser::ValueSource::CommandLine);
    let cli = match Cli::from_arg_matches_mut(&mut matches) {
        Ok(cli) => cli,
        Err(error) => error.format(&mut Cli::command()).exit(),
    };
    let _telemetry = match init_telemetry(&cli, log_flag) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Migrate(args) => migrate::run(args).await,
            Command::Worker(args) => worker::run(args).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Operator(args) => operator::run(*args).await,
            Command::Crds => {
                print!("{}", duckmesh_resources::crds_yaml()?);
                Ok(ExitCode::SUCCESS)
            }
            Command::ConfigurationReference => {
                print!("{}", configuration::reference(&Cli::command()));
                Ok(ExitCode::SUCCESS)
            }
            Command::Api(args) => api::run(args).await,
            Command::Coordinator(args) => coordinator::run(args).await,
            Command::Query(args) => query::run(args).await,
            Command::Ready(args) => ready::run(args).await,
            Command::Ingest(args) => ingest::run(args).await,
            Command::DeadLetters(args) => dead_letters::run(args).await,
            Command::ReadOnly(args) => read_only::run(args).await,
            Command::Integrity(args) => maintain::integrity(args).await,
            Command::Compact(args) => maintain::compact(args).await,
            Command::Gc(args) => maintain::gc(args).await,
            Command::Export(args) => maintain::export(args).await,
            Command::RestoreDrill(args) => restore_drill::run(*args).await,
            Command::Catalog(args) => catalog_cmd::run(args).await,
        }
    });
    // The command is done. A blocking read of stdin may still be parked (tokio reads stdin on a
    // blocking thread, and a pipe can stay open); do not wait on it for ever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// Starts logs and traces for the chosen role (`service` = `duckmesh-<subcommand>`);
/// `log_flag` says the log filter came from `--log` rather than a variable.
fn init_telemetry(cli: &Cli, log_flag: bool) -> anyhow::Result<duckmesh_telemetry::TelemetryGuard> {
    let role = match &cli.command {
        Command::Migrate(_) => "migrate",
        Command::Worker(_) => "worker",
        Command::Operator(_) => "operator",
        Command::Crds => "crds",
        Command::ConfigurationReference => "configuration-reference",
        Command::Dev(_) => "dev",
        Command::Status(_) => "status",
        Command::Api(_) => "api",
        Command::Coordinator(_) => "coordinator",
        Command::Query(_) => "query",
        Command::Ready(_) => "ready",
        Command::Ingest(_) => "ingest",
        Command::DeadLetters(_) => "dead-letters",
        Command::ReadOnly(_) => "read-only",
        Command::Integrity(_) => "integrity",
        Command::Compact(_) => "compact",
        Command::Gc(_) => "gc",
        Command::Export(_) => "export",
        Command::RestoreDrill(_) => "restore-drill",
        Command::Catalog(_) => "catalog",
    };
    let mut config = cli.telemetry.clone().into_config(&format!("duckmesh-{role}"))?;
    if log_flag {
        config.log_filter_source = "--log";
    }
    if let Command::Dev(args) = &cli.command {
        // The terminal shows progress; the dev process's own logs go to a file.
        let dir = args.state_dir.join("logs");
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("dev.log");
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        return Ok(duckmesh_telemetry::init_with(config, std::sync::Mutex::new(file))?);
    }
    Ok(duckmesh_telemetry::init_with(config, std::io::stderr)?)
}

/// The error and its causes on one line, skipping causes whose text the previous message
/// already contains (many errors repeat their source in their own message).
fn describe(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
