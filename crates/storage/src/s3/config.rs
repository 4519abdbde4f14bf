//! What an [`S3Store`](super::S3Store) is built from: bucket, endpoint, addressing,
//! credentials, multipart, listing and timeout knobs, read from `DUCKMESH_S3_*` / `AWS_*`
//! variables and validated before any client exists.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::key::validate_key;
use crate::retry::RetryConfig;

/// The smallest multipart part size S3 accepts (5 MiB); also the lower bound of
/// [`S3Config::part_size`].
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The largest part S3 accepts (5 GiB).
pub(crate) const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// Static S3 credentials. `Debug` never prints the secret parts.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// Access key id (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// Secret access key (`AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: String,
    /// Session token for temporary credentials (`AWS_SESSION_TOKEN`).
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Configuration of an [`S3Store`](super::S3Store). Build it with [`S3Config::new`] and adjust the fields,
/// or read it from the environment with [`S3Config::from_env`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct S3Config {
    /// Bucket name (`DUCKMESH_S3_BUCKET`, required).
    pub bucket: String,
    /// Key prefix inside the bucket, without a trailing `/` (`DUCKMESH_S3_PREFIX`, default
    /// none). Keys given to the store are relative to it.
    pub prefix: Option<String>,
    /// Endpoint URL of an S3-compatible server (`DUCKMESH_S3_ENDPOINT`, default AWS).
    pub endpoint: Option<String>,
    /// Region (`DUCKMESH_S3_REGION`, default `us-east-1`).
    pub region: String,
    /// Path-style addressing, `http://host/bucket/key` (`DUCKMESH_S3_FORCE_PATH_STYLE`,
    /// default `true` when an endpoint is set, otherwise `false`).
    pub force_path_style: bool,
    /// Static credentials (`AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` +
    /// `AWS_SESSION_TOKEN`); `None` uses the AWS default provider chain (environment,
    /// profile, web identity / IRSA, ECS, instance metadata).
    pub credentials: Option<S3Credentials>,
    /// Retry policy for transient failures.
    pub retry: RetryConfig,
    /// Multipart part size in bytes, at least 5 MiB (`DUCKMESH_S3_PART_SIZE`, default
    /// 8 MiB). Files up to this size are uploaded with a single request.
    pub part_size: u64,
    /// Parts uploaded concurrently by one `put_file` (`DUCKMESH_S3_UPLOAD_CONCURRENCY`,
    /// default 4).
    pub upload_concurrency: usize,
    /// Keys requested per list page, 1–1000 (`DUCKMESH_S3_LIST_PAGE_SIZE`, default 1000).
    pub list_page_size: i32,
    /// TCP/TLS connect timeout (`DUCKMESH_S3_CONNECT_TIMEOUT_MS`, default 5 s).
    pub connect_timeout: Duration,
    /// Timeout of one request attempt up to its response headers, request body included
    /// (`DUCKMESH_S3_ATTEMPT_TIMEOUT_MS`, default 120 s).
    pub attempt_timeout: Duration,
    /// Longest wait for the next chunk of a response body (`DUCKMESH_S3_READ_TIMEOUT_MS`,
    /// default 30 s).
    pub read_timeout: Duration,
}

