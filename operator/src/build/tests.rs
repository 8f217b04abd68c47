//! Builder tests: names, ownership, labels, env wiring, hashes, security, placement, configs.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Container, PodSpec},
};
use kube::Resource;
use serde_json::Value;

use super::*;
use crate::{
    api::{ModelKind, ModelSpec, OtlpProtocol, TracedPipelineSpec, TracingMode},
    switch::Phase,
};

fn tp(spec: TracedPipelineSpec) -> TracedPipeline {
    let mut tp = TracedPipeline::new("demo", spec);
    tp.metadata.namespace = Some("ml".to_owned());
    tp.metadata.uid = Some("0000-uid".to_owned());
    tp
}

fn collector_spec() -> TracedPipelineSpec {
    let mut spec = TracedPipelineSpec::default();
    spec.tracing.mode = TracingMode::Collector;
    spec
}

fn build(spec: TracedPipelineSpec) -> DesiredObjects {
    let tp = tp(spec);
    desired(&tp, &Step::settled(tp.spec.tracing.mode)).unwrap_or_else(|e| panic!("build: {e}"))
}

fn workloads(d: &DesiredObjects) -> Vec<&Workload> {
    std::iter::once(&d.jaeger)
        .chain(d.collector.as_ref())
        .chain(d.pipeline.iter())
        .collect()
}

fn pod(d: &Deployment) -> &PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .unwrap_or_else(|| panic!("no pod spec"))
}

fn container(d: &Deployment) -> &Container {
    &pod(d).containers[0]
}

