//! `TracesFlowing`: ask Jaeger's HTTP API v3 whether spans of every pipeline service arrived
//! recently, and in collector mode whether they came through the collector.
//!
//! Jaeger v2 (2.9) serves api_v3 on the query port (16686):
//! * `GET /api/v3/services` → `{"services": ["preprocessing", ...]}`;
//! * `GET /api/v3/traces?query.service_name=S&query.start_time_min=T&query.start_time_max=T&query.num_traces=N`
//!   (times RFC 3339) → `{"result": {"resourceSpans": [...]}}` (OTLP JSON), or 404 when no
//!   trace matches.
//!
//! The HTTP calls are thin; parsing and evaluation are pure functions tested on recorded JSON.
//! A failing or slow Jaeger yields `Unknown`, never a reconcile error.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use crate::{
    api::{TracedPipeline, TracingMode},
    build::{
        COLLECTOR_NAME, COLLECTOR_PATH_ATTRIBUTE, ENSEMBLE_NAME, PREPROCESSING_NAME, inference_name,
    },
};

/// Where the operator reaches Jaeger's query API; `{namespace}` is replaced.
pub const DEFAULT_JAEGER_URL_TEMPLATE: &str = "http://jaeger.{namespace}.svc:16686";
/// How far back spans count as "recent".
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Bound on the whole check (all requests).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Traces fetched per service (enough to see one span through the collector).
const NUM_TRACES: u32 = 20;

/// The OTEL_SERVICE_NAMEs the builders give the pipeline services, in spec order.
pub fn expected_services(tp: &TracedPipeline) -> Vec<String> {
    let mut names = vec![PREPROCESSING_NAME.to_owned(), ENSEMBLE_NAME.to_owned()];
    names.extend(
        tp.spec
            .services
            .models
            .iter()
            .map(|m| inference_name(&m.name)),
    );
    names
}

/// The outcome of a check, mapped 1:1 onto the `TracesFlowing` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TracesVerdict {
    /// Every service has recent spans (through the collector in collector mode).
    Flowing {
        services: usize,
        via_collector: bool,
    },
    /// Some services have no recent spans, or (collector mode) none that took the collector.
    Missing {
        missing: Vec<String>,
        not_via_collector: Vec<String>,
    },
    /// The check could not be made.
    Unknown(String),
}

impl TracesVerdict {
    /// `(status, reason, message)` of the `TracesFlowing` condition.
    pub fn condition(&self, window: Duration) -> (&'static str, &'static str, String) {
        let minutes = window.as_secs().div_ceil(60);
        match self {
            Self::Flowing {
                services,
                via_collector,
            } => (
                "True",
                "SpansReceived",
                if *via_collector {
                    format!(
                        "spans of all {services} services reached Jaeger through the collector in the last {minutes}m"
                    )
                } else {
                    format!(
                        "spans of all {services} services reached Jaeger in the last {minutes}m"
                    )
                },
            ),
            Self::Missing {
                missing,
                not_via_collector,
            } => {
                let mut parts = Vec::new();
                if !missing.is_empty() {
                    parts.push(format!(
                        "no spans in the last {minutes}m from: {}",
                        missing.join(", ")
                    ));
                }
                if !not_via_collector.is_empty() {
                    parts.push(format!(
                        "no spans through the collector in the last {minutes}m from: {}",
                        not_via_collector.join(", ")
                    ));
                }
                let reason = if missing.is_empty() {
                    "CollectorBypassed"
                } else {
                    "SpansMissing"
                };
                ("False", reason, parts.join("; "))
            }
            Self::Unknown(why) => ("Unknown", "JaegerUnreachable", why.clone()),
        }
    }
}

/// Recent spans of one service as seen in a FindTraces answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanSummary {
    /// Spans whose resource is the service and that started at or after the window start.
    pub spans: usize,
    /// Of those, spans whose resource carries the collector path attribute.
    pub via_collector: usize,
}

#[derive(Deserialize)]
struct ServicesResponse {
    #[serde(default)]
    services: Vec<String>,
}

