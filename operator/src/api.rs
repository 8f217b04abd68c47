//! The `TracedPipeline` API (`tracing.tracedpipeline.dev/v1alpha1`).
//!
//! This module depends on nothing else in the crate so that it can move into its own API crate
//! (shared with `e2e/`) without changes. Field doc comments become `kubectl explain` text;
//! defaults come from the serde defaults (schemars writes them into the schema, so the apiserver
//! fills them in); CEL rules (`x-kubernetes-validations`) reject contradictions at admission.
//!
//! One `TracedPipeline` per namespace: the child object names are the upstream wire contract
//! (`ensemble-service`, `<model>-service`, ...), so they are fixed per namespace and a second
//! `TracedPipeline` in the same namespace would fight over them. CEL cannot see other objects;
//! the controller reports a second one as `Degraded`.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{ResourceRequirements, Toleration},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every kind this operator serves.
pub const GROUP: &str = "tracing.tracedpipeline.dev";
/// The only served (and stored) version.
pub const VERSION: &str = "v1alpha1";

/// Condition types written to `status.conditions`.
pub mod condition {
    /// Every pipeline service has its replicas ready on the wiring it runs now (so `Ready`
    /// stays true through a make-before-break switch; `Progressing` tells the switch step).
    pub const READY: &str = "Ready";
    /// Something is changing: a rollout or a tracing-mode switch (the reason says which step).
    pub const PROGRESSING: &str = "Progressing";
    /// The object cannot be reconciled as written, or a child is failing.
    pub const DEGRADED: &str = "Degraded";
    /// Jaeger has recently received spans from every pipeline service (via the collector in
    /// collector mode).
    pub const TRACES_FLOWING: &str = "TracesFlowing";
}

// ---------------------------------------------------------------------------------------------
// Spec
// ---------------------------------------------------------------------------------------------

/// A traced object-classification pipeline: preprocessing → ensemble → models, traced with
/// OpenTelemetry into Jaeger, either directly or through an OpenTelemetry Collector.
///
/// Only one TracedPipeline per namespace is supported: child names (`ensemble-service`,
/// `<model>-service`, `jaeger`, ...) are fixed because the services find each other by them.
// Each printcolumn repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "tracing.tracedpipeline.dev",
    version = "v1alpha1",
    kind = "TracedPipeline",
    namespaced,
    shortname = "tp",
    status = "TracedPipelineStatus",
    derive = "PartialEq",
    doc = "A traced ML pipeline (preprocessing, ensemble, models) with Jaeger, optionally behind an OpenTelemetry Collector.",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".status.tracing.activeMode",
        description = "Tracing mode the pipeline is wired to now"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Traces",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"TracesFlowing\")].status",
        description = "Whether spans of every service reach Jaeger"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!(self.services.preprocessing.exposure.type == 'NodePort' && self.tracing.jaeger.ui.serviceType == 'NodePort' && self.services.preprocessing.exposure.nodePort == self.tracing.jaeger.ui.nodePort)"
).message("services.preprocessing.exposure.nodePort and tracing.jaeger.ui.nodePort must differ"))]
#[serde(rename_all = "camelCase")]
pub struct TracedPipelineSpec {
    /// Where spans go: straight to Jaeger (`direct`) or through an OpenTelemetry Collector
    /// (`collector`), and how they are sampled and stored.
    #[serde(default)]
    pub tracing: TracingSpec,
    /// The pipeline services: preprocessing, ensemble and the models it fans out to.
    #[serde(default)]
    pub services: ServicesSpec,
    /// Node pools: pipeline pods run on `edge`, Jaeger and the collector on `cloud`.
    #[serde(default)]
    pub placement: PlacementSpec,
    /// Stop reconciling: children are left as they are until this is false again.
    #[serde(default)]
    pub paused: bool,
}

