//! `duckmesh integrity | compact | gc | export`: the maintenance of committed data, by hand (the same
//! work the scheduler runs on a schedule; docs/maintenance.md).
//!
//! - `integrity` checks datasets against the bucket and records the runs (read-only, so it runs
//!   directly); it exits 1 when a dataset's committed data is damaged.
//! - `compact`, `gc` and `export` write to the bucket, so each creates a standalone task of its kind in the
//!   dataset's namespace and runs it here under a lease, fenced like any task (if a scheduler
//!   leases the task first, the command waits for it to finish). `gc --dry-run` only reads.

use crate::connect::CatalogArgs;
use anyhow::Context;
use duckmesh_catalog::{Catalog, CommitMode, DatasetRecord, Lease, TaskOutput, TaskSpec};
use duckmesh_core::{TaskId, TaskPhase};
use duckmesh_maintenance::{
    COMPACT_KIND, CompactionOutcome, Compactor, EXPORT_KIND, ExportRunner, GC_KIND, GcOptions, GcReport, GcRunner,
    IntegrityOptions, IntegrityReport, check_dataset, collect_dataset,
};
use duckmesh_storage::{ObjectStore, StoreArgs, StoreConfig, StoreCounters};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Which datasets a command works on.
#[derive(Debug, clap::Args)]
pub struct Datasets {
    /// Dataset names (in --namespace).
    #[arg(required_unless_present = "all")]
    datasets: Vec<String>,

    /// Every dataset of the namespace.
    #[arg(long, conflicts_with = "datasets")]
    all: bool,

    /// The datasets' namespace.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
}

/// Arguments of `duckmesh integrity`.
#[derive(Debug, clap::Args)]
pub struct IntegrityArgs {
    #[command(flatten)]
    datasets: Datasets,

    /// Also download every file and compare its SHA-256 (reads all the data).
    #[arg(long)]
    verify_hashes: bool,

    /// Report unreferenced objects only once they are this many seconds old (an upload may be
    /// in flight).
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    orphan_grace: u64,

    /// Problems to print per dataset (all are counted and stored).
    #[arg(long, default_value_t = 20)]
    show: usize,

    #[command(flatten)]
    target: CatalogArgs,

    #[command(flatten)]
    store: StoreArgs,
}

/// Arguments of `duckmesh compact`.
#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    #[command(flatten)]
    datasets: Datasets,

    /// Compact a partition once it has at least this many small files.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..))]
    min_files: u32,

    /// Size of the files written, below which a file counts as small; default: the dataset's
    /// targetFileSizeBytes, else 128 MiB.
    #[arg(long, value_name = "BYTES")]
    target_file_size_bytes: Option<u64>,

    #[command(flatten)]
    run: RunArgs,
}

/// Arguments of `duckmesh gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    datasets: Datasets,

    /// List what would be expired and deleted; change nothing.
    #[arg(long)]
    dry_run: bool,

    /// Seconds between a snapshot's expiry and the deletion of the files only it referenced
    /// (longer than any query runs; at most 31536000, 365 days).
    #[arg(long, default_value_t = 3600, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(0..=duckmesh_maintenance::MAX_GC_GRACE_SECONDS))]
    grace: u64,

    #[command(flatten)]
    run: RunArgs,
}

/// Arguments of `duckmesh export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The dataset to export.
    dataset: String,

    /// The dataset's namespace.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,

    /// Where to write, under `_exports/<namespace>/` of the bucket (e.g. `trips/2026-12-02`).
    #[arg(long, value_name = "PREFIX")]
    to: String,

    /// The snapshot to export; default: the current one.
    #[arg(long)]
    snapshot: Option<i64>,

    /// `parquet` (split by target size) or `csv` (one file with a header line).
    #[arg(long, default_value = "parquet", value_parser = ["parquet", "csv"])]
    format: String,

    #[command(flatten)]
    run: RunArgs,
}

/// How `compact`, `gc` and `export` reach the catalog and the store, and run their tasks.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Seconds between lease renewals while the task runs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    heartbeat_seconds: u64,

    /// Scratch directory for the files the task downloads and writes.
    #[arg(long, env = "DUCKMESH_WORK_DIR")]
    work_dir: Option<std::path::PathBuf>,

    #[command(flatten)]
    target: CatalogArgs,

    #[command(flatten)]
    store: StoreArgs,
}

