//! Idempotent upserts of declared resources (datasets, jobs with their tasks, standalone
//! tasks), and cancellation. Keyed by namespace/name + uid, ordered by generation, so the same
//! event delivered twice, or an old event delivered late, changes nothing.

use crate::model::{DatasetRecord, DatasetSpec, JobRecord, JobSpec, TaskSpec};
use crate::reads::{DATASET_COLUMNS, JOB_COLUMNS, dataset_from_row, job_from_row};
use crate::{Catalog, Error, Result};
use duckmesh_core::{AttemptId, JobId, TaskId, topological_order};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};

/// The most attempts a task may declare.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// The longest per-attempt timeout a task may declare (7 days).
pub const TIMEOUT_LIMIT_SECONDS: u32 = 7 * 24 * 3600;

/// The outcome of [`Catalog::upsert_job`].
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpsert {
    /// The stored job.
    pub job: JobRecord,
    /// Whether this call created it (and its tasks).
    pub created: bool,
    /// Live attempts of a replaced incarnation (same name, other uid) that were cancelled; the
    /// caller should stop their runners.
    pub cancelled_attempts: Vec<CancelledAttempt>,
}

/// A live attempt that a cancellation retired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelledAttempt {
    /// Its task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: AttemptId,
    /// Who ran it.
    pub runner: Option<String>,
}

impl Catalog {
    /// Starts a [`SpecBatch`]: upserts that are stored together, in one transaction, or not at
    /// all.
    pub async fn begin_specs(&self) -> Result<SpecBatch> {
        Ok(SpecBatch { tx: self.pool.begin().await?, default_max_attempts: self.config.default_max_attempts })
    }

    /// Stores a dataset on its own; see [`SpecBatch::upsert_dataset`].
    pub async fn upsert_dataset(&self, spec: &DatasetSpec) -> Result<DatasetRecord> {
        let mut batch = self.begin_specs().await?;
        let record = batch.upsert_dataset(spec).await?;
        batch.commit().await?;
        Ok(record)
    }

    /// Stores a job and its tasks on their own; see [`SpecBatch::upsert_job`].
    pub async fn upsert_job(&self, spec: &JobSpec) -> Result<JobUpsert> {
        let mut batch = self.begin_specs().await?;
        let upsert = batch.upsert_job(spec).await?;
        batch.commit().await?;
        Ok(upsert)
    }

    /// Stores a standalone task on its own; see [`SpecBatch::upsert_standalone_task`].
    pub async fn upsert_standalone_task(&self, namespace: &str, tenant: &str, task: &TaskSpec) -> Result<TaskId> {
        let mut batch = self.begin_specs().await?;
        let id = batch.upsert_standalone_task(namespace, tenant, task).await?;
        batch.commit().await?;
        Ok(id)
    }
}

/// Upserts of declared resources stored in one transaction: [`SpecBatch::commit`] stores them
/// all, and dropping the batch (an error on the way, a lost connection) stores none. Each
/// upsert holds a lock on its name until the batch ends, and reads inside the batch
/// ([`SpecBatch::dataset_by_name`]) see what the batch stored so far.
pub struct SpecBatch {
    tx: Transaction<'static, Postgres>,
    default_max_attempts: u32,
}

impl std::fmt::Debug for SpecBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpecBatch").finish_non_exhaustive()
    }
}

impl SpecBatch {
    /// Stores everything upserted in this batch, atomically.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// The dataset named `namespace/name` as this batch sees it (its own upserts included).
    pub async fn dataset_by_name(&mut self, namespace: &str, name: &str) -> Result<DatasetRecord> {
        crate::reads::dataset_by_name_in(&mut *self.tx, namespace, name).await
    }

