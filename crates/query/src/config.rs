//! The query service's knobs (SPEC §3), parsed once from `DUCKMESH_*` variables with safe
//! defaults. A variable that is set but invalid is an error naming it, never a silent default.

use crate::auth::ApiKeys;
use crate::error::ConfigError;
pub use crate::limits::SqlLimits;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every knob: variable, default, meaning (for docs and `--help`).
pub const KNOBS: &[(&str, &str, &str)] = &[
    (
        "DUCKMESH_API_KEYS_FILE",
        "—",
        "YAML/JSON list of {key_sha256 | key, tenant, user}; required unless DUCKMESH_QUERY_AUTH=none",
    ),
    (
        "DUCKMESH_QUERY_AUTH",
        "keys",
        "`none` serves every request as tenant `default`, user `local` (local development only)",
    ),
    ("DUCKMESH_QUERY_NAMESPACE", "default", "namespace whose datasets a query reads when the request names none"),
    (
        "DUCKMESH_QUERY_CACHE_DIR",
        "<temp dir>/duckmesh-query-cache",
        "local cache of committed Parquet files, by SHA-256",
    ),
    ("DUCKMESH_QUERY_CACHE_BYTES", "2147483648", "size bound of the cache (least recently used files are evicted)"),
    ("DUCKMESH_QUERY_WORK_DIR", "<temp dir>", "parent of each query's scratch directory (spill, export)"),
    (
        "DUCKMESH_QUERY_LITE",
        "false",
        "Lite mode: one query at a time (a single DuckDB) unless DUCKMESH_QUERY_CONCURRENCY says otherwise",
    ),
    ("DUCKMESH_QUERY_CONCURRENCY", "4 (1 in Lite mode)", "queries executing at once"),
    ("DUCKMESH_QUERY_QUEUE", "16", "queries waiting for a slot before new ones get 429 overloaded"),
    (
        "DUCKMESH_QUERY_BARRIER_WAITERS",
        "64",
        "strict-barrier queries waiting at once before new ones get 429 overloaded",
    ),
    ("DUCKMESH_QUERY_TIMEOUT_SECONDS", "60", "runtime limit of POST /v1/query"),
    ("DUCKMESH_TASK_QUERY_TIMEOUT_SECONDS", "300", "runtime limit of POST /v1/task/query"),
    (
        "DUCKMESH_QUERY_MAX_SQL_BYTES",
        "102400",
        "longest SQL text a query may send; longer ones get 400 query_too_complex",
    ),
    (
        "DUCKMESH_QUERY_MAX_SELECT_EXPRESSIONS",
        "1000",
        "most expressions in one select list; wider ones get 400 query_too_complex",
    ),
    (
        "DUCKMESH_QUERY_MAX_NESTING",
        "64",
        "deepest nesting of parentheses and subqueries in a query's SQL; deeper ones get 400 query_too_complex",
    ),
    ("DUCKMESH_QUERY_INLINE_MAX_ROWS", "10000", "largest result returned inline; larger ones are exported as Parquet"),
    ("DUCKMESH_QUERY_INLINE_MAX_BYTES", "10485760", "largest inline response body; larger results are exported"),
    ("DUCKMESH_QUERY_EXPORT_TTL_SECONDS", "3600", "validity of an export's presigned URL"),
    (
        "DUCKMESH_QUERY_ENGINE_POOL",
        "4",
        "locked-down databases kept warm for reuse, one per exact snapshot set (0 = a fresh database per query)",
    ),
    ("DUCKMESH_QUERY_THREADS", "all cores", "DuckDB threads per query"),
    ("DUCKMESH_QUERY_MEMORY_LIMIT_BYTES", "DuckDB's default", "DuckDB memory limit of each database"),
    ("DUCKMESH_QUERY_RATE_LIMIT_PER_USER", "10", "POST /v1/query requests per minute per user (0 = off)"),
    ("DUCKMESH_API_RATE_LIMIT_PER_USER", "100", "API requests per minute per user (0 = off)"),
    ("DUCKMESH_API_RATE_LIMIT_PER_TENANT", "1000", "API requests per minute per tenant (0 = off)"),
    ("DUCKMESH_INGEST_MAX_BODY_BYTES", "8388608", "largest POST /v1/ingest body; larger ones get 413"),
    ("DUCKMESH_INGEST_MAX_RECORDS", "10000", "most records in one ingest request"),
    (
        "DUCKMESH_INGEST_RECORDS_PER_MINUTE",
        "600000",
        "records per minute one tenant may ingest into one dataset, unless the Dataset sets spec.ingest.rateLimitPerMinute (0 = off)",
    ),
    (
        "DUCKMESH_INGEST_MAX_PENDING",
        "100000",
        "acknowledged, not yet visible records per dataset beyond which ingest gets 429, unless the Dataset sets spec.ingest.maxPendingRecords",
    ),
    (
        "DUCKMESH_READ_ONLY",
        "false",
        "emergency read-only mode for this process: ingest answers 503 read_only (the catalog switch `duckmesh read-only on` covers every process)",
    ),
];

