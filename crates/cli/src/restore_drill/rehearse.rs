//! `duckmesh restore-drill --rehearse` (`just restore-drill`): the whole backup and restore on
//! this machine, in well under a minute.
//!
//! A private PostgreSQL archives its WAL into a directory; the catalog is migrated and real
//! data is committed through the real worker into a local store; `pg_basebackup` takes a base
//! backup; more is committed; a target time is noted; more is committed after it; a WAL switch
//! completes the archive; the catalog is destroyed (server stopped, data directory deleted).
//! Then [`super::drill`] — the code path of `duckmesh restore-drill` — restores to the target,
//! and the rehearsal checks the restored catalog holds exactly the commits before the target:
//! every head as it was then, none of the later snapshots, and the later commits' objects
//! reported as lost after the restore point.

use super::{Checks, DrillError, RestorePlan, drill, say};
use duckmesh_catalog::{
    Catalog, CatalogConfig, CommitMode, ConnectOptions, DatasetRecord, DatasetSpec, TaskOutput, TaskSpec,
};
use duckmesh_localpg::{ClusterOptions, LocalCluster};
use duckmesh_storage::{LocalStore, ObjectStore};
use duckmesh_worker::{AttemptIdentity, Outcome, Worker, WorkerConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The namespace and tenant the rehearsal's datasets live in.
const NAMESPACE: &str = "default";
/// How long the archiver may take to ship the last segment.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// A dataset's head, as compared before destruction and after the restore.
type Head = (i64, i64, i64, i64);

/// Runs the rehearsal; true when the restored catalog is consistent and holds exactly the
/// commits before the target time.
pub async fn run(args: &super::Args) -> Result<bool, DrillError> {
    let started = Instant::now();
    let (work, _temporary) = work_dir(args.work_dir.as_deref())?;
    let archive = work.join("wal-archive");
    let base_backup = work.join("base-backup");
    let primary_dir = work.join("primary");
    duckmesh_localpg::make_server_writable(&archive).map_err(failed("preparing the WAL archive"))?;
    say(&format!("rehearsal: working in {}", work.display()))?;

    // The catalog server, archiving every WAL segment it completes.
    let archive_command =
        format!("test ! -f {archive}/%f && cp %p {archive}/%f", archive = super::shell_quote(&archive));
    let options = ClusterOptions {
        settings: vec![
            ("wal_level".into(), "replica".into()),
            ("archive_mode".into(), "on".into()),
            ("archive_command".into(), archive_command),
        ],
        max_connections: 20,
        ..ClusterOptions::persistent(&primary_dir)
    };
    let primary = tokio::task::spawn_blocking(move || LocalCluster::start(&options))
        .await
        .map_err(failed("starting the catalog server"))?
        .map_err(|source| DrillError::Server { source })?;
    let mut connect = ConnectOptions::new(primary.url("postgres"));
    connect.max_connections = 4;
    let catalog = Catalog::connect(&connect, CatalogConfig::default())
        .await
        .map_err(DrillError::catalog("connecting to the catalog"))?;
    catalog.migrate().await.map_err(DrillError::catalog("migrating the catalog"))?;
    say(&format!("rehearsal: catalog server on port {} archiving WAL to {}", primary.port(), archive.display()))?;

    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalStore::new(work.join("objects")).map_err(|source| DrillError::Store { source })?);
    let rig = Rig::new(&catalog, store.clone(), &work);
    let trips = rig.dataset("trips").await?;
    let zones = rig.dataset("zones").await?;

    // In the base backup.
    rig.commit(&trips, "trips-1", "SELECT i AS id, i % 7 AS zone FROM range(1000) t(i)").await?;
    rig.commit(&zones, "zones-1", "SELECT i AS zone, 'zone ' || i AS label FROM range(7) t(i)").await?;
    let port = primary.port();
    let into = base_backup.clone();
    tokio::task::spawn_blocking(move || pg_basebackup(port, &into))
        .await
        .map_err(failed("taking the base backup"))??;
    say(&format!("rehearsal: base backup taken (pg_basebackup -Fp -X none) into {}", base_backup.display()))?;

    // Only in the WAL archive, before the target time.
    rig.commit(&trips, "trips-2", "SELECT 1000 + i AS id, i % 7 AS zone FROM range(1000) t(i)").await?;
    rig.commit(&zones, "zones-2", "SELECT 7 + i AS zone, 'zone ' || (7 + i) AS label FROM range(3) t(i)").await?;
    rig.commit(&trips, "trips-3", "SELECT 2000 + i AS id, i % 7 AS zone FROM range(500) t(i)").await?;
    // Commit timestamps are the server's: the target sits strictly between two commits.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let target = catalog.now().await.map_err(DrillError::catalog("reading the server clock"))?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let expected = heads(&catalog).await?;

    // After the target: these must not come back.
    let mut later = BTreeSet::new();
    later.extend(rig.commit(&trips, "trips-4", "SELECT 3000 + i AS id, i % 7 AS zone FROM range(800) t(i)").await?);
    later.extend(rig.commit(&zones, "zones-3", "SELECT 10::BIGINT AS zone, 'zone 10' AS label").await?);
    let segment = catalog.switch_wal().await.map_err(DrillError::catalog("switching the WAL segment"))?;
    wait_archived(&catalog, &segment).await?;
    say(&format!(
        "rehearsal: 5 commits before the target time {}, 2 after it; WAL archived up to segment {segment}",
        target.to_rfc3339()
    ))?;

    // The disaster.
    catalog.close().await;
    drop(primary);
    std::fs::remove_dir_all(&primary_dir).map_err(failed("deleting the catalog's data directory"))?;
    say(&format!("rehearsal: catalog destroyed (server stopped, {} deleted)", primary_dir.display()))?;

    let plan = RestorePlan {
        base_backup,
        wal_archive: archive,
        target_time: Some(target),
        database: "postgres".into(),
        scratch_dir: None,
        promotion_timeout: Duration::from_secs(60),
        reference_time: None,
    };
    let checks = Checks {
        verify_hashes: true,
        show: 20,
        integrity_api: args
            .integrity_api_url
            .clone()
            .map(|url| (url, args.integrity_namespace.clone(), args.api_key.clone())),
    };
    let (outcome, restored) = drill(&plan, store.as_ref(), &checks).await?;

    // Exactly the commits before the target.
    let mut mismatches = Vec::new();
    let recovered = heads(&restored.catalog).await?;
    if recovered != expected {
        mismatches.push(format!("heads (snapshot, token, files, rows) {recovered:?}, expected {expected:?}"));
    }
    if let Some(newest) = outcome.report.newest_commit()
        && newest > target
    {
        mismatches.push(format!("a snapshot committed at {} is after the target", newest.to_rfc3339()));
    }
    let lost: BTreeSet<String> = outcome
        .report
        .datasets
        .iter()
        .flat_map(|dataset| dataset.lost_after_restore_point.iter().map(|object| object.path.clone()))
        .collect();
    let missing: Vec<&String> = later.difference(&lost).collect();
    if !missing.is_empty() {
        mismatches.push(format!("objects committed after the target not reported as lost: {missing:?}"));
    }
    restored.catalog.close().await;
    for mismatch in &mismatches {
        say(&format!("rehearsal: MISMATCH: {mismatch}"))?;
    }
    let restored_commits: i64 = recovered.values().map(|head| head.0).sum();
    say(&format!(
        "rehearsal: restored {restored_commits} of 7 commits ({}), {} objects of the 2 later commits lost after the \
         restore point, in {:.1} s in all",
        if mismatches.is_empty() { "exactly those before the target" } else { "NOT those before the target" },
        later.len(),
        started.elapsed().as_secs_f64()
    ))?;
    say(&outcome.summary())?;
    Ok(outcome.passed() && mismatches.is_empty())
}

