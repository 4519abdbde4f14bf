//! Task properties, read straight from the catalog's rows: [`Property::OneOutputPerTask`],
//! [`Property::NoStaleCommit`] and [`Property::NoStuckTask`].

use crate::error::{Error, Result};
use crate::{HistoryReport, Property, Violation};
use duckmesh_catalog::Catalog;
use sqlx::Row;
use sqlx::postgres::PgRow;

/// Rows listed per violation query (the rest are counted).
const LISTED: i64 = 20;

pub(crate) async fn check(catalog: &Catalog, quiescent: bool, report: &mut HistoryReport) -> Result<()> {
    let pool = catalog.pool();
    let counts =
        sqlx::query("SELECT (SELECT count(*) FROM tasks) AS tasks, (SELECT count(*) FROM attempts) AS attempts")
            .fetch_one(pool)
            .await
            .map_err(Error::sql("counting tasks"))?;
    report.checked.tasks +=
        usize::try_from(counts.try_get::<i64, _>("tasks").map_err(Error::sql("counting tasks"))?).unwrap_or_default();
    report.checked.attempts +=
        usize::try_from(counts.try_get::<i64, _>("attempts").map_err(Error::sql("counting attempts"))?)
            .unwrap_or_default();

    let one_output = [
        (
            "task has more than one committed output",
            "SELECT 'task ' || task_id || ': snapshots ' || string_agg(dataset_id || '@' || id, ', ' ORDER BY id) \
               FROM snapshots WHERE task_id IS NOT NULL GROUP BY task_id HAVING count(*) > 1",
        ),
        (
            "task's recorded output is not the snapshot it committed",
            "SELECT 'task ' || t.id || ' (' || t.namespace || '/' || t.name || '): output_snapshot_id ' \
                    || coalesce(t.output_snapshot_id::text, 'NULL') || ', committed ' || s.dataset_id || '@' || s.id \
               FROM tasks t JOIN snapshots s ON s.task_id = t.id \
              WHERE t.output_snapshot_id IS DISTINCT FROM s.id OR t.phase <> 'Succeeded'",
        ),
    ];
    let stale = [
        (
            "commit from an attempt that is not the task's newest, current-fence, succeeded attempt",
            "SELECT 'snapshot ' || s.dataset_id || '@' || s.id || ': attempt ' || a.id || ' (n ' || a.n || ', state ' \
                    || a.state || ', fence ' || a.fence || '), snapshot fence ' || coalesce(s.fence::text, 'NULL') \
                    || ', task ' || t.id || ' fence ' || coalesce(t.fence::text, 'NULL') || ', newest attempt n ' \
                    || (SELECT max(b.n) FROM attempts b WHERE b.task_id = t.id) \
               FROM snapshots s JOIN attempts a ON a.id = s.attempt_id JOIN tasks t ON t.id = a.task_id \
              WHERE s.fence IS DISTINCT FROM a.fence OR t.fence IS DISTINCT FROM a.fence OR a.state <> 'Succeeded' \
                 OR s.task_id IS DISTINCT FROM t.id \
                 OR a.n < (SELECT max(b.n) FROM attempts b WHERE b.task_id = t.id)",
        ),
        (
            "task snapshot without an attempt",
            "SELECT 'snapshot ' || s.dataset_id || '@' || s.id || ' (' || s.kind || ') of task ' || s.task_id \
                    || ' names attempt ' || coalesce(s.attempt_id::text, 'NULL') || ', which does not exist' \
               FROM snapshots s WHERE s.task_id IS NOT NULL \
                AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.id = s.attempt_id)",
        ),
        (
            "ingest commit by a claim that does not hold its events",
            "SELECT 'snapshot ' || s.dataset_id || '@' || s.id || ' (fence ' || coalesce(s.fence::text, 'NULL') \
                    || ') committed event seq ' || e.seq || ' claimed with fence ' || coalesce(e.claim_fence::text, 'NULL') \
               FROM ingest_events e JOIN snapshots s ON s.dataset_id = e.dataset_id AND s.id = e.snapshot_id \
              WHERE e.claim_fence IS DISTINCT FROM s.fence",
        ),
    ];
    let live = "EXISTS (SELECT 1 FROM attempts a WHERE a.task_id = t.id AND a.state IN ('Leased', 'Running') \
                AND a.lease_expires_at > clock_timestamp())";
    let stuck_active = format!(
        "SELECT 'task ' || t.id || ' (' || t.namespace || '/' || t.name || ') is ' || t.phase \
                || ' with no live lease' \
           FROM tasks t LEFT JOIN jobs j ON j.id = t.job_id \
          WHERE t.phase IN ('Leased', 'Running') AND NOT {live} AND j.deleted_at IS NULL"
    );
    let stuck_retrying =
        "SELECT 'task ' || t.id || ' (' || t.namespace || '/' || t.name || ') is Retrying with no retry time' \
           FROM tasks t WHERE t.phase = 'Retrying' AND t.next_retry_at IS NULL"
            .to_owned();
    let stuck_pending = format!(
        "SELECT 'task ' || t.id || ' (' || t.namespace || '/' || t.name || ') is ' || t.phase \
                || ' after the run (attempts ' || t.attempts || ', next retry ' || coalesce(t.next_retry_at::text, 'none') || ')' \
           FROM tasks t LEFT JOIN jobs j ON j.id = t.job_id \
          WHERE t.phase IN ('Pending', 'Retrying') AND NOT {live} AND j.deleted_at IS NULL \
            AND (t.next_retry_at IS NULL OR t.next_retry_at < clock_timestamp() - interval '1 minute')"
    );
    let mut stuck = vec![("task stuck", stuck_active.as_str()), ("task stuck", stuck_retrying.as_str())];
    if quiescent {
        stuck.push(("task unfinished after the run", stuck_pending.as_str()));
    }

    for (property, queries) in [
        (Property::OneOutputPerTask, one_output.to_vec()),
        (Property::NoStaleCommit, stale.to_vec()),
        (Property::NoStuckTask, stuck),
    ] {
        for (what, sql) in queries {
            let rows: Vec<PgRow> = sqlx::query(&format!("{sql} LIMIT {}", LISTED + 1))
                .fetch_all(pool)
                .await
                .map_err(Error::sql("checking task properties"))?;
            for (index, row) in rows.iter().enumerate() {
                let detail: String = row.try_get(0).map_err(Error::sql("reading a violation"))?;
                let detail = if index as i64 == LISTED { "… and more".to_owned() } else { detail };
                report.violations.push(Violation::new(property, format!("{what}: {detail}")));
            }
        }
    }
    Ok(())
}
