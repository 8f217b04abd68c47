//! Status (Stackable's `update_status`): [`compute_status`] is pure; [`patch_status`] is the
//! single status writer (SSA on the status subresource, same field manager as the children).

use std::time::Duration;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{Api, Client, Resource, api::Patch, core::DeserializeGuard};
use serde_json::json;

use crate::{
    api::{TracedPipeline, TracedPipelineStatus, TracingStatus, condition},
    apply::apply_params,
    build::wiring,
    error::{Error, Result},
    observe::Observation,
    switch::Step,
    traces::TracesVerdict,
};

/// Now, at the second precision the apiserver stores, so that a status read back compares equal
/// to the one written.
pub fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Builds one condition, keeping `lastTransitionTime` when the previous condition of the same
/// type had the same status.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn switch_in_progress(t: &TracingStatus) -> bool {
    match (&t.switch_started_at, &t.switch_completed_at) {
        (Some(started), Some(completed)) => completed < started,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Duration of the switch recorded in `t` (started → completed), if it completed.
pub fn switch_duration(t: &TracingStatus) -> Option<Duration> {
    let (Some(started), Some(completed)) = (&t.switch_started_at, &t.switch_completed_at) else {
        return None;
    };
    let d = completed.0.duration_since(started.0);
    Duration::try_from(d).ok()
}

/// The whole status after a successful reconcile.
pub fn compute_status(
    tp: &TracedPipeline,
    step: &Step,
    observation: &Observation,
    traces: &TracesVerdict,
    traces_window: Duration,
    now: &Time,
) -> TracedPipelineStatus {
    let previous = tp.status.clone().unwrap_or_default();
    let prev_conditions = previous.conditions.as_slice();
    let generation = tp.meta().generation;
    let cond = |type_, status, reason, message| {
        condition(
            prev_conditions,
            type_,
            status,
            reason,
            message,
            generation,
            now,
        )
    };

    let not_ready: Vec<String> = observation
        .services
        .iter()
        .filter(|s| s.ready_replicas < s.desired_replicas)
        .map(|s| format!("{} {}/{}", s.name, s.ready_replicas, s.desired_replicas))
        .collect();
    let collector_missing = step.wiring == crate::api::TracingMode::Collector
        && !observation.switch.collector_available;
    let ready = if !not_ready.is_empty() {
        cond(
            condition::READY,
            "False",
            "ReplicasNotReady",
            format!("replicas not ready: {}", not_ready.join(", ")),
        )
    } else if collector_missing {
        cond(
            condition::READY,
            "False",
            "CollectorNotAvailable",
            "the OpenTelemetry Collector is not available".to_owned(),
        )
    } else {
        cond(
            condition::READY,
            "True",
            "AllReplicasReady",
            format!(
                "all {} services have their replicas ready",
                observation.services.len()
            ),
        )
    };

    let progressing = if tp.spec.paused {
        cond(
            condition::PROGRESSING,
            "False",
            "Paused",
            "spec.paused is true: child objects are not updated".to_owned(),
        )
    } else if let Some(reason) = step.phase.reason() {
        cond(
            condition::PROGRESSING,
            "True",
            reason,
            step.phase.message().to_owned(),
        )
    } else if !observation.switch.pipeline_rolled_out {
        cond(
            condition::PROGRESSING,
            "True",
            "RollingOut",
            "waiting for the pipeline Deployments to roll out".to_owned(),
        )
    } else {
        cond(
            condition::PROGRESSING,
            "False",
            "Settled",
            format!("tracing mode {} is active", step.active_mode),
        )
    };

    let degraded = cond(
        condition::DEGRADED,
        "False",
        "ReconcileSucceeded",
        "the last reconcile succeeded".to_owned(),
    );
    let (status, reason, message) = traces.condition(traces_window);
    let traces_flowing = cond(condition::TRACES_FLOWING, status, reason, message);

    // Switch timestamps: start on the first in-progress reconcile, complete on the settling one
    // (also when the user flipped back and the mode never changed).
    let prev_tracing = previous.tracing.clone().unwrap_or_default();
    let was_switching = switch_in_progress(&prev_tracing);
    let mut switch_started_at = prev_tracing.switch_started_at.clone();
    let mut switch_completed_at = prev_tracing.switch_completed_at.clone();
    if step.in_progress() {
        if !was_switching {
            switch_started_at = Some(now.clone());
        }
    } else if step.completed.is_some() || was_switching {
        if switch_started_at.is_none() {
            switch_started_at = Some(now.clone());
        }
        switch_completed_at = Some(now.clone());
    }

    TracedPipelineStatus {
        observed_generation: generation,
        conditions: vec![ready, progressing, degraded, traces_flowing],
        tracing: Some(TracingStatus {
            active_mode: Some(step.active_mode),
            desired_mode: Some(tp.spec.tracing.mode),
            endpoint: Some(wiring::endpoint(step.wiring, tp.spec.tracing.protocol)),
            switch_started_at,
            switch_completed_at,
        }),
        services: observation.services.clone(),
    }
}

/// `previous` with `Degraded=True` (and `Ready=False`) for a permanent error; the other
/// conditions and fields are kept.
pub fn degraded_status(
    previous: Option<&TracedPipelineStatus>,
    generation: Option<i64>,
    error: &Error,
    now: &Time,
) -> TracedPipelineStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let message = error.full_message();
    let degraded = condition(
        &status.conditions,
        condition::DEGRADED,
        "True",
        error.reason(),
        message.clone(),
        generation,
        now,
    );
    let ready = condition(
        &status.conditions,
        condition::READY,
        "False",
        error.reason(),
        message,
        generation,
        now,
    );
    status
        .conditions
        .retain(|c| c.type_ != condition::DEGRADED && c.type_ != condition::READY);
    status.conditions.insert(0, ready);
    status.conditions.push(degraded);
    status.observed_generation = generation;
    status
}

/// Whether `status` already reports this degradation (then no new Event is sent).
pub fn already_degraded(status: Option<&TracedPipelineStatus>, error: &Error) -> bool {
    status.is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == condition::DEGRADED
                && c.status == "True"
                && c.reason == error.reason()
                && c.message == error.full_message()
        })
    })
}

/// Writes `status` with SSA on the status subresource. Works for objects that do not parse
/// (the answer is read through `DeserializeGuard`).
pub async fn patch_status(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &TracedPipelineStatus,
) -> Result<()> {
    let api: Api<DeserializeGuard<TracedPipeline>> = Api::namespaced(client.clone(), namespace);
    let body = json!({
        "apiVersion": TracedPipeline::api_version(&()),
        "kind": TracedPipeline::kind(&()),
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube("patch status of", "TracedPipeline", name))?;
    Ok(())
}

#[cfg(test)]
mod tests;
