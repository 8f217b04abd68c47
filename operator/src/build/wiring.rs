//! The tracing wiring of the pipeline services: the `OTEL_*` variables that depend on the mode,
//! and their hash.

use k8s_openapi::api::core::v1::EnvVar;

use super::common::short_hash;
use crate::api::{OtlpProtocol, TracingMode, TracingSpec};

/// Host of Jaeger's OTLP receivers (the `jaeger` Service).
pub const JAEGER_HOST: &str = "jaeger";
/// Host of the collector's OTLP receivers (the `otel-collector` Service).
pub const COLLECTOR_HOST: &str = "otel-collector";
/// OTLP/gRPC port.
pub const OTLP_GRPC_PORT: i32 = 4317;
/// OTLP/HTTP port.
pub const OTLP_HTTP_PORT: i32 = 4318;
/// The sampler every service uses: follow the parent's decision, sample new traces by ratio.
pub const SAMPLER: &str = "parentbased_traceidratio";

/// The effective tracing settings of every pipeline workload at one step of the switch.
#[derive(Clone, Debug, PartialEq)]
pub struct Wiring {
    /// The backend the services export to.
    pub mode: TracingMode,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub protocol: &'static str,
    /// `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler_arg: String,
}

impl Wiring {
    /// The wiring for `mode` (which may differ from `tracing.mode` during a switch).
    pub fn new(tracing: &TracingSpec, mode: TracingMode) -> Self {
        Self {
            mode,
            endpoint: endpoint(mode, tracing.protocol),
            protocol: match tracing.protocol {
                OtlpProtocol::Grpc => "grpc",
                OtlpProtocol::Http => "http/protobuf",
            },
            sampler_arg: tracing.sampling_ratio.to_string(),
        }
    }

    /// The mode-dependent `OTEL_*` variables, in a fixed order.
    pub fn env(&self) -> Vec<EnvVar> {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", self.protocol),
            ("OTEL_TRACES_SAMPLER", SAMPLER),
            ("OTEL_TRACES_SAMPLER_ARG", self.sampler_arg.as_str()),
        ]
        .into_iter()
        .map(|(name, value)| super::pipeline::env(name, value))
        .collect()
    }

    /// Hash of [`Self::env`]: goes on the pod template so a change rolls the pods.
    pub fn hash(&self) -> String {
        let text = format!(
            "endpoint={}\nprotocol={}\nsampler={}\nsampler_arg={}\n",
            self.endpoint, self.protocol, SAMPLER, self.sampler_arg
        );
        short_hash(text.as_bytes())
    }
}

/// The OTLP endpoint of `mode`'s receiver for `protocol` (base URL; the SDK appends
/// `/v1/traces` for OTLP/HTTP).
pub fn endpoint(mode: TracingMode, protocol: OtlpProtocol) -> String {
    let host = match mode {
        TracingMode::Direct => JAEGER_HOST,
        TracingMode::Collector => COLLECTOR_HOST,
    };
    let port = match protocol {
        OtlpProtocol::Grpc => OTLP_GRPC_PORT,
        OtlpProtocol::Http => OTLP_HTTP_PORT,
    };
    format!("http://{host}:{port}")
}
