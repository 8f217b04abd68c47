//! Pure rendering for the CLI: the CRD and every object the operator would create.

use kube::{CustomResourceExt, core::TypeMeta};
use sha2::{Digest, Sha256};

use crate::{
    api::TracedPipeline,
    build::{self, BuildError},
    switch::Step,
};

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("not a valid TracedPipeline")]
    Parse(#[source] serde_saphyr::DeserializeError),
    #[error(
        "expected kind TracedPipeline in apiVersion tracing.tracedpipeline.dev/v1alpha1, found {kind} in {api_version}"
    )]
    WrongKind { api_version: String, kind: String },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("failed to write YAML")]
    Yaml(#[source] serde_saphyr::SerializeError),
}

/// Which step of the mode switch to render.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModeState {
    /// No switch in progress: everything wired to `spec.tracing.mode`.
    #[default]
    Settled,
}

/// The CRD as YAML (what `crds/` holds).
pub fn crd_yaml() -> Result<String, RenderError> {
    serde_saphyr::to_string(&TracedPipeline::crd()).map_err(RenderError::Yaml)
}

/// Parse a TracedPipeline manifest. Missing fields take their schema defaults (serde applies
/// the same defaults the apiserver would).
pub fn parse(yaml: &str) -> Result<TracedPipeline, RenderError> {
    // The derived Deserialize ignores apiVersion and kind; check them so that rendering a
    // Deployment by mistake fails instead of producing defaults.
    let types: TypeMeta = serde_saphyr::from_str(yaml).map_err(RenderError::Parse)?;
    let expected = TypeMeta::resource::<TracedPipeline>();
    if types != expected {
        return Err(RenderError::WrongKind {
            api_version: types.api_version,
            kind: types.kind,
        });
    }
    serde_saphyr::from_str(yaml).map_err(RenderError::Parse)
}

/// Every object the operator would create for `tp`, as multi-document YAML.
///
/// A manifest has no uid (the apiserver assigns it); a stable one derived from namespace and
/// name stands in so that owner references render and the output is reproducible.
pub fn render(mut tp: TracedPipeline, state: ModeState) -> Result<String, RenderError> {
    if tp.metadata.uid.is_none() {
        tp.metadata.uid = Some(synthetic_uid(&tp));
    }
    let step = match state {
        ModeState::Settled => Step::settled(tp.spec.tracing.mode),
    };
    let objects = build::desired(&tp, &step)?.to_values()?;
    serde_saphyr::to_string_multiple(&objects).map_err(RenderError::Yaml)
}

/// A UUID-shaped id from the object's namespace and name.
fn synthetic_uid(tp: &TracedPipeline) -> String {
    let key = format!(
        "{}/{}",
        tp.metadata.namespace.as_deref().unwrap_or_default(),
        tp.metadata.name.as_deref().unwrap_or_default()
    );
    let hex: String = Sha256::digest(key.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed CRD must be what the code generates: regenerate with
    /// `cargo run -p tracedpipeline-operator -- crd > crds/tracedpipelines.tracing.tracedpipeline.dev.yaml`.
    #[test]
    fn committed_crd_is_current() {
        let committed = include_str!("../../crds/tracedpipelines.tracing.tracedpipeline.dev.yaml");
        let generated = crd_yaml().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            committed == generated,
            "crds/ is stale: run `cargo run -p tracedpipeline-operator -- crd > crds/tracedpipelines.tracing.tracedpipeline.dev.yaml`"
        );
    }

    #[test]
    fn parse_rejects_other_kinds() {
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec: {}\n";
        assert!(matches!(parse(yaml), Err(RenderError::WrongKind { .. })));
        assert!(matches!(parse("not: [yaml"), Err(RenderError::Parse(_))));
    }

    #[test]
    fn parse_applies_defaults_and_render_synthesises_a_stable_uid() {
        let yaml = "apiVersion: tracing.tracedpipeline.dev/v1alpha1\nkind: TracedPipeline\nmetadata:\n  name: demo\nspec: {}\n";
        let tp = parse(yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tp.spec, crate::api::TracedPipelineSpec::default());
        let a = render(tp.clone(), ModeState::Settled).unwrap_or_else(|e| panic!("{e}"));
        let b = render(tp, ModeState::Settled).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b);
        assert!(a.contains("uid: "));
        assert!(!a.contains("otel-collector"));
    }
}
