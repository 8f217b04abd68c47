//! A minimal OTLP trace receiver (HTTP/protobuf and gRPC) that keeps every span it gets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message as _;

/// One received span, flattened for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// OTLP span kind: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub attributes: Vec<(String, String)>,
    pub resource: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

pub const KIND_INTERNAL: i32 = 1;
pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;

#[derive(Debug, Clone, Default)]
pub struct SpanStore(Arc<Mutex<Vec<ReceivedSpan>>>);

impl SpanStore {
    fn ingest(&self, request: ExportTraceServiceRequest) {
        let mut spans = Vec::new();
        for resource_spans in request.resource_spans {
            let resource: Vec<(String, String)> = resource_spans
                .resource
                .map(|r| r.attributes.iter().map(flatten).collect())
                .unwrap_or_default();
            let service = resource
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name,
                        kind: span.kind,
                        attributes: span.attributes.iter().map(flatten).collect(),
                        resource: resource.clone(),
                    });
                }
            }
        }
        if let Ok(mut store) = self.0.lock() {
            store.extend(spans);
        }
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Spans of `trace_id`, waiting until `done` holds for them or `timeout` passes.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans: Vec<ReceivedSpan> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if done(&spans) || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn flatten(kv: &KeyValue) -> (String, String) {
    (
        kv.key.clone(),
        kv.value.as_ref().map(any_to_string).unwrap_or_default(),
    )
}

fn any_to_string(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running receiver; spans arrive in [`OtlpReceiver::store`].
#[derive(Debug)]
pub struct OtlpReceiver {
    pub store: SpanStore,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// OTLP/HTTP on `/v1/traces` (protobuf).
    pub async fn http() -> std::io::Result<Self> {
        let store = SpanStore::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/v1/traces", post(receive_http))
            .with_state(store.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { store, addr, task })
    }

    /// OTLP/gRPC (`TraceService/Export`).
    pub async fn grpc() -> std::io::Result<Self> {
        let store = SpanStore::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let service = TraceServiceServer::new(GrpcReceiver(store.clone()));
        let incoming = tokio_stream_listener(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Ok(Self { store, addr, task })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive_http(State(store): State<SpanStore>, body: Bytes) -> (http::StatusCode, Vec<u8>) {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            store.ingest(request);
            (
                http::StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(_) => (http::StatusCode::BAD_REQUEST, Vec::new()),
    }
}

struct GrpcReceiver(SpanStore);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.ingest(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}
