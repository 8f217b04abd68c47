//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and
//! kube-controller-manager (Deployment, ReplicaSet, garbage collector, namespace and service
//! account controllers), built from their Go modules by `hack/tools.sh`. No kubelet: like
//! envtest users, tests make pods "ready" themselves ([`PodReadiness`]), so Deployment status,
//! rollouts and ReplicaSet clean-up are computed by the real controllers.
//!
//! Authentication is by client certificate (a throw-away CA made here); the admin identity is
//! in `system:masters`, and authorization is RBAC, so identities other than the admin (the
//! operator's ServiceAccount) get exactly what their Roles grant.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::ResourceExt as _;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::Scope;
use kube::{Client, Config};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::json;
use tokio::sync::watch;

use crate::process::free_port;
use crate::required_env;

/// A long-running process (a control-plane daemon, the operator); killed when dropped. Its
/// output goes to `<dir>/<name>.log`.
#[derive(Debug)]
pub struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn spawn(
        name: &'static str,
        binary: &str,
        args: &[String],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn_with_env(name, binary, args, &[], dir)
    }

    pub fn spawn_with_env(
        name: &'static str,
        binary: &str,
        args: &[String],
        env: &[(&str, String)],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log)?;
        let child = Command::new(binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name} ({binary})"))?;
        Ok(Self { name, child, log })
    }

    /// Fails with the end of the log when the daemon has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The running control plane. Dropping it stops every daemon and deletes its state.
#[derive(Debug)]
pub struct ControlPlane {
    // Field order is drop order: the controller manager and the apiserver stop before etcd.
    controller_manager: Daemon,
    apiserver: Daemon,
    etcd: Daemon,
    /// Admin kubeconfig (`system:masters`).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    ca_file: PathBuf,
    dir: tempfile::TempDir,
}

/// Paths of the certificates and keys made for one control plane.
struct Pki {
    ca: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    service_account_key: PathBuf,
    service_account_public_key: PathBuf,
}

fn write_pki(dir: &Path) -> anyhow::Result<Pki> {
    let write = |name: &str, pem: String| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, pem)?;
        Ok(path)
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tracedpipeline-e2e-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &ca)?;

    // The client certificate's organisation is the Kubernetes group.
    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin
        .distinguished_name
        .push(DnType::CommonName, "e2e-admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &ca)?;

    // The apiserver verifies tokens with the public half, the signers hold the private one.
    let service_account = KeyPair::generate()?;
    Ok(Pki {
        ca: write("ca.crt", ca.pem())?,
        serving_cert: write("apiserver.crt", serving_cert.pem())?,
        serving_key: write("apiserver.key", serving_key.serialize_pem())?,
        admin_cert: write("admin.crt", admin_cert.pem())?,
        admin_key: write("admin.key", admin_key.serialize_pem())?,
        service_account_key: write("service-account.key", service_account.serialize_pem())?,
        service_account_public_key: write("service-account.pub", service_account.public_key_pem())?,
    })
}

/// A kubeconfig for `server` with the given user entry (YAML mapping under `user:`).
fn kubeconfig_yaml(server: &str, ca: &Path, user: &serde_json::Value) -> String {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "e2e", "user": user}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
        "current-context": "e2e",
    });
    // JSON is YAML; kubeconfig readers accept either.
    config.to_string()
}

