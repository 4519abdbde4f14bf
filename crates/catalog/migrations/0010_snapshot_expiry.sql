-- DuckMesh catalog, version 10: snapshot expiry, for reference-aware garbage collection.
--
-- GC expires snapshots that a Dataset's retention no longer keeps by setting expired_at; an
-- expired snapshot is no longer readable (time travel and input pins refuse it), but its row
-- stays while files added in it remain (the files table references snapshots). A file may be
-- deleted only when no retained (unexpired) snapshot references it and every snapshot that did
-- expired longer ago than GC's grace period — longer than any query may still be reading it.
ALTER TABLE snapshots ADD COLUMN expired_at timestamptz;
CREATE INDEX snapshots_expired ON snapshots (dataset_id, expired_at) WHERE expired_at IS NOT NULL;
CREATE INDEX files_removed ON files (dataset_id, removed_in) WHERE removed_in IS NOT NULL;
