//! Back-pressure: per-user and per-tenant request rates (keyed GCRA limiters from `governor`)
//! and the query concurrency cap with a bounded wait queue. Both answer "no" fast with a
//! `Retry-After`, before the process is in trouble (SPEC §3, §4). And the size limits of a
//! query's SQL ([`SqlLimits`]), checked on the text before DuckDB sees it: DuckDB's binder is
//! quadratic in a wide select list and cannot be interrupted while it binds.

use crate::auth::Principal;
use crate::config::RateLimits;
use crate::error::{Error, Result};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

type Limiter = DefaultKeyedRateLimiter<String>;

/// The request-rate limiters.
#[derive(Debug)]
pub struct RateLimiter {
    /// Ingest record rates, one keyed-by-tenant limiter per dataset and quota.
    ingest: std::sync::Mutex<std::collections::HashMap<(i64, u32), Arc<Limiter>>>,
    query_per_user: Option<Limiter>,
    api_per_user: Option<Limiter>,
    api_per_tenant: Option<Limiter>,
    clock: DefaultClock,
    checks: AtomicU64,
}

fn limiter(per_minute: Option<NonZeroU32>) -> Option<Limiter> {
    per_minute.map(|n| Limiter::keyed(Quota::per_minute(n)))
}

impl RateLimiter {
    /// Limiters for `limits`.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            query_per_user: limiter(limits.query_per_user),
            api_per_user: limiter(limits.api_per_user),
            api_per_tenant: limiter(limits.api_per_tenant),
            ingest: std::sync::Mutex::new(std::collections::HashMap::new()),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    fn check(&self, limiter: Option<&Limiter>, key: &str, scope: &'static str) -> Result<()> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| Error::RateLimited { scope, retry_after: not_until.wait_time_from(self.clock.now()) })
    }

    /// Counts one API request of `principal` against the per-user and per-tenant limits.
    pub fn check_api(&self, principal: &Principal) -> Result<()> {
        // Forget idle keys now and then so the maps stay as small as the active user set.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            for limiter in [&self.query_per_user, &self.api_per_user, &self.api_per_tenant].into_iter().flatten() {
                limiter.retain_recent();
            }
        }
        self.check(self.api_per_user.as_ref(), &user_key(principal), "api per user")?;
        self.check(self.api_per_tenant.as_ref(), &principal.tenant, "api per tenant")
    }

    /// Counts one `POST /v1/query` of `principal` against the per-user query limit.
    pub fn check_query(&self, principal: &Principal) -> Result<()> {
        self.check(self.query_per_user.as_ref(), &user_key(principal), "query per user")
    }
}

impl RateLimiter {
    /// Counts `records` ingested by `tenant` into `dataset` against `per_minute` records a
    /// minute (`None`: unlimited). A request larger than a whole minute's allowance is
    /// refused as invalid: it could never pass.
    pub fn check_ingest(
        &self,
        tenant: &str,
        dataset: i64,
        per_minute: Option<NonZeroU32>,
        records: usize,
    ) -> Result<()> {
        let (Some(per_minute), Some(records)) = (per_minute, NonZeroU32::new(records.try_into().unwrap_or(u32::MAX)))
        else {
            return Ok(());
        };
        let limiter = {
            let mut limiters = self.ingest.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if limiters.len() > 4096 {
                limiters.clear();
            }
            Arc::clone(
                limiters
                    .entry((dataset, per_minute.get()))
                    .or_insert_with(|| Arc::new(Limiter::keyed(Quota::per_minute(per_minute)))),
            )
        };
        match limiter.check_key_n(&tenant.to_owned(), records) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Error::RateLimited {
                scope: "ingest records per tenant",
                retry_after: not_until.wait_time_from(self.clock.now()),
            }),
            Err(_) => Err(Error::InvalidRequest {
                message: format!(
                    "{records} records exceed the dataset's limit of {per_minute} records per minute; send smaller batches"
                ),
            }),
        }
    }
}

fn user_key(principal: &Principal) -> String {
    format!("{}\u{0}{}", principal.tenant, principal.user)
}

/// The concurrency cap: `running` slots and a queue of at most `queued` waiters.
#[derive(Debug, Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_running: usize,
    max_queued: usize,
}

