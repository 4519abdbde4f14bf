//! Leader election against a mocked API server: acquire, renew, lose, take over an expired
//! lease, and release. Every write must carry the resourceVersion that was read.

mod common;

use common::mock_client;
use duckmesh_operator::{ElectionTimings, LeaderElector};
use http::StatusCode;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::{Value, json};
use std::time::Duration;

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/duckmesh/leases/duckmesh-operator";
const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/duckmesh/leases";

fn lease(holder: Option<&str>, version: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "duckmesh-operator", "namespace": "duckmesh", "resourceVersion": version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": transitions,
                 "renewTime": "2026-11-23T09:00:00.000000Z"}
    })
}

fn elector(client: kube::Client, identity: &str) -> LeaderElector {
    let api: Api<Lease> = Api::namespaced(client, "duckmesh");
    LeaderElector::new(api, "duckmesh-operator", identity, ElectionTimings::default())
}

#[tokio::test]
async fn acquire_renew_and_lose() {
    let (client, mut server) = mock_client();
    let mut candidate = elector(client, "operator-0");
    let verifier = tokio::spawn(async move {
        // Round 1: no Lease yet, so it is created, held by us.
        server.next().await.expect("GET", PATH).fail(404, "NotFound");
        let seen = server.next().await.expect("POST", COLLECTION);
        assert_eq!(seen.body["spec"]["holderIdentity"], "operator-0");
        assert_eq!(seen.body["spec"]["leaseDurationSeconds"], 15);
        seen.reply(StatusCode::CREATED, &lease(Some("operator-0"), "10", 0));
        // Round 2: ours, so it is renewed with the version just read.
        server.next().await.expect("GET", PATH).reply(StatusCode::OK, &lease(Some("operator-0"), "10", 0));
        let seen = server.next().await.expect("PUT", PATH);
        assert_eq!(seen.body["metadata"]["resourceVersion"], "10", "renewals are conditional");
        assert_eq!(seen.body["spec"]["holderIdentity"], "operator-0");
        assert_eq!(seen.body["spec"]["leaseTransitions"], 0);
        seen.reply(StatusCode::OK, &lease(Some("operator-0"), "11", 0));
        // Round 3: another replica took it (we were partitioned): follow, write nothing.
        server.next().await.expect("GET", PATH).reply(StatusCode::OK, &lease(Some("operator-1"), "15", 1));
        // Round 4: ours again on read, but someone wrote in between: 409, not leading.
        server.next().await.expect("GET", PATH).reply(StatusCode::OK, &lease(Some("operator-0"), "16", 2));
        server.next().await.expect("PUT", PATH).fail(409, "Conflict");
    });
    assert!(candidate.try_acquire_or_renew().await.expect("round 1"));
    assert!(candidate.is_leader());
    assert!(candidate.try_acquire_or_renew().await.expect("round 2"));
    assert!(!candidate.try_acquire_or_renew().await.expect("round 3"), "another holder: lost");
    assert!(!candidate.is_leader());
    assert!(!candidate.try_acquire_or_renew().await.expect("round 4"), "a conflict is a lost race, not an error");
    tokio::time::timeout(Duration::from_secs(60), verifier).await.expect("in time").expect("assertions held");
}

#[tokio::test(start_paused = true)]
async fn a_lease_left_unrenewed_is_taken_over_and_released_on_shutdown() {
    let (client, mut server) = mock_client();
    let mut candidate = elector(client, "operator-1");
    let verifier = tokio::spawn(async move {
        // Held by operator-0 at version 20, and never renewed after that.
        for _ in 0..3 {
            server.next().await.expect("GET", PATH).reply(StatusCode::OK, &lease(Some("operator-0"), "20", 3));
        }
        let seen = server.next().await.expect("PUT", PATH);
        assert_eq!(seen.body["metadata"]["resourceVersion"], "20", "the takeover is conditional on what was read");
        assert_eq!(seen.body["spec"]["holderIdentity"], "operator-1");
        assert_eq!(seen.body["spec"]["leaseTransitions"], 4);
        seen.reply(StatusCode::OK, &lease(Some("operator-1"), "21", 4));
        // Release on shutdown: the holder is cleared so a standby need not wait.
        server.next().await.expect("GET", PATH).reply(StatusCode::OK, &lease(Some("operator-1"), "21", 4));
        let seen = server.next().await.expect("PUT", PATH);
        assert_eq!(seen.body["metadata"]["resourceVersion"], "21");
        assert!(seen.body["spec"]["holderIdentity"].is_null(), "{}", seen.body);
        seen.reply(StatusCode::OK, &lease(None, "22", 4));
    });
    assert!(!candidate.try_acquire_or_renew().await.expect("first look"), "a fresh lease is followed");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(!candidate.try_acquire_or_renew().await.expect("10 s"), "unchanged for 10 s of 15: still valid");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(candidate.try_acquire_or_renew().await.expect("20 s"), "unchanged for 20 s: expired, taken over");
    candidate.release().await.expect("released");
    assert!(!candidate.is_leader());
    tokio::time::timeout(Duration::from_secs(60), verifier).await.expect("in time").expect("assertions held");
}
