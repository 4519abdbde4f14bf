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

/// What the fake cluster saw of the election, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LeaseWrite {
    /// The Lease was created or written with us as holder.
    Held,
    /// The Lease was written with no holder (released).
    Released,
}

/// Shared view of what the fake cluster saw.
#[derive(Debug, Default)]
struct Seen {
    /// Steal the Lease: GETs answer with another holder.
    stolen: std::sync::atomic::AtomicBool,
    /// List and watch calls for DuckMesh kinds and pods (the leader's controllers).
    watches: std::sync::atomic::AtomicUsize,
    /// Lease writes, in order.
    writes: std::sync::Mutex<Vec<LeaseWrite>>,
}

impl Seen {
    fn writes(&self) -> Vec<LeaseWrite> {
        self.writes.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

/// Plays a whole API server for `run_with_client`: the CRD checks pass, the election Lease
/// follows `seen.stolen`, list calls get empty lists, watches stay open. Records the list and
/// watch calls and every Lease write in `seen`.
async fn fake_cluster(mut server: common::ApiServerVerifier, seen: std::sync::Arc<Seen>) {
    use std::sync::atomic::Ordering;
    let mut open_watches = Vec::new();
    let mut version = 1;
    let mut holder: Option<String> = None;
    let mut created = false;
    while let Some(request) = server.try_next().await {
        version += 1;
        let lease = |holder: Option<&str>, version: i32| {
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "duckmesh-operator", "namespace": "duckmesh", "resourceVersion": version.to_string()},
                   "spec": {"holderIdentity": holder, "leaseDurationSeconds": 1}})
        };
        if request.path.contains("/leases") {
            match request.method.as_str() {
                "GET" if seen.stolen.load(Ordering::SeqCst) => {
                    request.reply(StatusCode::OK, &lease(Some("operator-1"), version))
                }
                "GET" if created => request.reply(StatusCode::OK, &lease(holder.as_deref(), version)),
                "GET" => request.fail(404, "NotFound"),
                _ => {
                    created = true;
                    holder = request.body["spec"]["holderIdentity"].as_str().map(str::to_owned);
                    let write = if holder.is_some() { LeaseWrite::Held } else { LeaseWrite::Released };
                    if let Ok(mut writes) = seen.writes.lock() {
                        writes.push(write);
                    }
                    request.reply(StatusCode::OK, &lease(holder.as_deref(), version));
                }
            }
        } else if request.query.contains("watch=true") {
            seen.watches.fetch_add(1, Ordering::SeqCst);
            open_watches.push(request); // never answered: the watch stays open
        } else if request.method == "GET" {
            if !request.query.contains("limit=1") {
                seen.watches.fetch_add(1, Ordering::SeqCst);
            }
            request.reply(
                StatusCode::OK,
                &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
            );
        } else {
            panic!("unexpected request {} {}?{}", request.method, request.path, request.query);
        }
    }
}

fn operator_config(port: u16) -> Result<duckmesh_operator::OperatorConfig, duckmesh_testkit::BoxError> {
    use std::time::Duration;
    Ok(duckmesh_operator::OperatorConfig {
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
    })
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
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let db = duckmesh_testkit::TestDatabase::new().await?;
    let catalog = db.catalog().await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (client, server) = mock_client();
    let seen = Arc::new(Seen::default());
    let cluster = tokio::spawn(fake_cluster(server, Arc::clone(&seen)));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let operator = tokio::spawn(duckmesh_operator::run_with_client(
        client,
        operator_config(port)?,
        catalog,
        duckmesh_telemetry::Metrics::new(),
        shutdown.clone(),
    ));

    wait_for_role(port, "leader").await;
    // Leading: the three controllers and the pod watcher list and watch.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.watches.load(Ordering::SeqCst) < 4 {
        assert!(tokio::time::Instant::now() < deadline, "the leader's controllers never started watching");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another replica takes the Lease: this one steps down to standby.
    seen.stolen.store(true, Ordering::SeqCst);
    wait_for_role(port, "standby").await;

    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(30), operator).await?;
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    cluster.abort();
    Ok(())
}

/// SIGTERM to the leader: shutdown cancels the controllers' token too, and the leader loop
/// must never take their end for a crash and lead again on a cancelled token (which hung the
/// process). Whenever shutdown lands — just after the Lease was taken, while the controllers
/// start, or once they watch — `run_with_client` returns, the Lease is released exactly once
/// and is never written again. Repeated, because the old bug was a race that lost 6 times in 9.
#[tokio::test]
async fn shutdown_while_leading_releases_the_lease_and_returns() -> Result<(), duckmesh_testkit::BoxError> {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let db = duckmesh_testkit::TestDatabase::new().await?;
    let catalog = db.catalog().await?;
    for round in 0..24 {
        let (client, server) = mock_client();
        let seen = Arc::new(Seen::default());
        let cluster = tokio::spawn(fake_cluster(server, Arc::clone(&seen)));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let operator = tokio::spawn(duckmesh_operator::run_with_client(
            client,
            operator_config(0)?,
            catalog.clone(),
            duckmesh_telemetry::Metrics::new(),
            shutdown.clone(),
        ));
        // Where shutdown lands: right after the Lease is held, once some controllers list,
        // or once all of them watch and the Lease was renewed.
        let (watching, renewals) = match round % 3 {
            0 => (0, 1),
            1 => (2, 1),
            _ => (4, 3),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen.watches.load(Ordering::SeqCst) < watching || seen.writes().len() < renewals {
            assert!(tokio::time::Instant::now() < deadline, "round {round}: never reached the point to stop at");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), operator)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the operator did not return after shutdown"));
        assert!(matches!(result, Ok(Ok(()))), "round {round}: {result:?}");
        let writes = seen.writes();
        assert_eq!(
            writes.last(),
            Some(&LeaseWrite::Released),
            "round {round}: the Lease was released last: {writes:?}"
        );
        assert_eq!(
            writes.iter().filter(|w| **w == LeaseWrite::Released).count(),
            1,
            "round {round}: released once: {writes:?}"
        );
        cluster.abort();
    }
    Ok(())
}
