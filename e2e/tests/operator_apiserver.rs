//! The operator on a real control plane: etcd, kube-apiserver and kube-controller-manager built
//! from source (`hack/tools.sh`), the generated CRD and the chart's RBAC installed as users
//! install them, and the operator binary running with its ServiceAccount's token, so every
//! request it makes is checked against the RBAC we ship.
//!
//! There is no kubelet: `PodReadiness` marks pods ready (as envtest users do), and the real
//! Deployment and ReplicaSet controllers compute rollouts and availability from that. Each test
//! uses its own namespace; one control plane and one operator serve them all (a libtest-mimic
//! main starts them once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};
use tp_e2e::control_plane::{
    ControlPlane, Daemon, PodReadiness, apply_yaml, create_namespace, wait_until, yaml_documents,
};
use tp_e2e::process::{binary, free_port};
use tracedpipeline_operator::api::{TracedPipeline, condition};
use tracedpipeline_operator::build::{
    self, COLLECTOR_CONFIG_NAME, COLLECTOR_NAME, NAME_LABEL, PIPELINE_LABEL, WIRING_LABEL,
};
use tracedpipeline_operator::switch::Step;

/// Namespace of the operator (the chart's and `manifests/install.yaml`'s).
const OPERATOR_NAMESPACE: &str = "tracedpipeline-system";
/// How long the operator gets for anything it does after one watch event or requeue.
const CONVERGE: Duration = Duration::from_secs(60);
/// How long a "must not happen yet" is watched for: longer than a progressing requeue (5s).
const HOLD: Duration = Duration::from_secs(8);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(repo(path)).with_context(|| format!("reading {path}"))
}

/// The control plane with the CRD and the operator installed, and the operator running.
struct Cluster {
    // Drop order: the operator stops before the control plane.
    operator: Daemon,
    admin_port: u16,
    control_plane: ControlPlane,
}

