//! `duckmesh operator`: the Kubernetes operator (controllers for Dataset, Job and Task, one
//! worker Pod per attempt, Lease-based leader election). Flags and environment only; the
//! operator itself is `duckmesh_operator::run` (docs/operator.md).

use anyhow::Context;
use duckmesh_catalog::{Catalog, CatalogArgs, ConnectOptions};
use duckmesh_operator::{ElectionTimings, OperatorConfig, Resync, SecretKey, WorkerPodConfig, forwarded_env};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Arguments of `duckmesh operator`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Catalog database URL for the operator itself (workers get theirs from --database-secret).
    #[arg(long, env = "DUCKMESH_DATABASE_URL", hide_env_values = true)]
    database_url: String,

    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "DUCKMESH_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "DUCKMESH_WATCH_NAMESPACE")]
    namespace: Option<String>,

    /// The image of worker pods (the duckmesh image; pods run `duckmesh worker`).
    #[arg(long, env = "DUCKMESH_WORKER_IMAGE")]
    worker_image: String,

    /// imagePullPolicy of worker pods.
    #[arg(long, env = "DUCKMESH_WORKER_IMAGE_PULL_POLICY")]
    worker_image_pull_policy: Option<String>,

    /// The service account worker pods run as (default: the namespace's default).
    #[arg(long, env = "DUCKMESH_WORKER_SERVICE_ACCOUNT")]
    service_account: Option<String>,

    /// The Secret (in each task's namespace) holding the catalog URL for workers.
    #[arg(long, env = "DUCKMESH_DATABASE_SECRET", default_value = "duckmesh-catalog")]
    database_secret: String,

    /// The key of the catalog URL in --database-secret.
    #[arg(long, env = "DUCKMESH_DATABASE_SECRET_KEY", default_value = "url")]
    database_secret_key: String,

    /// A Secret whose keys become environment variables of every worker (object store credentials).
    #[arg(long, env = "DUCKMESH_WORKER_ENV_SECRET")]
    worker_env_secret: Option<String>,

    /// Size limit of each worker's scratch and cache volumes (e.g. 10Gi).
    #[arg(long, env = "DUCKMESH_WORKER_SCRATCH_LIMIT")]
    worker_scratch_limit: Option<String>,

    /// This replica's identity in the leader election (the pod name).
    #[arg(long, env = "HOSTNAME", default_value = "duckmesh-operator")]
    identity: String,

    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(long, env = "DUCKMESH_LEASE_NAME", default_value = "duckmesh-operator")]
    lease_name: String,

    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// Cap on tasks running at once across the installation.
    #[arg(long, env = "DUCKMESH_GLOBAL_TASK_LIMIT")]
    global_limit: Option<usize>,

    /// Seconds between scheduler passes (catalog notifications wake it sooner).
    #[arg(long, env = "DUCKMESH_SCHEDULER_TICK_SECONDS", default_value_t = 1.0)]
    scheduler_tick_seconds: f64,

    #[command(flatten)]
    catalog: CatalogArgs,
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let catalog_config = args.catalog.into_config()?;
    let catalog = Catalog::connect(&ConnectOptions::new(args.database_url.clone()), catalog_config).await?;
    catalog.migrate().await?;
    let tick = Duration::try_from_secs_f64(args.scheduler_tick_seconds)
        .ok()
        .filter(|tick| !tick.is_zero())
        .context("--scheduler-tick-seconds must be a positive number")?;
    let config = OperatorConfig {
        namespace: args.namespace,
        metrics_listen: args.metrics_listen,
        worker: WorkerPodConfig {
            image: args.worker_image,
            image_pull_policy: args.worker_image_pull_policy,
            service_account: args.service_account,
            database_secret: SecretKey { name: args.database_secret, key: args.database_secret_key },
            env_secret: args.worker_env_secret,
            env: forwarded_env(std::env::vars()),
            scratch_size_limit: args.worker_scratch_limit,
        },
        identity: args.identity,
        lease_name: args.lease_name,
        lease_namespace: args.lease_namespace,
        election: ElectionTimings::default(),
        scheduler_tick: tick,
        global_limit: args.global_limit,
        resync: Resync::default(),
    };
    let metrics = crate::metrics::every_component();
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        crate::signals::terminated().await;
        signal.cancel();
    });
    duckmesh_operator::run(config, catalog, metrics, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
