//! A Dataset's maintenance policy, as the scheduler carries it out: which maintenance task
//! kinds run on which cron schedule (UTC), and the task spec each gets.
//!
//! - `compaction: {enabled, minFiles, schedule}` — off unless `enabled`; hourly by default.
//! - `retention: {keepSnapshots, maxAgeDays, gcSchedule}` — GC runs for every dataset (it also
//!   removes abandoned staging); daily at 03:30 by default.
//! - `integrity: {enabled, schedule, verifyHashes}` — on unless `enabled: false`; daily at 04:00
//!   by default.
//!
//! A kind is due when its schedule has fired since its last run (or, never run, since the
//! dataset was created); the scheduler runs at most one maintenance task per dataset at a time.

use crate::task::{CompactSpec, IntegritySpec, SpecError};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::str::FromStr;

/// Default schedule of compaction (when enabled).
pub const DEFAULT_COMPACTION_SCHEDULE: &str = "0 * * * *";
/// Default schedule of GC.
pub const DEFAULT_GC_SCHEDULE: &str = "30 3 * * *";
/// Default schedule of the integrity check.
pub const DEFAULT_INTEGRITY_SCHEDULE: &str = "0 4 * * *";

/// A maintenance task kind the scheduler runs on a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaintenanceKind {
    /// `compact`.
    Compact,
    /// `gc`.
    Gc,
    /// `integrity`.
    Integrity,
}

impl MaintenanceKind {
    /// The task kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compact => "compact",
            Self::Gc => "gc",
            Self::Integrity => "integrity",
        }
    }
}

/// A cron schedule (five fields, UTC).
#[derive(Debug, Clone)]
pub struct Schedule {
    pattern: String,
    cron: croner::Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Schedule {
    /// Parses a five-field cron expression; `what` names the field in errors.
    pub fn parse(what: &str, pattern: &str) -> Result<Self, SpecError> {
        let cron = croner::Cron::from_str(pattern.trim()).map_err(|error| SpecError {
            message: format!("{what} {pattern:?} is not a cron expression (minute hour day month weekday): {error}"),
        })?;
        Ok(Self { pattern: pattern.trim().to_owned(), cron })
    }

    /// The expression.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The first time the schedule fires after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&after, false).ok()
    }
}

