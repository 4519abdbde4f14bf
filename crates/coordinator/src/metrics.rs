//! The ingest coordinator's metrics (SPEC §6 coordinator and freshness: claims, batch
//! commits, visibility lag and tokens), registered in a sub-registry of the process registry
//! (`duckmesh_telemetry::Metrics`).

use std::sync::atomic::AtomicI64;

use duckmesh_telemetry::metrics::latency_ms_histogram;
use duckmesh_telemetry::{ComponentMetrics, Metrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

duckmesh_telemetry::label_values! {
    /// Why a coordinator claim was retried.
    ClaimRetryReason {
        /// `SKIP LOCKED` found the rows taken, or a serialization failure.
        Contention => "contention",
        /// The coordinator's claim lease was lost before commit.
        LeaseLost => "lease_lost",
        /// The catalog was unreachable or returned an error.
        CatalogError => "catalog_error",
    }
}

duckmesh_telemetry::label_values! {
    /// Why a snapshot commit failed.
    PublishFailureReason {
        /// The attempt's fencing token was superseded: a stale attempt was stopped, as it must be.
        FenceRejected => "fence_rejected",
        /// The attempt's lease expired before the commit transaction.
        LeaseExpired => "lease_expired",
        /// A concurrent commit changed the dataset's head (optimistic check failed).
        Conflict => "conflict",
        /// The catalog transaction failed (connection, timeout, constraint).
        CatalogError => "catalog_error",
        /// Staged files or the manifest could not be written or verified.
        ObjectStoreError => "object_store_error",
        /// Refused because emergency read-only mode is on.
        ReadOnly => "read_only",
    }
}

duckmesh_telemetry::label_values! {
    /// Why ingest records were dead-lettered (the dead-letter error code, docs/ingest.md).
    DeadLetterReason {
        /// A value does not convert exactly to its column's type (`conversion_failed`).
        ConversionFailed => "conversion_failed",
        /// The dataset declares no schema (`dataset_schema_missing`).
        SchemaMissing => "dataset_schema_missing",
        /// The dataset's schema names a type DuckDB does not know (`invalid_dataset_schema`).
        InvalidSchema => "invalid_dataset_schema",
        /// The dataset's spec (partitioning, file size) is unusable (`invalid_dataset_spec`).
        InvalidDatasetSpec => "invalid_dataset_spec",
        /// The records ran out of claims: coordinators kept dying on them
        /// (`claim_attempts_exhausted`).
        ClaimsExhausted => "claim_attempts_exhausted",
        /// Any other code.
        Other => "other",
    }
}

impl DeadLetterReason {
    /// The reason of a dead-letter error code.
    pub fn from_code(code: &str) -> Self {
        Self::ALL.iter().copied().find(|reason| reason.as_str() == code).unwrap_or(Self::Other)
    }
}

/// `{reason}` for dead-lettered ingest records.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    /// Why the records were parked.
    pub reason: DeadLetterReason,
}

/// `{reason}` for snapshot publish failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishFailureLabels {
    /// Why the commit failed.
    pub reason: PublishFailureReason,
}

/// `{reason}` for claim retries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimRetryLabels {
    /// Why the claim was retried.
    pub reason: ClaimRetryReason,
}

/// SPEC §6 freshness metrics the coordinator measures.
#[derive(Clone, Debug)]
pub struct FreshnessMetrics {
    /// `duckmesh_visibility_lag_ms`: on each coordinator tick, age of the oldest acked
    /// event not yet visible (0 when caught up).
    pub visibility_lag_ms: Histogram,
    /// `duckmesh_latest_visibility_token`: highest visibility token this process published.
    pub latest_visibility_token: Gauge<i64, AtomicI64>,
    /// `duckmesh_write_to_visible_latency_ms`: per committed event, ack to visible.
    pub write_to_visible_latency_ms: Histogram,
    /// `duckmesh_ingest_lag_events`: acked events not yet in a committed snapshot.
    pub ingest_lag_events: Gauge<i64, AtomicI64>,
}

/// SPEC §6 coordinator metrics.
#[derive(Clone, Debug)]
pub struct BatchMetrics {
    /// `duckmesh_claim_batch_size`: events per claimed ingest batch.
    pub claim_batch_size: Histogram,
    /// `duckmesh_claim_retries_total{reason}`
    pub claim_retries: Family<ClaimRetryLabels, Counter>,
    /// `duckmesh_commit_batch_latency_ms`: claim to committed snapshot, per batch.
    pub commit_batch_latency_ms: Histogram,
    /// `duckmesh_snapshot_publish_failures_total{reason}`
    pub snapshot_publish_failures: Family<PublishFailureLabels, Counter>,
    /// `duckmesh_ingest_dead_letters_total{reason}`: ingest records parked in the dead-letter
    /// table by this process (a replayed record parked again counts again).
    pub dead_letters: Family<DeadLetterLabels, Counter>,
}

