use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::{
    api::{ServiceStatus, TracingMode},
    fixtures::test_tp,
    switch::{Observed, plan},
    traces::DEFAULT_WINDOW,
};

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + second).expect("valid"))
}

fn ready_observation(o: Observed) -> Observation {
    Observation {
        switch: o,
        services: vec![ServiceStatus {
            name: "preprocessing".to_owned(),
            ready_replicas: 1,
            desired_replicas: 1,
        }],
    }
}

fn flowing() -> TracesVerdict {
    TracesVerdict::Flowing {
        services: 1,
        via_collector: false,
    }
}

fn get<'a>(s: &'a TracedPipelineStatus, type_: &str) -> &'a Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition present")
}

fn direct_settled() -> Observed {
    Observed {
        pods_on_jaeger: true,
        pipeline_rolled_out: true,
        ..Observed::default()
    }
}

#[test]
fn settled_direct_is_ready_and_keeps_transition_times() {
    let mut tp = test_tp(TracingMode::Direct);
    let obs = ready_observation(direct_settled());
    let step = plan(TracingMode::Direct, Some(TracingMode::Direct), obs.switch);
    let s1 = compute_status(&tp, &step, &obs, &flowing(), DEFAULT_WINDOW, &at(0));
    assert_eq!(get(&s1, "Ready").status, "True");
    assert_eq!(get(&s1, "Progressing").reason, "Settled");
    assert_eq!(get(&s1, "Degraded").status, "False");
    assert_eq!(get(&s1, "TracesFlowing").status, "True");
    assert_eq!(s1.observed_generation, Some(1));
    let tracing = s1.tracing.clone().expect("tracing");
    assert_eq!(tracing.active_mode, Some(TracingMode::Direct));
    assert_eq!(tracing.endpoint.as_deref(), Some("http://jaeger:4317"));
    assert_eq!(tracing.switch_started_at, None);

    // Same facts later: identical status (so no write), transition times kept.
    tp.status = Some(s1.clone());
    let s2 = compute_status(&tp, &step, &obs, &flowing(), DEFAULT_WINDOW, &at(60));
    assert_eq!(s1, s2);

    // Traces stop: only TracesFlowing transitions.
    let missing = TracesVerdict::Missing {
        missing: vec!["preprocessing".to_owned()],
        not_via_collector: vec![],
    };
    let s3 = compute_status(&tp, &step, &obs, &missing, DEFAULT_WINDOW, &at(120));
    assert_eq!(get(&s3, "TracesFlowing").last_transition_time, at(120));
    assert!(get(&s3, "TracesFlowing").message.contains("preprocessing"));
    assert_eq!(get(&s3, "Ready").last_transition_time, at(0));
}

