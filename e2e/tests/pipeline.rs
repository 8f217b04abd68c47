//! The four services as real processes with the real ONNX models: classification of the
//! labelled photos, one trace across all services (both OTLP protocols), failure behaviour.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use pipeline_common::api::{ClassifyResponse, ErrorBody};
use tp_e2e::otlp::{KIND_CLIENT, KIND_INTERNAL, KIND_SERVER, OtlpReceiver, ReceivedSpan};
use tp_e2e::process::{Pipeline, Tracing, binary};
use tp_e2e::{images_dir, required_env};

/// Photos and the classes that count as right (../shared/models/README.md). owl.jpg shows a
/// burrowing owl, which has no ImageNet class: a hard negative, not asserted.
const LABELLED: &[(&str, &[&str])] = &[
    ("elephant.jpg", &["n02504013", "n02504458", "n01871265"]),
    ("parrot.jpg", &["n01818515"]),
    ("hot_dog.jpg", &["n07697537"]),
    ("cat_720p.jpg", &["n02123045", "n02123159", "n02124075"]),
    ("pets.jpg", &["n02096585"]),
];

const SERVICES: [&str; 4] = [
    "preprocessing",
    "ensemble",
    "inference-mobilenetv2",
    "inference-efficientnetb0",
];

fn image(name: &str) -> Vec<u8> {
    let path = images_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn multipart(bytes: Vec<u8>, part: &str, mime: &str) -> reqwest::multipart::Form {
    let part_body = reqwest::multipart::Part::bytes(bytes)
        .file_name("upload.jpg")
        .mime_str(mime)
        .expect("mime");
    reqwest::multipart::Form::new().part(part.to_owned(), part_body)
}

/// A W3C traceparent with a fresh random trace id, so the test knows which trace to look for.
fn traceparent() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

async fn classify(pipeline: &Pipeline, name: &str, traceparent: &str) -> ClassifyResponse {
    let response = reqwest::Client::new()
        .post(pipeline.preprocessing.url("/preprocessing"))
        .header("traceparent", traceparent)
        .header("Timestamp", "1700000000.5")
        .multipart(multipart(image(name), "file", "image/jpeg"))
        .send()
        .await
        .expect("preprocessing answers");
    assert_eq!(response.status(), 200, "{name}");
    response.json().await.expect("classification JSON")
}

fn span<'a>(spans: &'a [ReceivedSpan], service: &str, kind: i32, name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.service == service && s.kind == kind && s.name == name)
        .unwrap_or_else(|| {
            let seen: Vec<_> = spans
                .iter()
                .map(|s| (&s.service, s.kind, &s.name))
                .collect();
            panic!("no {kind} span {name:?} from {service}; got {seen:?}")
        })
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .collect()
}

