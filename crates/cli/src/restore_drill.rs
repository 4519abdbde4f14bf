//! `duckmesh restore-drill`: proves a catalog backup restores to a consistent catalog, and
//! measures what the restore costs (docs/runbooks/restore-from-backup.md).
//!
//! A plain-format base backup plus the WAL archive is restored into a scratch private
//! PostgreSQL (`restore_command` copying from the archive, `recovery_target_time` or the end of
//! the archive, then promotion); the restored catalog is checked by
//! [`duckmesh_maintenance::validate_restored_catalog`] against the object store, and the drill
//! prints the RPO (committed work in the archive that the restore point leaves out: from the
//! newest recovered commit to the newest commit in the archive) and the RTO (restore start to a
//! validated catalog). `--restored-url` validates a catalog restored elsewhere (a managed
//! database's point-in-time restore) instead. `--rehearse` runs the whole thing on this machine
//! ([`rehearse`]).
//!
//! Exit codes: 0 consistent, 1 inconsistent (or the integrity API reports damage), 2 the drill
//! could not run (the error line names a stable code).

mod rehearse;

use chrono::{DateTime, NaiveDateTime, Utc};
use duckmesh_catalog::{Catalog, CatalogConfig, ConnectOptions, RecoveryStatus};
use duckmesh_localpg::{ClusterOptions, LocalCluster};
use duckmesh_maintenance::{ConsistencyReport, IntegrityOptions, validate_restored_catalog};
use duckmesh_storage::{ObjectStore, StoreArgs, StoreCounters};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit code of a drill that found an inconsistency.
const EXIT_INCONSISTENT: u8 = 1;
/// Exit code of a drill that could not run.
const EXIT_ERROR: u8 = 2;
/// Newest archived segments searched for the archive's last commit.
const SEGMENTS_SEARCHED: usize = 64;

/// Arguments of `duckmesh restore-drill`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The catalog's plain-format base backup (`pg_basebackup -Fp -D DIR`), restored into a
    /// scratch copy (the directory itself is not changed).
    #[arg(long, value_name = "DIR", required_unless_present_any = ["rehearse", "restored_url"], requires = "wal_archive")]
    base_backup: Option<PathBuf>,

    /// The WAL archive the catalog server's `archive_command` fills (one file per segment);
    /// it must be readable by the scratch server's user (`nobody` when run as root).
    #[arg(long, value_name = "DIR", requires = "base_backup")]
    wal_archive: Option<PathBuf>,

    /// Validate a catalog already restored elsewhere (a managed database's point-in-time
    /// restore, never the live catalog: the drill records integrity runs in it) instead of
    /// restoring a base backup; the RTO then covers the validation only.
    #[arg(long, value_name = "URL", hide_env_values = true, conflicts_with_all = ["base_backup", "target_time", "scratch_dir"])]
    restored_url: Option<String>,

    /// The newest commit the restore should have recovered, to measure the RPO against (e.g.
    /// the damaged catalog's `max(committed_at)` of `snapshots`); default with --base-backup:
    /// the newest commit in the WAL archive.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    reference_time: Option<DateTime<Utc>>,

    /// Recover up to this time (RFC 3339, e.g. 2026-12-02T17:30:00Z); default: everything in
    /// the archive.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    target_time: Option<DateTime<Utc>>,

    /// The database holding the catalog.
    #[arg(long, default_value = "postgres")]
    database: String,

    /// Restore into this directory and keep it (it must not hold a cluster yet); default: a
    /// temporary directory removed when the drill ends.
    #[arg(long, value_name = "DIR")]
    scratch_dir: Option<PathBuf>,

    /// Seconds to wait for the recovery to finish and the scratch server to promote.
    #[arg(long, default_value_t = 600, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    promotion_timeout: u64,

    /// Also download every file and compare its SHA-256 (reads all the data).
    #[arg(long)]
    verify_hashes: bool,

    /// Violations and lost objects to print per dataset (all are counted).
    #[arg(long, default_value_t = 20)]
    show: usize,

    /// Also GET <URL>/v1/integrity from a query API (the restored installation's) and fail
    /// when it reports a dataset that is not clean.
    #[arg(long, env = "DUCKMESH_RESTORE_DRILL_INTEGRITY_API_URL", value_name = "URL")]
    integrity_api_url: Option<String>,

    /// The namespace to ask the integrity API about; default: the API's default.
    #[arg(long, value_name = "NAMESPACE", requires = "integrity_api_url")]
    integrity_namespace: Option<String>,

    /// API key for the integrity API (sent as a bearer token).
    #[arg(long, env = "DUCKMESH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Rehearse on this machine instead: a private archiving PostgreSQL, real commits through
    /// the worker into a local store, a base backup, commits before and after a target time,
    /// the catalog destroyed, then restored to the target and checked to hold exactly the
    /// commits before it.
    #[arg(long, conflicts_with_all = ["base_backup", "wal_archive", "target_time", "scratch_dir", "restored_url", "reference_time"])]
    rehearse: bool,

    /// The rehearsal's working directory (kept afterwards); default: a temporary directory
    /// removed when the rehearsal ends.
    #[arg(long, value_name = "DIR", requires = "rehearse")]
    work_dir: Option<PathBuf>,

    #[command(flatten)]
    store: StoreArgs,
}

