//! The `run` subcommand: the operator process. Telemetry, the admin server (`/livez`,
//! `/readyz`, `/metrics`), leader election, and the controller while leading; graceful shutdown
//! on SIGTERM/SIGINT.

use std::{net::SocketAddr, time::Duration};

use axum::Router;
use pipeline_common::{
    config::LogArgs,
    metrics::{Metrics, MetricsBuilder},
    server::{Readiness, serve_on, shutdown_signal},
};
use tokio::sync::watch;

use crate::{
    controller,
    leader::{LeaderElector, LeaseConfig},
    metrics::ReconcileMetrics,
    traces::{self, JaegerChecker, TraceChecker},
};

/// Flags of `run` (each also read from the environment).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Port of the admin server (`/livez`, `/readyz`, `/metrics`).
    #[arg(long, env = "ADMIN_PORT", default_value_t = 8080)]
    pub admin_port: u16,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "LEASE_NAME", default_value = "tracedpipeline-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// How long a Lease stays valid without renewal.
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// Where Jaeger's query API is, `{namespace}` being the TracedPipeline's namespace
    /// (default `http://jaeger.{namespace}.svc:16686`; override to run out of cluster).
    #[arg(long, env = "JAEGER_URL_TEMPLATE")]
    pub jaeger_url_template: Option<String>,
    /// How far back spans count for `TracesFlowing`.
    #[arg(long, env = "TRACES_WINDOW", default_value = "5m", value_parser = humantime::parse_duration)]
    pub traces_window: Duration,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Why the operator process stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot set up telemetry")]
    Telemetry(#[from] pipeline_common::telemetry::TelemetryError),
    #[error("cannot create the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error("cannot list TracedPipelines ({hint})", hint = controller::CRD_HINT)]
    CrdMissing(#[source] kube::Error),
    #[error("cannot build the HTTP client for Jaeger")]
    Http(#[from] reqwest::Error),
    #[error("cannot serve the admin endpoints on {addr}")]
    Admin {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the leader Lease; exiting so that a fresh process stands by")]
    LostLeadership,
}

/// The admin routes: liveness, readiness (leader or ready standby) and metrics. Not traced.
pub fn admin_router(readiness: Readiness, metrics: Metrics) -> Router {
    pipeline_common::server::probe_router("/livez", readiness, metrics)
}

/// Runs the operator until SIGTERM/SIGINT (or until it loses the Lease).
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let RunArgs {
        admin_port,
        lease_name,
        lease_namespace,
        pod_name,
        lease_duration,
        jaeger_url_template,
        traces_window,
        log,
    } = args;
    let telemetry = pipeline_common::telemetry::init("tracedpipeline-operator", &log)?;
    let mut builder = MetricsBuilder::new(&telemetry.span_metrics);
    let reconcile_metrics = ReconcileMetrics::register(builder.registry());
    let metrics = builder.build();

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });

    // Admin server first, so that liveness answers while the rest starts.
    let readiness = Readiness::default();
    let addr = SocketAddr::from(([0, 0, 0, 0], admin_port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Admin { addr, source })?;
    tracing::info!(%addr, "admin server listening");
    let mut admin_stop = stop_rx.clone();
    let admin = tokio::spawn(serve_on(
        listener,
        admin_router(readiness.clone(), metrics),
        async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        },
        readiness.clone(),
        Duration::from_secs(5),
    ));

    let result = lead_and_reconcile(
        LeaseSetup {
            lease_name,
            lease_namespace,
            pod_name,
            lease_duration,
        },
        jaeger_url_template,
        traces_window,
        reconcile_metrics,
        readiness,
        stop_rx,
    )
    .await;

    admin.abort();
    telemetry.shutdown();
    result
}

struct LeaseSetup {
    lease_name: String,
    lease_namespace: String,
    pod_name: Option<String>,
    lease_duration: Duration,
}

async fn lead_and_reconcile(
    lease: LeaseSetup,
    jaeger_url_template: Option<String>,
    traces_window: Duration,
    metrics: ReconcileMetrics,
    readiness: Readiness,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let client = kube::Client::try_default()
        .await
        .map_err(RunError::Client)?;
    if let Err(error) = controller::check_crd_installed(&client).await {
        tracing::error!(%error, hint = controller::CRD_HINT, "TracedPipeline CRD not found");
        return Err(RunError::CrdMissing(error));
    }
    let checker = TraceChecker::Jaeger(JaegerChecker::new(
        jaeger_url_template,
        traces_window,
        traces::DEFAULT_TIMEOUT,
    )?);
    let identity = lease
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("tracedpipeline-operator-{}", std::process::id()));
    let elector = LeaderElector::new(
        client.clone(),
        LeaseConfig {
            name: lease.lease_name,
            namespace: lease.lease_namespace,
            identity: identity.clone(),
            duration: lease.lease_duration,
            renew_every: lease.lease_duration / 3,
        },
    );
    // A standby that can reach the apiserver is ready: it takes over within one lease duration.
    readiness.set(true);
    tracing::info!(%identity, lease = %elector.config().name, "waiting for leadership");
    if !elector.acquire(&mut stop).await {
        return Ok(());
    }

    let (lost_tx, lost_rx) = watch::channel(false);
    let holder = elector.clone();
    let mut hold_stop = stop.clone();
    let hold = tokio::spawn(async move {
        let lost = holder.hold(&mut hold_stop).await;
        if lost {
            tracing::error!("lost leadership: stopping the controller");
            let _ = lost_tx.send(true);
        }
        lost
    });
    let mut stop_for_controller = stop.clone();
    let mut lost_for_controller = lost_rx.clone();
    let shutdown = async move {
        tokio::select! {
            _ = stop_for_controller.wait_for(|s| *s) => {}
            _ = lost_for_controller.wait_for(|l| *l) => {}
        }
    };
    controller::run(
        client,
        controller::reporter(Some(identity)),
        metrics,
        checker,
        shutdown,
    )
    .await;

    let lost = *lost_rx.borrow();
    hold.abort();
    if lost {
        return Err(RunError::LostLeadership);
    }
    if let Err(error) = elector.release().await {
        tracing::warn!(%error, "cannot release the Lease; a standby takes over when it expires");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::{
        body::Body,
        http::{Request, StatusCode},
    };
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test]
    async fn admin_endpoints() {
        let readiness = Readiness::default();
        let mut builder = MetricsBuilder::new(&Default::default());
        let m = ReconcileMetrics::register(builder.registry());
        m.reconcile_failure(&crate::error::Error::Conflict("x".to_owned()));
        let router = admin_router(readiness.clone(), builder.build());
        let call = |path: &'static str| {
            let router = router.clone();
            async move {
                let response = router
                    .oneshot(Request::get(path).body(Body::empty()).expect("request"))
                    .await
                    .expect("infallible");
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("body");
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        assert_eq!(call("/livez").await.0, StatusCode::OK);
        assert_eq!(call("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        readiness.set(true);
        assert_eq!(call("/readyz").await.0, StatusCode::OK);
        let (status, text) = call("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains(
                r#"tracedpipeline_operator_reconcile_failures_total{error="conflict"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("tracedpipeline_operator_reconcile_duration_seconds"));
        assert!(text.contains("tracedpipeline_operator_mode_switch_duration_seconds"));
    }
}
