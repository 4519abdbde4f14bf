//! `GET /v1/integrity`: the latest integrity run (catalog against bucket, recorded by the
//! `integrity` maintenance task or `duckmesh integrity`) of each of the caller tenant's
//! datasets in a namespace.

use crate::auth::Principal;
use crate::error::Result;
use crate::model::{IntegrityCountsInfo, IntegrityInfo, IntegrityList, IntegrityProblemInfo};
use crate::service::QueryService;
use duckmesh_catalog::IntegrityRun;

/// Problems listed per dataset unless the caller asks for another number.
pub const DEFAULT_PROBLEMS: usize = 20;

impl QueryService {
    /// The latest run of each dataset of `principal`'s tenant in `namespace` (default: the
    /// service's), with at most `problems` problems each.
    pub async fn integrity(
        &self,
        principal: &Principal,
        namespace: Option<&str>,
        problems: Option<usize>,
    ) -> Result<IntegrityList> {
        let namespace = namespace.unwrap_or(&self.config().namespace).to_owned();
        let limit = problems.unwrap_or(DEFAULT_PROBLEMS);
        if limit > duckmesh_catalog::INTEGRITY_PROBLEMS_KEPT {
            return Err(crate::error::Error::InvalidRequest {
                message: format!("limit must be at most {}", duckmesh_catalog::INTEGRITY_PROBLEMS_KEPT),
            });
        }
        let runs = self.catalog().latest_integrity_runs(&principal.tenant, &namespace).await?;
        Ok(IntegrityList { namespace, datasets: runs.into_iter().map(|run| info(run, limit)).collect() })
    }
}

fn info(run: IntegrityRun, limit: usize) -> IntegrityInfo {
    let counts = run.counts;
    IntegrityInfo {
        clean: counts.is_clean(),
        namespace: run.namespace,
        name: run.name,
        run_id: run.id,
        started_at: run.started_at,
        finished_at: run.finished_at,
        verify_hashes: run.verify_hashes,
        counts: IntegrityCountsInfo {
            snapshots_checked: counts.snapshots_checked,
            files_checked: counts.files_checked,
            bytes_checked: counts.bytes_checked,
            missing_files: counts.missing_files,
            size_mismatch_files: counts.size_mismatch_files,
            hash_mismatch_files: counts.hash_mismatch_files,
            manifest_problems: counts.manifest_problems,
            orphan_files: counts.orphan_files,
        },
        problems: run
            .problems
            .into_iter()
            .take(limit)
            .map(|problem| IntegrityProblemInfo {
                kind: problem.kind.as_str().to_owned(),
                path: problem.path,
                detail: problem.detail,
            })
            .collect(),
    }
}
