-- DuckMesh catalog: one row per finished maintenance run (compaction, GC, integrity), whoever
-- ran it (a leased task, the CLI). Runners are short-lived processes that no Prometheus
-- scrapes; the scheduler (operator or dev), which serves /metrics, turns new rows into the
-- duckmesh_compaction_*, duckmesh_gc_* and duckmesh_integrity_* counters.
CREATE TABLE maintenance_runs (
    id                  bigserial   PRIMARY KEY,
    dataset_id          bigint      REFERENCES datasets (id) ON DELETE SET NULL,
    kind                text        NOT NULL CHECK (kind IN ('compact', 'gc', 'integrity')),
    result              text        NOT NULL CHECK (result IN ('succeeded', 'noop', 'issues_found', 'failed')),
    finished_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    bytes_rewritten     bigint      NOT NULL DEFAULT 0 CHECK (bytes_rewritten >= 0),
    unreferenced_deleted bigint     NOT NULL DEFAULT 0 CHECK (unreferenced_deleted >= 0),
    staging_deleted     bigint      NOT NULL DEFAULT 0 CHECK (staging_deleted >= 0),
    exports_deleted     bigint      NOT NULL DEFAULT 0 CHECK (exports_deleted >= 0),
    files_checked       bigint      NOT NULL DEFAULT 0 CHECK (files_checked >= 0),
    missing_files       bigint      NOT NULL DEFAULT 0 CHECK (missing_files >= 0),
    size_mismatch_files bigint      NOT NULL DEFAULT 0 CHECK (size_mismatch_files >= 0),
    error_code          text
);
CREATE INDEX maintenance_runs_finished ON maintenance_runs (finished_at);
