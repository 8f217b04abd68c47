//! Measures the numbers recorded in BENCHMARKS.md: per-model ONNX time, per-service latency,
//! whole-pipeline latency at low load, throughput at saturation with tracing off, to an
//! in-process receiver, to the real Jaeger v2 and through the real collector to Jaeger.
//! Run with `make bench` (release binaries, real models, `JAEGER_BIN` and `OTELCOL_BIN`).

use std::time::{Duration, Instant};

use pipeline_common::api::{ClassifyResponse, EnsembleResponse, IMAGE_BYTES, InferenceResponse};
use tp_e2e::backends::{Backend, TracedPipelineRun, render, start_traced_pipeline};
use tp_e2e::images_dir;
use tp_e2e::otlp::OtlpReceiver;
use tp_e2e::process::{Pipeline, Tracing, binary};

const SAMPLES: usize = 60;
const WARM_UP: usize = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::http().await?;
    let traced = Tracing {
        endpoint: Some(receiver.endpoint()),
        protocol: "http/protobuf",
    };
    let photo = std::fs::read(images_dir().join("parrot.jpg"))?;
    let client = reqwest::Client::new();

    println!("## Latency at low load (one request at a time, {SAMPLES} samples, tracing on)\n");
    println!("| what | p50 ms | p90 ms | max ms |");
    println!("|---|---|---|---|");
    let pipeline = Pipeline::start(&traced, &[]).await;
    let pixels = vec![128_u8; IMAGE_BYTES];
    for (model, service) in [
        ("mobilenetv2", pipeline.mobilenetv2.as_ref()),
        ("efficientnetb0", pipeline.efficientnetb0.as_ref()),
    ] {
        let url = service
            .ok_or_else(|| anyhow::anyhow!("{model} not running"))?
            .url("/inference");
        let mut ort = Vec::new();
        let mut round_trip = Vec::new();
        for i in 0..SAMPLES + WARM_UP {
            let started = Instant::now();
            let answer: InferenceResponse = post_pixels(&client, &url, &pixels).await?;
            if i >= WARM_UP {
                round_trip.push(started.elapsed().as_secs_f64() * 1000.0);
                ort.push(answer.inference_ms);
            }
        }
        row(&format!("{model}: ONNX Runtime `run` only"), &mut ort);
        row(
            &format!("{model}: inference service (HTTP round trip)"),
            &mut round_trip,
        );
    }
    let url = pipeline.ensemble.url("/ensemble_service");
    let mut ensemble = Vec::new();
    for i in 0..SAMPLES + WARM_UP {
        let started = Instant::now();
        let _: EnsembleResponse = post_pixels(&client, &url, &pixels).await?;
        if i >= WARM_UP {
            ensemble.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    row(
        "ensemble service (both models, HTTP round trip)",
        &mut ensemble,
    );

    let url = pipeline.preprocessing.url("/preprocessing");
    let (mut total, mut decode_resize, mut slowest_model, mut client_side) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..SAMPLES + WARM_UP {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(photo.clone())
                .file_name("parrot.jpg")
                .mime_str("image/jpeg")?,
        );
        let started = Instant::now();
        let answer: ClassifyResponse = client
            .post(&url)
            .multipart(form)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if i >= WARM_UP {
            client_side.push(started.elapsed().as_secs_f64() * 1000.0);
            total.push(answer.timings_ms.total);
            decode_resize.push(answer.timings_ms.decode + answer.timings_ms.resize);
            slowest_model.push(
                answer
                    .models
                    .iter()
                    .map(|m| m.latency_ms)
                    .fold(0.0, f64::max),
            );
        }
    }
    let decode_resize_p50 = row(
        "preprocessing: decode + resize (parrot.jpg, 512×929)",
        &mut decode_resize,
    );
    let model_p50 = row(
        "slowest model call, as seen by the ensemble",
        &mut slowest_model,
    );
    row("pipeline, server side (preprocessing total)", &mut total);
    let pipeline_p50 = row(
        "pipeline, client side (upload + classify)",
        &mut client_side,
    );
    let floor = decode_resize_p50 + model_p50;
    println!(
        "\nPipeline p50 {pipeline_p50:.1} ms vs decode+resize+max(model) {floor:.1} ms: overhead {:+.1} %\n",
        (pipeline_p50 / floor - 1.0) * 100.0
    );
    drop(pipeline);

    println!("## Throughput at saturation (loadgen --concurrency 4, 20 s, 6 photos)\n");
    println!(
        "| tracing | run | ok | throughput req/s | p50 ms | p99 ms | spans exported | spans dropped |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let sinks = [
        Sink::Off,
        Sink::Receiver,
        Sink::Jaeger,
        Sink::CollectorToJaeger,
    ];
    // Requests per second of each run, per sink (in the order of `sinks`).
    let mut throughput = vec![Vec::new(); sinks.len()];
    for run in 1..=2 {
        for (sink, runs) in sinks.iter().zip(&mut throughput) {
            // The backends (if any) live as long as the pipeline that exports to them.
            let (pipeline, _backends) = match sink {
                Sink::Off => (Pipeline::start(&Tracing::disabled(), &[]).await, Vec::new()),
                Sink::Receiver => (Pipeline::start(&traced, &[]).await, Vec::new()),
                Sink::Jaeger => real_backends("direct").await,
                Sink::CollectorToJaeger => real_backends("collector").await,
            };
            let summary = saturate(&pipeline.preprocessing.url("/preprocessing")).await?;
            let (exported, dropped) = settled_span_counts(&client, &pipeline).await?;
            let rps = summary["throughput_rps"].as_f64().unwrap_or(0.0);
            println!(
                "| {} | {run} | {} | {rps:.1} | {:.1} | {:.1} | {exported} | {dropped} |",
                sink.label(),
                summary["ok"],
                summary["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
                summary["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
            );
            runs.push(rps);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let off = mean(&throughput[0]);
    println!();
    for (sink, runs) in sinks.iter().zip(&throughput).skip(1) {
        println!(
            "Tracing cost, {}: {:.1} % of throughput (mean of {} runs, {:.1} vs {off:.1} req/s)",
            sink.label(),
            (1.0 - mean(runs) / off) * 100.0,
            runs.len(),
            mean(runs)
        );
    }
    Ok(())
}

/// Where the services' spans go in a saturation run.
#[derive(Clone, Copy, Debug)]
enum Sink {
    /// `OTEL_SDK_DISABLED=true`.
    Off,
    /// An in-process OTLP/HTTP receiver that only stores spans.
    Receiver,
    /// The real Jaeger v2, wired as the operator wires `direct` mode.
    Jaeger,
    /// The real collector in front of the real Jaeger, as in `collector` mode.
    CollectorToJaeger,
}

impl Sink {
    fn label(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Receiver => "in-process receiver (OTLP/HTTP)",
            Self::Jaeger => "Jaeger v2 direct (OTLP/gRPC)",
            Self::CollectorToJaeger => "collector → Jaeger v2 (OTLP/gRPC)",
        }
    }
}

/// The pipeline wired to the real backends of `mode`, and those backends (kept alive by the
/// caller).
async fn real_backends(mode: &str) -> (Pipeline, Vec<Backend>) {
    let (_, objects) = render(mode, "grpc");
    let TracedPipelineRun {
        jaeger,
        collector,
        pipeline,
    } = start_traced_pipeline(&objects).await;
    (pipeline, std::iter::once(jaeger).chain(collector).collect())
}

/// [`span_counts`] once the batch exporters have sent what they held (two equal readings a
/// second apart, for at most 15 s).
async fn settled_span_counts(
    client: &reqwest::Client,
    pipeline: &Pipeline,
) -> anyhow::Result<(u64, u64)> {
    let mut last = span_counts(client, pipeline).await?;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = span_counts(client, pipeline).await?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

/// Spans exported and dropped by all four services, from their own `/metrics`.
async fn span_counts(client: &reqwest::Client, pipeline: &Pipeline) -> anyhow::Result<(u64, u64)> {
    let services = [
        Some(&pipeline.preprocessing),
        Some(&pipeline.ensemble),
        pipeline.mobilenetv2.as_ref(),
        pipeline.efficientnetb0.as_ref(),
    ];
    let (mut exported, mut dropped) = (0, 0);
    for service in services.into_iter().flatten() {
        let text = client
            .get(service.url("/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        exported += counter(&text, "tracedpipeline_otel_spans_exported_total");
        dropped += counter(&text, "tracedpipeline_otel_spans_dropped_total");
    }
    Ok((exported, dropped))
}

/// Sum of a Prometheus counter's samples (every label set) in a text exposition.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

/// Posts a prepared image as the services exchange it and decodes the JSON answer.
async fn post_pixels<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    pixels: &[u8],
) -> anyhow::Result<T> {
    Ok(client
        .post(url)
        .header("content-type", "application/octet-stream")
        .body(pixels.to_vec())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Prints one table row and returns the median.
fn row(what: &str, samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "| {what} | {:.1} | {:.1} | {:.1} |",
        at(0.5),
        at(0.9),
        at(1.0)
    );
    at(0.5)
}

async fn saturate(url: &str) -> anyhow::Result<serde_json::Value> {
    let output = tokio::process::Command::new(binary("loadgen"))
        .args(["--url", url, "--ds-path"])
        .arg(images_dir())
        .args([
            "--concurrency",
            "4",
            "--duration",
            "20s",
            "--output",
            "json",
            "--no-progress",
            "--seed",
            "1",
        ])
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(serde_json::from_slice(&output.stdout)?)
}
