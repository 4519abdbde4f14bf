//! Wake-up notifications of one process sent together: while one `NOTIFY` transaction is on
//! its way, the notifications that other tasks of the process ask for meanwhile queue up and go
//! out in the next transaction, all at once. A runner that commits many attempts concurrently
//! (or several runners sharing a catalog handle) then pays one notification round trip per
//! batch instead of one per commit; a lone committer sends its own at once, as before. Every
//! caller still returns only after its notification was sent (or failed), so nothing changes
//! for listeners.

use sqlx::PgPool;
use std::sync::Mutex;
use tokio::sync::oneshot;

/// One queued notification and the caller waiting for it.
type Queued = (String, String, oneshot::Sender<()>);

/// The queue of a [`crate::Catalog`] and its clones.
#[derive(Debug, Default)]
pub(crate) struct WakeupBatch {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// A caller is sending (the leader); the others wait for it.
    sending: bool,
    pending: Vec<Queued>,
}

/// Gives up the leader's role if the leader is cancelled mid-flight (its future dropped): the
/// next caller leads, and the waiters whose batch was not sent send their own.
struct Leading<'a> {
    queue: &'a WakeupBatch,
    done: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.queue.lock();
            state.sending = false;
            // Dropping the senders wakes their callers with an error: they send their own.
            state.pending.clear();
        }
    }
}

impl WakeupBatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends `payload` on `channel` without waiting for the WAL flush, together with whatever
    /// other notifications of this process are queued, and returns once it went out. A failure
    /// is logged, never returned: notifications are hints.
    pub(crate) async fn notify(&self, pool: &PgPool, channel: &str, payload: &str) {
        let (sent, waiting) = oneshot::channel();
        let lead = {
            let mut state = self.lock();
            state.pending.push((channel.to_owned(), payload.to_owned(), sent));
            !std::mem::replace(&mut state.sending, true)
        };
        if !lead {
            if waiting.await.is_err() {
                // The leader gave up before sending ours.
                send(pool, &[channel.to_owned()], &[payload.to_owned()]).await;
            }
            return;
        }
        let mut leading = Leading { queue: self, done: false };
        loop {
            let batch = {
                let mut state = self.lock();
                if state.pending.is_empty() {
                    // Handing over under the lock: a caller arriving now leads its own batch.
                    state.sending = false;
                    leading.done = true;
                    break;
                }
                std::mem::take(&mut state.pending)
            };
            let (channels, payloads): (Vec<String>, Vec<String>) =
                batch.iter().map(|(channel, payload, _)| (channel.clone(), payload.clone())).unzip();
            send(pool, &channels, &payloads).await;
            for (_, _, sent) in batch {
                let _ = sent.send(());
            }
        }
    }
}

/// One transaction that sends every notification, in order.
async fn send(pool: &PgPool, channels: &[String], payloads: &[String]) {
    let sent = sqlx::query(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) \
         SELECT pg_notify(n.channel, n.payload) FROM relaxed, unnest($1::text[], $2::text[]) AS n(channel, payload)",
    )
    .bind(channels)
    .bind(payloads)
    .execute(pool)
    .await;
    if let Err(error) = sent {
        tracing::warn!(%error, count = channels.len(), "could not send wake-up notifications");
    }
}
