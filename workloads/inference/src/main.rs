use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use inference::engine::{Admission, Classify as _, OnnxEngine};
use inference::{AppState, Config, DEFAULT_PORT, app};
use pipeline_common::api::IMAGE_BYTES;
use pipeline_common::metrics::MetricsBuilder;
use pipeline_common::server::{Limits, serve};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    pipeline_common::exit_code("inference", run(config).await)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let telemetry = pipeline_common::telemetry::init(
        &format!("inference-{}", config.model.name()),
        &config.server.log,
    )?;
    let engine_config = config.engine_config();
    tracing::info!(
        model = config.model.name(),
        path = %engine_config.model_path.display(),
        sessions = engine_config.sessions,
        intra_op_threads = engine_config.intra_op_threads,
        "loading model"
    );
    let engine = tokio::task::spawn_blocking(move || -> anyhow::Result<OnnxEngine> {
        let engine = OnnxEngine::load(&engine_config)?;
        // The first run is several times slower (allocations, kernel selection); pay it now.
        let started = std::time::Instant::now();
        engine
            .classify(&vec![0; IMAGE_BYTES])
            .context("warm-up inference failed")?;
        tracing::info!(
            warmup_ms = started.elapsed().as_millis() as u64,
            "model warmed up"
        );
        Ok(engine)
    })
    .await??;

    let state = AppState::new(
        config.model,
        Arc::new(engine),
        Admission::new(config.max_concurrent, config.queue_depth),
        Limits {
            max_body_bytes: IMAGE_BYTES + 4096,
            request_timeout: config.server.request_timeout,
        },
        MetricsBuilder::new(&telemetry.span_metrics),
    );
    state.readiness.set(true);
    let readiness = state.readiness.clone();
    let served = serve(
        app(state),
        config.server.listen_addr(DEFAULT_PORT),
        readiness,
        config.server.shutdown_grace_period,
    )
    .await;
    telemetry.shutdown();
    served.context("server failed")
}