impl S3Config {
    /// A configuration for `bucket` on AWS with every other knob at its default.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: None,
            endpoint: None,
            region: "us-east-1".into(),
            force_path_style: false,
            credentials: None,
            retry: RetryConfig::default(),
            part_size: 8 * 1024 * 1024,
            upload_concurrency: 4,
            list_page_size: 1000,
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(120),
            read_timeout: Duration::from_secs(30),
        }
    }

    /// Points the configuration at an S3-compatible endpoint and turns on path-style
    /// addressing, which such servers generally need.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self.force_path_style = true;
        self
    }

    /// Uses static credentials instead of the default provider chain.
    pub fn with_credentials(mut self, access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        self.credentials = Some(S3Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        });
        self
    }

    /// Sets the key prefix inside the bucket (a trailing `/` is dropped).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let trimmed = prefix.trim_end_matches('/');
        self.prefix = (!trimmed.is_empty()).then(|| trimmed.to_owned());
        self
    }

    /// Reads the configuration from the process environment (see the field docs for the
    /// variable names and defaults; [`StoreArgs`](crate::StoreArgs) declares them).
    pub fn from_env() -> Result<Self> {
        crate::StoreArgs::from_lookup(|name| std::env::var(name).ok())?.s3_config()
    }

    /// Like [`S3Config::from_env`] with a custom variable lookup.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        crate::StoreArgs::from_lookup(lookup)?.s3_config()
    }

    /// Checks the configuration for values S3 or this crate cannot work with.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(Error::Config { message });
        if self.bucket.trim().is_empty() {
            return fail("bucket name is empty".into());
        }
        if let Some(prefix) = &self.prefix {
            validate_key(prefix).or_else(|_| fail("DUCKMESH_S3_PREFIX is not a valid key prefix".into()))?;
        }
        if let Some(endpoint) = &self.endpoint {
            match url::Url::parse(endpoint) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
                _ => return fail("DUCKMESH_S3_ENDPOINT must be an http(s) URL".into()),
            }
        }
        if self.region.trim().is_empty() {
            return fail("region is empty".into());
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return fail(format!("part size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes"));
        }
        if self.upload_concurrency == 0 {
            return fail("upload concurrency must be at least 1".into());
        }
        if !(1..=1000).contains(&self.list_page_size) {
            return fail("list page size must be between 1 and 1000".into());
        }
        if self.connect_timeout.is_zero() || self.attempt_timeout.is_zero() || self.read_timeout.is_zero() {
            return fail("timeouts must be positive".into());
        }
        self.retry.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup_from(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn config_from_env_applies_defaults() {
        let lookup = lookup_from(&[("DUCKMESH_S3_BUCKET", "lake")]);
        let config = S3Config::from_lookup(lookup).expect("valid");
        assert_eq!(config.bucket, "lake");
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.endpoint, None);
        assert!(!config.force_path_style);
        assert_eq!(config.credentials, None);
        assert_eq!(config.part_size, 8 * 1024 * 1024);
        assert_eq!(config.retry, RetryConfig::default());
    }

    #[test]
    fn config_from_env_reads_every_knob() {
        let lookup = lookup_from(&[
            ("DUCKMESH_S3_BUCKET", "lake"),
            ("DUCKMESH_S3_PREFIX", "prod/duckmesh/"),
            ("DUCKMESH_S3_ENDPOINT", "http://minio:9000"),
            ("DUCKMESH_S3_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
            ("DUCKMESH_S3_PART_SIZE", "16777216"),
            ("DUCKMESH_S3_LIST_PAGE_SIZE", "100"),
            ("DUCKMESH_S3_RETRY_MAX_ATTEMPTS", "3"),
            ("DUCKMESH_S3_READ_TIMEOUT_MS", "1500"),
        ]);
        let config = S3Config::from_lookup(lookup).expect("valid");
        assert_eq!(config.prefix.as_deref(), Some("prod/duckmesh"));
        assert_eq!(config.endpoint.as_deref(), Some("http://minio:9000"));
        assert!(config.force_path_style, "endpoint implies path style");
        assert_eq!(config.region, "eu-west-1");
        assert_eq!(config.part_size, 16 * 1024 * 1024);
        assert_eq!(config.list_page_size, 100);
        assert_eq!(config.retry.max_attempts, 3);
        assert_eq!(config.read_timeout, Duration::from_millis(1500));
        let credentials = config.credentials.as_ref().expect("static credentials");
        assert_eq!(credentials.access_key_id, "AKIDEXAMPLE");
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret"), "{printed}");

        let explicit = lookup_from(&[
            ("DUCKMESH_S3_BUCKET", "lake"),
            ("DUCKMESH_S3_ENDPOINT", "https://s3.example.com"),
            ("DUCKMESH_S3_FORCE_PATH_STYLE", "false"),
        ]);
        assert!(!S3Config::from_lookup(explicit).expect("valid").force_path_style);
    }

    #[test]
    fn config_rejects_invalid_values() {
        for vars in [
            vec![],
            vec![("DUCKMESH_S3_BUCKET", "lake"), ("DUCKMESH_S3_PART_SIZE", "1024")],
            vec![("DUCKMESH_S3_BUCKET", "lake"), ("DUCKMESH_S3_ENDPOINT", "minio:9000")],
            vec![("DUCKMESH_S3_BUCKET", "lake"), ("DUCKMESH_S3_PREFIX", "a//b")],
            vec![("DUCKMESH_S3_BUCKET", "lake"), ("AWS_ACCESS_KEY_ID", "only-half")],
            vec![("DUCKMESH_S3_BUCKET", "lake"), ("DUCKMESH_S3_LIST_PAGE_SIZE", "5000")],
            vec![("DUCKMESH_S3_BUCKET", "lake"), ("DUCKMESH_S3_FORCE_PATH_STYLE", "maybe")],
        ] {
            let lookup = lookup_from(&vars);
            let error = S3Config::from_lookup(lookup).expect_err(&format!("{vars:?}"));
            assert_eq!(error.error_code(), "object_store_config_invalid");
        }
    }
}
