//! `LISTEN/NOTIFY` wake-ups. Notifications are hints only (they are lost while a listener is
//! disconnected): consumers re-read the catalog after each one and on a timer.

use crate::{Catalog, Result};
use duckmesh_core::{DatasetId, SnapshotId};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;

/// Channel notified (transactionally, on commit) for every new snapshot.
pub const COMMITS_CHANNEL: &str = "duckmesh_commits";
/// Channel notified when tasks may have become runnable (new job, new standalone task).
pub const TASKS_CHANNEL: &str = "duckmesh_tasks";

/// The payload of a [`COMMITS_CHANNEL`] notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitEvent {
    /// The dataset.
    pub dataset: DatasetId,
    /// Its new snapshot.
    pub snapshot: SnapshotId,
    /// Its new visibility token.
    pub visibility_token: i64,
}

/// A dedicated connection listening for commits.
#[derive(Debug)]
pub struct CommitListener {
    listener: PgListener,
}

impl CommitListener {
    /// Waits for the next commit. After a dropped connection the listener reconnects by
    /// itself; commits made meanwhile are not replayed, so callers re-read state on wake-up.
    pub async fn recv(&mut self) -> Result<CommitEvent> {
        loop {
            if let Some(event) = self.recv_or_lost().await? {
                return Ok(event);
            }
        }
    }

    /// Waits for the next commit, or returns `None` when the connection was lost: commits
    /// made until it is back are never announced, so the caller should re-read what it
    /// watches. The next call reconnects (an error when it cannot).
    pub async fn recv_or_lost(&mut self) -> Result<Option<CommitEvent>> {
        loop {
            let Some(notification) = self.listener.try_recv().await? else { return Ok(None) };
            match serde_json::from_str(notification.payload()) {
                Ok(event) => return Ok(Some(event)),
                Err(error) => tracing::warn!(%error, "ignoring a malformed commit notification"),
            }
        }
    }
}

impl Catalog {
    /// Starts listening for commits (before reading state, so nothing falls in between).
    pub async fn listen_commits(&self) -> Result<CommitListener> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(COMMITS_CHANNEL).await?;
        Ok(CommitListener { listener })
    }

    /// A raw listener on the task wake-up channel, for schedulers.
    pub async fn listen_tasks(&self) -> Result<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(TASKS_CHANNEL).await?;
        Ok(listener)
    }
}

/// A dedicated connection listening for everything that may make a task runnable: new jobs
/// and tasks, and commits (a commit completes a task, which may unblock its dependents).
#[derive(Debug)]
pub struct Wakeups {
    listener: PgListener,
}

impl Wakeups {
    /// Waits for the next wake-up. The payload does not matter: schedulers re-read the
    /// catalog after every wake-up and on a timer, since notifications sent while the
    /// connection was down are lost.
    pub async fn recv(&mut self) -> Result<()> {
        self.listener.recv().await?;
        Ok(())
    }
}

impl Catalog {
    /// Starts listening on [`TASKS_CHANNEL`] and [`COMMITS_CHANNEL`] (call it before reading
    /// state, so nothing falls in between).
    pub async fn listen_wakeups(&self) -> Result<Wakeups> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all([TASKS_CHANNEL, COMMITS_CHANNEL]).await?;
        Ok(Wakeups { listener })
    }
}
