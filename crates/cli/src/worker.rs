//! `duckmesh worker`: run exactly one leased attempt of a task (the process inside a worker
//! pod, or one started by `duckmesh dev`). Arguments and knobs come from flags or the
//! environment the scheduler sets; the work itself is `duckmesh_worker::Worker`.

use duckmesh_catalog::AttemptRef;
use duckmesh_catalog::{Catalog, CatalogArgs, ConnectOptions};
use duckmesh_core::{AttemptId, Fence, TaskId};
use duckmesh_maintenance::{
    COMPACT_KIND, CompactionOutcome, Compactor, EXPORT_KIND, ExportRunner, GC_KIND, GcOptions, GcRunner,
    INTEGRITY_KIND, IntegrityRunner,
};
use duckmesh_storage::ObjectStore;
use duckmesh_storage::{StoreArgs, StoreCounters};
use duckmesh_worker::{AttemptIdentity, Outcome, Worker, WorkerArgs, WorkerConfig, exit, report_failure};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Arguments of `duckmesh worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The task to run.
    #[arg(long, env = "DUCKMESH_TASK_ID")]
    task: i64,

    /// The attempt (lease) to run it under.
    #[arg(long, env = "DUCKMESH_ATTEMPT_ID")]
    attempt: i64,

    /// The attempt's fencing token.
    #[arg(long, env = "DUCKMESH_FENCE")]
    fence: i64,

    /// Catalog database URL.
    #[arg(long, env = "DUCKMESH_DATABASE_URL", hide_env_values = true)]
    database_url: String,

    /// W3C trace context of the scheduler that started this attempt.
    #[arg(long, env = "TRACEPARENT")]
    traceparent: Option<String>,

    #[command(flatten)]
    worker: WorkerArgs,

    #[command(flatten)]
    catalog: CatalogArgs,

    #[command(flatten)]
    store: StoreArgs,
}

/// Runs the attempt; the exit code says how it ended (docs/worker.md).
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let identity = AttemptIdentity {
        task: TaskId(args.task),
        attempt: AttemptId(args.attempt),
        fence: Fence(args.fence),
        traceparent: args.traceparent,
    };
    let config = args.worker.into_config();
    let catalog_config = match args.catalog.into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(exit::USAGE));
        }
    };
    let mut options = ConnectOptions::new(args.database_url);
    options.max_connections = 4;
    options.acquire_timeout = Duration::from_secs(15);
    // One connection per run, not two: an unreachable catalog is still reported with its cause.
    options.probe = false;
    let catalog = match Catalog::connect(&options, catalog_config).await {
        Ok(catalog) => catalog,
        Err(error) => {
            // Nothing can be reported without the catalog: the lease runs out and the reaper
            // retries the task.
            eprintln!("error: {error}");
            return Ok(ExitCode::from(exit::UNREPORTED));
        }
    };
    let store = match args.store.store_config() {
        Ok(store_config) => store_config.build(Arc::new(StoreCounters::new())).await,
        Err(error) => Err(error),
    };
    // The attempt's spans continue the trace of the scheduler that started it.
    let span = tracing::info_span!("worker");
    duckmesh_telemetry::set_parent_from_env(&span);
    let store = match store {
        Ok(store) => match catalog.task(identity.task).await {
            // Maintenance kinds run the same leased, fenced protocol in duckmesh-maintenance.
            Ok(task) if MAINTENANCE_KINDS.contains(&task.kind.as_str()) => {
                let code = maintain(&task.kind, catalog.clone(), store, identity.attempt_ref(), &config)
                    .instrument(span)
                    .await;
                catalog.close().await;
                return Ok(ExitCode::from(code));
            }
            _ => Ok(store),
        },
        Err(error) => Err(error),
    };
    let outcome = match store {
        Ok(store) => {
            Worker::new(catalog.clone(), store, config).run(&identity, stop_on_signal()).instrument(span).await
        }
        Err(error) => report_failure(&catalog, identity.attempt_ref(), error.into()).instrument(span).await,
    };
    catalog.close().await;
    match &outcome {
        Outcome::Committed(summary) => println!(
            "committed snapshot {} of dataset {}: {} files, {} rows, {} bytes (manifest {})",
            summary.committed.snapshot,
            summary.committed.dataset,
            summary.files,
            summary.rows,
            summary.bytes,
            summary.manifest_path
        ),
        other => {
            if let Some(error) = other.error() {
                eprintln!("error [{}]: {error}", error.error_code());
            }
        }
    }
    Ok(ExitCode::from(outcome.exit_code()))
}

/// Task kinds run by `duckmesh_maintenance` rather than the SQL worker.
const MAINTENANCE_KINDS: [&str; 4] = [COMPACT_KIND, EXPORT_KIND, GC_KIND, INTEGRITY_KIND];

/// Runs one attempt of a maintenance task; returns the exit code (the same codes as a `sql`
/// attempt: success, a reported permanent or retryable failure, or a lost fence).
async fn maintain(
    kind: &str,
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    attempt: AttemptRef,
    config: &WorkerConfig,
) -> u8 {
    let (heartbeat, runner) = (config.heartbeat, config.runner.clone());
    let result = match kind {
        COMPACT_KIND => Compactor::new(catalog, store, config.work_dir.clone(), heartbeat, runner)
            .with_transfer_concurrency(config.transfer_concurrency)
            .run(attempt)
            .await
            .map(|outcome| match outcome {
                CompactionOutcome::Committed { committed, replaced, written, bytes_read, bytes_written } => format!(
                    "compacted {replaced} files ({bytes_read} bytes) into {written} ({bytes_written} bytes): snapshot {} \
                     of dataset {}",
                    committed.snapshot, committed.dataset
                ),
                CompactionOutcome::Unchanged { small_files } => {
                    format!("nothing to compact ({small_files} small files)")
                }
            }),
        EXPORT_KIND => ExportRunner::new(catalog, store, config.work_dir.clone(), heartbeat, runner)
            .with_transfer_concurrency(config.transfer_concurrency)
            .run(attempt)
            .await
            .map(|report| {
                format!(
                    "exported snapshot {} to {}: {} files, {} rows, {} bytes (manifest {})",
                    report.snapshot,
                    report.target,
                    report.files.len(),
                    report.rows,
                    report.bytes,
                    report.manifest
                )
            }),
        // A dry run (the task's `gc.dryRun`) lists every key it would delete, as `duckmesh gc
        // --dry-run` does.
        GC_KIND => GcRunner::new(catalog, store, heartbeat, runner, GcOptions::default())
            .run(attempt)
            .await
            .map(|report| crate::maintain::gc_lines("gc", &report)),
        _ => IntegrityRunner::new(catalog, store, heartbeat, runner).run(attempt).await.map(|report| {
            let counts = report.counts;
            format!(
                "integrity run {}: {} files checked, {} missing, {} size mismatches, {} hash mismatches, {} manifest \
                 problems, {} orphans",
                report.run_id,
                counts.files_checked,
                counts.missing_files,
                counts.size_mismatch_files,
                counts.hash_mismatch_files,
                counts.manifest_problems,
                counts.orphan_files
            )
        }),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            exit::COMMITTED
        }
        Err(error) => {
            eprintln!("error [{}]: {error}", error.error_code());
            if error.is_fenced() {
                exit::FENCED
            } else if error.is_retryable() {
                exit::FAILED_RETRYABLE
            } else {
                exit::FAILED_PERMANENT
            }
        }
    }
}

/// A token cancelled by SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
fn stop_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        crate::signals::terminated().await;
        cancel.cancel();
    });
    token
}
