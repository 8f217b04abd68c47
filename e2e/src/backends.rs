//! The real tracing backends, Jaeger v2 and the OpenTelemetry Collector, as processes on loopback,
//! configured with exactly what the operator renders; the services' `OTEL_*` wiring taken from
//! the operator's Deployments; and a small client of Jaeger's HTTP api_v3.
//!
//! Only listen addresses are rewritten (`0.0.0.0:<port>` → `127.0.0.1:<free port>`, plus the
//! upstream host of the collector's exporter), so the tests prove the rendered configuration
//! works with the real binaries.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tracedpipeline_operator::api::TracedPipeline;
use tracedpipeline_operator::build::{self, DesiredObjects, Workload};
use tracedpipeline_operator::{render, switch::Step};

use crate::process::{Pipeline, ServiceEnv, Tracing, free_port};
use crate::required_env;

/// The TracedPipeline the operator would be given: `mode` is `direct` or `collector`,
/// `protocol` `grpc` or `http`; everything else takes the CRD's defaults.
pub fn render(mode: &str, protocol: &str) -> (TracedPipeline, DesiredObjects) {
    let manifest = format!(
        "apiVersion: tracing.tracedpipeline.dev/v1alpha1\n\
         kind: TracedPipeline\n\
         metadata: {{name: e2e, namespace: e2e, uid: 00000000-0000-0000-0000-0000000000e2}}\n\
         spec: {{tracing: {{mode: {mode}, protocol: {protocol}, samplingRatio: 1.0}}}}\n"
    );
    let tp = render::parse(&manifest).unwrap_or_else(|e| panic!("test manifest: {e:#}"));
    let objects = build::desired(&tp, &Step::settled(tp.spec.tracing.mode))
        .unwrap_or_else(|e| panic!("the operator cannot build the desired objects: {e:#}"));
    (tp, objects)
}

/// The real backends of a rendered pipeline and the services exporting to them.
pub struct TracedPipelineRun {
    pub jaeger: Backend,
    /// Only in collector mode.
    pub collector: Option<Backend>,
    pub pipeline: Pipeline,
}

/// Starts Jaeger (and, when `objects` has one, the collector in front of it) as the operator
/// renders them, then the four services wired to them as the operator wires its pods.
pub async fn start_traced_pipeline(objects: &DesiredObjects) -> TracedPipelineRun {
    let jaeger = Backend::jaeger(objects).await;
    let collector = match &objects.collector {
        Some(_) => Some(Backend::collector(objects, &jaeger).await),
        None => None,
    };
    let (tracing, env) = service_wiring(objects, collector.as_ref().unwrap_or(&jaeger));
    let pipeline = Pipeline::start_with_env(&tracing, &[], &env).await;
    TracedPipelineRun {
        jaeger,
        collector,
        pipeline,
    }
}

/// A backend process (Jaeger or the collector) started from its rendered Workload; killed on
/// drop. Stopping and starting again reuses the same ports and configuration.
#[derive(Debug)]
pub struct Backend {
    /// The Workload's name, which is also the host the services and the collector use for it.
    pub name: String,
    binary: PathBuf,
    dir: tempfile::TempDir,
    /// Container port name (`otlp-grpc`, `ui`, ...) → loopback port.
    ports: BTreeMap<String, u16>,
    /// Rendered container port → its name.
    container_ports: BTreeMap<i32, String>,
    /// Readiness probe of the rendered container: path and port name.
    probe: (String, String),
    child: Option<Child>,
}

impl Backend {
    /// Jaeger v2 (`JAEGER_BIN`) with the operator's configuration.
    pub async fn jaeger(objects: &DesiredObjects) -> Self {
        let binary = required_env(
            "JAEGER_BIN",
            "path of the Jaeger v2 binary (hack/tools.sh jaeger)",
        );
        Self::start_new(&objects.jaeger, binary.into(), &[]).await
    }

