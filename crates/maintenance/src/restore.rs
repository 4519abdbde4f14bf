//! Snapshot consistency of a catalog restored from backup (SPEC §2 invariants 4, 6 and 8).
//!
//! A point-in-time restore brings back the catalog as it was at the restore point; the bucket
//! is as it is now. Per dataset this checks, on the rows the catalog holds:
//!
//! 1. snapshot ids and visibility tokens strictly increase together;
//! 2. the dataset head (`current_snapshot_id`, `visibility_token`, file/row/byte counts, last
//!    commit time) is its newest snapshot, and that snapshot is retained;
//! 3. no file belongs to a snapshot newer than the head, or was removed by one;
//! 4. every retained snapshot's file/row/byte counts are those of the files it references;
//!
//! then runs the integrity check ([`check_dataset`]) against the bucket: every file of every
//! retained snapshot present with its size, every manifest agreeing with its commit. Objects
//! nothing in the restored catalog references are not damage: they were committed after the
//! restore point (or are staging of an attempt that never committed), and are reported as lost
//! after the restore point — the work to redo.
//!
//! Checks 1–4 are pure functions of the rows ([`snapshot_violations`]); only
//! [`validate_restored_catalog`] does I/O.

use crate::error::{Error, Result};
use crate::integrity::{IntegrityOptions, IntegrityReport, check_dataset};
use chrono::{DateTime, Utc};
use duckmesh_catalog::{Catalog, DatasetState, FileGroup, IntegrityProblem, ProblemKind, SnapshotState};
use duckmesh_core::SnapshotId;
use duckmesh_storage::ObjectStore;
use std::collections::BTreeSet;

/// What kind of inconsistency was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViolationKind {
    /// Snapshot ids and visibility tokens do not strictly increase together.
    SnapshotOrder,
    /// The dataset head is not its newest retained snapshot.
    HeadMismatch,
    /// A file was added or removed by a snapshot newer than the head, or removed before added.
    FileFromNewerSnapshot,
    /// A retained snapshot's counts are not those of the files it references.
    SnapshotCounts,
    /// The bucket disagrees with the catalog (the integrity check's finding).
    Bucket(ProblemKind),
}

impl ViolationKind {
    /// The stable name used in the CLI output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SnapshotOrder => "snapshot_order",
            Self::HeadMismatch => "head_mismatch",
            Self::FileFromNewerSnapshot => "file_from_newer_snapshot",
            Self::SnapshotCounts => "snapshot_counts",
            Self::Bucket(kind) => kind.as_str(),
        }
    }
}

/// One inconsistency, with the offending rows in its detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The kind.
    pub kind: ViolationKind,
    /// The rows involved and what is wrong with them.
    pub detail: String,
}

/// What was found for one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetConsistency {
    /// The dataset's namespace.
    pub namespace: String,
    /// The dataset's name.
    pub name: String,
    /// Its head snapshot, if it has committed one.
    pub head: Option<SnapshotId>,
    /// Its visibility token.
    pub visibility_token: i64,
    /// Snapshots the catalog holds (retained or not).
    pub snapshots: usize,
    /// The newest snapshot's commit time.
    pub newest_commit: Option<DateTime<Utc>>,
    /// Every inconsistency, catalog checks first, then the bucket's.
    pub violations: Vec<Violation>,
    /// Objects under the dataset's prefix that the restored catalog does not reference:
    /// committed after the restore point, or staging that never committed.
    pub lost_after_restore_point: Vec<IntegrityProblem>,
    /// The integrity run (recorded in the restored catalog).
    pub integrity: IntegrityReport,
}

impl DatasetConsistency {
    /// Whether nothing is inconsistent (lost objects are not an inconsistency).
    pub fn is_consistent(&self) -> bool {
        self.violations.is_empty()
    }
}

/// What was found for the whole catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsistencyReport {
    /// Every dataset, by namespace and name.
    pub datasets: Vec<DatasetConsistency>,
}

impl ConsistencyReport {
    /// Whether every dataset is consistent.
    pub fn is_consistent(&self) -> bool {
        self.datasets.iter().all(DatasetConsistency::is_consistent)
    }

    /// Inconsistencies in all datasets.
    pub fn violation_count(&self) -> usize {
        self.datasets.iter().map(|dataset| dataset.violations.len()).sum()
    }

    /// Snapshots in all datasets.
    pub fn snapshot_count(&self) -> usize {
        self.datasets.iter().map(|dataset| dataset.snapshots).sum()
    }

