//! What a commit adds: the mode and the data files, as the worker and the coordinator hand them
//! to the catalog and record them in their manifests.

use serde::{Deserialize, Serialize};

/// How a commit changes a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitMode {
    /// The new files join the existing ones.
    Append,
    /// The new files replace all existing ones.
    Overwrite,
}

impl CommitMode {
    /// The stable string stored in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Overwrite => "overwrite",
        }
    }

    /// Parses the stored string.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "append" => Some(Self::Append),
            "overwrite" => Some(Self::Overwrite),
            _ => None,
        }
    }
}

/// One data file to add in a commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewFile {
    /// Object-store key.
    pub path: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Row count.
    pub rows: i64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    /// Partition values, if the dataset is partitioned.
    pub partition: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_through_their_stored_strings() {
        for mode in [CommitMode::Append, CommitMode::Overwrite] {
            assert_eq!(CommitMode::parse(mode.as_str()), Some(mode));
            assert_eq!(serde_json::to_value(mode).expect("json"), serde_json::json!(mode.as_str()));
        }
        assert_eq!(CommitMode::parse("merge"), None);
    }
}
