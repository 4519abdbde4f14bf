//! STAND-IN, to be replaced by the real `duckmesh-scheduler` when it lands on `main` (take
//! main's `crates/scheduler` whole on merge). It only carries the interface the operator
//! compiles against: `Scheduler::run` here leases nothing; it waits for shutdown.
#![allow(missing_docs, dead_code)]
use crate::executor::{Executor, RunnerEnded};
use duckmesh_catalog::Catalog;
use duckmesh_telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
#[derive(Debug, Clone)]
pub struct SchedulerOptions { pub runner: String, pub tick: Duration, pub global_limit: Option<usize>, pub reap_batch: i64 }
impl SchedulerOptions { pub fn new(runner: impl Into<String>) -> Self { Self { runner: runner.into(), tick: Duration::from_secs(1), global_limit: None, reap_batch: 100 } } }
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport;
pub struct Scheduler<E: Executor> { catalog: Catalog, executor: Arc<E>, options: SchedulerOptions, metrics: Option<Metrics> }
impl<E: Executor> Scheduler<E> {
    pub fn new(catalog: Catalog, executor: Arc<E>, options: SchedulerOptions, metrics: Option<Metrics>) -> Self { Self { catalog, executor, options, metrics } }
    pub async fn run(&self, mut exits: mpsc::Receiver<RunnerEnded>, shutdown: CancellationToken) { let _ = exits.recv().await; shutdown.cancelled().await }
}
