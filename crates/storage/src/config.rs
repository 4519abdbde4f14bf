//! Choosing a backend from the environment, so that binaries build their store in one
//! line and the same code runs against S3 in a cluster and a local directory in dev mode.

use std::path::PathBuf;
use std::sync::Arc;

use crate::env::{EnvLookup, process_env, string_env};
use crate::error::{Error, Result};
use crate::{LocalStore, ObjectStore, S3Config, S3Store, StoreCounters};

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
    /// Reads the backend choice from the process environment.
    ///
    /// `DUCKMESH_STORAGE_BACKEND` is `s3` or `local`; when unset, S3 is chosen if
    /// `DUCKMESH_S3_BUCKET` is set, else the local store if `DUCKMESH_LOCAL_STORE_ROOT` is.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(&process_env)
    }

    /// Like [`StoreConfig::from_env`] with a custom variable lookup.
    pub fn from_lookup(lookup: EnvLookup<'_>) -> Result<Self> {
        let backend = string_env(lookup, "DUCKMESH_STORAGE_BACKEND").map(|b| b.to_ascii_lowercase());
        let local_root = string_env(lookup, "DUCKMESH_LOCAL_STORE_ROOT");
        let has_bucket = string_env(lookup, "DUCKMESH_S3_BUCKET").is_some();
        match backend.as_deref() {
            Some("s3") => Ok(Self::S3(Box::new(S3Config::from_lookup(lookup)?))),
            Some("local") => match local_root {
                Some(root) => Ok(Self::Local { root: root.into() }),
                None => {
                    Err(Error::Config { message: "DUCKMESH_LOCAL_STORE_ROOT is required for the local backend".into() })
                }
            },
            Some(_) => Err(Error::Config { message: "DUCKMESH_STORAGE_BACKEND must be s3 or local".into() }),
            None if has_bucket => Ok(Self::S3(Box::new(S3Config::from_lookup(lookup)?))),
            None => match local_root {
                Some(root) => Ok(Self::Local { root: root.into() }),
                None => Err(Error::Config {
                    message: "no object store configured: set DUCKMESH_S3_BUCKET or DUCKMESH_LOCAL_STORE_ROOT".into(),
                }),
            },
        }
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
        let s3 = StoreConfig::from_lookup(&lookup(&[("DUCKMESH_S3_BUCKET", "lake")])).expect("s3");
        assert!(matches!(s3, StoreConfig::S3(ref c) if c.bucket == "lake"));

        let local = StoreConfig::from_lookup(&lookup(&[("DUCKMESH_LOCAL_STORE_ROOT", "/data")])).expect("local");
        assert_eq!(local, StoreConfig::Local { root: "/data".into() });

        let forced = StoreConfig::from_lookup(&lookup(&[
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
            let error = StoreConfig::from_lookup(&lookup(vars)).expect_err("invalid");
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