/// Asserts the whole trace shape: client → preprocessing → ensemble → both models.
fn assert_trace_shape(spans: &[ReceivedSpan], root_span_id: &str) {
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    for service in SERVICES {
        assert!(
            services.contains(service),
            "{service} missing from trace: {services:?}"
        );
    }
    let pre_server = span(spans, "preprocessing", KIND_SERVER, "POST /preprocessing");
    assert_eq!(
        pre_server.parent_span_id, root_span_id,
        "joins the client's trace"
    );
    assert_eq!(
        pre_server.attribute("http.response.status_code"),
        Some("200")
    );
    assert_eq!(pre_server.attribute("http.route"), Some("/preprocessing"));
    let decode = span(spans, "preprocessing", KIND_INTERNAL, "decode");
    assert_eq!(decode.parent_span_id, pre_server.span_id);
    assert_eq!(decode.attribute("image.format"), Some("jpeg"));
    let resize = span(spans, "preprocessing", KIND_INTERNAL, "resize");
    assert_eq!(resize.parent_span_id, pre_server.span_id);
    let pre_client = span(spans, "preprocessing", KIND_CLIENT, "POST");
    assert_eq!(pre_client.parent_span_id, pre_server.span_id);
    assert!(
        pre_client
            .attribute("url.full")
            .is_some_and(|u| u.contains("/ensemble_service?request_id=")),
        "{pre_client:?}"
    );

    let ens_server = span(spans, "ensemble", KIND_SERVER, "POST /ensemble_service");
    assert_eq!(ens_server.parent_span_id, pre_client.span_id);
    let model_calls: Vec<_> = children(spans, ens_server)
        .into_iter()
        .chain(spans.iter().filter(|s| {
            s.service == "ensemble"
                && s.kind == KIND_CLIENT
                && s.parent_span_id != ens_server.span_id
        }))
        .filter(|s| s.kind == KIND_CLIENT)
        .collect();
    assert_eq!(model_calls.len(), 2, "one client span per model");
    for model in ["mobilenetv2", "efficientnetb0"] {
        let server = span(
            spans,
            &format!("inference-{model}"),
            KIND_SERVER,
            "POST /inference",
        );
        let caller = spans
            .iter()
            .find(|s| s.span_id == server.parent_span_id)
            .expect("model server span has its caller in the trace");
        assert_eq!(
            (caller.service.as_str(), caller.kind),
            ("ensemble", KIND_CLIENT)
        );
        let run = span(
            spans,
            &format!("inference-{model}"),
            KIND_INTERNAL,
            "onnx.run",
        );
        assert_eq!(run.parent_span_id, server.span_id);
        assert_eq!(run.attribute("model"), Some(model));
        assert!(
            run.attribute("top1.class_id")
                .is_some_and(|c| c.starts_with('n'))
        );
    }
    let aggregate = span(spans, "ensemble", KIND_INTERNAL, "aggregate");
    assert_eq!(trace_root(spans, aggregate), root_span_id);
    for span in spans {
        assert!(
            span.resource
                .iter()
                .any(|(k, v)| k == "k8s.namespace.name" && v == "e2e"),
            "downward-API attributes on every span's resource"
        );
    }
}

/// Walks up the parents inside the trace and returns the id of the missing (remote) root.
fn trace_root(spans: &[ReceivedSpan], from: &ReceivedSpan) -> String {
    let by_id: HashMap<&str, &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut current = from;
    while let Some(parent) = by_id.get(current.parent_span_id.as_str()) {
        current = parent;
    }
    current.parent_span_id.clone()
}

fn complete(spans: &[ReceivedSpan]) -> bool {
    SERVICES.iter().all(|service| {
        spans
            .iter()
            .any(|s| s.service == *service && s.kind == KIND_SERVER)
    }) && spans.iter().filter(|s| s.name == "onnx.run").count() == 2
        && spans.iter().any(|s| s.name == "aggregate")
}

