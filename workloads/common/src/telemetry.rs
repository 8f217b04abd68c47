//! Logs and OpenTelemetry traces, configured by the standard `OTEL_*` environment variables.
//!
//! * `OTEL_SDK_DISABLED=true` turns span export off (logs stay).
//! * `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `_HEADERS`, `_TIMEOUT`,
//!   `_COMPRESSION` are read by `opentelemetry-otlp`; `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`
//!   (`grpc` or `http/protobuf`, the default) picks the transport here.
//! * `OTEL_SERVICE_NAME` overrides the service's own name; `OTEL_RESOURCE_ATTRIBUTES` adds
//!   attributes; `POD_NAME`, `POD_NAMESPACE`, `NODE_NAME` (downward API) become `k8s.*` attributes.
//! * `OTEL_TRACES_SAMPLER`/`_ARG` and `OTEL_BSP_*` are read by the SDK.
//!
//! Spans leave through a batch processor with a bounded queue on its own thread, so exporting
//! never blocks or fails a request: an unreachable endpoint only costs dropped spans, which are
//! counted (`tracedpipeline_otel_spans_dropped_total`) and logged at most every 30 seconds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, filter};

use crate::config::{LogArgs, LogFormat, parse_bool};
use crate::metrics::SpanExportMetrics;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {source}")]
    LogFilter {
        filter: String,
        #[source]
        source: filter::ParseError,
    },
    #[error("unsupported OTLP protocol {0:?}: use \"grpc\" or \"http/protobuf\"")]
    Protocol(String),
    #[error("invalid value {value:?} for {name}: expected true or false")]
    Flag { name: &'static str, value: String },
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl OtlpProtocol {
    /// Parses the values the OpenTelemetry specification defines (`http/json` is not offered).
    pub fn parse(value: &str) -> Result<Self, TelemetryError> {
        match value.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" | "http" => Ok(Self::HttpProtobuf),
            other => Err(TelemetryError::Protocol(other.to_owned())),
        }
    }
}

/// Trace export settings resolved from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    pub enabled: bool,
    pub protocol: OtlpProtocol,
    pub service_name: String,
    /// Resource attributes beyond the ones the SDK detects itself.
    pub attributes: Vec<(&'static str, String)>,
}

impl TraceSettings {
    /// Resolves the settings from a variable lookup (`std::env::var` in production).
    pub fn from_lookup(
        default_service_name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TelemetryError> {
        let non_empty = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let enabled = match non_empty("OTEL_SDK_DISABLED") {
            None => true,
            Some(value) => !parse_bool(&value).ok_or(TelemetryError::Flag {
                name: "OTEL_SDK_DISABLED",
                value,
            })?,
        };
        let protocol = non_empty("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| non_empty("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .map(|p| OtlpProtocol::parse(&p))
            .transpose()?
            .unwrap_or(OtlpProtocol::HttpProtobuf);
        let service_name =
            non_empty("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service_name.to_owned());
        let mut attributes = vec![("service.version", env!("CARGO_PKG_VERSION").to_owned())];
        for (variable, attribute) in [
            ("POD_NAME", "k8s.pod.name"),
            ("POD_NAMESPACE", "k8s.namespace.name"),
            ("NODE_NAME", "k8s.node.name"),
        ] {
            if let Some(value) = non_empty(variable) {
                attributes.push((attribute, value));
            }
        }
        if let Some(pod) = non_empty("POD_NAME") {
            attributes.push(("service.instance.id", pod));
        }
        Ok(Self {
            enabled,
            protocol,
            service_name,
            attributes,
        })
    }
}

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes the spans still queued.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Export outcome counters, to be registered in the service's metrics.
    pub span_metrics: SpanExportMetrics,
}

impl Telemetry {
    /// Flushes queued spans and stops the exporter. Call after the server has drained.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "flushing spans at shutdown failed");
        }
    }
}

