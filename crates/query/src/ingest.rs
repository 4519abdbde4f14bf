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
//! and [`prepare`] are the whole of it. [`IngestService`] adds what needs the process: the
//! dataset lookup, the read-only switch, the record rate, the catalog write and the metrics.

use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::metrics::IngestResult;
use crate::service::Shared;
use duckmesh_catalog::IngestRequest;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

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

/// The ingest service. Cheap to clone; shares the catalog, metrics, configuration and rate
/// limiters with the query service it is served next to.
#[derive(Debug, Clone)]
pub struct IngestService {
    shared: Arc<Shared>,
}

impl IngestService {
    /// The ingest service over `shared`.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The configuration.
    pub fn config(&self) -> &crate::config::QueryConfig {
        &self.shared.config
    }

    /// Buffers the records of one `POST /v1/ingest/{dataset}` body durably and acknowledges
    /// them (all or nothing), recording the request in the ingest metrics.
    pub async fn ingest(
        &self,
        principal: &Principal,
        name: &str,
        namespace: Option<&str>,
        body: &[u8],
        traceparent: Option<&str>,
    ) -> Result<IngestResponse> {
        let started = Instant::now();
        let result = self.ingest_inner(principal, name, namespace, body, traceparent).await;
        let metrics = &self.shared.metrics;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(ack) => {
                metrics.read_only_mode.set(0);
                metrics.observe_ingest(
                    &principal.tenant,
                    IngestResult::Accepted,
                    ack.accepted,
                    ack.duplicates,
                    elapsed_ms,
                );
                tracing::debug!(
                    tenant_id = %principal.tenant, dataset = name, accepted = ack.accepted,
                    duplicates = ack.duplicates, visibility_token = ack.visibility_token, "ingest acknowledged"
                );
            }
            Err(error) => {
                let outcome = match error {
                    Error::ReadOnly { .. } => {
                        metrics.read_only_mode.set(1);
                        IngestResult::ReadOnly
                    }
                    Error::RateLimited { .. } | Error::IngestBackpressure { .. } | Error::Overloaded { .. } => {
                        IngestResult::RateLimited
                    }
                    error if error.is_client_error() => IngestResult::Rejected,
                    _ => IngestResult::Error,
                };
                metrics.observe_ingest(&principal.tenant, outcome, 0, 0, elapsed_ms);
                if outcome == IngestResult::Error {
                    tracing::error!(tenant_id = %principal.tenant, dataset = name, error_code = error.error_code(), %error, "ingest failed");
                } else {
                    tracing::info!(tenant_id = %principal.tenant, dataset = name, error_code = error.error_code(), %error, "ingest refused");
                }
            }
        }
        result
    }

    async fn ingest_inner(
        &self,
        principal: &Principal,
        name: &str,
        namespace: Option<&str>,
        body: &[u8],
        traceparent: Option<&str>,
    ) -> Result<IngestResponse> {
        let config = &self.shared.config;
        if config.read_only {
            return Err(Error::ReadOnly { reason: Some("DUCKMESH_READ_ONLY is set on this API process".into()) });
        }
        let namespace = namespace.unwrap_or(&config.namespace);
        let record = self.shared.find_dataset(principal, namespace, name).await?;
        let schema = record.schema.clone().filter(|columns| !columns.is_empty());
        let Some(schema) = schema else {
            return Err(Error::SchemaRequired { name: record.name.clone() });
        };
        let settings = IngestSettings::from_spec(&record.spec);
        let parsed = parse_body(body, config.ingest.max_records)?;
        let records = prepare(parsed, &schema, settings.dedupe_key.as_deref())?;
        let per_minute = match settings.rate_limit_per_minute {
            Some(n) => std::num::NonZeroU32::new(n),
            None => config.ingest.records_per_minute,
        };
        self.shared.rate_limiter.check_ingest(&principal.tenant, record.id.0, per_minute, records.len())?;
        let request = IngestRequest {
            dataset: record.id,
            tenant: &principal.tenant,
            records: &records,
            traceparent,
            max_pending: Some(settings.max_pending_records.unwrap_or(config.ingest.max_pending)),
        };
        let ack = self.shared.catalog.ingest(request).await.map_err(|error| match error {
            duckmesh_catalog::Error::ReadOnly { reason } => Error::ReadOnly { reason },
            duckmesh_catalog::Error::BufferFull { pending, limit, .. } => Error::IngestBackpressure {
                name: record.name.clone(),
                pending,
                limit,
                retry_after: Duration::from_secs(1),
            },
            duckmesh_catalog::Error::Invalid { message, .. } => Error::InvalidRequest { message },
            other => other.into(),
        })?;
        Ok(IngestResponse {
            accepted: ack.accepted,
            duplicates: ack.duplicates,
            visibility_token: ack.visibility_token,
            dataset: record.name,
            namespace: record.namespace,
        })
    }
}

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