impl Cluster {
    async fn start() -> anyhow::Result<Self> {
        let control_plane = ControlPlane::start().await?;
        let client = control_plane.client().await?;

        // As the README installs it: CRDs first, then the operator (here: everything of
        // install.yaml but the Deployment, whose pod the test runs as a process instead).
        apply_yaml(
            &client,
            &yaml_documents(&read(
                "crds/tracedpipelines.tracing.tracedpipeline.dev.yaml",
            )?)?,
            "default",
            false,
        )
        .await?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        wait_until("the CRD is established", CONVERGE, || {
            let crds = crds.clone();
            async move {
                let crd = crds
                    .get("tracedpipelines.tracing.tracedpipeline.dev")
                    .await?;
                Ok(crd
                    .status
                    .and_then(|s| s.conditions)
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Established" && c.status == "True"))
            }
        })
        .await?;
        let install: Vec<Value> = yaml_documents(&read("manifests/install.yaml")?)?
            .into_iter()
            .filter(|d| d["kind"] != "Deployment")
            .collect();
        let account = install
            .iter()
            .find(|d| d["kind"] == "ServiceAccount")
            .and_then(|d| d["metadata"]["name"].as_str())
            .context("install.yaml has no ServiceAccount")?
            .to_owned();
        apply_yaml(&client, &install, OPERATOR_NAMESPACE, false).await?;

        let kubeconfig = control_plane
            .service_account_kubeconfig(OPERATOR_NAMESPACE, &account)
            .await?;
        let admin_port = free_port();
        let mut operator = Daemon::spawn_with_env(
            "operator",
            &binary("tracedpipeline-operator").display().to_string(),
            &["run".to_owned()],
            &[
                ("KUBECONFIG", kubeconfig.display().to_string()),
                ("POD_NAMESPACE", OPERATOR_NAMESPACE.to_owned()),
                ("POD_NAME", "tracedpipeline-operator-e2e".to_owned()),
                ("ADMIN_PORT", admin_port.to_string()),
                // No Jaeger here (tests/tracing_backends.rs has the real one): a closed port.
                (
                    "JAEGER_URL_TEMPLATE",
                    format!("http://127.0.0.1:{}", free_port()),
                ),
                ("LOG_LEVEL", "info".to_owned()),
                ("OTEL_SDK_DISABLED", "true".to_owned()),
            ],
            control_plane.dir(),
        )?;
        let http = reqwest::Client::new();
        let readyz = format!("http://127.0.0.1:{admin_port}/readyz");
        wait_until("the operator is ready", CONVERGE, || {
            let running = operator.check_running();
            let request = http.get(&readyz).send();
            async move {
                running?;
                Ok(request.await?.status().is_success())
            }
        })
        .await?;
        Ok(Self {
            operator,
            admin_port,
            control_plane,
        })
    }

    fn logs(&self) -> String {
        format!(
            "{}\n--- operator ---\n{}",
            self.control_plane.logs(),
            self.operator.log_tail()
        )
    }
}

/// A minimal TracedPipeline named `demo`: everything else defaulted by the CRD.
fn pipeline(namespace: &str, mode: &str) -> Value {
    json!({
        "apiVersion": "tracing.tracedpipeline.dev/v1alpha1",
        "kind": "TracedPipeline",
        "metadata": {"name": "demo", "namespace": namespace},
        // NodePorts are cluster-wide: several pipelines in one cluster cannot all take the
        // default ones, so the tests expose nothing outside the cluster.
        "spec": {
            "tracing": {"mode": mode, "protocol": "grpc", "jaeger": {"ui": {"serviceType": "ClusterIP"}}},
            "services": {"preprocessing": {"exposure": {"type": "ClusterIP"}}},
        },
    })
}

/// One test's view: an admin client, its namespace and a stand-in kubelet for it.
struct Namespace {
    client: Client,
    name: String,
    readiness: PodReadiness,
}

impl Namespace {
    async fn create(cluster: &Cluster, name: &str) -> anyhow::Result<Self> {
        let client = cluster.control_plane.client().await?;
        create_namespace(&client, name).await?;
        let readiness = PodReadiness::start(client.clone(), name);
        Ok(Self {
            client,
            name: name.to_owned(),
            readiness,
        })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    async fn apply_pipeline(&self, mode: &str) -> anyhow::Result<TracedPipeline> {
        let tp = serde_json::from_value::<TracedPipeline>(pipeline(&self.name, mode))?;
        Ok(self
            .api::<TracedPipeline>()
            .patch("demo", &PatchParams::apply("e2e-user"), &Patch::Apply(&tp))
            .await?)
    }

    async fn pipeline(&self) -> anyhow::Result<TracedPipeline> {
        Ok(self.api::<TracedPipeline>().get("demo").await?)
    }

    /// Waits until `check` holds for the TracedPipeline; the error names the last status seen.
    async fn wait_for(
        &self,
        what: &str,
        check: impl Fn(&TracedPipeline) -> bool,
    ) -> anyhow::Result<TracedPipeline> {
        let check = &check;
        let result = wait_until(what, CONVERGE, || async move {
            let tp = self.pipeline().await?;
            if check(&tp) {
                Ok(true)
            } else {
                bail!("status now: {}", serde_json::to_string(&tp.status)?)
            }
        })
        .await;
        result?;
        self.pipeline().await
    }

    async fn deployment(&self, name: &str) -> anyhow::Result<Option<Deployment>> {
        Ok(self.api::<Deployment>().get_opt(name).await?)
    }

    /// The pipeline Deployments (the services, not the backends), by name.
    async fn pipeline_deployments(&self) -> anyhow::Result<BTreeMap<String, Deployment>> {
        let lp = ListParams::default().labels("app.kubernetes.io/component=pipeline");
        Ok(self
            .api::<Deployment>()
            .list(&lp)
            .await?
            .items
            .into_iter()
            .map(|d| (d.name_any(), d))
            .collect())
    }
}

fn condition_is(tp: &TracedPipeline, type_: &str, status: &str) -> bool {
    tp.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .is_some_and(|c| c.status == status)
}

fn condition_reason(tp: &TracedPipeline, type_: &str) -> Option<String> {
    tp.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| c.reason.clone())
}

fn settled_in(tp: &TracedPipeline, mode: &str) -> bool {
    let tracing = tp.status.as_ref().and_then(|s| s.tracing.as_ref());
    tp.status.as_ref().and_then(|s| s.observed_generation) == tp.metadata.generation
        && tracing.and_then(|t| t.active_mode).map(|m| m.as_str()) == Some(mode)
        && condition_is(tp, condition::READY, "True")
        && condition_is(tp, condition::PROGRESSING, "False")
}

/// The wiring label of a Deployment's pod template (`direct` or `collector`).
fn template_wiring(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(WIRING_LABEL).cloned())
}

