//! The object store's knobs as a clap `Args` struct (backend choice, S3 bucket, endpoint,
//! credentials, multipart, listing, timeouts, retries), and choosing a backend from them, so
//! that binaries build their store in one line and the same code runs against S3 in a cluster
//! and a local directory in dev mode.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duckmesh_config::{ConfigError, knob};

use crate::error::{Error, Result};
use crate::s3::MAX_PART_SIZE;
use crate::{LocalStore, MIN_PART_SIZE, ObjectStore, RetryConfig, S3Config, S3Credentials, S3Store, StoreCounters};

/// The object store's knobs.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Object storage")]
pub struct StoreArgs {
    /// `s3` or `local`; unset: S3 when DUCKMESH_S3_BUCKET is set, else the local store when
    /// DUCKMESH_LOCAL_STORE_ROOT is
    #[arg(long, env = "DUCKMESH_STORAGE_BACKEND", value_parser = knob::choice(&["s3", "local"]))]
    pub storage_backend: Option<String>,
    /// Root directory of the local store (embedded mode)
    #[arg(long, env = "DUCKMESH_LOCAL_STORE_ROOT", value_parser = knob::path())]
    pub local_store_root: Option<PathBuf>,
    /// S3 bucket (required for the S3 backend)
    #[arg(long, env = "DUCKMESH_S3_BUCKET", value_parser = knob::text())]
    pub s3_bucket: Option<String>,
    /// Key prefix inside the bucket (a trailing `/` is dropped); unset: none
    #[arg(long, env = "DUCKMESH_S3_PREFIX", value_parser = knob::text())]
    pub s3_prefix: Option<String>,
    /// Endpoint URL of an S3-compatible server; unset: AWS
    #[arg(long, env = "DUCKMESH_S3_ENDPOINT", value_parser = knob::text())]
    pub s3_endpoint: Option<String>,
    /// Region
    #[arg(long, env = "DUCKMESH_S3_REGION", default_value = "us-east-1", value_parser = knob::text())]
    pub s3_region: String,
    /// Path-style addressing (`http://host/bucket/key`); unset: true when an endpoint is set
    #[arg(long, env = "DUCKMESH_S3_FORCE_PATH_STYLE", value_parser = knob::flag(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub s3_force_path_style: Option<bool>,
    /// Static access key id (with AWS_SECRET_ACCESS_KEY); unset: the AWS default provider
    /// chain (environment, profile, web identity / IRSA, ECS, instance metadata)
    #[arg(long, env = "AWS_ACCESS_KEY_ID", value_parser = knob::text())]
    pub aws_access_key_id: Option<String>,
    /// Static secret access key (with AWS_ACCESS_KEY_ID)
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true, value_parser = knob::text())]
    pub aws_secret_access_key: Option<String>,
    /// Session token of temporary static credentials
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true, value_parser = knob::text())]
    pub aws_session_token: Option<String>,
    /// Multipart part size in bytes; files up to this size are uploaded in one request
    #[arg(long, env = "DUCKMESH_S3_PART_SIZE", default_value = "8388608", value_parser = knob::number(MIN_PART_SIZE, MAX_PART_SIZE))]
    pub s3_part_size: u64,
    /// Parts uploaded at once by one file upload
    #[arg(long, env = "DUCKMESH_S3_UPLOAD_CONCURRENCY", default_value = "4", value_parser = knob::number(1, usize::MAX as u64))]
    pub s3_upload_concurrency: u64,
    /// Keys requested per list page
    #[arg(long, env = "DUCKMESH_S3_LIST_PAGE_SIZE", default_value = "1000", value_parser = knob::number(1, 1000))]
    pub s3_list_page_size: u64,
    /// TCP/TLS connect timeout (milliseconds)
    #[arg(long, env = "DUCKMESH_S3_CONNECT_TIMEOUT_MS", default_value = "5000", value_parser = knob::number(1, u64::MAX))]
    pub s3_connect_timeout_ms: u64,
    /// Timeout of one request attempt up to its response headers, request body included
    /// (milliseconds)
    #[arg(long, env = "DUCKMESH_S3_ATTEMPT_TIMEOUT_MS", default_value = "120000", value_parser = knob::number(1, u64::MAX))]
    pub s3_attempt_timeout_ms: u64,
    /// Longest wait for the next chunk of a response body (milliseconds)
    #[arg(long, env = "DUCKMESH_S3_READ_TIMEOUT_MS", default_value = "30000", value_parser = knob::number(1, u64::MAX))]
    pub s3_read_timeout_ms: u64,
    /// Delay scale of the first retry of a transient failure (milliseconds)
    #[arg(long, env = "DUCKMESH_S3_RETRY_BASE_MS", default_value = "100", value_parser = knob::number(0, u64::MAX))]
    pub s3_retry_base_ms: u64,
    /// Upper bound of any single retry delay (milliseconds)
    #[arg(long, env = "DUCKMESH_S3_RETRY_MAX_DELAY_MS", default_value = "5000", value_parser = knob::number(0, u64::MAX))]
    pub s3_retry_max_delay_ms: u64,
    /// Attempts in total, the first one included (1 disables retries)
    #[arg(long, env = "DUCKMESH_S3_RETRY_MAX_ATTEMPTS", default_value = "8", value_parser = knob::number(1, u64::from(u32::MAX)))]
    pub s3_retry_max_attempts: u64,
}

