//! `duckmesh restore-drill` as an operator runs it: the real binary rehearsing a whole backup,
//! disaster and point-in-time restore on this machine (private PostgreSQL with WAL archiving,
//! real commits through the worker, pg_basebackup, the catalog destroyed and restored), then the
//! same rehearsal failing when the integrity API reports damage, and the drill refusing a
//! directory that is not a base backup.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Output};

fn drill(args: &[&str], integrity_api: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_duckmesh"));
    command
        .args(["--log", "warn", "restore-drill"])
        .args(args)
        .env_remove("DUCKMESH_RESTORE_DRILL_INTEGRITY_API_URL")
        .env_remove("DUCKMESH_API_KEY");
    if let Some(url) = integrity_api {
        command.env("DUCKMESH_RESTORE_DRILL_INTEGRITY_API_URL", url);
    }
    command.output().expect("duckmesh runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn the_rehearsal_restores_exactly_the_commits_before_the_target_and_passes() {
    let output = drill(&["--rehearse"], None);
    let text = text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("rehearsal: restored 5 of 7 commits (exactly those before the target)"), "{text}");
    assert!(text.contains("default/trips ┆ 3    ┆ 3     ┆ 3"), "trips restored to snapshot 3: {text}");
    assert!(text.contains("default/zones ┆ 2    ┆ 2     ┆ 2"), "zones restored to snapshot 2: {text}");
    let lost = text.lines().filter(|line| line.contains("lost after the restore point: ")).count();
    assert_eq!(lost, 4, "the two later commits' files and manifests: {text}");
    assert!(text.lines().any(|line| line.starts_with("RPO: ") && line.contains("newest commit to recover")), "{text}");
    assert!(text.lines().any(|line| line.starts_with("RTO: ")), "{text}");
    let summary = text.lines().find(|line| line.starts_with("restore-drill: PASS: ")).expect("a PASS line");
    assert!(summary.contains("2 datasets, 5 snapshots consistent") && summary.contains("RTO "), "{summary}");
}

#[test]
fn an_integrity_api_reporting_damage_fails_the_drill_and_names_the_datasets() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("the drill asks");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut request = String::new();
        reader.read_line(&mut request).expect("request line");
        let body = r#"{"datasets": [
            {"namespace": "default", "name": "trips", "runId": 1, "finishedAt": "2026-12-02T17:30:00Z", "clean": true,
             "counts": {}, "problems": []},
            {"namespace": "default", "name": "zones", "runId": 2, "finishedAt": "2026-12-02T17:30:00Z", "clean": false,
             "counts": {"missingFiles": 1}, "problems": [{"kind": "missing_file", "path": "zones/x", "detail": "gone"}]}
        ]}"#;
        let mut stream = stream;
        write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
            .expect("answer");
        request
    });
    let output = drill(&["--rehearse", "--integrity-namespace", "default"], Some(&url));
    let text = text(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let request = server.join().expect("server");
    assert!(request.starts_with("GET /v1/integrity?namespace=default "), "{request}");
    let summary = text.lines().find(|line| line.starts_with("restore-drill: FAIL: ")).expect("a FAIL line");
    assert!(summary.contains("the integrity API reports not clean: default/zones"), "{summary}");
    assert!(!summary.contains("default/trips"), "{summary}");
}

#[test]
fn a_directory_that_is_not_a_base_backup_is_refused_with_its_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_str().expect("utf-8");
    let output = drill(
        &["--base-backup", path, "--wal-archive", path, "--storage-backend", "local", "--local-store-root", path],
        None,
    );
    let text = text(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("restore-drill: error [restore_base_backup_invalid]"), "{text}");
    assert!(text.contains("pg_basebackup -Fp"), "{text}");
}

#[tokio::test]
async fn a_catalog_restored_elsewhere_is_validated_and_the_rpo_measured_to_the_reference_time() {
    let db = duckmesh_testkit::TestDatabase::new().await.expect("test database");
    let store = tempfile::tempdir().expect("tempdir");
    let root = store.path().to_str().expect("utf-8").to_owned();
    let url = db.url().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        drill(
            &[
                "--restored-url",
                &url,
                "--reference-time",
                "2999-01-01T00:00:00Z",
                "--storage-backend",
                "local",
                "--local-store-root",
                &root,
            ],
            None,
        )
    })
    .await
    .expect("join");
    let text = text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("RPO: unknown (the restore recovered no transaction)"), "{text}");
    assert!(text.contains("validation only"), "{text}");
    assert!(text.contains("restore-drill: PASS: 0 datasets"), "{text}");
}
