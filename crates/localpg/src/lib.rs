//! Private PostgreSQL clusters started from the machine's own server binaries.
//!
//! DuckMesh needs a real Postgres for its tests and for `duckmesh dev`, without asking the user
//! to install or configure one. [`LocalCluster`] finds `initdb`/`postgres` (on `PATH`, then in
//! the distributions' versioned directories), initialises a data directory, and runs the server
//! bound to `127.0.0.1` on a free port. PostgreSQL refuses to run as root, so when this process
//! is root the server runs as the unprivileged `nobody` user.
//!
//! A small watchdog process stops the server (and removes an ephemeral cluster's files) when
//! the owning process dies, even by `SIGKILL`, so no test run or crashed `duckmesh dev` leaves a
//! server behind.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The uid/gid servers run as when this process is root (`nobody`/`nogroup` on Debian).
const UNPRIVILEGED_ID: u32 = 65534;
/// How long to wait for a starting server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a cluster could not be found, created or started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No PostgreSQL server binaries were found.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found; searched: {searched}. \
         Install them (Debian: `apt-get install postgresql`), set DUCKMESH_PG_BIN_DIR, \
         or point DATABASE_URL / --database-url at an existing server"
    )]
    BinariesNotFound {
        /// Every place that was looked at.
        searched: String,
    },
    /// A file-system step failed.
    #[error("{step}: {source}")]
    Io {
        /// What was being done.
        step: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `initdb` exited unsuccessfully.
    #[error("initdb failed for {data_dir}:\n{log}")]
    InitdbFailed {
        /// The data directory being initialised.
        data_dir: PathBuf,
        /// The end of initdb's output.
        log: String,
    },
    /// The server process exited or never accepted connections.
    #[error("PostgreSQL did not start within {waited:?} (log {log_path}):\n{log}")]
    StartFailed {
        /// How long we waited.
        waited: Duration,
        /// The server log file.
        log_path: PathBuf,
        /// The end of the server log.
        log: String,
    },
    /// The unprivileged server user cannot reach the data directory.
    #[error(
        "{path} is not reachable by the unprivileged user PostgreSQL must run as (this process is \
         root and PostgreSQL refuses to run as root): {reason}. Choose a directory whose parents \
         are world-traversable, run as a non-root user, or use an existing server via DATABASE_URL"
    )]
    NotReachable {
        /// The directory.
        path: PathBuf,
        /// Which ancestor blocks access.
        reason: String,
    },
}

impl Error {
    /// A stable code for logs and error responses.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::BinariesNotFound { .. } => "postgres_binaries_not_found",
            Self::Io { .. } => "postgres_local_io",
            Self::InitdbFailed { .. } => "postgres_initdb_failed",
            Self::StartFailed { .. } => "postgres_start_failed",
            Self::NotReachable { .. } => "postgres_data_dir_unreachable",
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let step = step.into();
    move |source| Error::Io { step, source }
}

/// Finds the directory holding `initdb` and `postgres`.
///
/// Order: `DUCKMESH_PG_BIN_DIR`, then `PATH` (following symlinks to the real directory, which
/// also holds `pg_isready`), then `/usr/lib/postgresql/<newest>/bin` (Debian, Ubuntu),
/// `/usr/pgsql-<newest>/bin` (RHEL), `/usr/local/pgsql/bin` and Homebrew's prefixes.
pub fn find_server_binaries() -> Result<PathBuf> {
    let mut searched = Vec::new();
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();

    if let Some(dir) = std::env::var_os("DUCKMESH_PG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
        searched.push(format!("DUCKMESH_PG_BIN_DIR={}", dir.display()));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if let Ok(initdb) = fs::canonicalize(dir.join("initdb"))
                && let Some(real_dir) = initdb.parent()
                && has_server(real_dir)
            {
                return Ok(real_dir.to_path_buf());
            }
        }
        searched.push("PATH".to_owned());
    }
    let versioned = |root: &str, prefix: &str, suffix: &str| -> Vec<PathBuf> {
        let mut found: Vec<(u32, PathBuf)> = fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let version = name.strip_prefix(prefix)?.split('.').next()?.parse().ok()?;
                Some((version, entry.path().join(suffix)))
            })
            .collect();
        found.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
        found.into_iter().map(|(_, dir)| dir).collect()
    };
    let candidates = versioned("/usr/lib/postgresql", "", "bin")
        .into_iter()
        .chain(versioned("/usr", "pgsql-", "bin"))
        .chain(versioned("/opt/homebrew/opt", "postgresql@", "bin"))
        .chain(["/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/local/opt/postgresql/bin"].map(PathBuf::from));
    for dir in candidates {
        if has_server(&dir) {
            return Ok(dir);
        }
        searched.push(dir.display().to_string());
    }
    Err(Error::BinariesNotFound { searched: searched.join(", ") })
}