/// Why the drill could not run (as opposed to what it found).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The base backup is not usable.
    #[error("base backup {path}: {message}")]
    BaseBackup {
        /// The directory given.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The WAL archive is not usable.
    #[error("WAL archive {path}: {message}")]
    WalArchive {
        /// The directory given.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The scratch directory already holds a cluster.
    #[error("scratch directory {path} already holds a PostgreSQL data directory: choose an empty one")]
    ScratchInUse {
        /// The directory given.
        path: PathBuf,
    },
    /// The scratch server did not start (or its recovery failed).
    #[error("the scratch PostgreSQL: {source}")]
    Server {
        /// localpg's error, with the end of the server log.
        #[source]
        source: duckmesh_localpg::Error,
    },
    /// The recovery did not finish in time.
    #[error("the scratch server was still recovering after {waited:?} (raise --promotion-timeout)")]
    PromotionTimeout {
        /// How long the drill waited.
        waited: Duration,
    },
    /// The catalog given with --restored-url is still recovering.
    #[error(
        "the server of --restored-url is still in recovery (a standby, or a restore not yet promoted): promote it first"
    )]
    NotPromoted,
    /// A catalog call failed.
    #[error("catalog, while {step}: {source}")]
    Catalog {
        /// What the drill was doing.
        step: &'static str,
        /// The catalog's error.
        #[source]
        source: duckmesh_catalog::Error,
    },
    /// The restored catalog is of another schema version than this build's.
    #[error(
        "the restored catalog is at migration {restored}, this build expects {expected}: run the drill with the \
         duckmesh build that wrote the backup"
    )]
    SchemaMismatch {
        /// The newest migration applied to the restored catalog.
        restored: i64,
        /// The newest migration this build knows.
        expected: i64,
    },
    /// The object store could not be configured or reached.
    #[error("object store: {source}")]
    Store {
        /// The store's error.
        #[source]
        source: duckmesh_storage::Error,
    },
    /// The validator could not finish.
    #[error("validating the restored catalog: {source}")]
    Validation {
        /// The validator's error.
        #[source]
        source: duckmesh_maintenance::Error,
    },
    /// The integrity API did not answer as expected.
    #[error("GET {url}: {message}")]
    IntegrityApi {
        /// The URL asked.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A PostgreSQL client tool (pg_waldump, pg_basebackup) failed.
    #[error("{tool}: {message}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// Its failure.
        message: String,
    },
    /// A step of the rehearsal failed.
    #[error("rehearsal, while {step}: {message}")]
    Rehearsal {
        /// What the rehearsal was doing.
        step: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl DrillError {
    /// A stable code for the error line and logs.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::BaseBackup { .. } => "restore_base_backup_invalid",
            Self::WalArchive { .. } => "restore_wal_archive_invalid",
            Self::ScratchInUse { .. } => "restore_scratch_dir_in_use",
            Self::Server { .. } => "restore_server_failed",
            Self::PromotionTimeout { .. } => "restore_promotion_timeout",
            Self::NotPromoted => "restore_not_promoted",
            Self::Catalog { source, .. } => source.error_code(),
            Self::SchemaMismatch { .. } => "restore_schema_mismatch",
            Self::Store { source } => source.error_code(),
            Self::Validation { source } => source.error_code(),
            Self::IntegrityApi { .. } => "restore_integrity_api_failed",
            Self::Tool { .. } => "restore_tool_failed",
            Self::Rehearsal { .. } => "restore_rehearsal_failed",
        }
    }

    fn catalog(step: &'static str) -> impl FnOnce(duckmesh_catalog::Error) -> Self {
        move |source| Self::Catalog { step, source }
    }
}