/// Requests per minute; `None` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `POST /v1/query` per user.
    pub query_per_user: Option<NonZeroU32>,
    /// Every `/v1` request per user.
    pub api_per_user: Option<NonZeroU32>,
    /// Every `/v1` request per tenant.
    pub api_per_tenant: Option<NonZeroU32>,
}

impl RateLimits {
    /// SPEC §3: 10/min per user for queries; 100/min per user and 1000/min per tenant overall.
    pub const SPEC: Self = Self {
        query_per_user: NonZeroU32::new(10),
        api_per_user: NonZeroU32::new(100),
        api_per_tenant: NonZeroU32::new(1000),
    };

    /// No rate limits (benchmarks, tests of other behaviour).
    pub const OFF: Self = Self { query_per_user: None, api_per_user: None, api_per_tenant: None };
}

/// How the query service behaves.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// API keys; `None` is the explicit no-auth mode for local development, in which every
    /// request acts as tenant `default`, user `local`.
    pub auth: Option<ApiKeys>,
    /// Namespace of the datasets a request reads when it names none.
    pub namespace: String,
    /// Local file cache directory.
    pub cache_dir: PathBuf,
    /// Size bound of the file cache in bytes.
    pub cache_bytes: u64,
    /// Parent of each query's scratch directory.
    pub work_dir: PathBuf,
    /// Queries executing at once.
    pub max_running: usize,
    /// Queries waiting for a slot.
    pub max_queued: usize,
    /// Strict-barrier queries waiting at once.
    pub max_barrier_waiters: usize,
    /// Runtime limit of interactive queries.
    pub user_timeout: Duration,
    /// Runtime limit of task queries.
    pub task_timeout: Duration,
    /// Size limits checked before DuckDB plans a query.
    pub sql_limits: SqlLimits,
    /// Most rows returned inline.
    pub inline_max_rows: u64,
    /// Largest inline body.
    pub inline_max_bytes: u64,
    /// Validity of export URLs.
    pub export_ttl: Duration,
    /// Key prefix of exports (`<prefix>/<tenant>/<query id>.parquet`).
    pub export_prefix: String,
    /// DuckDB threads per query.
    pub threads: Option<u64>,
    /// DuckDB memory limit per query.
    pub memory_limit_bytes: Option<u64>,
    /// Request rate limits.
    pub rate_limits: RateLimits,
    /// How often a barrier wait re-reads the catalog even without a notification (a lost
    /// notification then costs at most this much).
    pub barrier_recheck: Duration,
    /// Parallel downloads per query.
    pub download_concurrency: usize,
    /// Locked-down databases kept for reuse, one per exact snapshot set (0: a fresh database
    /// per query).
    pub engine_pool: usize,
    /// Ingest limits.
    pub ingest: IngestLimits,
    /// Process-local emergency read-only mode (the catalog switch is the shared one).
    pub read_only: bool,
}

