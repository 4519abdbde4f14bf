-- DuckMesh catalog, version 9: the compaction commit.
--
-- A compaction rewrites some live files of a dataset into fewer, larger ones with the same rows.
-- It commits like a task's output — fenced by the attempt (duckmesh_attempt_refusal), refused
-- in read-only mode and across tenants, one transaction that assigns the next snapshot id and
-- visibility token under the dataset lock — but its snapshot (kind 'compact') retires exactly
-- the files it replaced and adds the new ones, keeping every other live file:
--   * an append that committed while the compaction ran keeps its files (they are not among
--     the replaced ones), so concurrent appends are never lost;
--   * if any replaced file is no longer live (an overwrite or another compaction got there
--     first) nothing is written and the answer is 'conflict': the compaction is retried on
--     the new state;
--   * the new files must hold exactly the rows of the replaced ones ('row_mismatch'
--     otherwise), so the data read at the new snapshot is the same multiset of rows.
CREATE FUNCTION duckmesh_compact_commit(
    p_attempt    bigint,
    p_fence      bigint,
    p_dataset    bigint,
    p_replaced   text[],
    p_paths      text[],
    p_bytes      bigint[],
    p_rows       bigint[],
    p_sha256     text[],
    p_partitions text[],
    p_manifest   text)
RETURNS TABLE (status text, snapshot_id bigint, parent_id bigint, token bigint)
LANGUAGE plpgsql AS $$
DECLARE
    a              record;
    d              record;
    v_id           bigint;
    v_live         bigint;
    v_old_rows     bigint;
    v_old_bytes    bigint;
    v_added_rows   bigint := coalesce((SELECT sum(x) FROM unnest(p_rows) x), 0);
    v_added_bytes  bigint := coalesce((SELECT sum(x) FROM unnest(p_bytes) x), 0);
    v_at           timestamptz;
BEGIN
    SELECT at.state, at.fence, at.lease_expires_at, t.id AS task_id, t.job_id, t.fence AS task_fence,
           t.phase, t.output_dataset_id, t.tenant, t.namespace
      INTO a
      FROM attempts at JOIN tasks t ON t.id = at.task_id
     WHERE at.id = p_attempt
       FOR UPDATE OF at, t;
    IF NOT FOUND OR duckmesh_attempt_refusal(p_fence, a.fence, a.task_fence, a.state, a.phase,
                                             a.lease_expires_at, clock_timestamp()) IS NOT NULL THEN
        RETURN QUERY SELECT 'fenced'::text, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF duckmesh_read_only() THEN
        RETURN QUERY SELECT 'read_only'::text, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF a.output_dataset_id IS DISTINCT FROM p_dataset THEN
        RETURN QUERY SELECT 'wrong_output'::text, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;

    SELECT ds.current_snapshot_id, ds.visibility_token, ds.file_count, ds.row_count, ds.byte_count,
           ds.tenant, ds.namespace
      INTO d FROM datasets ds WHERE ds.id = p_dataset FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_dataset'::text, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF d.tenant <> a.tenant OR d.namespace <> a.namespace THEN
        RETURN QUERY SELECT 'cross_tenant'::text, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;

    SELECT count(*), coalesce(sum(f.rows), 0), coalesce(sum(f.bytes), 0)
      INTO v_live, v_old_rows, v_old_bytes
      FROM files f
     WHERE f.dataset_id = p_dataset AND f.removed_in IS NULL AND f.path = ANY (p_replaced);
    IF v_live <> cardinality(p_replaced) OR cardinality(p_replaced) <> (SELECT count(DISTINCT x) FROM unnest(p_replaced) x) THEN
        RETURN QUERY SELECT 'conflict'::text, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF v_old_rows <> v_added_rows THEN
        RETURN QUERY SELECT 'row_mismatch'::text, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;

    v_id := d.current_snapshot_id + 1;
    UPDATE files SET removed_in = v_id
     WHERE dataset_id = p_dataset AND removed_in IS NULL AND path = ANY (p_replaced);

    INSERT INTO snapshots (dataset_id, id, parent_id, visibility_token, kind, task_id, attempt_id, fence,
                           file_count, row_count, byte_count, added_files, removed_files, manifest_path)
    VALUES (p_dataset, v_id, nullif(d.current_snapshot_id, 0), d.visibility_token + 1, 'compact', a.task_id,
            p_attempt, p_fence, d.file_count - cardinality(p_replaced) + cardinality(p_paths), d.row_count,
            d.byte_count - v_old_bytes + v_added_bytes, cardinality(p_paths), cardinality(p_replaced), p_manifest)
    RETURNING committed_at INTO v_at;

    INSERT INTO files (dataset_id, path, bytes, rows, sha256, partition, added_in)
    SELECT p_dataset, u.path, u.bytes, u.rows, u.sha256, u.partition::jsonb, v_id
      FROM unnest(p_paths, p_bytes, p_rows, p_sha256, p_partitions) AS u(path, bytes, rows, sha256, partition);

    UPDATE datasets
       SET current_snapshot_id = v_id, visibility_token = d.visibility_token + 1,
           file_count = d.file_count - cardinality(p_replaced) + cardinality(p_paths),
           byte_count = d.byte_count - v_old_bytes + v_added_bytes, last_commit_at = v_at, updated_at = v_at
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

    RETURN QUERY SELECT 'ok'::text, v_id, nullif(d.current_snapshot_id, 0), d.visibility_token + 1;
END
$$;
