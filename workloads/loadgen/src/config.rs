//! Command line: every flag has a `LOADGEN_*` environment fallback (as the services do), and is
//! resolved into a [`RunConfig`] that always has at least one bound.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum, value_parser};
use pipeline_common::config::LogArgs;

pub const DEFAULT_URL: &str = "http://localhost:5010/preprocessing";
/// Used when neither `--requests` nor `--duration` is given, so that every run ends by itself.
pub const DEFAULT_REQUESTS: u64 = 100;

const AFTER_HELP: &str = "\
Without --rate the load is a closed loop (--concurrency workers, 1 by default).
The run stops at whichever bound comes first; with neither bound it sends 100 requests.

Exit status: 0 when the run completed (even with failed requests), 1 with --fail-on-error
when any request failed, 2 on usage or I/O errors.";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Sends images to the TracedPipeline preprocessing service and reports latency, errors and accuracy",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Endpoint the images are POSTed to (multipart, part `file`).
    #[arg(long, env = "LOADGEN_URL", default_value = DEFAULT_URL)]
    pub url: reqwest::Url,

    /// Folder of images (.jpg, .jpeg, .png in any case), searched recursively.
    #[arg(long, env = "LOADGEN_DS_PATH")]
    pub ds_path: PathBuf,

    /// Open loop: start this many requests per second, whether or not earlier ones have finished.
    #[arg(long, env = "LOADGEN_RATE", value_parser = parse_rate, conflicts_with = "concurrency")]
    pub rate: Option<f64>,

    /// Open loop only: most requests outstanding at once; a send due at the cap is skipped and counted.
    #[arg(long, env = "LOADGEN_MAX_IN_FLIGHT", default_value_t = 512, value_parser = value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Closed loop: this many workers, each sending its next request once the previous one finished [default: 1].
    #[arg(long, env = "LOADGEN_CONCURRENCY", value_parser = value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,

    /// Stop starting requests after this long (e.g. `30s`, `5m`); in-flight requests still finish.
    #[arg(long, env = "LOADGEN_DURATION", value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,

    /// Stop after sending this many requests [default: 100 when --duration is not given].
    #[arg(long, env = "LOADGEN_REQUESTS", value_parser = value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Longest time one request may take, connection and response body included.
    #[arg(long, env = "LOADGEN_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub timeout: Duration,

    /// Summary format on stdout.
    #[arg(long, env = "LOADGEN_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Do not draw the progress bar (it is never drawn when stderr is not a terminal).
    #[arg(long, env = "LOADGEN_NO_PROGRESS", value_parser = BoolishValueParser::new())]
    pub no_progress: bool,

    /// Seed of the image choice, for reproducible runs [default: random, printed in the summary].
    #[arg(long, env = "LOADGEN_SEED")]
    pub seed: Option<u64>,

    /// Start a trace per request here and export it (OTEL_* variables configure the exporter).
    #[arg(long, env = "LOADGEN_TRACE", value_parser = BoolishValueParser::new())]
    pub trace: bool,

    /// Exit with status 1 when any request failed.
    #[arg(long, env = "LOADGEN_FAIL_ON_ERROR", value_parser = BoolishValueParser::new())]
    pub fail_on_error: bool,

    /// Logging (only active with --trace).
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// How requests are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadMode {
    /// `concurrency` workers, each waiting for its answer before sending again.
    Closed { concurrency: usize },
    /// Requests start on a fixed schedule; at most `max_in_flight` are outstanding.
    Open { rate: f64, max_in_flight: usize },
}

/// Everything the runner needs, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub url: reqwest::Url,
    pub mode: LoadMode,
    /// `None` only when `duration` is set.
    pub max_requests: Option<u64>,
    pub duration: Option<Duration>,
    pub timeout: Duration,
    pub seed: u64,
}

