//! Jaeger v2 (the `jaeger` binary: an OpenTelemetry Collector distribution with Jaeger's storage
//! and query extensions) with in-memory storage. Always present: it is the trace backend of both
//! modes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container};
use serde_json::json;

use super::{
    BuildError, Workload,
    common::{self, CONFIG_HASH_ANNOTATION, Context, DeploymentParts},
    wiring::{OTLP_GRPC_PORT, OTLP_HTTP_PORT},
};
use crate::api::ServiceType;

/// Deployment and Service of Jaeger (the services' `http://jaeger:4317` in direct mode).
pub const JAEGER_NAME: &str = "jaeger";
/// ConfigMap with Jaeger's configuration.
pub const JAEGER_CONFIG_NAME: &str = "jaeger-config";
const COMPONENT: &str = "tracing-backend";
const CONFIG_DIR: &str = "/etc/jaeger";
const CONFIG_FILE: &str = "config.yaml";
/// Jaeger UI and HTTP APIs (including api_v3).
pub const UI_PORT: i32 = 16686;
/// Jaeger's query API over gRPC (api_v2/api_v3).
pub const QUERY_GRPC_PORT: i32 = 16685;
/// Health check v2 extension (`/status`).
pub const HEALTH_PORT: i32 = 13133;
const STORE: &str = "memstore";

/// Jaeger's configuration file (YAML).
pub(crate) fn config(max_traces: i64) -> Result<String, BuildError> {
    let config = json!({
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                },
            },
            "telemetry": {"resource": {"service.name": "jaeger"}},
        },
        "extensions": {
            "healthcheckv2": {
                "use_v2": true,
                "http": {"endpoint": format!("0.0.0.0:{HEALTH_PORT}")},
            },
            "jaeger_query": {
                "storage": {"traces": STORE},
                "http": {"endpoint": format!("0.0.0.0:{UI_PORT}")},
                "grpc": {"endpoint": format!("0.0.0.0:{QUERY_GRPC_PORT}")},
            },
            "jaeger_storage": {
                "backends": {STORE: {"memory": {"max_traces": max_traces}}},
            },
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": format!("0.0.0.0:{OTLP_GRPC_PORT}")},
                    "http": {"endpoint": format!("0.0.0.0:{OTLP_HTTP_PORT}")},
                },
            },
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": STORE}},
    });
    serde_saphyr::to_string(&config).map_err(|source| BuildError::Config {
        which: "Jaeger",
        source,
    })
}

pub(crate) fn build(ctx: &Context<'_>) -> Result<Workload, BuildError> {
    let spec = &ctx.tp.spec.tracing.jaeger;
    let config = config(spec.max_traces)?;
    let config_hash = common::short_hash(config.as_bytes());
    let config_map = ConfigMap {
        metadata: ctx.meta(JAEGER_CONFIG_NAME, JAEGER_NAME, COMPONENT),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_owned(), config)])),
        ..ConfigMap::default()
    };

    let (volume, mount) = common::config_volume(JAEGER_CONFIG_NAME, CONFIG_DIR);
    let container = Container {
        name: JAEGER_NAME.to_owned(),
        image: Some(spec.image.clone()),
        args: Some(vec![format!("--config={CONFIG_DIR}/{CONFIG_FILE}")]),
        ports: Some(vec![
            common::container_port("otlp-grpc", OTLP_GRPC_PORT),
            common::container_port("otlp-http", OTLP_HTTP_PORT),
            common::container_port("ui", UI_PORT),
            // jaeger_query listens here too; declare every listener the config opens.
            common::container_port("query-grpc", QUERY_GRPC_PORT),
            common::container_port("health", HEALTH_PORT),
        ]),
        // In-memory traces: the memory limit bounds maxTraces in practice.
        resources: Some(
            spec.resources
                .clone()
                .unwrap_or_else(|| common::resources(("100m", "256Mi"), ("1", "1Gi"))),
        ),
        readiness_probe: Some(common::http_probe("/status", "health", 5, 3)),
        liveness_probe: Some(common::http_probe("/status", "health", 10, 3)),
        volume_mounts: Some(vec![mount]),
        ..Container::default()
    };
    let deployment = common::deployment(
        ctx,
        DeploymentParts {
            name: JAEGER_NAME,
            app: JAEGER_NAME,
            component: COMPONENT,
            replicas: 1, // in-memory storage cannot be shared between replicas
            container,
            pool: &ctx.tp.spec.placement.cloud,
            extra_labels: BTreeMap::new(),
            annotations: BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), config_hash)]),
            volumes: vec![volume],
        },
    );
    let ui_node_port = match spec.ui.service_type {
        ServiceType::NodePort => Some(spec.ui.node_port),
        ServiceType::ClusterIp => None,
    };
    let service = common::service(
        ctx,
        JAEGER_NAME,
        JAEGER_NAME,
        COMPONENT,
        spec.ui.service_type,
        vec![
            common::service_port("otlp-grpc", OTLP_GRPC_PORT, None),
            common::service_port("otlp-http", OTLP_HTTP_PORT, None),
            common::service_port("ui", UI_PORT, ui_node_port),
            common::service_port("health", HEALTH_PORT, None),
        ],
    );
    Ok(Workload {
        config_map: Some(config_map),
        deployment,
        service,
    })
}
