//! Storage and maintenance metrics, registered by every process because alerts and the
//! dashboard read them: compaction, GC and integrity runs (SPEC §6; maintenance runners record
//! each finished run in the catalog, and the scheduler that serves `/metrics` counts them
//! here) and object store requests (counted by `duckmesh-storage`'s retry layer, which has no
//! telemetry dependency; a holder of the store feeds its totals to
//! [`StorageMetrics::observe_object_store_totals`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

crate::label_values! {
    /// Outcome of a maintenance run (compaction, GC, integrity).
    RunResult {
        /// Completed and changed or verified something.
        Succeeded => "succeeded",
        /// Completed with nothing to do.
        Noop => "noop",
        /// Completed and found problems (integrity only).
        IssuesFound => "issues_found",
        /// Did not complete.
        Failed => "failed",
    }
}

crate::label_values! {
    /// What a GC deletion removed.
    GcKind {
        /// Committed files no retained snapshot references, past retention.
        Unreferenced => "unreferenced",
        /// Uncommitted attempt staging files older than 7 days.
        Staging => "staging",
        /// Exported query results past retention.
        QueryExport => "query_export",
    }
}

crate::label_values! {
    /// Object store operation, as counted by `duckmesh-storage`'s retry layer.
    ObjectStoreOperation {
        /// Single-request upload.
        PutObject => "put_object",
        /// Start of a multipart upload.
        CreateMultipartUpload => "create_multipart_upload",
        /// Upload of one part.
        UploadPart => "upload_part",
        /// Completion of a multipart upload.
        CompleteMultipartUpload => "complete_multipart_upload",
        /// Abort of a failed multipart upload.
        AbortMultipartUpload => "abort_multipart_upload",
        /// Download (whole object, range, or to a file).
        GetObject => "get_object",
        /// Metadata lookup.
        HeadObject => "head_object",
        /// One page of a listing.
        ListObjects => "list_objects",
        /// Delete.
        DeleteObject => "delete_object",
    }
}

crate::label_values! {
    /// What became of one object store request.
    ObjectStoreResult {
        /// Succeeded.
        Ok => "ok",
        /// Failed transiently and was retried.
        Retried => "retried",
        /// Failed, and the operation gave up (permanent error or retry budget spent).
        Failed => "failed",
    }
}

/// `{result}` for maintenance runs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunResultLabels {
    /// Outcome.
    pub result: RunResult,
}

/// `{kind}` for GC deletions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GcKindLabels {
    /// What was deleted.
    pub kind: GcKind,
}

/// `{operation, result}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectStoreRequestLabels {
    /// Operation.
    pub operation: ObjectStoreOperation,
    /// Outcome.
    pub result: ObjectStoreResult,
}

/// `{operation}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectStoreOperationLabels {
    /// Operation.
    pub operation: ObjectStoreOperation,
}

/// SPEC §6 storage and maintenance metrics, plus object store request accounting.
#[derive(Clone, Debug)]
pub struct StorageMetrics {
    /// `duckmesh_compaction_runs_total{result}`
    pub compaction_runs: Family<RunResultLabels, Counter>,
    /// `duckmesh_compaction_bytes_rewritten_total`
    pub compaction_bytes_rewritten: Counter,
    /// `duckmesh_gc_runs_total{result}` (our addition)
    pub gc_runs: Family<RunResultLabels, Counter>,
    /// `duckmesh_gc_files_deleted_total{kind}`
    pub gc_files_deleted: Family<GcKindLabels, Counter>,
    /// `duckmesh_integrity_runs_total{result}`
    pub integrity_runs: Family<RunResultLabels, Counter>,
    /// `duckmesh_integrity_files_checked_total`
    pub integrity_files_checked: Counter,
    /// `duckmesh_integrity_missing_files_total`
    pub integrity_missing_files: Counter,
    /// `duckmesh_integrity_size_mismatch_files_total`
    pub integrity_size_mismatch_files: Counter,
    /// `duckmesh_object_store_requests_total{operation, result}`: requests sent, each
    /// counted once as ok, retried or failed.
    pub object_store_requests: Family<ObjectStoreRequestLabels, Counter>,
    /// `duckmesh_object_store_retries_total{operation}`
    pub object_store_retries: Family<ObjectStoreOperationLabels, Counter>,
}

