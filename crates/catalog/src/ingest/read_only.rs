//! The emergency read-only switch (SPEC §8): while it is on, ingest and both commit functions
//! refuse with `read_only` and nothing is leased; reads are unaffected.

use crate::{Catalog, Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

/// The emergency read-only switch as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadOnlyState {
    /// Whether ingest and commits are refused.
    pub enabled: bool,
    /// Why it was last changed.
    pub reason: Option<String>,
    /// Who last changed it.
    pub changed_by: Option<String>,
    /// When it was last changed (`None`: never).
    pub changed_at: Option<DateTime<Utc>>,
}

impl Catalog {
    /// The read-only switch.
    pub async fn read_only(&self) -> Result<ReadOnlyState> {
        let row = sqlx::query(
            "SELECT enabled, reason, changed_by, changed_at FROM catalog_switches WHERE name = 'read_only'",
        )
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(ReadOnlyState { enabled: false, reason: None, changed_by: None, changed_at: None }),
            Some(row) => Ok(ReadOnlyState {
                enabled: row.try_get("enabled")?,
                reason: row.try_get("reason")?,
                changed_by: row.try_get("changed_by")?,
                changed_at: row.try_get("changed_at")?,
            }),
        }
    }

    /// Turns read-only mode on or off for every process using this catalog, at once.
    pub async fn set_read_only(&self, enabled: bool, reason: Option<&str>, changed_by: &str) -> Result<ReadOnlyState> {
        sqlx::query(
            "INSERT INTO catalog_switches (name, enabled, reason, changed_by, changed_at) \
             VALUES ('read_only', $1, $2, $3, clock_timestamp()) \
             ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, reason = excluded.reason, \
                 changed_by = excluded.changed_by, changed_at = excluded.changed_at",
        )
        .bind(enabled)
        .bind(reason)
        .bind(changed_by)
        .execute(&self.pool)
        .await?;
        self.read_only().await
    }

    /// The `read_only` refusal, carrying the reason the switch was turned on with. It takes a
    /// pooled connection of its own: never call it while holding one (a transaction).
    pub(crate) async fn read_only_error(&self) -> Error {
        let reason = self.read_only().await.ok().and_then(|state| state.reason);
        Error::ReadOnly { reason }
    }
}
