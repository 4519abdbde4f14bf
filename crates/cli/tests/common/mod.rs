//! Helpers shared by the end-to-end tests of the `duckmesh` binary.
#![allow(dead_code)]

use duckmesh_storage::S3Config;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Waits for a child on a blocking thread; its status, stdout and stderr.
pub async fn wait(child: Child) -> (ExitStatus, String, String) {
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("wait");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Sends `signal` (`KILL`, `INT`, `TERM`) to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// SIGKILLs `pid`.
pub fn sigkill(pid: i32) {
    signal(pid as u32, "KILL");
}

/// Polls `probe` every 10 ms until it yields a value; fails the test after `timeout`.
pub async fn until<T>(what: &str, timeout: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Points a `duckmesh` command at the S3 server of `s3` (bucket, prefix, endpoint, keys).
pub fn s3_env(command: &mut Command, s3: &S3Config) {
    let credentials = s3.credentials.clone().expect("static test credentials");
    command
        .env("DUCKMESH_S3_BUCKET", &s3.bucket)
        .env("DUCKMESH_S3_PREFIX", s3.prefix.as_deref().unwrap_or_default())
        .env("DUCKMESH_S3_ENDPOINT", s3.endpoint.as_deref().unwrap_or_default())
        .env("DUCKMESH_S3_REGION", &s3.region)
        .env("AWS_ACCESS_KEY_ID", credentials.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key);
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The pinned helm's path: built once by `scripts/go-tools.sh` into its cache outside the
/// clone, reused afterwards.
pub fn helm_path() -> std::path::PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/go-tools.sh");
    let output = Command::new(script)
        .args(["path", "helm"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("scripts/go-tools.sh runs");
    assert!(output.status.success(), "building helm failed: {output:?}");
    std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}
