//! Running statistics and the end-of-run summary, as a text table or one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::{LoadMode, RunConfig};
use crate::runner::{Answer, ErrorKind, RunOutcome, Sample};

/// Latencies are recorded in microseconds, from 1 µs to 60 s, with 3 significant figures.
const LATENCY_LOW_US: u64 = 1;
const LATENCY_HIGH_US: u64 = 60_000_000;
const LATENCY_SIGFIG: u8 = 3;

/// Counts accumulated while the run goes on.
#[derive(Debug, Clone)]
pub struct Stats {
    pub ok: u64,
    pub classified: u64,
    pub accepted: u64,
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Every HTTP status received, successful ones included.
    pub status_counts: BTreeMap<u16, u64>,
    /// Latency of successful requests only: fast rejections and timeouts would distort it.
    pub latency_us: Histogram<u64>,
    /// Classified answers whose image has a known ground truth.
    pub known: u64,
    pub correct: u64,
    pub degraded: u64,
}

impl Stats {
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Self {
            ok: 0,
            classified: 0,
            accepted: 0,
            errors: BTreeMap::new(),
            status_counts: BTreeMap::new(),
            latency_us: Histogram::new_with_bounds(
                LATENCY_LOW_US,
                LATENCY_HIGH_US,
                LATENCY_SIGFIG,
            )?,
            known: 0,
            correct: 0,
            degraded: 0,
        })
    }

    /// Adds one request's outcome; `truth` is the WordNet id of the image sent, if known.
    pub fn record(&mut self, truth: Option<&str>, sample: &Sample) {
        if let Some(status) = sample.status {
            *self.status_counts.entry(status).or_default() += 1;
        }
        match &sample.result {
            Ok(answer) => {
                self.ok += 1;
                let micros = u64::try_from(sample.latency.as_micros()).unwrap_or(u64::MAX);
                // Beyond 60 s the value is clamped rather than lost.
                self.latency_us
                    .saturating_record(micros.max(LATENCY_LOW_US));
                match answer {
                    Answer::Classified { class_id, degraded } => {
                        self.classified += 1;
                        self.degraded += u64::from(*degraded);
                        if let Some(truth) = truth {
                            self.known += 1;
                            self.correct += u64::from(class_id == truth);
                        }
                    }
                    Answer::Accepted => self.accepted += 1,
                }
            }
            Err(kind) => *self.errors.entry(*kind).or_default() += 1,
        }
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn completed(&self) -> u64 {
        self.ok + self.failed()
    }
}

/// How the load was generated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModeSummary {
    Closed { concurrency: usize },
    Open { rate: f64, max_in_flight: usize },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccuracySummary {
    pub known: u64,
    pub correct: u64,
    pub ratio: f64,
}

/// The end-of-run report. Field names are a stable interface (`--output json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub url: String,
    pub mode: ModeSummary,
    pub seed: u64,
    /// Images in the dataset.
    pub images: usize,
    pub sent: u64,
    pub ok: u64,
    pub classified: u64,
    pub accepted: u64,
    pub failed: u64,
    /// Every kind is present, zero or not, so consumers can rely on the keys.
    pub errors: BTreeMap<&'static str, u64>,
    pub status_counts: BTreeMap<String, u64>,
    pub skipped: u64,
    pub late: u64,
    pub interrupted: bool,
    pub duration_s: f64,
    /// Successful requests per second.
    pub throughput_rps: f64,
    /// `null` when no request succeeded.
    pub latency_ms: Option<LatencySummary>,
    /// `null` when no classified answer had a known ground truth.
    pub accuracy: Option<AccuracySummary>,
    pub degraded: u64,
}

fn micros_to_ms(micros: u64) -> f64 {
    // Exact for any latency below 2^53 µs, i.e. always.
    micros as f64 / 1000.0
}

impl LatencySummary {
    pub fn from_histogram(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let at = |q: f64| micros_to_ms(histogram.value_at_quantile(q));
        Some(Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: micros_to_ms(histogram.max()),
            mean: (histogram.mean()).round() / 1000.0,
        })
    }
}

