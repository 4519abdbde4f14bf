//! `duckmesh catalog …`: operations on the catalog as a whole. `catalog rebuild` restores a lost
//! catalog from the bucket (the last resort when there is no backup; docs/maintenance.md,
//! "Catalog rebuild"); the work is `duckmesh_maintenance::rebuild_catalog`'s.

use crate::connect::CatalogArgs;
use anyhow::Context;
use duckmesh_maintenance::{RebuildOptions, RebuildProgress, RebuildReport, rebuild_catalog};
use duckmesh_storage::StoreArgs;
use indicatif::{ProgressBar, ProgressStyle};
use std::process::ExitCode;

/// Arguments of `duckmesh catalog`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: CatalogCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CatalogCommand {
    /// Rebuild a lost catalog from the bucket into an empty database: datasets, snapshots
    /// (ids, parents, visibility tokens) and files, from the GC checkpoints, the commit records
    /// the outbox dispatcher writes under `_catalog/`, and the manifests next to every commit.
    /// The database is migrated first and must hold no dataset. Commits whose record was not
    /// written yet are listed as unconfirmed, not restored. Jobs, tasks and the ingest buffer
    /// are not restored. See docs/maintenance.md and docs/runbooks/restore-from-backup.md.
    Rebuild(RebuildArgs),
}

/// Arguments of `duckmesh catalog rebuild`.
#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Read and verify everything and print what would be restored; write nothing (and do
    /// not touch the database).
    #[arg(long)]
    dry_run: bool,

    /// Records and manifests read at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,

    #[command(flatten)]
    target: CatalogArgs,

    #[command(flatten)]
    store: StoreArgs,
}

/// Runs `duckmesh catalog …`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        CatalogCommand::Rebuild(args) => rebuild(args).await,
    }
}

async fn rebuild(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let handle = args.target.connect().await?;
    let store = crate::maintain::store(&args.store, &args.target).await?;
    if !args.dry_run {
        handle.catalog.migrate().await.context("migrating the catalog to rebuild into")?;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} reading records and manifests {pos}/{len} [{elapsed}] eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = |event| match event {
        RebuildProgress::Records { total } => bar.set_length(total),
        RebuildProgress::RecordRead => bar.inc(1),
    };
    let options = RebuildOptions { dry_run: args.dry_run, concurrency: usize::from(args.concurrency) };
    let result = rebuild_catalog(&handle.catalog, store.as_ref(), &options, &progress).await;
    bar.finish_and_clear();
    handle.catalog.close().await;
    let report = result.context("rebuilding the catalog")?;
    crate::out::print(&render(&report))?;
    Ok(ExitCode::SUCCESS)
}

fn render(report: &RebuildReport) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["dataset", "from checkpoint", "snapshots", "files", "current", "token", "rows"]);
    for dataset in &report.datasets {
        table.add_row([
            format!("{}/{}", dataset.namespace, dataset.name),
            dataset.checkpoint.map_or_else(|| "-".to_owned(), |id| id.to_string()),
            dataset.snapshots.to_string(),
            dataset.files.to_string(),
            dataset.current.to_string(),
            dataset.visibility_token.to_string(),
            dataset.rows.to_string(),
        ]);
    }
    let mut text = table.to_string();
    for dataset in report.datasets.iter().filter(|dataset| dataset.ignored_records > 0) {
        text.push_str(&format!(
            "\n{}/{}: ignored {} record(s) of an earlier dataset of the same name",
            dataset.namespace, dataset.name, dataset.ignored_records
        ));
    }
    if !report.unconfirmed.is_empty() {
        text.push_str(&format!(
            "\n{} unconfirmed manifest(s), not restored (a commit whose record was not written before the loss, or an attempt that never committed):",
            report.unconfirmed.len()
        ));
        for unconfirmed in &report.unconfirmed {
            let when = unconfirmed
                .last_modified
                .map(|at| chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339())
                .unwrap_or_else(|| "unknown time".into());
            text.push_str(&format!("\n  {} ({when})", unconfirmed.key));
        }
    }
    let (datasets, snapshots, files): (usize, usize, usize) =
        report.datasets.iter().fold((0, 0, 0), |(d, s, f), dataset| (d + 1, s + dataset.snapshots, f + dataset.files));
    match (&report.restored, report.fence_seq) {
        (Some(_), Some(fence)) => text.push_str(&format!(
            "\nrestored {datasets} dataset(s), {snapshots} snapshot(s), {files} file(s); fence_seq is at {fence}"
        )),
        _ => text.push_str(&format!(
            "\ndry run: would restore {datasets} dataset(s), {snapshots} snapshot(s), {files} file(s); nothing written"
        )),
    }
    text
}