    /// Stores a dataset, or updates it when `generation` is newer or `uid` changed. Committed
    /// snapshots are kept across re-creation under the same name.
    ///
    /// Applying an unchanged resource again (every reconcile does) writes nothing and takes no
    /// id from the sequence: the row is looked up first, under a lock on the name that
    /// serialises concurrent appliers, and inserted only when it is missing (an
    /// `INSERT … ON CONFLICT` would take an id every time, even when it conflicts).
    pub async fn upsert_dataset(&mut self, spec: &DatasetSpec) -> Result<DatasetRecord> {
        validate_name("dataset", &spec.namespace, &spec.name)?;
        let schema = spec.schema.as_deref().map(|columns| Json(crate::commit::normalized(columns)));
        let tx = &mut self.tx;
        lock_name(tx, "dataset", &spec.namespace, &spec.name).await?;
        let select = format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE namespace = $1 AND name = $2");
        let existing = sqlx::query(&select).bind(&spec.namespace).bind(&spec.name).fetch_optional(&mut **tx).await?;
        let row = match existing {
            Some(row) => {
                let current = dataset_from_row(&row)?;
                if current.uid == spec.uid && current.generation >= spec.generation {
                    return Ok(current);
                }
                let sql = format!(
                    "UPDATE datasets SET uid = $3, generation = $4, tenant = $5, spec = $6, \
                         schema = coalesce($7, schema), updated_at = now() \
                     WHERE namespace = $1 AND name = $2 RETURNING {DATASET_COLUMNS}"
                );
                sqlx::query(&sql)
                    .bind(&spec.namespace)
                    .bind(&spec.name)
                    .bind(&spec.uid)
                    .bind(spec.generation)
                    .bind(&spec.tenant)
                    .bind(&spec.spec)
                    .bind(&schema)
                    .fetch_one(&mut **tx)
                    .await?
            }
            None => {
                let sql = format!(
                    "INSERT INTO datasets (namespace, name, uid, generation, tenant, spec, schema) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {DATASET_COLUMNS}"
                );
                sqlx::query(&sql)
                    .bind(&spec.namespace)
                    .bind(&spec.name)
                    .bind(&spec.uid)
                    .bind(spec.generation)
                    .bind(&spec.tenant)
                    .bind(&spec.spec)
                    .bind(&schema)
                    .fetch_one(&mut **tx)
                    .await?
            }
        };
        let record = dataset_from_row(&row)?;
        Ok(record)
    }