impl StoreArgs {
    /// Parses the knobs through `lookup` (a map in tests, dev mode's overlay).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        duckmesh_config::from_lookup(lookup).map_err(config_error)
    }

    /// The retry policy.
    pub fn retry_config(&self) -> Result<RetryConfig> {
        let config = RetryConfig {
            base_delay: Duration::from_millis(self.s3_retry_base_ms),
            max_delay: Duration::from_millis(self.s3_retry_max_delay_ms),
            max_attempts: u32::try_from(self.s3_retry_max_attempts).unwrap_or(u32::MAX),
        };
        config.validate()?;
        Ok(config)
    }

    /// The S3 configuration; the bucket is required.
    pub fn s3_config(&self) -> Result<S3Config> {
        let bucket =
            self.s3_bucket.clone().ok_or_else(|| Error::Config { message: "DUCKMESH_S3_BUCKET is required".into() })?;
        let mut config = S3Config::new(bucket);
        if let Some(prefix) = &self.s3_prefix {
            config = config.with_prefix(prefix.clone());
        }
        if let Some(endpoint) = &self.s3_endpoint {
            config = config.with_endpoint(endpoint.clone());
        }
        config.region = self.s3_region.clone();
        if let Some(path_style) = self.s3_force_path_style {
            config.force_path_style = path_style;
        }
        match (&self.aws_access_key_id, &self.aws_secret_access_key) {
            (Some(access_key_id), Some(secret_access_key)) => {
                config.credentials = Some(S3Credentials {
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret_access_key.clone(),
                    session_token: self.aws_session_token.clone(),
                });
            }
            (None, None) => {}
            _ => {
                return Err(Error::Config {
                    message: "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither".into(),
                });
            }
        }
        config.retry = self.retry_config()?;
        config.part_size = self.s3_part_size;
        config.upload_concurrency = usize::try_from(self.s3_upload_concurrency).unwrap_or(usize::MAX);
        config.list_page_size = i32::try_from(self.s3_list_page_size).unwrap_or(i32::MAX);
        config.connect_timeout = Duration::from_millis(self.s3_connect_timeout_ms);
        config.attempt_timeout = Duration::from_millis(self.s3_attempt_timeout_ms);
        config.read_timeout = Duration::from_millis(self.s3_read_timeout_ms);
        config.validate()?;
        Ok(config)
    }

    /// The backend: `DUCKMESH_STORAGE_BACKEND` when set; else S3 when `DUCKMESH_S3_BUCKET` is
    /// set, else the local store when `DUCKMESH_LOCAL_STORE_ROOT` is.
    pub fn store_config(&self) -> Result<StoreConfig> {
        match (self.storage_backend.as_deref(), &self.local_store_root) {
            (Some("s3"), _) => Ok(StoreConfig::S3(Box::new(self.s3_config()?))),
            (Some(_), Some(root)) => Ok(StoreConfig::Local { root: root.clone() }),
            (Some(_), None) => {
                Err(Error::Config { message: "DUCKMESH_LOCAL_STORE_ROOT is required for the local backend".into() })
            }
            (None, _) if self.s3_bucket.is_some() => Ok(StoreConfig::S3(Box::new(self.s3_config()?))),
            (None, Some(root)) => Ok(StoreConfig::Local { root: root.clone() }),
            (None, None) => Err(Error::Config {
                message: "no object store configured: set DUCKMESH_S3_BUCKET or DUCKMESH_LOCAL_STORE_ROOT".into(),
            }),
        }
    }
}

