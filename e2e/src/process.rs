//! The services as child processes, wired by environment like the operator's pods.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::required_env;

/// A workspace binary built next to the running executable (`cargo build --workspace --bins`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let mut dir = exe.parent().expect("target directory");
    // Tests live in target/<profile>/deps, binaries in target/<profile>.
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target directory");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the services first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running service process, killed when dropped.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub port: u16,
    child: Child,
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} ignored SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tracing wiring shared by every service of one pipeline.
#[derive(Debug, Clone)]
pub struct Tracing {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, or `None` for `OTEL_SDK_DISABLED=true`.
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: &'static str,
}

impl Tracing {
    /// `OTEL_SDK_DISABLED=true`: for tests about behaviour, not traces.
    pub fn disabled() -> Self {
        Self {
            endpoint: None,
            protocol: "grpc",
        }
    }
}

/// Starts `binary` with `args` and `env` on a fresh port, and waits for `/readyz`.
pub async fn start(
    name: &str,
    binary_name: &str,
    args: &[&str],
    env: &[(&str, String)],
    tracing: &Tracing,
) -> Service {
    let port = free_port();
    let mut command = Command::new(binary(binary_name));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("LOG_LEVEL", "warn")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("POD_NAME", format!("{name}-local"))
        .env("POD_NAMESPACE", "e2e")
        .env("NODE_NAME", "loopback")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    match &tracing.endpoint {
        Some(endpoint) => {
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", tracing.protocol);
        }
        None => {
            command.env("OTEL_SDK_DISABLED", "true");
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let mut service = Service {
        name: name.to_owned(),
        port,
        child,
    };
    wait_ready(&mut service).await;
    service
}

async fn wait_ready(service: &mut Service) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = service.child.try_wait() {
            panic!("{} exited during start-up: {status}", service.name);
        }
        if let Ok(response) = client.get(service.url("/readyz")).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never became ready",
            service.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Extra environment per service process (`preprocessing`, `ensemble`, `mobilenetv2`,
/// `efficientnetb0`), applied last so it overrides the defaults and [`Tracing`].
pub type ServiceEnv = BTreeMap<String, Vec<(String, String)>>;

/// The four services: preprocessing → ensemble → {mobilenetv2, efficientnetb0}.
#[derive(Debug)]
pub struct Pipeline {
    pub preprocessing: Service,
    pub ensemble: Service,
    pub mobilenetv2: Option<Service>,
    pub efficientnetb0: Option<Service>,
}

impl Pipeline {
    /// Starts the real services with the real models (`MODELS_DIR`, `ORT_DYLIB_PATH`).
    pub async fn start(tracing: &Tracing, extra_preprocessing_env: &[(&str, String)]) -> Self {
        Self::start_with_env(tracing, extra_preprocessing_env, &ServiceEnv::new()).await
    }

    /// [`Self::start`] with `service_env` added to each service's environment (e.g. the
    /// operator's `OTEL_*` wiring).
    pub async fn start_with_env(
        tracing: &Tracing,
        extra_preprocessing_env: &[(&str, String)],
        service_env: &ServiceEnv,
    ) -> Self {
        let extra = |name: &str| {
            service_env
                .get(name)
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect::<Vec<_>>()
        };
        let models_dir = required_env("MODELS_DIR", "directory with the ONNX models");
        let runtime = required_env("ORT_DYLIB_PATH", "path of libonnxruntime.so");
        let inference_env = |model: &str| {
            let mut env = vec![
                ("MODEL", model.to_owned()),
                ("MODELS_DIR", models_dir.clone()),
                ("ORT_DYLIB_PATH", runtime.clone()),
                // Two models share two cores here, as they would share a node.
                ("INTRA_OP_THREADS", "1".to_owned()),
            ];
            env.extend(extra(model));
            env
        };
        let (mobilenet_env, efficientnet_env) = (
            inference_env("mobilenetv2"),
            inference_env("efficientnetb0"),
        );
        let (mobilenetv2, efficientnetb0) = tokio::join!(
            start("mobilenetv2", "inference", &[], &mobilenet_env, tracing),
            start(
                "efficientnetb0",
                "inference",
                &[],
                &efficientnet_env,
                tracing
            ),
        );
        let models = format!(
            "mobilenetv2={},efficientnetb0={}",
            mobilenetv2.url("/inference"),
            efficientnetb0.url("/inference")
        );
        let mut ensemble_env = vec![
            ("ENSEMBLE_MODELS", models),
            ("MODEL_TIMEOUT", "10s".to_owned()),
        ];
        ensemble_env.extend(extra("ensemble"));
        let ensemble = start("ensemble", "ensemble", &[], &ensemble_env, tracing).await;
        let mut env = vec![("ENSEMBLE_URL", ensemble.url("/ensemble_service"))];
        env.extend(extra_preprocessing_env.iter().cloned());
        env.extend(extra("preprocessing"));
        let preprocessing = start("preprocessing", "preprocessing", &[], &env, tracing).await;
        Self {
            preprocessing,
            ensemble,
            mobilenetv2: Some(mobilenetv2),
            efficientnetb0: Some(efficientnetb0),
        }
    }
}
