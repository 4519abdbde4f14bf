//! The catalog's errors, each with a stable `error_code()` and a retry classification.

use duckmesh_core::{AttemptId, DatasetId, Fence, TaskId, UnknownPhase};

/// Everything that can go wrong in a catalog call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be reached or failed mid-call; usually worth retrying.
    #[error("catalog database error: {source}")]
    Database {
        /// The driver's error.
        #[from]
        source: sqlx::Error,
    },
    /// The database server could not be reached at start-up.
    #[error("cannot reach the catalog database at {target}: {source}")]
    Unreachable {
        /// `host:port/database`, without credentials.
        target: String,
        /// The connection error.
        #[source]
        source: sqlx::Error,
    },
    /// Applying the embedded migrations failed.
    #[error("catalog migration failed: {source}")]
    Migrate {
        /// The migrator's error.
        #[from]
        source: sqlx::migrate::MigrateError,
    },
    /// The attempt no longer holds the task's fence: a newer attempt superseded it.
    #[error("attempt {attempt} holds stale fence {presented} (task {task} is now at fence {current})")]
    StaleFence {
        /// The attempt that tried to act.
        attempt: AttemptId,
        /// Its task.
        task: TaskId,
        /// The fence it presented.
        presented: Fence,
        /// The task's current fence.
        current: Fence,
    },
    /// The attempt's lease ran out before it heartbeated or committed.
    #[error("the lease of attempt {attempt} expired at {expired_at}")]
    LeaseExpired {
        /// The attempt.
        attempt: AttemptId,
        /// When its lease ran out.
        expired_at: chrono::DateTime<chrono::Utc>,
    },
    /// The attempt already finished (succeeded, failed, expired or cancelled).
    #[error("attempt {attempt} is {state}, not live")]
    AttemptNotActive {
        /// The attempt.
        attempt: AttemptId,
        /// Its state.
        state: String,
    },
    /// The database holds a migration this build does not know: a newer DuckMesh migrated it.
    #[error(
        "the catalog has migration {version} ({description}) that this build does not know: it was migrated by a newer DuckMesh"
    )]
    SchemaTooNew {
        /// The unknown migration's version.
        version: i64,
        /// Its description.
        description: String,
    },
    /// A referenced object does not exist.
    #[error("{what} not found")]
    NotFound {
        /// A description such as `dataset default/trips`.
        what: String,
    },
    /// A spec or request is malformed (bad DAG, unknown dataset, wrong output…).
    #[error("invalid {what}: {message}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// A task names, or tries to commit into, a dataset of another tenant or namespace
    /// (SPEC §2.10).
    #[error(
        "dataset {dataset} belongs to tenant {dataset_tenant:?} in namespace {dataset_namespace:?}, \
         not to the task's tenant {tenant:?} in namespace {namespace:?}"
    )]
    CrossTenant {
        /// The dataset.
        dataset: DatasetId,
        /// Its tenant.
        dataset_tenant: String,
        /// Its namespace.
        dataset_namespace: String,
        /// The task's tenant.
        tenant: String,
        /// The task's namespace.
        namespace: String,
    },
    /// The files of an append do not match the dataset's columns.
    #[error("schema of dataset {dataset} does not match the commit: {message}")]
    SchemaMismatch {
        /// The dataset.
        dataset: DatasetId,
        /// Which columns differ.
        message: String,
    },
    /// Emergency read-only mode is on: ingest and commits are refused until it is turned off.
    #[error("the catalog is in emergency read-only mode{}", reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    ReadOnly {
        /// Why it was turned on, as its operator wrote it.
        reason: Option<String>,
    },
    /// The dataset's ingest buffer holds as many pending events as it may.
    #[error("the ingest buffer of dataset {dataset} is full ({pending} pending events, limit {limit})")]
    BufferFull {
        /// The dataset.
        dataset: DatasetId,
        /// Pending events counted (up to the limit).
        pending: i64,
        /// The limit.
        limit: i64,
    },
    /// An ingest batch's claim was lost (it expired and the events may be claimed by another
    /// coordinator): the batch must not commit.
    #[error("the claim with fence {fence} on ingest events of dataset {dataset} was lost")]
    ClaimLost {
        /// The dataset.
        dataset: DatasetId,
        /// The claim's fence.
        fence: Fence,
    },
    /// The catalog holds a value this version does not understand.
    #[error("corrupt catalog row: {0}")]
    Corrupt(String),
    /// A compaction lost a race: a file it replaces is no longer live. Nothing was written;
    /// compacting again on the new state may succeed.
    #[error("compaction of dataset {dataset} conflicts: {message}")]
    CompactionConflict {
        /// The dataset.
        dataset: duckmesh_core::DatasetId,
        /// What changed underneath it.
        message: String,
    },
    /// A catalog rebuild was pointed at a catalog that already holds datasets.
    #[error(
        "the catalog is not empty ({datasets} dataset(s)): a rebuild restores into a freshly migrated, empty catalog only"
    )]
    NotEmpty {
        /// Datasets found.
        datasets: i64,
    },
}

