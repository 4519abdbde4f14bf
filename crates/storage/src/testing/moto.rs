//! A real S3-compatible server for tests: `moto_server` (PyPI `moto[server]`) started as a
//! child process on a free loopback port, or an external server (e.g. MinIO) named by
//! `DUCKMESH_TEST_S3_ENDPOINT`.
//!
//! The child runs under a tiny `sh` watchdog that stops `moto_server` as soon as its
//! stdin closes, so the server never outlives the test process, even when the process is
//! killed or the harness lives in a `static` whose destructor never runs.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::{RetryConfig, S3Config, S3Store};

/// Why the test server could not be provided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// `moto_server` is not installed (or not on `PATH`).
    #[error("moto_server not found on PATH (pip install 'moto[server]') or DUCKMESH_TEST_MOTO_SERVER")]
    MotoNotFound,
    /// The process could not be started.
    #[error("cannot start moto_server: {0}")]
    Spawn(#[source] std::io::Error),
    /// The server did not answer in time, or exited.
    #[error("moto_server did not come up: {0}")]
    Startup(String),
    /// The test bucket could not be created.
    #[error("cannot create test bucket {bucket}: {message}")]
    CreateBucket {
        /// The bucket.
        bucket: String,
        /// What the server said.
        message: String,
    },
}

/// Static credentials moto accepts (it does not check them).
const MOTO_ACCESS_KEY: &str = "duckmesh-test";
const MOTO_SECRET_KEY: &str = "duckmesh-test-secret";
const DEFAULT_BUCKET: &str = "duckmesh-test";

/// An S3-compatible server for tests. Dropping it stops a server it started.
#[derive(Debug)]
pub struct MotoServer {
    endpoint: String,
    bucket: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
    /// The watchdog shell; `None` for an external server.
    process: Mutex<Option<Child>>,
}

static SHARED: OnceCell<MotoServer> = OnceCell::const_new();

impl MotoServer {
    /// Starts `moto_server` (or connects to the external server named by
    /// `DUCKMESH_TEST_S3_ENDPOINT`, with `DUCKMESH_TEST_S3_BUCKET`,
    /// `DUCKMESH_TEST_S3_ACCESS_KEY_ID`, `DUCKMESH_TEST_S3_SECRET_ACCESS_KEY` and
    /// `DUCKMESH_TEST_S3_REGION`) and makes sure the test bucket exists.
    pub async fn start() -> Result<Self, HarnessError> {
        let server = match test_env("DUCKMESH_TEST_S3_ENDPOINT") {
            Some(endpoint) => Self::external(endpoint),
            None => Self::spawn_moto()?,
        };
        server.create_bucket().await?;
        Ok(server)
    }

