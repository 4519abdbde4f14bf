//! Start-up checks against a mocked API server.

mod common;

use common::{exchange, mock_client};
use http::StatusCode;
use serde_json::json;

fn empty_list() -> serde_json::Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": []})
}

#[tokio::test]
async fn missing_crds_stop_the_operator_with_an_install_hint() {
    let (client, mut server) = mock_client();
    let result = exchange(duckmesh_operator::check_crds(&client, None), async move {
        server.next().await.expect("GET", "/apis/duckmesh.io/v1alpha1/datasets").reply(StatusCode::OK, &empty_list());
        server.next().await.expect("GET", "/apis/duckmesh.io/v1alpha1/jobs").fail(404, "NotFound");
        server.next().await.expect("GET", "/apis/duckmesh.io/v1alpha1/tasks").reply(StatusCode::OK, &empty_list());
    })
    .await;
    let error = result.expect_err("a CRD is missing");
    assert_eq!(error.error_code(), "crds_missing");
    let message = error.to_string();
    assert!(message.contains("jobs.duckmesh.io"), "{message}");
    assert!(!message.contains("datasets.duckmesh.io"), "{message}");
    assert!(message.contains("duckmesh crds | kubectl apply -f -"), "{message}");
}

#[tokio::test]
async fn installed_crds_pass_in_the_watched_namespace() {
    let (client, mut server) = mock_client();
    let result = exchange(duckmesh_operator::check_crds(&client, Some("team")), async move {
        for plural in ["datasets", "jobs", "tasks"] {
            let seen =
                server.next().await.expect("GET", &format!("/apis/duckmesh.io/v1alpha1/namespaces/team/{plural}"));
            assert!(seen.query.contains("limit=1"), "{}", seen.query);
            seen.reply(StatusCode::OK, &empty_list());
        }
    })
    .await;
    assert!(result.is_ok(), "{result:?}");
}

/// Plays a whole API server for `run_with_client`: the CRD checks pass, the election Lease
/// follows the script in `stolen`, list calls get empty lists, watches stay open. Returns how
/// many list/watch calls for DuckMesh kinds and pods it saw (the leader's controllers).
async fn fake_cluster(
    mut server: common::ApiServerVerifier,
    stolen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    watches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    let mut open_watches = Vec::new();
    let mut version = 1;
    let mut ours = false;
    while let Some(seen) = server.try_next().await {
        version += 1;
        let lease = |holder: &str, version: i32| {
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "duckmesh-operator", "namespace": "duckmesh", "resourceVersion": version.to_string()},
                   "spec": {"holderIdentity": holder, "leaseDurationSeconds": 1}})
        };
        if seen.path.contains("/leases") {
            match seen.method.as_str() {
                "GET" if stolen.load(Ordering::SeqCst) => seen.reply(StatusCode::OK, &lease("operator-1", version)),
                "GET" if ours => seen.reply(StatusCode::OK, &lease("operator-0", version)),
                "GET" => seen.fail(404, "NotFound"),
                _ => {
                    ours = true;
                    seen.reply(StatusCode::OK, &lease("operator-0", version));
                }
            }
        } else if seen.query.contains("watch=true") {
            watches.fetch_add(1, Ordering::SeqCst);
            open_watches.push(seen); // never answered: the watch stays open
        } else if seen.method == "GET" {
            if !seen.query.contains("limit=1") {
                watches.fetch_add(1, Ordering::SeqCst);
            }
            seen.reply(
                StatusCode::OK,
                &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
            );
        } else {
            panic!("unexpected request {} {}?{}", seen.method, seen.path, seen.query);
        }
    }
}

async fn readyz(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return String::new() };
    if stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n").await.is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
}

async fn wait_for_role(port: u16, role: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let response = readyz(port).await;
        if response.starts_with("HTTP/1.0 200") && response.ends_with(role)
            || response.starts_with("HTTP/1.1 200") && response.ends_with(role)
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "/readyz never said {role}; last answer: {response:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn only_the_leader_runs_controllers_and_losing_the_lease_stops_them() -> Result<(), duckmesh_testkit::BoxError> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;
    let db = duckmesh_testkit::TestDatabase::new().await?;
    let catalog = db.catalog().await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (client, server) = mock_client();
    let stolen = Arc::new(AtomicBool::new(false));
    let watches = Arc::new(AtomicUsize::new(0));
    let cluster = tokio::spawn(fake_cluster(server, Arc::clone(&stolen), Arc::clone(&watches)));
    let config = duckmesh_operator::OperatorConfig {
        namespace: None,
        metrics_listen: format!("127.0.0.1:{port}").parse()?,
        worker: duckmesh_operator::WorkerPodConfig {
            image: "duckmesh:test".into(),
            image_pull_policy: None,
            service_account: None,
            database_secret: duckmesh_operator::SecretKey { name: "duckmesh-catalog".into(), key: "url".into() },
            env_secret: None,
            env: vec![],
            scratch_size_limit: None,
        },
        identity: "operator-0".into(),
        lease_name: "duckmesh-operator".into(),
        lease_namespace: "duckmesh".into(),
        election: duckmesh_operator::ElectionTimings {
            lease_duration: Duration::from_secs(1),
            renew_deadline: Duration::from_millis(600),
            retry_period: Duration::from_millis(50),
        },
        scheduler_tick: Duration::from_millis(200),
        global_limit: None,
        resync: duckmesh_operator::Resync::default(),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let operator = tokio::spawn(duckmesh_operator::run_with_client(
        client,
        config,
        catalog,
        duckmesh_telemetry::Metrics::new(),
        shutdown.clone(),
    ));

    wait_for_role(port, "leader").await;
    // Leading: the three controllers and the pod watcher list and watch.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while watches.load(Ordering::SeqCst) < 4 {
        assert!(tokio::time::Instant::now() < deadline, "the leader's controllers never started watching");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another replica takes the Lease: this one steps down to standby.
    stolen.store(true, Ordering::SeqCst);
    wait_for_role(port, "standby").await;

    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(30), operator).await?;
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    cluster.abort();
    Ok(())
}