    /// Stores a job and creates its tasks. The task graph is validated (unique names, known
    /// dependencies, no cycles) and fixed when the job is first stored: later calls for the
    /// same uid only update the generation, spec and `max_parallel`. A job with the same name
    /// but another uid replaces the old incarnation, whose unfinished tasks are cancelled.
    pub async fn upsert_job(&mut self, spec: &JobSpec) -> Result<JobUpsert> {
        validate_name("job", &spec.namespace, &spec.name)?;
        let order = topological_order(
            spec.tasks.iter().map(|task| (task.name.as_str(), task.depends_on.iter().map(String::as_str))),
        )
        .map_err(|error| Error::Invalid { what: "job", message: error.to_string() })?;
        for task in &spec.tasks {
            validate_task(task)?;
        }

        let tx = &mut self.tx;
        // Concurrent appliers of the same job name take turns: each sees what the other stored.
        lock_name(tx, "job", &spec.namespace, &spec.name).await?;
        let mut cancelled_attempts = Vec::new();
        let replaced: Vec<i64> = sqlx::query_scalar(
            "UPDATE jobs SET deleted_at = now() \
             WHERE namespace = $1 AND name = $2 AND uid <> $3 AND deleted_at IS NULL RETURNING id",
        )
        .bind(&spec.namespace)
        .bind(&spec.name)
        .bind(&spec.uid)
        .fetch_all(&mut **tx)
        .await?;
        for old in replaced {
            cancelled_attempts.extend(cancel_job_in(tx, JobId(old), "job replaced by a new incarnation").await?);
        }

        // Look first, and insert only a job that is missing: an unchanged Job applied again
        // (every reconcile does) writes nothing and takes no id from the sequence.
        let select = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE uid = $1 FOR UPDATE");
        let existing = sqlx::query(&select).bind(&spec.uid).fetch_optional(&mut **tx).await?;
        let (job, created) = match existing {
            Some(row) => {
                let current = job_from_row(&row)?;
                if spec.generation > current.generation {
                    let sql = format!(
                        "UPDATE jobs SET generation = $2, spec = $3, max_parallel = $4 WHERE id = $1 \
                         RETURNING {JOB_COLUMNS}"
                    );
                    let row = sqlx::query(&sql)
                        .bind(current.id.0)
                        .bind(spec.generation)
                        .bind(&spec.spec)
                        .bind(spec.max_parallel.map(|cap| cap as i32))
                        .fetch_one(&mut **tx)
                        .await?;
                    (job_from_row(&row)?, false)
                } else {
                    (current, false)
                }
            }
            None => {
                let sql = format!(
                    "INSERT INTO jobs (namespace, name, uid, generation, tenant, spec, max_parallel) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {JOB_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(&spec.namespace)
                    .bind(&spec.name)
                    .bind(&spec.uid)
                    .bind(spec.generation)
                    .bind(&spec.tenant)
                    .bind(&spec.spec)
                    .bind(spec.max_parallel.map(|cap| cap as i32))
                    .fetch_one(&mut **tx)
                    .await?;
                (job_from_row(&row)?, true)
            }
        };

        if created {
            let by_name: std::collections::HashMap<&str, &TaskSpec> =
                spec.tasks.iter().map(|task| (task.name.as_str(), task)).collect();
            let ordered: Vec<&TaskSpec> = order.iter().map(|name| by_name[name]).collect();
            insert_tasks(tx, Some(job.id), &spec.namespace, &spec.tenant, &ordered, self.default_max_attempts).await?;
            let (dependents, dependencies): (Vec<&str>, Vec<&str>) = spec
                .tasks
                .iter()
                .flat_map(|task| task.depends_on.iter().map(move |dep| (task.name.as_str(), dep.as_str())))
                .unzip();
            sqlx::query(
                "UPDATE tasks t SET depends_on = d.ids FROM ( \
                     SELECT p.task_name, array_agg(dep.id ORDER BY dep.id) AS ids \
                     FROM unnest($2::text[], $3::text[]) AS p(task_name, dep_name) \
                     JOIN tasks dep ON dep.job_id = $1 AND dep.name = p.dep_name \
                     GROUP BY p.task_name) d \
                 WHERE t.job_id = $1 AND t.name = d.task_name",
            )
            .bind(job.id.0)
            .bind(&dependents)
            .bind(&dependencies)
            .execute(&mut **tx)
            .await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::TASKS_CHANNEL)
                .bind(job.id.0.to_string())
                .execute(&mut **tx)
                .await?;
        }
        Ok(JobUpsert { job, created, cancelled_attempts })
    }

    /// Stores a standalone task (a `Task` resource not owned by a job), keyed by namespace and
    /// name. An existing task is left as it is; one deleted with
    /// [`Catalog::delete_standalone_task`] no longer holds the name, so this stores a new task.
    pub async fn upsert_standalone_task(&mut self, namespace: &str, tenant: &str, task: &TaskSpec) -> Result<TaskId> {
        validate_name("task", namespace, &task.name)?;
        if !task.depends_on.is_empty() {
            return Err(Error::Invalid {
                what: "task",
                message: "a standalone task cannot depend on other tasks; put them in a Job".into(),
            });
        }
        validate_task(task)?;
        let tx = &mut self.tx;
        // Look first, under a lock on the name: an existing task takes no id from the
        // sequence, and concurrent appliers of the same name take turns.
        lock_name(tx, "task", namespace, &task.name).await?;
        let select =
            "SELECT id FROM tasks WHERE job_id IS NULL AND deleted_at IS NULL AND namespace = $1 AND name = $2";
        if let Some(id) =
            sqlx::query_scalar::<_, i64>(select).bind(namespace).bind(&task.name).fetch_optional(&mut **tx).await?
        {
            return Ok(TaskId(id));
        }
        insert_tasks(tx, None, namespace, tenant, &[task], self.default_max_attempts).await?;
        let id: i64 = sqlx::query_scalar(select).bind(namespace).bind(&task.name).fetch_one(&mut **tx).await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::TASKS_CHANNEL)
            .bind(id.to_string())
            .execute(&mut **tx)
            .await?;
        Ok(TaskId(id))
    }
}

