//! Apply (Stackable's `apply.rs`): the only writer of child objects. Server-side apply with one
//! field manager and `force` (the operator owns every field it sets), in the order of
//! [`DesiredObjects`]; collector objects are deleted only when the switch step says so.

use std::fmt::Debug;

use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Service},
    },
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    build::{COLLECTOR_CONFIG_NAME, COLLECTOR_NAME, DesiredObjects, Workload},
    error::{Error, Result},
};

/// The one field manager of every write the operator makes (children and status).
pub const FIELD_MANAGER: &str = "tracedpipeline-operator";

/// SSA parameters of every write.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// What to do with the collector objects when the step wants them absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollectorCleanup {
    /// The collector Deployment was observed: delete the collector objects.
    Delete,
    /// Nothing observed: nothing to delete (saves three 404s per reconcile in direct mode).
    Skip,
}

/// Applies everything in `desired`, in order: Jaeger, then the collector (when wanted), then
/// the pipeline services, so that no service is pointed at a backend that was not applied
/// first; and each ConfigMap before the Deployment that mounts it.
pub async fn apply(
    client: &Client,
    namespace: &str,
    desired: &DesiredObjects,
    cleanup: CollectorCleanup,
) -> Result<()> {
    // No `..`: a new kind of child that nobody applies is a compile error.
    let DesiredObjects {
        jaeger,
        collector,
        pipeline,
    } = desired;
    apply_workload(client, namespace, jaeger).await?;
    match collector {
        Some(collector) => apply_workload(client, namespace, collector).await?,
        None if cleanup == CollectorCleanup::Delete => {
            delete_collector(client, namespace).await?;
        }
        None => {}
    }
    for workload in pipeline {
        apply_workload(client, namespace, workload).await?;
    }
    Ok(())
}

async fn apply_workload(client: &Client, namespace: &str, workload: &Workload) -> Result<()> {
    let Workload {
        config_map,
        deployment,
        service,
    } = workload;
    if let Some(cm) = config_map {
        apply_one(client, namespace, cm).await?;
    }
    apply_one(client, namespace, deployment).await?;
    apply_one(client, namespace, service).await
}

async fn apply_one<K>(client: &Client, namespace: &str, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + k8s_openapi::Resource
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let kind = <K as k8s_openapi::Resource>::KIND;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(&name, &apply_params(), &Patch::Apply(obj))
        .await
        .map_err(Error::kube("apply", kind, name.clone()))?;
    tracing::debug!(kind, name, "applied");
    Ok(())
}

/// Deletes the collector: ConfigMap and Service first, the Deployment last, so that the
/// Deployment (what [`crate::observe`] looks at) disappears only once everything else is gone
/// and a failed attempt is retried. A 404 counts as success.
async fn delete_collector(client: &Client, namespace: &str) -> Result<()> {
    delete::<ConfigMap>(client, namespace, COLLECTOR_CONFIG_NAME).await?;
    delete::<Service>(client, namespace, COLLECTOR_NAME).await?;
    delete::<Deployment>(client, namespace, COLLECTOR_NAME).await?;
    tracing::info!(namespace, "deleted the OpenTelemetry Collector");
    Ok(())
}

async fn delete<K>(client: &Client, namespace: &str, name: &str) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + k8s_openapi::Resource
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(Error::kube(
            "delete",
            <K as k8s_openapi::Resource>::KIND,
            name,
        )(source)),
    }
}
