//! The TracedPipeline controller (kube-runtime `Controller`).
//!
//! One reconcile: observe → plan (`switch`) → build (`build`) → apply (`apply`) →
//! update_status (`status`). Objects that do not deserialize arrive as
//! `DeserializeGuard` errors: they get `Degraded` and an Event, and never stall the others.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service},
};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    api::{DynamicObject, ListParams},
    core::DeserializeGuard,
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tracing::{Instrument as _, info, instrument, warn};

use crate::{
    api::{TracedPipeline, TracedPipelineStatus},
    apply::{self, CollectorCleanup, FIELD_MANAGER},
    build::{self, PIPELINE_LABEL},
    error::{Error, Result},
    metrics::ReconcileMetrics,
    observe, status,
    switch::{self, Step},
    traces::{self, TraceChecker},
};

/// Requeue when nothing is moving (drift correction, TracesFlowing refresh).
pub const SETTLED_REQUEUE: Duration = Duration::from_secs(60);
/// Requeue while a mode switch or rollout progresses (pods are not watched).
pub const PROGRESSING_REQUEUE: Duration = Duration::from_secs(5);
/// First retry after a transient error; doubles per consecutive failure.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(10);
const MAX_ERROR_REQUEUE: Duration = Duration::from_secs(300);

type Object = DeserializeGuard<TracedPipeline>;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// One recorder for the whole controller, so that repeated events aggregate.
    pub recorder: Recorder,
    pub metrics: ReconcileMetrics,
    pub traces: TraceChecker,
    /// The controller's cache of TracedPipelines (to find a second one in a namespace).
    pub store: Store<Object>,
    /// Consecutive transient failures per object (error backoff).
    failures: Mutex<HashMap<ObjectRef<Object>, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        reporter: Reporter,
        metrics: ReconcileMetrics,
        traces: TraceChecker,
        store: Store<Object>,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            traces,
            store,
            failures: Mutex::default(),
        }
    }

    fn record_failure(&self, obj: &ObjectRef<Object>) -> u32 {
        let Ok(mut failures) = self.failures.lock() else {
            return 0;
        };
        let n = failures.entry(obj.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn reset_failures(&self, obj: &ObjectRef<Object>) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(obj);
        }
    }
}

/// The reporter of the operator's Events (`instance` = pod name).
pub fn reporter(instance: Option<String>) -> Reporter {
    Reporter {
        controller: FIELD_MANAGER.to_owned(),
        instance,
    }
}

/// Reconciles one TracedPipeline.
#[instrument(skip(obj, ctx), fields(namespace = obj.namespace(), name = %obj.name_any()))]
pub async fn reconcile(obj: Arc<Object>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.count_and_measure();
    let oref = ObjectRef::from_obj(obj.as_ref());
    let result = match &obj.0 {
        Ok(tp) => reconcile_valid(tp, &ctx).await,
        Err(invalid) => {
            let error = Error::InvalidObject(invalid.error.clone());
            report_invalid_object(obj.meta(), &error, &ctx).await?;
            Err(error)
        }
    };
    if result.is_ok() {
        ctx.reset_failures(&oref);
    }
    result
}

