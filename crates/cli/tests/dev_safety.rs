//! `duckmesh dev` refusing bad files as a whole, cleaning up after a killed instance, and
//! reporting SQL errors in the user's terms (issue 20), with the real binary, real worker
//! processes and a real PostgreSQL catalog.

mod common;

use common::{sigkill, until, wait};
use duckmesh_catalog::Catalog;
use duckmesh_testkit::TestDatabase;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

struct Dev {
    db: TestDatabase,
    catalog: Catalog,
    state: tempfile::TempDir,
}

impl Dev {
    async fn new() -> Self {
        let db = TestDatabase::new().await.expect("test database");
        let catalog = db.catalog().await.expect("catalog");
        Self { db, catalog, state: tempfile::tempdir().expect("state dir") }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.state.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn start(&self, file: &Path) -> Child {
        Command::new(env!("CARGO_BIN_EXE_duckmesh"))
            .arg("dev")
            .arg(file)
            .arg("--state-dir")
            .arg(self.state.path().join("state"))
            .arg("--database-url")
            .arg(self.db.url())
            .args(["--listen", "127.0.0.1:0", "--max-parallel", "2"])
            .env("DUCKMESH_TASK_LEASE_SECONDS", "6")
            .env("DUCKMESH_HEARTBEAT_SECONDS", "1")
            .env("DUCKMESH_TASK_RETRY_BASE_SECONDS", "0.2")
            .env("DUCKMESH_TASK_RETRY_MAX_SECONDS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start duckmesh dev")
    }

    async fn run(&self, file: &Path) -> (ExitStatus, String, String) {
        wait(self.start(file)).await
    }

    /// The `duckmesh worker` processes of this state directory: the command line is
    /// `duckmesh worker` and the environment names the state directory.
    fn workers(&self) -> Vec<i32> {
        let state = self.state.path().join("state");
        let Ok(state) = state.canonicalize() else { return Vec::new() };
        duckmesh_dev::orphans::workers_of(&state)
    }
}

/// The pid of the watchdog `duckmesh dev` `dev` started.
fn watchdog_of(dev: u32) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let marked = args.windows(2).any(|pair| {
            pair[0] == duckmesh_dev::orphans::WATCHDOG_MARK.as_bytes() && pair[1] == dev.to_string().as_bytes()
        });
        if marked {
            return Some(pid);
        }
    }
    None
}

const DATASET: &str = "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: out}\nspec: {}\n";

/// Three independent tasks that each run for a very long time.
fn slow_job() -> String {
    let task = |name: &str| {
        format!(
            "    - {{name: {name}, sql: 'SELECT sum(a.range * b.range) AS n FROM range(1000000) a, range(1000000) b', output: {{dataset: out}}}}\n"
        )
    };
    format!(
        "{DATASET}---\napiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {{name: slow}}\nspec:\n  tasks:\n{}{}{}",
        task("one"),
        task("two"),
        task("three")
    )
}

/// A bad document anywhere refuses the whole set: nothing of the good documents is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_one_bad_document_leaves_the_catalog_untouched() {
    let dev = Dev::new().await;
    let job = |task: &str| {
        format!(
            "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {{name: nightly}}\nspec:\n  tasks:\n    - {{name: a, sql: 'SELECT 1 AS x', output: {{dataset: out}}}}\n    - {task}\n"
        )
    };
    let cases = [
        (
            job("{name: b, dependOn: [a], sql: 'SELECT 2 AS x', output: {dataset: out}}"),
            "document 2 (Job/nightly): spec.tasks[1]: unknown field \"dependOn\" (did you mean \"dependsOn\"?)",
            "invalid_yaml",
        ),
        (
            job("{name: b, sql: 'SELECT 2 AS x', output: {dataset: out}, targetFileSizeBytes: 5}"),
            "document 2 (Job/nightly): spec.tasks[1].targetFileSizeBytes: invalid value 5: must be at least 1048576",
            "invalid_yaml",
        ),
        (
            job("{name: b, dependsOn: [b], sql: 'SELECT 2 AS x', output: {dataset: out}}"),
            "document 2 (Job/nightly): spec.tasks: ",
            "invalid_resource",
        ),
        // Valid on its own, but refers to a dataset nobody declared: the Dataset of the same
        // file, stored before it in the same transaction, is rolled back with it.
        (
            job("{name: b, sql: 'SELECT 2 AS x', output: {dataset: missing}}"),
            "document 2 (Job/nightly): task \"b\" refers to dataset \"missing\"",
            "dataset_not_found",
        ),
    ];
    for (document, expected, code) in cases {
        let file = dev.file("pipeline.yaml", &format!("{DATASET}---\n{document}"));
        let (status, stdout, stderr) = dev.run(&file).await;
        assert_eq!(status.code(), Some(2), "{expected}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        let located = format!("{}: {expected}", file.display());
        assert!(stderr.contains(&located), "expected {located:?} in:\n{stderr}");
        assert!(stderr.contains(&format!("[{code}]")), "{code}: {stderr}");
        assert!(!stderr.contains("Job/Job"), "{stderr}");
        let datasets = dev.catalog.datasets(None).await.expect("datasets");
        assert!(datasets.is_empty(), "the good Dataset was stored: {datasets:?}");
        assert!(dev.catalog.job_by_name("default", "nightly").await.is_err(), "no job stored");
    }
    // An empty or comment-only file is an error, not an idle server.
    let empty = dev.file("empty.yaml", "# nothing yet\n");
    let (status, _, stderr) = dev.run(&empty).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}: holds no resources", empty.display())), "{stderr}");
    assert!(stderr.contains("[no_resources]"), "{stderr}");
}