fn container_image(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
}

// --- the tests ---------------------------------------------------------------------------------

/// Everything a user can install is accepted by the real apiserver (admission, defaulting,
/// strict field validation, CEL): `manifests/`, the samples and the chart with each values set.
async fn everything_rendered_passes_server_side_dry_run(
    cluster: Arc<Cluster>,
) -> anyhow::Result<()> {
    let client = cluster.control_plane.client().await?;
    let mut checked = Vec::new();
    for path in [
        "manifests/install.yaml",
        "manifests/samples/direct.yaml",
        "manifests/samples/collector.yaml",
    ] {
        let applied = apply_yaml(&client, &yaml_documents(&read(path)?)?, "default", true)
            .await
            .with_context(|| path.to_owned())?;
        checked.push(format!("{path}: {}", applied.len()));
    }
    let helm = tp_e2e::required_env("HELM_BIN", "path of helm (hack/tools.sh helm)");
    let chart = repo("charts/tracedpipeline-operator");
    let ci_values = chart.join("ci-values.yaml").display().to_string();
    for values in [
        vec![],
        vec!["--set", "tracing.enabled=true"],
        vec!["-f", &ci_values],
    ] {
        let output = std::process::Command::new(&helm)
            .args(["template", "tracedpipeline-operator"])
            .arg(&chart)
            .args(["--namespace", OPERATOR_NAMESPACE])
            .args(&values)
            .output()?;
        ensure!(
            output.status.success(),
            "helm template {values:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let docs = yaml_documents(&String::from_utf8(output.stdout)?)?;
        let applied = apply_yaml(&client, &docs, OPERATOR_NAMESPACE, true)
            .await
            .with_context(|| format!("helm template {values:?}"))?;
        ensure!(
            applied.iter().any(|a| a.starts_with("Deployment/")),
            "helm template {values:?} rendered no Deployment: {applied:?}"
        );
        checked.push(format!("chart {values:?}: {}", applied.len()));
    }
    // Negative control: the dry run is strict, a misspelt field is an error, not dropped.
    let mut typo = yaml_documents(&read("manifests/samples/collector.yaml")?)?;
    let spec = typo[0]["spec"].take();
    typo[0]["spec"] = json!({"tracin": spec["tracing"]});
    let err = apply_yaml(&client, &typo, "default", true)
        .await
        .err()
        .context("a misspelt field passed the dry run")?;
    ensure!(
        format!("{err:#}").contains("tracin"),
        "unexpected error for a misspelt field: {err:#}"
    );
    eprintln!("dry-run accepted: {checked:?}");
    Ok(())
}

/// The CRD's CEL rules are enforced by the apiserver, with our messages.
async fn invalid_specs_are_rejected_with_the_cel_message(
    cluster: Arc<Cluster>,
) -> anyhow::Result<()> {
    let ns = Namespace::create(&cluster, "invalid").await?;
    let cases = [
        (
            json!({"tracing": {"samplingRatio": 1.5}}),
            "samplingRatio must be between 0 and 1",
        ),
        (
            json!({"tracing": {"collector": {"memoryLimiter": {"limitMiB": 100, "spikeLimitMiB": 100}}}}),
            "memoryLimiter.spikeLimitMiB must be below limitMiB",
        ),
        (
            json!({"services": {"models": []}}),
            "at least one model is required",
        ),
        (
            json!({"services": {"models": [{"name": "ensemble", "model": "mobilenetv2"}]}}),
            "a model may not be named preprocessing or ensemble",
        ),
        (
            json!({"services": {"models": [{"name": "resnet50"}]}}),
            "model is required when name is not mobilenetv2 or efficientnetb0",
        ),
        (
            json!({
                "services": {"preprocessing": {"exposure": {"type": "NodePort", "nodePort": 30686}}},
                "tracing": {"jaeger": {"ui": {"serviceType": "NodePort", "nodePort": 30686}}},
            }),
            "must differ",
        ),
    ];
    let api = ns.api::<TracedPipeline>();
    for (spec, message) in cases {
        let mut object = pipeline(&ns.name, "direct");
        object["metadata"]["name"] = json!("invalid");
        object["spec"] = spec.clone();
        let tp: TracedPipeline = serde_json::from_value(object)?;
        match api.create(&PostParams::default(), &tp).await {
            Ok(_) => bail!("the apiserver accepted {spec}"),
            Err(kube::Error::Api(status)) => ensure!(
                status.code == 422 && status.message.contains(message),
                "{spec}: expected 422 with {message:?}, got {} {:?}",
                status.code,
                status.message
            ),
            Err(other) => bail!("{spec}: {other}"),
        }
    }
    // The same object with a valid spec is accepted: the rules do not reject everything.
    let valid: TracedPipeline = serde_json::from_value(pipeline(&ns.name, "collector"))?;
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api.create(&pp, &valid).await?;
    Ok(())
}

/// Applying a TracedPipeline creates every child the operator renders, owned by it and
/// labelled; status reports observedGeneration, the conditions and per-service replicas.
async fn children_are_owned_labelled_and_status_is_reported(
    cluster: Arc<Cluster>,
) -> anyhow::Result<()> {
    let ns = Namespace::create(&cluster, "children").await?;
    let applied = ns.apply_pipeline("direct").await?;
    let tp = ns
        .wait_for("Ready in direct mode", |tp| settled_in(tp, "direct"))
        .await?;
    let uid = tp.uid().context("no uid")?;
    let desired = build::desired(&applied, &Step::settled(tp.spec.tracing.mode))?;
    ensure!(
        desired.collector.is_none(),
        "direct mode renders a collector"
    );
    for value in desired.to_values()? {
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let name = value["metadata"]["name"].as_str().unwrap_or_default();
        let meta = match kind.as_str() {
            "Deployment" => ns.api::<Deployment>().get(name).await?.metadata,
            "Service" => ns.api::<Service>().get(name).await?.metadata,
            "ConfigMap" => ns.api::<ConfigMap>().get(name).await?.metadata,
            other => bail!("unexpected child kind {other}"),
        };
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.uid == uid)
            .with_context(|| format!("{kind} {name} is not owned by the TracedPipeline"))?;
        ensure!(
            owner.kind == "TracedPipeline" && owner.controller == Some(true),
            "{kind} {name}: owner reference {owner:?}"
        );
        let labels = meta.labels.unwrap_or_default();
        ensure!(
            labels.get(PIPELINE_LABEL).map(String::as_str) == Some("demo"),
            "{kind} {name} lacks {PIPELINE_LABEL}=demo: {labels:?}"
        );
        let managers: Vec<_> = meta
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.clone())
            .collect();
        ensure!(
            managers.contains(&"tracedpipeline-operator".to_owned()),
            "{kind} {name} not applied by the operator's field manager: {managers:?}"
        );
    }
    ensure!(
        ns.deployment(COLLECTOR_NAME).await?.is_none(),
        "a collector exists in direct mode"
    );
    let status = tp.status.context("no status")?;
    ensure!(
        status.services.len() == desired.pipeline.len()
            && status
                .services
                .iter()
                .all(|s| s.ready_replicas == s.desired_replicas && s.desired_replicas == 1),
        "services status: {:?}",
        status.services
    );
    for type_ in [
        condition::READY,
        condition::PROGRESSING,
        condition::DEGRADED,
        condition::TRACES_FLOWING,
    ] {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .with_context(|| format!("no {type_} condition"))?;
        ensure!(
            c.observed_generation == tp.metadata.generation,
            "{type_} describes generation {:?}",
            c.observed_generation
        );
    }
    ensure!(
        condition_is_in(&status.conditions, condition::DEGRADED, "False"),
        "Degraded: {:?}",
        status.conditions
    );
    // No Jaeger answers here: TracesFlowing must not claim spans arrive.
    ensure!(
        !condition_is_in(&status.conditions, condition::TRACES_FLOWING, "True"),
        "TracesFlowing is True without a Jaeger"
    );
    let tracing = status.tracing.context("no status.tracing")?;
    ensure!(
        tracing
            .endpoint
            .as_deref()
            .is_some_and(|e| e.contains("jaeger")),
        "endpoint {:?}",
        tracing.endpoint
    );
    Ok(())
}

