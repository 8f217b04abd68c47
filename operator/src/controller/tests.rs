//! Reconcile flows against a mocked API server: each scenario asserts the sequence of calls.

use std::sync::Arc;

use http::StatusCode;
use kube::{core::DeserializeGuard, runtime::controller::Action};
use serde_json::json;

use super::{PROGRESSING_REQUEUE, error_policy, reconcile};
use crate::{
    api::TracingMode,
    controller::Context,
    error::Error,
    fixtures::{NAME, NS, env_of, test_tp},
    traces::TracesVerdict,
};

fn unknown() -> TracesVerdict {
    TracesVerdict::Unknown("not checked in tests".to_owned())
}

#[tokio::test]
async fn fresh_direct_object_applies_jaeger_and_pipeline_then_patches_status() {
    let (ctx, mut api) = Context::test(unknown());
    let tp = test_tp(TracingMode::Direct);
    let obj = Arc::new(DeserializeGuard(Ok(tp)));
    let server = tokio::spawn(async move {
        api.expect_observe_empty().await;
        let jaeger = api
            .expect_workload(Some("jaeger-config"), "jaeger", "jaeger")
            .await;
        assert_eq!(jaeger.body["kind"], "Deployment");
        assert_eq!(jaeger.body["metadata"]["ownerReferences"][0]["name"], NAME);
        let pipeline = api.expect_pipeline().await;
        for d in &pipeline {
            assert_eq!(
                env_of(&d.body, "OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
                Some("http://jaeger:4317")
            );
        }
        let status = api.expect_status_patch().await;
        assert_eq!(
            status.body["apiVersion"],
            "tracing.tracedpipeline.dev/v1alpha1"
        );
        assert_eq!(status.body["kind"], "TracedPipeline");
        let s = &status.body["status"];
        assert_eq!(s["observedGeneration"], 1);
        assert_eq!(s["tracing"]["activeMode"], "direct");
        assert_eq!(s["tracing"]["endpoint"], "http://jaeger:4317");
        let types: Vec<_> = s["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| (c["type"].clone(), c["status"].clone(), c["reason"].clone()))
            .collect();
        assert_eq!(
            types,
            vec![
                (json!("Ready"), json!("False"), json!("ReplicasNotReady")),
                (json!("Progressing"), json!("True"), json!("RollingOut")),
                (
                    json!("Degraded"),
                    json!("False"),
                    json!("ReconcileSucceeded")
                ),
                (
                    json!("TracesFlowing"),
                    json!("Unknown"),
                    json!("JaegerUnreachable")
                ),
            ]
        );
        api.expect_silence().await;
    });
    let action = reconcile(obj, ctx).await.expect("reconciled");
    assert_eq!(action, Action::requeue(PROGRESSING_REQUEUE));
    server.await.expect("scenario");
}

#[tokio::test]
async fn fresh_collector_object_applies_the_collector_before_the_pipeline() {
    let (ctx, mut api) = Context::test(unknown());
    let obj = Arc::new(DeserializeGuard(Ok(test_tp(TracingMode::Collector))));
    let server = tokio::spawn(async move {
        api.expect_observe_empty().await;
        api.expect_workload(Some("jaeger-config"), "jaeger", "jaeger")
            .await;
        // The collector comes before any service that exports to it.
        let collector = api
            .expect_workload(
                Some("otel-collector-config"),
                "otel-collector",
                "otel-collector",
            )
            .await;
        assert_eq!(collector.body["metadata"]["name"], "otel-collector");
        let pipeline = api.expect_pipeline().await;
        for d in &pipeline {
            assert_eq!(
                env_of(&d.body, "OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
                Some("http://otel-collector:4317")
            );
            assert_eq!(
                d.body["spec"]["template"]["metadata"]["labels"]["tracing.tracedpipeline.dev/wiring"],
                "collector"
            );
        }
        let status = api.expect_status_patch().await;
        let s = &status.body["status"];
        assert_eq!(s["tracing"]["activeMode"], "collector");
        assert_eq!(s["tracing"]["desiredMode"], "collector");
        api.expect_silence().await;
    });
    reconcile(obj, ctx).await.expect("reconciled");
    server.await.expect("scenario");
}

#[tokio::test]
async fn unparseable_object_gets_degraded_and_an_event_and_no_children() {
    let (ctx, mut api) = Context::test(unknown());
    let raw = json!({
        "apiVersion": "tracing.tracedpipeline.dev/v1alpha1",
        "kind": "TracedPipeline",
        "metadata": {"name": NAME, "namespace": NS, "uid": "u-1", "generation": 2, "resourceVersion": "7"},
        "spec": {"tracing": {"mode": "sideways"}},
    });
    let obj: DeserializeGuard<crate::api::TracedPipeline> =
        serde_json::from_value(raw.clone()).expect("guard parses");
    assert!(obj.0.is_err());
    let obj = Arc::new(obj);
    let server = tokio::spawn(async move {
        api.expect(
            "GET",
            &format!(
                "/apis/tracing.tracedpipeline.dev/v1alpha1/namespaces/{NS}/tracedpipelines/{NAME}"
            ),
            StatusCode::OK,
            raw,
        )
        .await;
        let status = api.expect_status_patch().await;
        let conditions = status.body["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .clone();
        let degraded = conditions
            .iter()
            .find(|c| c["type"] == "Degraded")
            .expect("Degraded");
        assert_eq!(degraded["status"], "True");
        assert_eq!(degraded["reason"], "InvalidObject");
        assert!(
            degraded["message"]
                .as_str()
                .unwrap_or_default()
                .contains("sideways"),
            "{degraded}"
        );
        assert_eq!(status.body["status"]["observedGeneration"], 2);
        let event = api.expect_event().await;
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], "InvalidObject");
        assert_eq!(event.body["regarding"]["name"], NAME);
        api.expect_silence().await;
    });
    let error = reconcile(obj.clone(), ctx.clone())
        .await
        .expect_err("invalid");
    assert!(matches!(error, Error::InvalidObject(_)));
    assert_eq!(error_policy(obj, &error, ctx), Action::await_change());
    server.await.expect("scenario");
}

#[tokio::test]
async fn transient_errors_back_off() {
    let (ctx, _api) = Context::test(unknown());
    let obj = Arc::new(DeserializeGuard(Ok(test_tp(TracingMode::Direct))));
    let error = || Error::Kube {
        action: "get",
        kind: "Deployment",
        name: "x".to_owned(),
        source: kube::Error::LinesCodecMaxLineLengthExceeded,
    };
    let first = error_policy(obj.clone(), &error(), ctx.clone());
    let second = error_policy(obj, &error(), ctx);
    assert_eq!(first, Action::requeue(std::time::Duration::from_secs(10)));
    assert_eq!(second, Action::requeue(std::time::Duration::from_secs(20)));
}
