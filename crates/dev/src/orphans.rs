//! Workers outliving their `duckmesh dev`. Every worker carries its state directory in its
//! environment ([`STATE_DIR_ENV`]); a watchdog process stops a dead dev's workers, and a
//! restarted dev stops whatever is left (the watchdog killed too, say) before it starts any
//! worker of its own, so no more than `--max-parallel` workers ever share the machine. They
//! would be fenced and could not commit twice, but they would compete for CPU and memory.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The variable naming the (canonical) state directory of the dev instance that started a
/// worker.
pub const STATE_DIR_ENV: &str = "DUCKMESH_DEV_STATE_DIR";

/// The argument that marks the watchdog process (so that tests and `ps` can tell it apart).
pub const WATCHDOG_MARK: &str = "duckmesh-dev-watchdog";

/// The live `duckmesh worker` processes started for `state_dir`, found through /proc: the
/// command line is `<program> worker` and the environment names this state directory, so a
/// pid reused by an unrelated process is never taken for a worker.
pub fn workers_of(state_dir: &Path) -> Vec<i32> {
    let wanted = format!("{STATE_DIR_ENV}={}", state_dir.display());
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()))
        .filter(|pid| u32::try_from(*pid).ok() != Some(own) && is_worker_of(*pid, &wanted))
        .collect();
    pids.sort_unstable();
    pids
}

fn is_worker_of(pid: i32, wanted: &str) -> bool {
    let proc = Path::new("/proc").join(pid.to_string());
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else { return false };
    let mut args = cmdline.split(|b| *b == 0);
    let program = args.next().unwrap_or_default();
    let is_duckmesh = Path::new(&String::from_utf8_lossy(program).into_owned())
        .file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("duckmesh"));
    if !is_duckmesh || args.next() != Some(b"worker".as_slice()) {
        return false;
    }
    let Ok(environ) = std::fs::read(proc.join("environ")) else { return false };
    environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes())
}

/// Stops the workers a previous dev instance of `state_dir` left running: SIGTERM (each
/// records its attempt as a retryable failure), then SIGKILL for those still there after
/// `grace`. Call it only while holding the state directory, so that none of them can be a
/// live instance's. Returns the pids found.
pub async fn stop_orphans(state_dir: &Path, grace: Duration) -> Vec<i32> {
    let orphans = workers_of(state_dir);
    for pid in &orphans {
        // Gone in the meantime: ESRCH is fine.
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let started = Instant::now();
    loop {
        let left: Vec<i32> = workers_of(state_dir).into_iter().filter(|pid| orphans.contains(pid)).collect();
        if left.is_empty() {
            break;
        }
        if started.elapsed() >= grace {
            for pid in left {
                tracing::warn!(pid, "an orphaned worker ignored SIGTERM; killing it");
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !orphans.is_empty() {
        tracing::warn!(pids = ?orphans, "stopped workers left running by a previous duckmesh dev of this state directory");
    }
    orphans
}

/// Starts the watchdog: a small shell process leading its own process group, which the
/// workers join. When this process dies, however it dies, the watchdog sends the group
/// SIGTERM and, `grace` later, SIGKILL. Stop it with [`Child::kill`] at a clean exit.
pub fn spawn_watchdog(grace: Duration) -> Option<Child> {
    let script = r#"
        trap '' TERM INT HUP
        while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
        kill -s TERM -- "-$$" 2>/dev/null
        sleep "$2"
        kill -s KILL -- "-$$" 2>/dev/null
    "#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(WATCHDOG_MARK)
        .arg(std::process::id().to_string())
        .arg(grace.as_secs().max(1).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .inspect_err(|error| tracing::warn!(%error, "could not start the worker watchdog; workers may outlive a killed duckmesh dev"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_processes_are_never_taken_for_workers() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A `sleep worker` with the right variable is not a duckmesh worker.
        let mut impostor = Command::new("sleep").arg("30").env(STATE_DIR_ENV, dir.path()).spawn().expect("sleep");
        assert_eq!(workers_of(dir.path()), Vec::<i32>::new());
        let _ = impostor.kill();
        let _ = impostor.wait();
    }
}
