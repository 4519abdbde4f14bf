//! The ingest buffer: durable acks, leased and fenced batch claims, the batch commit, dead
//! letters, the read-your-writes check and the emergency read-only switch.
//!
//! - [`acks`]: [`Catalog::ingest`] stores records durably and promises a visibility token;
//!   [`Catalog::visible_at`] is the strict barrier's check of that promise.
//! - [`claims`]: coordinators claim the oldest pending events under a fence and a lease.
//! - [`commits`]: a claimed batch commits as one `ingest` snapshot, or changes nothing.
//! - [`dead_letters`]: poison events parked, listed and replayed.
//! - [`read_only`]: the emergency read-only switch that ingest and commits honour.

mod acks;
mod claims;
mod commits;
mod dead_letters;
mod read_only;

pub use acks::{IngestAck, IngestRequest};
pub use claims::{ClaimOptions, ClaimedBatch, ClaimedEvent, IngestClaim};
pub use commits::{IngestCommit, IngestCommitted, PoisonEvent};
pub use dead_letters::{DeadLetter, DeadLetterFilter};
pub use duckmesh_contracts::ingest::{IngestRecord, MAX_DEDUPE_KEY_BYTES};
pub use read_only::ReadOnlyState;

use crate::{Catalog, Result};
use sqlx::postgres::PgListener;

/// Channel notified after every ingest ack (payload: the dataset id), to wake coordinators.
pub const INGEST_CHANNEL: &str = "duckmesh_ingest";

/// Buffer figures for metrics and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestBacklog {
    /// Acked events not yet committed nor dead-lettered.
    pub pending: i64,
    /// Milliseconds since the oldest of them was acked.
    pub oldest_pending_ms: i64,
}

impl Catalog {
    /// Pending events and the age of the oldest, over every dataset.
    pub async fn ingest_backlog(&self) -> Result<IngestBacklog> {
        let (pending, oldest): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM clock_timestamp() - min(received_at))::float8 * 1000 \
             FROM ingest_events WHERE snapshot_id IS NULL AND dead_letter_id IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(IngestBacklog { pending, oldest_pending_ms: oldest.map_or(0, |ms| ms.max(0.0) as i64) })
    }

    /// Starts listening for ingest acks and replays (before reading state, so nothing falls in
    /// between).
    pub async fn listen_ingest(&self) -> Result<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(INGEST_CHANNEL).await?;
        Ok(listener)
    }
}