/// Where a persistent cluster for `requested` should keep its files.
///
/// Normally `requested` itself. When this process is root, PostgreSQL runs as `nobody`, which
/// cannot reach directories under a private home such as `/root`; then the cluster lives in
/// `/var/tmp/duckmesh-postgres-<hash of requested>` instead, stable across runs so data is kept.
pub fn resolve_state_dir(requested: &Path) -> Result<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(requested.to_path_buf());
    }
    fs::create_dir_all(requested).map_err(io(format!("creating {}", requested.display())))?;
    let canonical = fs::canonicalize(requested).map_err(io(format!("resolving {}", requested.display())))?;
    if check_reachable(&canonical).is_ok() {
        return Ok(canonical);
    }
    let hash = canonical
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    Ok(PathBuf::from(format!("/var/tmp/duckmesh-postgres-{hash:016x}")))
}

/// `commit_delay` of a durable cluster (microseconds): how long a committing backend waits for
/// others to join its WAL flush, when at least [`GROUP_COMMIT_SIBLINGS`] other transactions are
/// open. Measured with `just bench-catalog` (docs/benchmarks.md).
pub const GROUP_COMMIT_DELAY_US: u32 = 200;

/// `commit_siblings` of a durable cluster: the open transactions needed before a commit waits
/// [`GROUP_COMMIT_DELAY_US`]; fewer (a quiet catalog) flush at once, without delay.
pub const GROUP_COMMIT_SIBLINGS: u32 = 4;

/// How to run a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the cluster's files live; `None` for a temporary directory removed on stop.
    pub state_dir: Option<PathBuf>,
    /// Keep PostgreSQL's durability settings (`fsync`, `synchronous_commit`), with group commit
    /// ([`GROUP_COMMIT_DELAY_US`], [`GROUP_COMMIT_SIBLINGS`]). Off makes throwaway test clusters
    /// faster; a crash then may lose recent commits.
    pub durable: bool,
    /// `max_connections` for the server.
    pub max_connections: u32,
    /// Extra server settings, passed as `-c name=value` after DuckMesh's own (so they win):
    /// WAL archiving on a primary, `restore_command` and a recovery target on a restore.
    pub settings: Vec<(String, String)>,
    /// A plain-format base backup (`pg_basebackup -Fp`) to seed the data directory from instead
    /// of `initdb`, starting the server in targeted recovery (`recovery.signal`); the recovery
    /// settings come from [`ClusterOptions::settings`]. Only used when the data directory does
    /// not exist yet.
    pub base_backup: Option<PathBuf>,
}

impl ClusterOptions {
    /// A throwaway cluster in a temporary directory, tuned for tests (not durable).
    pub fn ephemeral() -> Self {
        Self { state_dir: None, durable: false, max_connections: 300, settings: Vec::new(), base_backup: None }
    }

    /// A cluster whose data lives under `state_dir` and survives restarts.
    pub fn persistent(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: Some(state_dir.into()),
            durable: true,
            max_connections: 200,
            settings: Vec::new(),
            base_backup: None,
        }
    }
}