/// Workers of a SIGKILLed `duckmesh dev` whose watchdog died with it are stopped by the next
/// run on the same state directory before it starts its own, so no more than `--max-parallel`
/// workers ever run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_dev_stops_the_orphaned_workers_of_its_state_directory() {
    let dev = Dev::new().await;
    let file = dev.file("slow.yaml", &slow_job());
    let first = dev.start(&file);
    let orphans = until("two running workers", Duration::from_secs(120), async || {
        let workers = dev.workers();
        (workers.len() == 2).then_some(workers)
    })
    .await;
    let watchdog = watchdog_of(first.id()).expect("the watchdog runs");
    sigkill(watchdog);
    sigkill(i32::try_from(first.id()).expect("pid"));
    let (status, _, _) = wait(first).await;
    assert!(!status.success());
    assert_eq!(dev.workers(), orphans, "the workers outlived their dev and its watchdog");

    let second = dev.start(&file);
    until("the orphans gone and new workers running", Duration::from_secs(120), async || {
        let workers = dev.workers();
        assert!(workers.len() <= 2, "more than --max-parallel workers at once: {workers:?} (orphans {orphans:?})");
        let orphans_left = workers.iter().any(|pid| orphans.contains(pid));
        let new = workers.iter().any(|pid| !orphans.contains(pid));
        (!orphans_left && new).then_some(())
    })
    .await;
    for _ in 0..20 {
        let workers = dev.workers();
        assert!(workers.len() <= 2, "more than --max-parallel workers at once: {workers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Ctrl-C twice: the workers are stopped and the run ends.
    common::signal(second.id(), "INT");
    tokio::time::sleep(Duration::from_millis(200)).await;
    common::signal(second.id(), "INT");
    let (status, _, stderr) = wait(second).await;
    assert_eq!(status.code(), Some(130), "{stderr}");
    let reported = orphans.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    assert!(
        stderr.contains(&format!(
            "stopped 2 orphaned worker(s) of a previous duckmesh dev of this state directory (pid {reported})"
        )),
        "{stderr}"
    );
    assert_eq!(dev.workers(), Vec::<i32>::new(), "nothing left running");
}

/// A SIGKILLed `duckmesh dev` takes its workers with it (its watchdog stops them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_of_a_killed_dev_stop_with_it() {
    let dev = Dev::new().await;
    let file = dev.file("slow.yaml", &slow_job());
    let child = dev.start(&file);
    until("two running workers", Duration::from_secs(120), async || (dev.workers().len() == 2).then_some(())).await;
    sigkill(i32::try_from(child.id()).expect("pid"));
    let _ = wait(child).await;
    until("the workers gone", Duration::from_secs(60), async || dev.workers().is_empty().then_some(())).await;
}

/// A binder error quotes the task's own SQL, not the view the worker wraps it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_errors_quote_the_users_sql() {
    let dev = Dev::new().await;
    let file = dev.file(
        "bad-sql.yaml",
        &format!(
            "{DATASET}---\napiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {{name: typo}}\nspec:\n  tasks:\n    - {{name: a, maxAttempts: 1, sql: 'SELECT no_such_column FROM range(3)', output: {{dataset: out}}}}\n"
        ),
    );
    let (status, stdout, stderr) = dev.run(&file).await;
    assert_eq!(status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let job = dev.catalog.job_by_name("default", "typo").await.expect("job");
    let task = dev.catalog.tasks_of_job(job.id).await.expect("tasks").remove(0);
    let attempts = dev.catalog.attempts_of_task(task.id).await.expect("attempts");
    let message = attempts[0].error_message.clone().unwrap_or_default();
    assert!(message.contains("no_such_column"), "{message}");
    assert!(message.contains("SELECT no_such_column FROM range(3)"), "the user's SQL is quoted: {message}");
    assert!(!message.contains("__duckmesh_result") && !message.contains("CREATE TEMP VIEW"), "{message}");
    assert!(!stdout.contains("__duckmesh_result"), "{stdout}");
}
