//! The query service's knobs (SPEC §3) as a clap `Args` struct: flags, `DUCKMESH_*` variables
//! and safe defaults, parsed once into a [`QueryConfig`]. A variable that is set but invalid is
//! an error naming it, never a silent default.

use crate::auth::ApiKeys;
use crate::error::ConfigError;
pub use crate::limits::SqlLimits;
use duckmesh_config::knob;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The query service's knobs.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Query API")]
pub struct QueryArgs {
    /// YAML/JSON list of {key_sha256 | key, tenant, user}; required unless
    /// DUCKMESH_QUERY_AUTH=none
    #[arg(long, env = "DUCKMESH_API_KEYS_FILE", value_parser = knob::path())]
    pub api_keys_file: Option<PathBuf>,
    /// `none` serves every request as tenant `default`, user `local` (local development only)
    #[arg(long, env = "DUCKMESH_QUERY_AUTH", default_value = "keys", value_parser = knob::choice(&["keys", "none"]))]
    pub query_auth: String,
    /// Namespace whose datasets a query reads when the request names none
    #[arg(long, env = "DUCKMESH_QUERY_NAMESPACE", default_value = "default", value_parser = knob::text())]
    pub query_namespace: String,
    /// Local cache of committed Parquet files, by SHA-256; unset: <temp dir>/duckmesh-query-cache
    #[arg(long, env = "DUCKMESH_QUERY_CACHE_DIR", value_parser = knob::path())]
    pub query_cache_dir: Option<PathBuf>,
    /// Size bound of the cache in bytes (least recently used files are evicted)
    #[arg(long, env = "DUCKMESH_QUERY_CACHE_BYTES", default_value = "2147483648", value_parser = knob::number(1024 * 1024, u64::MAX / 2))]
    pub query_cache_bytes: u64,
    /// Parent of each query's scratch directory (spill, export); unset: the temp dir
    #[arg(long, env = "DUCKMESH_QUERY_WORK_DIR", value_parser = knob::path())]
    pub query_work_dir: Option<PathBuf>,
    /// Lite mode: one query at a time (a single DuckDB) unless DUCKMESH_QUERY_CONCURRENCY says
    /// otherwise
    #[arg(long, env = "DUCKMESH_QUERY_LITE", default_value = "false", value_parser = knob::flag(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub query_lite: bool,
    /// Queries executing at once; unset: 4 (1 in Lite mode)
    #[arg(long, env = "DUCKMESH_QUERY_CONCURRENCY", value_parser = knob::number(1, 256))]
    pub query_concurrency: Option<u64>,
    /// Queries waiting for a slot before new ones get 429 overloaded
    #[arg(long, env = "DUCKMESH_QUERY_QUEUE", default_value = "16", value_parser = knob::number(0, 10_000))]
    pub query_queue: u64,
    /// Strict-barrier queries waiting at once before new ones get 429 overloaded
    #[arg(long, env = "DUCKMESH_QUERY_BARRIER_WAITERS", default_value = "64", value_parser = knob::number(1, 10_000))]
    pub query_barrier_waiters: u64,
    /// Runtime limit of POST /v1/query (seconds)
    #[arg(long, env = "DUCKMESH_QUERY_TIMEOUT_SECONDS", default_value = "60", value_parser = knob::number(1, 3600))]
    pub query_timeout_seconds: u64,
    /// Runtime limit of POST /v1/task/query (seconds)
    #[arg(long, env = "DUCKMESH_TASK_QUERY_TIMEOUT_SECONDS", default_value = "300", value_parser = knob::number(1, 86_400))]
    pub task_query_timeout_seconds: u64,
    /// Longest SQL text a query may send in bytes; longer ones get 400 query_too_complex
    #[arg(long, env = "DUCKMESH_QUERY_MAX_SQL_BYTES", default_value = "102400", value_parser = knob::number(1024, 64 * 1024 * 1024))]
    pub query_max_sql_bytes: u64,
    /// Most expressions in one select list; wider ones get 400 query_too_complex
    #[arg(long, env = "DUCKMESH_QUERY_MAX_SELECT_EXPRESSIONS", default_value = "1000", value_parser = knob::number(1, 1_000_000))]
    pub query_max_select_expressions: u64,
    /// Deepest nesting of parentheses and subqueries in a query's SQL; deeper ones get 400
    /// query_too_complex
    #[arg(long, env = "DUCKMESH_QUERY_MAX_NESTING", default_value = "64", value_parser = knob::number(1, 10_000))]
    pub query_max_nesting: u64,
    /// Largest result returned inline in rows; larger ones are exported as Parquet
    #[arg(long, env = "DUCKMESH_QUERY_INLINE_MAX_ROWS", default_value = "10000", value_parser = knob::number(1, 10_000_000))]
    pub query_inline_max_rows: u64,
    /// Largest inline response body in bytes; larger results are exported
    #[arg(long, env = "DUCKMESH_QUERY_INLINE_MAX_BYTES", default_value = "10485760", value_parser = knob::number(1024, 1024 * 1024 * 1024))]
    pub query_inline_max_bytes: u64,
    /// Validity of an export's presigned URL (seconds)
    #[arg(long, env = "DUCKMESH_QUERY_EXPORT_TTL_SECONDS", default_value = "3600", value_parser = knob::number(60, 7 * 86_400))]
    pub query_export_ttl_seconds: u64,
    /// Locked-down databases kept warm for reuse, one per exact snapshot set (0 = a fresh
    /// database per query)
    #[arg(long, env = "DUCKMESH_QUERY_ENGINE_POOL", default_value = "4", value_parser = knob::number(0, 1024))]
    pub query_engine_pool: u64,
    /// DuckDB threads per query; unset: all cores
    #[arg(long, env = "DUCKMESH_QUERY_THREADS", value_parser = knob::number(1, 1024))]
    pub query_threads: Option<u64>,
    /// DuckDB memory limit of each database in bytes; unset: DuckDB's default
    #[arg(long, env = "DUCKMESH_QUERY_MEMORY_LIMIT_BYTES", value_parser = knob::number(64 * 1024 * 1024, u64::MAX / 2))]
    pub query_memory_limit_bytes: Option<u64>,
    /// POST /v1/query requests per minute per user (0 = off)
    #[arg(long, env = "DUCKMESH_QUERY_RATE_LIMIT_PER_USER", default_value = "10", value_parser = knob::number(0, 1_000_000))]
    pub query_rate_limit_per_user: u64,
    /// API requests per minute per user (0 = off)
    #[arg(long, env = "DUCKMESH_API_RATE_LIMIT_PER_USER", default_value = "100", value_parser = knob::number(0, 1_000_000))]
    pub api_rate_limit_per_user: u64,
    /// API requests per minute per tenant (0 = off)
    #[arg(long, env = "DUCKMESH_API_RATE_LIMIT_PER_TENANT", default_value = "1000", value_parser = knob::number(0, 1_000_000))]
    pub api_rate_limit_per_tenant: u64,
    /// Largest POST /v1/ingest body in bytes; larger ones get 413
    #[arg(long, env = "DUCKMESH_INGEST_MAX_BODY_BYTES", default_value = "8388608", value_parser = knob::number(1024, 1024 * 1024 * 1024))]
    pub ingest_max_body_bytes: u64,
    /// Most records in one ingest request
    #[arg(long, env = "DUCKMESH_INGEST_MAX_RECORDS", default_value = "10000", value_parser = knob::number(1, 1_000_000))]
    pub ingest_max_records: u64,
    /// Records per minute one tenant may ingest into one dataset, unless the Dataset sets
    /// spec.ingest.rateLimitPerMinute (0 = off)
    #[arg(long, env = "DUCKMESH_INGEST_RECORDS_PER_MINUTE", default_value = "600000", value_parser = knob::number(0, 1_000_000_000))]
    pub ingest_records_per_minute: u64,
    /// Acknowledged, not yet visible records per dataset beyond which ingest gets 429, unless
    /// the Dataset sets spec.ingest.maxPendingRecords
    #[arg(long, env = "DUCKMESH_INGEST_MAX_PENDING", default_value = "100000", value_parser = knob::number(1, 1_000_000_000))]
    pub ingest_max_pending: u64,
    /// Emergency read-only mode for this process: ingest answers 503 read_only (the catalog
    /// switch `duckmesh read-only on` covers every process)
    #[arg(long, env = "DUCKMESH_READ_ONLY", default_value = "false", value_parser = knob::flag(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub read_only: bool,
}