fn condition_is_in(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
    status: &str,
) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == status)
}

/// A child deleted or edited by hand comes back as the operator renders it.
async fn deleted_or_edited_children_are_restored(cluster: Arc<Cluster>) -> anyhow::Result<()> {
    let ns = Namespace::create(&cluster, "drift").await?;
    let applied = ns.apply_pipeline("direct").await?;
    ns.wait_for("Ready", |tp| settled_in(tp, "direct")).await?;
    let desired = build::desired(&applied, &Step::settled(applied.spec.tracing.mode))?;
    let service_name = desired.pipeline[0].service.name_any();
    let config_name = desired
        .jaeger
        .config_map
        .as_ref()
        .context("no Jaeger config")?
        .name_any();
    let ensemble = desired.pipeline[1].deployment.name_any();
    let rendered_image = container_image(&desired.pipeline[1].deployment);

    let services = ns.api::<Service>();
    let before = services.get(&service_name).await?.uid();
    services
        .delete(&service_name, &DeleteParams::default())
        .await?;
    ns.api::<ConfigMap>()
        .delete(&config_name, &DeleteParams::default())
        .await?;
    // Another field manager takes over the image, as `kubectl set image` would.
    let edit = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": ensemble},
        "spec": {"template": {"spec": {"containers": [{"name": "ensemble", "image": "example.com/edited:1"}]}}},
    });
    ns.api::<Deployment>()
        .patch(
            &ensemble,
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(&edit),
        )
        .await?;

    wait_until("the deleted Service, ConfigMap and edited image are restored", CONVERGE, || {
        let (services, configs, deployments) = (services.clone(), ns.api::<ConfigMap>(), ns.api::<Deployment>());
        let (service_name, config_name, ensemble, rendered_image, before) =
            (&service_name, &config_name, &ensemble, &rendered_image, &before);
        async move {
            let service = services.get_opt(service_name).await?;
            let restored_service = service.is_some_and(|s| s.uid() != *before);
            let restored_config = configs.get_opt(config_name).await?.is_some();
            let image = deployments.get(ensemble).await.map(|d| container_image(&d))?;
            if !(restored_service && restored_config && image == *rendered_image) {
                bail!("service restored: {restored_service}, config: {restored_config}, image: {image:?}");
            }
            Ok(true)
        }
    })
    .await?;
    Ok(())
}