/// The worker and its catalog and store, to commit the rehearsal's data as a pipeline would.
struct Rig<'a> {
    catalog: &'a Catalog,
    worker: Worker,
}

impl<'a> Rig<'a> {
    fn new(catalog: &'a Catalog, store: Arc<dyn ObjectStore>, work: &Path) -> Self {
        let config = WorkerConfig {
            cache_dir: work.join("cache"),
            work_dir: work.join("scratch"),
            runner: Some("restore-drill".into()),
            ..WorkerConfig::default()
        };
        Self { catalog, worker: Worker::new(catalog.clone(), store, config) }
    }

    async fn dataset(&self, name: &str) -> Result<DatasetRecord, DrillError> {
        let spec = DatasetSpec {
            namespace: NAMESPACE.into(),
            name: name.into(),
            uid: format!("restore-drill-{name}"),
            generation: 1,
            tenant: NAMESPACE.into(),
            schema: None,
            spec: serde_json::json!({}),
        };
        self.catalog.upsert_dataset(&spec).await.map_err(DrillError::catalog("declaring a dataset"))
    }

    /// Commits `sql` into `dataset` as task `name`, through a lease and the worker; returns the
    /// keys of the objects it committed (files and manifest).
    async fn commit(&self, dataset: &DatasetRecord, name: &str, sql: &str) -> Result<Vec<String>, DrillError> {
        let task = TaskSpec {
            name: name.into(),
            kind: "sql".into(),
            depends_on: vec![],
            max_attempts: Some(1),
            timeout_seconds: None,
            output: Some(TaskOutput { dataset: dataset.id, mode: CommitMode::Append }),
            spec: serde_json::json!({ "sql": sql }),
        };
        let task = self
            .catalog
            .upsert_standalone_task(NAMESPACE, NAMESPACE, &task)
            .await
            .map_err(DrillError::catalog("declaring a task"))?;
        let lease = self
            .catalog
            .lease_task(task, "restore-drill", Duration::from_secs(60))
            .await
            .map_err(DrillError::catalog("leasing a task"))?
            .ok_or_else(|| DrillError::Rehearsal {
                step: "leasing a task",
                message: format!("{name} is not runnable"),
            })?;
        let identity =
            AttemptIdentity { task: lease.task, attempt: lease.attempt, fence: lease.fence, traceparent: None };
        let summary = match self.worker.run(&identity, CancellationToken::new()).await {
            Outcome::Committed(summary) => summary,
            other => {
                return Err(DrillError::Rehearsal {
                    step: "committing through the worker",
                    message: format!("{other:?}"),
                });
            }
        };
        let snapshot = summary.committed.snapshot;
        let files = self
            .catalog
            .snapshot_files(dataset.id, snapshot)
            .await
            .map_err(DrillError::catalog("reading a snapshot's files"))?;
        say(&format!(
            "rehearsal: committed {NAMESPACE}/{} snapshot {snapshot} (files={}, rows={})",
            dataset.name, summary.files, summary.rows
        ))?;
        let added = files.into_iter().filter(|file| file.added_in == snapshot).map(|file| file.path);
        Ok(added.chain([summary.manifest_path]).collect())
    }
}