/// A running private PostgreSQL server, stopped on drop.
#[derive(Debug)]
pub struct LocalCluster {
    server: Child,
    watchdog: Option<Child>,
    port: u16,
    base_dir: PathBuf,
    temp_dir: Option<tempfile::TempDir>,
    bin_dir: PathBuf,
    options: ClusterOptions,
    as_root: bool,
}

impl LocalCluster {
    /// Initialises (if needed) and starts a cluster. Blocks until it accepts connections.
    pub fn start(options: &ClusterOptions) -> Result<Self> {
        let bin_dir = find_server_binaries()?;
        let as_root = nix::unistd::geteuid().is_root();
        let temp_dir = match options.state_dir {
            Some(_) => None,
            None => Some(
                tempfile::Builder::new()
                    .prefix("duckmesh-pg-")
                    .tempdir()
                    .map_err(io("creating a temporary directory"))?,
            ),
        };
        let base_dir = match (&temp_dir, &options.state_dir) {
            (Some(temp), _) => temp.path().to_path_buf(),
            (None, Some(dir)) => {
                fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
                fs::canonicalize(dir).map_err(io(format!("resolving {}", dir.display())))?
            }
            (None, None) => unreachable!("a cluster has either a temporary or a state directory"),
        };
        if as_root {
            check_reachable(&base_dir)?;
            give_to_unprivileged(&base_dir)?;
        }

        let data_dir = base_dir.join("data");
        if !data_dir.join("PG_VERSION").is_file() {
            match &options.base_backup {
                Some(backup) => seed_from_base_backup(backup, &data_dir, as_root)?,
                None => initdb(&bin_dir, &data_dir, as_root, options.durable)?,
            }
        }

        let mut last_error = None;
        for _ in 0..3 {
            match Self::launch(&bin_dir, &base_dir, options, as_root, free_port()?) {
                Ok((server, port)) => {
                    let watchdog = spawn_watchdog(server.id(), temp_dir.is_some(), &base_dir);
                    return Ok(Self {
                        server,
                        watchdog,
                        port,
                        base_dir,
                        temp_dir,
                        bin_dir,
                        options: options.clone(),
                        as_root,
                    });
                }
                // Most likely another process took the free port between probe and bind.
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("three attempts were made"))
    }

    fn launch(
        bin_dir: &Path,
        base_dir: &Path,
        options: &ClusterOptions,
        as_root: bool,
        port: u16,
    ) -> Result<(Child, u16)> {
        let log_path = base_dir.join("postgres.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("opening {}", log_path.display())))?;
        let log_start = log.metadata().map(|meta| meta.len()).unwrap_or(0);
        let stderr = log.try_clone().map_err(io("duplicating the log handle"))?;

        let mut command = Command::new(bin_dir.join("postgres"));
        command
            .arg("-D")
            .arg(base_dir.join("data"))
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", &format!("max_connections={}", options.max_connections)])
            .args(["-c", "shared_buffers=128MB"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            // Its own process group: a Ctrl-C in the owner's terminal must not shut it down
            // under the owner's feet (the owner stops it, or the watchdog does).
            .process_group(0);
        if options.durable {
            // Group commit: a committing backend that sees enough others in a transaction
            // waits this long before flushing the WAL, so one flush makes several commits
            // durable (docs/catalog.md, "PostgreSQL settings").
            command.args(["-c", &format!("commit_delay={GROUP_COMMIT_DELAY_US}")]);
            command.args(["-c", &format!("commit_siblings={GROUP_COMMIT_SIBLINGS}")]);
        } else {
            command.args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
        }
        for (name, value) in &options.settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        if as_root {
            command.uid(UNPRIVILEGED_ID).gid(UNPRIVILEGED_ID);
        }
        let mut server = command.spawn().map_err(io("starting postgres"))?;

        let started = Instant::now();
        loop {
            if let Ok(Some(_status)) = server.try_wait() {
                return Err(start_failed(started.elapsed(), &log_path, log_start));
            }
            let ready = Command::new(bin_dir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(io("running pg_isready"))?;
            if ready.success() {
                tracing::debug!(port, dir = %base_dir.display(), "local PostgreSQL ready");
                return Ok((server, port));
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = server.kill();
                let _ = server.wait();
                return Err(start_failed(started.elapsed(), &log_path, log_start));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the `postgres` superuser (trust auth, loopback only).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The directory holding the data directory and the server log.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// The postmaster's process id (its backends are its children, each in a process group
    /// of its own).
    pub fn pid(&self) -> u32 {
        self.server.id()
    }

    /// Stops the server (fast shutdown: running transactions are rolled back, committed data is
    /// kept) and removes a temporary cluster's files.
    pub fn stop(&mut self) {
        self.shut_down();
        if let Some(temp) = self.temp_dir.take() {
            let _ = temp.close();
        }
    }

    /// Restarts the server in place, as `pg_ctl restart -m fast` does: a fast shutdown (every
    /// client disconnected, running transactions rolled back, committed data kept), then the
    /// same data directory served again on the same port, so clients holding the URL reconnect
    /// to it. Blocks until the new server accepts connections.
    pub fn restart_fast(&mut self) -> Result<()> {
        self.shut_down();
        let (server, port) = Self::launch(&self.bin_dir, &self.base_dir, &self.options, self.as_root, self.port)?;
        self.watchdog = spawn_watchdog(server.id(), self.temp_dir.is_some(), &self.base_dir);
        self.server = server;
        self.port = port;
        Ok(())
    }

    /// Fast shutdown of the server (SIGINT, SIGKILL after 30 s) and of its watchdog.
    fn shut_down(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.server.id() as i32);
        if let Ok(None) = self.server.try_wait() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while let Ok(None) = self.server.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.server.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.server.wait();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn initdb(bin_dir: &Path, data_dir: &Path, as_root: bool, durable: bool) -> Result<()> {
    let mut command = Command::new(bin_dir.join("initdb"));
    command
        .arg("-D")
        .arg(data_dir)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
        .stdin(Stdio::null());
    if !durable {
        command.arg("--no-sync");
    }
    if as_root {
        command.uid(UNPRIVILEGED_ID).gid(UNPRIVILEGED_ID);
    }
    let output = command.output().map_err(io("running initdb"))?;
    if output.status.success() {
        return Ok(());
    }
    let mut log = String::from_utf8_lossy(&output.stdout).into_owned();
    log.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(Error::InitdbFailed { data_dir: data_dir.to_path_buf(), log: tail(&log, 40) })
}

/// Copies a plain-format base backup into `data_dir` and asks for recovery on start
/// (`recovery.signal`); the copy belongs to the server's user, as initdb's data would.
fn seed_from_base_backup(backup: &Path, data_dir: &Path, as_root: bool) -> Result<()> {
    if !backup.join("PG_VERSION").is_file() || !backup.join("backup_label").is_file() {
        return Err(Error::Io {
            step: format!("reading the base backup {}", backup.display()),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a plain-format base backup (no PG_VERSION or backup_label): take it with `pg_basebackup -Fp`",
            ),
        });
    }
    copy_tree(backup, data_dir, as_root)?;
    let signal = data_dir.join("recovery.signal");
    File::create(&signal).map_err(io(format!("creating {}", signal.display())))?;
    if as_root {
        chown(&signal, Some(UNPRIVILEGED_ID), Some(UNPRIVILEGED_ID))
            .map_err(io(format!("handing {} to the unprivileged user", signal.display())))?;
    }
    fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
        .map_err(io(format!("restricting {}", data_dir.display())))
}

/// Copies `from` into `to` recursively (files, directories, symbolic links), owned by the
/// server's user when this process is root.
fn copy_tree(from: &Path, to: &Path, as_root: bool) -> Result<()> {
    fs::create_dir_all(to).map_err(io(format!("creating {}", to.display())))?;
    let hand_over = |path: &Path| -> Result<()> {
        if as_root {
            std::os::unix::fs::lchown(path, Some(UNPRIVILEGED_ID), Some(UNPRIVILEGED_ID))
                .map_err(io(format!("handing {} to the unprivileged user", path.display())))?;
        }
        Ok(())
    };
    hand_over(to)?;
    for entry in fs::read_dir(from).map_err(io(format!("reading {}", from.display())))? {
        let entry = entry.map_err(io(format!("reading {}", from.display())))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(io(format!("inspecting {}", source.display())))?;
        if kind.is_dir() {
            copy_tree(&source, &target, as_root)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&source).map_err(io(format!("reading the link {}", source.display())))?;
            std::os::unix::fs::symlink(&link, &target).map_err(io(format!("linking {}", target.display())))?;
            hand_over(&target)?;
        } else {
            fs::copy(&source, &target).map_err(io(format!("copying {}", source.display())))?;
            hand_over(&target)?;
        }
    }
    Ok(())
}

/// Creates `dir` (and its parents) so the server can write into it, for a WAL archive its
/// `archive_command` fills: when this process is root the server runs unprivileged, so the
/// directory is handed to that user (its ancestors must be world-traversable).
pub fn make_server_writable(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    if nix::unistd::geteuid().is_root() {
        let canonical = fs::canonicalize(dir).map_err(io(format!("resolving {}", dir.display())))?;
        check_reachable(&canonical)?;
        give_to_unprivileged(&canonical)?;
    }
    Ok(())
}

/// Every ancestor must be traversable by "others", or `nobody` cannot reach the data.
fn check_reachable(dir: &Path) -> Result<()> {
    for ancestor in dir.ancestors().skip(1) {
        let meta = fs::metadata(ancestor).map_err(io(format!("inspecting {}", ancestor.display())))?;
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(Error::NotReachable {
                path: dir.to_path_buf(),
                reason: format!("{} is not world-traversable", ancestor.display()),
            });
        }
    }
    Ok(())
}

fn give_to_unprivileged(dir: &Path) -> Result<()> {
    chown(dir, Some(UNPRIVILEGED_ID), Some(UNPRIVILEGED_ID))
        .map_err(io(format!("handing {} to the unprivileged user", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(format!("restricting {}", dir.display())))
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(io("finding a free port"))?;
    let port = listener.local_addr().map_err(io("finding a free port"))?.port();
    Ok(port)
}

/// Stops the server when this process dies, whatever the cause. It polls rather than waits
/// because the owner is not its parent's child.
fn spawn_watchdog(server_pid: u32, remove: bool, base_dir: &Path) -> Option<Child> {
    let script = r#"
        while kill -0 "$0" 2>/dev/null; do sleep 0.5; done
        kill -INT "$1" 2>/dev/null
        i=0
        while kill -0 "$1" 2>/dev/null && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i+1)); done
        kill -KILL "$1" 2>/dev/null
        if [ "$2" = remove ]; then rm -rf "$3"; fi
    "#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(std::process::id().to_string())
        .arg(server_pid.to_string())
        .arg(if remove { "remove" } else { "keep" })
        .arg(base_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .inspect_err(|error| tracing::warn!(%error, "could not start the PostgreSQL watchdog"))
        .ok()
}

fn start_failed(waited: Duration, log_path: &Path, from: u64) -> Error {
    let mut log = String::new();
    if let Ok(mut file) = File::open(log_path) {
        let _ = file.seek(SeekFrom::Start(from));
        let _ = file.read_to_string(&mut log);
    }
    Error::StartFailed { waited, log_path: log_path.to_path_buf(), log: tail(&log, 30) }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\nd", 2), "c\nd");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn ephemeral_cluster_starts_accepts_connections_and_is_removed() {
        let mut cluster = LocalCluster::start(&ClusterOptions::ephemeral()).expect("cluster starts");
        let dir = cluster.base_dir().to_path_buf();
        assert!(dir.join("data/PG_VERSION").is_file());
        let bin = find_server_binaries().expect("binaries");
        let status = Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &cluster.port().to_string()])
            .status()
            .expect("pg_isready runs");
        assert!(status.success());
        cluster.stop();
        assert!(!dir.exists(), "ephemeral cluster files removed");
        let status = Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &cluster.port().to_string(), "-t", "1"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_isready runs");
        assert!(!status.success(), "server stopped");
    }

    #[test]
    fn a_fast_restart_keeps_the_port_and_the_committed_data_and_drops_every_client() {
        let mut cluster = LocalCluster::start(&ClusterOptions::ephemeral()).expect("cluster starts");
        let bin = find_server_binaries().expect("binaries");
        let psql = |cluster: &LocalCluster, sql: &str| {
            Command::new(bin.join("psql"))
                .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", &cluster.url("postgres"), "-c", sql])
                .output()
                .expect("psql runs")
        };
        assert!(psql(&cluster, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)").status.success());
        // A client connected across the restart: `sleep 30` keeps psql's session open.
        let mut client = Command::new(bin.join("psql"))
            .args(["-X", "-q", "-d", &cluster.url("postgres"), "-c", "SELECT pg_sleep(30)"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("psql runs");
        let (port, postmaster) = (cluster.port(), cluster.pid());
        std::thread::sleep(Duration::from_millis(300));
        cluster.restart_fast().expect("restarts");
        let client_exit = client.wait().expect("client ends");
        assert!(!client_exit.success(), "the fast shutdown ended the client's session (a smart one waits for it)");
        assert_eq!(cluster.port(), port, "same port");
        assert_ne!(cluster.pid(), postmaster, "a new postmaster");
        let kept = psql(&cluster, "SELECT n FROM kept");
        assert!(kept.status.success(), "{kept:?}");
        assert_eq!(String::from_utf8_lossy(&kept.stdout).trim(), "42", "committed data kept");
        let dir = cluster.base_dir().to_path_buf();
        cluster.stop();
        assert!(!dir.exists(), "the restarted ephemeral cluster's files are still removed on stop");
    }

    #[test]
    fn state_dirs_unreachable_for_the_server_user_are_relocated() {
        let parent = tempfile::Builder::new().prefix("duckmesh-pg-test-").tempdir().expect("tempdir");
        let private = parent.path().join("private");
        fs::create_dir_all(private.join("state")).expect("mkdir");
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).expect("chmod");
        fs::set_permissions(parent.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let resolved = resolve_state_dir(&private.join("state")).expect("resolves");
        if nix::unistd::geteuid().is_root() {
            assert!(resolved.starts_with("/var/tmp"), "{resolved:?}");
            assert_eq!(resolve_state_dir(&private.join("state")).expect("stable"), resolved);
        } else {
            assert_eq!(resolved, private.join("state"));
        }
        let open = parent.path().join("open");
        fs::create_dir_all(&open).expect("mkdir");
        assert_eq!(resolve_state_dir(&open).expect("resolves"), fs::canonicalize(&open).expect("canonical"));
    }

    #[test]
    fn persistent_cluster_keeps_its_data_across_restarts() {
        let parent = tempfile::Builder::new().prefix("duckmesh-pg-test-").tempdir().expect("tempdir");
        fs::set_permissions(parent.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let state = parent.path().join("state");
        drop(LocalCluster::start(&ClusterOptions::persistent(&state)).expect("first start"));
        let version = fs::read_to_string(state.join("data/PG_VERSION")).expect("data kept after stop");
        let cluster = LocalCluster::start(&ClusterOptions::persistent(&state)).expect("restart");
        assert_eq!(
            fs::read_to_string(state.join("data/PG_VERSION")).expect("same data directory"),
            version,
            "the restart reused the existing cluster instead of initialising a new one"
        );
        assert!(cluster.base_dir().join("postgres.log").is_file());
    }
}