/// Installs the global log subscriber, the W3C trace-context + baggage propagator and, unless
/// disabled, the OTLP span pipeline. Must run inside a Tokio runtime (the gRPC client needs it).
pub fn init(default_service_name: &str, log: &LogArgs) -> Result<Telemetry, TelemetryError> {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    let settings =
        TraceSettings::from_lookup(default_service_name, |name| std::env::var(name).ok())?;
    let span_metrics = SpanExportMetrics::default();

    let filter_text = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| log.log_level.clone());
    let env_filter =
        EnvFilter::try_new(&filter_text).map_err(|source| TelemetryError::LogFilter {
            filter: filter_text.clone(),
            source,
        })?;
    // The log filter applies to log output only: spans are exported whatever the log level.
    let fmt_layer = match log.log_format {
        LogFormat::Plain => tracing_subscriber::fmt::layer().compact().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
    }
    .with_filter(env_filter)
    // The SDK logs every failed export; our exporter wrapper already reports them, rate-limited.
    .with_filter(filter::filter_fn(|meta| {
        meta.name() != SDK_EXPORT_ERROR_EVENT
    }));

    let provider = if settings.enabled {
        Some(tracer_provider(&settings, span_metrics.clone())?)
    } else {
        None
    };
    // The SDK's own diagnostics must not become spans (they would feed the exporter they describe).
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tracedpipeline"))
            .with_filter(filter::filter_fn(|meta| {
                *meta.level() <= tracing::Level::INFO && !meta.target().starts_with("opentelemetry")
            }))
    });
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()?;
    tracing::info!(
        service.name = %settings.service_name,
        tracing = settings.enabled,
        protocol = ?settings.protocol,
        "telemetry initialised"
    );
    Ok(Telemetry {
        provider,
        span_metrics,
    })
}

fn tracer_provider(
    settings: &TraceSettings,
    span_metrics: SpanExportMetrics,
) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes(
            settings
                .attributes
                .iter()
                .map(|(key, value)| KeyValue::new(*key, value.clone())),
        )
        .build();
    let exporter = match settings.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_timeout(Duration::from_secs(10))
            .build()?,
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_timeout(Duration::from_secs(10))
            .build()?,
    };
    let exporter = CountingExporter {
        inner: exporter,
        metrics: span_metrics,
        last_warning: Mutex::new(None),
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_resource(resource)
        .build();
    global::set_tracer_provider(provider.clone());
    Ok(provider)
}

/// Name of the event the batch processor emits on each failed export.
const SDK_EXPORT_ERROR_EVENT: &str = "BatchSpanProcessor.ExportError";

const EXPORT_WARNING_INTERVAL: Duration = Duration::from_secs(30);

/// Counts exported and dropped spans and logs export failures at a bounded rate.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    metrics: SpanExportMetrics,
    last_warning: Mutex<Option<Instant>>,
}

impl<E: SpanExporter> CountingExporter<E> {
    fn should_warn(&self) -> bool {
        let Ok(mut last) = self.last_warning.lock() else {
            return true;
        };
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < EXPORT_WARNING_INTERVAL => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                self.metrics.exported.inc_by(spans);
            }
            Err(error) => {
                self.metrics.dropped.inc_by(spans);
                if self.should_warn() {
                    tracing::warn!(
                        %error,
                        dropped_total = self.metrics.dropped.get(),
                        "span export failed; spans dropped (next warning in 30s at the earliest)"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<TraceSettings, TelemetryError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TraceSettings::from_lookup("preprocessing", |name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_specification() {
        let s = settings(&[]).expect("valid");
        assert!(s.enabled);
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.service_name, "preprocessing");
    }

    #[test]
    fn standard_variables_are_honoured() {
        let s = settings(&[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "edge-preprocessing"),
        ])
        .expect("valid");
        assert!(!s.enabled);
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
        assert_eq!(s.service_name, "edge-preprocessing");
        // The signal-specific variable wins over the generic one.
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_SDK_DISABLED", "false"),
        ])
        .expect("valid");
        assert!(s.enabled);
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
    }

    #[test]
    fn downward_api_becomes_resource_attributes() {
        let s = settings(&[
            ("POD_NAME", "preprocessing-7d9f-abcde"),
            ("POD_NAMESPACE", "demo"),
            ("NODE_NAME", "edge-1"),
        ])
        .expect("valid");
        let get = |key: &str| {
            s.attributes
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("k8s.pod.name"), Some("preprocessing-7d9f-abcde"));
        assert_eq!(get("k8s.namespace.name"), Some("demo"));
        assert_eq!(get("k8s.node.name"), Some("edge-1"));
        assert_eq!(get("service.instance.id"), Some("preprocessing-7d9f-abcde"));
    }

    #[test]
    fn bad_values_are_errors_not_guesses() {
        assert!(matches!(
            settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
            Err(TelemetryError::Protocol(_))
        ));
        assert!(matches!(
            settings(&[("OTEL_SDK_DISABLED", "perhaps")]),
            Err(TelemetryError::Flag { .. })
        ));
    }
}
