//! Observe (Stackable's "dereference", needs a client): what the cluster says about the
//! collector and the pipeline workloads, condensed into [`switch::Observed`] and replica counts.
//! The condensing itself ([`summarize`]) is pure and unit-tested.

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api, Client,
    api::{ListParams, ResourceExt},
};

use crate::{
    api::{ServiceStatus, TracedPipeline, TracingMode},
    build::{
        COLLECTOR_NAME, COMPONENT_LABEL, ENSEMBLE_NAME, PIPELINE_LABEL, PREPROCESSING_NAME,
        WIRING_LABEL, inference_name,
    },
    error::{Error, Result},
    switch::Observed,
};

/// `app.kubernetes.io/component` of the pipeline services (see `build/pipeline.rs`).
const PIPELINE_COMPONENT: &str = "pipeline";

/// What one reconcile observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    pub switch: Observed,
    /// Ready/desired replicas per pipeline Deployment, in spec order.
    pub services: Vec<ServiceStatus>,
}

impl Observation {
    /// Every pipeline service has all its desired replicas ready.
    pub fn all_ready(&self) -> bool {
        self.services
            .iter()
            .all(|s| s.ready_replicas >= s.desired_replicas)
    }
}

/// Pipeline Deployment names and desired replicas, in spec order.
pub fn pipeline_deployments(tp: &TracedPipeline) -> Vec<(String, i32)> {
    let s = &tp.spec.services;
    let mut out = vec![
        (PREPROCESSING_NAME.to_owned(), s.preprocessing.replicas),
        (ENSEMBLE_NAME.to_owned(), s.ensemble.replicas),
    ];
    out.extend(
        s.models
            .iter()
            .map(|m| (inference_name(&m.name), m.replicas)),
    );
    out
}

/// Label selector of the pipeline pods and Deployments of one TracedPipeline.
pub fn pipeline_selector(instance: &str) -> String {
    format!("{PIPELINE_LABEL}={instance},{COMPONENT_LABEL}={PIPELINE_COMPONENT}")
}

/// Reads the collector Deployment, the pipeline Deployments and the pipeline pods.
pub async fn observe(client: &Client, namespace: &str, tp: &TracedPipeline) -> Result<Observation> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let collector = deployments
        .get_opt(COLLECTOR_NAME)
        .await
        .map_err(Error::kube("get", "Deployment", COLLECTOR_NAME))?;
    let selector = pipeline_selector(&tp.name_any());
    let lp = ListParams::default().labels(&selector);
    let pipeline =
        deployments
            .list(&lp)
            .await
            .map_err(Error::kube("list", "Deployment", selector.clone()))?;
    let pipeline_pods = pods
        .list(&lp)
        .await
        .map_err(Error::kube("list", "Pod", selector))?;
    Ok(summarize(
        collector.as_ref(),
        &pipeline.items,
        &pipeline_pods.items,
        &pipeline_deployments(tp),
    ))
}

/// A Deployment has rolled out its current template and its pods are available.
pub fn rolled_out(d: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (&d.spec, &d.status) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= want
        && status.available_replicas.unwrap_or(0) >= want
        // Old ReplicaSets' pods are gone (surge pods count in `replicas`).
        && status.replicas.unwrap_or(0) <= want
}

/// `Available=True` and fully rolled out.
pub fn available(d: &Deployment) -> bool {
    let condition = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Available"))
        .is_some_and(|c| c.status == "True");
    condition && rolled_out(d)
}

