//! The OpenTelemetry Collector of `collector` mode: OTLP in, memory limiter, a resource attribute
//! marking the path, batching, OTLP out to Jaeger.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container};
use serde_json::json;

use super::{
    BuildError, Workload,
    common::{self, CONFIG_HASH_ANNOTATION, Context, DeploymentParts},
    jaeger::JAEGER_NAME,
    wiring::{OTLP_GRPC_PORT, OTLP_HTTP_PORT},
};
use crate::api::{CollectorSpec, ServiceType};

/// Deployment and Service of the collector (the services' `http://otel-collector:4317`).
pub const COLLECTOR_NAME: &str = "otel-collector";
/// ConfigMap with the collector's configuration.
pub const COLLECTOR_CONFIG_NAME: &str = "otel-collector-config";
/// Resource attribute the collector upserts on every span it forwards, with value
/// [`COLLECTOR_NAME`]: the `TracesFlowing` check asks Jaeger for it to prove spans took the
/// collector path.
pub const COLLECTOR_PATH_ATTRIBUTE: &str = "tracedpipeline.collector.path";
const COMPONENT: &str = "collector";
const CONFIG_DIR: &str = "/etc/otelcol";
const CONFIG_FILE: &str = "config.yaml";
const HEALTH_PORT: i32 = 13133;

/// The collector's configuration file (YAML).
pub(crate) fn config(spec: &CollectorSpec) -> Result<String, BuildError> {
    let config = json!({
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": format!("0.0.0.0:{OTLP_GRPC_PORT}")},
                    "http": {"endpoint": format!("0.0.0.0:{OTLP_HTTP_PORT}")},
                },
            },
        },
        "processors": {
            "memory_limiter": {
                "check_interval": spec.memory_limiter.check_interval,
                "limit_mib": spec.memory_limiter.limit_mib,
                "spike_limit_mib": spec.memory_limiter.spike_limit_mib,
            },
            "resource": {
                "attributes": [{
                    "key": COLLECTOR_PATH_ATTRIBUTE,
                    "value": COLLECTOR_NAME,
                    "action": "upsert",
                }],
            },
            "batch": {
                "timeout": spec.batch.timeout,
                "send_batch_size": spec.batch.send_batch_size,
            },
        },
        "exporters": {
            "otlp/jaeger": {
                "endpoint": format!("{JAEGER_NAME}:{OTLP_GRPC_PORT}"),
                "tls": {"insecure": true},
            },
        },
        "extensions": {
            "health_check": {"endpoint": format!("0.0.0.0:{HEALTH_PORT}")},
        },
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    // memory_limiter first so that it can refuse data before any work is done.
                    "processors": ["memory_limiter", "resource", "batch"],
                    "exporters": ["otlp/jaeger"],
                },
            },
        },
    });
    serde_saphyr::to_string(&config).map_err(|source| BuildError::Config {
        which: "collector",
        source,
    })
}

pub(crate) fn build(ctx: &Context<'_>) -> Result<Workload, BuildError> {
    let spec = &ctx.tp.spec.tracing.collector;
    let config = config(spec)?;
    let config_hash = common::short_hash(config.as_bytes());
    let config_map = ConfigMap {
        metadata: ctx.meta(COLLECTOR_CONFIG_NAME, COLLECTOR_NAME, COMPONENT),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_owned(), config)])),
        ..ConfigMap::default()
    };

    let (volume, mount) = common::config_volume(COLLECTOR_CONFIG_NAME, CONFIG_DIR);
    let container = Container {
        name: COLLECTOR_NAME.to_owned(),
        image: Some(spec.image.clone()),
        args: Some(vec![format!("--config={CONFIG_DIR}/{CONFIG_FILE}")]),
        ports: Some(vec![
            common::container_port("otlp-grpc", OTLP_GRPC_PORT),
            common::container_port("otlp-http", OTLP_HTTP_PORT),
            common::container_port("health", HEALTH_PORT),
        ]),
        // The default limit stays above the default memory_limiter limit (400 MiB).
        resources: Some(
            spec.resources
                .clone()
                .unwrap_or_else(|| common::resources(("100m", "128Mi"), ("1", "512Mi"))),
        ),
        readiness_probe: Some(common::http_probe("/", "health", 5, 3)),
        liveness_probe: Some(common::http_probe("/", "health", 10, 3)),
        volume_mounts: Some(vec![mount]),
        ..Container::default()
    };
    let deployment = common::deployment(
        ctx,
        DeploymentParts {
            name: COLLECTOR_NAME,
            app: COLLECTOR_NAME,
            component: COMPONENT,
            replicas: spec.replicas,
            container,
            pool: &ctx.tp.spec.placement.cloud,
            extra_labels: BTreeMap::new(),
            annotations: BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), config_hash)]),
            volumes: vec![volume],
        },
    );
    let service = common::service(
        ctx,
        COLLECTOR_NAME,
        COLLECTOR_NAME,
        COMPONENT,
        ServiceType::ClusterIp,
        vec![
            common::service_port("otlp-grpc", OTLP_GRPC_PORT, None),
            common::service_port("otlp-http", OTLP_HTTP_PORT, None),
            common::service_port("health", HEALTH_PORT, None),
        ],
    );
    Ok(Workload {
        config_map: Some(config_map),
        deployment,
        service,
    })
}