async fn classify_labelled_photos_in_one_trace_each(
    protocol: &'static str,
    receiver: OtlpReceiver,
) {
    let endpoint = receiver.endpoint();
    let pipeline = Pipeline::start(
        &Tracing {
            endpoint: Some(endpoint),
            protocol,
        },
        &[],
    )
    .await;
    for (name, accepted) in LABELLED {
        let (header, trace_id, root_span_id) = traceparent();
        let answer = classify(&pipeline, name, &header).await;
        assert!(
            accepted.contains(&answer.top1.class_id.as_str()),
            "{name}: got {} ({})",
            answer.top1.class_id,
            answer.top1.label
        );
        assert!(!answer.degraded, "{name}: {:?}", answer.failed_models);
        let models: BTreeSet<&str> = answer.models.iter().map(|m| m.model.as_str()).collect();
        assert_eq!(models, BTreeSet::from(["efficientnetb0", "mobilenetv2"]));
        assert_eq!(
            answer.timestamp.as_deref(),
            Some("1700000000.5"),
            "Timestamp echoed"
        );
        assert!(answer.timings_ms.total >= answer.timings_ms.ensemble);

        let spans = receiver
            .store
            .wait_for_trace(&trace_id, Duration::from_secs(15), complete)
            .await;
        assert_trace_shape(&spans, &root_span_id);
    }
    let traces: BTreeSet<String> = receiver
        .store
        .spans()
        .into_iter()
        .map(|s| s.trace_id)
        .collect();
    assert_eq!(
        traces.len(),
        LABELLED.len(),
        "exactly one trace per request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_photos_over_otlp_http() {
    let receiver = OtlpReceiver::http().await.expect("receiver");
    classify_labelled_photos_in_one_trace_each("http/protobuf", receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_photos_over_otlp_grpc() {
    let receiver = OtlpReceiver::grpc().await.expect("receiver");
    classify_labelled_photos_in_one_trace_each("grpc", receiver).await;
}

/// Client mistakes get 4xx with a JSON error, never 5xx, and never take the service down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_client_error() {
    let pipeline = Pipeline::start(
        &Tracing {
            endpoint: None,
            protocol: "grpc",
        },
        &[("MAX_UPLOAD_BYTES", (2 * 1024 * 1024).to_string())],
    )
    .await;
    let url = pipeline.preprocessing.url("/preprocessing");
    // The server answers an oversized upload before reading it and then closes the connection;
    // no connection reuse, so the next case never lands on that closing connection.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let jpeg = image("hot_dog.jpg");
    let mut corrupt_png = b"\x89PNG\r\n\x1a\n".to_vec();
    corrupt_png.extend_from_slice(&[0x55; 300]);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "empty raw body",
            client.post(&url).header("content-type", "image/jpeg"),
            400,
        ),
        ("no content type", client.post(&url).body(jpeg.clone()), 415),
        (
            "text body",
            client
                .post(&url)
                .header("content-type", "text/plain")
                .body("hello"),
            415,
        ),
        (
            "missing file part",
            client
                .post(&url)
                .multipart(reqwest::multipart::Form::new().text("note", "x")),
            400,
        ),
        (
            "wrong part name",
            client
                .post(&url)
                .multipart(multipart(jpeg.clone(), "image", "image/jpeg")),
            400,
        ),
        (
            "text file part",
            client
                .post(&url)
                .multipart(multipart(b"just text".to_vec(), "file", "text/plain")),
            415,
        ),
        (
            "text posing as image",
            client
                .post(&url)
                .multipart(multipart(b"just text".to_vec(), "file", "image/jpeg")),
            415,
        ),
        (
            "truncated jpeg",
            client.post(&url).multipart(multipart(
                jpeg[..jpeg.len() / 3].to_vec(),
                "file",
                "image/jpeg",
            )),
            400,
        ),
        (
            "corrupt png",
            client
                .post(&url)
                .multipart(multipart(corrupt_png, "file", "image/png")),
            400,
        ),
        (
            "oversized upload",
            client.post(&url).multipart(multipart(
                vec![0xFF; 3 * 1024 * 1024],
                "file",
                "image/jpeg",
            )),
            413,
        ),
        (
            "decompression bomb",
            client
                .post(&url)
                .header("content-type", "image/png")
                .body(png_bomb()),
            413,
        ),
    ];
    for (case, request, expected) in cases {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        assert_eq!(status, expected, "{case}: {body}");
        let error: ErrorBody = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{case}: not a JSON error ({e}): {body}"));
        assert!(
            !error.message.is_empty() && error.request_id.is_some(),
            "{case}"
        );
    }
    // Wrong-length bodies to the ensemble and a model are 400 too.
    for url in [
        pipeline.ensemble.url("/ensemble_service"),
        pipeline
            .mobilenetv2
            .as_ref()
            .expect("running")
            .url("/inference"),
    ] {
        let response = client
            .post(&url)
            .header("content-type", "application/octet-stream")
            .body(vec![0_u8; 1000])
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 400, "{url}");
    }
    // Still serving after all that.
    let answer = classify(&pipeline, "parrot.jpg", &traceparent().0).await;
    assert_eq!(answer.top1.class_id, "n01818515");
}

