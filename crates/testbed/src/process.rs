//! Child processes of the bed: started with their output in a log file, stopped with SIGTERM
//! then SIGKILL, and registered with a [`Watchdog`] that stops them when the owning process
//! dies, even by SIGKILL, so no test run leaves an API server or a pod behind.

use crate::{Error, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Stops every registered process when the owner (this process) dies. It is a small shell loop
/// in its own process group that polls the owner, then signals the pids listed as files in its
/// directory: TERM, a grace period, KILL. Processes that end normally are unregistered.
#[derive(Debug)]
pub struct Watchdog {
    dir: PathBuf,
    child: Option<Child>,
}

impl Watchdog {
    /// Starts a watchdog keeping its pid list in `dir`.
    pub fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let script = r#"
            while kill -0 "$0" 2>/dev/null; do sleep 0.5; done
            for f in "$1"/*.pid; do [ -e "$f" ] && kill -TERM "$(basename "$f" .pid)" 2>/dev/null; done
            i=0
            while [ "$i" -lt 50 ]; do
              alive=no
              for f in "$1"/*.pid; do [ -e "$f" ] && kill -0 "$(basename "$f" .pid)" 2>/dev/null && alive=yes; done
              [ "$alive" = no ] && break
              sleep 0.1; i=$((i+1))
            done
            for f in "$1"/*.pid; do [ -e "$f" ] && kill -KILL "$(basename "$f" .pid)" 2>/dev/null; done
            rm -f "$1"/*.pid
            # Read every path first: one of them may hold this very directory.
            cat "$1"/*.remove 2>/dev/null | while IFS= read -r path; do rm -rf "$path"; done
        "#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(std::process::id().to_string())
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(Error::io("starting the bed's watchdog".to_owned()))?;
        Ok(Self { dir: dir.to_owned(), child: Some(child) })
    }

    /// Registers a process to stop if the owner dies.
    pub fn watch(&self, pid: u32) {
        let _ = File::create(self.dir.join(format!("{pid}.pid")));
    }

    /// Unregisters a process (it ended, or was stopped).
    pub fn unwatch(&self, pid: u32) {
        let _ = std::fs::remove_file(self.dir.join(format!("{pid}.pid")));
    }

    /// Removes `path` (a directory tree) once the owner died and its processes were stopped:
    /// for temporary directories held in `static`s, whose destructors never run.
    pub fn remove_on_exit(&self, path: &Path) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut line = path.as_os_str().as_encoded_bytes().to_vec();
        line.push(b'\n');
        let _ = std::fs::write(self.dir.join(format!("{n}.remove")), line);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running control-plane process.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `log`, registered with `watchdog`.
    pub fn spawn(name: &str, mut command: Command, log: &Path, watchdog: &Watchdog) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io(format!("opening {}", log.display())))?;
        let err = out.try_clone().map_err(Error::io(format!("opening {}", log.display())))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(Error::io(format!("starting {name} ({:?})", command.get_program())))?;
        watchdog.watch(child.id());
        Ok(Self { name: name.to_owned(), child, log: log.to_owned() })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails with the end of the log when the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(Error::Exited { name: self.name.clone(), status, log: tail(&self.log, 30) }),
            Ok(None) => Ok(()),
            Err(source) => Err(Error::Io { step: format!("checking {}", self.name), source }),
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; returns the exit status.
    pub fn stop(&mut self, grace: Duration, watchdog: &Watchdog) -> Option<ExitStatus> {
        let status = terminate(&mut self.child, grace);
        watchdog.unwatch(self.child.id());
        status
    }

    /// SIGKILL at once.
    pub fn kill(&mut self, watchdog: &Watchdog) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        watchdog.unwatch(self.child.id());
    }
}

/// SIGTERM, up to `grace` to exit, then SIGKILL.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let pid = i32::try_from(child.id()).ok().map(Pid::from_raw);
    if let Some(pid) = pid {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
