//! The ingest coordinator (being written).