/// Pure: condense what was read into switch facts and replica counts.
pub fn summarize(
    collector: Option<&Deployment>,
    pipeline: &[Deployment],
    pods: &[Pod],
    expected: &[(String, i32)],
) -> Observation {
    // Pods in a terminal phase export nothing any more; terminating pods still flush spans.
    let live = pods.iter().filter(|p| {
        !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    });
    let mut pods_on_jaeger = false;
    let mut pods_on_collector = false;
    for pod in live {
        match pod.labels().get(WIRING_LABEL).map(String::as_str) {
            Some(w) if w == TracingMode::Collector.as_str() => pods_on_collector = true,
            Some(w) if w == TracingMode::Direct.as_str() => pods_on_jaeger = true,
            _ => {}
        }
    }
    let find = |name: &str| {
        pipeline
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(name))
    };
    let pipeline_rolled_out = expected
        .iter()
        .all(|(name, _)| find(name).is_some_and(rolled_out));
    let services = expected
        .iter()
        .map(|(name, desired)| ServiceStatus {
            name: name.clone(),
            ready_replicas: find(name)
                .and_then(|d| d.status.as_ref())
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
            desired_replicas: *desired,
        })
        .collect();
    Observation {
        switch: Observed {
            collector_deployed: collector.is_some(),
            collector_available: collector.is_some_and(available),
            pods_on_jaeger,
            pods_on_collector,
            pipeline_rolled_out,
        },
        services,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::{
            apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus},
            core::v1::PodStatus,
        },
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;

    fn deployment(
        name: &str,
        generation: i64,
        observed: i64,
        replicas: i32,
        updated: i32,
        available_: i32,
        ready: i32,
    ) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(updated.max(available_)),
                updated_replicas: Some(updated),
                available_replicas: Some(available_),
                ready_replicas: Some(ready),
                conditions: Some(vec![DeploymentCondition {
                    type_: "Available".to_owned(),
                    status: if available_ >= replicas {
                        "True"
                    } else {
                        "False"
                    }
                    .to_owned(),
                    ..DeploymentCondition::default()
                }]),
                ..DeploymentStatus::default()
            }),
        }
    }

    fn pod(wiring: &str, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                labels: Some([(WIRING_LABEL.to_owned(), wiring.to_owned())].into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.to_owned()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn expected() -> Vec<(String, i32)> {
        vec![("preprocessing".to_owned(), 1), ("ensemble".to_owned(), 2)]
    }

    #[test]
    fn nothing_exists_yet() {
        let o = summarize(None, &[], &[], &expected());
        assert_eq!(o.switch, Observed::default());
        assert_eq!(o.services.len(), 2);
        assert_eq!(o.services[1].desired_replicas, 2);
        assert!(!o.all_ready());
    }

    #[test]
    fn reads_wiring_labels_and_rollout() {
        let collector = deployment(COLLECTOR_NAME, 1, 1, 1, 1, 1, 1);
        let pipeline = [
            deployment("preprocessing", 2, 2, 1, 1, 1, 1),
            deployment("ensemble", 3, 3, 2, 2, 2, 2),
        ];
        let pods = [pod("collector", "Running"), pod("direct", "Failed")];
        let o = summarize(Some(&collector), &pipeline, &pods, &expected());
        assert_eq!(
            o.switch,
            Observed {
                collector_deployed: true,
                collector_available: true,
                pods_on_jaeger: false,
                pods_on_collector: true,
                pipeline_rolled_out: true,
            }
        );
        assert!(o.all_ready());
    }

    #[test]
    fn stale_generation_or_missing_replicas_is_not_rolled_out() {
        let stale = [
            deployment("preprocessing", 3, 2, 1, 1, 1, 1),
            deployment("ensemble", 1, 1, 2, 2, 2, 2),
        ];
        assert!(
            !summarize(None, &stale, &[], &expected())
                .switch
                .pipeline_rolled_out
        );
        let partial = [
            deployment("preprocessing", 1, 1, 1, 1, 1, 1),
            deployment("ensemble", 1, 1, 2, 1, 2, 1),
        ];
        let o = summarize(None, &partial, &[pod("direct", "Pending")], &expected());
        assert!(!o.switch.pipeline_rolled_out);
        assert!(o.switch.pods_on_jaeger);
        assert!(!o.all_ready());
        let unavailable = deployment(COLLECTOR_NAME, 1, 1, 1, 1, 0, 0);
        let o = summarize(Some(&unavailable), &[], &[], &expected());
        assert!(o.switch.collector_deployed && !o.switch.collector_available);
    }
}
