-- DuckMesh catalog, version 1: the source of truth for datasets, snapshots, files, jobs,
-- tasks, attempts (leases), the outbox and the ingest buffer. See docs/catalog.md.

-- Fencing tokens: strictly increasing across every lease ever granted.
CREATE SEQUENCE fence_seq AS bigint START 1;

CREATE TABLE datasets (
    id                  bigserial PRIMARY KEY,
    namespace           text        NOT NULL,
    name                text        NOT NULL,
    uid                 text        NOT NULL,
    generation          bigint      NOT NULL DEFAULT 1,
    tenant              text        NOT NULL DEFAULT 'default',
    spec                jsonb       NOT NULL DEFAULT '{}',
    -- The column list every committed file must match (learned from the first commit when
    -- the Dataset declares none).
    schema              jsonb,
    -- 0 means "no snapshot committed yet".
    current_snapshot_id bigint      NOT NULL DEFAULT 0,
    visibility_token    bigint      NOT NULL DEFAULT 0,
    file_count          bigint      NOT NULL DEFAULT 0,
    row_count           bigint      NOT NULL DEFAULT 0,
    byte_count          bigint      NOT NULL DEFAULT 0,
    last_commit_at      timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace, name)
);

CREATE TABLE jobs (
    id           bigserial PRIMARY KEY,
    namespace    text        NOT NULL,
    name         text        NOT NULL,
    uid          text        NOT NULL UNIQUE,
    generation   bigint      NOT NULL DEFAULT 1,
    tenant       text        NOT NULL DEFAULT 'default',
    spec         jsonb       NOT NULL DEFAULT '{}',
    max_parallel integer     CHECK (max_parallel IS NULL OR max_parallel >= 1),
    phase        text        NOT NULL DEFAULT 'Pending',
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    deleted_at   timestamptz
);
-- One live job per namespace/name; a deleted job's history stays until purged.
CREATE UNIQUE INDEX jobs_live_name ON jobs (namespace, name) WHERE deleted_at IS NULL;

CREATE TABLE tasks (
    id                 bigserial PRIMARY KEY,
    job_id             bigint      REFERENCES jobs (id) ON DELETE CASCADE,
    namespace          text        NOT NULL,
    -- The node name inside its job, or the Task resource's name for a standalone task.
    name               text        NOT NULL,
    tenant             text        NOT NULL DEFAULT 'default',
    kind               text        NOT NULL DEFAULT 'sql',
    spec               jsonb       NOT NULL DEFAULT '{}',
    depends_on         bigint[]    NOT NULL DEFAULT '{}',
    phase              text        NOT NULL DEFAULT 'Pending',
    attempts           integer     NOT NULL DEFAULT 0,
    max_attempts       integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_seconds    integer     CHECK (timeout_seconds IS NULL OR timeout_seconds >= 1),
    -- The fence of the latest attempt; only that attempt may heartbeat or commit.
    fence              bigint,
    next_retry_at      timestamptz,
    output_dataset_id  bigint      REFERENCES datasets (id),
    output_mode        text        CHECK (output_mode IN ('append', 'overwrite')),
    output_snapshot_id bigint,
    last_error_code    text,
    last_error_message text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz
);
CREATE UNIQUE INDEX tasks_job_name ON tasks (job_id, name) WHERE job_id IS NOT NULL;
CREATE UNIQUE INDEX tasks_standalone_name ON tasks (namespace, name) WHERE job_id IS NULL;
CREATE INDEX tasks_candidates ON tasks (id) WHERE phase IN ('Pending', 'Retrying');
CREATE INDEX tasks_active ON tasks (job_id) WHERE phase IN ('Leased', 'Running');
CREATE INDEX tasks_by_job ON tasks (job_id, phase);