/// Limits of `POST /v1/ingest/{dataset}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Largest body in bytes.
    pub max_body_bytes: usize,
    /// Most records per request.
    pub max_records: usize,
    /// Records per minute per tenant and dataset when the Dataset sets none (`None`: off).
    pub records_per_minute: Option<NonZeroU32>,
    /// Pending records per dataset when the Dataset sets none.
    pub max_pending: u64,
}

impl IngestLimits {
    /// The defaults: 8 MiB, 10,000 records, 600,000 records/min, 100,000 pending.
    pub const DEFAULT: Self = Self {
        max_body_bytes: 8 * 1024 * 1024,
        max_records: 10_000,
        records_per_minute: NonZeroU32::new(600_000),
        max_pending: 100_000,
    };
}

impl QueryConfig {
    /// Defaults with everything under `dir` and no auth: for tests and `duckmesh dev`.
    pub fn local(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self {
            auth: None,
            namespace: "default".into(),
            cache_dir: dir.join("query-cache"),
            cache_bytes: 2 * 1024 * 1024 * 1024,
            work_dir: dir.join("query-work"),
            max_running: 4,
            max_queued: 16,
            max_barrier_waiters: 64,
            user_timeout: Duration::from_secs(60),
            task_timeout: Duration::from_secs(300),
            sql_limits: SqlLimits::DEFAULT,
            inline_max_rows: 10_000,
            inline_max_bytes: 10 * 1024 * 1024,
            export_ttl: Duration::from_secs(3600),
            export_prefix: "_query-exports".into(),
            threads: None,
            memory_limit_bytes: None,
            rate_limits: RateLimits::SPEC,
            barrier_recheck: Duration::from_secs(2),
            download_concurrency: 8,
            engine_pool: 4,
            ingest: IngestLimits::DEFAULT,
            read_only: false,
        }
    }

    /// [`QueryConfig::local`] in Lite mode: one query at a time.
    pub fn lite(dir: impl AsRef<Path>) -> Self {
        Self { max_running: 1, ..Self::local(dir) }
    }

    /// Reads the knobs from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the knobs through `lookup` (tests pass a map instead of touching the process
    /// environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let knobs = duckmesh_core::Knobs::new(lookup);
        let get = |name: &str| knobs.string(name);
        let number = |name: &str, min: u64, max: u64| knobs.number(name, min, max).map_err(ConfigError::from);
        let flag = |name: &str| knobs.flag(name).map_err(ConfigError::from);
        let temp = std::env::temp_dir();
        let mut config = Self::local(&temp);
        config.cache_dir = temp.join("duckmesh-query-cache");
        config.work_dir = temp.clone();

