//! A real Kubernetes control plane for DuckMesh's end-to-end tests, in the envtest tradition:
//! etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from pinned Go
//! modules (`scripts/testbed.sh`), started on loopback with TLS, RBAC and service-account
//! signing ([`ControlPlane`]), plus a test node ([`node::TestNode`]) — a kubelet stand-in that
//! runs the pods bound to it as local processes.
//!
//! Everything a bed starts is stopped when it is dropped, and by a watchdog if the owning
//! process dies. See docs/testing.md, "The Kubernetes test bed".

pub mod assets;
pub mod bed;
pub mod controlplane;
mod error;
pub mod node;
pub mod pki;
pub mod process;

pub use assets::{Assets, ETCD_VERSION, KUBERNETES_VERSION};
pub use bed::{Bed, BedOptions};
pub use controlplane::{ControlPlane, ControlPlaneOptions, client_from, write_kubeconfig};
pub use error::{Error, Result};
pub use node::{TestNode, TestNodeOptions};
