//! Status conditions per the Kubernetes API conventions: `type`, `status`, CamelCase `reason`,
//! `message`, `lastTransitionTime` (changed only when `status` changes) and
//! `observedGeneration`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `True`, `False` or `Unknown`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// It cannot be told yet.
    Unknown,
}

/// One observation about a resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`, `Succeeded`, `Failed`, `Valid`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// A CamelCase reason, stable enough for automation (`AllTasksSucceeded`, `InvalidSpec`…).
    pub reason: String,
    /// A human-readable explanation.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Puts `new` into `conditions`, replacing the condition of the same type. When the status did
/// not change, the existing `lastTransitionTime` is kept. Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            let changed = *existing != new;
            *existing = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: ConditionStatus, reason: &str, at: &str, generation: i64) -> Condition {
        Condition {
            type_: "Ready".into(),
            status,
            reason: reason.into(),
            message: String::new(),
            last_transition_time: at.into(),
            observed_generation: Some(generation),
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conditions = Vec::new();
        assert!(set_condition(&mut conditions, ready(ConditionStatus::False, "Pending", "t1", 1)));
        // Same status, new reason and generation: updated, but the transition time stays.
        assert!(set_condition(&mut conditions, ready(ConditionStatus::False, "Running", "t2", 2)));
        assert_eq!(conditions[0].last_transition_time, "t1");
        assert_eq!((conditions[0].reason.as_str(), conditions[0].observed_generation), ("Running", Some(2)));
        // Identical again: nothing changes.
        assert!(!set_condition(&mut conditions, ready(ConditionStatus::False, "Running", "t3", 2)));
        // Status flips: the transition time moves.
        assert!(set_condition(&mut conditions, ready(ConditionStatus::True, "Done", "t4", 2)));
        assert_eq!(conditions[0].last_transition_time, "t4");
        assert_eq!(conditions.len(), 1);
        let json = serde_json::to_value(&conditions[0]).expect("serialises");
        assert_eq!(json["type"], "Ready");
        assert_eq!(json["status"], "True");
        assert_eq!(json["lastTransitionTime"], "t4");
    }
}