        config.auth = match (get("DUCKMESH_API_KEYS_FILE"), get("DUCKMESH_QUERY_AUTH").map(|v| v.to_ascii_lowercase()))
        {
            (Some(_), Some(mode)) if mode == "none" => {
                return Err(ConfigError::new("DUCKMESH_QUERY_AUTH=none contradicts DUCKMESH_API_KEYS_FILE; set one"));
            }
            (Some(path), _) => Some(ApiKeys::from_file(Path::new(&path))?),
            (None, Some(mode)) if mode == "none" => None,
            (None, Some(mode)) if mode != "keys" => {
                return Err(ConfigError::new("DUCKMESH_QUERY_AUTH must be `keys` or `none`"));
            }
            (None, _) => {
                return Err(ConfigError::new(
                    "no API keys: set DUCKMESH_API_KEYS_FILE (a mounted Secret), or DUCKMESH_QUERY_AUTH=none for local \
                     development without authentication",
                ));
            }
        };
        if let Some(namespace) = get("DUCKMESH_QUERY_NAMESPACE") {
            config.namespace = namespace;
        }
        if let Some(dir) = get("DUCKMESH_QUERY_CACHE_DIR") {
            config.cache_dir = dir.into();
        }
        if let Some(dir) = get("DUCKMESH_QUERY_WORK_DIR") {
            config.work_dir = dir.into();
        }
        if let Some(bytes) = number("DUCKMESH_QUERY_CACHE_BYTES", 1024 * 1024, u64::MAX / 2)? {
            config.cache_bytes = bytes;
        }
        if flag("DUCKMESH_QUERY_LITE")? {
            config.max_running = 1;
        }
        if let Some(n) = number("DUCKMESH_QUERY_CONCURRENCY", 1, 256)? {
            config.max_running = n as usize;
        }
        if let Some(n) = number("DUCKMESH_QUERY_QUEUE", 0, 10_000)? {
            config.max_queued = n as usize;
        }
        if let Some(n) = number("DUCKMESH_QUERY_BARRIER_WAITERS", 1, 10_000)? {
            config.max_barrier_waiters = n as usize;
        }
        if let Some(s) = number("DUCKMESH_QUERY_TIMEOUT_SECONDS", 1, 3600)? {
            config.user_timeout = Duration::from_secs(s);
        }
        if let Some(s) = number("DUCKMESH_TASK_QUERY_TIMEOUT_SECONDS", 1, 86_400)? {
            config.task_timeout = Duration::from_secs(s);
        }
        if let Some(n) = number("DUCKMESH_QUERY_MAX_SQL_BYTES", 1024, 64 * 1024 * 1024)? {
            config.sql_limits.max_sql_bytes = n as usize;
        }
        if let Some(n) = number("DUCKMESH_QUERY_MAX_SELECT_EXPRESSIONS", 1, 1_000_000)? {
            config.sql_limits.max_select_expressions = n as usize;
        }
        if let Some(n) = number("DUCKMESH_QUERY_MAX_NESTING", 1, 10_000)? {
            config.sql_limits.max_nesting = n as usize;
        }
        if let Some(n) = number("DUCKMESH_QUERY_INLINE_MAX_ROWS", 1, 10_000_000)? {
            config.inline_max_rows = n;
        }
        if let Some(n) = number("DUCKMESH_QUERY_INLINE_MAX_BYTES", 1024, 1024 * 1024 * 1024)? {
            config.inline_max_bytes = n;
        }
        if let Some(s) = number("DUCKMESH_QUERY_EXPORT_TTL_SECONDS", 60, 7 * 86_400)? {
            config.export_ttl = Duration::from_secs(s);
        }
        if let Some(n) = number("DUCKMESH_QUERY_ENGINE_POOL", 0, 1024)? {
            config.engine_pool = n as usize;
        }
        if let Some(n) = number("DUCKMESH_INGEST_MAX_BODY_BYTES", 1024, 1024 * 1024 * 1024)? {
            config.ingest.max_body_bytes = n as usize;
        }
        if let Some(n) = number("DUCKMESH_INGEST_MAX_RECORDS", 1, 1_000_000)? {
            config.ingest.max_records = n as usize;
        }
        if let Some(n) = number("DUCKMESH_INGEST_RECORDS_PER_MINUTE", 0, 1_000_000_000)? {
            config.ingest.records_per_minute = NonZeroU32::new(n as u32);
        }
        if let Some(n) = number("DUCKMESH_INGEST_MAX_PENDING", 1, 1_000_000_000)? {
            config.ingest.max_pending = n;
        }
        config.read_only = flag("DUCKMESH_READ_ONLY")?;
        config.threads = number("DUCKMESH_QUERY_THREADS", 1, 1024)?;
        config.memory_limit_bytes = number("DUCKMESH_QUERY_MEMORY_LIMIT_BYTES", 64 * 1024 * 1024, u64::MAX / 2)?;
        let per_minute = |name: &str, default: Option<NonZeroU32>| -> Result<Option<NonZeroU32>, ConfigError> {
            Ok(match number(name, 0, 1_000_000)? {
                None => default,
                Some(n) => NonZeroU32::new(n as u32),
            })
        };
        config.rate_limits = RateLimits {
            query_per_user: per_minute("DUCKMESH_QUERY_RATE_LIMIT_PER_USER", RateLimits::SPEC.query_per_user)?,
            api_per_user: per_minute("DUCKMESH_API_RATE_LIMIT_PER_USER", RateLimits::SPEC.api_per_user)?,
            api_per_tenant: per_minute("DUCKMESH_API_RATE_LIMIT_PER_TENANT", RateLimits::SPEC.api_per_tenant)?,
        };
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn auth_must_be_chosen_explicitly() {
        let error = QueryConfig::from_lookup(lookup(&[])).expect_err("no auth choice");
        assert!(error.message.contains("DUCKMESH_API_KEYS_FILE"), "{error}");
        let open = QueryConfig::from_lookup(lookup(&[("DUCKMESH_QUERY_AUTH", "none")])).expect("no auth");
        assert!(open.auth.is_none());
        assert_eq!((open.max_running, open.max_queued, open.inline_max_rows), (4, 16, 10_000));
        assert_eq!(open.rate_limits, RateLimits::SPEC);

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("keys.yaml");
        std::fs::write(&file, "- {key: k, tenant: acme, user: ann}\n").expect("write");
        let path = file.to_string_lossy().into_owned();
        let keyed = QueryConfig::from_lookup(lookup(&[("DUCKMESH_API_KEYS_FILE", &path)])).expect("keys");
        assert_eq!(keyed.auth.map(|keys| keys.len()), Some(1));
        assert!(
            QueryConfig::from_lookup(lookup(&[("DUCKMESH_API_KEYS_FILE", &path), ("DUCKMESH_QUERY_AUTH", "none")]))
                .is_err()
        );
        assert!(QueryConfig::from_lookup(lookup(&[("DUCKMESH_API_KEYS_FILE", "/nonexistent/keys")])).is_err());
    }

