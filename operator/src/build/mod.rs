//! Desired state: every object the operator applies for one `TracedPipeline`, built without a
//! client (Stackable's `build` step). The reconciler applies [`DesiredObjects`] with server-side
//! apply; `render` prints them; the golden tests compare them.

mod collector;
mod common;
mod jaeger;
mod pipeline;
pub mod wiring;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Service},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::Resource;

pub use self::collector::{COLLECTOR_CONFIG_NAME, COLLECTOR_NAME, COLLECTOR_PATH_ATTRIBUTE};
pub use self::common::{
    COMPONENT_LABEL, CONFIG_HASH_ANNOTATION, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL,
    NAME_LABEL, PIPELINE_LABEL, WIRING_HASH_ANNOTATION, WIRING_LABEL,
};
pub use self::jaeger::{JAEGER_CONFIG_NAME, JAEGER_NAME};
pub use self::pipeline::{ENSEMBLE_NAME, PREPROCESSING_NAME, inference_name, model_service_name};
use crate::{
    api::TracedPipeline,
    switch::{CollectorPresence, Step},
};

/// Why the desired state cannot be built. These are problems of the object itself (retrying
/// does not help): the controller reports them as `Degraded` and waits for a change.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the TracedPipeline has no metadata.{0} (needed for owner references)")]
    MissingMetadata(&'static str),
    #[error(
        "model slot {0:?} names no network the inference service can load: set its model to mobilenetv2 or efficientnetb0"
    )]
    UnknownModel(String),
    #[error("failed to render the {which} configuration")]
    Config {
        which: &'static str,
        #[source]
        source: serde_saphyr::SerializeError,
    },
    #[error("failed to serialize {kind} {name}")]
    Serialize {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One Deployment with its ConfigMap (if any) and Service.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub config_map: Option<ConfigMap>,
    pub deployment: Deployment,
    pub service: Service,
}

/// Everything the operator wants to exist for one `TracedPipeline`.
///
/// The fields are meant to be destructured without `..` by the applier, so that a new kind of
/// child nobody applies is a compile error.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObjects {
    /// Jaeger v2: ConfigMap, Deployment, Service. Always present.
    pub jaeger: Workload,
    /// The OpenTelemetry Collector; `None` means its objects must be deleted.
    pub collector: Option<Workload>,
    /// preprocessing, ensemble, then one per model, in spec order.
    pub pipeline: Vec<Workload>,
}

impl DesiredObjects {
    /// Every object as JSON in apply order: backends before the services that export to them,
    /// and each ConfigMap before the Deployment that mounts it.
    pub fn to_values(&self) -> Result<Vec<serde_json::Value>, BuildError> {
        let mut out = Vec::new();
        let workloads = std::iter::once(&self.jaeger)
            .chain(self.collector.as_ref())
            .chain(self.pipeline.iter());
        for w in workloads {
            if let Some(cm) = &w.config_map {
                out.push(to_value("ConfigMap", cm)?);
            }
            out.push(to_value("Deployment", &w.deployment)?);
            out.push(to_value("Service", &w.service)?);
        }
        Ok(out)
    }
}

fn to_value<K: Resource + serde::Serialize>(
    kind: &'static str,
    obj: &K,
) -> Result<serde_json::Value, BuildError> {
    serde_json::to_value(obj).map_err(|source| BuildError::Serialize {
        kind,
        name: obj.meta().name.clone().unwrap_or_default(),
        source,
    })
}

/// Build the desired objects for `tp` at the given step of the mode switch.
pub fn desired(tp: &TracedPipeline, step: &Step) -> Result<DesiredObjects, BuildError> {
    let ctx = common::Context::new(tp)?;
    let wiring = wiring::Wiring::new(&tp.spec.tracing, step.wiring);
    let collector = match step.collector {
        CollectorPresence::Present => Some(collector::build(&ctx)?),
        CollectorPresence::Absent => None,
    };
    Ok(DesiredObjects {
        jaeger: jaeger::build(&ctx)?,
        collector,
        pipeline: pipeline::build(&ctx, &wiring)?,
    })
}

/// The owner reference every child carries (controller, blocks owner deletion), so that the
/// garbage collector removes children with their TracedPipeline and `owns()` maps events back.
pub fn owner_reference(tp: &TracedPipeline) -> Result<OwnerReference, BuildError> {
    // `controller_owner_ref` returns None only without name or uid; say which one is missing.
    if tp.meta().name.is_none() {
        return Err(BuildError::MissingMetadata("name"));
    }
    let mut owner = tp
        .controller_owner_ref(&())
        .ok_or(BuildError::MissingMetadata("uid"))?;
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

#[cfg(test)]
mod tests;