/// Runs `duckmesh integrity`.
pub async fn integrity(args: IntegrityArgs) -> anyhow::Result<ExitCode> {
    let handle = args.target.connect().await?;
    let store = store(&args.store, &args.target).await?;
    let datasets = resolve(&handle.catalog, &args.datasets).await?;
    let options = IntegrityOptions {
        verify_hashes: args.verify_hashes,
        orphan_grace: Duration::from_secs(args.orphan_grace),
        ..IntegrityOptions::default()
    };
    let mut reports = Vec::new();
    for dataset in &datasets {
        match check_dataset(&handle.catalog, store.as_ref(), dataset, &options).await {
            Ok(report) => reports.push(report),
            Err(error) => {
                duckmesh_maintenance::record_failure(&handle.catalog, "integrity", Some(dataset.id), &error).await;
                return Err(error).with_context(|| format!("checking dataset {:?}", dataset.name));
            }
        }
    }
    crate::out::print(&integrity_table(&reports, args.show))?;
    handle.catalog.close().await;
    Ok(if reports.iter().all(IntegrityReport::is_clean) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn integrity_table(reports: &[IntegrityReport], show: usize) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["dataset", "run", "files", "missing", "size", "hash", "manifests", "orphans", "result"]);
    for report in reports {
        let counts = report.counts;
        table.add_row([
            format!("{}/{}", report.namespace, report.name),
            report.run_id.to_string(),
            counts.files_checked.to_string(),
            counts.missing_files.to_string(),
            counts.size_mismatch_files.to_string(),
            counts.hash_mismatch_files.to_string(),
            counts.manifest_problems.to_string(),
            counts.orphan_files.to_string(),
            if report.is_clean() { "clean" } else { "DAMAGED" }.to_owned(),
        ]);
    }
    let mut text = table.to_string();
    for report in reports {
        for problem in report.problems.iter().take(show) {
            text.push_str(&format!(
                "\n{}: {} {}: {}",
                report.name,
                problem.kind.as_str(),
                problem.path,
                problem.detail
            ));
        }
        if report.problems.len() > show {
            text.push_str(&format!("\n{}: … and {} more (--show)", report.name, report.problems.len() - show));
        }
    }
    text
}