/// Tracing backend settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// `direct`: services export to Jaeger. `collector`: services export to an OpenTelemetry
    /// Collector that batches, marks and forwards spans to Jaeger. Changing it switches live,
    /// make-before-break (no span is sent to an endpoint that is not there).
    #[serde(default)]
    pub mode: TracingMode,
    /// OTLP transport the services use: `grpc` (port 4317) or `http` (OTLP/HTTP protobuf, 4318).
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Fraction of new traces recorded (parent-based trace-id-ratio sampler), 0 to 1.
    #[serde(default = "default_sampling_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 1.0").message("samplingRatio must be between 0 and 1"))]
    pub sampling_ratio: f64,
    /// The Jaeger v2 instance (in-memory storage) that stores and shows the traces.
    #[serde(default)]
    pub jaeger: JaegerSpec,
    /// The OpenTelemetry Collector, deployed only in `collector` mode.
    #[serde(default)]
    pub collector: CollectorSpec,
}

impl Default for TracingSpec {
    fn default() -> Self {
        Self {
            mode: TracingMode::default(),
            protocol: OtlpProtocol::default(),
            sampling_ratio: default_sampling_ratio(),
            jaeger: JaegerSpec::default(),
            collector: CollectorSpec::default(),
        }
    }
}

/// Tracing mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TracingMode {
    /// Services export straight to Jaeger.
    #[default]
    Direct,
    /// Services export to the OpenTelemetry Collector, which forwards to Jaeger.
    Collector,
}

impl TracingMode {
    /// The wire name (`direct` / `collector`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Collector => "collector",
        }
    }
}

impl std::fmt::Display for TracingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// OTLP transport.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC on port 4317.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies on port 4318.
    Http,
}

/// How a Service is exposed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[serde(rename = "ClusterIP")]
    ClusterIp,
    /// Also reachable on `nodePort` of every node (kind maps it to the host).
    #[default]
    NodePort,
}

/// Jaeger v2 settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JaegerSpec {
    /// Jaeger v2 image (the `jaeger` binary, configured by a generated ConfigMap).
    #[serde(default = "default_jaeger_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Container resources; defaults suit the in-memory store with the default `maxTraces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Most traces kept in memory; the oldest are dropped first. Everything is lost on restart.
    #[serde(default = "default_max_traces")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self >= 1").message("maxTraces must be at least 1"))]
    pub max_traces: i64,
    /// How the Jaeger UI (port 16686) is exposed.
    #[serde(default)]
    pub ui: JaegerUiSpec,
}

impl Default for JaegerSpec {
    fn default() -> Self {
        Self {
            image: default_jaeger_image(),
            resources: None,
            max_traces: default_max_traces(),
            ui: JaegerUiSpec::default(),
        }
    }
}

/// Exposure of the Jaeger UI.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JaegerUiSpec {
    /// `ClusterIP` or `NodePort` (the default, so kind can map it to localhost:16686).
    #[serde(default)]
    pub service_type: ServiceType,
    /// Node port of the UI when `serviceType` is `NodePort` (30000-32767).
    #[serde(default = "default_jaeger_node_port")]
    #[schemars(range(min = 30000, max = 32767))]
    #[x_kube(validation = Rule::new("self >= 30000 && self <= 32767").message("nodePort must be in 30000-32767"))]
    pub node_port: i32,
}

impl Default for JaegerUiSpec {
    fn default() -> Self {
        Self {
            service_type: ServiceType::NodePort,
            node_port: default_jaeger_node_port(),
        }
    }
}

/// OpenTelemetry Collector settings (used in `collector` mode).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CollectorSpec {
    /// Collector image; needs the contrib distribution (resource processor, memory limiter).
    #[serde(default = "default_collector_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Collector replicas (at least 1).
    #[serde(default = "default_one")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self >= 1").message("collector.replicas must be at least 1"))]
    pub replicas: i32,
    /// Batch processor settings.
    #[serde(default)]
    pub batch: BatchSpec,
    /// Memory limiter processor settings; keep `limitMiB` below the container memory limit.
    #[serde(default)]
    pub memory_limiter: MemoryLimiterSpec,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for CollectorSpec {
    fn default() -> Self {
        Self {
            image: default_collector_image(),
            replicas: 1,
            batch: BatchSpec::default(),
            memory_limiter: MemoryLimiterSpec::default(),
            resources: None,
        }
    }
}