impl Catalog {
    /// Cancels a job: its unfinished tasks become `Cancelled` and their live attempts are
    /// retired (their commits will be refused). Returns those attempts so their runners can be
    /// stopped. Idempotent.
    pub async fn cancel_job(&self, job: JobId, reason: &str) -> Result<Vec<CancelledAttempt>> {
        let mut tx = self.pool.begin().await?;
        let cancelled = cancel_job_in(&mut tx, job, reason).await?;
        tx.commit().await?;
        Ok(cancelled)
    }

    /// Cancels a job and marks it deleted (its history stays queryable by id).
    pub async fn delete_job(&self, job: JobId) -> Result<Vec<CancelledAttempt>> {
        let mut tx = self.pool.begin().await?;
        let cancelled = cancel_job_in(&mut tx, job, "job deleted").await?;
        sqlx::query("UPDATE jobs SET deleted_at = coalesce(deleted_at, now()) WHERE id = $1")
            .bind(job.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(cancelled)
    }

    /// Deletes the standalone task `namespace/name` (its `Task` resource was deleted): an
    /// unfinished task becomes `Cancelled` and its live attempt can no longer commit, and the
    /// name is freed, so a Task created again under it is a new task that runs afresh. The row
    /// and its attempts stay, queryable by id. Returns the cancelled attempts so their runners
    /// can be stopped. Idempotent: with no live task of that name it does nothing.
    pub async fn delete_standalone_task(&self, namespace: &str, name: &str) -> Result<Vec<CancelledAttempt>> {
        let mut tx = self.pool.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE job_id IS NULL AND deleted_at IS NULL AND namespace = $1 AND name = $2 \
             FOR UPDATE",
        )
        .bind(namespace)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else { return Ok(Vec::new()) };
        let cancelled = cancel_in(&mut tx, Scope::Task(TaskId(id)), "task deleted").await?;
        sqlx::query("UPDATE tasks SET deleted_at = clock_timestamp() WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(cancelled)
    }
}

/// The tasks a cancellation covers.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// Every task of a job.
    Job(JobId),
    /// One task.
    Task(TaskId),
}

async fn cancel_job_in(tx: &mut Transaction<'_, Postgres>, job: JobId, reason: &str) -> Result<Vec<CancelledAttempt>> {
    let cancelled = cancel_in(tx, Scope::Job(job), reason).await?;
    sqlx::query(
        "UPDATE jobs SET phase = 'Cancelled', finished_at = coalesce(finished_at, clock_timestamp()) \
         WHERE id = $1 AND phase NOT IN ('Succeeded', 'Failed', 'Cancelled')",
    )
    .bind(job.0)
    .execute(&mut **tx)
    .await?;
    Ok(cancelled)
}

/// Retires the live attempts of the tasks in `scope` and makes their unfinished tasks
/// `Cancelled`.
async fn cancel_in(tx: &mut Transaction<'_, Postgres>, scope: Scope, reason: &str) -> Result<Vec<CancelledAttempt>> {
    let (filter, id) = match scope {
        Scope::Job(job) => ("t.job_id = $1", job.0),
        Scope::Task(task) => ("t.id = $1", task.0),
    };
    let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(&format!(
        "UPDATE attempts a SET state = 'Cancelled', finished_at = clock_timestamp(), \
             error_code = 'cancelled', error_message = $2 \
         FROM tasks t WHERE {filter} AND a.task_id = t.id AND a.state IN ('Leased', 'Running') \
         RETURNING a.task_id, a.id, a.runner"
    ))
    .bind(id)
    .bind(reason)
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query(&format!(
        "UPDATE tasks t SET phase = 'Cancelled', finished_at = clock_timestamp(), updated_at = clock_timestamp(), \
             next_retry_at = NULL, last_error_code = 'cancelled', last_error_message = $2 \
         WHERE {filter} AND t.phase NOT IN ('Succeeded', 'Failed', 'Cancelled')"
    ))
    .bind(id)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(task, attempt, runner)| CancelledAttempt { task: TaskId(task), attempt: AttemptId(attempt), runner })
        .collect())
}