    /// Objects lost after the restore point, in all datasets.
    pub fn lost_count(&self) -> usize {
        self.datasets.iter().map(|dataset| dataset.lost_after_restore_point.len()).sum()
    }

    /// The newest commit the catalog holds.
    pub fn newest_commit(&self) -> Option<DateTime<Utc>> {
        self.datasets.iter().filter_map(|dataset| dataset.newest_commit).max()
    }
}

/// Checks every dataset of `catalog` (checks 1–4, then the integrity check against `store`
/// with `options`; pass a zero `orphan_grace` to see every object lost after the restore
/// point). Each integrity run is recorded in `catalog`, so run this on the restored copy.
pub async fn validate_restored_catalog(
    catalog: &Catalog,
    store: &dyn ObjectStore,
    options: &IntegrityOptions,
) -> Result<ConsistencyReport> {
    let states = catalog.dataset_states().await.map_err(Error::catalog("reading datasets, snapshots and files"))?;
    let mut datasets = Vec::with_capacity(states.len());
    for state in &states {
        let mut violations = snapshot_violations(state);
        let integrity = check_dataset(catalog, store, &state.dataset, options).await?;
        let (lost, damage): (Vec<IntegrityProblem>, Vec<IntegrityProblem>) =
            integrity.problems.iter().cloned().partition(|problem| problem.kind == ProblemKind::Orphan);
        violations.extend(damage.into_iter().map(|problem| Violation {
            kind: ViolationKind::Bucket(problem.kind),
            detail: format!("{}: {}", problem.path, problem.detail),
        }));
        let newest = state.snapshots.last();
        datasets.push(DatasetConsistency {
            namespace: state.dataset.namespace.clone(),
            name: state.dataset.name.clone(),
            head: state.dataset.current_snapshot,
            visibility_token: state.dataset.visibility_token,
            snapshots: state.snapshots.len(),
            newest_commit: newest.map(|snapshot| snapshot.committed_at),
            violations,
            lost_after_restore_point: lost,
            integrity,
        });
    }
    Ok(ConsistencyReport { datasets })
}

/// Checks 1–4 on one dataset's rows.
pub fn snapshot_violations(state: &DatasetState) -> Vec<Violation> {
    let mut violations = order_violations(&state.snapshots);
    violations.extend(head_violations(state));
    violations.extend(file_violations(state));
    violations.extend(count_violations(state));
    violations
}

fn order_violations(snapshots: &[SnapshotState]) -> Vec<Violation> {
    snapshots
        .windows(2)
        .filter(|pair| pair[1].id <= pair[0].id || pair[1].visibility_token <= pair[0].visibility_token)
        .map(|pair| Violation {
            kind: ViolationKind::SnapshotOrder,
            detail: format!(
                "snapshot {} (token {}) follows snapshot {} (token {}): ids and tokens must both increase",
                pair[1].id, pair[1].visibility_token, pair[0].id, pair[0].visibility_token
            ),
        })
        .collect()
}

fn head_violations(state: &DatasetState) -> Vec<Violation> {
    let dataset = &state.dataset;
    let head = format!(
        "head (snapshot {}, token {}, {} files, {} rows, {} bytes, last commit {})",
        dataset.current_snapshot.map_or(0, |id| id.0),
        dataset.visibility_token,
        dataset.file_count,
        dataset.row_count,
        dataset.byte_count,
        dataset.last_commit_at.map_or_else(|| "never".to_owned(), |at| at.to_rfc3339()),
    );
    let violation = |detail: String| Violation { kind: ViolationKind::HeadMismatch, detail };
    let Some(newest) = state.snapshots.iter().max_by_key(|snapshot| snapshot.id) else {
        let empty = dataset.current_snapshot.is_none()
            && dataset.visibility_token == 0
            && (dataset.file_count, dataset.row_count, dataset.byte_count) == (0, 0, 0);
        return if empty { Vec::new() } else { vec![violation(format!("{head}, but the dataset has no snapshot"))] };
    };
    let mut violations = Vec::new();
    let agrees = dataset.current_snapshot == Some(newest.id)
        && dataset.visibility_token == newest.visibility_token
        && (dataset.file_count, dataset.row_count, dataset.byte_count)
            == (newest.file_count, newest.row_count, newest.byte_count)
        && dataset.last_commit_at == Some(newest.committed_at);
    if !agrees {
        violations.push(violation(format!(
            "{head} disagrees with the newest snapshot {} (token {}, {} files, {} rows, {} bytes, committed {})",
            newest.id,
            newest.visibility_token,
            newest.file_count,
            newest.row_count,
            newest.byte_count,
            newest.committed_at.to_rfc3339()
        )));
    }
    if newest.expired {
        violations.push(violation(format!("the newest snapshot {} is expired", newest.id)));
    }
    violations
}