/// Permanent errors → `await_change()` (the object must change first; `Degraded` was written by
/// the reconcile); transient ones → requeue after 10s, doubling per consecutive failure.
pub fn error_policy(obj: Arc<Object>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failure(error);
    if error.is_permanent() {
        warn!(name = %obj.name_any(), error = %error.full_message(), "invalid TracedPipeline; waiting for a change");
        return Action::await_change();
    }
    let n = ctx.record_failure(&ObjectRef::from_obj(obj.as_ref()));
    let delay = ERROR_REQUEUE
        .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(8)))
        .min(MAX_ERROR_REQUEUE);
    warn!(name = %obj.name_any(), error = %error.full_message(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_valid(tp: &TracedPipeline, ctx: &Context) -> Result<Action> {
    match apply_and_report(tp, ctx).await {
        Err(error) if error.is_permanent() => {
            report_degraded(tp, &error, ctx).await?;
            Err(error)
        }
        other => other,
    }
}

/// Another, older TracedPipeline in the same namespace (the first one created wins).
fn conflicting(tp: &TracedPipeline, store: &Store<Object>) -> Option<String> {
    let key = |meta: &kube::api::ObjectMeta| {
        (
            meta.creation_timestamp.clone(),
            meta.name.clone().unwrap_or_default(),
        )
    };
    let mine = key(tp.meta());
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace == tp.meta().namespace && o.meta().uid != tp.meta().uid)
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(|o| key(o.meta()))
        .filter(|other| *other < mine)
        .min()
        .map(|(_, name)| name)
}

async fn apply_and_report(tp: &TracedPipeline, ctx: &Context) -> Result<Action> {
    let namespace = tp.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = tp.name_any();
    if let Some(other) = conflicting(tp, &ctx.store) {
        return Err(Error::Conflict(other));
    }

    // Observe → plan → build → apply.
    let observation = observe::observe(&ctx.client, &namespace, tp).await?;
    let active = tp
        .status
        .as_ref()
        .and_then(|s| s.tracing.as_ref())
        .and_then(|t| t.active_mode);
    let step: Step = switch::plan(tp.spec.tracing.mode, active, observation.switch);
    let desired = build::desired(tp, &step).map_err(Error::Build)?;
    if tp.spec.paused {
        info!("paused: not applying child objects");
    } else {
        let cleanup = if observation.switch.collector_deployed {
            CollectorCleanup::Delete
        } else {
            CollectorCleanup::Skip
        };
        apply::apply(&ctx.client, &namespace, &desired, cleanup).await?;
    }

    // Update status.
    let expected = traces::expected_services(tp);
    let verdict = ctx
        .traces
        .check(&namespace, &expected, step.wiring)
        .instrument(tracing::info_span!("traces_flowing"))
        .await;
    let now = status::now();
    let new_status =
        status::compute_status(tp, &step, &observation, &verdict, ctx.traces.window(), &now);
    if tp.status.as_ref() != Some(&new_status) {
        status::patch_status(&ctx.client, &namespace, &name, &new_status).await?;
    }
    if let Some(switched) = step.completed {
        report_switch(tp, &new_status, switched, ctx).await;
    }

    let moving = step.in_progress() || !observation.switch.pipeline_rolled_out;
    Ok(Action::requeue(if moving {
        PROGRESSING_REQUEUE
    } else {
        SETTLED_REQUEUE
    }))
}

async fn report_switch(
    tp: &TracedPipeline,
    status: &TracedPipelineStatus,
    switched: switch::ModeSwitch,
    ctx: &Context,
) {
    let duration = status.tracing.as_ref().and_then(status::switch_duration);
    if let Some(d) = duration {
        ctx.metrics.mode_switched(d.as_secs_f64());
    }
    let secs = duration.map_or_else(|| "?".to_owned(), |d| d.as_secs().to_string());
    let note = format!("{} → {} in {secs}s", switched.from, switched.to);
    info!(from = %switched.from, to = %switched.to, seconds = %secs, "tracing mode switched");
    publish(
        ctx,
        &tp.object_ref(&()),
        EventType::Normal,
        "ModeSwitched",
        "SwitchTracingMode",
        note,
    )
    .await;
}

async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    // An Event is best effort: failing to publish it must not fail the reconcile.
    if let Err(error) = ctx.recorder.publish(&event, reference).await {
        warn!(%error, reason, "failed to publish an Event");
    }
}

/// `Degraded` status and (on the transition only) a Warning Event for a parsed object.
async fn report_degraded(tp: &TracedPipeline, error: &Error, ctx: &Context) -> Result<()> {
    let (Some(namespace), Some(name)) = (tp.namespace(), tp.meta().name.clone()) else {
        return Ok(());
    };
    let reference = tp.object_ref(&());
    let degradation = Degradation {
        namespace: &namespace,
        name: &name,
        generation: tp.meta().generation,
        previous: tp.status.as_ref(),
        reference: &reference,
    };
    write_degraded(ctx, degradation, error).await
}

