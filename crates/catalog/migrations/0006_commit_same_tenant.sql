-- DuckMesh catalog, version 6: a task commits only into a dataset of its own tenant and
-- namespace (SPEC §2.10). Applying resources already refuses a Job or Task that names another
-- tenant's dataset (`cross_tenant_dataset`); the commit checks again, under the dataset lock, so
-- neither a task stored before that check, nor one stored without it, nor a dataset whose tenant
-- changed since, can write across tenants.
--
-- The task commit of migration 0003 with one more refusal (nothing is changed):
--   'cross_tenant'    the dataset's tenant or namespace differs from the task's
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
