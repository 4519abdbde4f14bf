//! API keys: a file (YAML or JSON — a mounted Kubernetes Secret) listing
//! `{key_sha256 | key, tenant, user}` entries. Keys are kept only as SHA-256 digests; a request
//! presents its key as `Authorization: Bearer <key>` or `X-API-Key: <key>`.

use crate::error::ConfigError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// Tenant: the only datasets the request can see.
    pub tenant: String,
    /// User within the tenant (rate limits).
    pub user: String,
}

impl Principal {
    /// The principal of the no-auth (local development) mode.
    pub fn local() -> Self {
        Self { tenant: "default".into(), user: "local".into() }
    }
}

/// One entry of the keys file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The key in clear (convenient for development; prefer `key_sha256`).
    #[serde(default)]
    pub key: Option<String>,
    /// Lower-case hex SHA-256 of the key.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// Tenant the key acts for.
    pub tenant: String,
    /// User the key belongs to.
    pub user: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KeysFile {
    List(Vec<ApiKeyEntry>),
    Wrapped { keys: Vec<ApiKeyEntry> },
}

/// The known API keys, by digest.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeys {
    by_digest: HashMap<String, Principal>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").field("keys", &self.by_digest.len()).finish()
    }
}

impl ApiKeys {
    /// Reads a keys file (YAML, or JSON, which YAML includes): a list of entries, or
    /// `{keys: [...]}`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::new(format!("cannot read API keys file {}: {error}", path.display())))?;
        Self::parse(&text)
            .map_err(|error| ConfigError::new(format!("API keys file {}: {}", path.display(), error.message)))
    }

    /// Parses the content of a keys file.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let file: KeysFile = serde_yaml_ng::from_str(text)
            // The parser's message may quote a line of the file, i.e. a key: keep only where.
            .map_err(|error| {
                let location = error.location().map(|l| format!(" at line {}", l.line())).unwrap_or_default();
                ConfigError::new(format!("not a list of {{key_sha256 | key, tenant, user}} entries{location}"))
            })?;
        let entries = match file {
            KeysFile::List(entries) | KeysFile::Wrapped { keys: entries } => entries,
        };
        Self::from_entries(entries)
    }

    /// Builds the key set from entries, checking each.
    pub fn from_entries(entries: Vec<ApiKeyEntry>) -> Result<Self, ConfigError> {
        let mut by_digest = HashMap::new();
        for (index, entry) in entries.into_iter().enumerate() {
            let digest = match (&entry.key, &entry.key_sha256) {
                (Some(key), None) if !key.trim().is_empty() => digest(key.trim()),
                (None, Some(hash)) if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    hash.to_ascii_lowercase()
                }
                _ => {
                    return Err(ConfigError::new(format!(
                        "entry {index}: give exactly one of `key` or `key_sha256` (64 hex digits)"
                    )));
                }
            };
            if entry.tenant.trim().is_empty() || entry.user.trim().is_empty() {
                return Err(ConfigError::new(format!("entry {index}: tenant and user must not be empty")));
            }
            let principal = Principal { tenant: entry.tenant.trim().to_owned(), user: entry.user.trim().to_owned() };
            if by_digest.insert(digest, principal).is_some() {
                return Err(ConfigError::new(format!("entry {index}: the same key is listed twice")));
            }
        }
        Ok(Self { by_digest })
    }

    /// The principal a presented key stands for.
    pub fn authenticate(&self, key: &str) -> Option<&Principal> {
        self.by_digest.get(&digest(key.trim()))
    }

    /// How many keys are known.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no key is known (every request would be refused).
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// Lower-case hex SHA-256 of a key, as `key_sha256` holds it.
pub fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The key a request presents, from `Authorization: Bearer` or `X-API-Key`.
pub fn presented_key(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") {
            return Some(value[7..].trim());
        }
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_files_map_keys_to_principals() {
        let yaml = format!(
            "- key: alpha-secret\n  tenant: acme\n  user: ann\n- key_sha256: {}\n  tenant: globex\n  user: bob\n",
            digest("beta-secret")
        );
        let keys = ApiKeys::parse(&yaml).expect("yaml");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.authenticate("alpha-secret").map(|p| p.tenant.as_str()), Some("acme"));
        assert_eq!(keys.authenticate("beta-secret").map(|p| p.user.as_str()), Some("bob"));
        assert_eq!(keys.authenticate("gamma"), None);

        let json = r#"{"keys": [{"key": "k1", "tenant": "t", "user": "u"}]}"#;
        assert_eq!(
            ApiKeys::parse(json).expect("json").authenticate("k1"),
            Some(&Principal { tenant: "t".into(), user: "u".into() })
        );
    }

    #[test]
    fn bad_entries_are_refused_without_echoing_keys() {
        for text in [
            "- {key: a, key_sha256: b, tenant: t, user: u}",
            "- {tenant: t, user: u}",
            "- {key_sha256: nothex, tenant: t, user: u}",
            "- {key: a, tenant: '', user: u}",
            "- {key: a, tenant: t, user: u}\n- {key: a, tenant: t2, user: u2}",
            "- {key: supersecret, tenant: t, user: u, role: admin}",
        ] {
            let error = ApiKeys::parse(text).expect_err(text);
            assert!(!error.message.contains("supersecret"), "{error}");
        }
    }

    #[test]
    fn keys_are_read_from_either_header() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(presented_key(&headers), None);
        headers.insert("x-api-key", http::HeaderValue::from_static("k2"));
        assert_eq!(presented_key(&headers), Some("k2"));
        headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer k1"));
        assert_eq!(presented_key(&headers), Some("k1"));
    }
}
