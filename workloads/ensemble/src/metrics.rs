//! The ensemble's own metrics, next to the HTTP metrics every service has.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub model: String,
    /// Low-cardinality failure kind, e.g. `timeout`, `status`, `invalid_answer`.
    pub reason: &'static str,
}

/// Per-model call latency and failures: which model makes the ensemble slow or degraded.
#[derive(Debug, Clone)]
pub struct ModelMetrics {
    pub call_duration: Family<ModelLabels, Histogram>,
    pub call_failures: Family<FailureLabels, Counter>,
}

impl ModelMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            call_duration: Family::new_with_constructor(
                pipeline_common::metrics::latency_histogram,
            ),
            call_failures: Family::default(),
        };
        registry.register(
            "ensemble_model_call_duration_seconds",
            "Time from sending an image to a model until its answer was read or the call failed",
            metrics.call_duration.clone(),
        );
        registry.register(
            "ensemble_model_call_failures",
            "Model calls that failed (timeout, transport error, error status, invalid answer)",
            metrics.call_failures.clone(),
        );
        metrics
    }
}
