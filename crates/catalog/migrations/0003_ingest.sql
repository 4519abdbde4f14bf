-- DuckMesh catalog, version 3: the ingest path (durable acks, leased claims, fenced batch
-- commits, dead letters) and the emergency read-only switch. See docs/ingest.md.

-- Each event carries the visibility token its ack promised: a strict-barrier read at that
-- token waits until no pending event promised at or below it is left (see duckmesh_visible_at).
ALTER TABLE ingest_events
    ADD COLUMN visibility_token bigint  NOT NULL DEFAULT 0,
    -- How many times a coordinator claimed the event (a crash mid-batch makes it > 1).
    ADD COLUMN claims           integer NOT NULL DEFAULT 0,
    -- Set when the event was parked in dead_letters; a replay clears it.
    ADD COLUMN dead_letter_id   bigint;

DROP INDEX ingest_events_pending;
-- Pending = acknowledged, not committed, not dead-lettered.
CREATE INDEX ingest_events_pending ON ingest_events (dataset_id, seq)
    WHERE snapshot_id IS NULL AND dead_letter_id IS NULL;
CREATE INDEX ingest_events_pending_by_seq ON ingest_events (seq)
    WHERE snapshot_id IS NULL AND dead_letter_id IS NULL;
CREATE INDEX ingest_events_promised ON ingest_events (dataset_id, visibility_token)
    WHERE snapshot_id IS NULL AND dead_letter_id IS NULL;

ALTER TABLE dead_letters ADD COLUMN tenant text NOT NULL DEFAULT 'default';
CREATE INDEX dead_letters_open ON dead_letters (dataset_id, id) WHERE replayed_at IS NULL;

-- Switches every process honours; `read_only` is the emergency read-only mode (SPEC §8).
CREATE TABLE catalog_switches (
    name       text        PRIMARY KEY CHECK (name IN ('read_only')),
    enabled    boolean     NOT NULL,
    reason     text,
    changed_by text,
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION duckmesh_read_only() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT enabled FROM catalog_switches WHERE name = 'read_only'), false)
$$;

