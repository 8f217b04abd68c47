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