#[test]
fn a_switch_records_start_progress_and_completion() {
    let mut tp = test_tp(TracingMode::Collector);
    tp.status = Some(compute_status(
        &test_tp(TracingMode::Direct),
        &plan(TracingMode::Direct, None, direct_settled()),
        &ready_observation(direct_settled()),
        &flowing(),
        DEFAULT_WINDOW,
        &at(0),
    ));

    // 1. Creating the collector.
    let o = direct_settled();
    let step = plan(TracingMode::Collector, Some(TracingMode::Direct), o);
    let s = compute_status(
        &tp,
        &step,
        &ready_observation(o),
        &flowing(),
        DEFAULT_WINDOW,
        &at(10),
    );
    assert_eq!(get(&s, "Progressing").status, "True");
    assert_eq!(get(&s, "Progressing").reason, "CreatingCollector");
    let t = s.tracing.clone().expect("tracing");
    assert_eq!(t.active_mode, Some(TracingMode::Direct));
    assert_eq!(t.desired_mode, Some(TracingMode::Collector));
    assert_eq!(t.switch_started_at, Some(at(10)));
    assert_eq!(t.switch_completed_at, None);
    tp.status = Some(s);

    // 2. Rolling: the start time stays.
    let o = Observed {
        collector_deployed: true,
        collector_available: true,
        pods_on_collector: true,
        ..direct_settled()
    };
    let step = plan(TracingMode::Collector, Some(TracingMode::Direct), o);
    let s = compute_status(
        &tp,
        &step,
        &ready_observation(o),
        &flowing(),
        DEFAULT_WINDOW,
        &at(20),
    );
    assert_eq!(get(&s, "Progressing").reason, "RollingToCollector");
    assert_eq!(get(&s, "Progressing").last_transition_time, at(10));
    assert_eq!(
        s.tracing.as_ref().and_then(|t| t.switch_started_at.clone()),
        Some(at(10))
    );
    tp.status = Some(s);

    // 3. Done.
    let o = Observed {
        pods_on_jaeger: false,
        ..o
    };
    let step = plan(TracingMode::Collector, Some(TracingMode::Direct), o);
    assert!(step.completed.is_some());
    let s = compute_status(
        &tp,
        &step,
        &ready_observation(o),
        &flowing(),
        DEFAULT_WINDOW,
        &at(45),
    );
    assert_eq!(get(&s, "Progressing").status, "False");
    let t = s.tracing.clone().expect("tracing");
    assert_eq!(t.active_mode, Some(TracingMode::Collector));
    assert_eq!(t.endpoint.as_deref(), Some("http://otel-collector:4317"));
    assert_eq!(t.switch_completed_at, Some(at(45)));
    assert_eq!(switch_duration(&t), Some(Duration::from_secs(35)));
    tp.status = Some(s.clone());

    // 4. Next reconcile: nothing moves.
    let step = plan(TracingMode::Collector, Some(TracingMode::Collector), o);
    let s2 = compute_status(
        &tp,
        &step,
        &ready_observation(o),
        &flowing(),
        DEFAULT_WINDOW,
        &at(50),
    );
    assert_eq!(s, s2);
}

#[test]
fn not_ready_replicas_and_missing_collector_are_named() {
    let tp = test_tp(TracingMode::Collector);
    let mut obs = ready_observation(Observed::default());
    obs.services[0].ready_replicas = 0;
    let step = plan(TracingMode::Collector, None, obs.switch);
    let s = compute_status(&tp, &step, &obs, &flowing(), DEFAULT_WINDOW, &at(0));
    assert_eq!(get(&s, "Ready").reason, "ReplicasNotReady");
    assert_eq!(
        get(&s, "Ready").message,
        "replicas not ready: preprocessing 0/1"
    );
    let obs = ready_observation(Observed::default());
    let s = compute_status(&tp, &step, &obs, &flowing(), DEFAULT_WINDOW, &at(0));
    assert_eq!(get(&s, "Ready").reason, "CollectorNotAvailable");
}

#[test]
fn degraded_keeps_the_rest_and_is_reported_once() {
    let tp = test_tp(TracingMode::Direct);
    let obs = ready_observation(direct_settled());
    let step = plan(TracingMode::Direct, None, obs.switch);
    let ok = compute_status(&tp, &step, &obs, &flowing(), DEFAULT_WINDOW, &at(0));
    let error = Error::Conflict("first".to_owned());
    assert!(!already_degraded(Some(&ok), &error));
    let bad = degraded_status(Some(&ok), Some(2), &error, &at(5));
    assert_eq!(get(&bad, "Degraded").status, "True");
    assert_eq!(get(&bad, "Degraded").reason, "Conflict");
    assert_eq!(get(&bad, "Ready").status, "False");
    assert_eq!(get(&bad, "TracesFlowing"), get(&ok, "TracesFlowing"));
    assert_eq!(bad.observed_generation, Some(2));
    assert_eq!(bad.tracing, ok.tracing);
    assert!(already_degraded(Some(&bad), &error));
    // Unchanged degradation: same status, so nothing is written again.
    assert_eq!(degraded_status(Some(&bad), Some(2), &error, &at(60)), bad);
}