/// Runs `duckmesh restore-drill`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let result = if args.rehearse { rehearse::run(&args).await } else { drill_from_backup(&args).await };
    Ok(match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_INCONSISTENT),
        Err(error) => {
            eprintln!("restore-drill: error [{}]: {error}", error.error_code());
            ExitCode::from(EXIT_ERROR)
        }
    })
}

/// The drill on a backup given on the command line; true when the restored catalog is
/// consistent.
async fn drill_from_backup(args: &Args) -> Result<bool, DrillError> {
    let config = args.store.store_config().map_err(|source| DrillError::Store { source })?;
    let store = config.build(Arc::new(StoreCounters::new())).await.map_err(|source| DrillError::Store { source })?;
    let checks = Checks::from_args(args);
    if let Some(url) = &args.restored_url {
        let outcome = drill_restored(url, args.reference_time, store.as_ref(), &checks).await?;
        say(&outcome.summary())?;
        return Ok(outcome.passed());
    }
    let (Some(base_backup), Some(wal_archive)) = (&args.base_backup, &args.wal_archive) else {
        unreachable!("clap requires --base-backup and --wal-archive without --rehearse or --restored-url");
    };
    let plan = RestorePlan {
        base_backup: base_backup.clone(),
        wal_archive: wal_archive.clone(),
        target_time: args.target_time,
        database: args.database.clone(),
        scratch_dir: args.scratch_dir.clone(),
        promotion_timeout: Duration::from_secs(args.promotion_timeout),
        reference_time: args.reference_time,
    };
    let (outcome, restored) = drill(&plan, store.as_ref(), &checks).await?;
    restored.catalog.close().await;
    say(&outcome.summary())?;
    Ok(outcome.passed())
}

/// What to restore and how.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// The plain-format base backup.
    pub base_backup: PathBuf,
    /// The WAL archive.
    pub wal_archive: PathBuf,
    /// The recovery target; `None` recovers everything archived.
    pub target_time: Option<DateTime<Utc>>,
    /// The database holding the catalog.
    pub database: String,
    /// Where to restore; `None` for a temporary directory.
    pub scratch_dir: Option<PathBuf>,
    /// How long the recovery may take.
    pub promotion_timeout: Duration,
    /// The newest commit to measure the RPO against; `None`: the archive's newest.
    pub reference_time: Option<DateTime<Utc>>,
}

/// What to check once restored.
#[derive(Debug, Clone)]
pub struct Checks {
    /// Hash every file too.
    pub verify_hashes: bool,
    /// Lines to print per dataset.
    pub show: usize,
    /// The integrity API to ask, with the namespace and key.
    pub integrity_api: Option<(String, Option<String>, Option<String>)>,
}