fn config_error(error: ConfigError) -> Error {
    Error::Config { message: error.message }
}

/// Which backend to use and how it is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// An S3 bucket (or S3-compatible server).
    S3(Box<S3Config>),
    /// A local directory (embedded mode).
    Local {
        /// The root directory (`DUCKMESH_LOCAL_STORE_ROOT`).
        root: PathBuf,
    },
}

impl StoreConfig {
    /// Reads the backend choice from the process environment ([`StoreArgs::store_config`]).
    pub fn from_env() -> Result<Self> {
        duckmesh_config::from_env::<StoreArgs>().map_err(config_error)?.store_config()
    }

    /// Like [`StoreConfig::from_env`] with a custom variable lookup.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        StoreArgs::from_lookup(lookup)?.store_config()
    }

    /// Builds the store. S3 requests are counted in `counters`; the local store has no
    /// retries to count.
    pub async fn build(self, counters: Arc<StoreCounters>) -> Result<Arc<dyn ObjectStore>> {
        Ok(match self {
            Self::S3(config) => Arc::new(S3Store::with_counters(*config, counters).await?),
            Self::Local { root } => Arc::new(LocalStore::new(root)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| vars.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
    }

    #[test]
    fn picks_the_backend() {
        let s3 = StoreConfig::from_lookup(lookup(&[("DUCKMESH_S3_BUCKET", "lake")])).expect("s3");
        assert!(matches!(s3, StoreConfig::S3(ref c) if c.bucket == "lake"));

        let local = StoreConfig::from_lookup(lookup(&[("DUCKMESH_LOCAL_STORE_ROOT", "/data")])).expect("local");
        assert_eq!(local, StoreConfig::Local { root: "/data".into() });

        let forced = StoreConfig::from_lookup(lookup(&[
            ("DUCKMESH_STORAGE_BACKEND", "local"),
            ("DUCKMESH_S3_BUCKET", "lake"),
            ("DUCKMESH_LOCAL_STORE_ROOT", "/data"),
        ]))
        .expect("local wins when asked for");
        assert!(matches!(forced, StoreConfig::Local { .. }));

        for vars in [
            &[][..],
            &[("DUCKMESH_STORAGE_BACKEND", "gcs")][..],
            &[("DUCKMESH_STORAGE_BACKEND", "local")][..],
            &[("DUCKMESH_STORAGE_BACKEND", "s3")][..],
        ] {
            let error = StoreConfig::from_lookup(lookup(vars)).expect_err("invalid");
            assert_eq!(error.error_code(), "object_store_config_invalid");
        }
    }

    #[tokio::test]
    async fn builds_a_local_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StoreConfig::Local { root: dir.path().join("objects") }
            .build(Arc::new(StoreCounters::new()))
            .await
            .expect("store");
        store.put("a/b", bytes::Bytes::from_static(b"x")).await.expect("put");
        assert_eq!(store.get("a/b").await.expect("get"), "x");
    }
}