    /// The collector (`OTELCOL_BIN`) with the operator's configuration, exporting to `jaeger`.
    pub async fn collector(objects: &DesiredObjects, jaeger: &Self) -> Self {
        let binary = required_env(
            "OTELCOL_BIN",
            "path of the OpenTelemetry Collector binary (hack/tools.sh otelcol)",
        );
        let workload = objects
            .collector
            .as_ref()
            .expect("collector mode renders a collector");
        // The exporter names Jaeger's Service and OTLP/gRPC port; point it at the test's Jaeger.
        let upstream = (
            format!("{}:{}", jaeger.name, jaeger.container_port("otlp-grpc")),
            format!("127.0.0.1:{}", jaeger.port("otlp-grpc")),
        );
        Self::start_new(workload, binary.into(), &[upstream]).await
    }

    async fn start_new(
        workload: &Workload,
        binary: PathBuf,
        upstream: &[(String, String)],
    ) -> Self {
        let name = workload
            .deployment
            .metadata
            .name
            .clone()
            .expect("rendered Deployment has a name");
        let container = workload
            .deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.first())
            .unwrap_or_else(|| panic!("{name}: rendered Deployment has no container"));
        let mut ports = BTreeMap::new();
        let mut container_ports = BTreeMap::new();
        for port in container.ports.iter().flatten() {
            let port_name = port.name.clone().expect("named container port");
            container_ports.insert(port.container_port, port_name.clone());
            ports.insert(port_name, free_port());
        }
        let probe = container
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|get| {
                let port = match &get.port {
                    IntOrString::String(s) => s.clone(),
                    other => panic!("{name}: readiness probe on an unnamed port {other:?}"),
                };
                (get.path.clone().unwrap_or_default(), port)
            })
            .unwrap_or_else(|| panic!("{name}: rendered container has no HTTP readiness probe"));
        let data = workload
            .config_map
            .as_ref()
            .and_then(|cm| cm.data.as_ref())
            .unwrap_or_else(|| panic!("{name}: rendered without a ConfigMap"));
        let [(_, rendered)] = data.iter().collect::<Vec<_>>()[..] else {
            panic!(
                "{name}: expected one configuration file, got {:?}",
                data.keys()
            );
        };
        let config = loopback_config(&name, rendered, &container_ports, &ports, upstream);
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("config.yaml"), config).expect("write configuration");
        let mut backend = Self {
            name,
            binary,
            dir,
            ports,
            container_ports,
            probe,
            child: None,
        };
        backend.start().await;
        backend
    }

    /// The loopback port standing in for the rendered container port `name`.
    pub fn port(&self, name: &str) -> u16 {
        *self
            .ports
            .get(name)
            .unwrap_or_else(|| panic!("{} renders no port {name:?}", self.name))
    }

    /// The rendered container port named `name`.
    fn container_port(&self, name: &str) -> i32 {
        self.container_ports
            .iter()
            .find_map(|(port, n)| (n == name).then_some(*port))
            .unwrap_or_else(|| panic!("{} renders no port {name:?}", self.name))
    }

    /// Starts the process (again) and waits until its readiness probe passes.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("backend log file");
        let child = Command::new(&self.binary)
            .arg(format!(
                "--config={}",
                self.dir.path().join("config.yaml").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({}): {e}",
                    self.name,
                    self.binary.display()
                )
            });
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Kills the process (an abrupt crash, as when a pod is evicted) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("output.log")
    }

    /// The end of the process's output, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn wait_ready(&mut self) {
        let (path, port_name) = self.probe.clone();
        let url = format!("http://127.0.0.1:{}{path}", self.port(&port_name));
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited during start-up ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never passed its readiness probe {url}:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Base URL of Jaeger's query API (the `ui` port).
    pub fn query_base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port("ui"))
    }

    /// Jaeger's query API.
    pub fn query(&self) -> JaegerQuery {
        JaegerQuery {
            base: self.query_base_url(),
            client: reqwest::Client::new(),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The rendered configuration with every `0.0.0.0:<port>` listener moved to its loopback port,
/// each `upstream` address replaced, and the binaries' own metrics listener (implicitly
/// `localhost:8888`, which parallel tests would fight over) given a free port.
fn loopback_config(
    name: &str,
    rendered: &str,
    container_ports: &BTreeMap<i32, String>,
    ports: &BTreeMap<String, u16>,
    upstream: &[(String, String)],
) -> String {
    fn rewrite(
        value: &mut Value,
        map: &dyn Fn(&str) -> Option<String>,
        unmapped: &mut Vec<String>,
    ) {
        match value {
            Value::String(s) => {
                if let Some(new) = map(s) {
                    *s = new;
                } else if s.starts_with("0.0.0.0:") {
                    unmapped.push(s.clone());
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, map, unmapped)),
            Value::Object(fields) => fields.values_mut().for_each(|v| rewrite(v, map, unmapped)),
            _ => {}
        }
    }
    let mut config: Value = serde_saphyr::from_str(rendered)
        .unwrap_or_else(|e| panic!("{name}: rendered configuration is not YAML: {e}"));
    let map = |s: &str| -> Option<String> {
        if let Some((_, to)) = upstream.iter().find(|(from, _)| from == s) {
            return Some(to.clone());
        }
        let port: i32 = s.strip_prefix("0.0.0.0:")?.parse().ok()?;
        let local = ports.get(container_ports.get(&port)?)?;
        Some(format!("127.0.0.1:{local}"))
    };
    let mut unmapped = Vec::new();
    rewrite(&mut config, &map, &mut unmapped);
    // A listener the Deployment does not declare would be unreachable in the cluster.
    assert!(
        unmapped.is_empty(),
        "{name}: the configuration listens on {unmapped:?}, which the rendered container does not expose"
    );
    let mut missing: Vec<&String> = upstream
        .iter()
        .map(|(from, _)| from)
        .filter(|from| !rendered.contains(from.as_str()))
        .collect();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "{name}: the configuration never names {missing:?}"
    );
    config["service"]["telemetry"]["metrics"] = serde_json::json!({
        "readers": [{"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": free_port()}}}}],
    });
    serde_saphyr::to_string(&config).expect("configuration back to YAML")
}