fn deployment<'a>(d: &'a DesiredObjects, name: &str) -> &'a Deployment {
    workloads(d)
        .into_iter()
        .map(|w| &w.deployment)
        .find(|dep| dep.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

/// Plain env vars as a map; downward-API vars as `fieldRef:<path>`.
fn env(d: &Deployment) -> BTreeMap<String, String> {
    container(d)
        .env
        .iter()
        .flatten()
        .map(|e| {
            let value = e.value.clone().unwrap_or_else(|| {
                let path = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .map(|f| f.field_path.clone())
                    .unwrap_or_default();
                format!("fieldRef:{path}")
            });
            (e.name.clone(), value)
        })
        .collect()
}

fn template_annotation(d: &Deployment, key: &str) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .cloned()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn direct_mode_objects_and_names() {
    let d = build(TracedPipelineSpec::default());
    assert!(d.collector.is_none());
    let names: Vec<(String, String)> = workloads(&d)
        .iter()
        .map(|w| {
            (
                w.deployment.metadata.name.clone().unwrap_or_default(),
                w.service.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    let expected = [
        ("jaeger", "jaeger"),
        ("preprocessing", "preprocessing-service"),
        ("ensemble", "ensemble-service"),
        ("inference-mobilenetv2", "mobilenetv2-service"),
        ("inference-efficientnetb0", "efficientnetb0-service"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(names, expected);
    assert_eq!(
        d.jaeger
            .config_map
            .as_ref()
            .and_then(|c| c.metadata.name.as_deref()),
        Some(JAEGER_CONFIG_NAME)
    );
}

#[test]
fn collector_mode_adds_collector_objects() {
    let d = build(collector_spec());
    let c = d
        .collector
        .as_ref()
        .unwrap_or_else(|| panic!("no collector"));
    assert_eq!(c.deployment.metadata.name.as_deref(), Some(COLLECTOR_NAME));
    assert_eq!(c.service.metadata.name.as_deref(), Some(COLLECTOR_NAME));
    assert_eq!(
        c.config_map
            .as_ref()
            .and_then(|m| m.metadata.name.as_deref()),
        Some(COLLECTOR_CONFIG_NAME)
    );
    let ports: Vec<i32> = c
        .service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [4317, 4318, 13133]);
}

#[test]
fn every_object_is_owned_and_labelled() -> Result<(), BuildError> {
    for d in [
        build(TracedPipelineSpec::default()),
        build(collector_spec()),
    ] {
        for obj in d.to_values()? {
            let meta = &obj["metadata"];
            let name = meta["name"].as_str().unwrap_or_default();
            assert_eq!(meta["namespace"], "ml", "{name}");
            let owners = meta["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(owners.len(), 1, "{name}");
            let o = &owners[0];
            assert_eq!(o["apiVersion"], "tracing.tracedpipeline.dev/v1alpha1");
            assert_eq!(o["kind"], "TracedPipeline");
            assert_eq!(
                (&o["name"], &o["uid"]),
                (&Value::from("demo"), &Value::from("0000-uid"))
            );
            assert_eq!(
                (&o["controller"], &o["blockOwnerDeletion"]),
                (&Value::Bool(true), &Value::Bool(true))
            );
            let labels = &meta["labels"];
            assert_eq!(labels[INSTANCE_LABEL], "demo", "{name}");
            assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY, "{name}");
            assert_eq!(labels[PIPELINE_LABEL], "demo", "{name}");
            assert!(labels[NAME_LABEL].is_string(), "{name}");
            assert!(labels[COMPONENT_LABEL].is_string(), "{name}");
        }
    }
    Ok(())
}

#[test]
fn missing_name_or_uid_is_a_typed_error() {
    let mut no_uid = tp(TracedPipelineSpec::default());
    no_uid.metadata.uid = None;
    let err = desired(&no_uid, &Step::settled(TracingMode::Direct));
    assert!(
        matches!(err, Err(BuildError::MissingMetadata("uid"))),
        "{err:?}"
    );
    let mut no_name = tp(TracedPipelineSpec::default());
    no_name.metadata.name = None;
    let err = desired(&no_name, &Step::settled(TracingMode::Direct));
    assert!(
        matches!(err, Err(BuildError::MissingMetadata("name"))),
        "{err:?}"
    );
}

#[test]
fn preprocessing_env_direct_grpc() {
    let d = build(TracedPipelineSpec::default());
    assert_eq!(
        env(deployment(&d, "preprocessing")),
        map(&[
            (
                "ENSEMBLE_URL",
                "http://ensemble-service:5011/ensemble_service"
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1"),
            ("OTEL_SERVICE_NAME", "preprocessing"),
            ("LOG_FORMAT", "json"),
            ("POD_NAME", "fieldRef:metadata.name"),
            ("POD_NAMESPACE", "fieldRef:metadata.namespace"),
            ("NODE_NAME", "fieldRef:spec.nodeName"),
        ])
    );
}

#[test]
fn ensemble_and_inference_env() {
    let mut spec = TracedPipelineSpec::default();
    spec.services.ensemble.aggregation = crate::api::Aggregation::MajorityVote;
    spec.services.ensemble.model_timeout = "3s".to_owned();
    spec.services.models[1].cpu_threads = Some(2);
    let d = build(spec);
    let e = env(deployment(&d, "ensemble"));
    assert_eq!(
        e["ENSEMBLE_MODELS"],
        "mobilenetv2=http://mobilenetv2-service:5012/inference,efficientnetb0=http://efficientnetb0-service:5012/inference"
    );
    assert_eq!(e["AGGREGATION"], "majority_vote");
    assert_eq!(e["MODEL_TIMEOUT"], "3s");
    assert_eq!(e["OTEL_SERVICE_NAME"], "ensemble");

    let m = env(deployment(&d, "inference-mobilenetv2"));
    assert_eq!(m["MODEL"], "mobilenetv2");
    assert_eq!(m["MODELS_DIR"], "/models");
    assert_eq!(m["ORT_DYLIB_PATH"], "/usr/lib/libonnxruntime.so");
    assert_eq!(m["INTRA_OP_THREADS"], "0");
    assert_eq!(m["OTEL_SERVICE_NAME"], "inference-mobilenetv2");
    let e = env(deployment(&d, "inference-efficientnetb0"));
    assert_eq!(e["INTRA_OP_THREADS"], "2");
}

#[test]
fn collector_http_wiring() {
    let mut spec = collector_spec();
    spec.tracing.protocol = OtlpProtocol::Http;
    spec.tracing.sampling_ratio = 0.25;
    let d = build(spec);
    for w in &d.pipeline {
        let e = env(&w.deployment);
        assert_eq!(
            e["OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://otel-collector:4318"
        );
        assert_eq!(e["OTEL_EXPORTER_OTLP_PROTOCOL"], "http/protobuf");
        assert_eq!(e["OTEL_TRACES_SAMPLER_ARG"], "0.25");
    }
    let mut spec = TracedPipelineSpec::default();
    spec.tracing.protocol = OtlpProtocol::Http;
    let d = build(spec);
    assert_eq!(
        env(deployment(&d, "ensemble"))["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://jaeger:4318"
    );
}

#[test]
fn mid_switch_step_keeps_pods_on_jaeger_with_collector_present() {
    let tp = tp(collector_spec());
    let step = Step {
        wiring: TracingMode::Direct,
        collector: CollectorPresence::Present,
        phase: Phase::WaitingForCollector,
        active_mode: TracingMode::Direct,
        completed: None,
    };
    let d = desired(&tp, &step).unwrap_or_else(|e| panic!("{e}"));
    assert!(d.collector.is_some());
    for w in &d.pipeline {
        assert_eq!(
            env(&w.deployment)["OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://jaeger:4317"
        );
        let labels = w
            .deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone());
        assert_eq!(labels.unwrap_or_default()[WIRING_LABEL], "direct");
    }
}

#[test]
fn wiring_hash_rolls_pods_on_mode_or_sampler_change_only() {
    let direct = build(TracedPipelineSpec::default());
    let collector = build(collector_spec());
    let hash = |d: &DesiredObjects, name: &str| {
        template_annotation(deployment(d, name), WIRING_HASH_ANNOTATION)
            .unwrap_or_else(|| panic!("no wiring hash on {name}"))
    };
    let h = hash(&direct, "preprocessing");
    assert_eq!(h.len(), 16);
    assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
    // Same wiring everywhere in one mode.
    for name in [
        "ensemble",
        "inference-mobilenetv2",
        "inference-efficientnetb0",
    ] {
        assert_eq!(hash(&direct, name), h);
    }
    assert_ne!(hash(&collector, "preprocessing"), h);
    // Sampling ratio and protocol are part of the wiring; replicas are not.
    let mut spec = TracedPipelineSpec::default();
    spec.tracing.sampling_ratio = 0.5;
    assert_ne!(hash(&build(spec), "preprocessing"), h);
    let mut spec = TracedPipelineSpec::default();
    spec.tracing.protocol = OtlpProtocol::Http;
    assert_ne!(hash(&build(spec), "preprocessing"), h);
    let mut spec = TracedPipelineSpec::default();
    spec.services.preprocessing.replicas = 3;
    assert_eq!(hash(&build(spec), "preprocessing"), h);
    // Deterministic.
    assert_eq!(
        hash(&build(TracedPipelineSpec::default()), "preprocessing"),
        h
    );
}

#[test]
fn collector_config_hash_follows_its_config() {
    let hash = |spec: TracedPipelineSpec| {
        let d = build(spec);
        let c = d.collector.unwrap_or_else(|| panic!("no collector"));
        template_annotation(&c.deployment, CONFIG_HASH_ANNOTATION).unwrap_or_default()
    };
    let base = hash(collector_spec());
    assert_eq!(base.len(), 16);
    let mut spec = collector_spec();
    spec.tracing.collector.batch.send_batch_size = 1024;
    assert_ne!(hash(spec), base);
    let mut spec = collector_spec();
    spec.tracing.collector.replicas = 2;
    assert_eq!(hash(spec), base);
}

fn config_of(w: &Workload) -> Value {
    let text = w
        .config_map
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get("config.yaml"))
        .cloned()
        .unwrap_or_default();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("config does not parse: {e}"))
}

#[test]
fn collector_config_pipeline() {
    let mut spec = collector_spec();
    spec.tracing.collector.memory_limiter.limit_mib = 300;
    spec.tracing.collector.batch.timeout = "2s".to_owned();
    let d = build(spec);
    let cfg = config_of(
        d.collector
            .as_ref()
            .unwrap_or_else(|| panic!("no collector")),
    );
    let traces = &cfg["service"]["pipelines"]["traces"];
    assert_eq!(traces["receivers"], serde_json::json!(["otlp"]));
    assert_eq!(
        traces["processors"],
        serde_json::json!(["memory_limiter", "resource", "batch"])
    );
    assert_eq!(traces["exporters"], serde_json::json!(["otlp/jaeger"]));
    assert_eq!(cfg["processors"]["memory_limiter"]["limit_mib"], 300);
    assert_eq!(cfg["processors"]["memory_limiter"]["spike_limit_mib"], 100);
    assert_eq!(cfg["processors"]["batch"]["timeout"], "2s");
    assert_eq!(cfg["processors"]["batch"]["send_batch_size"], 512);
    let attr = &cfg["processors"]["resource"]["attributes"][0];
    assert_eq!(attr["key"], COLLECTOR_PATH_ATTRIBUTE);
    assert_eq!(attr["value"], COLLECTOR_NAME);
    assert_eq!(attr["action"], "upsert");
    let exporter = &cfg["exporters"]["otlp/jaeger"];
    assert_eq!(exporter["endpoint"], "jaeger:4317");
    assert_eq!(exporter["tls"]["insecure"], true);
    assert_eq!(
        cfg["extensions"]["health_check"]["endpoint"],
        "0.0.0.0:13133"
    );
    assert_eq!(
        cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        "0.0.0.0:4317"
    );
    assert_eq!(
        cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        "0.0.0.0:4318"
    );
}

#[test]
fn jaeger_config_and_service() {
    let mut spec = TracedPipelineSpec::default();
    spec.tracing.jaeger.max_traces = 1234;
    let d = build(spec);
    let cfg = config_of(&d.jaeger);
    assert_eq!(
        cfg["extensions"]["jaeger_storage"]["backends"]["memstore"]["memory"]["max_traces"],
        1234
    );
    assert_eq!(
        cfg["extensions"]["jaeger_query"]["storage"]["traces"],
        "memstore"
    );
    assert_eq!(
        cfg["extensions"]["jaeger_query"]["http"]["endpoint"],
        "0.0.0.0:16686"
    );
    assert_eq!(
        cfg["extensions"]["healthcheckv2"]["http"]["endpoint"],
        "0.0.0.0:13133"
    );
    assert_eq!(
        cfg["exporters"]["jaeger_storage_exporter"]["trace_storage"],
        "memstore"
    );
    assert_eq!(
        container(&d.jaeger.deployment).args,
        Some(vec!["--config=/etc/jaeger/config.yaml".to_owned()])
    );
    let svc = d.jaeger.service.spec.clone().unwrap_or_default();
    assert_eq!(svc.type_.as_deref(), Some("NodePort"));
    let ports: Vec<(String, i32, Option<i32>)> = svc
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port, p.node_port))
        .collect();
    assert_eq!(
        ports,
        [
            ("otlp-grpc", 4317, None),
            ("otlp-http", 4318, None),
            ("ui", 16686, Some(30686)),
            ("health", 13133, None)
        ]
        .map(|(n, p, np)| (n.to_owned(), p, np))
    );
}

#[test]
fn pipeline_services_ports_and_exposure() {
    let d = build(TracedPipelineSpec::default());
    let svc = |i: usize| d.pipeline[i].service.spec.clone().unwrap_or_default();
    let pre = svc(0);
    assert_eq!(pre.type_.as_deref(), Some("NodePort"));
    let port = &pre.ports.unwrap_or_default()[0];
    assert_eq!(
        (port.port, port.node_port, port.name.as_deref()),
        (5010, Some(30010), Some("http"))
    );
    assert_eq!(svc(1).type_.as_deref(), Some("ClusterIP"));
    assert_eq!(svc(1).ports.unwrap_or_default()[0].port, 5011);
    assert_eq!(svc(2).ports.unwrap_or_default()[0].port, 5012);
    // ClusterIP exposure drops the node port.
    let mut spec = TracedPipelineSpec::default();
    spec.services.preprocessing.exposure.type_ = crate::api::ServiceType::ClusterIp;
    let d = build(spec);
    let pre = d.pipeline[0].service.spec.clone().unwrap_or_default();
    assert_eq!(pre.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(pre.ports.unwrap_or_default()[0].node_port, None);
}

#[test]
fn probes_ports_and_resources() {
    let mut spec = TracedPipelineSpec::default();
    spec.services.models.push(ModelSpec {
        model: Some(ModelKind::Mobilenetv2),
        resources: Some(common::resources(("1", "1Gi"), ("4", "2Gi"))),
        ..ModelSpec::named("mobilenet-big")
    });
    let d = build(spec);
    let quantities = |name: &str| {
        let r = container(deployment(&d, name))
            .resources
            .clone()
            .unwrap_or_default();
        let get = |m: &Option<
            BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >,
                   k: &str| {
            m.as_ref()
                .and_then(|m| m.get(k))
                .map(|q| q.0.clone())
                .unwrap_or_default()
        };
        [
            get(&r.requests, "cpu"),
            get(&r.requests, "memory"),
            get(&r.limits, "cpu"),
            get(&r.limits, "memory"),
        ]
    };
    assert_eq!(quantities("preprocessing"), ["250m", "128Mi", "1", "256Mi"]);
    assert_eq!(quantities("ensemble"), ["100m", "64Mi", "500m", "128Mi"]);
    assert_eq!(
        quantities("inference-mobilenetv2"),
        ["500m", "256Mi", "2", "512Mi"]
    );
    assert_eq!(
        quantities("inference-mobilenet-big"),
        ["1", "1Gi", "4", "2Gi"]
    );

    for w in &d.pipeline {
        let c = container(&w.deployment);
        let port = &c.ports.clone().unwrap_or_default()[0];
        assert_eq!(port.name.as_deref(), Some("http"));
        let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .map(|g| (g.path.clone().unwrap_or_default(), g.port.clone()))
        };
        let http =
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".to_owned());
        assert_eq!(
            path(&c.readiness_probe),
            Some(("/readyz".to_owned(), http.clone()))
        );
        assert_eq!(path(&c.liveness_probe), Some(("/healthz".to_owned(), http)));
    }
}

#[test]
fn every_pod_is_restricted() {
    for w in workloads(&build(collector_spec())) {
        let name = w.deployment.metadata.name.clone().unwrap_or_default();
        let p = pod(&w.deployment);
        let psc = p.security_context.clone().unwrap_or_default();
        assert_eq!(psc.run_as_non_root, Some(true), "{name}");
        assert_eq!(psc.run_as_user, Some(65532), "{name}");
        assert_eq!(
            psc.seccomp_profile.map(|s| s.type_),
            Some("RuntimeDefault".to_owned()),
            "{name}"
        );
        for c in &p.containers {
            let sc = c.security_context.clone().unwrap_or_default();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
            assert_eq!(
                sc.capabilities.and_then(|c| c.drop),
                Some(vec!["ALL".to_owned()]),
                "{name}"
            );
        }
        assert_eq!(p.automount_service_account_token, Some(false), "{name}");
    }
}

#[test]
fn placement_edge_for_pipeline_cloud_for_backends() {
    let mut spec = collector_spec();
    spec.placement.cloud.tolerations = vec![k8s_openapi::api::core::v1::Toleration {
        key: Some("dedicated".to_owned()),
        operator: Some("Exists".to_owned()),
        ..Default::default()
    }];
    let d = build(spec);
    let selector = |dep: &Deployment| pod(dep).node_selector.clone().unwrap_or_default();
    for w in &d.pipeline {
        assert_eq!(
            selector(&w.deployment),
            map(&[("tracedpipeline.dev/pool", "edge")])
        );
        assert_eq!(pod(&w.deployment).tolerations, None);
    }
    for name in ["jaeger", "otel-collector"] {
        let dep = deployment(&d, name);
        assert_eq!(selector(dep), map(&[("tracedpipeline.dev/pool", "cloud")]));
        assert_eq!(pod(dep).tolerations.as_ref().map(Vec::len), Some(1));
    }
}

#[test]
fn selectors_match_pod_labels() {
    for w in workloads(&build(collector_spec())) {
        let spec = w.deployment.spec.clone().unwrap_or_default();
        let pod_labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default();
        let selector = spec.selector.match_labels.unwrap_or_default();
        let svc_selector = w
            .service
            .spec
            .clone()
            .and_then(|s| s.selector)
            .unwrap_or_default();
        assert_eq!(selector, svc_selector);
        for (k, v) in &selector {
            assert_eq!(pod_labels.get(k), Some(v));
        }
        assert_eq!(
            w.deployment
                .meta()
                .labels
                .as_ref()
                .map(|l| l[PIPELINE_LABEL].clone()),
            Some("demo".to_owned())
        );
    }
}

#[test]
fn a_slot_passes_the_network_it_serves_as_model() {
    let mut spec = TracedPipelineSpec::default();
    spec.services.models = vec![ModelSpec {
        model: Some(ModelKind::Efficientnetb0),
        ..ModelSpec::named("edge-a")
    }];
    let d = build(spec);
    let m = env(deployment(&d, "inference-edge-a"));
    assert_eq!(m["MODEL"], "efficientnetb0");
    assert_eq!(m["OTEL_SERVICE_NAME"], "inference-edge-a");
}

#[test]
fn a_slot_without_a_loadable_network_is_a_build_error() {
    let mut spec = TracedPipelineSpec::default();
    spec.services.models = vec![ModelSpec::named("resnet50")];
    let tp = tp(spec);
    let err = desired(&tp, &Step::settled(TracingMode::Direct)).err();
    assert!(
        matches!(&err, Some(BuildError::UnknownModel(name)) if name == "resnet50"),
        "{err:?}"
    );
}
