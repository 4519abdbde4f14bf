//! DuckMesh end to end through a real Kubernetes API server, as users meet it: `kubectl apply`
//! and `kubectl wait` against kube-apiserver, etcd, kube-controller-manager and kube-scheduler
//! built from pinned releases (crates/testbed, `scripts/testbed.sh`), a test node that runs the
//! worker pods as local processes of the `duckmesh` binary under test, `duckmesh operator`
//! started as a process with a least-privilege ServiceAccount token, a real PostgreSQL catalog
//! and a real S3-compatible store (moto).
//!
//! Nothing here is skipped: without the bed's binaries the harness builds them first (once;
//! cached). `just e2e` runs this suite alone; docs/testing.md shows how to bring the bed up by
//! hand and watch a test.

#[path = "../common/mod.rs"]
mod common;
mod harness;

mod crds;
mod failures;
mod leader;
mod lifecycle;
mod pipeline;
mod restart;