async fn insert_tasks(
    tx: &mut Transaction<'_, Postgres>,
    job: Option<JobId>,
    namespace: &str,
    tenant: &str,
    tasks: &[&TaskSpec],
    default_max_attempts: u32,
) -> Result<()> {
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    let kinds: Vec<&str> = tasks.iter().map(|t| t.kind.as_str()).collect();
    let specs: Vec<String> = tasks.iter().map(|t| t.spec.to_string()).collect();
    let max_attempts: Vec<i32> = tasks.iter().map(|t| t.max_attempts.unwrap_or(default_max_attempts) as i32).collect();
    let timeouts: Vec<Option<i32>> = tasks.iter().map(|t| t.timeout_seconds.map(|s| s as i32)).collect();
    let outputs: Vec<Option<i64>> = tasks.iter().map(|t| t.output.map(|o| o.dataset.0)).collect();
    let modes: Vec<Option<&str>> = tasks.iter().map(|t| t.output.map(|o| o.mode.as_str())).collect();
    let conflict = if job.is_some() {
        "ON CONFLICT (job_id, name) WHERE job_id IS NOT NULL DO NOTHING"
    } else {
        "ON CONFLICT (namespace, name) WHERE job_id IS NULL AND deleted_at IS NULL DO NOTHING"
    };
    let sql = format!(
        "INSERT INTO tasks (job_id, namespace, tenant, name, kind, spec, max_attempts, timeout_seconds, \
                            output_dataset_id, output_mode) \
         SELECT $1, $2, $3, u.name, u.kind, u.spec::jsonb, u.max_attempts, u.timeout, u.output, u.mode \
         FROM unnest($4::text[], $5::text[], $6::text[], $7::int4[], $8::int4[], $9::int8[], $10::text[]) \
             WITH ORDINALITY AS u(name, kind, spec, max_attempts, timeout, output, mode, position) \
         ORDER BY u.position {conflict}"
    );
    let result = sqlx::query(&sql)
        .bind(job.map(|j| j.0))
        .bind(namespace)
        .bind(tenant)
        .bind(&names)
        .bind(&kinds)
        .bind(&specs)
        .bind(&max_attempts)
        .bind(&timeouts)
        .bind(&outputs)
        .bind(&modes)
        .execute(&mut **tx)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23503") => Err(Error::Invalid {
            what: "task",
            message: "a task's output dataset does not exist in the catalog".into(),
        }),
        Err(other) => Err(other.into()),
    }
}

/// Serialises, until `tx` ends, every upsert of the `what` named `namespace/name` (a
/// transaction-scoped advisory lock on a hash of the name; a collision with another name only
/// makes two upserts take turns).
async fn lock_name(tx: &mut Transaction<'_, Postgres>, what: &str, namespace: &str, name: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("duckmesh:{what}:{namespace}/{name}"))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn validate_name(what: &'static str, namespace: &str, name: &str) -> Result<()> {
    let valid = |value: &str| {
        !value.is_empty()
            && value.len() <= 253
            && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_')
    };
    if valid(namespace) && valid(name) {
        Ok(())
    } else {
        Err(Error::Invalid {
            what,
            message: format!(
                "{namespace:?}/{name:?}: names must be 1-253 characters of lower-case letters, digits, '-', '.' or '_'"
            ),
        })
    }
}

fn validate_task(task: &TaskSpec) -> Result<()> {
    if task.name.is_empty() || task.name.len() > 253 {
        return Err(Error::Invalid {
            what: "task",
            message: format!("task name {:?} must be 1-253 characters", task.name),
        });
    }
    if task.max_attempts.is_some_and(|n| !(1..=MAX_ATTEMPTS_LIMIT).contains(&n)) {
        return Err(Error::Invalid {
            what: "task",
            message: format!("task {:?}: maxAttempts must be between 1 and {MAX_ATTEMPTS_LIMIT}", task.name),
        });
    }
    if task.timeout_seconds.is_some_and(|s| !(1..=TIMEOUT_LIMIT_SECONDS).contains(&s)) {
        return Err(Error::Invalid {
            what: "task",
            message: format!("task {:?}: timeoutSeconds must be between 1 and {TIMEOUT_LIMIT_SECONDS}", task.name),
        });
    }
    Ok(())
}
