//! `duckmesh status`: jobs, their tasks and datasets, read from the catalog of the running
//! dev instance, of the dev state directory, or of any database URL.

use anyhow::Context;
use duckmesh_catalog::Catalog;
use duckmesh_dev::progress::{JobView, datasets_table, tasks_table};
use std::collections::HashMap;
use std::process::ExitCode;

/// Arguments of `duckmesh status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show this job's tasks (by name); without it, every job and dataset is listed.
    pub job: Option<String>,

    /// Namespace of the job.
    #[arg(long, default_value = "default")]
    pub namespace: String,

    #[command(flatten)]
    pub target: crate::connect::CatalogArgs,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let handle = args.target.connect().await?;
    let catalog = handle.catalog.clone();
    let result = print(&catalog, &args).await;
    catalog.close().await;
    result
}

async fn print(catalog: &Catalog, args: &Args) -> anyhow::Result<ExitCode> {
    let datasets = catalog.datasets(None).await?;
    if let Some(name) = &args.job {
        let job = catalog.job_by_name(&args.namespace, name).await.with_context(|| format!("job {name}"))?;
        let view = JobView::read(catalog, job.id).await?;
        if args.format == Format::Json {
            crate::out::print(&serde_json::to_string_pretty(&serde_json::json!({"job": job, "tasks": view.tasks}))?)?;
            return Ok(ExitCode::SUCCESS);
        }
        let names: HashMap<_, _> = datasets.iter().map(|d| (d.id, d.name.clone())).collect();
        let mut outputs = HashMap::new();
        for task in &view.tasks {
            if let Some(output) = task.output {
                let rows = match task.output_snapshot {
                    Some(snapshot) => catalog.snapshot(output.dataset, snapshot).await.ok().map(|s| s.row_count),
                    None => None,
                };
                outputs.insert(task.name.clone(), (names.get(&output.dataset).cloned().unwrap_or_default(), rows));
            }
        }
        crate::out::print(&format!(
            "Job {}/{}: {}\n{}",
            job.namespace,
            job.name,
            job.phase.as_str(),
            tasks_table(&view, &outputs)
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let jobs = catalog.jobs().await?;
    let mut summaries = Vec::new();
    for job in &jobs {
        summaries.push(catalog.job_summary(job.id).await?);
    }
    if args.format == Format::Json {
        crate::out::print(&serde_json::to_string_pretty(
            &serde_json::json!({"jobs": summaries, "datasets": datasets}),
        )?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["job", "phase", "tasks", "succeeded", "running", "failed", "created", "finished"]);
    for summary in &summaries {
        let count = |phase: &str| summary.counts.get(phase).copied().unwrap_or(0);
        table.add_row([
            format!("{}/{}", summary.job.namespace, summary.job.name),
            summary.job.phase.as_str().to_owned(),
            summary.total.to_string(),
            count("Succeeded").to_string(),
            (count("Running") + count("Leased")).to_string(),
            count("Failed").to_string(),
            summary.job.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            summary.job.finished_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
        ]);
    }
    crate::out::print(&format!("Jobs\n{table}\nDatasets\n{}", datasets_table(&datasets)))?;
    Ok(ExitCode::SUCCESS)
}