impl Checks {
    fn from_args(args: &Args) -> Self {
        Self {
            verify_hashes: args.verify_hashes,
            show: args.show,
            integrity_api: args
                .integrity_api_url
                .clone()
                .map(|url| (url, args.integrity_namespace.clone(), args.api_key.clone())),
        }
    }
}

/// The restored catalog, on its scratch server (stopped when dropped).
pub struct Restored {
    /// The catalog.
    pub catalog: Catalog,
    /// Where the recovery stopped.
    pub status: RecoveryStatus,
    _cluster: LocalCluster,
}

/// What a drill found and measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The validator's report.
    pub report: ConsistencyReport,
    /// Datasets the integrity API reported not clean (`namespace/name`).
    pub api_unclean: Vec<String>,
    /// The newest commit the restore recovered.
    pub recovered_until: Option<DateTime<Utc>>,
    /// The newest commit in the archive.
    pub archive_end: Option<DateTime<Utc>>,
    /// Committed work the restore point leaves out (`archive_end - recovered_until`).
    pub rpo: Option<Duration>,
    /// Restore start to a validated catalog.
    pub rto: Duration,
    /// What the RTO covers.
    pub rto_scope: &'static str,
}

impl Outcome {
    /// Whether the restored catalog is consistent and the integrity API (if asked) clean.
    pub fn passed(&self) -> bool {
        self.report.is_consistent() && self.api_unclean.is_empty()
    }

    /// The RPO as printed.
    pub fn rpo_text(&self) -> String {
        match (self.rpo, self.recovered_until, self.archive_end) {
            (Some(rpo), Some(recovered), Some(end)) => format!(
                "{:.3} s (newest recovered commit {}, newest commit to recover {})",
                rpo.as_secs_f64(),
                recovered.to_rfc3339(),
                end.to_rfc3339()
            ),
            (_, None, _) => "unknown (the restore recovered no transaction)".to_owned(),
            _ => format!(
                "unknown (no --reference-time, and no commit in the archive's newest {SEGMENTS_SEARCHED} segments)"
            ),
        }
    }

    /// The one-line verdict.
    pub fn summary(&self) -> String {
        let report = &self.report;
        let rpo = self.rpo.map_or_else(|| "unknown".to_owned(), |rpo| format!("{:.3} s", rpo.as_secs_f64()));
        let measures = format!("RPO {rpo}, RTO {:.3} s", self.rto.as_secs_f64());
        if self.passed() {
            format!(
                "restore-drill: PASS: {} datasets, {} snapshots consistent with the bucket; {} objects lost after the \
                 restore point; {measures}",
                report.datasets.len(),
                report.snapshot_count(),
                report.lost_count()
            )
        } else {
            let mut problems = Vec::new();
            if !report.is_consistent() {
                let broken: Vec<String> = report
                    .datasets
                    .iter()
                    .filter(|dataset| !dataset.is_consistent())
                    .map(|dataset| format!("{}/{}", dataset.namespace, dataset.name))
                    .collect();
                problems.push(format!("{} inconsistencies in {}", report.violation_count(), broken.join(", ")));
            }
            if !self.api_unclean.is_empty() {
                problems.push(format!("the integrity API reports not clean: {}", self.api_unclean.join(", ")));
            }
            format!("restore-drill: FAIL: {}; {measures}", problems.join("; "))
        }
    }
}

/// Restores `plan`, validates the result against `store`, runs `checks`, prints the report
/// with RPO and RTO, and hands back the restored catalog (for the rehearsal's own checks).
pub async fn drill(
    plan: &RestorePlan,
    store: &dyn ObjectStore,
    checks: &Checks,
) -> Result<(Outcome, Restored), DrillError> {
    let started = Instant::now();
    check_base_backup(&plan.base_backup)?;
    let archive_end = match plan.reference_time {
        Some(time) => Some(time),
        None => {
            let archive = plan.wal_archive.clone();
            tokio::task::spawn_blocking(move || newest_archived_commit(&archive))
                .await
                .map_err(|error| DrillError::Tool { tool: "pg_waldump", message: error.to_string() })??
        }
    };
    let restored = restore(plan).await?;
    let replayed = restored.status.last_replayed_commit;
    let scope = "restore start to a validated catalog";
    let outcome = check(&restored.catalog, store, checks, (started, scope), replayed, archive_end).await?;
    Ok((outcome, restored))
}

