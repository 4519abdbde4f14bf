//! STAND-IN for the in-progress `duckmesh-scheduler` (see runtime.rs): `apply` and `executor`
//! are copies of that crate's files; `runtime` is an interface-only stub.
//!
//! DuckMesh's scheduling runtime, shared by the operator and `duckmesh dev` (DESIGN.md, "ports
//! and adapters"): declared resources are applied to the catalog ([`apply`]), and one loop
//! ([`Scheduler`]) leases runnable tasks and hands each attempt to an [`Executor`] — worker
//! Pods in a cluster, child processes on one machine. The rules themselves live in
//! `duckmesh-core` (pure) and the catalog (fenced transactions); this crate imports no
//! Kubernetes client.

pub mod apply;
pub mod executor;
pub mod runtime;

pub use apply::{ApplyError, ObjectRef, apply_dataset, apply_job, apply_task};
pub use executor::{Executor, ExecutorError, Launch, RunnerEnded, RunnerExit, failure_for};
pub use runtime::{PassReport, Scheduler, SchedulerOptions};
