//! Leader election on a `coordination.k8s.io` Lease, so that only one of several operator
//! replicas reconciles and takes completions: the leader renews the Lease every `retryPeriod`;
//! a candidate takes it over once it has not been renewed for `leaseDuration`; a leader that
//! cannot renew within `renewDeadline` stops leading (the process exits and is restarted as a
//! candidate); a leader stopping gracefully releases the Lease so a successor need not wait.
//!
//! [`next_step`] is the pure decision; [`LeaderElection`] does the reads and writes, with the
//! Lease's `resourceVersion` making every write conditional.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::Deserialize;

/// Leader election settings (`leaderElection` in the configuration file).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LeaderElectionConfig {
    pub enabled: bool,
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace; the operator's own namespace (`POD_NAMESPACE`) when empty.
    pub namespace: String,
    /// How long a Lease that is not renewed keeps others from taking it.
    #[serde(deserialize_with = "crate::api::duration::deserialize")]
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops leading.
    #[serde(deserialize_with = "crate::api::duration::deserialize")]
    pub renew_deadline: Duration,
    /// How often the leader renews and a candidate retries.
    #[serde(deserialize_with = "crate::api::duration::deserialize")]
    pub retry_period: Duration,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            lease_name: "kfp-operator".into(),
            namespace: String::new(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaderElectionConfig {
    /// Checks that the durations nest: retry period < renew deadline < lease duration.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_name.is_empty() {
            return Err("leaderElection.leaseName must not be empty".into());
        }
        if self.retry_period.is_zero()
            || self.retry_period >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            return Err(
                "leaderElection durations must satisfy 0 < retryPeriod < renewDeadline < leaseDuration"
                    .into(),
            );
        }
        Ok(())
    }

    /// The Lease's namespace: configured, or the pod's, or `default`.
    pub fn lease_namespace(&self) -> String {
        if !self.namespace.is_empty() {
            return self.namespace.clone();
        }
        std::env::var("POD_NAMESPACE").ok().filter(|ns| !ns.is_empty()).unwrap_or_else(|| "default".into())
    }
}

/// What a replica does with the Lease as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease: create it, held by us.
    Create,
    /// Ours: renew it.
    Renew,
    /// Someone else's but expired (or released): take it over.
    TakeOver,
    /// Someone else's and live: wait.
    Wait { holder: String },
}

/// The step for `identity` given the Lease's spec (`None`: no Lease) at `now`.
pub fn next_step(
    spec: Option<&LeaseSpec>,
    identity: &str,
    now: jiff::Timestamp,
    default_duration: Duration,
) -> Step {
    let Some(spec) = spec else { return Step::Create };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::TakeOver;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(default_duration, Duration::from_secs);
    let expires = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .and_then(|renewed| renewed.0.checked_add(jiff::SignedDuration::try_from(duration).ok()?).ok());
    match expires {
        Some(expires) if expires > now => Step::Wait { holder },
        _ => Step::TakeOver,
    }
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lost the leader Lease {0} to {1}")]
    Lost(String, String),
    #[error("could not renew the leader Lease {lease} within the renew deadline: {source}")]
    RenewFailed { lease: String, source: kube::Error },
}

/// One replica's side of the election.
pub struct LeaderElection {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    identity: String,
    lease_label: String,
}

impl LeaderElection {
    pub fn new(client: kube::Client, config: LeaderElectionConfig, identity: String) -> Self {
        let namespace = config.lease_namespace();
        let lease_label = format!("{namespace}/{}", config.lease_name);
        Self { api: Api::namespaced(client, &namespace), config, identity, lease_label }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt: returns whether we hold the Lease afterwards (`Err` only for API errors
    /// other than a lost race).
    async fn try_acquire_or_renew(&self) -> Result<Result<(), String>, kube::Error> {
        let now = jiff::Timestamp::now();
        let current = self.api.get_opt(&self.config.lease_name).await?;
        let step = next_step(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
            self.config.lease_duration,
        );
        let duration = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let result = match (step, current) {
            (Step::Wait { holder }, _) => return Ok(Err(holder)),
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.lease_name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(duration),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (step, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if step == Step::TakeOver {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
                }
                spec.lease_duration_seconds = Some(duration);
                spec.renew_time = Some(MicroTime(now));
                self.api.replace(&self.config.lease_name, &PostParams::default(), &lease).await
            }
            (_, None) => return Ok(Err(String::new())),
        };
        match result {
            Ok(_) => Ok(Ok(())),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Err(String::new())),
            Err(error) => Err(error),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        let mut last_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Ok(())) => {
                    tracing::info!(lease = %self.lease_label, identity = %self.identity, "became the leader");
                    return;
                }
                Ok(Err(holder)) => {
                    if !holder.is_empty() && last_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.lease_label, %holder, "waiting for the leader Lease");
                        last_holder = Some(holder);
                    }
                }
                Err(error) => {
                    tracing::warn!(lease = %self.lease_label, %error, "could not read or write the leader Lease")
                }
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the Lease every retry period; returns when leadership is lost.
    pub async fn keep(&self) -> Error {
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(Ok(())) => failing_since = None,
                Ok(Err(holder)) if !holder.is_empty() => {
                    return Error::Lost(self.lease_label.clone(), holder);
                }
                Ok(Err(_)) => {}
                Err(source) => {
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    tracing::warn!(lease = %self.lease_label, error = %source, "could not renew the leader Lease");
                    if since.elapsed() >= self.config.renew_deadline {
                        return Error::RenewFailed { lease: self.lease_label.clone(), source };
                    }
                }
            }
        }
    }

    /// Gives the Lease up so that a successor need not wait for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.lease_name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        match self.api.replace(&self.config.lease_name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.lease_label, "released the leader Lease"),
            Err(error) => {
                tracing::warn!(lease = %self.lease_label, %error, "could not release the leader Lease")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: jiff::Timestamp, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()).filter(|h: &String| !h.is_empty()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn the_lease_is_created_renewed_waited_for_and_taken_over() {
        let now: jiff::Timestamp = "2026-01-01T00:00:30Z".parse().unwrap();
        let fresh: jiff::Timestamp = "2026-01-01T00:00:20Z".parse().unwrap();
        let stale: jiff::Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let default = Duration::from_secs(15);
        assert_eq!(next_step(None, "me", now, default), Step::Create);
        assert_eq!(next_step(Some(&spec("me", stale, 15)), "me", now, default), Step::Renew);
        assert_eq!(
            next_step(Some(&spec("other", fresh, 15)), "me", now, default),
            Step::Wait { holder: "other".into() }
        );
        assert_eq!(next_step(Some(&spec("other", stale, 15)), "me", now, default), Step::TakeOver);
        assert_eq!(next_step(Some(&spec("", fresh, 15)), "me", now, default), Step::TakeOver, "released");
        let never_renewed = LeaseSpec { holder_identity: Some("other".into()), ..LeaseSpec::default() };
        assert_eq!(next_step(Some(&never_renewed), "me", now, default), Step::TakeOver);
    }

    #[test]
    fn durations_must_nest() {
        assert!(LeaderElectionConfig::default().validate().is_ok());
        let inverted = LeaderElectionConfig { renew_deadline: Duration::from_secs(20), ..Default::default() };
        assert!(inverted.validate().unwrap_err().contains("retryPeriod < renewDeadline < leaseDuration"));
    }
}