/// Polls `check` every 200ms until it says `true`; fails after `timeout` with the last error.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            let detail = last_error.map(|e| format!(": {e:#}")).unwrap_or_default();
            bail!("{what} did not happen within {timeout:?}{detail}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl ControlPlane {
    /// Starts etcd, the apiserver and the controller manager (`ETCD_BIN`, `KUBE_APISERVER_BIN`,
    /// `KUBE_CONTROLLER_MANAGER_BIN`) and waits until the apiserver is ready and the service
    /// account controller has created `default/default` (so pods can be admitted).
    pub async fn start() -> anyhow::Result<Self> {
        let hint = |tool: &str| format!("path of {tool} (hack/tools.sh {tool})");
        let etcd_bin = required_env("ETCD_BIN", &hint("etcd"));
        let apiserver_bin = required_env("KUBE_APISERVER_BIN", &hint("kube-apiserver"));
        let kcm_bin = required_env(
            "KUBE_CONTROLLER_MANAGER_BIN",
            &hint("kube-controller-manager"),
        );
        let dir = tempfile::Builder::new()
            .prefix("tracedpipeline-control-plane.")
            .tempdir()?;
        let pki = write_pki(dir.path())?;
        let started = Instant::now();

        let (client_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Daemon::spawn(
            "etcd",
            &etcd_bin,
            &[
                "--name=e2e".to_owned(),
                format!("--data-dir={}", dir.path().join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                // Test state is thrown away: no need to wait for the disk.
                "--unsafe-no-fsync".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            dir.path(),
        )?;
        let http = reqwest::Client::new();
        wait_until("etcd healthy", Duration::from_secs(30), || {
            let ok = etcd.check_running();
            let request = http.get(format!("{etcd_url}/health")).send();
            async move {
                ok?;
                Ok(request.await?.status().is_success())
            }
        })
        .await?;

        let secure_port = free_port();
        let server = format!("https://127.0.0.1:{secure_port}");
        let path = |p: &Path| p.display().to_string();
        let mut apiserver = Daemon::spawn(
            "kube-apiserver",
            &apiserver_bin,
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".to_owned(),
                "--advertise-address=127.0.0.1".to_owned(),
                format!("--secure-port={secure_port}"),
                format!(
                    "--cert-dir={}",
                    dir.path().join("apiserver-certs").display()
                ),
                format!("--tls-cert-file={}", path(&pki.serving_cert)),
                format!("--tls-private-key-file={}", path(&pki.serving_key)),
                format!("--client-ca-file={}", path(&pki.ca)),
                "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
                format!(
                    "--service-account-key-file={}",
                    path(&pki.service_account_public_key)
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    path(&pki.service_account_key)
                ),
                "--service-cluster-ip-range=10.96.0.0/16".to_owned(),
                "--authorization-mode=RBAC".to_owned(),
                "--allow-privileged=false".to_owned(),
            ],
            dir.path(),
        )?;

        let kubeconfig = dir.path().join("admin.kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(
                &server,
                &pki.ca,
                &json!({"client-certificate": pki.admin_cert, "client-key": pki.admin_key}),
            ),
        )?;
        let client = client_from(&kubeconfig).await?;
        wait_until("kube-apiserver ready", Duration::from_secs(90), || {
            let ok = apiserver.check_running();
            let client = client.clone();
            async move {
                ok?;
                let request = http::Request::get("/readyz").body(Vec::new())?;
                Ok(client.request_text(request).await? == "ok")
            }
        })
        .await?;

        let mut controller_manager = Daemon::spawn(
            "kube-controller-manager",
            &kcm_bin,
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                // What the operator's children need; no node controllers (there are no nodes).
                "--controllers=deployment,replicaset,garbagecollector,namespace,serviceaccount,serviceaccount-token".to_owned(),
                format!("--service-account-private-key-file={}", path(&pki.service_account_key)),
                format!("--root-ca-file={}", path(&pki.ca)),
                "--leader-elect=false".to_owned(),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={}", free_port()),
                format!("--cert-dir={}", dir.path().join("kcm-certs").display()),
                // Garbage collection and rollouts promptly, as tests wait for them.
                "--concurrent-gc-syncs=5".to_owned(),
            ],
            dir.path(),
        )?;
        let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        wait_until(
            "the service account controller creating default/default",
            Duration::from_secs(60),
            || {
                let ok = controller_manager.check_running();
                let service_accounts = service_accounts.clone();
                async move {
                    ok?;
                    Ok(service_accounts.get_opt("default").await?.is_some())
                }
            },
        )
        .await?;
        eprintln!(
            "control plane up in {:.1}s at {server} (state in {})",
            started.elapsed().as_secs_f64(),
            dir.path().display()
        );
        Ok(Self {
            controller_manager,
            apiserver,
            etcd,
            kubeconfig,
            server,
            ca_file: pki.ca,
            dir,
        })
    }

    /// A client with the admin identity.
    pub async fn client(&self) -> anyhow::Result<Client> {
        client_from(&self.kubeconfig).await
    }

    /// Writes a kubeconfig for ServiceAccount `namespace/name` with a fresh bound token (the
    /// TokenRequest API, as a pod's projected token), for running something with exactly that
    /// account's RBAC.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<PathBuf> {
        let client = self.client().await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec!["https://kubernetes.default.svc".to_owned()],
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let token: TokenRequest = accounts
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for {namespace}/{name}"))?;
        let token = token
            .status
            .map(|s| s.token)
            .context("TokenRequest answered without a token")?;
        let path = self
            .dir
            .path()
            .join(format!("{namespace}-{name}.kubeconfig"));
        std::fs::write(
            &path,
            kubeconfig_yaml(&self.server, &self.ca_file, &json!({ "token": token })),
        )?;
        Ok(path)
    }

    /// Where test processes may keep files (deleted with the control plane).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of each daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        [&self.etcd, &self.apiserver, &self.controller_manager]
            .iter()
            .map(|d| format!("--- {} ---\n{}", d.name, d.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A client for `kubeconfig`.
pub async fn client_from(kubeconfig: &Path) -> anyhow::Result<Client> {
    let config = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Creates a namespace (labelled for the restricted Pod Security Standard, as users should).
pub async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
        },
    }))?;
    namespaces
        .patch(name, &PatchParams::apply("e2e"), &Patch::Apply(&ns))
        .await?;
    // Pods are only admitted once the namespace's default ServiceAccount exists.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    wait_until(
        "the namespace's default ServiceAccount",
        Duration::from_secs(30),
        || {
            let accounts = accounts.clone();
            async move { Ok(accounts.get_opt("default").await?.is_some()) }
        },
    )
    .await
}