/// Deleting the TracedPipeline garbage-collects every child (owner references).
async fn deleting_the_pipeline_removes_its_children(cluster: Arc<Cluster>) -> anyhow::Result<()> {
    let ns = Namespace::create(&cluster, "collect").await?;
    ns.apply_pipeline("collector").await?;
    ns.wait_for("Ready in collector mode", |tp| settled_in(tp, "collector"))
        .await?;
    let selector = format!("{PIPELINE_LABEL}=demo");
    let lp = ListParams::default().labels(&selector);
    ensure!(
        !ns.api::<ConfigMap>().list(&lp).await?.items.is_empty(),
        "no labelled ConfigMaps before deletion"
    );
    ns.api::<TracedPipeline>()
        .delete("demo", &DeleteParams::default())
        .await?;
    wait_until(
        "the garbage collector removes every child",
        CONVERGE,
        || {
            let (d, s, c, lp) = (
                ns.api::<Deployment>(),
                ns.api::<Service>(),
                ns.api::<ConfigMap>(),
                &lp,
            );
            async move {
                let left: Vec<String> = d
                    .list(lp)
                    .await?
                    .items
                    .iter()
                    .map(|o| format!("Deployment/{}", o.name_any()))
                    .chain(
                        s.list(lp)
                            .await?
                            .items
                            .iter()
                            .map(|o| format!("Service/{}", o.name_any())),
                    )
                    .chain(
                        c.list(lp)
                            .await?
                            .items
                            .iter()
                            .map(|o| format!("ConfigMap/{}", o.name_any())),
                    )
                    .collect();
                if left.is_empty() {
                    Ok(true)
                } else {
                    bail!("still there: {left:?}")
                }
            }
        },
    )
    .await
}

