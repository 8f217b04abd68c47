//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! `kube-leader-election` (0.44, the maintained crate) targets kube 4, so this is a small loop of
//! our own with the client-go semantics: a candidate takes the Lease when it is free, expired or
//! already its own, renews it every `renew_every`, and releases it on shutdown (holder cleared)
//! so that a standby takes over at once. Writes use `replace` with the read `resourceVersion`,
//! so two candidates can never both win. [`decide`] is the pure part.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This candidate (the pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub duration: Duration,
    /// How often the holder renews (well below `duration`).
    pub renew_every: Duration,
}

/// What a candidate should do with the Lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease object yet: create it.
    Create,
    /// Free or expired: take it over (a new term).
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Someone else holds a valid Lease.
    Standby { holder: String },
}

/// Pure: decide from the Lease as read at `now`.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let expired = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .is_none_or(|t| t.0.checked_add(duration).is_ok_and(|until| until < now));
    if expired {
        Decision::Acquire
    } else {
        Decision::Standby {
            holder: holder.to_owned(),
        }
    }
}

/// The Lease spec after `decision` (None for `Standby`).
pub fn next_spec(
    current: Option<&LeaseSpec>,
    decision: &Decision,
    config: &LeaseConfig,
    now: Timestamp,
) -> Option<LeaseSpec> {
    let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    match decision {
        Decision::Create => Some(LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
        Decision::Acquire => Some(LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions.saturating_add(1)),
            ..current.cloned().unwrap_or_default()
        }),
        Decision::Renew => Some(LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(seconds),
            ..current.cloned().unwrap_or_default()
        }),
        Decision::Standby { .. } => None,
    }
}

/// One candidate.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One round: read, decide, write. `Ok(true)` while this candidate leads. A conflict
    /// (someone else wrote first) is `Ok(false)`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.config.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let decision = decide(spec, &self.config.identity, now);
        let Some(next) = next_spec(spec, &decision, &self.config, now) else {
            return Ok(false);
        };
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(next),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                lease.spec = Some(next);
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                if decision != Decision::Renew {
                    tracing::info!(identity = %self.config.identity, lease = %self.config.name, "acquired leadership");
                }
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up (if still ours) so that a standby takes over without waiting.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.config.identity.as_str());
        if !ours {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(lease = %self.config.name, "released leadership");
        Ok(())
    }

    /// Waits until this candidate leads (`true`) or `stop` fires (`false`).
    pub async fn acquire(&self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => tracing::debug!("standing by: another replica leads"),
                Err(error) => tracing::warn!(%error, "cannot read or write the Lease"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.renew_every) => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
        }
    }

    /// Renews until renewal fails for longer than the lease duration, or `stop` fires. Returns
    /// `true` when leadership was lost (the caller must stop reconciling at once).
    pub async fn hold(&self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.renew_every) => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return true,
                Err(error) => {
                    tracing::warn!(%error, "cannot renew the Lease");
                    // Step down before the Lease can expire and another replica takes over.
                    if last_renewal.elapsed() + self.config.renew_every >= self.config.duration {
                        return true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LeaseConfig {
        LeaseConfig {
            name: "tracedpipeline-operator".to_owned(),
            namespace: "ops".to_owned(),
            identity: "pod-a".to_owned(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    fn held_by(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            acquire_time: Some(MicroTime(renewed)),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).expect("valid")
    }

    #[test]
    fn decides_like_client_go() {
        assert_eq!(decide(None, "pod-a", at(0)), Decision::Create);
        assert_eq!(
            decide(Some(&held_by("pod-a", at(0))), "pod-a", at(5)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&held_by("pod-b", at(0))), "pod-a", at(10)),
            Decision::Standby {
                holder: "pod-b".to_owned()
            }
        );
        // Expired: 15s lease, last renewed 16s ago.
        assert_eq!(
            decide(Some(&held_by("pod-b", at(0))), "pod-a", at(16)),
            Decision::Acquire
        );
        // Released (holder cleared).
        let released = LeaseSpec {
            holder_identity: None,
            ..held_by("pod-b", at(0))
        };
        assert_eq!(decide(Some(&released), "pod-a", at(1)), Decision::Acquire);
    }

    #[test]
    fn next_spec_counts_transitions_and_renews() {
        let c = config();
        let current = held_by("pod-b", at(0));
        let taken = next_spec(Some(&current), &Decision::Acquire, &c, at(20)).expect("spec");
        assert_eq!(taken.holder_identity.as_deref(), Some("pod-a"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(20))));
        let mine = held_by("pod-a", at(0));
        let renewed = next_spec(Some(&mine), &Decision::Renew, &c, at(5)).expect("spec");
        assert_eq!(renewed.renew_time, Some(MicroTime(at(5))));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(renewed.lease_transitions, Some(3));
        let created = next_spec(None, &Decision::Create, &c, at(0)).expect("spec");
        assert_eq!(created.lease_duration_seconds, Some(15));
        assert_eq!(
            next_spec(
                Some(&current),
                &Decision::Standby {
                    holder: "pod-b".to_owned()
                },
                &c,
                at(1)
            ),
            None
        );
    }
}
