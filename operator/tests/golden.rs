//! Golden tests: `render` of each sample in manifests/samples/ equals tests/golden/<name>.yaml.
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p tracedpipeline-operator --test golden`.

use std::path::{Path, PathBuf};

use kube::{CustomResourceExt, core::cel::Validator};
use tracedpipeline_operator::{
    api::TracedPipeline,
    render::{self, ModeState},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check(sample: &str) {
    let sample_path = root()
        .join("../manifests/samples")
        .join(format!("{sample}.yaml"));
    let golden_path = root().join("tests/golden").join(format!("{sample}.yaml"));
    let tp = render::parse(&read(&sample_path)).unwrap_or_else(|e| panic!("{sample}: {e}"));
    let rendered =
        render::render(tp, ModeState::Settled).unwrap_or_else(|e| panic!("{sample}: {e}"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        // Write then rename: the shape test reads these files concurrently and must never see
        // a half-written one.
        let partial = golden_path.with_extension("yaml.partial");
        std::fs::write(&partial, &rendered)
            .and_then(|()| std::fs::rename(&partial, &golden_path))
            .unwrap_or_else(|e| panic!("{}: {e}", golden_path.display()));
        return;
    }
    let golden = read(&golden_path);
    if golden != rendered {
        let line = golden
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "the end".to_owned(), |n| format!("line {}", n + 1));
        panic!(
            "{} differs from the rendered {sample} sample at {line}; rerun with UPDATE_GOLDEN=1 if the change is intended",
            golden_path.display()
        );
    }
}

#[test]
fn direct_sample_matches_golden() {
    check("direct");
}

#[test]
fn collector_sample_matches_golden() {
    check("collector");
}

/// The samples pass the CRD's CEL rules (so `kubectl apply` accepts them).
#[test]
fn samples_pass_the_crd_rules() {
    let crd = TracedPipeline::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .map(serde_json::to_value)
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("CRD has no schema"));
    for sample in ["direct", "collector"] {
        let path = root()
            .join("../manifests/samples")
            .join(format!("{sample}.yaml"));
        let obj: serde_json::Value =
            serde_saphyr::from_str(&read(&path)).unwrap_or_else(|e| panic!("{sample}: {e}"));
        if let Err(errors) = Validator::new().validate(&schema, &obj, None) {
            panic!("{sample}: {errors:?}");
        }
    }
}

/// Rendered objects are what the golden files pin; check a few facts directly so that a bad
/// regeneration cannot silently bless a broken output.
#[test]
fn golden_files_have_the_expected_shape() {
    let direct = read(&root().join("tests/golden/direct.yaml"));
    let collector = read(&root().join("tests/golden/collector.yaml"));
    let kinds = |s: &str| s.lines().filter(|l| l.starts_with("kind: ")).count();
    // jaeger (3) + 4 pipeline workloads (2 each).
    assert_eq!(kinds(&direct), 11);
    // + collector (3).
    assert_eq!(kinds(&collector), 14);
    assert!(!direct.contains("otel-collector"));
    assert!(direct.contains("value: http://jaeger:4317"));
    assert!(collector.contains("value: http://otel-collector:4318"));
    assert!(collector.contains("value: http/protobuf"));
}