/// direct → collector → direct, make-before-break: the services are re-wired to the collector
/// only once it is available, and the collector is removed only once no pod uses it. Readiness
/// is held back on purpose to prove the order.
async fn mode_switch_is_make_before_break(cluster: Arc<Cluster>) -> anyhow::Result<()> {
    let ns = Namespace::create(&cluster, "switch").await?;
    ns.apply_pipeline("direct").await?;
    ns.wait_for("Ready in direct mode", |tp| settled_in(tp, "direct"))
        .await?;

    // direct → collector, with the collector's pods held back.
    ns.readiness.hold(NAME_LABEL, COLLECTOR_NAME);
    ns.apply_pipeline("collector").await?;
    ns.wait_for("WaitingForCollector", |tp| {
        condition_reason(tp, condition::PROGRESSING).as_deref() == Some("WaitingForCollector")
    })
    .await?;
    ensure!(
        ns.deployment(COLLECTOR_NAME).await?.is_some()
            && ns
                .api::<ConfigMap>()
                .get_opt(COLLECTOR_CONFIG_NAME)
                .await?
                .is_some(),
        "the collector's objects are not there while waiting for it"
    );
    tokio::time::sleep(HOLD).await;
    for (name, d) in ns.pipeline_deployments().await? {
        ensure!(
            template_wiring(&d).as_deref() == Some("direct"),
            "{name} was re-wired before the collector was available"
        );
    }
    // Make-before-break keeps the pipeline serving on its old wiring: still Ready, while
    // Progressing names the step.
    let tp = ns.pipeline().await?;
    ensure!(
        condition_is(&tp, condition::READY, "True")
            && condition_reason(&tp, condition::PROGRESSING).as_deref()
                == Some("WaitingForCollector"),
        "during the switch: {:?}",
        tp.status.map(|s| s.conditions)
    );
    ns.readiness.release_all();
    let tp = ns
        .wait_for("settled in collector mode", |tp| {
            settled_in(tp, "collector")
        })
        .await?;
    for (name, d) in ns.pipeline_deployments().await? {
        ensure!(
            template_wiring(&d).as_deref() == Some("collector"),
            "{name} is not wired to the collector"
        );
    }
    let tracing = tp
        .status
        .and_then(|s| s.tracing)
        .context("no status.tracing")?;
    ensure!(
        tracing.switch_started_at.is_some() && tracing.switch_completed_at.is_some(),
        "switch times not recorded: {tracing:?}"
    );

    // collector → direct, with the re-wired (direct) pipeline pods held back: the old pods
    // keep exporting to the collector, so it must stay.
    ns.readiness.hold(WIRING_LABEL, "direct");
    ns.apply_pipeline("direct").await?;
    ns.wait_for("RollingToJaeger", |tp| {
        condition_reason(tp, condition::PROGRESSING).as_deref() == Some("RollingToJaeger")
    })
    .await?;
    tokio::time::sleep(HOLD).await;
    ensure!(
        ns.deployment(COLLECTOR_NAME).await?.is_some(),
        "the collector was deleted while pods still used it"
    );
    for (name, d) in ns.pipeline_deployments().await? {
        ensure!(
            template_wiring(&d).as_deref() == Some("direct"),
            "{name} was not rolled back to Jaeger first"
        );
    }
    ns.readiness.release_all();
    ns.wait_for("settled in direct mode", |tp| settled_in(tp, "direct"))
        .await?;
    wait_until("the collector's objects are deleted", CONVERGE, || {
        let (d, c, s) = (
            ns.api::<Deployment>(),
            ns.api::<ConfigMap>(),
            ns.api::<Service>(),
        );
        async move {
            Ok(d.get_opt(COLLECTOR_NAME).await?.is_none()
                && c.get_opt(COLLECTOR_CONFIG_NAME).await?.is_none()
                && s.list(&ListParams::default().labels(&format!("{NAME_LABEL}={COLLECTOR_NAME}")))
                    .await?
                    .items
                    .is_empty())
        }
    })
    .await?;

    // kube's Recorder folds repeats of one (reason, action, object) into an event series: the
    // second switch shows as the series count, the note staying the first one's.
    let events = ns.api::<Event>();
    wait_until("two ModeSwitched events", CONVERGE, || {
        let events = events.clone();
        async move {
            let switched: Vec<(String, i32)> = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("ModeSwitched"))
                .map(|e| {
                    let count = e.series.as_ref().map_or(1, |s| s.count);
                    (e.note.unwrap_or_default(), count)
                })
                .collect();
            let total: i32 = switched.iter().map(|(_, c)| c).sum();
            let first = switched
                .iter()
                .any(|(n, _)| n.starts_with("direct → collector"));
            if first && total >= 2 {
                Ok(true)
            } else {
                bail!("ModeSwitched events: {switched:?}")
            }
        }
    })
    .await?;
    Ok(())
}

