//! Harness for tests that run the TracedPipeline services as real processes on loopback, wired
//! by environment exactly as the operator wires pods, with an in-test OTLP receiver (HTTP and
//! gRPC) standing in for the tracing backend, or the real Jaeger and OpenTelemetry Collector
//! configured as the operator renders them; and a real Kubernetes control plane for the
//! operator.

pub mod backends;
pub mod control_plane;
pub mod otlp;
pub mod process;

use std::path::PathBuf;

/// A required environment variable; tests that need the real models or runtime fail loudly
/// (never skip) when the environment is incomplete.
pub fn required_env(name: &str, hint: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!("{name} is not set: {hint} (the README's test command sets it)"),
    }
}

/// Directory of the labelled test photos.
pub fn images_dir() -> PathBuf {
    std::env::var("IMAGES_DIR").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/images"),
        PathBuf::from,
    )
}