/// Where a `Degraded` report goes and what it replaces.
struct Degradation<'a> {
    namespace: &'a str,
    name: &'a str,
    generation: Option<i64>,
    previous: Option<&'a TracedPipelineStatus>,
    reference: &'a k8s_openapi::api::core::v1::ObjectReference,
}

/// Writes the `Degraded` status when it changes and publishes a Warning Event on the
/// transition only, so an unchanged degradation writes nothing.
async fn write_degraded(ctx: &Context, target: Degradation<'_>, error: &Error) -> Result<()> {
    let new_status =
        status::degraded_status(target.previous, target.generation, error, &status::now());
    if target.previous != Some(&new_status) {
        status::patch_status(&ctx.client, target.namespace, target.name, &new_status).await?;
    }
    if !status::already_degraded(target.previous, error) {
        publish(
            ctx,
            target.reference,
            EventType::Warning,
            error.reason(),
            "Reconcile",
            error.full_message(),
        )
        .await;
    }
    Ok(())
}

/// `Degraded` status and (on the transition only) a Warning Event for an object that does not
/// deserialize. Its previous status is read raw, so that an unchanged degradation writes nothing.
async fn report_invalid_object(
    meta: &kube::api::ObjectMeta,
    error: &Error,
    ctx: &Context,
) -> Result<()> {
    let (Some(namespace), Some(name)) = (meta.namespace.clone(), meta.name.clone()) else {
        return Ok(());
    };
    let gvk = kube::api::GroupVersionKind::gvk(
        &TracedPipeline::group(&()),
        &TracedPipeline::version(&()),
        &TracedPipeline::kind(&()),
    );
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, &TracedPipeline::plural(&()));
    let raw: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
    let previous: Option<TracedPipelineStatus> = raw
        .get_opt(&name)
        .await
        .map_err(Error::kube("get", "TracedPipeline", name.clone()))?
        .and_then(|o| o.data.get("status").cloned())
        .and_then(|s| serde_json::from_value(s).ok());
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(TracedPipeline::api_version(&()).into_owned()),
        kind: Some(TracedPipeline::kind(&()).into_owned()),
        name: Some(name.clone()),
        namespace: Some(namespace.clone()),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    };
    let degradation = Degradation {
        namespace: &namespace,
        name: &name,
        generation: meta.generation,
        previous: previous.as_ref(),
        reference: &reference,
    };
    write_degraded(ctx, degradation, error).await
}

/// Fails with an install hint unless the TracedPipeline CRD is served.
pub async fn check_crd_installed(client: &Client) -> Result<(), kube::Error> {
    let api: Api<Object> = Api::all(client.clone());
    api.list(&ListParams::default().limit(1)).await.map(|_| ())
}

/// Hint logged when [`check_crd_installed`] fails.
pub const CRD_HINT: &str =
    "is the TracedPipeline CRD installed? Install it with: kubectl apply --server-side -f crds/";

/// Runs the controller until `shutdown` resolves (or SIGTERM/SIGINT).
pub async fn run(
    client: Client,
    reporter: Reporter,
    metrics: ReconcileMetrics,
    traces: TraceChecker,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let tps: Api<Object> = Api::all(client.clone());
    let children = watcher::Config::default().labels(PIPELINE_LABEL);
    let controller = Controller::new(tps, watcher::Config::default())
        .owns(Api::<Deployment>::all(client.clone()), children.clone())
        .owns(Api::<Service>::all(client.clone()), children.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), children)
        .shutdown_on_signal()
        .graceful_shutdown_on(shutdown);
    let ctx = Arc::new(Context::new(
        client,
        reporter,
        metrics,
        traces,
        controller.store(),
    ));
    info!("controller started");
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok((obj, _)) => tracing::debug!(name = %obj.name, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile loop"),
            }
            futures::future::ready(())
        })
        .boxed()
        .await;
    info!("controller stopped");
}

#[cfg(test)]
mod tests;