impl StorageMetrics {
    /// Registers the metrics in `registry` (the process registry's first sub-registry) with
    /// every enum-labelled series at zero.
    pub(crate) fn register_in(registry: &mut Registry) -> Self {
        let storage = StorageMetrics {
            compaction_runs: Family::default(),
            compaction_bytes_rewritten: Counter::default(),
            gc_runs: Family::default(),
            gc_files_deleted: Family::default(),
            integrity_runs: Family::default(),
            integrity_files_checked: Counter::default(),
            integrity_missing_files: Counter::default(),
            integrity_size_mismatch_files: Counter::default(),
            object_store_requests: Family::default(),
            object_store_retries: Family::default(),
        };
        registry.register("compaction_runs", "Compaction runs by result", storage.compaction_runs.clone());
        registry.register(
            "compaction_bytes_rewritten",
            "Bytes rewritten by compaction",
            storage.compaction_bytes_rewritten.clone(),
        );
        registry.register("gc_runs", "GC runs by result", storage.gc_runs.clone());
        registry.register("gc_files_deleted", "Files deleted by GC, by kind", storage.gc_files_deleted.clone());
        registry.register("integrity_runs", "Integrity check runs by result", storage.integrity_runs.clone());
        registry.register(
            "integrity_files_checked",
            "Committed files verified by integrity checks",
            storage.integrity_files_checked.clone(),
        );
        registry.register(
            "integrity_missing_files",
            "Committed files found missing from object storage",
            storage.integrity_missing_files.clone(),
        );
        registry.register(
            "integrity_size_mismatch_files",
            "Committed files whose object size differs from the catalog",
            storage.integrity_size_mismatch_files.clone(),
        );
        registry.register(
            "object_store_requests",
            "Object store requests by operation and result",
            storage.object_store_requests.clone(),
        );
        registry.register(
            "object_store_retries",
            "Object store requests retried, by operation",
            storage.object_store_retries.clone(),
        );

        for &result in RunResult::ALL {
            let labels = RunResultLabels { result };
            let _ = storage.compaction_runs.get_or_create(&labels);
            let _ = storage.gc_runs.get_or_create(&labels);
            let _ = storage.integrity_runs.get_or_create(&labels);
        }
        for &kind in GcKind::ALL {
            let _ = storage.gc_files_deleted.get_or_create(&GcKindLabels { kind });
        }
        for &operation in ObjectStoreOperation::ALL {
            for &result in ObjectStoreResult::ALL {
                let _ = storage.object_store_requests.get_or_create(&ObjectStoreRequestLabels { operation, result });
            }
            let _ = storage.object_store_retries.get_or_create(&ObjectStoreOperationLabels { operation });
        }
        storage
    }

    /// Advances the object store counters of `operation` to cumulative totals read from the
    /// storage layer (requests sent including retries, requests retried, operations that
    /// gave up). Call it periodically or before a scrape; totals that went backwards (a
    /// restarted counter source) are ignored.
    pub fn observe_object_store_totals(
        &self,
        operation: ObjectStoreOperation,
        requests: u64,
        retries: u64,
        failures: u64,
    ) {
        let ok = requests.saturating_sub(retries).saturating_sub(failures);
        for (result, total) in
            [(ObjectStoreResult::Ok, ok), (ObjectStoreResult::Retried, retries), (ObjectStoreResult::Failed, failures)]
        {
            let counter = self.object_store_requests.get_or_create(&ObjectStoreRequestLabels { operation, result });
            advance_to(&counter, total);
        }
        let retried = self.object_store_retries.get_or_create(&ObjectStoreOperationLabels { operation });
        advance_to(&retried, retries);
    }
}

/// Raises a counter to `total` if it is below it.
fn advance_to(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metrics;

    #[test]
    fn object_store_totals_advance_monotonically() {
        let metrics = Metrics::new();
        metrics.storage.observe_object_store_totals(ObjectStoreOperation::PutObject, 10, 2, 1);
        metrics.storage.observe_object_store_totals(ObjectStoreOperation::PutObject, 12, 3, 1);
        // A counter source that restarted is ignored rather than making counters go down.
        metrics.storage.observe_object_store_totals(ObjectStoreOperation::PutObject, 1, 0, 0);
        let text = metrics.encode();
        for line in [
            "duckmesh_object_store_requests_total{operation=\"put_object\",result=\"ok\"} 8",
            "duckmesh_object_store_requests_total{operation=\"put_object\",result=\"retried\"} 3",
            "duckmesh_object_store_requests_total{operation=\"put_object\",result=\"failed\"} 1",
            "duckmesh_object_store_retries_total{operation=\"put_object\"} 3",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
    }
}