/// Every dataset's head: (snapshot, visibility token, files, rows), by name.
async fn heads(catalog: &Catalog) -> Result<BTreeMap<String, Head>, DrillError> {
    let datasets = catalog.datasets(None).await.map_err(DrillError::catalog("listing datasets"))?;
    Ok(datasets
        .into_iter()
        .map(|dataset| {
            let head = dataset.current_snapshot.map_or(0, |id| id.0);
            (dataset.name, (head, dataset.visibility_token, dataset.file_count, dataset.row_count))
        })
        .collect())
}

/// Waits until the archiver has shipped `segment`.
async fn wait_archived(catalog: &Catalog, segment: &str) -> Result<(), DrillError> {
    let started = Instant::now();
    loop {
        let archived = catalog.last_archived_wal().await.map_err(DrillError::catalog("reading the archiver"))?;
        if archived.as_deref().is_some_and(|last| last >= segment) {
            return Ok(());
        }
        if started.elapsed() > ARCHIVE_TIMEOUT {
            return Err(DrillError::Rehearsal {
                step: "archiving the WAL",
                message: format!("segment {segment} not archived after {ARCHIVE_TIMEOUT:?} (last: {archived:?})"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain-format base backup of the server on `port` into `into`, relying on the archive for
/// its WAL (`-X none`; pg_basebackup waits until the WAL it needs is archived).
fn pg_basebackup(port: u16, into: &Path) -> Result<(), DrillError> {
    let bin_dir = duckmesh_localpg::find_server_binaries().map_err(|source| DrillError::Server { source })?;
    let output = Command::new(bin_dir.join("pg_basebackup"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .arg("-D")
        .arg(into)
        .args(["-F", "p", "-X", "none", "--checkpoint=fast", "--no-sync"])
        .output()
        .map_err(|error| DrillError::Tool { tool: "pg_basebackup", message: error.to_string() })?;
    if output.status.success() {
        return Ok(());
    }
    Err(DrillError::Tool { tool: "pg_basebackup", message: String::from_utf8_lossy(&output.stderr).trim().to_owned() })
}

/// The working directory (`dir`, else a temporary one removed on drop), traversable by the
/// unprivileged user PostgreSQL runs as when this process is root.
fn work_dir(dir: Option<&Path>) -> Result<(PathBuf, Option<tempfile::TempDir>), DrillError> {
    let (path, temporary) = match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(failed("creating the working directory"))?;
            (dir.to_path_buf(), None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("duckmesh-restore-drill-")
                .tempdir()
                .map_err(failed("creating the working directory"))?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let path = std::fs::canonicalize(&path).map_err(failed("resolving the working directory"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(failed("opening the working directory to the server's user"))?;
    Ok((path, temporary))
}

fn failed<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> DrillError {
    move |error| DrillError::Rehearsal { step, message: error.to_string() }
}