-- Whether a strict-barrier read of a dataset at `p_token` may proceed: the dataset's token
-- has reached it and no acknowledged event promised at or below it is still pending.
CREATE FUNCTION duckmesh_visible_at(p_dataset bigint, p_token bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT d.visibility_token >= p_token
       AND NOT EXISTS (SELECT 1 FROM ingest_events e
                        WHERE e.dataset_id = p_dataset AND e.snapshot_id IS NULL
                          AND e.dead_letter_id IS NULL AND e.visibility_token <= p_token)
      FROM datasets d WHERE d.id = p_dataset
$$;

-- The task commit of migration 0002, refusing while read-only mode is on (status 'read_only').
CREATE OR REPLACE FUNCTION duckmesh_commit(
    p_attempt    bigint,
    p_fence      bigint,
    p_dataset    bigint,
    p_mode       text,
    p_paths      text[],
    p_bytes      bigint[],
    p_rows       bigint[],
    p_sha256     text[],
    p_partitions text[],
    p_manifest   text,
    p_schema     jsonb)
RETURNS TABLE (status text, snapshot_id bigint, parent_id bigint, token bigint, existing_schema jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    a       record;
    d       record;
    v_id    bigint;
    v_files bigint;
    v_rows  bigint;
    v_bytes bigint;
    v_added_rows  bigint := coalesce((SELECT sum(x) FROM unnest(p_rows) x), 0);
    v_added_bytes bigint := coalesce((SELECT sum(x) FROM unnest(p_bytes) x), 0);
    v_at    timestamptz;
BEGIN
    SELECT at.state, at.fence, at.lease_expires_at, t.id AS task_id, t.job_id, t.fence AS task_fence,
           t.phase, t.output_dataset_id, t.output_mode
      INTO a
      FROM attempts at JOIN tasks t ON t.id = at.task_id
     WHERE at.id = p_attempt
       FOR UPDATE OF at, t;
    IF NOT FOUND OR a.fence <> p_fence OR a.task_fence IS DISTINCT FROM a.fence
       OR a.state NOT IN ('Leased', 'Running') OR a.phase NOT IN ('Leased', 'Running')
       OR a.lease_expires_at <= clock_timestamp() THEN
        RETURN QUERY SELECT 'fenced'::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::jsonb;
        RETURN;
    END IF;
    IF duckmesh_read_only() THEN
        RETURN QUERY SELECT 'read_only'::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::jsonb;
        RETURN;
    END IF;
    IF a.output_dataset_id IS NOT NULL AND (a.output_dataset_id <> p_dataset OR a.output_mode <> p_mode) THEN
        RETURN QUERY SELECT 'wrong_output'::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::jsonb;
        RETURN;
    END IF;

    SELECT ds.current_snapshot_id, ds.visibility_token, ds.schema, ds.file_count, ds.row_count, ds.byte_count
      INTO d FROM datasets ds WHERE ds.id = p_dataset FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_dataset'::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::jsonb;
        RETURN;
    END IF;
    IF p_mode = 'append' AND d.schema IS NOT NULL AND p_schema IS NOT NULL
       AND NOT (d.schema @> p_schema AND p_schema @> d.schema) THEN
        RETURN QUERY SELECT 'schema_mismatch'::text, NULL::bigint, NULL::bigint, NULL::bigint, d.schema;
        RETURN;
    END IF;

    v_id := d.current_snapshot_id + 1;
    IF p_mode = 'overwrite' THEN
        UPDATE files SET removed_in = v_id WHERE dataset_id = p_dataset AND removed_in IS NULL;
        v_files := cardinality(p_paths);
        v_rows := v_added_rows;
        v_bytes := v_added_bytes;
    ELSE
        v_files := d.file_count + cardinality(p_paths);
        v_rows := d.row_count + v_added_rows;
        v_bytes := d.byte_count + v_added_bytes;
    END IF;

    INSERT INTO snapshots (dataset_id, id, parent_id, visibility_token, kind, task_id, attempt_id, fence,
                           file_count, row_count, byte_count, added_files, removed_files, manifest_path)
    VALUES (p_dataset, v_id, nullif(d.current_snapshot_id, 0), d.visibility_token + 1, p_mode, a.task_id,
            p_attempt, p_fence, v_files, v_rows, v_bytes, cardinality(p_paths),
            CASE WHEN p_mode = 'overwrite' THEN d.file_count ELSE 0 END, p_manifest)
    RETURNING committed_at INTO v_at;

    INSERT INTO files (dataset_id, path, bytes, rows, sha256, partition, added_in)
    SELECT p_dataset, u.path, u.bytes, u.rows, u.sha256, u.partition::jsonb, v_id
      FROM unnest(p_paths, p_bytes, p_rows, p_sha256, p_partitions) AS u(path, bytes, rows, sha256, partition);

    UPDATE datasets
       SET current_snapshot_id = v_id, visibility_token = d.visibility_token + 1, file_count = v_files,
           row_count = v_rows, byte_count = v_bytes, last_commit_at = v_at, updated_at = v_at,
           schema = coalesce(p_schema, schema)
     WHERE id = p_dataset;
    UPDATE attempts SET state = 'Succeeded', finished_at = clock_timestamp() WHERE id = p_attempt;
    UPDATE tasks
       SET phase = 'Succeeded', output_snapshot_id = v_id, finished_at = clock_timestamp(),
           updated_at = clock_timestamp(), last_error_code = NULL, last_error_message = NULL
     WHERE id = a.task_id;
    INSERT INTO outbox (kind, payload)
    VALUES ('snapshot_committed', jsonb_build_object(
        'dataset', p_dataset, 'snapshot', v_id, 'visibility_token', d.visibility_token + 1,
        'task', a.task_id, 'job', a.job_id, 'attempt', p_attempt));

    RETURN QUERY SELECT 'ok'::text, v_id, nullif(d.current_snapshot_id, 0), d.visibility_token + 1, NULL::jsonb;
END
$$;

-- The coordinator's batch commit, one transaction: re-checks that every event of the batch is
-- still pending and claimed under `p_fence` with an unexpired claim, parks the poison events
-- in dead_letters, and (when there are files) appends them as an `ingest` snapshot that
-- advances the visibility token and marks the remaining events committed in it.
--
-- Returns one row: status 'ok' (snapshot NULL when every event was dead-lettered), or a
-- refusal that changed nothing:
--   'fenced'          an event is no longer claimed under this fence, or the claim expired
--   'read_only'       emergency read-only mode is on
--   'no_dataset'      the dataset does not exist
--   'schema_mismatch' the files' columns differ from the dataset's (existing_schema set)
CREATE FUNCTION duckmesh_ingest_commit(
    p_dataset       bigint,
    p_fence         bigint,
    p_seqs          bigint[],
    p_dead_seqs     bigint[],
    p_dead_codes    text[],
    p_dead_messages text[],
    p_paths         text[],
    p_bytes         bigint[],
    p_rows          bigint[],
    p_sha256        text[],
    p_partitions    text[],
    p_manifest      text,
    p_schema        jsonb)
RETURNS TABLE (status text, snapshot_id bigint, token bigint, committed_at timestamptz, existing_schema jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    d        record;
    v_held   bigint;
    v_id     bigint;
    v_at     timestamptz := clock_timestamp();
    v_rows   bigint := coalesce((SELECT sum(x) FROM unnest(p_rows) x), 0);
    v_bytes  bigint := coalesce((SELECT sum(x) FROM unnest(p_bytes) x), 0);
BEGIN
    SELECT count(*) INTO v_held FROM (
        SELECT 1 FROM ingest_events e
         WHERE e.dataset_id = p_dataset AND e.seq = ANY (p_seqs || p_dead_seqs)
           AND e.claim_fence = p_fence AND e.claim_expires_at > clock_timestamp()
           AND e.snapshot_id IS NULL AND e.dead_letter_id IS NULL
           FOR UPDATE) held;
    IF v_held <> cardinality(p_seqs) + cardinality(p_dead_seqs) THEN
        RETURN QUERY SELECT 'fenced'::text, NULL::bigint, NULL::bigint, NULL::timestamptz, NULL::jsonb;
        RETURN;
    END IF;
    IF duckmesh_read_only() THEN
        RETURN QUERY SELECT 'read_only'::text, NULL::bigint, NULL::bigint, NULL::timestamptz, NULL::jsonb;
        RETURN;
    END IF;

    IF cardinality(p_dead_seqs) > 0 THEN
        WITH poison AS (
            SELECT e.seq, e.tenant, e.dedupe_key, e.payload, u.code, u.message
              FROM unnest(p_dead_seqs, p_dead_codes, p_dead_messages) AS u(seq, code, message)
              JOIN ingest_events e ON e.dataset_id = p_dataset AND e.seq = u.seq),
        parked AS (
            INSERT INTO dead_letters (dataset_id, seq, tenant, dedupe_key, payload, error_code, error_message)
            SELECT p_dataset, seq, tenant, dedupe_key, payload, code, message FROM poison
            RETURNING id, seq)
        UPDATE ingest_events e
           SET dead_letter_id = parked.id, claim_fence = NULL, claim_expires_at = NULL
          FROM parked
         WHERE e.dataset_id = p_dataset AND e.seq = parked.seq;
    END IF;

    IF cardinality(p_seqs) = 0 THEN
        RETURN QUERY SELECT 'ok'::text, NULL::bigint, NULL::bigint, v_at, NULL::jsonb;
        RETURN;
    END IF;

    SELECT ds.current_snapshot_id, ds.visibility_token, ds.schema, ds.file_count, ds.row_count, ds.byte_count
      INTO d FROM datasets ds WHERE ds.id = p_dataset FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_dataset'::text, NULL::bigint, NULL::bigint, NULL::timestamptz, NULL::jsonb;
        RETURN;
    END IF;
    IF d.schema IS NOT NULL AND p_schema IS NOT NULL AND NOT (d.schema @> p_schema AND p_schema @> d.schema) THEN
        RETURN QUERY SELECT 'schema_mismatch'::text, NULL::bigint, NULL::bigint, NULL::timestamptz, d.schema;
        RETURN;
    END IF;

    v_id := d.current_snapshot_id + 1;
    INSERT INTO snapshots (dataset_id, id, parent_id, visibility_token, kind, fence, file_count, row_count,
                           byte_count, added_files, removed_files, manifest_path, committed_at)
    VALUES (p_dataset, v_id, nullif(d.current_snapshot_id, 0), d.visibility_token + 1, 'ingest', p_fence,
            d.file_count + cardinality(p_paths), d.row_count + v_rows, d.byte_count + v_bytes,
            cardinality(p_paths), 0, p_manifest, v_at);

    INSERT INTO files (dataset_id, path, bytes, rows, sha256, partition, added_in)
    SELECT p_dataset, u.path, u.bytes, u.rows, u.sha256, u.partition::jsonb, v_id
      FROM unnest(p_paths, p_bytes, p_rows, p_sha256, p_partitions) AS u(path, bytes, rows, sha256, partition);

    UPDATE datasets
       SET current_snapshot_id = v_id, visibility_token = d.visibility_token + 1,
           file_count = d.file_count + cardinality(p_paths), row_count = d.row_count + v_rows,
           byte_count = d.byte_count + v_bytes, last_commit_at = v_at, updated_at = v_at,
           schema = coalesce(schema, p_schema)
     WHERE id = p_dataset;
    UPDATE ingest_events e
       SET snapshot_id = v_id, committed_at = v_at, claim_expires_at = NULL
     WHERE e.dataset_id = p_dataset AND e.seq = ANY (p_seqs);
    INSERT INTO outbox (kind, payload)
    VALUES ('snapshot_committed', jsonb_build_object(
        'dataset', p_dataset, 'snapshot', v_id, 'visibility_token', d.visibility_token + 1,
        'ingest_fence', p_fence, 'events', cardinality(p_seqs)));

    RETURN QUERY SELECT 'ok'::text, v_id, d.visibility_token + 1, v_at, NULL::jsonb;
END
$$;
