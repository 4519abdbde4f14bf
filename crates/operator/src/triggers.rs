//! Wake-ups between the controllers, so that a change the catalog makes (a commit, a task that
//! finished, a dataset that was registered) reaches the resources it concerns at once instead
//! of on their next periodic resync. Triggers are hints only (SPEC §2.1): each one makes the
//! controller reconcile the object, which re-reads the catalog; a trigger that is lost (no
//! controller listening, or the object gone) costs nothing but latency, and the resyncs stay as
//! the fallback.

use duckmesh_resources::{Dataset, Job, Task};
use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use tokio::sync::mpsc;
use tracing::debug;

/// The senders of the trigger channels, one per controller. The default sends nowhere (a
/// context built for one reconcile in a test, or before the controllers run).
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    datasets: Option<mpsc::UnboundedSender<ObjectRef<Dataset>>>,
    all_datasets: Option<mpsc::UnboundedSender<()>>,
    jobs: Option<mpsc::UnboundedSender<ObjectRef<Job>>>,
    tasks: Option<mpsc::UnboundedSender<ObjectRef<Task>>>,
}

/// The receiving ends of [`Triggers`], handed to the controllers (`Controller::reconcile_on`
/// and, for a catch-up of every Dataset, `reconcile_all_on`).
#[derive(Debug)]
pub struct TriggerReceivers {
    /// Datasets to reconcile.
    pub datasets: mpsc::UnboundedReceiver<ObjectRef<Dataset>>,
    /// Reconcile every Dataset (after commit notifications may have been lost).
    pub all_datasets: mpsc::UnboundedReceiver<()>,
    /// Jobs to reconcile.
    pub jobs: mpsc::UnboundedReceiver<ObjectRef<Job>>,
    /// Tasks to reconcile.
    pub tasks: mpsc::UnboundedReceiver<ObjectRef<Task>>,
}

impl Triggers {
    /// Connected senders and their receivers. The channels are unbounded: a trigger is a
    /// small reference and the controller merges repeated ones for the same object, so the
    /// queue holds at most about one entry per object.
    pub fn channels() -> (Self, TriggerReceivers) {
        let (datasets, datasets_rx) = mpsc::unbounded_channel();
        let (all_datasets, all_datasets_rx) = mpsc::unbounded_channel();
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let (tasks, tasks_rx) = mpsc::unbounded_channel();
        let triggers =
            Self { datasets: Some(datasets), all_datasets: Some(all_datasets), jobs: Some(jobs), tasks: Some(tasks) };
        let receivers =
            TriggerReceivers { datasets: datasets_rx, all_datasets: all_datasets_rx, jobs: jobs_rx, tasks: tasks_rx };
        (triggers, receivers)
    }

    /// Wakes the reconcile of Dataset `namespace/name`.
    pub fn dataset(&self, namespace: &str, name: &str) {
        send(&self.datasets, ObjectRef::new(name).within(namespace));
    }

    /// Wakes the reconcile of every Dataset.
    pub fn all_datasets(&self) {
        send(&self.all_datasets, ());
    }

    /// Wakes the reconcile of Job `namespace/name`.
    pub fn job(&self, namespace: &str, name: &str) {
        send(&self.jobs, ObjectRef::new(name).within(namespace));
    }

    /// Wakes the reconcile of Task `namespace/name` (the resource's name).
    pub fn task(&self, namespace: &str, name: &str) {
        send(&self.tasks, ObjectRef::new(name).within(namespace));
    }
}

fn send<T: std::fmt::Debug>(sender: &Option<mpsc::UnboundedSender<T>>, value: T) {
    if let Some(sender) = sender
        && sender.send(value).is_err()
    {
        debug!("a controller stopped; dropping a trigger (its resync covers it)");
    }
}

/// A receiver as a stream, for `Controller::reconcile_on`.
pub fn stream<T: Send + 'static>(receiver: mpsc::UnboundedReceiver<T>) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) })
}

/// A resource waiting for a dataset to be registered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Waiter {
    /// A Job (by name).
    Job(String),
    /// A standalone Task (by name).
    Task(String),
}

/// Which Jobs and standalone Tasks wait for which dataset (by namespace and name), so that
/// registering the dataset wakes them at once rather than after their `waiting` resync.
#[derive(Debug, Default)]
pub struct Waiting {
    by_dataset: Mutex<HashMap<(String, String), HashSet<Waiter>>>,
}

impl Waiting {
    /// Notes that `waiter` (in `namespace`) waits for dataset `namespace/dataset`.
    pub fn wait(&self, namespace: &str, dataset: &str, waiter: Waiter) {
        if let Ok(mut map) = self.by_dataset.lock() {
            map.entry((namespace.to_owned(), dataset.to_owned())).or_default().insert(waiter);
        }
    }

    /// Forgets `waiter` (it registered, or it is gone).
    pub fn forget(&self, namespace: &str, waiter: &Waiter) {
        if let Ok(mut map) = self.by_dataset.lock() {
            if map.is_empty() {
                return;
            }
            map.retain(|(ns, _), waiters| {
                if ns == namespace {
                    waiters.remove(waiter);
                }
                !waiters.is_empty()
            });
        }
    }

    /// Takes the waiters of dataset `namespace/dataset` (it was just registered).
    pub fn take(&self, namespace: &str, dataset: &str) -> Vec<Waiter> {
        match self.by_dataset.lock() {
            Ok(mut map) => map
                .remove(&(namespace.to_owned(), dataset.to_owned()))
                .map(|waiters| waiters.into_iter().collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Triggers the reconcile of every waiter of dataset `namespace/dataset`, returning how
    /// many were woken.
    pub fn wake(&self, namespace: &str, dataset: &str, triggers: &Triggers) -> usize {
        let waiters = self.take(namespace, dataset);
        for waiter in &waiters {
            match waiter {
                Waiter::Job(name) => triggers.job(namespace, name),
                Waiter::Task(name) => triggers.task(namespace, name),
            }
        }
        waiters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_woken_once_per_registration() {
        let (triggers, mut receivers) = Triggers::channels();
        let waiting = Waiting::default();
        waiting.wait("team", "trips", Waiter::Job("nightly".into()));
        waiting.wait("team", "trips", Waiter::Job("nightly".into()));
        waiting.wait("team", "trips", Waiter::Task("adhoc".into()));
        waiting.wait("other", "trips", Waiter::Job("nightly".into()));
        assert_eq!(waiting.wake("team", "trips", &triggers), 2);
        let job = receivers.jobs.try_recv().expect("the job was woken");
        assert_eq!((job.name.as_str(), job.namespace.as_deref()), ("nightly", Some("team")));
        assert!(receivers.jobs.try_recv().is_err(), "once");
        assert_eq!(receivers.tasks.try_recv().expect("the task was woken").name, "adhoc");
        assert_eq!(waiting.wake("team", "trips", &triggers), 0, "taken");
        waiting.forget("other", &Waiter::Job("nightly".into()));
        assert_eq!(waiting.wake("other", "trips", &triggers), 0, "forgotten");
    }
}
