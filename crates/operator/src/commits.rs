//! The leader's commit listener: every snapshot the catalog commits (`NOTIFY` on
//! [`duckmesh_catalog::COMMITS_CHANNEL`]) wakes the reconcile of its Dataset resource, and —
//! for a task's commit — of that Task resource and its Job, so their statuses show the commit
//! at once rather than on their next resync.
//!
//! Notifications are hints (SPEC §2.1): those sent while the connection is down are lost. The
//! listener reconnects with a jittered exponential back-off (500 ms doubling, never above 30 s),
//! and after a reconnect wakes every Dataset once; the periodic resyncs remain the fallback.

use crate::names;
use crate::triggers::Triggers;
use backon::BackoffBuilder;
use duckmesh_catalog::{Catalog, CommitEvent};
use duckmesh_core::DatasetId;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The first pause before reconnecting the listener, before jitter.
const RECONNECT_BASE: Duration = Duration::from_millis(500);
/// The longest pause before reconnecting the listener, jitter included.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Maps commits to the resources they concern and triggers their reconciles.
#[derive(Debug)]
pub struct CommitWatcher {
    catalog: Catalog,
    triggers: Triggers,
    /// Dataset id → (namespace, name); a dataset keeps its id for life (re-creating the
    /// resource under the same name keeps the row).
    datasets: HashMap<DatasetId, (String, String)>,
}

/// What a commit woke.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Woken {
    /// The Dataset resource (namespace, name).
    pub dataset: Option<(String, String)>,
    /// The Task resource that committed (namespace, name), if a task did.
    pub task: Option<(String, String)>,
    /// Its Job (namespace, name), if it has one.
    pub job: Option<(String, String)>,
}

/// Jittered reconnect delays, growing with each failed attempt in a row, for ever.
///
/// backon's jitter adds `U[0,1)·c` to a delay `c` that it caps at its own maximum, so capping
/// `c` at half of [`RECONNECT_MAX`] keeps every pause at or below it (as the storage retries
/// do). The jitter keeps replicas from reconnecting in lockstep.
fn reconnect_delays() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::new()
        .with_min_delay(RECONNECT_BASE)
        .with_max_delay(RECONNECT_MAX / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

impl CommitWatcher {
    /// A watcher over `catalog` sending into `triggers`.
    pub fn new(catalog: Catalog, triggers: Triggers) -> Self {
        Self { catalog, triggers, datasets: HashMap::new() }
    }

    /// Listens until `shutdown`, reconnecting on errors.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut delays = reconnect_delays();
        let mut connected_before = false;
        loop {
            let listened = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                listened = self.catalog.listen_commits() => listened,
            };
            match listened {
                Ok(mut listener) => {
                    delays = reconnect_delays();
                    if connected_before {
                        // Commits made while disconnected were not announced.
                        info!("commit listener reconnected; refreshing every Dataset");
                        self.triggers.all_datasets();
                    } else {
                        debug!("listening for commits");
                    }
                    connected_before = true;
                    loop {
                        let received = tokio::select! {
                            biased;
                            () = shutdown.cancelled() => return,
                            received = listener.recv_or_lost() => received,
                        };
                        match received {
                            Ok(Some(event)) => {
                                self.wake(event).await;
                            }
                            Ok(None) => {
                                // It reconnects on the next receive; what was committed
                                // meanwhile is never announced.
                                warn!(
                                    error_code = "commit_listener_lost",
                                    "lost the commit listener's connection; refreshing every Dataset"
                                );
                                self.triggers.all_datasets();
                            }
                            Err(error) => {
                                warn!(error = %error, error_code = error.error_code(), "lost the commit listener; reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(error) => {
                    warn!(error = %error, error_code = error.error_code(), "cannot listen for commits; retrying");
                }
            }
            let delay = delays.next().unwrap_or(RECONNECT_MAX);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Triggers the reconciles one commit concerns and returns which. Lookups that fail are
    /// logged and skipped: the resyncs cover them.
    pub async fn wake(&mut self, event: CommitEvent) -> Woken {
        let mut woken = Woken::default();
        let dataset = match self.datasets.get(&event.dataset) {
            Some(known) => Some(known.clone()),
            None => match self.catalog.dataset(event.dataset).await {
                Ok(record) => {
                    let key = (record.namespace, record.name);
                    self.datasets.insert(event.dataset, key.clone());
                    Some(key)
                }
                Err(error) => {
                    debug!(dataset = %event.dataset, error = %error, error_code = error.error_code(), "commit of an unknown dataset");
                    None
                }
            },
        };
        if let Some((namespace, name)) = &dataset {
            self.triggers.dataset(namespace, name);
        }
        woken.dataset = dataset;

        let task = match self.catalog.snapshot(event.dataset, event.snapshot).await {
            Ok(snapshot) => snapshot.task,
            Err(error) => {
                debug!(error = %error, error_code = error.error_code(), "cannot read a committed snapshot");
                None
            }
        };
        let Some(task) = task else { return woken }; // ingest and maintenance commits
        let task = match self.catalog.task(task).await {
            Ok(task) => task,
            Err(error) => {
                debug!(error = %error, error_code = error.error_code(), "cannot read a committing task");
                return woken;
            }
        };
        let resource = match task.job {
            Some(job) => match self.catalog.job(job).await {
                Ok(job) => {
                    self.triggers.job(&job.namespace, &job.name);
                    woken.job = Some((job.namespace.clone(), job.name.clone()));
                    names::task_resource_name(&job.name, &task.name)
                }
                Err(error) => {
                    debug!(error = %error, error_code = error.error_code(), "cannot read a committing task's job");
                    return woken;
                }
            },
            None => task.name.clone(),
        };
        self.triggers.task(&task.namespace, &resource);
        woken.task = Some((task.namespace, resource));
        woken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_double_from_half_a_second_and_never_exceed_thirty_seconds() {
        for _ in 0..200 {
            let delays: Vec<Duration> = reconnect_delays().take(12).collect();
            for (n, delay) in delays.iter().enumerate() {
                let scale = (RECONNECT_BASE * 2u32.pow(n as u32)).min(RECONNECT_MAX / 2);
                // backon computes in f32 seconds: allow for rounding.
                assert!(*delay + Duration::from_millis(1) >= scale, "reconnect {n}: {delay:?} < {scale:?}");
                assert!(*delay <= RECONNECT_MAX + Duration::from_millis(1), "reconnect {n}: {delay:?}");
            }
            assert!(delays[0] < Duration::from_secs(1), "{:?}", delays[0]);
        }
    }
}
