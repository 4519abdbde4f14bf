-- Integrity runs: the catalog <-> bucket check of one dataset (SPEC §4 GET /v1/integrity, the
-- integrity maintenance task). One row per run, with its counts and the first problems found;
-- the latest run per dataset is what the API shows and the metrics count.
CREATE TABLE integrity_runs (
    id                  bigserial   PRIMARY KEY,
    dataset_id          bigint      NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    verify_hashes       boolean     NOT NULL,
    snapshots_checked   bigint      NOT NULL CHECK (snapshots_checked >= 0),
    files_checked       bigint      NOT NULL CHECK (files_checked >= 0),
    bytes_checked       bigint      NOT NULL CHECK (bytes_checked >= 0),
    missing_files       bigint      NOT NULL CHECK (missing_files >= 0),
    size_mismatch_files bigint      NOT NULL CHECK (size_mismatch_files >= 0),
    hash_mismatch_files bigint      NOT NULL CHECK (hash_mismatch_files >= 0),
    manifest_problems   bigint      NOT NULL CHECK (manifest_problems >= 0),
    orphan_files        bigint      NOT NULL CHECK (orphan_files >= 0),
    problems            jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(problems) = 'array')
);
CREATE INDEX integrity_runs_latest ON integrity_runs (dataset_id, id DESC);