impl From<UnknownPhase> for Error {
    fn from(error: UnknownPhase) -> Self {
        Self::Corrupt(error.to_string())
    }
}

impl Error {
    /// The code of [`Error::ReadOnly`], which runners report back in a
    /// [`Failure`](crate::Failure) when the switch refused their commit.
    pub const READ_ONLY_CODE: &'static str = "read_only";

    /// A stable code for logs, API responses and metric labels.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Database { .. } | Self::Unreachable { .. } => "catalog_unavailable",
            Self::Migrate { .. } => "catalog_migration_failed",
            Self::SchemaTooNew { .. } => "catalog_schema_too_new",
            Self::StaleFence { .. } => "stale_fence",
            Self::LeaseExpired { .. } => "lease_expired",
            Self::AttemptNotActive { .. } => "attempt_not_active",
            Self::NotFound { .. } => "not_found",
            Self::Invalid { .. } => "invalid_spec",
            Self::SchemaMismatch { .. } => "schema_mismatch",
            Self::CrossTenant { .. } => "cross_tenant_dataset",
            Self::ReadOnly { .. } => Self::READ_ONLY_CODE,
            Self::BufferFull { .. } => "ingest_buffer_full",
            Self::ClaimLost { .. } => "claim_lost",
            Self::Corrupt(_) => "catalog_corrupt",
            Self::CompactionConflict { .. } => "compaction_conflict",
            Self::NotEmpty { .. } => "catalog_not_empty",
        }
    }

    /// Whether the same call may succeed if retried later (connection loss, serialization
    /// conflicts, a restarting server). Fencing errors are final: the attempt must stop.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Database { source } => is_transient(source),
            // Refusals that lift by themselves: the switch is turned off, the buffer drains.
            Self::Unreachable { .. } | Self::ReadOnly { .. } | Self::BufferFull { .. } => true,
            // The state it raced changes no more: compacting it again may succeed.
            Self::CompactionConflict { .. } => true,
            _ => false,
        }
    }

    /// Whether the error means the attempt lost its right to act (it must stop at once).
    pub fn is_fencing(&self) -> bool {
        matches!(self, Self::StaleFence { .. } | Self::LeaseExpired { .. } | Self::AttemptNotActive { .. })
    }
}

fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exceptions; 40001/40P01: serialization failure, deadlock;
            // 53: insufficient resources; 57P0x: admin shutdown, crash, cannot connect now;
            // 55P03: lock not available.
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(&*code, "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "55P03")
        }),
        _ => false,
    }
}

/// `Result` with the catalog's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_classes() {
        let stale =
            Error::StaleFence { attempt: AttemptId(1), task: TaskId(2), presented: Fence(3), current: Fence(4) };
        assert_eq!(stale.error_code(), "stale_fence");
        assert!(stale.is_fencing());
        assert!(!stale.is_retryable());
        let pool = Error::from(sqlx::Error::PoolTimedOut);
        assert_eq!(pool.error_code(), "catalog_unavailable");
        assert!(pool.is_retryable());
        assert!(!pool.is_fencing());
        let decode = Error::from(sqlx::Error::RowNotFound);
        assert!(!decode.is_retryable());
        let mismatch = Error::SchemaMismatch { dataset: DatasetId(1), message: "x".into() };
        assert_eq!(mismatch.error_code(), "schema_mismatch");
        assert!(!mismatch.is_retryable());
        let read_only = Error::ReadOnly { reason: Some("drill".into()) };
        assert_eq!(read_only.error_code(), "read_only");
        assert!(read_only.is_retryable() && !read_only.is_fencing());
        assert!(read_only.to_string().contains("drill"));
        let foreign = Error::CrossTenant {
            dataset: DatasetId(3),
            dataset_tenant: "globex".into(),
            dataset_namespace: "default".into(),
            tenant: "default".into(),
            namespace: "default".into(),
        };
        assert_eq!(foreign.error_code(), "cross_tenant_dataset");
        assert!(!foreign.is_retryable() && !foreign.is_fencing());
        let lost = Error::ClaimLost { dataset: DatasetId(1), fence: Fence(2) };
        assert_eq!(lost.error_code(), "claim_lost");
        assert!(!lost.is_retryable());
    }
}
