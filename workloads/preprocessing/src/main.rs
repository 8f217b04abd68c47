use anyhow::Context as _;
use clap::Parser as _;
use pipeline_common::metrics::MetricsBuilder;
use pipeline_common::server::serve;
use preprocessing::{AppState, Config, DEFAULT_PORT, app};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    pipeline_common::exit_code("preprocessing", run(config).await)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let telemetry = pipeline_common::telemetry::init("preprocessing", &config.server.log)?;
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")?;
    let state = AppState::new(
        &config,
        client,
        MetricsBuilder::new(&telemetry.span_metrics),
    );
    tracing::info!(ensemble = %config.ensemble_url, mode = ?config.response_mode, "configured");
    let background = state.background.clone();
    let readiness = state.readiness.clone();
    let served = serve(
        app(state),
        config.server.listen_addr(DEFAULT_PORT),
        readiness,
        config.server.shutdown_grace_period,
    )
    .await;
    // Fire-and-forget classifications accepted before the signal still finish.
    background.close();
    if tokio::time::timeout(config.server.shutdown_grace_period, background.wait())
        .await
        .is_err()
    {
        tracing::warn!("background classifications still running at exit");
    }
    telemetry.shutdown();
    served.context("server failed")
}