    #[test]
    fn every_knob_is_documented() {
        let docs = include_str!("../../../docs/configuration.md");
        for (name, _, _) in KNOBS {
            assert!(docs.contains(&format!("`{name}`")), "{name} is missing from docs/configuration.md");
        }
    }

    #[test]
    fn knobs_are_read_and_checked() {
        let config = QueryConfig::from_lookup(lookup(&[
            ("DUCKMESH_QUERY_AUTH", "none"),
            ("DUCKMESH_QUERY_LITE", "true"),
            ("DUCKMESH_QUERY_CACHE_BYTES", "5000000"),
            ("DUCKMESH_QUERY_RATE_LIMIT_PER_USER", "0"),
            ("DUCKMESH_API_RATE_LIMIT_PER_TENANT", "50"),
            ("DUCKMESH_QUERY_TIMEOUT_SECONDS", "5"),
            ("DUCKMESH_QUERY_MAX_SQL_BYTES", "2048"),
            ("DUCKMESH_QUERY_MAX_SELECT_EXPRESSIONS", "50000"),
            ("DUCKMESH_QUERY_MAX_NESTING", "8"),
        ]))
        .expect("valid");
        assert_eq!(config.max_running, 1);
        assert_eq!(config.cache_bytes, 5_000_000);
        assert_eq!(config.rate_limits.query_per_user, None);
        assert_eq!(config.rate_limits.api_per_tenant, NonZeroU32::new(50));
        assert_eq!(config.user_timeout, Duration::from_secs(5));
        assert_eq!(
            config.sql_limits,
            SqlLimits { max_sql_bytes: 2048, max_select_expressions: 50_000, max_nesting: 8 }
        );
        for (name, value) in [
            ("DUCKMESH_QUERY_CONCURRENCY", "0"),
            ("DUCKMESH_QUERY_CACHE_BYTES", "lots"),
            ("DUCKMESH_QUERY_LITE", "maybe"),
            ("DUCKMESH_QUERY_AUTH", "ldap"),
            ("DUCKMESH_QUERY_MAX_SELECT_EXPRESSIONS", "0"),
            ("DUCKMESH_QUERY_MAX_NESTING", "deep"),
        ] {
            let error = QueryConfig::from_lookup(lookup(&[("DUCKMESH_QUERY_AUTH", "none"), (name, value)]))
                .err()
                .or_else(|| QueryConfig::from_lookup(lookup(&[(name, value)])).err())
                .expect("invalid");
            assert!(error.message.contains(name) || error.message.contains("DUCKMESH_QUERY_AUTH"), "{error}");
        }
    }
}
