//! Load generator for the TracedPipeline preprocessing endpoint.
//!
//! [`config`] (flags) → [`dataset`] (images and their ground truth) → [`runner`] (open or closed
//! loop) → [`report`] (latency histogram, error kinds, accuracy; text or JSON).

pub mod config;
pub mod dataset;
pub mod progress;
pub mod report;
pub mod runner;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;

use pipeline_common::client::TracedClient;
use pipeline_common::telemetry::{self, TelemetryError};

use crate::config::{Cli, OutputFormat};
use crate::dataset::{Dataset, DatasetError};
use crate::progress::Progress;
use crate::report::Summary;
use crate::runner::Runner;

/// Exit status with `--fail-on-error` when any request failed.
pub const EXIT_REQUESTS_FAILED: u8 = 1;
/// Exit status for usage and I/O errors (clap uses 2 for usage errors too).
pub const EXIT_FATAL: u8 = 2;

/// Why a run could not be carried out (failed requests are not errors, they are measured).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("cannot start telemetry: {0}")]
    Telemetry(#[from] TelemetryError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot create the latency histogram: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
    #[error("cannot encode the summary: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot write the summary: {0}")]
    Output(#[source] std::io::Error),
}

/// Runs the whole program for parsed flags and returns the process exit status.
pub fn run_cli(cli: &Cli) -> ExitCode {
    match run(cli) {
        Ok(summary) if cli.fail_on_error && summary.failed > 0 => {
            ExitCode::from(EXIT_REQUESTS_FAILED)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

/// Loads the images, runs the load, prints the summary and returns it.
pub fn run(cli: &Cli) -> Result<Summary, Error> {
    let config = cli.run_config();
    // Read before the clock starts, so disk speed never shows up in latencies.
    let dataset = Arc::new(Dataset::load(&cli.ds_path)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let telemetry = if cli.trace {
        // The gRPC exporter needs a runtime at construction.
        let _guard = runtime.enter();
        Some(telemetry::init("loadgen", &cli.log)?)
    } else {
        None
    };

    let outcome = http_client_and_run(&runtime, &config, &dataset, cli);
    if let Some(telemetry) = telemetry {
        // Outside `block_on`: flushing blocks, and must happen even when the run failed.
        telemetry.shutdown();
    }
    let outcome = outcome?;

    let summary = Summary::new(&config, dataset.len(), &outcome);
    let text = match cli.output {
        OutputFormat::Text => summary.to_text(),
        OutputFormat::Json => summary.to_json()? + "\n",
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(Error::Output)?;
    Ok(summary)
}

fn http_client_and_run(
    runtime: &tokio::runtime::Runtime,
    config: &config::RunConfig,
    dataset: &Arc<Dataset>,
    cli: &Cli,
) -> Result<runner::RunOutcome, Error> {
    let client = TracedClient::new(runner::http_client(config.timeout)?);
    let visible = !cli.no_progress && std::io::stderr().is_terminal();
    let progress = Progress::new(visible, config.max_requests);
    let runner = Runner::new(config.clone(), Arc::clone(dataset), client);
    Ok(runtime.block_on(runner.run(progress, interrupted()))?)
}

/// Resolves on the first Ctrl-C, after which no new request starts; a second one aborts.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        // No signal handler: the run simply cannot be interrupted gracefully.
        std::future::pending::<()>().await;
    }
    eprintln!("\nloadgen: interrupted, waiting for in-flight requests (Ctrl-C again to abort)");
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
}