/// CEL rule for duration strings as both Go (collector) and humantime (services) parse them.
const DURATION_RULE: &str = "self.matches('^([0-9]+(ns|us|ms|s|m|h))+$')";
const DURATION_MESSAGE: &str = "must be a duration such as 500ms, 5s or 1m30s";

/// Batch processor settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchSpec {
    /// Longest time a batch waits before it is sent (duration, e.g. `1s`).
    #[serde(default = "default_one_second")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    #[schemars(length(max = 32))]
    pub timeout: String,
    /// Number of spans that sends a batch regardless of the timeout.
    #[serde(default = "default_send_batch_size")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self >= 1").message("sendBatchSize must be at least 1"))]
    pub send_batch_size: i32,
}

impl Default for BatchSpec {
    fn default() -> Self {
        Self {
            timeout: default_one_second(),
            send_batch_size: default_send_batch_size(),
        }
    }
}

/// Memory limiter processor settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.spikeLimitMiB < self.limitMiB").message("memoryLimiter.spikeLimitMiB must be below limitMiB"))]
#[serde(rename_all = "camelCase")]
pub struct MemoryLimiterSpec {
    /// Hard limit of the collector's heap in MiB; above it data is refused.
    #[serde(default = "default_limit_mib", rename = "limitMiB")]
    #[schemars(range(min = 1))]
    pub limit_mib: i32,
    /// Headroom below `limitMiB` where the collector starts refusing data (soft limit).
    #[serde(default = "default_spike_limit_mib", rename = "spikeLimitMiB")]
    #[schemars(range(min = 0))]
    pub spike_limit_mib: i32,
    /// How often memory use is checked (duration, e.g. `1s`).
    #[serde(default = "default_one_second")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    #[schemars(length(max = 32))]
    pub check_interval: String,
}

impl Default for MemoryLimiterSpec {
    fn default() -> Self {
        Self {
            limit_mib: default_limit_mib(),
            spike_limit_mib: default_spike_limit_mib(),
            check_interval: default_one_second(),
        }
    }
}

/// The pipeline services.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicesSpec {
    /// Entry point (`POST /preprocessing`, port 5010): decodes and resizes images.
    #[serde(default)]
    pub preprocessing: PreprocessingSpec,
    /// Fans an image out to every model (port 5011) and aggregates the answers.
    #[serde(default)]
    pub ensemble: EnsembleSpec,
    /// The models the ensemble asks, one Deployment `inference-<name>` and Service
    /// `<name>-service` (port 5012) each. Names are unique; at least one model.
    #[serde(default = "default_models")]
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(
        validation = Rule::new("size(self) >= 1").message("at least one model is required"),
        validation = Rule::new("self.all(m, self.exists_one(n, n.name == m.name))").message("model names must be unique"),
        merge_strategy = ListMerge::Map(vec!["name".into()])
    )]
    pub models: Vec<ModelSpec>,
}

impl Default for ServicesSpec {
    fn default() -> Self {
        Self {
            preprocessing: PreprocessingSpec::default(),
            ensemble: EnsembleSpec::default(),
            models: default_models(),
        }
    }
}

/// The preprocessing service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreprocessingSpec {
    /// Container image.
    #[serde(default = "default_preprocessing_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Pod replicas.
    #[serde(default = "default_one")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Container resources (default 250m/128Mi requests, 1/256Mi limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How `preprocessing-service` is exposed (default NodePort 30010, mapped by kind to
    /// localhost:5010).
    #[serde(default)]
    pub exposure: ExposureSpec,
}

