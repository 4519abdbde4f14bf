//! The leader's commit listener: every snapshot the catalog commits (`NOTIFY` on
//! [`duckmesh_catalog::COMMITS_CHANNEL`]) wakes the reconcile of its Dataset resource, and —
//! for a task's commit — of that Task resource and its Job, so their statuses show the commit
//! at once rather than on their next resync.
//!
//! Notifications are hints (SPEC §2.1): those sent while the connection is down are lost. The
//! listener reconnects with a jittered exponential back-off (500 ms doubling to 30 s), and after a reconnect wakes every
//! Dataset once; the periodic resyncs remain the fallback.

use crate::names;
use crate::triggers::Triggers;
use duckmesh_catalog::{Catalog, CommitEvent};
use duckmesh_core::{BackoffPolicy, DatasetId};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Pauses before reconnecting the listener: 500 ms doubling to 30 s, jittered.
const RECONNECT: BackoffPolicy = BackoffPolicy { base: Duration::from_millis(500), max: Duration::from_secs(30) };

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

/// Jittered reconnect delays, growing with each failed attempt in a row.
fn reconnect_delays() -> impl Iterator<Item = Duration> {
    (0u32..).map(|attempt| RECONNECT.delay(attempt, jitter()))
}

/// A jitter factor in [0.5, 1.5) from the standard library's randomly keyed hasher (good
/// enough to keep replicas from reconnecting in lockstep; no random number crate needed).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    let bits = hasher.finish() >> 11; // 53 bits
    0.5 + (bits as f64) / ((1u64 << 53) as f64)
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
            let delay = delays.next().unwrap_or(RECONNECT.max);
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