/// A 10000×10000 PNG header with an empty pixel stream.
fn png_bomb() -> Vec<u8> {
    let image = image::RgbImage::new(1, 1);
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encode");
    // Patch IHDR width/height (bytes 16..24) and its CRC (bytes 29..33).
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// One model down: the answer is degraded and names it; both down: 502 with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_model_degrades_the_answer() {
    let mut pipeline = Pipeline::start(
        &Tracing {
            endpoint: None,
            protocol: "grpc",
        },
        &[],
    )
    .await;
    let status = pipeline.efficientnetb0.take().expect("running").terminate();
    assert!(status.success(), "SIGTERM is a clean shutdown: {status}");
    let answer = classify(&pipeline, "parrot.jpg", &traceparent().0).await;
    assert!(answer.degraded);
    assert_eq!(answer.failed_models.len(), 1);
    assert_eq!(answer.failed_models[0].model, "efficientnetb0");
    assert_eq!(answer.models.len(), 1);
    assert_eq!(
        answer.top1.class_id, "n01818515",
        "mobilenetv2 alone still gets it right"
    );

    drop(pipeline.mobilenetv2.take());
    let response = reqwest::Client::new()
        .post(pipeline.preprocessing.url("/preprocessing"))
        .multipart(multipart(image("parrot.jpg"), "file", "image/jpeg"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 502);
    let error: ErrorBody = response.json().await.expect("JSON error");
    assert_eq!(error.error, "ensemble_failed");
    assert!(
        error.message.contains("mobilenetv2") && error.message.contains("efficientnetb0"),
        "{}",
        error.message
    );
}

/// Fire-and-forget mode answers at once, like upstream, and still classifies in the same trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_mode_answers_at_once_and_classifies_in_the_background() {
    let receiver = OtlpReceiver::http().await.expect("receiver");
    let pipeline = Pipeline::start(
        &Tracing {
            endpoint: Some(receiver.endpoint()),
            protocol: "http/protobuf",
        },
        &[("RESPONSE_MODE", "accepted".to_owned())],
    )
    .await;
    let (header, trace_id, _) = traceparent();
    let response = reqwest::Client::new()
        .post(pipeline.preprocessing.url("/preprocessing"))
        .header("traceparent", header)
        .multipart(multipart(image("hot_dog.jpg"), "file", "image/jpeg"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["response"], "File accepted");
    let spans = receiver
        .store
        .wait_for_trace(&trace_id, Duration::from_secs(15), complete)
        .await;
    assert!(
        complete(&spans),
        "background classification traced in the request's trace"
    );
}

/// Start-up mistakes are clear errors with a non-zero exit, not crashes later.
#[test]
fn unknown_model_is_refused_at_start_up() {
    let output = std::process::Command::new(binary("inference"))
        .args(["--model", "resnet50"])
        .output()
        .expect("run inference");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("resnet50") && stderr.contains("mobilenetv2"),
        "{stderr}"
    );

    let output = std::process::Command::new(binary("inference"))
        .args([
            "--model",
            "mobilenetv2",
            "--model-path",
            "/nonexistent/model.onnx",
        ])
        .env(
            "ORT_DYLIB_PATH",
            required_env("ORT_DYLIB_PATH", "path of libonnxruntime.so"),
        )
        .output()
        .expect("run inference");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/model.onnx"), "{stderr}");
}

/// The load generator against the real pipeline: every request answered, and accuracy measured
/// from the WordNet ids in the file names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_measures_throughput_and_accuracy() {
    let pipeline = Pipeline::start(&Tracing::disabled(), &[]).await;
    let dataset = tempfile::tempdir().expect("tempdir");
    let nested = dataset.path().join("nested");
    std::fs::create_dir(&nested).expect("mkdir");
    for (photo, target) in [
        ("parrot.jpg", dataset.path().join("parrot_n01818515.jpg")),
        ("hot_dog.jpg", nested.join("hot_dog_n07697537.JPEG")),
        ("pets.jpg", nested.join("pets_n02096585.jpeg")),
    ] {
        std::fs::write(target, image(photo)).expect("copy photo");
    }
    std::fs::write(dataset.path().join("notes.txt"), "not an image").expect("write");
    let url = pipeline.preprocessing.url("/preprocessing");
    let ds_path = dataset.path().to_string_lossy().into_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary("loadgen"))
            .args([
                "--url",
                &url,
                "--ds-path",
                &ds_path,
                "--requests",
                "12",
                "--concurrency",
                "2",
            ])
            .args([
                "--output",
                "json",
                "--no-progress",
                "--seed",
                "7",
                "--fail-on-error",
            ])
            .output()
            .expect("run loadgen")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON summary");
    assert_eq!(summary["sent"], 12);
    assert_eq!(summary["ok"], 12);
    assert_eq!(summary["accuracy"]["known"], 12);
    assert_eq!(summary["accuracy"]["correct"], 12, "{summary}");
    assert!(
        summary["latency_ms"]["p50"]
            .as_f64()
            .is_some_and(|p50| p50 > 0.0)
    );
    assert!(summary["throughput_rps"].as_f64().is_some_and(|t| t > 0.0));
}