/// The drill on a catalog restored elsewhere (`url`): validation only.
async fn drill_restored(
    url: &str,
    reference_time: Option<DateTime<Utc>>,
    store: &dyn ObjectStore,
    checks: &Checks,
) -> Result<Outcome, DrillError> {
    let started = Instant::now();
    let mut connect = ConnectOptions::new(url);
    connect.max_connections = 4;
    connect.acquire_timeout = Duration::from_secs(30);
    let catalog = Catalog::connect(&connect, CatalogConfig::default())
        .await
        .map_err(DrillError::catalog("connecting to the restored catalog"))?;
    check_schema(&catalog).await?;
    let status = catalog.recovery_status().await.map_err(DrillError::catalog("reading the recovery status"))?;
    if status.in_recovery {
        catalog.close().await;
        return Err(DrillError::NotPromoted);
    }
    let scope = "validation only: the restore itself happened elsewhere";
    let outcome = check(&catalog, store, checks, (started, scope), status.last_replayed_commit, reference_time).await;
    catalog.close().await;
    outcome
}

/// Validates `catalog` against `store`, asks the integrity API if configured, measures RPO
/// and RTO (from `clock`'s start, covering what its text says) and prints the report.
async fn check(
    catalog: &Catalog,
    store: &dyn ObjectStore,
    checks: &Checks,
    clock: (Instant, &'static str),
    replayed: Option<DateTime<Utc>>,
    reference: Option<DateTime<Utc>>,
) -> Result<Outcome, DrillError> {
    say("restore-drill: validating snapshot consistency against the object store")?;
    let options =
        IntegrityOptions { verify_hashes: checks.verify_hashes, orphan_grace: Duration::ZERO, concurrency: 8 };
    let report = validate_restored_catalog(catalog, store, &options)
        .await
        .map_err(|source| DrillError::Validation { source })?;
    let api_unclean = match &checks.integrity_api {
        Some((url, namespace, key)) => unclean_datasets(url, namespace.as_deref(), key.as_deref()).await?,
        None => Vec::new(),
    };
    let (started, rto_scope) = clock;
    let rto = started.elapsed();
    let recovered_until = replayed.or_else(|| report.newest_commit());
    let rpo = match (recovered_until, reference) {
        (Some(recovered), Some(end)) => Some((end - recovered).to_std().unwrap_or_default()),
        _ => None,
    };
    let outcome = Outcome { report, api_unclean, recovered_until, archive_end: reference, rpo, rto, rto_scope };
    say(&report_text(&outcome, checks.show))?;
    Ok(outcome)
}

/// Starts a scratch server on the base backup, lets it recover from the archive and promote.
async fn restore(plan: &RestorePlan) -> Result<Restored, DrillError> {
    let backup = &plan.base_backup;
    if let Some(scratch) = &plan.scratch_dir
        && scratch.join("data").exists()
    {
        return Err(DrillError::ScratchInUse { path: scratch.clone() });
    }
    let archive = std::fs::canonicalize(&plan.wal_archive)
        .map_err(|error| DrillError::WalArchive { path: plan.wal_archive.clone(), message: error.to_string() })?;
    let target = plan.target_time.map_or_else(|| "the end of the archive".to_owned(), |time| time.to_rfc3339());
    say(&format!(
        "restore-drill: restoring {} with WAL from {} to {target} into a scratch PostgreSQL",
        backup.display(),
        archive.display()
    ))?;
    let mut settings = vec![
        ("restore_command".to_owned(), format!("cp {}/%f \"%p\"", shell_quote(&archive))),
        ("recovery_target_action".to_owned(), "promote".to_owned()),
        ("archive_mode".to_owned(), "off".to_owned()),
    ];
    if let Some(time) = plan.target_time {
        settings.push(("recovery_target_time".to_owned(), time.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()));
    }
    let options = ClusterOptions {
        state_dir: plan.scratch_dir.clone(),
        durable: false,
        max_connections: 20,
        settings,
        base_backup: Some(backup.clone()),
    };
    let cluster = tokio::task::spawn_blocking(move || LocalCluster::start(&options))
        .await
        .map_err(|error| DrillError::Rehearsal { step: "starting the scratch server", message: error.to_string() })?
        .map_err(|source| DrillError::Server { source })?;

    let mut connect = ConnectOptions::new(cluster.url(&plan.database));
    connect.max_connections = 4;
    connect.acquire_timeout = Duration::from_secs(30);
    let catalog = Catalog::connect(&connect, CatalogConfig::default())
        .await
        .map_err(DrillError::catalog("connecting to the restored catalog"))?;
    let waiting = Instant::now();
    let status = loop {
        let status = catalog.recovery_status().await.map_err(DrillError::catalog("reading the recovery status"))?;
        if !status.in_recovery {
            break status;
        }
        if waiting.elapsed() > plan.promotion_timeout {
            return Err(DrillError::PromotionTimeout { waited: waiting.elapsed() });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let replayed = status.last_replayed_commit.map_or_else(|| "none".to_owned(), |at| at.to_rfc3339());
    say(&format!("restore-drill: recovery finished and the server promoted (last replayed commit: {replayed})"))?;

    check_schema(&catalog).await?;
    Ok(Restored { catalog, status, _cluster: cluster })
}

/// Refuses a restored catalog of another schema version than this build's.
async fn check_schema(catalog: &Catalog) -> Result<(), DrillError> {
    let applied = catalog.applied_migrations().await.map_err(DrillError::catalog("reading the schema version"))?;
    let newest = |migrations: &[(i64, String)]| migrations.iter().map(|(version, _)| *version).max().unwrap_or(0);
    let (restored, expected) = (newest(&applied), newest(&Catalog::known_migrations()));
    if restored != expected {
        return Err(DrillError::SchemaMismatch { restored, expected });
    }
    Ok(())
}

/// Refuses a directory that is not a plain-format base backup.
fn check_base_backup(backup: &Path) -> Result<(), DrillError> {
    if backup.join("PG_VERSION").is_file() && backup.join("backup_label").is_file() {
        return Ok(());
    }
    Err(DrillError::BaseBackup {
        path: backup.to_path_buf(),
        message: "not a plain-format base backup (no PG_VERSION or backup_label): take it with \
                  `pg_basebackup -Fp -D DIR`"
            .into(),
    })
}

/// The report: one row per dataset, its violations and lost objects, RPO and RTO.
fn report_text(outcome: &Outcome, show: usize) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["dataset", "head", "token", "snapshots", "files", "lost", "result"]);
    for dataset in &outcome.report.datasets {
        table.add_row([
            format!("{}/{}", dataset.namespace, dataset.name),
            dataset.head.map_or_else(|| "-".to_owned(), |id| id.to_string()),
            dataset.visibility_token.to_string(),
            dataset.snapshots.to_string(),
            dataset.integrity.counts.files_checked.to_string(),
            dataset.lost_after_restore_point.len().to_string(),
            if dataset.is_consistent() { "consistent" } else { "INCONSISTENT" }.to_owned(),
        ]);
    }
    let mut text = table.to_string();
    for dataset in &outcome.report.datasets {
        let name = format!("{}/{}", dataset.namespace, dataset.name);
        for violation in dataset.violations.iter().take(show) {
            text.push_str(&format!("\n{name}: {}: {}", violation.kind.as_str(), violation.detail));
        }
        if dataset.violations.len() > show {
            text.push_str(&format!("\n{name}: … and {} more violations (--show)", dataset.violations.len() - show));
        }
        for lost in dataset.lost_after_restore_point.iter().take(show) {
            text.push_str(&format!("\n{name}: lost after the restore point: {} ({})", lost.path, lost.detail));
        }
        if dataset.lost_after_restore_point.len() > show {
            let more = dataset.lost_after_restore_point.len() - show;
            text.push_str(&format!("\n{name}: … and {more} more objects lost after the restore point (--show)"));
        }
    }
    if !outcome.api_unclean.is_empty() {
        text.push_str(&format!(
            "\nintegrity API: datasets not clean: {} (see GET /v1/integrity)",
            outcome.api_unclean.join(", ")
        ));
    }
    text.push_str(&format!("\nRPO: {}", outcome.rpo_text()));
    text.push_str(&format!("\nRTO: {:.3} s ({})", outcome.rto.as_secs_f64(), outcome.rto_scope));
    text
}

/// The datasets `GET <url>/v1/integrity` reports not clean, as `namespace/name`.
async fn unclean_datasets(
    url: &str,
    namespace: Option<&str>,
    api_key: Option<&str>,
) -> Result<Vec<String>, DrillError> {
    let endpoint = format!("{}/v1/integrity", url.trim_end_matches('/'));
    let failed = |message: String| DrillError::IntegrityApi { url: endpoint.clone(), message };
    say(&format!("restore-drill: asking {endpoint} for the integrity of every dataset"))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|error| failed(error.to_string()))?;
    let address = reqwest::Url::parse_with_params(&endpoint, namespace.map(|namespace| ("namespace", namespace)))
        .map_err(|error| failed(format!("not a URL: {error}")))?;
    let mut request = client.get(address);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|error| failed(error.to_string()))?;
    let status = response.status();
    let body = response.text().await.map_err(|error| failed(error.to_string()))?;
    if !status.is_success() {
        let excerpt: String = body.chars().take(300).collect();
        return Err(failed(format!("answered {status}: {excerpt}")));
    }
    parse_unclean(&body).map_err(|error| failed(format!("unexpected answer: {error}")))
}