/// Runs `duckmesh compact`.
pub async fn compact(args: CompactArgs) -> anyhow::Result<ExitCode> {
    let spec = serde_json::json!({
        "minFiles": args.min_files,
        "targetFileSizeBytes": args.target_file_size_bytes,
    });
    let run = &args.run;
    let handle = run.target.connect().await?;
    let store = store(&run.store, &run.target).await?;
    let mut failed = false;
    for dataset in resolve(&handle.catalog, &args.datasets).await? {
        let (id, lease) = task(&handle.catalog, &dataset, COMPACT_KIND, spec.clone()).await?;
        let Some(lease) = lease else {
            failed |= !waited(&handle.catalog, &dataset, id).await?;
            continue;
        };
        let compactor = Compactor::new(handle.catalog.clone(), store.clone(), work_dir(run), heartbeat(run), runner());
        let line = match compactor.run(lease.attempt_ref()).await {
            Ok(CompactionOutcome::Committed { committed, replaced, written, bytes_read, bytes_written }) => format!(
                "{}: compacted {replaced} files ({}) into {written} ({}) as snapshot {}",
                dataset.name,
                indicatif::HumanBytes(u64::try_from(bytes_read).unwrap_or_default()),
                indicatif::HumanBytes(u64::try_from(bytes_written).unwrap_or_default()),
                committed.snapshot
            ),
            Ok(CompactionOutcome::Unchanged { small_files }) => {
                format!("{}: nothing to compact ({small_files} small files)", dataset.name)
            }
            Err(error) => {
                failed = true;
                format!("{}: error [{}]: {error}", dataset.name, error.error_code())
            }
        };
        crate::out::print(&line)?;
    }
    handle.catalog.close().await;
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Runs `duckmesh gc`.
pub async fn gc(args: GcArgs) -> anyhow::Result<ExitCode> {
    let run = &args.run;
    let handle = run.target.connect().await?;
    let store = store(&run.store, &run.target).await?;
    let options = GcOptions { dry_run: args.dry_run, grace: Duration::from_secs(args.grace), ..GcOptions::default() };
    let mut failed = false;
    for dataset in resolve(&handle.catalog, &args.datasets).await? {
        let report = if args.dry_run {
            collect_dataset(&handle.catalog, store.as_ref(), &dataset, &options, &CancellationToken::new()).await
        } else {
            // The task's spec says what the run does, as a gc Task's settings would.
            let spec = serde_json::json!({"graceSeconds": args.grace});
            let (id, lease) = task(&handle.catalog, &dataset, GC_KIND, spec).await?;
            let Some(lease) = lease else {
                failed |= !waited(&handle.catalog, &dataset, id).await?;
                continue;
            };
            GcRunner::new(handle.catalog.clone(), store.clone(), heartbeat(run), runner(), options.clone())
                .run(lease.attempt_ref())
                .await
        };
        match report {
            Ok(report) => crate::out::print(&gc_lines(&dataset.name, &report))?,
            Err(error) => {
                failed = true;
                crate::out::print(&format!("{}: error [{}]: {error}", dataset.name, error.error_code()))?;
            }
        }
    }
    handle.catalog.close().await;
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Runs `duckmesh export`.
pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let run = &args.run;
    let handle = run.target.connect().await?;
    let store = store(&run.store, &run.target).await?;
    let datasets = Datasets { datasets: vec![args.dataset.clone()], all: false, namespace: args.namespace.clone() };
    let dataset = resolve(&handle.catalog, &datasets).await?.remove(0);
    let spec = serde_json::json!({"prefix": args.to, "snapshot": args.snapshot, "format": args.format});
    let (id, lease) = task(&handle.catalog, &dataset, EXPORT_KIND, spec).await?;
    let Some(lease) = lease else {
        let succeeded = waited(&handle.catalog, &dataset, id).await?;
        handle.catalog.close().await;
        return Ok(if succeeded { ExitCode::SUCCESS } else { ExitCode::from(1) });
    };
    let runner = ExportRunner::new(handle.catalog.clone(), store, work_dir(run), heartbeat(run), runner());
    let result = runner.run(lease.attempt_ref()).await;
    handle.catalog.close().await;
    match result {
        Ok(report) => {
            crate::out::print(&format!(
                "{}: exported snapshot {} to {} ({} files, {} rows, {}); manifest {}",
                dataset.name,
                report.snapshot,
                report.target,
                report.files.len(),
                report.rows,
                indicatif::HumanBytes(u64::try_from(report.bytes).unwrap_or_default()),
                report.manifest
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            crate::out::print(&format!("{}: error [{}]: {error}", dataset.name, error.error_code()))?;
            Ok(ExitCode::from(1))
        }
    }
}

/// What a collection did (or, dry, would do), `label` first (the dataset's name); a dry run
/// lists every key it would delete.
pub(crate) fn gc_lines(label: &str, report: &GcReport) -> String {
    let verb = if report.dry_run { "would" } else { "did" };
    let mut text = format!(
        "{label}: {verb} expire {} snapshots, delete {} files, {} manifests, {} staging objects ({}), {} superseded catalog records and {} query exports",
        report.expired_snapshots.len(),
        report.files.len(),
        report.manifests.len(),
        report.staging.len(),
        indicatif::HumanBytes(report.bytes),
        report.records.len(),
        report.exports.len(),
    );
    if let Some(checkpoint) = &report.checkpoint {
        let verb = if report.dry_run { "would write" } else { "wrote" };
        text.push_str(&format!("\n  {verb} checkpoint {checkpoint}"));
    }
    if report.dry_run {
        for key in report
            .files
            .iter()
            .chain(&report.manifests)
            .chain(&report.staging)
            .chain(&report.records)
            .chain(&report.exports)
        {
            text.push_str(&format!("\n  {key}"));
        }
    }
    text
}

/// The datasets named (or all of the namespace), each checked to exist.
async fn resolve(catalog: &Catalog, datasets: &Datasets) -> anyhow::Result<Vec<DatasetRecord>> {
    if datasets.all {
        let all = catalog.datasets(None).await?;
        return Ok(all.into_iter().filter(|dataset| dataset.namespace == datasets.namespace).collect());
    }
    let mut found = Vec::with_capacity(datasets.datasets.len());
    for name in &datasets.datasets {
        let dataset = catalog
            .dataset_by_name(&datasets.namespace, name)
            .await
            .with_context(|| format!("dataset {name:?} in namespace {:?}", datasets.namespace))?;
        found.push(dataset);
    }
    Ok(found)
}

/// A standalone task of `kind` on `dataset` and its lease by this command (`None` when a
/// scheduler leased it first).
async fn task(
    catalog: &Catalog,
    dataset: &DatasetRecord,
    kind: &str,
    spec: serde_json::Value,
) -> anyhow::Result<(TaskId, Option<Lease>)> {
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S%3f");
    let spec = TaskSpec {
        name: format!("{kind}-{stamp}"),
        kind: kind.to_owned(),
        depends_on: vec![],
        max_attempts: Some(1),
        timeout_seconds: None,
        output: Some(TaskOutput { dataset: dataset.id, mode: CommitMode::Append }),
        spec,
    };
    let id = catalog.upsert_standalone_task(&dataset.namespace, &dataset.tenant, &spec).await?;
    let lease = catalog.lease_task(id, &runner().unwrap_or_default(), catalog.config().lease).await?;
    Ok((id, lease))
}

/// Waits for task `id` of `dataset`, leased by someone else, to finish; true when it
/// succeeded.
async fn waited(catalog: &Catalog, dataset: &DatasetRecord, id: TaskId) -> anyhow::Result<bool> {
    crate::out::print(&format!("{}: a scheduler took task {id}; waiting for it", dataset.name))?;
    loop {
        let task = catalog.task(id).await?;
        if task.phase.is_terminal() {
            return Ok(task.phase == TaskPhase::Succeeded);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The store of `--database-url`'s installation, or the dev instance's local store.
pub(crate) async fn store(args: &StoreArgs, target: &CatalogArgs) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let config = match args.store_config() {
        Ok(config) => config,
        Err(_) if target.database_url.is_none() => StoreConfig::Local { root: target.state_dir.join("objects") },
        Err(error) => return Err(error).context("configuring the object store"),
    };
    Ok(config.build(Arc::new(StoreCounters::new())).await?)
}

fn work_dir(run: &RunArgs) -> std::path::PathBuf {
    run.work_dir.clone().unwrap_or_else(std::env::temp_dir)
}

fn heartbeat(run: &RunArgs) -> Duration {
    Duration::from_secs(run.heartbeat_seconds)
}

fn runner() -> Option<String> {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    Some(format!("duckmesh-cli@{host}"))
}
