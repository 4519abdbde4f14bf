//! The process executor: each attempt runs as a `duckmesh worker` child process — the same
//! worker code a pod runs — with the attempt's identity in its environment and its output in
//! a log file per attempt. Ends are reported to the scheduler, which records what the worker
//! could not (a crash, a kill, a timeout).

use duckmesh_core::AttemptId;
use duckmesh_scheduler::{Executor, ExecutorError, Launch, RunnerEnded, RunnerExit};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::mpsc;

/// Extra time past a task's `timeoutSeconds` before the executor stops a worker that did not
/// stop itself (the worker enforces the timeout; this is the backstop).
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(30);
/// How long a stopped worker gets to record its end before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How worker processes are started.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// The `duckmesh` executable (normally this process's own).
    pub program: PathBuf,
    /// The catalog URL handed to workers.
    pub database_url: String,
    /// Extra environment for every worker (object store, knobs).
    pub env: Vec<(String, String)>,
    /// Per-attempt logs go under this directory: `<job>/<task>-a<attempt>.log`.
    pub log_dir: PathBuf,
    /// Name of this scheduler, prefixed to each worker's runner name.
    pub runner_prefix: String,
    /// Timeout of a task without `timeoutSeconds`.
    pub default_timeout: Duration,
    /// The state directory, handed to each worker as [`crate::orphans::STATE_DIR_ENV`] so that
    /// a restarted dev can find workers this one leaves behind.
    pub state_dir: PathBuf,
    /// The process group workers join (the watchdog's, see [`crate::orphans::spawn_watchdog`]);
    /// each worker gets its own group when `None` or when joining fails.
    pub process_group: Option<u32>,
}

/// A running worker process.
#[derive(Debug, Clone, Copy)]
struct Running {
    pid: Option<u32>,
}

/// Runs attempts as child processes.
#[derive(Debug, Clone)]
pub struct ProcessExecutor {
    config: Arc<ProcessConfig>,
    ends: mpsc::Sender<RunnerEnded>,
    running: Arc<Mutex<HashMap<AttemptId, Running>>>,
}

impl ProcessExecutor {
    /// An executor reporting ends on `ends`.
    pub fn new(config: ProcessConfig, ends: mpsc::Sender<RunnerEnded>) -> Self {
        Self { config: Arc::new(config), ends, running: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// How many workers are running.
    pub fn running(&self) -> usize {
        self.running.lock().map(|running| running.len()).unwrap_or(0)
    }

    /// The log file of an attempt.
    pub fn log_path(&self, job: Option<&str>, task: &str, attempt: u32) -> PathBuf {
        self.config.log_dir.join(job.unwrap_or("_tasks")).join(format!("{task}-a{attempt}.log"))
    }

    /// Asks every worker to stop (SIGTERM: each records its end as retryable), then kills
    /// those still running after [`STOP_GRACE`]. Returns once all have exited.
    pub async fn stop_all(&self) {
        let attempts: Vec<AttemptId> = self.running.lock().map(|r| r.keys().copied().collect()).unwrap_or_default();
        for attempt in attempts {
            let _ = self.stop(attempt).await;
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE + Duration::from_secs(2);
        while self.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, attempt: AttemptId, signal: Signal) {
        let pid = self.running.lock().ok().and_then(|running| running.get(&attempt).and_then(|r| r.pid));
        if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
            // The process may have exited in the meantime; ESRCH is fine.
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

impl Executor for ProcessExecutor {
    async fn launch(&self, launch: Launch) -> Result<(), ExecutorError> {
        let Launch { lease, task, job, traceparent } = launch;
        let log_path = self.log_path(job.as_deref(), &task.name, lease.number);
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ExecutorError::new("log_dir_unwritable", format!("creating {}: {e}", dir.display())))?;
        }
        let log = std::fs::File::create(&log_path)
            .map_err(|e| ExecutorError::new("log_dir_unwritable", format!("creating {}: {e}", log_path.display())))?;
        let stderr = log.try_clone().map_err(|e| ExecutorError::new("log_dir_unwritable", e.to_string()))?;
        let runner = format!("{}/{}-a{}", self.config.runner_prefix, task.name, lease.number);

        let mut command = Command::new(&self.config.program);
        command
            .arg("worker")
            .envs(self.config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("DUCKMESH_TASK_ID", lease.task.0.to_string())
            .env("DUCKMESH_ATTEMPT_ID", lease.attempt.0.to_string())
            .env("DUCKMESH_FENCE", lease.fence.0.to_string())
            .env("DUCKMESH_DATABASE_URL", &self.config.database_url)
            .env("DUCKMESH_RUNNER", &runner)
            .env("DUCKMESH_LOG_FORMAT", "json")
            .env(crate::orphans::STATE_DIR_ENV, &self.config.state_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            // Not the terminal's process group: Ctrl-C in the terminal reaches `duckmesh dev`,
            // which decides whether running workers finish or stop. The watchdog's group, so
            // that the workers are stopped when `duckmesh dev` dies.
            .process_group(self.config.process_group.and_then(|g| i32::try_from(g).ok()).unwrap_or(0));
        match &traceparent {
            Some(traceparent) => command.env("TRACEPARENT", traceparent),
            None => command.env_remove("TRACEPARENT"),
        };
        let spawned = match command.spawn() {
            // The watchdog's group is gone (the watchdog was killed): a group of its own.
            Err(error) if self.config.process_group.is_some() => {
                tracing::warn!(%error, "cannot join the watchdog's process group; the worker gets its own");
                command.process_group(0).spawn()
            }
            other => other,
        };
        let mut child = spawned.map_err(|e| {
            ExecutorError::new("spawn_failed", format!("starting {} worker: {e}", self.config.program.display()))
        })?;
        tracing::info!(task = %task.name, job = job.as_deref().unwrap_or(""), attempt = lease.number, pid = child.id(), log = %log_path.display(), "started worker");

        let attempt = lease.attempt;
        if let Ok(mut running) = self.running.lock() {
            running.insert(attempt, Running { pid: child.id() });
        }
        let timeout =
            task.timeout_seconds.map(|s| Duration::from_secs(u64::from(s))).unwrap_or(self.config.default_timeout);
        let this = self.clone();
        tokio::spawn(async move {
            let timed_out = tokio::select! {
                status = child.wait() => Some(status),
                () = tokio::time::sleep(timeout + TIMEOUT_GRACE) => None,
            };
            let exit = match timed_out {
                None => {
                    this.signal(attempt, Signal::SIGTERM);
                    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                    }
                    RunnerExit::TimedOut { seconds: timeout.as_secs() }
                }
                Some(Ok(status)) => match (status.code(), status.signal()) {
                    (Some(code), _) => RunnerExit::Exited(code),
                    (None, Some(signal)) => RunnerExit::Killed {
                        reason: Signal::try_from(signal)
                            .map(|s| s.as_str().to_owned())
                            .unwrap_or_else(|_| format!("signal {signal}")),
                    },
                    (None, None) => RunnerExit::Lost { reason: "no exit status".into() },
                },
                Some(Err(error)) => RunnerExit::Lost { reason: format!("waiting for the worker: {error}") },
            };
            if let Ok(mut running) = this.running.lock() {
                running.remove(&attempt);
            }
            let _ = this.ends.send(RunnerEnded { task: lease.task, attempt, fence: lease.fence, exit }).await;
        });
        Ok(())
    }

    async fn stop(&self, attempt: AttemptId) -> Result<(), ExecutorError> {
        self.signal(attempt, Signal::SIGTERM);
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            this.signal(attempt, Signal::SIGKILL);
        });
        Ok(())
    }
}
