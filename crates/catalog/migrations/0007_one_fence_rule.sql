-- DuckMesh catalog, version 7: the fence rule, written once.
--
-- An attempt may act (confirm, heartbeat, commit, complete, fail) only while it is its task's
-- current attempt. That rule was spelled out in the commit function, in the confirm and
-- heartbeat statements and in the Rust check behind the other calls; now each of them asks
-- duckmesh_attempt_refusal, and the rule lives here alone. Nothing it decides changes.
--
-- duckmesh_attempt_refusal judges the fence an attempt presents against the attempt's and its
-- task's locked (or just read) rows, and answers NULL when the attempt may act, or else why not,
-- checking in this order:
--   'stale_fence'      the presented fence is not the attempt's, or the task's fence has moved on
--                      to a newer attempt
--   'attempt_not_live' the attempt is no longer Leased or Running (it finished, expired, was
--                      cancelled)
--   'task_not_active'  the attempt is live but its task is no longer Leased or Running
--   'lease_expired'    the lease ran out at or before p_now
-- The lease comes last, so a caller that may act past its lease (a runner reporting its failure)
-- ignores only a 'lease_expired' answer. A pure function of its arguments (the caller passes the
-- clock), so the planner inlines it into the statements that use it.
CREATE FUNCTION duckmesh_attempt_refusal(
    p_presented        bigint,
    p_fence            bigint,
    p_task_fence       bigint,
    p_state            text,
    p_task_phase       text,
    p_lease_expires_at timestamptz,
    p_now              timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_presented IS DISTINCT FROM p_fence OR p_task_fence IS DISTINCT FROM p_fence THEN 'stale_fence'
        WHEN p_state NOT IN ('Leased', 'Running') THEN 'attempt_not_live'
        WHEN p_task_phase NOT IN ('Leased', 'Running') THEN 'task_not_active'
        WHEN p_lease_expires_at <= p_now THEN 'lease_expired'
    END
$$;

-- The task commit of migration 0006, its fence check now the rule above (statuses unchanged).
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
           t.phase, t.output_dataset_id, t.output_mode, t.tenant, t.namespace
      INTO a
      FROM attempts at JOIN tasks t ON t.id = at.task_id
     WHERE at.id = p_attempt
       FOR UPDATE OF at, t;
    IF NOT FOUND OR duckmesh_attempt_refusal(p_fence, a.fence, a.task_fence, a.state, a.phase,
                                             a.lease_expires_at, clock_timestamp()) IS NOT NULL THEN
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

    SELECT ds.current_snapshot_id, ds.visibility_token, ds.schema, ds.file_count, ds.row_count, ds.byte_count,
           ds.tenant, ds.namespace
      INTO d FROM datasets ds WHERE ds.id = p_dataset FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_dataset'::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::jsonb;
        RETURN;
    END IF;
    -- Checked under the dataset lock, so a dataset handed to another tenant meanwhile is seen.
    IF d.tenant <> a.tenant OR d.namespace <> a.namespace THEN
        RETURN QUERY SELECT 'cross_tenant'::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::jsonb;
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
