//! Test support (controller-rs `fixtures.rs` style): TracedPipeline constructors, a `Context`
//! around a mocked API server (tower-test), and an `ApiServerVerifier` that asserts each call.

use std::{sync::Arc, time::Duration};

use http::{Request, Response, StatusCode};
use kube::{
    Client, api::ObjectMeta, client::Body, core::DeserializeGuard,
    runtime::reflector::store::Writer,
};
use serde_json::{Value, json};

use crate::{
    api::{TracedPipeline, TracedPipelineSpec, TracingMode},
    controller::{Context, reporter},
    metrics::ReconcileMetrics,
    traces::{TraceChecker, TracesVerdict},
};

pub const NS: &str = "demo";
pub const NAME: &str = "pipeline";

pub fn test_tp(mode: TracingMode) -> TracedPipeline {
    let mut spec = TracedPipelineSpec::default();
    spec.tracing.mode = mode;
    let mut tp = TracedPipeline::new(NAME, spec);
    tp.metadata = ObjectMeta {
        name: Some(NAME.to_owned()),
        namespace: Some(NS.to_owned()),
        uid: Some("0a1b2c3d-0000-4000-8000-000000000001".to_owned()),
        generation: Some(1),
        resource_version: Some("100".to_owned()),
        ..ObjectMeta::default()
    };
    tp
}

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

pub struct ApiServerVerifier(Handle);

/// A recorded request.
#[derive(Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

impl Context {
    /// A context whose client talks to a mock; traces report `verdict`.
    pub fn test(verdict: TracesVerdict) -> (Arc<Self>, ApiServerVerifier) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, NS);
        let store = Writer::<DeserializeGuard<TracedPipeline>>::default().as_reader();
        let ctx = Self::new(
            client,
            reporter(Some("test-pod".to_owned())),
            ReconcileMetrics::default(),
            TraceChecker::Fixed(verdict),
            store,
        );
        (Arc::new(ctx), ApiServerVerifier(handle))
    }
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": "NotFound", "code": 404, "message": "not found"})
}

fn empty_list(kind: &str) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": []})
}

impl ApiServerVerifier {
    /// Takes the next request, checks method and path, answers `status` with `reply` (or, when
    /// `reply` is null, echoes the request body back as the apiserver does for SSA).
    pub async fn expect(
        &mut self,
        method: &str,
        path: &str,
        status: StatusCode,
        reply: Value,
    ) -> Call {
        let (request, send) = tokio::time::timeout(Duration::from_secs(1), self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {method} {path}"))
            .unwrap_or_else(|| panic!("client gone while waiting for {method} {path}"));
        let call_method = request.method().to_string();
        let call_path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        assert_eq!(
            (call_method.as_str(), call_path.as_str()),
            (method, path),
            "unexpected call (query {query})"
        );
        let reply = if reply.is_null() { body.clone() } else { reply };
        let response = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&reply).expect("serialize")))
            .expect("response");
        send.send_response(response);
        Call {
            method: call_method,
            path: call_path,
            query,
            body,
        }
    }

    /// An SSA PATCH of `path`: asserts the field manager and force, echoes the body.
    pub async fn expect_apply(&mut self, path: &str) -> Call {
        let call = self
            .expect("PATCH", path, StatusCode::OK, Value::Null)
            .await;
        assert!(
            call.query.contains("fieldManager=tracedpipeline-operator")
                && call.query.contains("force=true"),
            "{path}: query {}",
            call.query
        );
        call
    }

    /// The observe step with nothing in the cluster.
    pub async fn expect_observe_empty(&mut self) {
        self.expect(
            "GET",
            &format!("/apis/apps/v1/namespaces/{NS}/deployments/otel-collector"),
            StatusCode::NOT_FOUND,
            not_found(),
        )
        .await;
        let call = self
            .expect(
                "GET",
                &format!("/apis/apps/v1/namespaces/{NS}/deployments"),
                StatusCode::OK,
                empty_list("DeploymentList"),
            )
            .await;
        assert!(call.query.contains("labelSelector="), "{}", call.query);
        self.expect(
            "GET",
            &format!("/api/v1/namespaces/{NS}/pods"),
            StatusCode::OK,
            empty_list("PodList"),
        )
        .await;
    }

    /// Applies of one workload: `[ConfigMap,] Deployment, Service`; returns the Deployment call.
    pub async fn expect_workload(
        &mut self,
        config_map: Option<&str>,
        deployment: &str,
        service: &str,
    ) -> Call {
        if let Some(cm) = config_map {
            self.expect_apply(&format!("/api/v1/namespaces/{NS}/configmaps/{cm}"))
                .await;
        }
        let d = self
            .expect_apply(&format!(
                "/apis/apps/v1/namespaces/{NS}/deployments/{deployment}"
            ))
            .await;
        self.expect_apply(&format!("/api/v1/namespaces/{NS}/services/{service}"))
            .await;
        d
    }

    /// The pipeline services of the default spec; returns their Deployment calls.
    pub async fn expect_pipeline(&mut self) -> Vec<Call> {
        let mut out = Vec::new();
        for (d, s) in [
            ("preprocessing", "preprocessing-service"),
            ("ensemble", "ensemble-service"),
            ("inference-mobilenetv2", "mobilenetv2-service"),
            ("inference-efficientnetb0", "efficientnetb0-service"),
        ] {
            out.push(self.expect_workload(None, d, s).await);
        }
        out
    }

    pub async fn expect_status_patch(&mut self) -> Call {
        self.expect_apply(&format!(
            "/apis/tracing.tracedpipeline.dev/v1alpha1/namespaces/{NS}/tracedpipelines/{NAME}/status"
        ))
        .await
    }

    pub async fn expect_event(&mut self) -> Call {
        self.expect(
            "POST",
            &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
            StatusCode::CREATED,
            Value::Null,
        )
        .await
    }

    /// No further call arrives.
    pub async fn expect_silence(mut self) {
        let next = tokio::time::timeout(Duration::from_millis(200), self.0.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("unexpected call {} {}", request.method(), request.uri());
        }
    }
}

/// Value of `env` var `name` of the first container of an applied Deployment body.
pub fn env_of(deployment: &Value, name: &str) -> Option<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned)
}
