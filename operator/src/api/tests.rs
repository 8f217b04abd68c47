//! Schema tests: the CRD carries the documented defaults, bounds and CEL rules, and the CEL rules
//! accept valid objects and reject contradictions (evaluated client-side with kube-cel, which
//! applies schema defaults first, as the apiserver does).

use kube::{CustomResourceExt, core::cel::Validator};
use serde_json::{Value, json};

use super::*;

fn schema() -> Value {
    let crd = TracedPipeline::crd();
    let version = crd.spec.versions.first().cloned();
    let schema = version
        .and_then(|v| v.schema)
        .and_then(|s| s.open_api_v3_schema);
    serde_json::to_value(schema).unwrap_or(Value::Null)
}

/// The schema node of a dotted path under `spec` (list items via `[]`).
fn node(schema: &Value, path: &str) -> Value {
    let mut cur = &schema["properties"]["spec"];
    for part in path.split('.') {
        cur = if part == "[]" {
            &cur["items"]
        } else {
            &cur["properties"][part]
        };
    }
    cur.clone()
}

fn rules(node: &Value) -> Vec<String> {
    node["x-kubernetes-validations"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["rule"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A minimal object: the apiserver (and kube-cel) fill in every default.
fn minimal() -> Value {
    json!({
        "apiVersion": "tracing.tracedpipeline.dev/v1alpha1",
        "kind": "TracedPipeline",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": {},
    })
}

fn with(path: &str, value: Value) -> Value {
    let mut obj = minimal();
    let mut cur = &mut obj["spec"];
    for part in path.split('.') {
        if !cur.is_object() {
            *cur = json!({});
        }
        cur = &mut cur[part];
    }
    *cur = value;
    obj
}

fn messages(obj: &Value) -> Vec<String> {
    match Validator::new().validate(&schema(), obj, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn assert_rejected(obj: &Value, needle: &str) {
    let msgs = messages(obj);
    assert!(
        msgs.iter().any(|m| m.contains(needle)),
        "expected a rejection containing {needle:?}, got {msgs:?}"
    );
}

#[test]
fn crd_identity() {
    let crd = TracedPipeline::crd();
    assert_eq!(crd.spec.group, GROUP);
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["tp".to_owned()]));
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, VERSION);
    assert!(v.subresources.as_ref().is_some_and(|s| s.status.is_some()));
    let columns: Vec<(String, String)> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.clone(), c.json_path.clone()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Mode", ".status.tracing.activeMode"),
            ("Ready", ".status.conditions[?(@.type==\"Ready\")].status"),
            (
                "Traces",
                ".status.conditions[?(@.type==\"TracesFlowing\")].status"
            ),
            ("Age", ".metadata.creationTimestamp"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}

#[test]
fn schema_has_defaults() {
    let s = schema();
    assert_eq!(node(&s, "tracing.mode")["default"], "direct");
    assert_eq!(node(&s, "tracing.protocol")["default"], "grpc");
    assert_eq!(node(&s, "tracing.samplingRatio")["default"], 1.0);
    assert_eq!(
        node(&s, "tracing.jaeger.image")["default"],
        "jaegertracing/jaeger:2.13.0"
    );
    assert_eq!(node(&s, "tracing.jaeger.maxTraces")["default"], 50000);
    assert_eq!(node(&s, "tracing.jaeger.ui.nodePort")["default"], 30686);
    assert_eq!(
        node(&s, "tracing.jaeger.ui.serviceType")["default"],
        "NodePort"
    );
    assert_eq!(
        node(&s, "tracing.collector.image")["default"],
        "otel/opentelemetry-collector-contrib:0.139.0"
    );
    assert_eq!(
        node(&s, "tracing.collector.memoryLimiter.limitMiB")["default"],
        400
    );
    assert_eq!(
        node(&s, "tracing.collector.memoryLimiter.spikeLimitMiB")["default"],
        100
    );
    assert_eq!(node(&s, "tracing.collector.batch.timeout")["default"], "1s");
    assert_eq!(
        node(&s, "tracing.collector.batch.sendBatchSize")["default"],
        512
    );
    assert_eq!(
        node(&s, "services.preprocessing.exposure.nodePort")["default"],
        30010
    );
    assert_eq!(
        node(&s, "services.ensemble.aggregation")["default"],
        "average_probability"
    );
    assert_eq!(node(&s, "services.ensemble.modelTimeout")["default"], "5s");
    assert_eq!(
        node(&s, "services.models")["default"],
        json!([
            {"name": "mobilenetv2", "image": "tracedpipeline/inference:0.1.0", "replicas": 1},
            {"name": "efficientnetb0", "image": "tracedpipeline/inference:0.1.0", "replicas": 1},
        ])
    );
    assert_eq!(
        node(&s, "placement.edge")["default"],
        json!({"nodeSelector": {"tracedpipeline.dev/pool": "edge"}})
    );
    assert_eq!(node(&s, "paused")["default"], false);
}

#[test]
fn schema_has_structural_bounds() {
    let s = schema();
    let ratio = node(&s, "tracing.samplingRatio");
    assert_eq!(
        (ratio["minimum"].as_f64(), ratio["maximum"].as_f64()),
        (Some(0.0), Some(1.0))
    );
    for port in [
        "services.preprocessing.exposure.nodePort",
        "tracing.jaeger.ui.nodePort",
    ] {
        let p = node(&s, port);
        assert_eq!(
            (p["minimum"].as_f64(), p["maximum"].as_f64()),
            (Some(30000.0), Some(32767.0))
        );
    }
    let models = node(&s, "services.models");
    assert_eq!(
        (models["minItems"].as_u64(), models["maxItems"].as_u64()),
        (Some(1), Some(16))
    );
    assert_eq!(models["x-kubernetes-list-type"], "map");
    assert_eq!(models["x-kubernetes-list-map-keys"], json!(["name"]));
    let name = node(&s, "services.models.[].name");
    assert_eq!(name["maxLength"], 53);
    assert_eq!(name["pattern"], "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$");
    assert_eq!(
        node(&s, "tracing.collector.replicas")["minimum"].as_f64(),
        Some(1.0)
    );
    assert_eq!(
        node(&s, "services.ensemble.aggregation")["enum"],
        json!(["average_probability", "max_confidence", "majority_vote"])
    );
    assert_eq!(
        node(&s, "tracing.mode")["enum"],
        json!(["direct", "collector"])
    );
    let conditions = &s["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}

#[test]
fn schema_has_cel_rules() {
    let s = schema();
    let expect = [
        ("tracing.samplingRatio", "self >= 0.0 && self <= 1.0"),
        (
            "tracing.jaeger.ui.nodePort",
            "self >= 30000 && self <= 32767",
        ),
        (
            "services.preprocessing.exposure.nodePort",
            "self >= 30000 && self <= 32767",
        ),
        ("tracing.collector.replicas", "self >= 1"),
        (
            "tracing.collector.memoryLimiter",
            "self.spikeLimitMiB < self.limitMiB",
        ),
        ("services.models", "size(self) >= 1"),
        (
            "services.models",
            "self.all(m, self.exists_one(n, n.name == m.name))",
        ),
        (
            "services.ensemble.modelTimeout",
            "self.matches('^([0-9]+(ns|us|ms|s|m|h))+$')",
        ),
    ];
    for (path, rule) in expect {
        assert!(
            rules(&node(&s, path)).iter().any(|r| r == rule),
            "{path} lacks rule {rule}: {:?}",
            rules(&node(&s, path))
        );
    }
    assert_eq!(
        rules(&s["properties"]["spec"]).len(),
        1,
        "spec-level nodePort rule"
    );
}

#[test]
fn minimal_and_full_objects_pass() {
    assert_eq!(messages(&minimal()), Vec::<String>::new());
    let full = serde_json::to_value(TracedPipeline::new("demo", TracedPipelineSpec::default()))
        .unwrap_or(Value::Null);
    assert_eq!(messages(&full), Vec::<String>::new());
    let collector = with(
        "tracing",
        json!({"mode": "collector", "protocol": "http", "samplingRatio": 0}),
    );
    assert_eq!(messages(&collector), Vec::<String>::new());
    let timeouts = with("services.ensemble.modelTimeout", json!("1m30s"));
    assert_eq!(messages(&timeouts), Vec::<String>::new());
}

#[test]
fn sampling_ratio_outside_0_1_is_rejected() {
    assert_rejected(&with("tracing.samplingRatio", json!(1.5)), "samplingRatio");
    assert_rejected(&with("tracing.samplingRatio", json!(-0.1)), "samplingRatio");
}

#[test]
fn node_ports_outside_range_are_rejected() {
    assert_rejected(
        &with("services.preprocessing.exposure.nodePort", json!(8080)),
        "30000-32767",
    );
    assert_rejected(
        &with("tracing.jaeger.ui.nodePort", json!(40000)),
        "30000-32767",
    );
}

#[test]
fn clashing_node_ports_are_rejected() {
    let obj = with("tracing.jaeger.ui.nodePort", json!(30010));
    assert_rejected(&obj, "must differ");
    // Not a clash when the UI is ClusterIP.
    let obj = with(
        "tracing.jaeger.ui",
        json!({"serviceType": "ClusterIP", "nodePort": 30010}),
    );
    assert_eq!(messages(&obj), Vec::<String>::new());
}

#[test]
fn collector_contradictions_are_rejected() {
    assert_rejected(&with("tracing.collector.replicas", json!(0)), "at least 1");
    assert_rejected(
        &with(
            "tracing.collector.memoryLimiter",
            json!({"limitMiB": 100, "spikeLimitMiB": 100}),
        ),
        "spikeLimitMiB must be below",
    );
    assert_rejected(
        &with("tracing.collector.batch.timeout", json!("soon")),
        "duration",
    );
}

#[test]
fn models_must_be_unique_and_present() {
    let dup = json!([{"name": "mobilenetv2"}, {"name": "mobilenetv2"}]);
    assert_rejected(&with("services.models", dup), "unique");
    assert_rejected(&with("services.models", json!([])), "at least one model");
    assert_rejected(
        &with("services.models", json!([{"name": "ensemble"}])),
        "collide",
    );
}

#[test]
fn a_model_slot_must_name_a_network_the_service_can_load() {
    assert_rejected(
        &with("services.models", json!([{"name": "resnet50"}])),
        "model is required",
    );
    // An unknown network is refused by the schema's enum (structural validation, which the
    // apiserver applies before CEL), not by a rule.
    assert_eq!(
        node(&schema(), "services.models.[].model")["enum"],
        json!(["mobilenetv2", "efficientnetb0"])
    );
    let slots = json!([
        {"name": "mobilenet-edge", "model": "mobilenetv2"},
        {"name": "mobilenet-cloud", "model": "mobilenetv2"},
        {"name": "efficientnetb0"},
    ]);
    assert_eq!(
        messages(&with("services.models", slots)),
        Vec::<String>::new()
    );
}

#[test]
fn served_model_defaults_to_the_slot_name() {
    assert_eq!(
        ModelSpec::named("efficientnetb0").served_model(),
        Some(ModelKind::Efficientnetb0)
    );
    let slot = ModelSpec {
        model: Some(ModelKind::Mobilenetv2),
        ..ModelSpec::named("edge")
    };
    assert_eq!(slot.served_model(), Some(ModelKind::Mobilenetv2));
    assert_eq!(ModelSpec::named("resnet50").served_model(), None);
}

#[test]
fn model_timeout_must_be_a_nonzero_duration() {
    for bad in ["5", "5 seconds", "1.5s", ""] {
        assert_rejected(
            &with("services.ensemble.modelTimeout", json!(bad)),
            "duration",
        );
    }
    assert_rejected(&with("services.ensemble.modelTimeout", json!("0s")), "zero");
}

#[test]
fn spec_defaults_match_schema_defaults() {
    // serde defaults (used by `render`) and schema defaults (used by the apiserver) come from the
    // same functions; check the round trip anyway.
    let tp: TracedPipeline =
        serde_json::from_value(minimal()).unwrap_or_else(|e| panic!("minimal object: {e}"));
    assert_eq!(tp.spec, TracedPipelineSpec::default());
    assert_eq!(tp.spec.services.models.len(), 2);
    assert!(!tp.spec.paused);
}
