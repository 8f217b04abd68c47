//! Sends the requests, either as a closed loop (N workers, each waiting for its answer) or as an
//! open loop (requests start on a fixed schedule), and feeds every outcome to a single collector.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pipeline_common::api::{AcceptedResponse, ClassifyResponse, TIMESTAMP_HEADER};
use pipeline_common::client::TracedClient;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::config::{LoadMode, RunConfig};
use crate::dataset::{Dataset, Image};
use crate::progress::Progress;
use crate::report::Stats;

/// Answers are small JSON documents; anything bigger is not one of ours and is not buffered.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// An open-loop send starting later than this after its slot counts as late (the Tokio timer
/// has millisecond granularity, so smaller lags are noise).
pub const LATE_AFTER: Duration = Duration::from_millis(10);
/// Name of the multipart part carrying the image (upstream contract).
pub const FILE_PART: &str = "file";

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ErrorKind {
    #[serde(rename = "timeout")]
    Timeout,
    #[serde(rename = "connect")]
    Connect,
    #[serde(rename = "http_4xx")]
    Http4xx,
    #[serde(rename = "http_5xx")]
    Http5xx,
    /// A 2xx whose body is not one of the expected JSON answers.
    #[serde(rename = "decode")]
    Decode,
    #[serde(rename = "other")]
    Other,
}

impl ErrorKind {
    pub const ALL: [Self; 6] = [
        Self::Timeout,
        Self::Connect,
        Self::Http4xx,
        Self::Http5xx,
        Self::Decode,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Http4xx => "http_4xx",
            Self::Http5xx => "http_5xx",
            Self::Decode => "decode",
            Self::Other => "other",
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The pipeline's classification.
    Classified { class_id: String, degraded: bool },
    /// Fire-and-forget mode: the image was accepted, no classification comes back.
    Accepted,
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Index of the image in the dataset.
    pub image: usize,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// From just before sending until the whole response body was read.
    pub latency: Duration,
    pub result: Result<Answer, ErrorKind>,
}

/// `None` for 2xx; redirects are not followed, so 1xx/3xx are unexpected (`other`).
pub fn classify_status(status: StatusCode) -> Option<ErrorKind> {
    if status.is_success() {
        None
    } else if status.is_client_error() {
        Some(ErrorKind::Http4xx)
    } else if status.is_server_error() {
        Some(ErrorKind::Http5xx)
    } else {
        Some(ErrorKind::Other)
    }
}

/// Transport failures. A connect timeout is both; it counts as a timeout.
pub fn classify_transport(error: &reqwest::Error) -> ErrorKind {
    if error.is_timeout() {
        ErrorKind::Timeout
    } else if error.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Other
    }
}

/// Reads a 2xx body: a classification, or the fire-and-forget acknowledgement.
pub fn parse_answer(body: &[u8]) -> Result<Answer, ErrorKind> {
    if let Ok(response) = serde_json::from_slice::<ClassifyResponse>(body) {
        return Ok(Answer::Classified {
            class_id: response.top1.class_id,
            degraded: response.degraded,
        });
    }
    if serde_json::from_slice::<AcceptedResponse>(body).is_ok() {
        return Ok(Answer::Accepted);
    }
    Err(ErrorKind::Decode)
}

/// The HTTP client for a run. Redirects are not followed: a load test must hit the given URL.
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Current Unix time in seconds with microseconds, as upstream clients send it.
fn timestamp_now() -> String {
    // A clock before 1970 is broken, not fatal: the header is informational.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:.6}", now.as_secs_f64())
}

