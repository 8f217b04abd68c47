//! `ensemble` binary: configuration, telemetry, serving, orderly shutdown.

use anyhow::Context as _;
use clap::Parser as _;
use ensemble::{AppState, Args, DEFAULT_PORT, app, http_client};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Invalid flags or environment print clap's explanation and exit with status 2.
    let args = Args::parse();
    pipeline_common::exit_code("ensemble", run(args).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let telemetry = pipeline_common::telemetry::init("ensemble", &args.server.log)
        .context("cannot initialise telemetry")?;
    let client = http_client(&args).context("cannot build the HTTP client for the models")?;
    let state = AppState::new(&args, client, &telemetry.span_metrics);
    tracing::info!(
        models = %args.models,
        aggregation = args.aggregation.as_str(),
        model_timeout = %humantime::format_duration(args.model_timeout),
        top_k = args.top_k,
        "ensemble configured"
    );
    if args.model_timeout >= args.server.request_timeout {
        // The request would be cut off (504) before a slow model's failure could be tolerated.
        tracing::warn!(
            model_timeout = %humantime::format_duration(args.model_timeout),
            request_timeout = %humantime::format_duration(args.server.request_timeout),
            "the model timeout is not shorter than the request timeout"
        );
    }
    let served = pipeline_common::server::serve(
        app(state.clone()),
        args.server.listen_addr(DEFAULT_PORT),
        state.readiness(),
        args.server.shutdown_grace_period,
    )
    .await;
    // Flush the spans of the last requests whatever the outcome.
    telemetry.shutdown();
    served.with_context(|| format!("cannot serve on {}", args.server.listen_addr(DEFAULT_PORT)))
}