/// The integrity API's answer, only as far as the drill reads it.
#[derive(Debug, serde::Deserialize)]
struct IntegrityAnswer {
    datasets: Vec<IntegrityEntry>,
}

#[derive(Debug, serde::Deserialize)]
struct IntegrityEntry {
    namespace: String,
    name: String,
    clean: bool,
}

fn parse_unclean(body: &str) -> Result<Vec<String>, serde_json::Error> {
    let answer: IntegrityAnswer = serde_json::from_str(body)?;
    Ok(answer
        .datasets
        .into_iter()
        .filter(|entry| !entry.clean)
        .map(|entry| format!("{}/{}", entry.namespace, entry.name))
        .collect())
}

/// The commit time of the newest transaction in the archive: `pg_waldump` over the newest
/// segments until one holds a commit. `None` when none does.
fn newest_archived_commit(archive: &Path) -> Result<Option<DateTime<Utc>>, DrillError> {
    let invalid = |message: String| DrillError::WalArchive { path: archive.to_path_buf(), message };
    let entries = std::fs::read_dir(archive).map_err(|error| invalid(error.to_string()))?;
    let mut segments: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().and_then(|name| name.to_str()).is_some_and(is_segment_name))
        .collect();
    if segments.is_empty() {
        return Err(invalid("holds no WAL segment (is archive_mode on and archive_command copying here?)".into()));
    }
    segments.sort();
    let bin_dir = duckmesh_localpg::find_server_binaries().map_err(|source| DrillError::Server { source })?;
    for segment in segments.iter().rev().take(SEGMENTS_SEARCHED) {
        // pg_waldump stops with an error at the end of the valid WAL; what it printed before
        // is still right, so its exit status is not the verdict.
        let output = Command::new(bin_dir.join("pg_waldump"))
            .arg("--rmgr=Transaction")
            .arg(segment)
            .env("TZ", "UTC")
            .output()
            .map_err(|error| DrillError::Tool { tool: "pg_waldump", message: error.to_string() })?;
        if let Some(at) = last_commit(&String::from_utf8_lossy(&output.stdout)) {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

/// Whether `name` is a WAL segment's (24 hexadecimal digits; not `.history`, `.backup` or
/// `.partial`).
fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// The time of the last `COMMIT` record in `pg_waldump` output (run with `TZ=UTC`).
fn last_commit(waldump: &str) -> Option<DateTime<Utc>> {
    waldump.lines().rev().find_map(|line| {
        let (_, described) = line.split_once("desc: COMMIT ")?;
        let time = described.split(';').next()?.trim().strip_suffix(" UTC")?;
        NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S%.f").ok().map(|naive| naive.and_utc())
    })
}

/// `path` single-quoted for the shell that runs `restore_command`.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| format!("{error}: expected RFC 3339, e.g. 2026-12-02T17:30:00Z"))
}

/// Prints a progress or report line.
fn say(text: &str) -> Result<(), DrillError> {
    crate::out::print(text).map_err(|error| DrillError::Tool { tool: "stdout", message: error.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_commit_of_waldump_output_is_found() {
        let output = "\
rmgr: Transaction len (rec/tot):     34/    34, tx:        735, lsn: 0/0300A1B8, prev 0/0300A180, desc: COMMIT 2026-12-02 17:30:00.123456 UTC
rmgr: Transaction len (rec/tot):     46/    46, tx:        736, lsn: 0/0300A1E0, prev 0/0300A1B8, desc: COMMIT 2026-12-02 17:30:01.5 UTC; inval msgs: catcache 7
rmgr: Transaction len (rec/tot):     34/    34, tx:        737, lsn: 0/0300A210, prev 0/0300A1E0, desc: ABORT 2026-12-02 17:30:02.000001 UTC
";
        let found = last_commit(output).expect("a commit");
        assert_eq!(found.to_rfc3339(), "2026-12-02T17:30:01.500+00:00");
        assert_eq!(last_commit("rmgr: Standby len (rec/tot): 50/50, desc: RUNNING_XACTS"), None);
    }

    #[test]
    fn only_segment_names_count() {
        assert!(is_segment_name("000000010000000000000003"));
        assert!(!is_segment_name("000000010000000000000003.00000028.backup"));
        assert!(!is_segment_name("00000002.history"));
        assert!(!is_segment_name("000000010000000000000003.partial"));
    }

    #[test]
    fn the_integrity_api_answer_names_the_datasets_not_clean() {
        let body = r#"{"datasets": [
            {"namespace": "default", "name": "trips", "runId": 1, "finishedAt": "2026-12-02T17:30:00Z",
             "clean": true, "counts": {"missingFiles": 0}, "problems": []},
            {"namespace": "default", "name": "zones", "runId": 2, "finishedAt": "2026-12-02T17:30:00Z",
             "clean": false, "counts": {"missingFiles": 1}, "problems": [{"kind": "missing_file"}]}
        ]}"#;
        assert_eq!(parse_unclean(body).expect("parses"), ["default/zones"]);
        assert!(parse_unclean(r#"{"items": []}"#).is_err());
    }

    #[test]
    fn paths_are_quoted_for_the_shell_and_times_parsed() {
        assert_eq!(shell_quote(Path::new("/var/wal it's")), r"'/var/wal it'\''s'");
        assert_eq!(parse_time("2026-12-02T17:30:00+01:00").expect("parses").to_rfc3339(), "2026-12-02T16:30:00+00:00");
        assert!(parse_time("yesterday").expect_err("refused").contains("RFC 3339"));
    }
}
