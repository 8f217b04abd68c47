//! Running the model: a small pool of ONNX Runtime sessions, used off the async executor, with
//! bounded concurrency and a bounded queue (overload is answered, not buffered).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::imagenet::CLASS_COUNT;
use crate::model::{Layout, Normalization, input_shape, to_input};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot load the ONNX Runtime library {path}: {message}")]
    Runtime { path: PathBuf, message: String },
    #[error("cannot load model {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("model has no input named {0:?}")]
    UnknownInput(String),
    #[error("model has no inputs")]
    NoInputs,
    #[error("inference failed: {0}")]
    Run(String),
    #[error("model returned {0} scores, expected {CLASS_COUNT}")]
    OutputShape(usize),
    #[error("too many requests queued")]
    Overloaded,
    #[error("inference worker stopped unexpectedly")]
    WorkerLost,
}

/// Something that turns a prepared image into class probabilities. The ONNX engine in
/// production; handler tests use a fake.
pub trait Classify: Send + Sync + 'static {
    /// Probabilities for the 1000 classes, in class order.
    fn classify(&self, pixels: &[u8]) -> Result<Vec<f32>, EngineError>;
}

/// Settings of the ONNX engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub runtime_library: PathBuf,
    pub model_path: PathBuf,
    pub input_name: Option<String>,
    pub layout: Layout,
    pub normalization: Normalization,
    /// Sessions, i.e. inferences that can run at the same time.
    pub sessions: usize,
    /// ONNX Runtime intra-op threads per session.
    pub intra_op_threads: usize,
}

/// A pool of ONNX Runtime sessions over one model.
pub struct OnnxEngine {
    sessions: Mutex<Vec<Session>>,
    input_name: String,
    layout: Layout,
    normalization: Normalization,
}

impl OnnxEngine {
    /// Loads the runtime library and the model. Blocking; call before serving.
    pub fn load(config: &EngineConfig) -> Result<Self, EngineError> {
        let environment = ort::init_from(&config.runtime_library)
            .map_err(|e| EngineError::Runtime {
                path: config.runtime_library.clone(),
                message: e.to_string(),
            })?
            .with_name("tracedpipeline-inference")
            .build()
            .map_err(|e| EngineError::Runtime {
                path: config.runtime_library.clone(),
                message: e.to_string(),
            })?;
        let mut sessions = Vec::with_capacity(config.sessions);
        for _ in 0..config.sessions.max(1) {
            sessions.push(load_session(
                &environment,
                &config.model_path,
                config.intra_op_threads,
            )?);
        }
        let first = sessions.first().ok_or(EngineError::NoInputs)?;
        let input_name = match &config.input_name {
            Some(name) if first.inputs().iter().any(|i| i.name() == name) => name.clone(),
            Some(name) => return Err(EngineError::UnknownInput(name.clone())),
            None => first
                .inputs()
                .first()
                .map(|i| i.name().to_owned())
                .ok_or(EngineError::NoInputs)?,
        };
        Ok(Self {
            sessions: Mutex::new(sessions),
            input_name,
            layout: config.layout,
            normalization: config.normalization,
        })
    }
}

fn load_session(
    environment: &ort::environment::Environment,
    path: &Path,
    threads: usize,
) -> Result<Session, EngineError> {
    let load_error = |message: String| EngineError::Load {
        path: path.to_owned(),
        message,
    };
    Session::builder(environment)
        .map_err(|e| load_error(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| load_error(e.to_string()))?
        .with_intra_threads(threads.max(1))
        .map_err(|e| load_error(e.to_string()))?
        .commit_from_file(path)
        .map_err(|e| load_error(e.to_string()))
}

impl Classify for OnnxEngine {
    fn classify(&self, pixels: &[u8]) -> Result<Vec<f32>, EngineError> {
        // The admission semaphore guarantees a free session; the lock is held only to take it.
        let mut session = self
            .sessions
            .lock()
            .map_err(|_| EngineError::WorkerLost)?
            .pop()
            .ok_or(EngineError::Overloaded)?;
        let result = run(
            &mut session,
            &self.input_name,
            pixels,
            self.layout,
            self.normalization,
        );
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.push(session);
        }
        result
    }
}

fn run(
    session: &mut Session,
    input_name: &str,
    pixels: &[u8],
    layout: Layout,
    normalization: Normalization,
) -> Result<Vec<f32>, EngineError> {
    let input = Tensor::from_array((input_shape(layout), to_input(pixels, layout, normalization)))
        .map_err(|e| EngineError::Run(e.to_string()))?;
    let outputs = session
        .run(ort::inputs![input_name => input])
        .map_err(|e| EngineError::Run(e.to_string()))?;
    let (_, scores) = outputs[0]
        .try_extract_tensor::<f32>()
        .map_err(|e| EngineError::Run(e.to_string()))?;
    if scores.len() != CLASS_COUNT {
        return Err(EngineError::OutputShape(scores.len()));
    }
    Ok(scores.to_vec())
}

/// Bounds work: at most `running` inferences at once and `queued` waiting; beyond that callers
/// are turned away at once so that overload shows up as 503s rather than growing latency.
#[derive(Debug, Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    running: Arc<Semaphore>,
}

/// Permission to run one inference.
#[derive(Debug)]
pub struct Ticket {
    _slot: OwnedSemaphorePermit,
    _running: OwnedSemaphorePermit,
}

impl Admission {
    pub fn new(running: usize, queued: usize) -> Self {
        let running = running.max(1);
        Self {
            slots: Arc::new(Semaphore::new(running + queued)),
            running: Arc::new(Semaphore::new(running)),
        }
    }

    /// Waits for a running slot if the queue has room, fails at once otherwise.
    pub async fn admit(&self) -> Result<Ticket, EngineError> {
        let slot = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(TryAcquireError::NoPermits) => return Err(EngineError::Overloaded),
            Err(TryAcquireError::Closed) => return Err(EngineError::WorkerLost),
        };
        let running = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| EngineError::WorkerLost)?;
        Ok(Ticket {
            _slot: slot,
            _running: running,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admission_turns_away_beyond_the_queue() {
        let admission = Admission::new(1, 1);
        let running = admission.admit().await.expect("first runs");
        let waiting = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.admit().await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(matches!(
            admission.admit().await,
            Err(EngineError::Overloaded)
        ));
        drop(running);
        waiting
            .await
            .expect("join")
            .expect("queued request runs once a slot frees");
        admission.admit().await.expect("room again");
    }
}