/// The operator's metrics count what it did.
async fn metrics_count_reconciles(cluster: Arc<Cluster>) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{}/metrics", cluster.admin_port);
    let body = reqwest::get(&url).await?.text().await?;
    let runs: f64 = body
        .lines()
        .find(|l| l.starts_with("tracedpipeline_operator_reconcile_runs_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no tracedpipeline_operator_reconcile_runs_total in:\n{body}"))?;
    ensure!(
        runs >= 1.0,
        "tracedpipeline_operator_reconcile_runs_total = {runs}"
    );
    ensure!(
        body.contains("tracedpipeline_operator_reconcile_duration_seconds_bucket"),
        "no reconcile duration histogram"
    );
    Ok(())
}

// --- the harness -------------------------------------------------------------------------------

type TestFn =
    fn(Arc<Cluster>) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        [$((stringify!($name), (|c| Box::pin($name(c))) as TestFn)),*]
    };
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let tests = tests![
        everything_rendered_passes_server_side_dry_run,
        invalid_specs_are_rejected_with_the_cel_message,
        children_are_owned_labelled_and_status_is_reported,
        deleted_or_edited_children_are_restored,
        deleting_the_pipeline_removes_its_children,
        mode_switch_is_make_before_break,
        metrics_count_reconciles,
    ];
    if args.list {
        let trials = tests
            .iter()
            .map(|(name, _)| Trial::test(*name, || Ok(())))
            .collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cluster = match runtime.block_on(Cluster::start()) {
        Ok(cluster) => Arc::new(cluster),
        Err(e) => {
            // Every test needs the cluster: report them all as failed, with the reason.
            let message = format!("the control plane or the operator did not start: {e:#}");
            let trials = tests
                .iter()
                .map(|(name, _)| {
                    let message = message.clone();
                    Trial::test(*name, move || Err(Failed::from(message)))
                })
                .collect();
            return libtest_mimic::run(&args, trials).exit_code();
        }
    };
    let trials = tests
        .into_iter()
        .map(|(name, test)| {
            let cluster = cluster.clone();
            let handle = runtime.handle().clone();
            Trial::test(name, move || {
                handle
                    .block_on(test(cluster.clone()))
                    .map_err(|e| Failed::from(format!("{e:#}\n{}", cluster.logs())))
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(cluster);
    drop(runtime);
    conclusion.exit_code()
}