/// What the scheduler runs for one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenancePolicy {
    /// Compaction: its schedule and task spec, when enabled.
    pub compaction: Option<(Schedule, serde_json::Value)>,
    /// GC's schedule.
    pub gc: Schedule,
    /// The integrity check: its schedule and task spec, unless disabled.
    pub integrity: Option<(Schedule, serde_json::Value)>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    compaction: Option<Compaction>,
    #[serde(default)]
    retention: Option<Retention>,
    #[serde(default)]
    integrity: Option<Integrity>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Compaction {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    min_files: Option<u32>,
    #[serde(default)]
    schedule: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Retention {
    #[serde(default)]
    gc_schedule: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Integrity {
    #[serde(default = "enabled")]
    enabled: bool,
    #[serde(default)]
    schedule: Option<String>,
    #[serde(default)]
    verify_hashes: bool,
}

fn enabled() -> bool {
    true
}

/// A task spec as the document stored in `tasks.spec` (plain numbers and flags: serializing
/// cannot fail).
fn spec_value(spec: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(spec).unwrap_or_else(|_| serde_json::json!({}))
}

impl MaintenancePolicy {
    /// The policy of a Dataset's spec (its other fields are ignored here).
    pub fn parse(dataset: &str, spec: &serde_json::Value) -> Result<Self, SpecError> {
        let spec: Spec = if spec.is_null() {
            Spec::default()
        } else {
            serde_json::from_value(spec.clone()).map_err(|error| SpecError {
                message: format!("dataset {dataset:?}: its maintenance policy is malformed: {error}"),
            })?
        };
        let compaction = match spec.compaction {
            Some(compaction) if compaction.enabled => {
                let pattern = compaction.schedule.as_deref().unwrap_or(DEFAULT_COMPACTION_SCHEDULE);
                let schedule = Schedule::parse("compaction.schedule", pattern)?;
                let task = CompactSpec { min_files: compaction.min_files, target_file_size_bytes: None };
                Some((schedule, spec_value(&task)))
            }
            _ => None,
        };
        let gc_pattern = spec
            .retention
            .as_ref()
            .and_then(|retention| retention.gc_schedule.as_deref())
            .unwrap_or(DEFAULT_GC_SCHEDULE);
        let gc = Schedule::parse("retention.gcSchedule", gc_pattern)?;
        let integrity = match spec.integrity {
            Some(integrity) if !integrity.enabled => None,
            Some(integrity) => {
                let pattern = integrity.schedule.as_deref().unwrap_or(DEFAULT_INTEGRITY_SCHEDULE);
                let schedule = Schedule::parse("integrity.schedule", pattern)?;
                Some((schedule, spec_value(&IntegritySpec { verify_hashes: integrity.verify_hashes })))
            }
            None => Some((
                Schedule::parse("integrity.schedule", DEFAULT_INTEGRITY_SCHEDULE)?,
                spec_value(&IntegritySpec::default()),
            )),
        };
        Ok(Self { compaction, gc, integrity })
    }

    /// The first kind due at `now`, with its task spec: compaction, then GC, then integrity.
    /// `last` says when each kind last ran on the dataset; `created` when the dataset was
    /// created (a kind never run is due once its schedule fired after that).
    pub fn due(
        &self,
        created: DateTime<Utc>,
        last: impl Fn(MaintenanceKind) -> Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<(MaintenanceKind, serde_json::Value)> {
        let fired = |schedule: &Schedule, kind: MaintenanceKind| {
            let since = last(kind).map_or(created, |last| last.max(created));
            schedule.next_after(since).is_some_and(|next| next <= now)
        };
        if let Some((schedule, task)) = &self.compaction
            && fired(schedule, MaintenanceKind::Compact)
        {
            return Some((MaintenanceKind::Compact, task.clone()));
        }
        if fired(&self.gc, MaintenanceKind::Gc) {
            return Some((MaintenanceKind::Gc, serde_json::json!({})));
        }
        if let Some((schedule, task)) = &self.integrity
            && fired(schedule, MaintenanceKind::Integrity)
        {
            return Some((MaintenanceKind::Integrity, task.clone()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, hour, minute, 0).single().expect("time")
    }

    #[test]
    fn defaults_run_gc_and_integrity_daily_and_no_compaction() {
        let policy = MaintenancePolicy::parse("trips", &serde_json::json!({})).expect("policy");
        assert!(policy.compaction.is_none());
        assert_eq!(policy.gc.pattern(), DEFAULT_GC_SCHEDULE);
        let created = at(1, 0);
        let never = |_| None;
        assert_eq!(policy.due(created, never, at(3, 29)), None);
        assert_eq!(policy.due(created, never, at(3, 30)).map(|(kind, _)| kind), Some(MaintenanceKind::Gc));
        let gc_ran = |kind| (kind == MaintenanceKind::Gc).then(|| at(3, 31));
        assert_eq!(
            policy.due(created, gc_ran, at(4, 0)),
            Some((MaintenanceKind::Integrity, serde_json::json!({"verifyHashes": false})))
        );
        let both_ran = |_| Some(at(4, 1));
        assert_eq!(policy.due(created, both_ran, at(23, 59)), None);
    }

    #[test]
    fn declared_policies_are_followed_and_bad_schedules_refused() {
        let spec = serde_json::json!({
            "compaction": {"enabled": true, "minFiles": 4, "schedule": "*/15 * * * *"},
            "retention": {"keepSnapshots": 10, "gcSchedule": "0 0 * * 0"},
            "integrity": {"enabled": false}
        });
        let policy = MaintenancePolicy::parse("trips", &spec).expect("policy");
        assert!(policy.integrity.is_none());
        let created = at(10, 0);
        assert_eq!(
            policy.due(created, |_| None, at(10, 15)),
            Some((MaintenanceKind::Compact, serde_json::json!({"minFiles": 4})))
        );
        assert_eq!(policy.due(created, |_| Some(at(10, 15)), at(10, 29)), None);
        for bad in [
            serde_json::json!({"compaction": {"enabled": true, "schedule": "every hour"}}),
            serde_json::json!({"retention": {"gcSchedule": "61 * * * *"}}),
            serde_json::json!({"integrity": {"schedule": 5}}),
        ] {
            let error = MaintenancePolicy::parse("trips", &bad).expect_err("invalid");
            assert!(error.message.contains("trips") || error.message.contains("cron"), "{}", error.message);
        }
    }
}
