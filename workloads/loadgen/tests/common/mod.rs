//! A stand-in for the preprocessing service that checks the upload contract and answers by file
//! name, so tests know exactly what each request should have produced.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use loadgen::config::{LoadMode, RunConfig};
use loadgen::dataset::{Dataset, Image};
use loadgen::progress::Progress;
use loadgen::runner::{RunOutcome, Runner, http_client};
use pipeline_common::api::{
    AcceptedResponse, AggregationStrategy, ClassScore, ClassifyResponse, StageTimings,
};
use pipeline_common::client::TracedClient;

/// What the server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// File name of every well-formed upload, in arrival order.
    pub files: Vec<String>,
    /// Uploads that broke the contract, and why.
    pub violations: Vec<String>,
    /// The `traceparent` header of every upload.
    pub traceparents: Vec<Option<String>>,
}

impl Seen {
    pub fn count(&self, prefix: &str) -> u64 {
        self.files.iter().filter(|f| f.starts_with(prefix)).count() as u64
    }
}

pub type Shared = Arc<Mutex<Seen>>;

pub struct Server {
    pub url: reqwest::Url,
    pub seen: Shared,
}

impl Server {
    pub fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().expect("not poisoned")
    }
}

pub async fn start() -> Server {
    let seen = Shared::default();
    let app = Router::new()
        .route("/preprocessing", post(upload))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    Server {
        url: format!("http://{addr}/preprocessing").parse().expect("url"),
        seen,
    }
}

fn classify(class_id: &str, degraded: bool) -> ClassifyResponse {
    let top1 = ClassScore {
        class_index: 1,
        class_id: class_id.to_owned(),
        label: "some label".to_owned(),
        probability: 0.8,
    };
    ClassifyResponse {
        request_id: "req".to_owned(),
        top1: top1.clone(),
        strategy: AggregationStrategy::AverageProbability,
        prediction: vec![top1],
        models: Vec::new(),
        failed_models: Vec::new(),
        degraded,
        timestamp: None,
        timings_ms: StageTimings {
            decode: 1.0,
            resize: 1.0,
            ensemble: 2.0,
            total: 4.0,
        },
    }
}

/// Checks the upload, then answers according to the file name's prefix:
/// `good_<wnid>` → correct class, `wrong_` → wrong class and degraded, `fail` → 503,
/// `big` → 413, `junk_` → 200 that is not JSON, `accepted` → fire-and-forget answer,
/// `slow<ms>_` → waits that long, then answers correctly.
async fn upload(
    State(seen): State<Shared>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let mut problems = Vec::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    match headers
        .get("Timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
    {
        Some(sent) if (now - sent).abs() < 60.0 => {}
        other => problems.push(format!("bad Timestamp header: {other:?}")),
    }
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    let mut parts = Vec::new();
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().map(str::to_owned);
                let file_name = field.file_name().map(str::to_owned);
                let content_type = field.content_type().map(str::to_owned);
                let bytes = field.bytes().await.unwrap_or_default();
                parts.push((name, file_name, content_type, bytes));
            }
            Ok(None) => break,
            Err(error) => {
                problems.push(format!("bad multipart body: {error}"));
                break;
            }
        }
    }
    let mut file = String::new();
    match parts.as_slice() {
        [(Some(name), Some(file_name), Some(content_type), bytes)] => {
            if name != "file" {
                problems.push(format!("part named {name:?}"));
            }
            let lower = file_name.to_ascii_lowercase();
            let expected = if lower.ends_with(".png") {
                "image/png"
            } else {
                "image/jpeg"
            };
            if content_type != expected {
                problems.push(format!("{file_name} sent as {content_type}"));
            }
            // Test images contain their own file name.
            if bytes.as_ref() != file_name.as_bytes() {
                problems.push(format!("{file_name}: wrong contents"));
            }
            file = file_name.clone();
        }
        other => problems.push(format!("expected one named file part, got {other:?}")),
    }

    {
        let mut seen = seen.lock().expect("not poisoned");
        seen.traceparents.push(traceparent);
        if problems.is_empty() {
            seen.files.push(file.clone());
        } else {
            seen.violations.extend(problems);
            return (StatusCode::BAD_REQUEST, "contract violated").into_response();
        }
    }

    let truth = loadgen::dataset::ground_truth(&file)
        .unwrap_or("n00000000")
        .to_owned();
    if let Some(rest) = file.strip_prefix("slow")
        && let Some((ms, _)) = rest.split_once('_')
    {
        let ms: u64 = ms.parse().expect("slow<ms>_ prefix");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if file.starts_with("wrong_") {
        axum::Json(classify("n09999999", true)).into_response()
    } else if file.starts_with("fail") {
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response()
    } else if file.starts_with("big") {
        (StatusCode::PAYLOAD_TOO_LARGE, "too large").into_response()
    } else if file.starts_with("junk_") {
        (StatusCode::OK, "this is not JSON").into_response()
    } else if file.starts_with("accepted") {
        axum::Json(AcceptedResponse {
            request_id: "req".to_owned(),
            response: "File accepted".to_owned(),
        })
        .into_response()
    } else {
        axum::Json(classify(&truth, false)).into_response()
    }
}

/// A dataset whose images contain their own file names.
pub fn dataset(names: &[&str]) -> Arc<Dataset> {
    let images = names
        .iter()
        .map(|name| Image::new(*name, Bytes::from(name.to_string())).expect("image name"))
        .collect();
    Arc::new(Dataset::from_images(images).expect("non-empty"))
}

pub fn config(url: &reqwest::Url, mode: LoadMode, requests: Option<u64>) -> RunConfig {
    RunConfig {
        url: url.clone(),
        mode,
        max_requests: requests,
        duration: None,
        timeout: Duration::from_secs(10),
        seed: 7,
    }
}

pub async fn run(config: RunConfig, dataset: Arc<Dataset>) -> RunOutcome {
    run_until(config, dataset, std::future::pending()).await
}

pub async fn run_until(
    config: RunConfig,
    dataset: Arc<Dataset>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> RunOutcome {
    let client = TracedClient::new(http_client(config.timeout).expect("client"));
    Runner::new(config, dataset, client)
        .run(Progress::hidden(), stop)
        .await
        .expect("histogram")
}

pub fn errors(outcome: &RunOutcome) -> BTreeMap<&'static str, u64> {
    outcome
        .stats
        .errors
        .iter()
        .map(|(kind, count)| (kind.as_str(), *count))
        .collect()
}
