//! What a catalog rebuild from the bucket asks of the catalog: the records written to the
//! bucket while it lives ([`Catalog::commit_records`] for the outbox dispatcher,
//! [`Catalog::checkpoint`] for GC), and, after a loss, restoring datasets, snapshots and files
//! into an empty catalog in one transaction ([`Catalog::restore_datasets`]).

use crate::{Catalog, Error, Result};
use chrono::Utc;
use duckmesh_contracts::Column;
use duckmesh_contracts::catalog_record::{
    CHECKPOINT_FORMAT, COMMIT_RECORD_FORMAT, Checkpoint, CommitRecord, RecordedDataset, RecordedFile, RecordedSnapshot,
};
use duckmesh_core::{DatasetId, SnapshotId};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

const DATASET_IDENTITY: &str = "d.id AS d_id, d.namespace, d.name, d.uid, d.generation, d.tenant, d.spec, d.schema";
const SNAPSHOT_ROW: &str = "s.id, s.parent_id, s.visibility_token, s.kind, s.fence, s.file_count, s.row_count, \
    s.byte_count, s.added_files::bigint AS added_files, s.removed_files::bigint AS removed_files, s.manifest_path, s.committed_at, s.expired_at";

/// One dataset to restore: its identity, its snapshots (oldest first) and every file they
/// reference, each with the snapshot that retired it (`None`: live).
#[derive(Debug, Clone, PartialEq)]
pub struct RestoredDataset {
    /// The dataset as last recorded.
    pub dataset: RecordedDataset,
    /// Its snapshots, oldest first; the last is its current one.
    pub snapshots: Vec<RecordedSnapshot>,
    /// Its files with the snapshot that removed each.
    pub files: Vec<(RecordedFile, Option<i64>)>,
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreSummary {
    /// Datasets restored.
    pub datasets: usize,
    /// Snapshots restored.
    pub snapshots: usize,
    /// Files restored.
    pub files: usize,
    /// The fencing sequence's value afterwards (past every fence restored).
    pub fence_seq: i64,
}

fn dataset_from(row: &PgRow) -> Result<RecordedDataset> {
    let schema: Option<Json<Vec<Column>>> = row.try_get("schema")?;
    Ok(RecordedDataset {
        id: row.try_get("d_id")?,
        namespace: row.try_get("namespace")?,
        name: row.try_get("name")?,
        uid: row.try_get("uid")?,
        generation: row.try_get("generation")?,
        tenant: row.try_get("tenant")?,
        spec: row.try_get("spec")?,
        schema: schema.map(|json| json.0),
    })
}

fn snapshot_from(row: &PgRow) -> Result<RecordedSnapshot> {
    let count = |column: &str| -> Result<i64> { Ok(row.try_get(column)?) };
    Ok(RecordedSnapshot {
        id: row.try_get("id")?,
        parent: row.try_get("parent_id")?,
        visibility_token: row.try_get("visibility_token")?,
        kind: row.try_get("kind")?,
        fence: row.try_get("fence")?,
        file_count: count("file_count")?,
        row_count: count("row_count")?,
        byte_count: count("byte_count")?,
        added_files: count("added_files")?,
        removed_files: count("removed_files")?,
        manifest_path: row.try_get("manifest_path")?,
        committed_at: row.try_get("committed_at")?,
        expired_at: row.try_get("expired_at")?,
    })
}

impl Catalog {
    /// The commit records of the given snapshots, read in one query; snapshots that no longer
    /// exist (their dataset was deleted, or GC forgot them) are left out. A record describes
    /// the snapshot as committed (`expired_at` is never set), so writing it again writes the
    /// same content while the dataset's spec is unchanged.
    pub async fn commit_records(&self, snapshots: &[(DatasetId, SnapshotId)]) -> Result<Vec<CommitRecord>> {
        let datasets: Vec<i64> = snapshots.iter().map(|(dataset, _)| dataset.0).collect();
        let ids: Vec<i64> = snapshots.iter().map(|(_, snapshot)| snapshot.0).collect();
        let sql = format!(
            "SELECT {DATASET_IDENTITY}, {SNAPSHOT_ROW} FROM unnest($1::bigint[], $2::bigint[]) AS k(dataset_id, id) \
             JOIN snapshots s ON s.dataset_id = k.dataset_id AND s.id = k.id JOIN datasets d ON d.id = s.dataset_id \
             ORDER BY d.id, s.id"
        );
        let rows = sqlx::query(&sql).bind(&datasets).bind(&ids).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let mut snapshot = snapshot_from(row)?;
                snapshot.expired_at = None;
                Ok(CommitRecord { format: COMMIT_RECORD_FORMAT.to_owned(), dataset: dataset_from(row)?, snapshot })
            })
            .collect()
    }

    /// The checkpoint of `dataset` at its oldest retained snapshot: the files live there, the
    /// expired snapshots that added any of them, and the dataset's identity, read in one
    /// repeatable-read transaction. `None` when the dataset has no retained snapshot.
    pub async fn checkpoint(&self, dataset: DatasetId) -> Result<Option<Checkpoint>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
        let sql = format!(
            "SELECT {DATASET_IDENTITY}, {SNAPSHOT_ROW} FROM snapshots s JOIN datasets d ON d.id = s.dataset_id \
             WHERE s.dataset_id = $1 AND s.expired_at IS NULL ORDER BY s.id LIMIT 1"
        );
        let Some(row) = sqlx::query(&sql).bind(dataset.0).fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let identity = dataset_from(&row)?;
        let snapshot = snapshot_from(&row)?;
        let rows = sqlx::query(
            "SELECT path, bytes, rows, sha256, partition, added_in FROM files WHERE dataset_id = $1 \
             AND added_in <= $2 AND (removed_in IS NULL OR removed_in > $2) ORDER BY path",
        )
        .bind(dataset.0)
        .bind(snapshot.id)
        .fetch_all(&mut *tx)
        .await?;
        let files = rows
            .iter()
            .map(|row| {
                Ok(RecordedFile {
                    path: row.try_get("path")?,
                    bytes: row.try_get("bytes")?,
                    rows: row.try_get("rows")?,
                    sha256: row.try_get("sha256")?,
                    partition: row.try_get("partition")?,
                    added_in: row.try_get("added_in")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut older: Vec<i64> = files.iter().map(|file| file.added_in).filter(|id| *id < snapshot.id).collect();
        older.sort_unstable();
        older.dedup();
        let sql =
            format!("SELECT {SNAPSHOT_ROW} FROM snapshots s WHERE s.dataset_id = $1 AND s.id = ANY ($2) ORDER BY s.id");
        let rows = sqlx::query(&sql).bind(dataset.0).bind(&older).fetch_all(&mut *tx).await?;
        let anchors = rows.iter().map(snapshot_from).collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok(Some(Checkpoint {
            format: CHECKPOINT_FORMAT.to_owned(),
            dataset: identity,
            snapshot,
            anchors,
            files,
            created_at: Utc::now(),
        }))
    }

    /// How many datasets the catalog holds (a rebuild needs none).
    pub async fn dataset_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM datasets").fetch_one(&self.pool).await?)
    }

    /// Restores `datasets` — with their ids, snapshots (ids, parents, visibility tokens, kinds,
    /// fences, counts, commit times; no task or attempt links) and files — and sets each
    /// dataset's current snapshot and counters from its newest snapshot, all in one
    /// transaction. The id sequence and `fence_seq` are advanced past everything restored and
    /// past `fence_floor` (fences in use that no snapshot records, such as an unrestored ingest
    /// batch's directory), so no fence is ever granted twice. Refuses (`catalog_not_empty`,
    /// nothing written) a catalog that already holds a dataset.
    pub async fn restore_datasets(&self, datasets: &[RestoredDataset], fence_floor: i64) -> Result<RestoreSummary> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE datasets IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
        let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM datasets").fetch_one(&mut *tx).await?;
        if existing > 0 {
            return Err(Error::NotEmpty { datasets: existing });
        }
        let mut summary = RestoreSummary::default();
        let mut max_fence = fence_floor.max(0);
        for restored in datasets {
            let Some(current) = restored.snapshots.last() else { continue };
            let identity = &restored.dataset;
            sqlx::query(
                "INSERT INTO datasets (id, namespace, name, uid, generation, tenant, spec, schema, current_snapshot_id, \
                     visibility_token, file_count, row_count, byte_count, last_commit_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(identity.id)
            .bind(&identity.namespace)
            .bind(&identity.name)
            .bind(&identity.uid)
            .bind(identity.generation)
            .bind(&identity.tenant)
            .bind(&identity.spec)
            .bind(identity.schema.as_ref().map(Json))
            .bind(current.id)
            .bind(current.visibility_token)
            .bind(current.file_count)
            .bind(current.row_count)
            .bind(current.byte_count)
            .bind(current.committed_at)
            .execute(&mut *tx)
            .await?;
            insert_snapshots(&mut tx, identity.id, &restored.snapshots).await?;
            insert_files(&mut tx, identity.id, &restored.files).await?;
            max_fence = restored.snapshots.iter().filter_map(|snapshot| snapshot.fence).fold(max_fence, i64::max);
            summary.datasets += 1;
            summary.snapshots += restored.snapshots.len();
            summary.files += restored.files.len();
        }
        sqlx::query("SELECT setval('datasets_id_seq', greatest((SELECT max(id) FROM datasets), 1))")
            .execute(&mut *tx)
            .await?;
        summary.fence_seq =
            sqlx::query_scalar("SELECT setval('fence_seq', greatest((SELECT last_value FROM fence_seq), $1, 1))")
                .bind(max_fence)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(summary)
    }
}

async fn insert_snapshots(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    dataset: i64,
    snapshots: &[RecordedSnapshot],
) -> Result<()> {
    let column = |get: fn(&RecordedSnapshot) -> i64| snapshots.iter().map(get).collect::<Vec<i64>>();
    let parents: Vec<Option<i64>> = snapshots.iter().map(|s| s.parent).collect();
    let fences: Vec<Option<i64>> = snapshots.iter().map(|s| s.fence).collect();
    let kinds: Vec<&str> = snapshots.iter().map(|s| s.kind.as_str()).collect();
    let manifests: Vec<Option<&str>> = snapshots.iter().map(|s| s.manifest_path.as_deref()).collect();
    let committed: Vec<_> = snapshots.iter().map(|s| s.committed_at).collect();
    let expired: Vec<_> = snapshots.iter().map(|s| s.expired_at).collect();
    sqlx::query(
        "INSERT INTO snapshots (dataset_id, id, parent_id, visibility_token, kind, fence, file_count, row_count, \
             byte_count, added_files, removed_files, manifest_path, committed_at, expired_at) \
         SELECT $1, u.* FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[], \
             $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::timestamptz[], \
             $14::timestamptz[]) AS u",
    )
    .bind(dataset)
    .bind(column(|s| s.id))
    .bind(&parents)
    .bind(column(|s| s.visibility_token))
    .bind(&kinds)
    .bind(&fences)
    .bind(column(|s| s.file_count))
    .bind(column(|s| s.row_count))
    .bind(column(|s| s.byte_count))
    .bind(column(|s| s.added_files))
    .bind(column(|s| s.removed_files))
    .bind(&manifests)
    .bind(&committed)
    .bind(&expired)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_files(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    dataset: i64,
    files: &[(RecordedFile, Option<i64>)],
) -> Result<()> {
    // Bounded statements: a dataset may hold millions of files.
    for chunk in files.chunks(10_000) {
        let paths: Vec<&str> = chunk.iter().map(|(f, _)| f.path.as_str()).collect();
        let bytes: Vec<i64> = chunk.iter().map(|(f, _)| f.bytes).collect();
        let rows: Vec<i64> = chunk.iter().map(|(f, _)| f.rows).collect();
        let hashes: Vec<&str> = chunk.iter().map(|(f, _)| f.sha256.as_str()).collect();
        let partitions: Vec<Option<String>> =
            chunk.iter().map(|(f, _)| f.partition.as_ref().map(ToString::to_string)).collect();
        let added: Vec<i64> = chunk.iter().map(|(f, _)| f.added_in).collect();
        let removed: Vec<Option<i64>> = chunk.iter().map(|(_, removed)| *removed).collect();
        sqlx::query(
            "INSERT INTO files (dataset_id, path, bytes, rows, sha256, partition, added_in, removed_in) \
             SELECT $1, u.path, u.bytes, u.rows, u.sha256, u.partition::jsonb, u.added_in, u.removed_in \
             FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::bigint[], $8::bigint[]) \
                 AS u(path, bytes, rows, sha256, partition, added_in, removed_in)",
        )
        .bind(dataset)
        .bind(&paths)
        .bind(&bytes)
        .bind(&rows)
        .bind(&hashes)
        .bind(&partitions)
        .bind(&added)
        .bind(&removed)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
