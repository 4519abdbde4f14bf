//! Typed identifiers, so a task id can never be passed where an attempt id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl From<i64> for $name {
            fn from(value: i64) -> Self {
                Self(value)
            }
        }
    };
}

id_type!(
    /// A dataset's catalog id.
    DatasetId
);
id_type!(
    /// A job's catalog id.
    JobId
);
id_type!(
    /// A task's catalog id.
    TaskId
);
id_type!(
    /// An attempt's catalog id (one row per lease taken on a task).
    AttemptId
);
id_type!(
    /// A snapshot id, strictly increasing per dataset.
    SnapshotId
);
id_type!(
    /// A fencing token: strictly increasing across all leases ever granted. Only the
    /// attempt holding a task's current fence may heartbeat or commit.
    Fence
);
