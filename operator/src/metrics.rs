//! The operator's Prometheus metrics (prometheus-client), registered under
//! `tracedpipeline_operator_*` in the shared registry of `pipeline_common::metrics`.

use std::time::Instant;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use crate::error::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

/// Reconcile counters and histograms. `Default` builds unregistered metrics (tests).
#[derive(Clone, Debug)]
pub struct ReconcileMetrics {
    pub runs: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub switch_duration: Histogram,
}

impl Default for ReconcileMetrics {
    fn default() -> Self {
        Self {
            runs: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            switch_duration: Histogram::new([
                5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
        }
    }
}

impl ReconcileMetrics {
    /// Metrics registered in `registry` under the `operator` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("operator");
        sub.register(
            "reconcile_runs",
            "TracedPipeline reconciliations started",
            metrics.runs.clone(),
        );
        sub.register(
            "reconcile_failures",
            "Failed reconciliations, by error kind",
            metrics.failures.clone(),
        );
        sub.register(
            "reconcile_duration_seconds",
            "Time one reconciliation took",
            metrics.duration.clone(),
        );
        sub.register(
            "mode_switch_duration_seconds",
            "Time from the start of a tracing-mode switch to its completion",
            metrics.switch_duration.clone(),
        );
        metrics
    }

    /// Counts a run; the returned guard records its duration when dropped.
    pub fn count_and_measure(&self) -> ReconcileMeasurer {
        self.runs.inc();
        ReconcileMeasurer {
            start: Instant::now(),
            metric: self.duration.clone(),
        }
    }

    pub fn reconcile_failure(&self, error: &Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: error.metric_label().to_owned(),
            })
            .inc();
    }

    pub fn mode_switched(&self, seconds: f64) {
        self.switch_duration.observe(seconds);
    }
}

/// Records the reconcile duration on drop (also when the reconcile returns early with `?`).
pub struct ReconcileMeasurer {
    start: Instant,
    metric: Histogram,
}

impl Drop for ReconcileMeasurer {
    fn drop(&mut self) {
        self.metric.observe(self.start.elapsed().as_secs_f64());
    }
}
