//! What every TracedPipeline service shares, so that all four have the same shape:
//! configuration flags, telemetry (logs + OpenTelemetry traces), the HTTP server scaffolding
//! (`/healthz`, `/readyz`, `/metrics`, request spans, limits, graceful shutdown), a traced HTTP
//! client, and the JSON wire types exchanged between the services.

pub mod api;
pub mod client;
pub mod config;
pub mod error;
pub mod metrics;
pub mod server;
pub mod telemetry;

/// The process exit for a service's `run` result: an error is printed once, with its causes
/// (`{:#}`), and gives a non-zero status.
pub fn exit_code<E: std::fmt::Display>(
    service: &str,
    result: Result<(), E>,
) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{service}: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
