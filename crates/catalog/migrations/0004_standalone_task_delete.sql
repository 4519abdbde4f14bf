-- DuckMesh catalog, version 4: deleting a standalone task. A deleted task keeps its row (its
-- history and attempts stay queryable by id) and frees its name, so that a Task created again
-- under the name is a new task and runs afresh, as a deleted and re-created Job does.
ALTER TABLE tasks ADD COLUMN deleted_at timestamptz;

DROP INDEX tasks_standalone_name;
CREATE UNIQUE INDEX tasks_standalone_name ON tasks (namespace, name) WHERE job_id IS NULL AND deleted_at IS NULL;
