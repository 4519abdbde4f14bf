//! `duckmesh-testbed`: a Kubernetes test bed (control plane and test node) to poke at by hand.

use anyhow::Context;
use clap::{Parser, Subcommand};
use duckmesh_testbed::{Bed, BedOptions, ControlPlaneOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A real Kubernetes control plane on loopback with a test node that runs pods as local processes.
#[derive(Debug, Parser)]
#[command(name = "duckmesh-testbed", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a bed and a test node named `testnode`; print how to reach it; run until Ctrl-C or
    /// SIGTERM, then stop everything.
    ///
    /// Pods scheduled to the node run as local processes: an image reference maps to a local
    /// executable (`--image`), every pod shares the host network on 127.0.0.1. The default image
    /// table maps `duckmesh` to the `duckmesh` binary next to this one, when it exists.
    Up {
        /// Keep the bed's files (certificates, etcd data, logs, kubeconfig, pods) in DIR instead
        /// of a temporary directory removed at exit.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// An image: reference → local executable (`--image sh=/bin/sh`); repeatable; overrides
        /// the default table.
        #[arg(long = "image", value_name = "NAME=PATH", value_parser = parse_image)]
        images: Vec<(String, PathBuf)>,
    },
}

fn parse_image(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text.split_once('=').ok_or_else(|| format!("expected NAME=PATH, got {text:?}"))?;
    if name.is_empty() || path.is_empty() {
        return Err(format!("expected NAME=PATH, got {text:?}"));
    }
    // Absolute but not canonical: `/bin/sh` stays `sh` (its file name names it in `command`).
    let path = std::path::absolute(PathBuf::from(path)).map_err(|e| format!("{path}: {e}"))?;
    if !path.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    Ok((name.to_owned(), path))
}

/// `duckmesh` → the `duckmesh` binary beside this one (same target directory), if built.
fn default_images() -> BTreeMap<String, PathBuf> {
    let mut images = BTreeMap::new();
    if let Some(sibling) = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.join("duckmesh")))
        && sibling.is_file()
    {
        images.insert("duckmesh".to_owned(), sibling);
    }
    images
}

async fn up(dir: Option<PathBuf>, images: Vec<(String, PathBuf)>) -> anyhow::Result<()> {
    let mut table = default_images();
    table.extend(images);
    if let Some(dir) = &dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let dir = match dir {
        Some(dir) => Some(std::fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?),
        None => None,
    };
    let options = BedOptions { images: table.clone(), control_plane: ControlPlaneOptions { dir, assets: None } };
    let bed = Bed::start(options).await.context("starting the test bed")?;
    let control_plane = bed.control_plane();
    println!("test bed up: API server {}, node {}", control_plane.server(), bed.node().name());
    println!("directory:  {}", control_plane.dir().display());
    println!("kubeconfig: {}", control_plane.kubeconfig().display());
    println!("kubectl:    {}", control_plane.assets().path("kubectl").display());
    if table.is_empty() {
        println!("images:     none (pods fail with ErrImageNeverPull; add --image NAME=PATH)");
    }
    for (name, path) in &table {
        println!("image:      {name} -> {}", path.display());
    }
    println!();
    println!("export KUBECONFIG={}", control_plane.kubeconfig().display());
    println!("export PATH={}:$PATH", control_plane.assets().dir().display());
    println!();
    println!("Ctrl-C stops the bed.");
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("listening for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    eprintln!("stopping the test bed");
    bed.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Up { dir, images } => up(dir, images).await,
    }
}
