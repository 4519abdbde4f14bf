//! Listing endpoints, health, readiness and metrics.

mod common;

use common::*;
use duckmesh_catalog::CommitMode;
use duckmesh_query::{DatasetList, IntegrityList, SnapshotPage};
use duckmesh_testkit::BoxError;

#[tokio::test]
async fn datasets_snapshots_health_ready_and_metrics() -> Result<(), BoxError> {
    let env = env().await?;
    let ds = dataset(&env.catalog, "default", "trips").await?;
    let mut commits = Vec::new();
    for i in 0..3 {
        commits.push(commit_rows(&env, ds, "default", &format!("SELECT {i} AS id"), CommitMode::Append).await?);
    }
    dataset(&env.catalog, "other", "hidden").await?;
    let server = start(&env, config(&env)).await?;
    let http = reqwest::Client::new();

    let list: DatasetList = http.get(format!("{}/v1/datasets", server.url)).send().await?.json().await?;
    assert_eq!(list.datasets.len(), 1);
    let trips = &list.datasets[0];
    assert_eq!(trips.name, "trips");
    assert_eq!(trips.current_snapshot, Some(commits[2].snapshot.0));
    assert_eq!((trips.visibility_token, trips.file_count, trips.row_count), (commits[2].visibility_token, 3, 3));
    assert!(trips.last_commit_at.is_some() && trips.byte_count > 0);

    let page: SnapshotPage =
        http.get(format!("{}/v1/datasets/trips/snapshots?limit=2", server.url)).send().await?.json().await?;
    let ids: Vec<i64> = page.snapshots.iter().map(|s| s.id).collect();
    assert_eq!(ids, [commits[2].snapshot.0, commits[1].snapshot.0]);
    let before = page.next_before.ok_or("a next page")?;
    let rest: SnapshotPage = http
        .get(format!("{}/v1/datasets/trips/snapshots?limit=2&before={before}", server.url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(rest.snapshots.iter().map(|s| s.id).collect::<Vec<_>>(), [commits[0].snapshot.0]);
    assert_eq!(rest.next_before, None);
    let bad = http.get(format!("{}/v1/datasets/trips/snapshots?limit=0", server.url)).send().await?;
    assert_eq!(status_and_code(bad).await?, (400, "invalid_request".to_owned()));

    for path in ["/v1/health", "/healthz", "/v1/ready", "/readyz"] {
        let response = http.get(format!("{}{path}", server.url)).send().await?;
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    let ready: serde_json::Value = http.get(format!("{}/v1/ready", server.url)).send().await?.json().await?;
    assert_eq!(ready["checks"]["catalog"]["ok"], true);
    assert_eq!(ready["checks"]["object_store"]["ok"], true);
    assert_eq!(ready["checks"]["cache"]["ok"], true);
    let missing = http.get(format!("{}/v2/nothing", server.url)).send().await?;
    assert_eq!(status_and_code(missing).await?, (404, "route_not_found".to_owned()));

    server.client(None).query(&duckmesh_query::QueryRequest::new("SELECT count(*) FROM trips")).await?;
    let metrics = http.get(format!("{}/metrics", server.url)).send().await?.text().await?;
    for expected in [
        "duckmesh_http_requests_total{route=\"datasets\",status_class=\"2xx\"} 1",
        "duckmesh_http_requests_total{route=\"snapshots\",status_class=\"4xx\"} 1",
        "duckmesh_http_requests_total{route=\"query\",status_class=\"2xx\"} 1",
        "duckmesh_query_requests_total{kind=\"interactive\",barrier=\"none\",result=\"ok\"} 1",
        "duckmesh_query_scanned_files_count{kind=\"interactive\"} 1",
    ] {
        assert!(metrics.contains(expected), "missing {expected}");
    }

    // Not ready when the catalog is gone: 503 with the failing check.
    env.catalog.close().await;
    let response = http.get(format!("{}/readyz", server.url)).send().await?;
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["checks"]["catalog"]["ok"], false);
    assert_eq!(body["ready"], false);
    server.stop().await
}

/// `GET /v1/integrity` lists the latest run of each of the caller tenant's datasets.
#[tokio::test]
async fn integrity_lists_the_latest_run_per_dataset_of_the_tenant() -> Result<(), BoxError> {
    use duckmesh_catalog::{IntegrityCounts, IntegrityProblem, NewIntegrityRun, ProblemKind};
    let env = env().await?;
    let trips = dataset(&env.catalog, "default", "trips").await?;
    let hidden = dataset(&env.catalog, "other", "hidden").await?;
    let problem =
        |path: &str| IntegrityProblem { kind: ProblemKind::MissingFile, path: path.into(), detail: "gone".into() };
    let run = |dataset, missing: i64, problems: Vec<IntegrityProblem>| NewIntegrityRun {
        dataset,
        started_at: chrono::Utc::now(),
        verify_hashes: false,
        counts: IntegrityCounts { files_checked: 3, missing_files: missing, ..IntegrityCounts::default() },
        problems,
    };
    env.catalog.record_integrity_run(&run(trips, 0, vec![])).await?;
    let latest = env.catalog.record_integrity_run(&run(trips, 2, vec![problem("trips/a"), problem("trips/b")])).await?;
    env.catalog.record_integrity_run(&run(hidden, 1, vec![problem("hidden/a")])).await?;
    let server = start(&env, config(&env)).await?;
    let http = reqwest::Client::new();

    let list: IntegrityList = http.get(format!("{}/v1/integrity?limit=1", server.url)).send().await?.json().await?;
    assert_eq!(list.namespace, "default");
    assert_eq!(list.datasets.len(), 1, "{list:?}");
    let entry = &list.datasets[0];
    assert_eq!((entry.name.as_str(), entry.run_id, entry.clean), ("trips", latest, false));
    assert_eq!((entry.counts.files_checked, entry.counts.missing_files), (3, 2));
    assert_eq!(entry.problems.len(), 1);
    assert_eq!((entry.problems[0].kind.as_str(), entry.problems[0].path.as_str()), ("missing_file", "trips/a"));

    let other: IntegrityList =
        http.get(format!("{}/v1/integrity?namespace=elsewhere", server.url)).send().await?.json().await?;
    assert!(other.datasets.is_empty());
    for bad in ["?limit=101", "?limit=x", "?namespace=", "?bogus=1"] {
        let response = http.get(format!("{}/v1/integrity{bad}", server.url)).send().await?;
        assert_eq!(status_and_code(response).await?, (400, "invalid_request".to_owned()), "{bad}");
    }
    server.stop().await?;
    Ok(())
}
