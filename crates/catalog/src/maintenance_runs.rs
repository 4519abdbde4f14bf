//! Maintenance bookkeeping: the record of finished maintenance runs (migration 0011), written
//! by whoever ran the run (a leased task, the CLI) and read by the scheduler that serves
//! `/metrics`; and what the scheduler needs to carry out Dataset maintenance policies.

use crate::{Catalog, Result};
use chrono::{DateTime, Utc};
use duckmesh_core::DatasetId;
use sqlx::Row;

/// A finished maintenance run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MaintenanceRun {
    /// Catalog id (increasing; 0 before it is recorded).
    pub id: i64,
    /// The dataset maintained.
    pub dataset: Option<DatasetId>,
    /// `compact`, `gc` or `integrity`.
    pub kind: String,
    /// `succeeded`, `noop`, `issues_found` (integrity) or `failed`.
    pub result: String,
    /// Bytes of the files a compaction wrote.
    pub bytes_rewritten: i64,
    /// Files GC deleted that no retained snapshot referenced.
    pub unreferenced_deleted: i64,
    /// Staging objects GC deleted.
    pub staging_deleted: i64,
    /// Query exports GC deleted.
    pub exports_deleted: i64,
    /// Files an integrity run checked.
    pub files_checked: i64,
    /// Files it found missing.
    pub missing_files: i64,
    /// Files it found of the wrong size.
    pub size_mismatch_files: i64,
    /// Why a failed run failed.
    pub error_code: Option<String>,
}

/// A dataset as the maintenance scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceState {
    /// The dataset.
    pub dataset: DatasetId,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// Its spec (where the policies are).
    pub spec: serde_json::Value,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When a `compact` task on it was last created.
    pub last_compact: Option<DateTime<Utc>>,
    /// When a `gc` task on it was last created.
    pub last_gc: Option<DateTime<Utc>>,
    /// When an `integrity` task on it was last created.
    pub last_integrity: Option<DateTime<Utc>>,
    /// Whether a maintenance task (`compact`, `gc`, `integrity`, `export`) on it has not finished.
    pub busy: bool,
}

impl Catalog {
    /// Every dataset with the times its maintenance kinds last ran and whether one is running.
    pub async fn maintenance_states(&self) -> Result<Vec<MaintenanceState>> {
        let rows = sqlx::query(
            "SELECT d.id, d.namespace, d.name, d.tenant, d.spec, d.created_at, m.last_compact, m.last_gc, \
               m.last_integrity, coalesce(m.busy, false) AS busy \
             FROM datasets d LEFT JOIN LATERAL ( \
               SELECT max(t.created_at) FILTER (WHERE t.kind = 'compact') AS last_compact, \
                      max(t.created_at) FILTER (WHERE t.kind = 'gc') AS last_gc, \
                      max(t.created_at) FILTER (WHERE t.kind = 'integrity') AS last_integrity, \
                      bool_or(t.phase NOT IN ('Succeeded', 'Failed', 'Cancelled')) AS busy \
               FROM tasks t WHERE t.output_dataset_id = d.id AND t.kind IN ('compact', 'gc', 'integrity', 'export') \
             ) m ON true ORDER BY d.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(MaintenanceState {
                    dataset: DatasetId(row.try_get("id")?),
                    namespace: row.try_get("namespace")?,
                    name: row.try_get("name")?,
                    tenant: row.try_get("tenant")?,
                    spec: row.try_get("spec")?,
                    created_at: row.try_get("created_at")?,
                    last_compact: row.try_get("last_compact")?,
                    last_gc: row.try_get("last_gc")?,
                    last_integrity: row.try_get("last_integrity")?,
                    busy: row.try_get("busy")?,
                })
            })
            .collect()
    }

    /// Records a finished run; returns its id.
    pub async fn record_maintenance_run(&self, run: &MaintenanceRun) -> Result<i64> {
        let id = sqlx::query_scalar(
            "INSERT INTO maintenance_runs (dataset_id, kind, result, bytes_rewritten, unreferenced_deleted, \
               staging_deleted, exports_deleted, files_checked, missing_files, size_mismatch_files, error_code) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(run.dataset.map(|dataset| dataset.0))
        .bind(&run.kind)
        .bind(&run.result)
        .bind(run.bytes_rewritten)
        .bind(run.unreferenced_deleted)
        .bind(run.staging_deleted)
        .bind(run.exports_deleted)
        .bind(run.files_checked)
        .bind(run.missing_files)
        .bind(run.size_mismatch_files)
        .bind(&run.error_code)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// The id of the newest run (0 when there is none): where a new reader starts.
    pub async fn latest_maintenance_run_id(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM maintenance_runs").fetch_one(&self.pool).await?)
    }

    /// Runs with an id above `after`, oldest first, at most `limit`.
    pub async fn maintenance_runs_after(&self, after: i64, limit: i64) -> Result<Vec<MaintenanceRun>> {
        let rows = sqlx::query(
            "SELECT id, dataset_id, kind, result, bytes_rewritten, unreferenced_deleted, staging_deleted, \
               exports_deleted, files_checked, missing_files, size_mismatch_files, error_code \
             FROM maintenance_runs WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit.max(1))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(MaintenanceRun {
                    id: row.try_get("id")?,
                    dataset: row.try_get::<Option<i64>, _>("dataset_id")?.map(DatasetId),
                    kind: row.try_get("kind")?,
                    result: row.try_get("result")?,
                    bytes_rewritten: row.try_get("bytes_rewritten")?,
                    unreferenced_deleted: row.try_get("unreferenced_deleted")?,
                    staging_deleted: row.try_get("staging_deleted")?,
                    exports_deleted: row.try_get("exports_deleted")?,
                    files_checked: row.try_get("files_checked")?,
                    missing_files: row.try_get("missing_files")?,
                    size_mismatch_files: row.try_get("size_mismatch_files")?,
                    error_code: row.try_get("error_code")?,
                })
            })
            .collect()
    }
}