CREATE TABLE attempts (
    id               bigserial PRIMARY KEY,
    task_id          bigint      NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    n                integer     NOT NULL,
    fence            bigint      NOT NULL UNIQUE,
    state            text        NOT NULL DEFAULT 'Leased',
    -- Who took the lease (scheduler identity), then who runs it (pod or process).
    runner           text,
    lease_ms         integer     NOT NULL CHECK (lease_ms > 0),
    lease_expires_at timestamptz NOT NULL,
    heartbeat_at     timestamptz,
    confirmed_at     timestamptz,
    finished_at      timestamptz,
    error_code       text,
    error_message    text,
    retryable        boolean,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_id, n)
);
-- The database itself forbids two live attempts for one task.
CREATE UNIQUE INDEX attempts_one_live_per_task ON attempts (task_id)
    WHERE state IN ('Leased', 'Running');
CREATE INDEX attempts_live_expiry ON attempts (lease_expires_at)
    WHERE state IN ('Leased', 'Running');

CREATE TABLE snapshots (
    dataset_id       bigint      NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    id               bigint      NOT NULL,
    parent_id        bigint,
    visibility_token bigint      NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('append', 'overwrite', 'ingest', 'compact')),
    task_id          bigint,
    attempt_id       bigint,
    fence            bigint,
    file_count       bigint      NOT NULL,
    row_count        bigint      NOT NULL,
    byte_count       bigint      NOT NULL,
    added_files      integer     NOT NULL,
    removed_files    integer     NOT NULL,
    manifest_path    text,
    committed_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (dataset_id, id),
    UNIQUE (dataset_id, visibility_token)
);
-- At most one committed output per attempt, and per task.
CREATE UNIQUE INDEX snapshots_one_per_attempt ON snapshots (attempt_id) WHERE attempt_id IS NOT NULL;
CREATE UNIQUE INDEX snapshots_one_per_task ON snapshots (task_id) WHERE task_id IS NOT NULL;

-- A file belongs to snapshot S when added_in <= S < coalesce(removed_in, infinity).
CREATE TABLE files (
    dataset_id bigint NOT NULL,
    path       text   NOT NULL,
    bytes      bigint NOT NULL CHECK (bytes >= 0),
    rows       bigint NOT NULL CHECK (rows >= 0),
    sha256     text   NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    partition  jsonb,
    added_in   bigint NOT NULL,
    removed_in bigint,
    PRIMARY KEY (dataset_id, path),
    FOREIGN KEY (dataset_id, added_in) REFERENCES snapshots (dataset_id, id) ON DELETE CASCADE,
    CHECK (removed_in IS NULL OR removed_in > added_in)
);
CREATE INDEX files_live ON files (dataset_id) WHERE removed_in IS NULL;
CREATE INDEX files_added ON files (dataset_id, added_in);

CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    kind         text        NOT NULL,
    payload      jsonb       NOT NULL,
    status       text        NOT NULL DEFAULT 'Pending' CHECK (status IN ('Pending', 'Done', 'Failed')),
    attempts     integer     NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT now(),
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz
);
CREATE INDEX outbox_due ON outbox (available_at) WHERE status = 'Pending';
CREATE INDEX outbox_failed ON outbox (id) WHERE status = 'Failed';

-- The ingest buffer: acked records, durable before the ack, committed exactly once.
CREATE TABLE ingest_events (
    dataset_id       bigint      NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    seq              bigserial,
    tenant           text        NOT NULL DEFAULT 'default',
    dedupe_key       text        NOT NULL,
    payload          jsonb       NOT NULL,
    traceparent      text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    claim_fence      bigint,
    claim_expires_at timestamptz,
    snapshot_id      bigint,
    committed_at     timestamptz,
    PRIMARY KEY (dataset_id, seq),
    UNIQUE (dataset_id, dedupe_key)
);
CREATE INDEX ingest_events_pending ON ingest_events (dataset_id, seq) WHERE snapshot_id IS NULL;

CREATE TABLE dead_letters (
    id            bigserial PRIMARY KEY,
    dataset_id    bigint      NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    seq           bigint,
    dedupe_key    text,
    payload       jsonb       NOT NULL,
    error_code    text        NOT NULL,
    error_message text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    replayed_at   timestamptz
);