/// The services' `OTEL_*` variables exactly as the operator renders them on each pipeline
/// Deployment, with the OTLP endpoint's Service host replaced by `backend`'s loopback port; and
/// the matching [`Tracing`]. Keys are the names `Pipeline` gives its processes.
pub fn service_wiring(objects: &DesiredObjects, backend: &Backend) -> (Tracing, ServiceEnv) {
    let mut env = ServiceEnv::new();
    let mut endpoints = Vec::new();
    let mut protocols = Vec::new();
    for workload in &objects.pipeline {
        let deployment = workload
            .deployment
            .metadata
            .name
            .clone()
            .expect("rendered Deployment has a name");
        let container = workload
            .deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.first())
            .unwrap_or_else(|| panic!("{deployment}: rendered Deployment has no container"));
        let mut vars = Vec::new();
        for var in container.env.iter().flatten() {
            let Some(value) = var.value.clone() else {
                continue; // downward API: `process::start` sets POD_NAME and friends itself
            };
            if !var.name.starts_with("OTEL_") {
                continue;
            }
            let value = match var.name.as_str() {
                "OTEL_EXPORTER_OTLP_ENDPOINT" => {
                    let local = loopback_endpoint(&value, backend)
                        .unwrap_or_else(|e| panic!("{deployment}: {e:#}"));
                    endpoints.push(local.clone());
                    local
                }
                "OTEL_EXPORTER_OTLP_PROTOCOL" => {
                    protocols.push(value.clone());
                    value
                }
                _ => value,
            };
            vars.push((var.name.clone(), value));
        }
        let process = deployment
            .strip_prefix("inference-")
            .unwrap_or(&deployment)
            .to_owned();
        env.insert(process, vars);
    }
    endpoints.dedup();
    protocols.dedup();
    let ([endpoint], [protocol]) = (&endpoints[..], &protocols[..]) else {
        panic!(
            "every service must export to one endpoint with one protocol: {endpoints:?} {protocols:?}"
        );
    };
    let protocol = match protocol.as_str() {
        "grpc" => "grpc",
        "http/protobuf" => "http/protobuf",
        other => panic!("the operator renders an OTLP protocol the SDK does not know: {other}"),
    };
    let tracing = Tracing {
        endpoint: Some(endpoint.clone()),
        protocol,
    };
    (tracing, env)
}

