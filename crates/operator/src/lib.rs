//! DuckMesh's Kubernetes operator (SPEC §1, DESIGN "operator").
//!
//! It watches `Dataset`, `Job` and `Task` resources and the worker Pods it owns, registers the
//! resources in the catalog, creates one owned `Task` per node of a Job, projects catalog state
//! back into bounded statuses with Kubernetes-style conditions, and runs the scheduler loop
//! (`duckmesh-scheduler`) with a [`PodExecutor`]: one worker Pod per leased attempt. Only the
//! replica holding the `coordination.k8s.io` Lease does any of that.
//!
//! Layout: [`decide`] and [`pod`] are pure (observed state in, desired objects and actions
//! out, table-tested); [`controllers`], [`executor`], [`leader`] and [`run`] perform them
//! against the API server and the catalog.

pub mod commits;
pub mod controllers;
pub mod decide;
mod error;
pub mod executor;
pub mod leader;
pub mod names;
pub mod pod;
pub mod run;
pub mod triggers;

pub use commits::{CommitWatcher, Woken};
pub use controllers::{Context, FIELD_MANAGER, Resync, error_policy, reconcile_dataset, reconcile_job, reconcile_task};
pub use error::{Error, Result, is_status};
pub use executor::{PodExecutor, PodWatcher};
pub use leader::{ElectionTimings, LeaderElector, LeaseDecision, decide_lease};
pub use pod::{SecretKey, WorkerPodConfig, forwarded_env, worker_pod};
pub use run::{OperatorConfig, check_crds, run, run_with_client};
pub use triggers::{TriggerReceivers, Triggers, Waiter, Waiting};