/// The documents of a multi-document YAML stream (empty ones dropped).
pub fn yaml_documents(yaml: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Server-side applies `docs` (Kubernetes objects), as `kubectl apply
/// --server-side` does, or with `dry_run` only has the apiserver admit, default and validate
/// them (schema, CEL rules, admission) without storing anything. Field validation is strict:
/// an unknown field is an error. Namespaced objects without a namespace go to `namespace`.
/// Returns `Kind/name` of each object.
pub async fn apply_yaml(
    client: &Client,
    docs: &[serde_json::Value],
    namespace: &str,
    dry_run: bool,
) -> anyhow::Result<Vec<String>> {
    let mut applied = Vec::new();
    for doc in docs {
        let object: DynamicObject = serde_json::from_value(doc.clone())?;
        let types = object
            .types
            .clone()
            .context("an object without apiVersion and kind")?;
        let gvk = GroupVersionKind::try_from(&types)?;
        let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .with_context(|| format!("discovering {}/{}", types.api_version, types.kind))?;
        let name = object.name_any();
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                object.namespace().as_deref().unwrap_or(namespace),
                &resource,
            ),
        };
        let mut params = PatchParams::apply("e2e").force().validation_strict();
        params.dry_run = dry_run;
        api.patch(&name, &params, &Patch::Apply(&object))
            .await
            .with_context(|| {
                let how = if dry_run { "dry-run apply" } else { "apply" };
                format!("{how} of {} {name}", gvk.kind)
            })?;
        applied.push(format!("{}/{name}", gvk.kind));
    }
    Ok(applied)
}

/// Which pods [`PodReadiness`] leaves pending: those with any of these `label=value` pairs.
pub type Held = Vec<(String, String)>;

/// Stands in for the kubelet: every pod in a namespace becomes Running and Ready a moment after
/// it is created, unless it matches a held label (so a test decides when, say, the collector
/// or the re-wired pipeline pods become ready). Pods are never bound to a node, so the
/// apiserver deletes them at once when their ReplicaSet scales down.
#[derive(Debug)]
pub struct PodReadiness {
    held: watch::Sender<Held>,
    task: tokio::task::JoinHandle<()>,
}

impl PodReadiness {
    pub fn start(client: Client, namespace: &str) -> Self {
        let (held, mut rx) = watch::channel(Held::new());
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let task = tokio::spawn(async move {
            loop {
                let held = rx.borrow_and_update().clone();
                if let Err(e) = make_ready(&pods, &held).await {
                    eprintln!("pod readiness: {e:#}");
                }
                let _ = tokio::time::timeout(Duration::from_millis(250), rx.changed()).await;
            }
        });
        Self { held, task }
    }

    /// Keep pods with `label=value` pending (in addition to those already held).
    pub fn hold(&self, label: &str, value: &str) {
        self.held
            .send_modify(|h| h.push((label.to_owned(), value.to_owned())));
    }

    /// Let every pod become ready.
    pub fn release_all(&self) {
        self.held.send_modify(Vec::clear);
    }
}

impl Drop for PodReadiness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn make_ready(pods: &Api<Pod>, held: &Held) -> anyhow::Result<()> {
    for pod in pods.list(&ListParams::default()).await? {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let is_held = held
            .iter()
            .any(|(k, v)| labels.get(k).is_some_and(|actual| actual == v));
        if is_held || is_ready(&pod) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(name) = pod.metadata.name.as_deref() else {
            continue;
        };
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let condition =
            |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": now});
        let status = json!({
            "status": {
                "phase": "Running",
                "startTime": now,
                "conditions": [
                    condition("PodScheduled"),
                    condition("Initialized"),
                    condition("ContainersReady"),
                    condition("Ready"),
                ],
            }
        });
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("marking pod {name} ready"))?;
    }
    Ok(())
}