    /// One server shared by every test of the process, started on first use. It stops when
    /// the test process exits.
    pub async fn shared() -> Result<&'static Self, HarnessError> {
        SHARED.get_or_try_init(Self::start).await
    }

    fn external(endpoint: String) -> Self {
        let get = test_env;
        Self {
            endpoint,
            bucket: get("DUCKMESH_TEST_S3_BUCKET").unwrap_or_else(|| DEFAULT_BUCKET.into()),
            region: get("DUCKMESH_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
            access_key_id: get("DUCKMESH_TEST_S3_ACCESS_KEY_ID")
                .or_else(|| get("AWS_ACCESS_KEY_ID"))
                .unwrap_or_else(|| "minioadmin".into()),
            secret_access_key: get("DUCKMESH_TEST_S3_SECRET_ACCESS_KEY")
                .or_else(|| get("AWS_SECRET_ACCESS_KEY"))
                .unwrap_or_else(|| "minioadmin".into()),
            process: Mutex::new(None),
        }
    }

    fn find_moto() -> Option<PathBuf> {
        if let Some(explicit) = test_env("DUCKMESH_TEST_MOTO_SERVER") {
            return Some(PathBuf::from(explicit));
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|dir| dir.join("moto_server")).find(|candidate| candidate.is_file())
    }

    fn spawn_moto() -> Result<Self, HarnessError> {
        let moto = Self::find_moto().ok_or(HarnessError::MotoNotFound)?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(HarnessError::Spawn)?
            .port();
        let log = std::env::temp_dir().join(format!("duckmesh-moto-{}-{port}.log", std::process::id()));
        // The shell starts moto in the background and blocks on stdin; when our end of the
        // pipe closes (drop, exit, or crash of the test process) it stops moto and removes
        // the log.
        let script = r#"
"$0" -H 127.0.0.1 -p "$1" >"$2" 2>&1 &
server=$!
read -r _ignored || true
kill "$server" 2>/dev/null
wait "$server" 2>/dev/null
rm -f "$2"
exit 0
"#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(&moto)
            .arg(port.to_string())
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(HarnessError::Spawn)?;
        let server = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: DEFAULT_BUCKET.into(),
            region: "us-east-1".into(),
            access_key_id: MOTO_ACCESS_KEY.into(),
            secret_access_key: MOTO_SECRET_KEY.into(),
            process: Mutex::new(Some(child)),
        };
        server.wait_until_ready(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), &log)?;
        Ok(server)
    }

    /// Polls until the server answers an HTTP request, failing early if it exits.
    fn wait_until_ready(&self, address: SocketAddr, log: &std::path::Path) -> Result<(), HarnessError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        loop {
            if let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
                let mut reply = [0u8; 12];
                if stream.write_all(request).is_ok()
                    && std::io::Read::read_exact(&mut stream, &mut reply).is_ok()
                    && reply.starts_with(b"HTTP/1.")
                {
                    return Ok(());
                }
            }
            let exited = self
                .process
                .lock()
                .map_err(|_| HarnessError::Startup("poisoned process lock".into()))?
                .as_mut()
                .map(|child| child.try_wait().ok().flatten().is_some())
                .unwrap_or(false);
            if exited {
                return Err(HarnessError::Startup(format!("process exited: {}", log_text())));
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Startup(format!("timed out; log: {}", log_text())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    async fn create_bucket(&self) -> Result<(), HarnessError> {
        let failed = |message: String| HarnessError::CreateBucket { bucket: self.bucket.clone(), message };
        let store = S3Store::new(self.config()).await.map_err(|e| failed(e.to_string()))?;
        match store.client().create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(error) => {
                use aws_sdk_s3::error::ProvideErrorMetadata;
                match error.code() {
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists") => Ok(()),
                    _ => Err(failed(aws_sdk_s3::error::DisplayErrorContext(&error).to_string())),
                }
            }
        }
    }

    /// The server's endpoint URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The test bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Whether this is an external server rather than a child process.
    pub fn is_external(&self) -> bool {
        self.process.lock().map(|process| process.is_none()).unwrap_or(true)
    }

    /// A configuration for the whole test bucket, with fast retries.
    pub fn config(&self) -> S3Config {
        let mut config = S3Config::new(&self.bucket)
            .with_endpoint(&self.endpoint)
            .with_credentials(&self.access_key_id, &self.secret_access_key);
        config.region = self.region.clone();
        config.retry = RetryConfig {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(200),
            max_attempts: 8,
        };
        config
    }

    /// Like [`MotoServer::config`] but scoped to a fresh random prefix, so that tests
    /// sharing the bucket never see each other's objects.
    pub fn scoped_config(&self) -> S3Config {
        self.config().with_prefix(format!("test-{}", hex::encode(rand::random::<[u8; 8]>())))
    }

    /// The same configuration pointed at another endpoint (such as a
    /// [`FaultProxy`](super::FaultProxy) in front of this server).
    pub fn config_via(&self, endpoint: &str) -> S3Config {
        let mut config = self.scoped_config();
        config.endpoint = Some(endpoint.to_owned());
        config
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let Ok(mut process) = self.process.lock() else {
            return;
        };
        let Some(mut child) = process.take() else {
            return;
        };
        // Closing stdin tells the watchdog to stop moto; give it a moment, then make sure.
        drop(child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A harness variable: trimmed, unset when blank.
fn test_env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|value| value.trim().to_owned()).filter(|value| !value.is_empty())
}
