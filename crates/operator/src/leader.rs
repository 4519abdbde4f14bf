//! Leader election on a `coordination.k8s.io/v1` Lease, so that exactly one operator replica
//! runs the controllers and the scheduler loop.
//!
//! Every write carries the `resourceVersion` the elector last read, so two candidates racing
//! for the same Lease cannot both win: the API server accepts one write and answers the other
//! with 409 Conflict. Expiry is judged the way client-go judges it — by how long the Lease has
//! gone unchanged *as observed locally* — so clock skew between nodes does not matter.

use crate::error::{Result, is_status};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::time::Instant;
use tracing::info;

/// Timings of an election (client-go's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionTimings {
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// Interval between attempts (by candidates and by the leader).
    pub retry_period: Duration,
}

impl Default for ElectionTimings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate should do with the Lease it observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// There is no Lease: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Its holder let it expire (or released it): take it over.
    TakeOver,
    /// Someone else holds it.
    Follow {
        /// The current holder.
        holder: String,
    },
}

/// Decides, purely, from the observed Lease (`None`: it does not exist) and how long it has
/// been seen unchanged.
pub fn decide_lease(
    observed: Option<&LeaseSpec>,
    identity: &str,
    unchanged_for: Duration,
    lease_duration: Duration,
) -> LeaseDecision {
    let Some(spec) = observed else { return LeaseDecision::Create };
    match spec.holder_identity.as_deref().filter(|h| !h.is_empty()) {
        None => LeaseDecision::TakeOver,
        Some(holder) if holder == identity => LeaseDecision::Renew,
        Some(holder) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(lease_duration, Duration::from_secs);
            if unchanged_for > duration {
                LeaseDecision::TakeOver
            } else {
                LeaseDecision::Follow { holder: holder.to_owned() }
            }
        }
    }
}

/// Acquires, renews and releases one Lease for one identity.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: ElectionTimings,
    /// The Lease's resourceVersion as last observed, and when that version was first seen.
    observed: Option<(String, Instant)>,
    leading: bool,
}

impl LeaderElector {
    /// An elector for the Lease `name` (in `api`'s namespace) as `identity` (the pod name).
    pub fn new(
        api: Api<Lease>,
        name: impl Into<String>,
        identity: impl Into<String>,
        timings: ElectionTimings,
    ) -> Self {
        Self { api, name: name.into(), identity: identity.into(), timings, observed: None, leading: false }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The timings.
    pub fn timings(&self) -> ElectionTimings {
        self.timings
    }

    /// Whether the last attempt left us leading.
    pub fn is_leader(&self) -> bool {
        self.leading
    }

    fn spec(&self, previous: Option<&LeaseSpec>, acquire: bool) -> LeaseSpec {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.timings.lease_duration.as_secs()).ok(),
            acquire_time: if acquire { Some(now.clone()) } else { previous.and_then(|s| s.acquire_time.clone()) },
            renew_time: Some(now),
            lease_transitions: Some(if acquire && previous.is_some() { transitions + 1 } else { transitions }),
            ..LeaseSpec::default()
        }
    }

    /// One round: reads the Lease and creates, renews or takes it over when it may. Returns
    /// whether we lead afterwards. A lost race (409) is not an error: it means someone else
    /// won this round.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let current = self.api.get_opt(&self.name).await?;
        let now = Instant::now();
        let version = current.as_ref().and_then(|l| l.metadata.resource_version.clone());
        let unchanged_for = match (&self.observed, &version) {
            (Some((seen, since)), Some(version)) if seen == version => now.duration_since(*since),
            _ => {
                self.observed = version.clone().map(|v| (v, now));
                Duration::ZERO
            }
        };
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let decision = decide_lease(spec, &self.identity, unchanged_for, self.timings.lease_duration);
        let written = match decision {
            LeaseDecision::Follow { holder } => {
                if self.leading {
                    info!(holder, "lost leadership: another replica holds the lease");
                }
                self.leading = false;
                return Ok(false);
            }
            LeaseDecision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    spec: Some(self.spec(None, true)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            LeaseDecision::Renew | LeaseDecision::TakeOver => {
                let acquire = decision == LeaseDecision::TakeOver;
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        resource_version: version.clone(),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(spec, acquire)),
                };
                self.api.replace(&self.name, &PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(lease) => {
                if !self.leading {
                    info!(identity = self.identity, "acquired leadership");
                }
                self.observed = lease.metadata.resource_version.map(|v| (v, Instant::now()));
                self.leading = true;
                Ok(true)
            }
            Err(error) if is_status(&error, 409) => {
                self.leading = false;
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Gives the Lease up (holder cleared) if we hold it, so a standby takes over at once
    /// rather than after the lease duration. Best effort on shutdown.
    pub async fn release(&mut self) -> Result<()> {
        if !self.leading {
            return Ok(());
        }
        self.leading = false;
        let Some(current) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let holds = current.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str());
        if !holds {
            return Ok(());
        }
        let mut spec = current.spec.clone().unwrap_or_default();
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: current.metadata.resource_version.clone(),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        };
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => {
                info!(identity = self.identity, "released leadership");
                Ok(())
            }
            Err(error) if is_status(&error, 409) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: seconds,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn lease_decision_table() {
        let fifteen = Duration::from_secs(15);
        let cases: Vec<(Option<LeaseSpec>, u64, LeaseDecision)> = vec![
            (None, 0, LeaseDecision::Create),
            (Some(held_by(Some("me"), Some(15))), 0, LeaseDecision::Renew),
            (Some(held_by(Some("me"), Some(15))), 100, LeaseDecision::Renew),
            (Some(held_by(Some("other"), Some(15))), 0, LeaseDecision::Follow { holder: "other".into() }),
            (Some(held_by(Some("other"), Some(15))), 15, LeaseDecision::Follow { holder: "other".into() }),
            (Some(held_by(Some("other"), Some(15))), 16, LeaseDecision::TakeOver),
            (Some(held_by(Some("other"), Some(60))), 30, LeaseDecision::Follow { holder: "other".into() }),
            (Some(held_by(Some("other"), None)), 16, LeaseDecision::TakeOver),
            (Some(held_by(None, Some(15))), 0, LeaseDecision::TakeOver),
            (Some(held_by(Some(""), Some(15))), 0, LeaseDecision::TakeOver),
        ];
        for (spec, unchanged, expected) in cases {
            assert_eq!(
                decide_lease(spec.as_ref(), "me", Duration::from_secs(unchanged), fifteen),
                expected,
                "{spec:?} {unchanged}"
            );
        }
    }
}
