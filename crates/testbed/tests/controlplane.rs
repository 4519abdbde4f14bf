//! The control plane starts, serves the API with RBAC, and stops.

use duckmesh_testbed::{ControlPlane, ControlPlaneOptions};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};

#[tokio::test]
async fn control_plane_starts_and_serves_the_api() {
    let bed = ControlPlane::start(ControlPlaneOptions::default()).await.expect("bed starts");
    let client = bed.client().await.expect("client");
    let namespaces: Api<Namespace> = Api::all(client);
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"kube-system".to_owned()), "{names:?}");
    let output = bed.kubectl().args(["version", "-o", "json"]).output().expect("kubectl");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(duckmesh_testbed::KUBERNETES_VERSION), "{text}");
}
