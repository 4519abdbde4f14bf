//! `duckmesh dead-letters list|replay`: the ingest records a coordinator could not convert
//! (or that crashed coordinators too often), parked with their error so ingest goes on; and
//! re-queuing them once the cause is fixed.

use anyhow::Context;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use duckmesh_catalog::DeadLetterFilter;
use std::process::ExitCode;

/// Arguments of `duckmesh dead-letters`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,

    #[command(flatten)]
    target: crate::connect::CatalogArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List parked records, newest first.
    List {
        /// Only this dataset (`name` or `namespace/name`).
        #[arg(long)]
        dataset: Option<String>,
        /// Also list records already replayed.
        #[arg(long)]
        all: bool,
        /// Most rows.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-queue parked records: they are claimed and converted again, keeping their dedupe key.
    Replay {
        /// Dead-letter ids (from `list`).
        #[arg(required = true)]
        ids: Vec<i64>,
        /// A corrected record (a JSON object) replacing the stored one; only with one id.
        #[arg(long)]
        payload: Option<String>,
    },
}

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let handle = args.target.connect().await?;
    let catalog = &handle.catalog;
    let result = match args.command {
        Command::List { dataset, all, limit, json } => {
            let dataset = match dataset {
                None => None,
                Some(name) => {
                    let (namespace, name) = name.split_once('/').unwrap_or(("default", name.as_str()));
                    Some(catalog.dataset_by_name(namespace, name).await.with_context(|| format!("dataset {name}"))?.id)
                }
            };
            let letters = catalog.dead_letters(&DeadLetterFilter { dataset, include_replayed: all, limit }).await?;
            if json {
                crate::out::print(&serde_json::to_string_pretty(&letters)?)?;
            } else if letters.is_empty() {
                crate::out::print("no dead letters")?;
            } else {
                let mut table = Table::new();
                table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
                table.set_header(["id", "dataset", "key", "error", "message", "parked", "replayed"]);
                for letter in &letters {
                    table.add_row([
                        letter.id.to_string(),
                        format!("{}/{}", letter.namespace, letter.dataset),
                        letter.key.clone().unwrap_or_default(),
                        letter.error_code.clone(),
                        letter.error_message.clone(),
                        letter.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        letter.replayed_at.map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
                    ]);
                }
                crate::out::print(&table.to_string())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { ids, payload } => {
            let payload = match payload {
                None => None,
                Some(_) if ids.len() != 1 => anyhow::bail!("--payload replaces one record: give exactly one id"),
                Some(text) => {
                    let value: serde_json::Value = serde_json::from_str(&text).context("--payload is not JSON")?;
                    anyhow::ensure!(value.is_object(), "--payload must be a JSON object");
                    Some(value)
                }
            };
            let replayed = catalog.replay_dead_letters(&ids, payload.as_ref()).await?;
            let skipped: Vec<String> =
                ids.iter().filter(|id| !replayed.contains(id)).map(ToString::to_string).collect();
            crate::out::print(&format!("{} dead letters re-queued", replayed.len()))?;
            if skipped.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("not replayed (unknown or already replayed): {}", skipped.join(", "));
                Ok(ExitCode::from(1))
            }
        }
    };
    catalog.close().await;
    result
}