/// A held query slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// `max_running` slots (at least one) and a queue of `max_queued`.
    pub fn new(max_running: usize, max_queued: usize) -> Self {
        let max_running = max_running.max(1);
        Self {
            slots: Arc::new(Semaphore::new(max_running)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_running,
            max_queued,
        }
    }

    /// Takes a slot, waiting in the queue until `deadline` if none is free. A full queue, or a
    /// wait that reaches the deadline, is `overloaded` (429).
    pub async fn admit(&self, deadline: Instant) -> Result<Slot> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Overloaded {
                message: format!("{} queries running and {} waiting", self.max_running, self.max_queued),
                retry_after: Duration::from_secs(1),
            });
        }
        let _waiting = Waiting(Arc::clone(&self.waiting));
        match tokio::time::timeout_at(deadline, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot { _permit: permit }),
            Ok(Err(_closed)) => Err(Error::Internal { message: "the query slots were closed".into() }),
            Err(_elapsed) => Err(Error::Overloaded {
                message: "no query slot became free within the request's time limit".into(),
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Queries executing now.
    pub fn running(&self) -> usize {
        self.max_running - self.slots.available_permits()
    }

    /// Queries waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// How large a query's SQL may be (`DUCKMESH_QUERY_MAX_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// Longest SQL text in bytes.
    pub max_sql_bytes: usize,
    /// Most expressions in one select list (checked on DuckDB's syntax tree).
    pub max_select_expressions: usize,
    /// Deepest nesting of parentheses, brackets and braces (subqueries, calls, lists, structs).
    pub max_nesting: usize,
}

impl SqlLimits {
    /// 100 KiB, 1,000 expressions, 64 levels.
    pub const DEFAULT: Self = Self { max_sql_bytes: 100 * 1024, max_select_expressions: 1000, max_nesting: 64 };
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Checks the text of `sql` against `limits` without parsing it: its length, NUL characters
/// (which DuckDB's C interface cannot carry), and the nesting of parentheses, brackets and braces
/// outside string literals, quoted identifiers and comments.
pub fn check_sql_text(sql: &str, limits: &SqlLimits) -> Result<()> {
    if sql.len() > limits.max_sql_bytes {
        return Err(Error::QueryTooComplex {
            message: format!("the SQL is {} bytes long; the limit is {}", sql.len(), limits.max_sql_bytes),
        });
    }
    if let Some(position) = sql.find('\0') {
        return Err(Error::QueryInvalid {
            message: format!("the SQL contains a NUL character (U+0000) at byte {position}; write chr(0) instead"),
        });
    }
    let depth = nesting_depth(sql);
    if depth > limits.max_nesting {
        return Err(Error::QueryTooComplex {
            message: format!(
                "the SQL nests parentheses or subqueries {depth} levels deep; the limit is {}",
                limits.max_nesting
            ),
        });
    }
    Ok(())
}

/// The deepest nesting of `(`, `[` and `{` in `sql`, skipping `'…'` strings (and `E'…'` with
/// backslash escapes), `"…"` identifiers, `$tag$…$tag$` strings, `--` and `/* */` comments.
pub fn nesting_depth(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let (mut depth, mut deepest, mut index) = (0usize, 0usize, 0usize);
    while index < bytes.len() {
        let byte = bytes[index];
        match byte {
            b'\'' | b'"' => {
                let backslash = byte == b'\''
                    && index > 0
                    && matches!(bytes[index - 1], b'e' | b'E')
                    && (index < 2 || !(bytes[index - 2].is_ascii_alphanumeric() || bytes[index - 2] == b'_'));
                index += 1;
                while index < bytes.len() {
                    if backslash && bytes[index] == b'\\' {
                        index += 2;
                        continue;
                    }
                    if bytes[index] == byte {
                        // A doubled quote is an escaped quote.
                        if bytes.get(index + 1) == Some(&byte) {
                            index += 2;
                            continue;
                        }
                        break;
                    }
                    index += 1;
                }
            }
            b'-' if bytes.get(index + 1) == Some(&b'-') => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            b'/' if bytes.get(index + 1) == Some(&b'*') => {
                let mut open = 1usize;
                index += 2;
                while index < bytes.len() && open > 0 {
                    if bytes[index] == b'/' && bytes.get(index + 1) == Some(&b'*') {
                        open += 1;
                        index += 1;
                    } else if bytes[index] == b'*' && bytes.get(index + 1) == Some(&b'/') {
                        open -= 1;
                        index += 1;
                    }
                    index += 1;
                }
                continue;
            }
            b'$' => {
                // `$tag$ … $tag$`; a `$1` parameter has no closing `$` before a non-tag byte.
                let tag_end = bytes[index + 1..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map(|offset| index + 1 + offset);
                if let Some(end) = tag_end.filter(|end| bytes[*end] == b'$') {
                    let tag = &sql[index..=end];
                    if !tag[1..tag.len() - 1].starts_with(|c: char| c.is_ascii_digit()) {
                        let body = end + 1;
                        index = sql[body..].find(tag).map_or(bytes.len(), |at| body + at + tag.len());
                        continue;
                    }
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        index += 1;
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_text_limits_skip_literals_and_comments() {
        let cases: &[(&str, usize)] = &[
            ("SELECT 1", 0),
            ("SELECT (1 + (2))", 2),
            ("SELECT '((((' , \"(((\" FROM t -- ((((\n WHERE (x)", 1),
            ("SELECT /* ((( /* nested ( */ ( */ [1, [2]]", 2),
            ("SELECT 'it''s (' || E'\\' ((' , $$ ((( $$, $q$ ( $q$, {'a': (1)}", 2),
            ("SELECT ($1)", 1),
            ("SELECT ((1", 2),
        ];
        for (sql, depth) in cases {
            assert_eq!(nesting_depth(sql), *depth, "{sql}");
        }
        let limits = SqlLimits { max_sql_bytes: 64, max_select_expressions: 10, max_nesting: 3 };
        check_sql_text("SELECT (((1)))", &limits).expect("at the limit");
        let deep = check_sql_text("SELECT ((((1))))", &limits).expect_err("too deep");
        assert_eq!((deep.error_code(), deep.status()), ("query_too_complex", 400));
        let long = check_sql_text(&format!("SELECT '{}'", "x".repeat(64)), &limits).expect_err("too long");
        assert_eq!(long.error_code(), "query_too_complex");
        let nul = check_sql_text("SELECT '\0'", &limits).expect_err("NUL");
        assert_eq!((nul.error_code(), nul.status()), ("query_invalid", 400));
    }

    #[tokio::test]
    async fn the_queue_is_bounded_and_drains() {
        let admission = Admission::new(1, 1);
        let far = Instant::now() + Duration::from_secs(30);
        let first = admission.admit(far).await.expect("free slot");
        let queued = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit(far).await.map(|_| ()) }
        });
        while admission.queued() == 0 {
            tokio::task::yield_now().await;
        }
        let refused = admission.admit(far).await.expect_err("queue full");
        assert_eq!((refused.error_code(), refused.retry_after()), ("overloaded", Some(1)));
        drop(first);
        queued.await.expect("join").expect("admitted after the first left");
        assert_eq!((admission.running(), admission.queued()), (0, 0));

        let _held = admission.admit(far).await.expect("slot");
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(admission.admit(soon).await.expect_err("times out").error_code(), "overloaded");
        assert_eq!(admission.queued(), 0);
    }

    #[test]
    fn rate_limits_are_per_user_and_per_tenant() {
        let limits = RateLimits {
            query_per_user: NonZeroU32::new(2),
            api_per_user: NonZeroU32::new(100),
            api_per_tenant: NonZeroU32::new(3),
        };
        let limiter = RateLimiter::new(limits);
        let ann = Principal { tenant: "acme".into(), user: "ann".into() };
        let bob = Principal { tenant: "acme".into(), user: "bob".into() };
        limiter.check_query(&ann).expect("1");
        limiter.check_query(&ann).expect("2");
        let error = limiter.check_query(&ann).expect_err("3rd in a minute");
        assert_eq!(error.error_code(), "rate_limited");
        assert!(error.retry_after().is_some_and(|s| (1..=30).contains(&s)), "{error:?}");
        limiter.check_query(&bob).expect("another user has their own budget");

        for _ in 0..3 {
            limiter.check_api(&ann).expect("tenant budget");
        }
        assert_eq!(limiter.check_api(&bob).expect_err("tenant spent").error_code(), "rate_limited");
        let other = Principal { tenant: "globex".into(), user: "ann".into() };
        limiter.check_api(&other).expect("another tenant");
        RateLimiter::new(RateLimits::OFF).check_query(&ann).expect("off");
    }
}