impl Default for PreprocessingSpec {
    fn default() -> Self {
        Self {
            image: default_preprocessing_image(),
            replicas: 1,
            resources: None,
            exposure: ExposureSpec::default(),
        }
    }
}

/// Service exposure.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExposureSpec {
    /// `ClusterIP` or `NodePort`.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Node port when `type` is `NodePort` (30000-32767).
    #[serde(default = "default_preprocessing_node_port")]
    #[schemars(range(min = 30000, max = 32767))]
    #[x_kube(validation = Rule::new("self >= 30000 && self <= 32767").message("nodePort must be in 30000-32767"))]
    pub node_port: i32,
}

impl Default for ExposureSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::NodePort,
            node_port: default_preprocessing_node_port(),
        }
    }
}

/// The ensemble service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnsembleSpec {
    /// Container image.
    #[serde(default = "default_ensemble_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Pod replicas.
    #[serde(default = "default_one")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Container resources (default 100m/64Mi requests, 500m/128Mi limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How the model answers are combined.
    #[serde(default)]
    pub aggregation: Aggregation,
    /// Longest time one model call may take (duration such as `5s`, not zero).
    #[serde(default = "default_model_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE),
        validation = Rule::new("!self.matches('^(0+(ns|us|ms|s|m|h))+$')").message("modelTimeout must not be zero")
    )]
    pub model_timeout: String,
}

impl Default for EnsembleSpec {
    fn default() -> Self {
        Self {
            image: default_ensemble_image(),
            replicas: 1,
            resources: None,
            aggregation: Aggregation::default(),
            model_timeout: default_model_timeout(),
        }
    }
}

/// Aggregation strategy of the ensemble.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Mean probability per class over the models that answered.
    #[default]
    AverageProbability,
    /// The single most confident answer wins.
    MaxConfidence,
    /// Each model's top-1 is a vote; ties go to the higher mean probability.
    MajorityVote,
}

impl Aggregation {
    /// The wire name, as the ensemble's `AGGREGATION` reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AverageProbability => "average_probability",
            Self::MaxConfidence => "max_confidence",
            Self::MajorityVote => "majority_vote",
        }
    }
}

/// A network the inference service can load (`MODEL` of the inference image).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// MobileNetV2 (ImageNet-1k, torchvision weights).
    Mobilenetv2,
    /// EfficientNet-B0 (ImageNet-1k, timm weights).
    Efficientnetb0,
}

impl ModelKind {
    /// The value of the inference service's `MODEL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mobilenetv2 => "mobilenetv2",
            Self::Efficientnetb0 => "efficientnetb0",
        }
    }

    /// The kind a slot named after a stock model serves.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "mobilenetv2" => Some(Self::Mobilenetv2),
            "efficientnetb0" => Some(Self::Efficientnetb0),
            _ => None,
        }
    }
}

/// One model served by the inference service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.model) || self.name in ['mobilenetv2', 'efficientnetb0']").message("model is required when name is not mobilenetv2 or efficientnetb0 (the networks the inference service can load)"))]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Model slot (DNS label): names the Deployment `inference-<name>`, the Service
    /// `<name>-service`, the ensemble's answer for it and the spans' service name.
    #[schemars(
        length(min = 1, max = 53),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("!(self in ['preprocessing', 'ensemble'])").message("a model may not be named preprocessing or ensemble: its Service would collide"))]
    pub name: String,
    /// The network this slot serves; defaults to `name` when that is `mobilenetv2` or
    /// `efficientnetb0`. Two slots may serve the same network (e.g. to compare placements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelKind>,
    /// Container image.
    #[serde(default = "default_inference_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Pod replicas.
    #[serde(default = "default_one")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Container resources (default 500m/256Mi requests, 2/512Mi limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// ONNX Runtime intra-op threads; unset means the container's CPU limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub cpu_threads: Option<u32>,
}

