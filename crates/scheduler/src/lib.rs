//! DuckMesh's scheduling runtime, shared by the operator and `duckmesh dev` (DESIGN.md, "ports
//! and adapters"): declared resources are applied to the catalog ([`apply`]), and one loop
//! ([`Scheduler`]) leases runnable tasks and hands each attempt to an [`Executor`] — worker
//! Pods in a cluster, child processes on one machine. The rules themselves live in
//! `duckmesh-core` (pure) and the catalog (fenced transactions); this crate imports no
//! Kubernetes client.

pub mod apply;
pub mod executor;
pub mod metrics;
pub mod runtime;

pub use apply::{
    ApplyBatch, ApplyError, CrossTenantReference, ObjectRef, ResolvedDataset, TaskScope, apply_dataset, apply_job,
    apply_task,
};
pub use executor::{Executor, ExecutorError, Launch, RunnerEnded, RunnerExit, failure_for, runner_failure};
pub use runtime::{PassReport, Scheduler, SchedulerOptions};