fn file_violations(state: &DatasetState) -> Vec<Violation> {
    let known: BTreeSet<SnapshotId> = state.snapshots.iter().map(|snapshot| snapshot.id).collect();
    let head = state.dataset.current_snapshot.unwrap_or(SnapshotId(0));
    let mut violations = Vec::new();
    for group in &state.files {
        let problem = if !known.contains(&group.added_in) {
            Some(format!("added by snapshot {}, which the catalog does not hold", group.added_in))
        } else if group.added_in > head {
            Some(format!("added by snapshot {}, newer than the head {head}", group.added_in))
        } else {
            match group.removed_in {
                Some(removed) if removed <= group.added_in => {
                    Some(format!("removed by snapshot {removed}, not after snapshot {} added them", group.added_in))
                }
                Some(removed) if removed > head => {
                    Some(format!("removed by snapshot {removed}, newer than the head {head}"))
                }
                _ => None,
            }
        };
        if let Some(problem) = problem {
            violations.push(Violation {
                kind: ViolationKind::FileFromNewerSnapshot,
                detail: format!("{} {problem}: {}", files_phrase(group), group.sample_paths.join(", ")),
            });
        }
    }
    violations
}

fn count_violations(state: &DatasetState) -> Vec<Violation> {
    state
        .snapshots
        .iter()
        .filter(|snapshot| !snapshot.expired)
        .filter_map(|snapshot| {
            let (files, rows, bytes) = state
                .files
                .iter()
                .filter(|group| {
                    group.added_in <= snapshot.id && group.removed_in.is_none_or(|removed| snapshot.id < removed)
                })
                .fold((0, 0, 0), |(files, rows, bytes), group| {
                    (files + group.files, rows + group.rows, bytes + group.bytes)
                });
            let stored = (snapshot.file_count, snapshot.row_count, snapshot.byte_count);
            (stored != (files, rows, bytes)).then(|| Violation {
                kind: ViolationKind::SnapshotCounts,
                detail: format!(
                    "snapshot {} says files={} rows={} bytes={}; the files it references hold files={files} \
                     rows={rows} bytes={bytes}",
                    snapshot.id, stored.0, stored.1, stored.2
                ),
            })
        })
        .collect()
}