fn build_request(
    client: &TracedClient,
    url: &reqwest::Url,
    image: &Image,
) -> reqwest::Result<reqwest::Request> {
    // `Bytes` → `Body` shares the buffer, so the image is never copied per request.
    let length = u64::try_from(image.bytes.len()).unwrap_or(u64::MAX);
    let part = Part::stream_with_length(image.bytes.clone(), length)
        .file_name(image.file_name.clone())
        .mime_str(image.content_type)?;
    client
        .post(url.clone())
        .header(TIMESTAMP_HEADER, timestamp_now())
        .multipart(Form::new().part(FILE_PART, part))
        .build()
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, ErrorKind> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify_transport(&e))? {
        if body.len().saturating_add(chunk.len()) > MAX_BODY_BYTES {
            return Err(ErrorKind::Decode);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Uploads one image and classifies what comes back: `(status, result)`.
pub async fn exchange(
    client: &TracedClient,
    url: &reqwest::Url,
    image: &Image,
) -> (Option<u16>, Result<Answer, ErrorKind>) {
    let request = match build_request(client, url, image) {
        Ok(request) => request,
        Err(_) => return (None, Err(ErrorKind::Other)),
    };
    let response = match client.send(request).await {
        Ok(response) => response,
        Err(error) => return (None, Err(classify_transport(&error))),
    };
    let status = response.status();
    // Error bodies are read too, so that the connection can be reused.
    let body = read_body(response).await;
    let result = match (classify_status(status), body) {
        (Some(kind), _) | (None, Err(kind)) => Err(kind),
        (None, Ok(body)) => parse_answer(&body),
    };
    (Some(status.as_u16()), result)
}

/// What a finished run measured.
#[derive(Debug)]
pub struct RunOutcome {
    pub stats: Stats,
    /// Requests started (all of them finished before the run returns).
    pub sent: u64,
    /// Open loop: sends due while `max_in_flight` requests were outstanding, not made.
    pub skipped: u64,
    /// Open loop: sends that started more than [`LATE_AFTER`] after their slot.
    pub late: u64,
    /// From the first send until the last answer.
    pub elapsed: Duration,
    /// The stop signal ended the run before its bounds.
    pub interrupted: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct ScheduleCounts {
    skipped: u64,
    late: u64,
}

/// State every sender shares.
struct Shared {
    client: TracedClient,
    url: reqwest::Url,
    dataset: Arc<Dataset>,
    limit: u64,
    deadline: Option<Instant>,
    stop: watch::Receiver<bool>,
    sent: AtomicU64,
    rng: Mutex<StdRng>,
}

impl Shared {
    fn finished(&self) -> bool {
        *self.stop.borrow()
            || self.deadline.is_some_and(|d| Instant::now() >= d)
            || self.sent.load(Ordering::Relaxed) >= self.limit
    }

    /// Claims the next request and its image, or `None` when a bound or the stop signal is
    /// reached. Counting under the rng lock gives request n the n-th draw, so a seed fixes the
    /// sequence of images whatever the concurrency.
    fn next_request(&self) -> Option<usize> {
        if self.finished() {
            return None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = self.sent.load(Ordering::Relaxed);
        if sent >= self.limit {
            return None;
        }
        self.sent.store(sent.saturating_add(1), Ordering::Relaxed);
        Some(rng.random_range(0..self.dataset.len()))
    }

    async fn send(&self, index: usize) -> Sample {
        let started = Instant::now();
        let (status, result) = match self.dataset.get(index) {
            Some(image) => exchange(&self.client, &self.url, image).await,
            None => (None, Err(ErrorKind::Other)),
        };
        Sample {
            image: index,
            status,
            latency: started.elapsed(),
            result,
        }
    }
}

/// Resolves once the stop signal is raised; never, if it can no longer be.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One run of the load.
pub struct Runner {
    config: RunConfig,
    dataset: Arc<Dataset>,
    client: TracedClient,
}

impl Runner {
    pub fn new(config: RunConfig, dataset: Arc<Dataset>, client: TracedClient) -> Self {
        Self {
            config,
            dataset,
            client,
        }
    }

    /// Sends until a bound is reached or `stop` resolves (no new requests after that), then
    /// waits for the outstanding requests, which the client timeout bounds.
    pub async fn run(
        self,
        mut progress: Progress,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<RunOutcome, hdrhistogram::CreationError> {
        let mut stats = Stats::new()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let watcher = tokio::spawn(async move {
            stop.await;
            stop_tx.send_replace(true);
        });

        let start = Instant::now();
        let shared = Arc::new(Shared {
            client: self.client,
            url: self.config.url.clone(),
            dataset: Arc::clone(&self.dataset),
            limit: self.config.max_requests.unwrap_or(u64::MAX),
            deadline: self.config.duration.and_then(|d| start.checked_add(d)),
            stop: stop_rx.clone(),
            sent: AtomicU64::new(0),
            rng: Mutex::new(StdRng::seed_from_u64(self.config.seed)),
        });

        let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
        let schedule = {
            let shared = Arc::clone(&shared);
            let mode = self.config.mode;
            async move {
                match mode {
                    LoadMode::Closed { concurrency } => closed_loop(shared, concurrency, tx),
                    LoadMode::Open {
                        rate,
                        max_in_flight,
                    } => open_loop(shared, start, rate, max_in_flight, tx).await,
                }
            }
        };
        // The channel closes once the scheduler and every request have dropped their sender.
        let collect = async {
            while let Some(sample) = rx.recv().await {
                let truth = self
                    .dataset
                    .get(sample.image)
                    .and_then(|image| image.truth.as_deref());
                stats.record(truth, &sample);
                progress.update(shared.sent.load(Ordering::Relaxed), &stats);
            }
        };
        let (counts, ()) = tokio::join!(schedule, collect);
        let elapsed = start.elapsed();
        watcher.abort();
        progress.finish();

        Ok(RunOutcome {
            stats,
            sent: shared.sent.load(Ordering::Relaxed),
            skipped: counts.skipped,
            late: counts.late,
            elapsed,
            interrupted: *stop_rx.borrow(),
        })
    }
}

fn closed_loop(
    shared: Arc<Shared>,
    concurrency: usize,
    tx: mpsc::UnboundedSender<Sample>,
) -> ScheduleCounts {
    for _ in 0..concurrency {
        let shared = Arc::clone(&shared);
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(index) = shared.next_request() {
                let sample = shared.send(index).await;
                if tx.send(sample).is_err() {
                    break;
                }
            }
        });
    }
    ScheduleCounts::default()
}

async fn open_loop(
    shared: Arc<Shared>,
    start: Instant,
    rate: f64,
    max_in_flight: usize,
    tx: mpsc::UnboundedSender<Sample>,
) -> ScheduleCounts {
    let permits = Arc::new(Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS)));
    let mut stop = shared.stop.clone();
    let mut counts = ScheduleCounts::default();
    let mut slot: u64 = 0;
    loop {
        // Slots are computed from the start rather than accumulated, so timer lag never drifts
        // the schedule: after a stall the due slots are sent at once (and counted late).
        let offset = Duration::try_from_secs_f64(slot as f64 / rate).ok();
        let Some(target) = offset.and_then(|offset| start.checked_add(offset)) else {
            break;
        };
        if shared.deadline.is_some_and(|deadline| target >= deadline) {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep_until(target) => {}
            () = stopped(&mut stop) => break,
        }
        slot = slot.saturating_add(1);
        if shared.finished() {
            break;
        }
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            counts.skipped = counts.skipped.saturating_add(1);
            continue;
        };
        let Some(index) = shared.next_request() else {
            break;
        };
        if Instant::now().saturating_duration_since(target) > LATE_AFTER {
            counts.late = counts.late.saturating_add(1);
        }
        let shared = Arc::clone(&shared);
        let tx = tx.clone();
        tokio::spawn(async move {
            let sample = shared.send(index).await;
            drop(permit);
            // The collector only goes away when the run is over; nothing left to report to.
            let _ = tx.send(sample);
        });
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_by_class() {
        assert_eq!(classify_status(StatusCode::OK), None);
        assert_eq!(classify_status(StatusCode::ACCEPTED), None);
        assert_eq!(classify_status(StatusCode::NO_CONTENT), None);
        assert_eq!(
            classify_status(StatusCode::BAD_REQUEST),
            Some(ErrorKind::Http4xx)
        );
        assert_eq!(
            classify_status(StatusCode::PAYLOAD_TOO_LARGE),
            Some(ErrorKind::Http4xx)
        );
        assert_eq!(
            classify_status(StatusCode::SERVICE_UNAVAILABLE),
            Some(ErrorKind::Http5xx)
        );
        assert_eq!(
            classify_status(StatusCode::GATEWAY_TIMEOUT),
            Some(ErrorKind::Http5xx)
        );
        assert_eq!(classify_status(StatusCode::FOUND), Some(ErrorKind::Other));
    }

    #[test]
    fn error_kinds_have_stable_names() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_value(kind).expect("serialises");
            assert_eq!(json, serde_json::Value::from(kind.as_str()));
        }
        let names: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "timeout", "connect", "http_4xx", "http_5xx", "decode", "other"
            ]
        );
    }

    #[test]
    fn answers_are_decoded_or_rejected() {
        let classify = serde_json::json!({
            "request_id": "r1",
            "top1": {"class_index": 1, "class_id": "n01443537", "label": "goldfish", "probability": 0.9},
            "strategy": "average_probability",
            "prediction": [],
            "models": [],
            "failed_models": [{"model": "resnet", "error": "timeout"}],
            "degraded": true,
            "timings_ms": {"decode": 1.0, "resize": 1.0, "ensemble": 5.0, "total": 7.0},
            "some_future_field": 1
        });
        assert_eq!(
            parse_answer(classify.to_string().as_bytes()),
            Ok(Answer::Classified {
                class_id: "n01443537".to_owned(),
                degraded: true
            })
        );
        let accepted = br#"{"request_id": "r2", "response": "File accepted"}"#;
        assert_eq!(parse_answer(accepted), Ok(Answer::Accepted));
        for bad in [
            &b""[..],
            b"File accepted",
            b"{}",
            b"[1,2]",
            b"{\"top1\": 3}",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_answer(bad), Err(ErrorKind::Decode), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_are_epoch_seconds_with_a_fraction() {
        let stamp = timestamp_now();
        let (seconds, fraction) = stamp.split_once('.').expect("has a fraction");
        assert_eq!(fraction.len(), 6);
        let seconds: u64 = seconds.parse().expect("integer seconds");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        assert!(now.abs_diff(seconds) <= 2, "{stamp} vs {now}");
    }
}
