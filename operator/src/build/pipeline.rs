//! The four (or more) pipeline services: preprocessing, ensemble, one inference per model.
//!
//! Names and ports are the upstream wire contract: the services find each other by them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, ResourceRequirements,
};

use super::{
    BuildError, Workload,
    common::{self, Context, DeploymentParts, WIRING_HASH_ANNOTATION, WIRING_LABEL},
    wiring::Wiring,
};
use crate::api::{ModelSpec, ServiceType};

/// Deployment (and app label) of the preprocessing service.
pub const PREPROCESSING_NAME: &str = "preprocessing";
/// Deployment (and app label) of the ensemble service.
pub const ENSEMBLE_NAME: &str = "ensemble";
const PREPROCESSING_SERVICE: &str = "preprocessing-service";
const ENSEMBLE_SERVICE: &str = "ensemble-service";
const PREPROCESSING_PORT: i32 = 5010;
const ENSEMBLE_PORT: i32 = 5011;
const INFERENCE_PORT: i32 = 5012;
const COMPONENT: &str = "pipeline";
/// Where the inference image keeps its models.
const MODELS_DIR: &str = "/models";
/// Where the inference image keeps ONNX Runtime.
const ORT_DYLIB_PATH: &str = "/usr/lib/libonnxruntime.so";

/// Deployment (and `OTEL_SERVICE_NAME`) of a model's inference service.
pub fn inference_name(model: &str) -> String {
    format!("inference-{model}")
}

/// Service of a model (the ensemble derives `http://<model>-service:5012/inference` from it).
pub fn model_service_name(model: &str) -> String {
    format!("{model}-service")
}

/// A plain environment variable.
pub(crate) fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

/// An environment variable from the pod's own fields (downward API).
fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The ensemble's `ENSEMBLE_MODELS`: `name=url,...` in spec order.
pub(crate) fn ensemble_models(models: &[ModelSpec]) -> String {
    models
        .iter()
        .map(|m| {
            format!(
                "{}=http://{}:{INFERENCE_PORT}/inference",
                m.name,
                model_service_name(&m.name)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn build(ctx: &Context<'_>, wiring: &Wiring) -> Result<Vec<Workload>, BuildError> {
    let services = &ctx.tp.spec.services;
    let pre = &services.preprocessing;
    let ens = &services.ensemble;

    let mut out = Vec::with_capacity(2 + services.models.len());
    out.push(workload(
        ctx,
        wiring,
        Service {
            deployment: PREPROCESSING_NAME.to_owned(),
            service: PREPROCESSING_SERVICE.to_owned(),
            port: PREPROCESSING_PORT,
            image: &pre.image,
            replicas: pre.replicas,
            resources: pre
                .resources
                .clone()
                .unwrap_or_else(|| common::resources(("250m", "128Mi"), ("1", "256Mi"))),
            env: vec![env(
                "ENSEMBLE_URL",
                &format!("http://{ENSEMBLE_SERVICE}:{ENSEMBLE_PORT}/ensemble_service"),
            )],
            exposure: (pre.exposure.type_, Some(pre.exposure.node_port)),
        },
    ));
    out.push(workload(
        ctx,
        wiring,
        Service {
            deployment: ENSEMBLE_NAME.to_owned(),
            service: ENSEMBLE_SERVICE.to_owned(),
            port: ENSEMBLE_PORT,
            image: &ens.image,
            replicas: ens.replicas,
            resources: ens
                .resources
                .clone()
                .unwrap_or_else(|| common::resources(("100m", "64Mi"), ("500m", "128Mi"))),
            env: vec![
                env("ENSEMBLE_MODELS", &ensemble_models(&services.models)),
                env("AGGREGATION", ens.aggregation.as_str()),
                env("MODEL_TIMEOUT", &ens.model_timeout),
            ],
            exposure: (ServiceType::ClusterIp, None),
        },
    ));
    for model in &services.models {
        let served = model
            .served_model()
            .ok_or_else(|| BuildError::UnknownModel(model.name.clone()))?;
        out.push(workload(
            ctx,
            wiring,
            Service {
                deployment: inference_name(&model.name),
                service: model_service_name(&model.name),
                port: INFERENCE_PORT,
                image: &model.image,
                replicas: model.replicas,
                // ONNX Runtime needs more than upstream's 256Mi limit for the arena plus model.
                resources: model
                    .resources
                    .clone()
                    .unwrap_or_else(|| common::resources(("500m", "256Mi"), ("2", "512Mi"))),
                env: vec![
                    env("MODEL", served.as_str()),
                    env("MODELS_DIR", MODELS_DIR),
                    env("ORT_DYLIB_PATH", ORT_DYLIB_PATH),
                    // 0 lets the service size its pool to the container's CPU limit.
                    env(
                        "INTRA_OP_THREADS",
                        &model.cpu_threads.unwrap_or(0).to_string(),
                    ),
                ],
                exposure: (ServiceType::ClusterIp, None),
            },
        ));
    }
    Ok(out)
}

/// What differs between the pipeline services.
struct Service<'a> {
    deployment: String,
    service: String,
    port: i32,
    image: &'a str,
    replicas: i32,
    resources: ResourceRequirements,
    /// Service-specific variables (before the shared ones).
    env: Vec<EnvVar>,
    exposure: (ServiceType, Option<i32>),
}

fn workload(ctx: &Context<'_>, wiring: &Wiring, svc: Service<'_>) -> Workload {
    let Service {
        deployment,
        service,
        port,
        image,
        replicas,
        resources,
        mut env,
        exposure: (service_type, node_port),
    } = svc;

    env.extend(wiring.env());
    env.extend([
        self::env("OTEL_SERVICE_NAME", &deployment),
        self::env("LOG_FORMAT", "json"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("NODE_NAME", "spec.nodeName"),
    ]);

    let container = Container {
        name: deployment.clone(),
        image: Some(image.to_owned()),
        ports: Some(vec![common::container_port("http", port)]),
        env: Some(env),
        resources: Some(resources),
        readiness_probe: Some(common::http_probe("/readyz", "http", 5, 3)),
        liveness_probe: Some(common::http_probe("/healthz", "http", 10, 3)),
        // Inference loads and warms up its model before /healthz answers; allow a minute.
        startup_probe: Some(common::http_probe("/healthz", "http", 2, 30)),
        ..Container::default()
    };
    let annotations = BTreeMap::from([(WIRING_HASH_ANNOTATION.to_owned(), wiring.hash())]);

    let deployment_obj = common::deployment(
        ctx,
        DeploymentParts {
            name: &deployment,
            app: &deployment,
            component: COMPONENT,
            replicas,
            container,
            pool: &ctx.tp.spec.placement.edge,
            extra_labels: BTreeMap::from([(
                WIRING_LABEL.to_owned(),
                wiring.mode.as_str().to_owned(),
            )]),
            annotations,
            volumes: Vec::new(),
        },
    );
    let node_port = match service_type {
        ServiceType::NodePort => node_port,
        ServiceType::ClusterIp => None,
    };
    let service_obj = common::service(
        ctx,
        &service,
        &deployment,
        COMPONENT,
        service_type,
        vec![common::service_port("http", port, node_port)],
    );
    Workload {
        config_map: None,
        deployment: deployment_obj,
        service: service_obj,
    }
}
