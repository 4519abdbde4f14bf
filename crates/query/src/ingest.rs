//! `POST /v1/ingest/{dataset}`: parse a JSON array or NDJSON body, check every record against
//! the dataset's schema, take each record's dedupe key, and buffer the batch durably in the
//! catalog in one transaction. The ack carries the visibility token that makes the records
//! visible (pass it as `min_visibility_token`).
//!
//! A batch is all or nothing: one invalid record rejects the whole request with a 400 naming
//! the record (0-based) and the field path, and nothing is stored. Values are checked exactly,
//! at every depth ([`duckmesh_contracts::values`]): a value that does not fit its column's type as it is (`"2"` or
//! `3.7` for an `INTEGER`, an unknown `STRUCT` field, a `MAP` value of the wrong type) is
//! refused, never coerced. A NUL character anywhere (`\u0000`, which PostgreSQL cannot store)
//! is refused as `nul_character`. What only DuckDB can decide (a string `"2024-13-45"` for a
//! `DATE`) is converted strictly by the coordinator, which parks a record that does not
//! convert in the dead-letter table without holding up the rest.
//!
//! The request check itself is pure and lives in [`duckmesh_contracts::ingest`]: [`parse_body`]
//! and [`prepare`] are the whole of it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The answer to an accepted ingest request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IngestResponse {
    /// Records stored by this request.
    pub accepted: u64,
    /// Records whose dedupe key was already stored; acknowledged, not stored again.
    pub duplicates: u64,
    /// Pass it as `min_visibility_token` to `/v1/query` to read these records.
    pub visibility_token: i64,
    /// The dataset written.
    pub dataset: String,
    /// Its namespace.
    pub namespace: String,
}

/// The dataset's ingest settings (`spec.ingest` of the Dataset resource).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestSettings {
    /// Column whose value is the dedupe key.
    #[serde(default)]
    pub dedupe_key: Option<String>,
    /// Records per minute per tenant.
    #[serde(default)]
    pub rate_limit_per_minute: Option<u32>,
    /// Pending records beyond which ingest answers 429.
    #[serde(default)]
    pub max_pending_records: Option<u64>,
}

impl IngestSettings {
    /// Reads `ingest` from a stored Dataset spec (absent or malformed: no settings).
    pub fn from_spec(spec: &Value) -> Self {
        spec.get("ingest").and_then(|value| serde_json::from_value(value.clone()).ok()).unwrap_or_default()
    }
}

pub use duckmesh_contracts::ingest::{IngestError, KEY_FIELD, check_value, key_text, parse_body, prepare};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_come_from_the_dataset_spec() {
        let settings = IngestSettings::from_spec(&json!({"ingest": {"dedupeKey": "id", "rateLimitPerMinute": 60}}));
        assert_eq!(settings.dedupe_key.as_deref(), Some("id"));
        assert_eq!(settings.rate_limit_per_minute, Some(60));
        assert_eq!(IngestSettings::from_spec(&json!({})), IngestSettings::default());
    }
}