impl Cli {
    /// Applies the defaults that depend on several flags; a random seed is drawn when none is given.
    pub fn run_config(&self) -> RunConfig {
        let mode = match self.rate {
            Some(rate) => LoadMode::Open {
                rate,
                max_in_flight: to_usize(self.max_in_flight),
            },
            None => LoadMode::Closed {
                concurrency: to_usize(self.concurrency.unwrap_or(1)),
            },
        };
        let max_requests = match (self.requests, self.duration) {
            (None, None) => Some(DEFAULT_REQUESTS),
            (requests, _) => requests,
        };
        RunConfig {
            url: self.url.clone(),
            mode,
            max_requests,
            duration: self.duration,
            timeout: self.timeout,
            seed: self.seed.unwrap_or_else(rand::random),
        }
    }
}

fn to_usize(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

fn parse_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    // A zero, negative or infinite rate has no schedule; a tiny one would wait beyond any run.
    if rate.is_finite() && rate >= 0.001 {
        Ok(rate)
    } else {
        Err("the rate must be a finite number of requests per second, at least 0.001".to_owned())
    }
}

fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        Err("must be longer than zero".to_owned())
    } else {
        Ok(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["loadgen", "--ds-path", "/images"].iter().chain(args))
    }

    #[test]
    fn defaults_are_a_bounded_closed_loop() {
        let cli = parse(&[]).expect("parses");
        let config = cli.run_config();
        assert_eq!(config.url.as_str(), DEFAULT_URL);
        assert_eq!(config.mode, LoadMode::Closed { concurrency: 1 });
        assert_eq!(config.max_requests, Some(DEFAULT_REQUESTS));
        assert_eq!(config.duration, None);
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(cli.output, OutputFormat::Text);
        assert!(!cli.trace && !cli.no_progress && !cli.fail_on_error);
    }

    #[test]
    fn duration_alone_lifts_the_request_bound() {
        let config = parse(&["--duration", "1m30s"])
            .expect("parses")
            .run_config();
        assert_eq!(config.max_requests, None);
        assert_eq!(config.duration, Some(Duration::from_secs(90)));

        let config = parse(&["--duration", "10s", "--requests", "5"])
            .expect("parses")
            .run_config();
        assert_eq!(config.max_requests, Some(5));
        assert_eq!(config.duration, Some(Duration::from_secs(10)));
    }

    #[test]
    fn rate_selects_the_open_loop() {
        let config = parse(&["--rate", "12.5", "--max-in-flight", "8", "--seed", "7"])
            .expect("parses")
            .run_config();
        assert_eq!(
            config.mode,
            LoadMode::Open {
                rate: 12.5,
                max_in_flight: 8
            }
        );
        assert_eq!(config.seed, 7);
    }

    #[test]
    fn flags_parse() {
        let cli = parse(&[
            "--url",
            "http://10.0.0.1:8080/preprocessing",
            "--concurrency",
            "4",
            "--timeout",
            "1500ms",
            "--output",
            "json",
            "--no-progress",
            "--trace",
            "--fail-on-error",
        ])
        .expect("parses");
        let config = cli.run_config();
        assert_eq!(config.url.as_str(), "http://10.0.0.1:8080/preprocessing");
        assert_eq!(config.mode, LoadMode::Closed { concurrency: 4 });
        assert_eq!(config.timeout, Duration::from_millis(1500));
        assert_eq!(cli.output, OutputFormat::Json);
        assert!(cli.no_progress && cli.trace && cli.fail_on_error);
    }

    #[test]
    fn rejects_nonsense() {
        assert!(parse(&["--rate", "5", "--concurrency", "2"]).is_err());
        for rate in ["0", "-1", "NaN", "inf", "fast"] {
            assert!(parse(&["--rate", rate]).is_err(), "rate {rate}");
        }
        assert!(parse(&["--concurrency", "0"]).is_err());
        assert!(parse(&["--requests", "0"]).is_err());
        assert!(parse(&["--duration", "0s"]).is_err());
        assert!(parse(&["--timeout", "soon"]).is_err());
        assert!(parse(&["--output", "xml"]).is_err());
        assert!(parse(&["--url", "not a url"]).is_err());
        assert!(
            Cli::try_parse_from(["loadgen"]).is_err(),
            "--ds-path is required"
        );
    }

    #[test]
    fn unseeded_runs_still_record_a_seed() {
        let cli = parse(&[]).expect("parses");
        // Two draws colliding has probability 2^-64; the point is that each run has *a* seed.
        assert_ne!(cli.run_config().seed, cli.run_config().seed);
    }
}