impl QueryArgs {
    /// The typed configuration; the API keys file is read here. The authentication choice
    /// must be explicit: a keys file, or `DUCKMESH_QUERY_AUTH=none`.
    pub fn into_config(self) -> Result<QueryConfig, ConfigError> {
        let temp = std::env::temp_dir();
        let mut config = QueryConfig::local(&temp);
        config.auth = match (self.api_keys_file, self.query_auth.as_str()) {
            (Some(_), "none") => {
                return Err(ConfigError::new("DUCKMESH_QUERY_AUTH=none contradicts DUCKMESH_API_KEYS_FILE; set one"));
            }
            (Some(path), _) => Some(ApiKeys::from_file(&path)?),
            (None, "none") => None,
            (None, _) => {
                return Err(ConfigError::new(
                    "no API keys: set DUCKMESH_API_KEYS_FILE (a mounted Secret), or DUCKMESH_QUERY_AUTH=none for local \
                     development without authentication",
                ));
            }
        };
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let per_minute = |n: u64| NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX));
        config.namespace = self.query_namespace;
        config.cache_dir = self.query_cache_dir.unwrap_or_else(|| temp.join("duckmesh-query-cache"));
        config.work_dir = self.query_work_dir.unwrap_or(temp);
        config.cache_bytes = self.query_cache_bytes;
        config.max_running = match (self.query_concurrency, self.query_lite) {
            (Some(n), _) => size(n),
            (None, true) => 1,
            (None, false) => config.max_running,
        };
        config.max_queued = size(self.query_queue);
        config.max_barrier_waiters = size(self.query_barrier_waiters);
        config.user_timeout = Duration::from_secs(self.query_timeout_seconds);
        config.task_timeout = Duration::from_secs(self.task_query_timeout_seconds);
        config.sql_limits = SqlLimits {
            max_sql_bytes: size(self.query_max_sql_bytes),
            max_select_expressions: size(self.query_max_select_expressions),
            max_nesting: size(self.query_max_nesting),
        };
        config.inline_max_rows = self.query_inline_max_rows;
        config.inline_max_bytes = self.query_inline_max_bytes;
        config.export_ttl = Duration::from_secs(self.query_export_ttl_seconds);
        config.engine_pool = size(self.query_engine_pool);
        config.ingest = IngestLimits {
            max_body_bytes: size(self.ingest_max_body_bytes),
            max_records: size(self.ingest_max_records),
            records_per_minute: per_minute(self.ingest_records_per_minute),
            max_pending: self.ingest_max_pending,
        };
        config.read_only = self.read_only;
        config.threads = self.query_threads;
        config.memory_limit_bytes = self.query_memory_limit_bytes;
        config.rate_limits = RateLimits {
            query_per_user: per_minute(self.query_rate_limit_per_user),
            api_per_user: per_minute(self.api_rate_limit_per_user),
            api_per_tenant: per_minute(self.api_rate_limit_per_tenant),
        };
        Ok(config)
    }
}

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

    /// Reads the knobs through `lookup` (a map in tests, dev mode's overlay).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        duckmesh_config::from_lookup::<QueryArgs>(lookup)?.into_config()
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
        let command = <QueryArgs as clap::Args>::augment_args(clap::Command::new("api"));
        for name in command.get_arguments().filter_map(|arg| arg.get_env().and_then(|name| name.to_str())) {
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