/// `http://<backend>:<port>` → `http://127.0.0.1:<loopback port>`, checking the host is the
/// backend's Service and the port one it exposes.
fn loopback_endpoint(rendered: &str, backend: &Backend) -> anyhow::Result<String> {
    let authority = rendered
        .strip_prefix("http://")
        .with_context(|| format!("OTLP endpoint {rendered} is not http://host:port"))?;
    let (host, port) = authority
        .split_once(':')
        .with_context(|| format!("OTLP endpoint {rendered} has no port"))?;
    if host != backend.name {
        bail!(
            "OTLP endpoint {rendered} does not name the {} Service",
            backend.name
        );
    }
    let port: i32 = port
        .parse()
        .with_context(|| format!("port of {rendered}"))?;
    let name = backend.container_ports.get(&port).with_context(|| {
        format!(
            "OTLP endpoint {rendered} is on a port {} does not expose",
            backend.name
        )
    })?;
    Ok(format!("http://127.0.0.1:{}", backend.port(name)))
}

/// One span as Jaeger's api_v3 returns it (OTLP JSON), flattened for assertions.
#[derive(Debug, Clone)]
pub struct JaegerSpan {
    /// The resource's `service.name`.
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP span kind: 1 internal, 2 server, 3 client.
    pub kind: i64,
    /// String-valued resource attributes.
    pub resource: BTreeMap<String, String>,
}

/// Client of Jaeger's HTTP api_v3 on the query port.
#[derive(Debug, Clone)]
pub struct JaegerQuery {
    base: String,
    client: reqwest::Client,
}

impl JaegerQuery {
    async fn get(&self, path_and_query: &str) -> anyhow::Result<Option<Value>> {
        let url = format!("{}{path_and_query}", self.base);
        let response = self
            .client
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        // api_v3 answers 404 when no trace matches.
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("GET {url}"))?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {body}");
        }
        serde_json::from_str(&body)
            .map(Some)
            .with_context(|| format!("GET {url}: not JSON: {body}"))
    }

    /// `GET /api/v3/services`.
    pub async fn services(&self) -> anyhow::Result<Vec<String>> {
        let body = self.get("/api/v3/services").await?.unwrap_or_default();
        Ok(body["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect())
    }

    /// `GET /api/v3/traces/{trace_id}`: every span of the trace (empty when Jaeger has none).
    pub async fn trace(&self, trace_id: &str) -> anyhow::Result<Vec<JaegerSpan>> {
        let body = self.get(&format!("/api/v3/traces/{trace_id}")).await?;
        body.map_or_else(|| Ok(Vec::new()), |b| parse_spans(&b))
    }

    /// `GET /api/v3/traces?query.service_name=...`: spans of up to `limit` traces with spans of
    /// `service` that started in `[from, to]`.
    pub async fn find_traces(
        &self,
        service: &str,
        from: Timestamp,
        to: Timestamp,
        limit: u32,
    ) -> anyhow::Result<Vec<JaegerSpan>> {
        // Service names are plain words and jiff prints UTC as `...Z`: nothing needs escaping.
        let path = format!(
            "/api/v3/traces?query.service_name={service}&query.start_time_min={from}\
             &query.start_time_max={to}&query.num_traces={limit}"
        );
        let body = self.get(&path).await?;
        body.map_or_else(|| Ok(Vec::new()), |b| parse_spans(&b))
    }
}

/// `{"result": {"resourceSpans": [...]}}` (OTLP JSON: hex ids, integer kinds) → flat spans.
fn parse_spans(body: &Value) -> anyhow::Result<Vec<JaegerSpan>> {
    let resource_spans = body["result"]["resourceSpans"]
        .as_array()
        .with_context(|| format!("no result.resourceSpans in {body}"))?;
    let mut spans = Vec::new();
    for rs in resource_spans {
        let resource: BTreeMap<String, String> = rs["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| {
                Some((
                    kv["key"].as_str()?.to_owned(),
                    kv["value"]["stringValue"].as_str()?.to_owned(),
                ))
            })
            .collect();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in rs["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
                spans.push(JaegerSpan {
                    service: service.clone(),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                    name: text("name"),
                    kind: span["kind"]
                        .as_i64()
                        .with_context(|| format!("span kind is not an integer: {span}"))?,
                    resource: resource.clone(),
                });
            }
        }
    }
    Ok(spans)
}
