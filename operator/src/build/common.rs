//! Pieces every child shares: metadata, labels, placement, security contexts, probes.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
            HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
            ResourceRequirements, SeccompProfile, SecurityContext, Service, ServicePort,
            ServiceSpec, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use sha2::{Digest, Sha256};

use super::{BuildError, owner_reference};
use crate::api::{PoolSpec, ServiceType, TracedPipeline};

/// `app.kubernetes.io/name`: what the component is (`preprocessing`, `jaeger`, ...).
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the TracedPipeline's name.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`: the role (`pipeline`, `tracing-backend`, `collector`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/managed-by`.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "tracedpipeline-operator";
/// The label the controller's watches select children by (value: the TracedPipeline's name).
pub const PIPELINE_LABEL: &str = "tracing.tracedpipeline.dev/pipeline";
/// Pod-template label on pipeline pods: the backend they export to (`direct` / `collector`).
/// The switch lists pods by it to learn whether any pod still uses the collector.
pub const WIRING_LABEL: &str = "tracing.tracedpipeline.dev/wiring";
/// Pod-template annotation: hash of the effective tracing env, so any wiring change rolls pods.
pub const WIRING_HASH_ANNOTATION: &str = "tracing.tracedpipeline.dev/wiring-hash";
/// Pod-template annotation: hash of a mounted configuration, so a config change rolls pods.
pub const CONFIG_HASH_ANNOTATION: &str = "tracing.tracedpipeline.dev/config-hash";

/// The non-root uid/gid every container runs as (distroless `nonroot`).
const NON_ROOT_ID: i64 = 65532;

/// What every builder needs from the TracedPipeline, checked once.
pub(crate) struct Context<'a> {
    pub tp: &'a TracedPipeline,
    pub instance: String,
    pub namespace: Option<String>,
    owner: OwnerReference,
}

impl<'a> Context<'a> {
    pub fn new(tp: &'a TracedPipeline) -> Result<Self, BuildError> {
        let owner = owner_reference(tp)?;
        Ok(Self {
            tp,
            instance: owner.name.clone(),
            namespace: tp.metadata.namespace.clone(),
            owner,
        })
    }

    /// Labels that identify one component's pods (Deployment selector, Service selector).
    /// Kept minimal because a Deployment's selector is immutable.
    pub fn selector_labels(&self, name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (NAME_LABEL.to_owned(), name.to_owned()),
            (INSTANCE_LABEL.to_owned(), self.instance.clone()),
        ])
    }

    /// Every label of a child object.
    pub fn labels(&self, name: &str, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels(name);
        labels.insert(COMPONENT_LABEL.to_owned(), component.to_owned());
        labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
        labels.insert(PIPELINE_LABEL.to_owned(), self.instance.clone());
        labels
    }

    /// Metadata of a child object: name, namespace, labels, owner reference.
    pub fn meta(&self, name: &str, app: &str, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: self.namespace.clone(),
            labels: Some(self.labels(app, component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// Inputs of [`deployment`] that differ between workloads.
pub(crate) struct DeploymentParts<'a> {
    pub name: &'a str,
    pub app: &'a str,
    pub component: &'a str,
    pub replicas: i32,
    pub container: Container,
    pub pool: &'a PoolSpec,
    pub extra_labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub volumes: Vec<Volume>,
}

/// A Deployment running one container under the "restricted" Pod Security Standard.
pub(crate) fn deployment(ctx: &Context<'_>, parts: DeploymentParts<'_>) -> Deployment {
    let DeploymentParts {
        name,
        app,
        component,
        replicas,
        mut container,
        pool,
        extra_labels,
        annotations,
        mut volumes,
    } = parts;
    // Read-only root filesystem: give every container a writable /tmp.
    volumes.push(Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        });
    container.security_context = Some(container_security_context());

    let mut pod_labels = ctx.labels(app, component);
    pod_labels.extend(extra_labels);
    Deployment {
        metadata: ctx.meta(name, app, component),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(ctx.selector_labels(app)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    node_selector: (!pool.node_selector.is_empty())
                        .then(|| pool.node_selector.clone()),
                    tolerations: (!pool.tolerations.is_empty()).then(|| pool.tolerations.clone()),
                    security_context: Some(pod_security_context()),
                    // No pod talks to the apiserver, and service links would inject env vars
                    // (JAEGER_PORT, ...) next to the ones we set.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NON_ROOT_ID),
        run_as_group: Some(NON_ROOT_ID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// `requests` / `limits` from (cpu, memory) pairs.
pub(crate) fn resources(request: (&str, &str), limit: (&str, &str)) -> ResourceRequirements {
    let pair = |(cpu, memory): (&str, &str)| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(request)),
        limits: Some(pair(limit)),
        ..ResourceRequirements::default()
    }
}

/// A TCP container port.
pub(crate) fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// An HTTP GET probe on a named port.
pub(crate) fn http_probe(path: &str, port: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// A Service port forwarding to the container port of the same name.
pub(crate) fn service_port(name: &str, port: i32, node_port: Option<i32>) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        node_port,
        ..ServicePort::default()
    }
}

/// A Service selecting one component's pods.
pub(crate) fn service(
    ctx: &Context<'_>,
    name: &str,
    app: &str,
    component: &str,
    type_: ServiceType,
    ports: Vec<ServicePort>,
) -> Service {
    Service {
        metadata: ctx.meta(name, app, component),
        spec: Some(ServiceSpec {
            type_: Some(
                match type_ {
                    ServiceType::ClusterIp => "ClusterIP",
                    ServiceType::NodePort => "NodePort",
                }
                .to_owned(),
            ),
            selector: Some(ctx.selector_labels(app)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Short hex SHA-256 (16 hex digits = 64 bits: plenty to detect a change, short to read).
pub(crate) fn short_hash(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A ConfigMap volume and its read-only mount.
pub(crate) fn config_volume(config_map: &str, dir: &str) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: "config".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.to_owned(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: "config".to_owned(),
        mount_path: dir.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    (volume, mount)
}