/// Parses `GET /api/v3/services`.
pub fn parse_services(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    Ok(serde_json::from_slice::<ServicesResponse>(body)?.services)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TracesData {
    #[serde(default)]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Deserialize)]
struct TracesResponse {
    #[serde(default)]
    result: TracesData,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans {
    #[serde(default)]
    resource: Resource,
    #[serde(default)]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Deserialize, Default)]
struct Resource {
    #[serde(default)]
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: AnyValue,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AnyValue {
    string_value: Option<String>,
}

#[derive(Deserialize)]
struct ScopeSpans {
    #[serde(default)]
    spans: Vec<Span>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Span {
    /// OTLP JSON encodes 64-bit integers as strings.
    #[serde(default)]
    start_time_unix_nano: Option<serde_json::Value>,
}

impl Resource {
    fn string(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.string_value.as_deref())
    }
}

fn nanos(value: Option<&serde_json::Value>) -> Option<u128> {
    match value? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64().map(u128::from),
        _ => None,
    }
}

/// Summarises a FindTraces answer for `service`: traces contain the spans of every service they
/// crossed, so only resources named `service` count; spans older than `since_nanos` are ignored.
pub fn summarize_traces(
    body: &[u8],
    service: &str,
    since_nanos: u128,
) -> Result<SpanSummary, serde_json::Error> {
    let data = serde_json::from_slice::<TracesResponse>(body)?.result;
    let mut summary = SpanSummary::default();
    for rs in data
        .resource_spans
        .iter()
        .filter(|rs| rs.resource.string("service.name") == Some(service))
    {
        let via = rs.resource.string(COLLECTOR_PATH_ATTRIBUTE) == Some(COLLECTOR_NAME);
        let recent = rs
            .scope_spans
            .iter()
            .flat_map(|ss| &ss.spans)
            .filter(|s| nanos(s.start_time_unix_nano.as_ref()).is_none_or(|t| t >= since_nanos))
            .count();
        summary.spans += recent;
        if via {
            summary.via_collector += recent;
        }
    }
    Ok(summary)
}

/// Pure verdict: which expected services lack recent spans (or collector-path spans when the
/// pipeline is wired to the collector).
pub fn evaluate(
    expected: &[String],
    wiring: TracingMode,
    found: &BTreeMap<String, SpanSummary>,
) -> TracesVerdict {
    let mut missing = Vec::new();
    let mut not_via_collector = Vec::new();
    for service in expected {
        let summary = found.get(service).copied().unwrap_or_default();
        if summary.spans == 0 {
            missing.push(service.clone());
        } else if wiring == TracingMode::Collector && summary.via_collector == 0 {
            not_via_collector.push(service.clone());
        }
    }
    if missing.is_empty() && not_via_collector.is_empty() {
        TracesVerdict::Flowing {
            services: expected.len(),
            via_collector: wiring == TracingMode::Collector,
        }
    } else {
        TracesVerdict::Missing {
            missing,
            not_via_collector,
        }
    }
}

/// Queries Jaeger over HTTP.
#[derive(Clone, Debug)]
pub struct JaegerChecker {
    http: reqwest::Client,
    url_template: String,
    window: Duration,
    timeout: Duration,
}

impl JaegerChecker {
    pub fn new(
        url_template: Option<String>,
        window: Duration,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            url_template: url_template.unwrap_or_else(|| DEFAULT_JAEGER_URL_TEMPLATE.to_owned()),
            window,
            timeout,
        })
    }

    /// Jaeger's base URL for a namespace.
    pub fn base_url(&self, namespace: &str) -> String {
        self.url_template
            .replace("{namespace}", namespace)
            .trim_end_matches('/')
            .to_owned()
    }

    async fn get(&self, url: reqwest::Url) -> Result<Option<Vec<u8>>, String> {
        let response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        // FindTraces answers 404 when nothing matched.
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(format!("Jaeger answered {}", response.status()));
        }
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        Ok(Some(bytes.to_vec()))
    }

    async fn collect(
        &self,
        base: &str,
        expected: &[String],
    ) -> Result<BTreeMap<String, SpanSummary>, String> {
        let parse_url = |path: &str, params: &[(&str, String)]| {
            reqwest::Url::parse_with_params(&format!("{base}{path}"), params)
                .map_err(|e| format!("invalid Jaeger URL {base}: {e}"))
        };
        let services = match self.get(parse_url("/api/v3/services", &[])?).await? {
            Some(body) => {
                parse_services(&body).map_err(|e| format!("unexpected services answer: {e}"))?
            }
            None => Vec::new(),
        };
        let now = Timestamp::now();
        let window =
            SignedDuration::try_from(self.window).unwrap_or(SignedDuration::from_secs(300));
        let since = now.checked_sub(window).unwrap_or(now);
        let since_nanos = u128::try_from(since.as_nanosecond()).unwrap_or(0);
        let mut found = BTreeMap::new();
        for service in expected.iter().filter(|s| services.contains(s)) {
            let url = parse_url(
                "/api/v3/traces",
                &[
                    ("query.service_name", service.clone()),
                    ("query.start_time_min", since.to_string()),
                    ("query.start_time_max", now.to_string()),
                    ("query.num_traces", NUM_TRACES.to_string()),
                ],
            )?;
            let summary = match self.get(url).await? {
                Some(body) => summarize_traces(&body, service, since_nanos)
                    .map_err(|e| format!("unexpected traces answer: {e}"))?,
                None => SpanSummary::default(),
            };
            found.insert(service.clone(), summary);
        }
        Ok(found)
    }

    pub async fn check(
        &self,
        namespace: &str,
        expected: &[String],
        wiring: TracingMode,
    ) -> TracesVerdict {
        let base = self.base_url(namespace);
        match tokio::time::timeout(self.timeout, self.collect(&base, expected)).await {
            Ok(Ok(found)) => evaluate(expected, wiring, &found),
            Ok(Err(why)) => TracesVerdict::Unknown(format!("cannot query Jaeger at {base}: {why}")),
            Err(_) => TracesVerdict::Unknown(format!(
                "Jaeger at {base} did not answer within {}s",
                self.timeout.as_secs()
            )),
        }
    }
}

/// How the reconciler learns whether traces flow.
#[derive(Clone, Debug)]
pub enum TraceChecker {
    Jaeger(JaegerChecker),
    /// A fixed answer (tests, or checks turned off).
    Fixed(TracesVerdict),
}

impl TraceChecker {
    pub fn window(&self) -> Duration {
        match self {
            Self::Jaeger(j) => j.window,
            Self::Fixed(_) => DEFAULT_WINDOW,
        }
    }

    pub async fn check(
        &self,
        namespace: &str,
        expected: &[String],
        wiring: TracingMode,
    ) -> TracesVerdict {
        match self {
            Self::Jaeger(j) => j.check(namespace, expected, wiring).await,
            Self::Fixed(v) => v.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