impl Summary {
    pub fn new(config: &RunConfig, images: usize, outcome: &RunOutcome) -> Self {
        let stats = &outcome.stats;
        let duration_s = outcome.elapsed.as_secs_f64();
        let ok = stats.ok as f64;
        let accuracy = (stats.known > 0).then(|| AccuracySummary {
            known: stats.known,
            correct: stats.correct,
            ratio: stats.correct as f64 / stats.known as f64,
        });
        Self {
            url: config.url.to_string(),
            mode: match config.mode {
                LoadMode::Closed { concurrency } => ModeSummary::Closed { concurrency },
                LoadMode::Open {
                    rate,
                    max_in_flight,
                } => ModeSummary::Open {
                    rate,
                    max_in_flight,
                },
            },
            seed: config.seed,
            images,
            sent: outcome.sent,
            ok: stats.ok,
            classified: stats.classified,
            accepted: stats.accepted,
            failed: stats.failed(),
            errors: ErrorKind::ALL
                .iter()
                .map(|kind| (kind.as_str(), stats.errors.get(kind).copied().unwrap_or(0)))
                .collect(),
            status_counts: stats
                .status_counts
                .iter()
                .map(|(status, count)| (status.to_string(), *count))
                .collect(),
            skipped: outcome.skipped,
            late: outcome.late,
            interrupted: outcome.interrupted,
            duration_s,
            throughput_rps: if duration_s > 0.0 {
                ok / duration_s
            } else {
                0.0
            },
            latency_ms: LatencySummary::from_histogram(&stats.latency_us),
            accuracy,
            degraded: stats.degraded,
        }
    }

    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }

    /// A two-column table for people.
    pub fn to_text(&self) -> String {
        let mut rows: Vec<(&str, String)> = Vec::new();
        rows.push(("target", self.url.clone()));
        rows.push((
            "load",
            match &self.mode {
                ModeSummary::Closed { concurrency } => {
                    format!("closed loop, concurrency {concurrency}")
                }
                ModeSummary::Open {
                    rate,
                    max_in_flight,
                } => format!("open loop, {rate} req/s, at most {max_in_flight} in flight"),
            },
        ));
        rows.push(("images", format!("{} (seed {})", self.images, self.seed)));
        let mut requests = format!("sent {}, ok {}, failed {}", self.sent, self.ok, self.failed);
        if self.accepted > 0 {
            let _ = write!(
                requests,
                " (ok: {} classified, {} accepted)",
                self.classified, self.accepted
            );
        }
        if self.interrupted {
            requests.push_str(", interrupted");
        }
        rows.push(("requests", requests));
        let errors: Vec<String> = self
            .errors
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        rows.push((
            "errors",
            if errors.is_empty() {
                "none".to_owned()
            } else {
                errors.join(", ")
            },
        ));
        if !self.status_counts.is_empty() {
            let statuses: Vec<String> = self
                .status_counts
                .iter()
                .map(|(status, count)| format!("{status} {count}"))
                .collect();
            rows.push(("statuses", statuses.join(", ")));
        }
        if matches!(self.mode, ModeSummary::Open { .. }) {
            rows.push((
                "schedule",
                format!("skipped {}, late {}", self.skipped, self.late),
            ));
        }
        rows.push(("duration", format!("{:.3} s", self.duration_s)));
        rows.push(("throughput", format!("{:.2} ok/s", self.throughput_rps)));
        rows.push((
            "latency (ok)",
            match &self.latency_ms {
                Some(l) => format!(
                    "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms",
                    l.p50, l.p90, l.p99, l.max, l.mean
                ),
                None => "n/a (no successful request)".to_owned(),
            },
        ));
        rows.push((
            "accuracy",
            match &self.accuracy {
                Some(a) => format!(
                    "{:.2} % ({} of {} with known truth)",
                    a.ratio * 100.0,
                    a.correct,
                    a.known
                ),
                None => "n/a (no answer for an image with known truth)".to_owned(),
            },
        ));
        rows.push(("degraded", self.degraded.to_string()));

        let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        let mut text = String::new();
        for (label, value) in rows {
            let _ = writeln!(text, "{label:<width$}  {value}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sample(status: Option<u16>, latency_ms: u64, result: Result<Answer, ErrorKind>) -> Sample {
        Sample {
            image: 0,
            status,
            latency: Duration::from_millis(latency_ms),
            result,
        }
    }

    fn classified(class_id: &str, degraded: bool) -> Result<Answer, ErrorKind> {
        Ok(Answer::Classified {
            class_id: class_id.to_owned(),
            degraded,
        })
    }

    fn config() -> RunConfig {
        RunConfig {
            url: reqwest::Url::parse("http://localhost:5010/preprocessing").expect("url"),
            mode: LoadMode::Closed { concurrency: 2 },
            max_requests: Some(10),
            duration: None,
            timeout: Duration::from_secs(30),
            seed: 42,
        }
    }

    fn outcome(stats: Stats, elapsed: Duration) -> RunOutcome {
        RunOutcome {
            sent: stats.completed(),
            stats,
            skipped: 0,
            late: 0,
            elapsed,
            interrupted: false,
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut stats = Stats::new().expect("histogram");
        for ms in 1..=1000 {
            stats.record(None, &sample(Some(200), ms, Ok(Answer::Accepted)));
        }
        // A failed request's latency does not count.
        stats.record(None, &sample(None, 50_000, Err(ErrorKind::Timeout)));
        let latency = LatencySummary::from_histogram(&stats.latency_us).expect("samples");
        // 3 significant figures: every value is within 0.1 %.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(latency.p50, 500.0), "{latency:?}");
        assert!(close(latency.p90, 900.0), "{latency:?}");
        assert!(close(latency.p99, 990.0), "{latency:?}");
        assert!(close(latency.max, 1000.0), "{latency:?}");
        assert!(close(latency.mean, 500.5), "{latency:?}");
        assert_eq!(stats.latency_us.len(), 1000);

        assert_eq!(
            LatencySummary::from_histogram(&Stats::new().expect("histogram").latency_us),
            None
        );
    }

    #[test]
    fn extreme_latencies_do_not_panic() {
        let mut stats = Stats::new().expect("histogram");
        stats.record(None, &sample(Some(200), 0, Ok(Answer::Accepted)));
        let mut long = sample(Some(200), 0, Ok(Answer::Accepted));
        long.latency = Duration::MAX;
        stats.record(None, &long);
        let latency = LatencySummary::from_histogram(&stats.latency_us).expect("samples");
        assert!(
            latency.max >= 59_000.0 && latency.max <= 61_000.0,
            "{latency:?}"
        );
    }

    #[test]
    fn answers_count_towards_accuracy_and_degradation() {
        let mut stats = Stats::new().expect("histogram");
        stats.record(
            Some("n01440764"),
            &sample(Some(200), 10, classified("n01440764", false)),
        );
        stats.record(
            Some("n01440764"),
            &sample(Some(200), 10, classified("n01443537", true)),
        );
        stats.record(None, &sample(Some(200), 10, classified("n01443537", true)));
        stats.record(
            Some("n01440764"),
            &sample(Some(202), 10, Ok(Answer::Accepted)),
        );
        stats.record(
            Some("n01440764"),
            &sample(Some(503), 10, Err(ErrorKind::Http5xx)),
        );
        stats.record(None, &sample(None, 10, Err(ErrorKind::Connect)));
        assert_eq!((stats.ok, stats.classified, stats.accepted), (4, 3, 1));
        assert_eq!((stats.known, stats.correct, stats.degraded), (2, 1, 2));
        assert_eq!(stats.failed(), 2);
        assert_eq!(stats.completed(), 6);
        assert_eq!(
            stats.status_counts,
            BTreeMap::from([(200, 3), (202, 1), (503, 1)])
        );
    }

    #[test]
    fn json_summary_has_the_documented_shape() {
        let mut stats = Stats::new().expect("histogram");
        for _ in 0..3 {
            stats.record(
                Some("n01440764"),
                &sample(Some(200), 100, classified("n01440764", false)),
            );
        }
        stats.record(
            Some("n01440764"),
            &sample(Some(200), 300, classified("n09999999", true)),
        );
        for _ in 0..2 {
            stats.record(None, &sample(Some(503), 5, Err(ErrorKind::Http5xx)));
        }
        let summary = Summary::new(&config(), 7, &outcome(stats, Duration::from_secs(2)));
        let json: serde_json::Value =
            serde_json::from_str(&summary.to_json().expect("encodes")).expect("valid JSON");

        assert_eq!(json["sent"], 6);
        assert_eq!(json["ok"], 4);
        assert_eq!(json["failed"], 2);
        assert_eq!(json["seed"], 42);
        assert_eq!(json["images"], 7);
        assert_eq!(
            json["mode"],
            serde_json::json!({"kind": "closed", "concurrency": 2})
        );
        assert_eq!(
            json["errors"],
            serde_json::json!({"timeout": 0, "connect": 0, "http_4xx": 0, "http_5xx": 2, "decode": 0, "other": 0})
        );
        assert_eq!(
            json["status_counts"],
            serde_json::json!({"200": 4, "503": 2})
        );
        assert_eq!(json["duration_s"], 2.0);
        assert_eq!(json["throughput_rps"], 2.0);
        let latency = json["latency_ms"].as_object().expect("latency object");
        let keys: Vec<_> = latency.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 5);
        for key in ["p50", "p90", "p99", "max", "mean"] {
            assert!(latency[key].is_f64(), "{key}");
        }
        assert!((latency["p50"].as_f64().expect("p50") - 100.0).abs() < 0.2);
        assert!((latency["max"].as_f64().expect("max") - 300.0).abs() < 0.5);
        assert_eq!(
            json["accuracy"],
            serde_json::json!({"known": 4, "correct": 3, "ratio": 0.75})
        );
        assert_eq!(json["degraded"], 1);
        assert_eq!(json["skipped"], 0);
        assert_eq!(json["interrupted"], false);
    }

    #[test]
    fn empty_runs_render_without_numbers_that_do_not_exist() {
        let mut stats = Stats::new().expect("histogram");
        stats.record(None, &sample(None, 5, Err(ErrorKind::Connect)));
        let mut config = config();
        config.mode = LoadMode::Open {
            rate: 5.0,
            max_in_flight: 3,
        };
        let mut run = outcome(stats, Duration::ZERO);
        run.skipped = 4;
        let summary = Summary::new(&config, 1, &run);
        let json = serde_json::to_value(&summary).expect("encodes");
        assert_eq!(json["latency_ms"], serde_json::Value::Null);
        assert_eq!(json["accuracy"], serde_json::Value::Null);
        assert_eq!(json["throughput_rps"], 0.0);
        assert_eq!(
            json["mode"],
            serde_json::json!({"kind": "open", "rate": 5.0, "max_in_flight": 3})
        );

        let text = summary.to_text();
        assert!(text.contains("errors        connect 1"), "{text}");
        assert!(text.contains("schedule      skipped 4, late 0"), "{text}");
        assert!(text.contains("latency (ok)  n/a"), "{text}");
        assert!(text.contains("accuracy      n/a"), "{text}");
    }

    #[test]
    fn text_summary_is_a_table() {
        let mut stats = Stats::new().expect("histogram");
        stats.record(
            Some("n01440764"),
            &sample(Some(200), 120, classified("n01440764", true)),
        );
        stats.record(
            Some("n01440764"),
            &sample(Some(200), 80, classified("n01443537", false)),
        );
        stats.record(None, &sample(Some(503), 3, Err(ErrorKind::Http5xx)));
        let text = Summary::new(&config(), 2, &outcome(stats, Duration::from_secs(4))).to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "target        http://localhost:5010/preprocessing"
        );
        for expected in [
            "load          closed loop, concurrency 2",
            "images        2 (seed 42)",
            "requests      sent 3, ok 2, failed 1",
            "errors        http_5xx 1",
            "statuses      200 2, 503 1",
            "duration      4.000 s",
            "throughput    0.50 ok/s",
            "accuracy      50.00 % (1 of 2 with known truth)",
            "degraded      1",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
        }
        let latency = lines
            .iter()
            .find(|l| l.starts_with("latency (ok)"))
            .expect("latency row");
        // HDR reports the top of each value's bucket (here 64 µs wide), hence the loose match.
        assert!(
            latency.contains("p50 80.") && latency.contains("max 120."),
            "{latency}"
        );
        assert!(
            !text.contains("schedule"),
            "closed loops have no schedule row"
        );
    }
}
