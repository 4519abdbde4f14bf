//! `duckmesh read-only on|off|status`: the emergency read-only switch in the catalog. While it
//! is on, every API process refuses ingest (503 `read_only`) and every task and ingest commit
//! is refused, while queries keep working. See docs/runbooks/emergency-read-only.md.

use std::process::ExitCode;

/// Arguments of `duckmesh read-only`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,

    #[command(flatten)]
    target: crate::connect::CatalogArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Refuse ingest and commits everywhere, now.
    On {
        /// Why (shown to producers in the 503 message and in `status`).
        #[arg(long)]
        reason: String,
    },
    /// Accept writes again; buffered ingest and retried tasks then commit.
    Off,
    /// Show whether it is on, since when, by whom and why.
    Status,
}

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let handle = args.target.connect().await?;
    let catalog = &handle.catalog;
    let who = std::env::var("USER").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "duckmesh-cli".into());
    let state = match args.command {
        Command::On { reason } => catalog.set_read_only(true, Some(&reason), &who).await?,
        Command::Off => catalog.set_read_only(false, None, &who).await?,
        Command::Status => catalog.read_only().await?,
    };
    let since = state.changed_at.map(|at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    let line = match (state.enabled, since) {
        (true, since) => format!(
            "read-only mode is ON since {} by {}: {}",
            since.unwrap_or_default(),
            state.changed_by.unwrap_or_default(),
            state.reason.unwrap_or_default()
        ),
        (false, Some(since)) => format!("read-only mode is off (since {since})"),
        (false, None) => "read-only mode is off".to_owned(),
    };
    crate::out::print(&line)?;
    catalog.close().await;
    Ok(ExitCode::SUCCESS)
}
