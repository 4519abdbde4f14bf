//! The history checker: SPEC §2's invariants checked as properties over what a run left behind
//! in the catalog and the bucket. Drills, chaos runs and end-to-end tests record what their
//! clients were told ([`Expectations`]: the ingest acks they received, the reads they pinned),
//! stop the load, wait for quiescence, and call [`check`]:
//!
//! | property | holds when |
//! |---|---|
//! | [`Property::AckedVisibleOnce`] | every acknowledged record is in the ingest buffer, committed by a retained snapshot (or dead-lettered, when the producer sent it as poison), and — with a key column — appears exactly once in the dataset's current snapshot; every retained ingest snapshot added exactly as many rows as it committed events |
//! | [`Property::OneOutputPerTask`] | no task has two committed outputs, and a task's recorded output is its commit |
//! | [`Property::NoStaleCommit`] | every task commit came from the task's newest attempt, holding the task's current fence; every ingest commit from the claim that holds its events |
//! | [`Property::SnapshotOrder`] | per dataset, snapshot ids and visibility tokens strictly increase together, the head is the newest snapshot, and counts match files |
//! | [`Property::FilesIntact`] | every file a retained snapshot references exists in the bucket with its size (and SHA-256 when asked), and manifests agree with commits |
//! | [`Property::NoStuckTask`] | every task is finished, holds a live lease, or has a retry time (and, once quiescent, nothing is pending) |
//! | [`Property::PinnedReadStable`] | a read pinned to a snapshot returns the same rows as when it was first taken |
//!
//! A violation carries the offending rows in its detail. Objects in the bucket that nothing
//! references (the staging of killed attempts) are not violations: GC removes them.
//!
//! The files check runs the integrity check ([`duckmesh_maintenance::check_dataset`]), which
//! records an integrity run per dataset in the catalog.

mod error;
mod ingest;
mod reads;
mod snapshots;
mod tasks;

pub use error::{Error, Result};
pub use reads::PinnedRead;

use duckmesh_catalog::Catalog;
use duckmesh_storage::ObjectStore;
use std::fmt;

/// One SPEC §2 property the checker verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Property {
    /// Every acknowledged ingest record is visible exactly once.
    AckedVisibleOnce,
    /// Every task has at most one committed output.
    OneOutputPerTask,
    /// No commit came from a superseded attempt or claim.
    NoStaleCommit,
    /// Snapshot ids and visibility tokens strictly increase; heads and counts agree.
    SnapshotOrder,
    /// Every file a retained snapshot references exists with its size and hash.
    FilesIntact,
    /// No task is stuck.
    NoStuckTask,
    /// A read pinned to a snapshot returns the same rows.
    PinnedReadStable,
}

impl Property {
    /// Every property, in report order.
    pub const ALL: [Property; 7] = [
        Self::AckedVisibleOnce,
        Self::OneOutputPerTask,
        Self::NoStaleCommit,
        Self::SnapshotOrder,
        Self::FilesIntact,
        Self::NoStuckTask,
        Self::PinnedReadStable,
    ];

    /// The stable name printed in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AckedVisibleOnce => "acked_visible_once",
            Self::OneOutputPerTask => "one_output_per_task",
            Self::NoStaleCommit => "no_stale_commit",
            Self::SnapshotOrder => "snapshot_order",
            Self::FilesIntact => "files_intact",
            Self::NoStuckTask => "no_stuck_task",
            Self::PinnedReadStable => "pinned_read_stable",
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken property, with the offending rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The property.
    pub property: Property,
    /// What is wrong, naming the rows (dataset, snapshot, task, attempt, key, path).
    pub detail: String,
}

impl Violation {
    pub(crate) fn new(property: Property, detail: impl Into<String>) -> Self {
        Self { property, detail: detail.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.detail)
    }
}

/// The records a set of producers was acknowledged for one dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckedRecords {
    /// The dataset's namespace.
    pub namespace: String,
    /// The dataset's name.
    pub dataset: String,
    /// The dedupe key of every record a producer got an ack for (duplicates allowed: a retried
    /// post is acked again).
    pub dedupe_keys: Vec<String>,
    /// Keys of records sent as poison on purpose: these must be dead-lettered, not visible.
    pub poison: Vec<String>,
    /// A column of the dataset holding each record's dedupe key: when set, the current
    /// snapshot is read and every acknowledged key must appear in it exactly once.
    pub key_column: Option<String>,
}

/// What the run's clients were told, to check against the catalog.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// Ingest acks, per dataset.
    pub acked: Vec<AckedRecords>,
    /// Reads pinned to snapshots during the run ([`PinnedRead::take`]), read again now.
    pub pinned: Vec<PinnedRead>,
    /// Whether the run is over and every task should have finished (a pending task is then
    /// stuck); while work may still be queued, only leases and retry times are checked.
    pub quiescent: bool,
    /// Download every retained file and compare its SHA-256 (slow: reads all data).
    pub verify_hashes: bool,
}

/// How much the checker looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Datasets.
    pub datasets: usize,
    /// Snapshot rows.
    pub snapshots: usize,
    /// Retained files checked against the bucket.
    pub files: usize,
    /// Tasks.
    pub tasks: usize,
    /// Attempts.
    pub attempts: usize,
    /// Distinct acknowledged records.
    pub acked_records: usize,
    /// Pinned reads repeated.
    pub pinned_reads: usize,
}

/// The checker's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryReport {
    /// What was looked at.
    pub checked: Checked,
    /// Every broken property, in [`Property::ALL`] order.
    pub violations: Vec<Violation>,
}

impl HistoryReport {
    /// Whether every property holds.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// Violations of one property.
    pub fn of(&self, property: Property) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(move |violation| violation.property == property)
    }

    /// One `key=value` line: what was checked and how many violations.
    pub fn summary(&self) -> String {
        let c = &self.checked;
        format!(
            "datasets={} snapshots={} files={} tasks={} attempts={} acked_records={} pinned_reads={} violations={}",
            c.datasets,
            c.snapshots,
            c.files,
            c.tasks,
            c.attempts,
            c.acked_records,
            c.pinned_reads,
            self.violations.len()
        )
    }
}

impl fmt::Display for HistoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        for violation in &self.violations {
            writeln!(f, "  {violation}")?;
        }
        Ok(())
    }
}

/// Checks every property over `catalog` and `store` against what the clients were told.
pub async fn check(catalog: &Catalog, store: &dyn ObjectStore, expectations: &Expectations) -> Result<HistoryReport> {
    let mut report = HistoryReport::default();
    ingest::check(catalog, store, &expectations.acked, &mut report).await?;
    tasks::check(catalog, expectations.quiescent, &mut report).await?;
    snapshots::check(catalog, store, expectations.verify_hashes, &mut report).await?;
    for pinned in &expectations.pinned {
        if let Some(violation) = pinned.verify(catalog, store).await? {
            report.violations.push(violation);
        }
        report.checked.pinned_reads += 1;
    }
    report.violations.sort_by_key(|violation| violation.property);
    Ok(report)
}