/// Everything the coordinator records. Cheap to clone: all handles share the same
/// underlying series.
#[derive(Clone, Debug)]
pub struct CoordinatorMetrics {
    /// `duckmesh_read_only_mode`, the process-wide gauge the query API sets too.
    pub read_only_mode: Gauge,
    /// Freshness metrics.
    pub freshness: FreshnessMetrics,
    /// Claim and commit metrics.
    pub batches: BatchMetrics,
}

impl ComponentMetrics for CoordinatorMetrics {
    fn register(registry: &mut Registry, process: &Metrics) -> Self {
        let metrics = CoordinatorMetrics {
            read_only_mode: process.read_only_mode().clone(),
            freshness: FreshnessMetrics {
                visibility_lag_ms: latency_ms_histogram(),
                latest_visibility_token: Gauge::default(),
                write_to_visible_latency_ms: latency_ms_histogram(),
                ingest_lag_events: Gauge::default(),
            },
            batches: BatchMetrics {
                claim_batch_size: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
                claim_retries: Family::default(),
                commit_batch_latency_ms: latency_ms_histogram(),
                snapshot_publish_failures: Family::default(),
                dead_letters: Family::default(),
            },
        };

        let freshness = &metrics.freshness;
        registry.register(
            "visibility_lag_ms",
            "Milliseconds the oldest acknowledged but not yet visible event has waited, sampled per coordinator tick",
            freshness.visibility_lag_ms.clone(),
        );
        registry.register(
            "latest_visibility_token",
            "Highest visibility token published by this process",
            freshness.latest_visibility_token.clone(),
        );
        registry.register(
            "write_to_visible_latency_ms",
            "Milliseconds from ingest acknowledgement to the event being visible in a committed snapshot",
            freshness.write_to_visible_latency_ms.clone(),
        );
        registry.register(
            "ingest_lag_events",
            "Acknowledged ingest events not yet in a committed snapshot",
            freshness.ingest_lag_events.clone(),
        );

        let batches = &metrics.batches;
        registry.register(
            "claim_batch_size",
            "Ingest events per batch claimed by a coordinator",
            batches.claim_batch_size.clone(),
        );
        registry.register(
            "claim_retries",
            "Coordinator batch claims retried, by reason",
            batches.claim_retries.clone(),
        );
        registry.register(
            "commit_batch_latency_ms",
            "Milliseconds from batch claim to committed snapshot",
            batches.commit_batch_latency_ms.clone(),
        );
        registry.register(
            "snapshot_publish_failures",
            "Snapshot commits that failed, by reason",
            batches.snapshot_publish_failures.clone(),
        );
        registry.register(
            "ingest_dead_letters",
            "Ingest records parked in the dead-letter table, by reason (error code)",
            batches.dead_letters.clone(),
        );

        // Every series at zero, so rates start from a real baseline.
        for &reason in PublishFailureReason::ALL {
            let _ = batches.snapshot_publish_failures.get_or_create(&PublishFailureLabels { reason });
        }
        for &reason in DeadLetterReason::ALL {
            let _ = batches.dead_letters.get_or_create(&DeadLetterLabels { reason });
        }
        for &reason in ClaimRetryReason::ALL {
            let _ = batches.claim_retries.get_or_create(&ClaimRetryLabels { reason });
        }
        metrics
    }
}

impl CoordinatorMetrics {
    /// The coordinator's metrics in `metrics`' registry (registered on first use).
    pub fn new(metrics: &Metrics) -> Self {
        metrics.component()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histograms_have_the_slo_buckets() {
        let metrics = Metrics::new();
        let _ = CoordinatorMetrics::new(&metrics);
        let text = metrics.encode();
        let line = "duckmesh_write_to_visible_latency_ms_bucket{le=\"3000.0\"} 0";
        assert!(text.contains(line), "missing {line}");
        assert!(text.contains("duckmesh_claim_retries_total{reason=\"lease_lost\"} 0"), "{text}");
        assert!(text.contains("duckmesh_ingest_dead_letters_total{reason=\"conversion_failed\"} 0"), "{text}");
    }

    #[test]
    fn dead_letter_codes_map_to_their_reason() {
        assert_eq!(DeadLetterReason::from_code(crate::convert::CONVERSION_FAILED), DeadLetterReason::ConversionFailed);
        assert_eq!(DeadLetterReason::from_code(crate::convert::SCHEMA_MISSING), DeadLetterReason::SchemaMissing);
        assert_eq!(DeadLetterReason::from_code(crate::convert::INVALID_SCHEMA), DeadLetterReason::InvalidSchema);
        assert_eq!(
            DeadLetterReason::from_code(crate::convert::INVALID_DATASET_SPEC),
            DeadLetterReason::InvalidDatasetSpec
        );
        assert_eq!(DeadLetterReason::from_code("claim_attempts_exhausted"), DeadLetterReason::ClaimsExhausted);
        assert_eq!(DeadLetterReason::from_code("something_new"), DeadLetterReason::Other);
    }
}