impl ModelSpec {
    /// A model with default image, one replica and default resources.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            model: None,
            image: default_inference_image(),
            replicas: 1,
            resources: None,
            cpu_threads: None,
        }
    }

    /// The network to load: `model`, else the stock model the slot is named after. `None` only
    /// for an object the apiserver would have rejected (see the CEL rule on this type).
    pub fn served_model(&self) -> Option<ModelKind> {
        self.model.or_else(|| ModelKind::from_name(&self.name))
    }
}

/// Node pools.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Where the pipeline services run.
    #[serde(default = "default_edge_pool")]
    pub edge: PoolSpec,
    /// Where Jaeger and the collector run.
    #[serde(default = "default_cloud_pool")]
    pub cloud: PoolSpec,
}

impl Default for PlacementSpec {
    fn default() -> Self {
        Self {
            edge: default_edge_pool(),
            cloud: default_cloud_pool(),
        }
    }
}

/// A node pool: which nodes a pod may land on.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// Node labels the pods require (empty: any node).
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// Node label key of the default pools (kind-config.yaml labels the nodes with it).
pub const POOL_LABEL: &str = "tracedpipeline.dev/pool";

fn pool(value: &str) -> PoolSpec {
    PoolSpec {
        node_selector: BTreeMap::from([(POOL_LABEL.to_owned(), value.to_owned())]),
        tolerations: Vec::new(),
    }
}

fn default_edge_pool() -> PoolSpec {
    pool("edge")
}
fn default_cloud_pool() -> PoolSpec {
    pool("cloud")
}
fn default_sampling_ratio() -> f64 {
    1.0
}
fn default_jaeger_image() -> String {
    "jaegertracing/jaeger:2.13.0".to_owned()
}
fn default_max_traces() -> i64 {
    50_000
}
fn default_jaeger_node_port() -> i32 {
    30686
}
fn default_collector_image() -> String {
    "otel/opentelemetry-collector-contrib:0.139.0".to_owned()
}
fn default_one() -> i32 {
    1
}
fn default_one_second() -> String {
    "1s".to_owned()
}
fn default_send_batch_size() -> i32 {
    512
}
fn default_limit_mib() -> i32 {
    400
}
fn default_spike_limit_mib() -> i32 {
    100
}
fn default_preprocessing_image() -> String {
    "tracedpipeline/preprocessing:0.1.0".to_owned()
}
fn default_preprocessing_node_port() -> i32 {
    30010
}
fn default_ensemble_image() -> String {
    "tracedpipeline/ensemble:0.1.0".to_owned()
}
fn default_model_timeout() -> String {
    "5s".to_owned()
}
fn default_inference_image() -> String {
    "tracedpipeline/inference:0.1.0".to_owned()
}
fn default_models() -> Vec<ModelSpec> {
    vec![
        ModelSpec::named("mobilenetv2"),
        ModelSpec::named("efficientnetb0"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------------

/// Observed state, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TracedPipelineStatus {
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded` and `TracesFlowing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Tracing mode state, including an ongoing switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingStatus>,
    /// Ready and desired replicas per pipeline service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub services: Vec<ServiceStatus>,
}

/// Tracing mode state.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TracingStatus {
    /// The mode every pipeline pod is wired to (absent before the first rollout completes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_mode: Option<TracingMode>,
    /// The mode the spec asks for; differs from `activeMode` while switching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_mode: Option<TracingMode>,
    /// The OTLP endpoint the services are configured with now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// When the current (or last) mode switch started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_started_at: Option<Time>,
    /// When the last mode switch completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_completed_at: Option<Time>,
}

/// Replica counts of one pipeline service.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Deployment name (`preprocessing`, `ensemble`, `inference-<model>`).
    pub name: String,
    /// Ready pods.
    pub ready_replicas: i32,
    /// Desired pods.
    pub desired_replicas: i32,
}

#[cfg(test)]
mod tests;