fn files_phrase(group: &FileGroup) -> String {
    if group.files == 1 { "1 file".to_owned() } else { format!("{} files", group.files) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use duckmesh_catalog::DatasetRecord;
    use duckmesh_core::DatasetId;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).single().expect("valid time")
    }

    fn snapshot(id: i64, token: i64, files: i64) -> SnapshotState {
        SnapshotState {
            id: SnapshotId(id),
            visibility_token: token,
            file_count: files,
            row_count: files * 10,
            byte_count: files * 100,
            committed_at: at(id as u32),
            expired: false,
        }
    }

    fn group(added: i64, removed: Option<i64>, files: i64) -> FileGroup {
        FileGroup {
            added_in: SnapshotId(added),
            removed_in: removed.map(SnapshotId),
            files,
            rows: files * 10,
            bytes: files * 100,
            sample_paths: vec![format!("trips/attempts/{added}/1/part-00000.parquet")],
        }
    }

    /// Three appends of one file each, head at snapshot 3.
    fn consistent() -> DatasetState {
        DatasetState {
            dataset: DatasetRecord {
                id: DatasetId(1),
                namespace: "default".into(),
                name: "trips".into(),
                uid: "uid".into(),
                generation: 1,
                tenant: "default".into(),
                schema: None,
                spec: serde_json::json!({}),
                current_snapshot: Some(SnapshotId(3)),
                visibility_token: 3,
                file_count: 3,
                row_count: 30,
                byte_count: 300,
                last_commit_at: Some(at(3)),
            },
            snapshots: vec![snapshot(1, 1, 1), snapshot(2, 2, 2), snapshot(3, 3, 3)],
            files: vec![group(1, None, 1), group(2, None, 1), group(3, None, 1)],
        }
    }

    fn kinds(state: &DatasetState) -> Vec<ViolationKind> {
        snapshot_violations(state).into_iter().map(|violation| violation.kind).collect()
    }

    #[test]
    fn a_consistent_dataset_and_an_empty_one_have_no_violation() {
        assert_eq!(snapshot_violations(&consistent()), []);
        let mut empty = consistent();
        empty.snapshots.clear();
        empty.files.clear();
        empty.dataset.current_snapshot = None;
        (empty.dataset.visibility_token, empty.dataset.file_count, empty.dataset.row_count) = (0, 0, 0);
        empty.dataset.byte_count = 0;
        assert_eq!(snapshot_violations(&empty), []);
    }

    #[test]
    fn an_overwrite_and_an_expired_snapshot_with_forgotten_files_are_consistent() {
        let mut state = consistent();
        // Snapshot 4 overwrites everything with two files; snapshot 1 expired, so its counts
        // are no longer checked (GC may have forgotten files only it referenced).
        state.files = vec![group(1, Some(4), 1), group(2, Some(4), 1), group(3, Some(4), 1), group(4, None, 2)];
        state.snapshots.push(snapshot(4, 4, 2));
        state.snapshots[0].expired = true;
        state.snapshots[0].file_count = 99;
        state.dataset.current_snapshot = Some(SnapshotId(4));
        (state.dataset.visibility_token, state.dataset.file_count) = (4, 2);
        (state.dataset.row_count, state.dataset.byte_count, state.dataset.last_commit_at) = (20, 200, Some(at(4)));
        assert_eq!(snapshot_violations(&state), []);
    }

    #[test]
    fn tokens_that_do_not_increase_are_reported_with_both_snapshots() {
        let mut state = consistent();
        state.snapshots[1].visibility_token = 7;
        let violations = snapshot_violations(&state);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].kind, ViolationKind::SnapshotOrder);
        assert!(violations[0].detail.contains("snapshot 3 (token 3) follows snapshot 2 (token 7)"), "{violations:?}");
    }

    #[test]
    fn a_head_behind_its_newest_snapshot_is_reported_with_its_files() {
        let mut state = consistent();
        state.dataset.current_snapshot = Some(SnapshotId(2));
        let violations = snapshot_violations(&state);
        let found: Vec<ViolationKind> = violations.iter().map(|violation| violation.kind).collect();
        assert_eq!(found, [ViolationKind::HeadMismatch, ViolationKind::FileFromNewerSnapshot], "{violations:?}");
        assert!(violations[0].detail.contains("head (snapshot 2, token 3"), "{violations:?}");
        assert!(violations[0].detail.contains("newest snapshot 3 (token 3"), "{violations:?}");
        assert!(violations[1].detail.contains("trips/attempts/3/1/part-00000.parquet"), "{violations:?}");
    }

    #[test]
    fn head_counts_a_stale_token_and_an_expired_head_are_reported() {
        let mut state = consistent();
        state.dataset.row_count = 31;
        assert_eq!(kinds(&state), [ViolationKind::HeadMismatch]);
        let mut state = consistent();
        state.dataset.visibility_token = 2;
        assert_eq!(kinds(&state), [ViolationKind::HeadMismatch]);
        let mut state = consistent();
        state.snapshots[2].expired = true;
        assert_eq!(kinds(&state), [ViolationKind::HeadMismatch]);
        let mut state = consistent();
        state.snapshots.clear();
        state.files.clear();
        assert_eq!(kinds(&state), [ViolationKind::HeadMismatch]);
    }

    #[test]
    fn files_of_missing_or_newer_snapshots_and_counts_off_are_reported() {
        let mut state = consistent();
        state.files.push(group(9, None, 1));
        assert_eq!(kinds(&state), [ViolationKind::FileFromNewerSnapshot]);
        let mut state = consistent();
        state.files[0].removed_in = Some(SnapshotId(5));
        assert_eq!(kinds(&state), [ViolationKind::FileFromNewerSnapshot]);
        let mut state = consistent();
        state.files.remove(1);
        let violations = snapshot_violations(&state);
        assert_eq!(violations.len(), 2, "snapshots 2 and 3 lost a file: {violations:?}");
        assert!(violations.iter().all(|violation| violation.kind == ViolationKind::SnapshotCounts));
        assert!(violations[0].detail.contains("snapshot 2 says files=2 rows=20 bytes=200"), "{violations:?}");
    }
}
