//! Command-line flags (each with an environment fallback, which is how the operator configures
//! pods) and their validation. Anything wrong is rejected by the parser, so a misconfigured pod
//! exits at start-up with a clear message instead of failing every request.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use clap::{Parser, ValueEnum as _};
use pipeline_common::api::{AggregationStrategy, IMAGE_BYTES};
use pipeline_common::config::ServerArgs;
use reqwest::Url;

/// Port the ensemble listens on unless `--port`/`PORT` says otherwise (upstream's port).
pub const DEFAULT_PORT: u16 = 5011;

/// The two models of the upstream application, at the Service names the operator creates.
pub const DEFAULT_MODELS: &str = "mobilenetv2=http://mobilenetv2-service:5012/inference,\
                                  efficientnetb0=http://efficientnetb0-service:5012/inference";

/// Longest model name: it becomes a metric label and appears in every answer.
const MAX_MODEL_NAME: usize = 63;

/// Fans a prepared image out to every configured model and aggregates their answers.
#[derive(Debug, Clone, Parser)]
#[command(name = "ensemble", version, about)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Models to ask, as a comma-separated list of `name=url` (http only), in the order their
    /// answers are reported.
    #[arg(long, env = "ENSEMBLE_MODELS", default_value = DEFAULT_MODELS, value_parser = parse_models)]
    pub models: ModelList,
    /// How the answers are combined: average_probability, max_confidence or majority_vote.
    #[arg(
        long,
        env = "AGGREGATION",
        default_value = "average_probability",
        value_parser = parse_strategy
    )]
    pub aggregation: AggregationStrategy,
    /// Longest time one model call may take (connecting, sending and reading the answer).
    #[arg(long, env = "MODEL_TIMEOUT", default_value = "5s", value_parser = parse_model_timeout)]
    pub model_timeout: Duration,
    /// How many classes each model is asked for (`?top_k=`), and the length of the aggregated list.
    #[arg(
        long,
        env = "MODEL_TOP_K",
        default_value_t = 10,
        value_parser = clap::value_parser!(u16).range(1..=1000)
    )]
    pub top_k: u16,
    /// Largest request body accepted (bytes); at least one image (150528 bytes).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_parser = parse_body_limit)]
    pub max_body_bytes: usize,
}

/// One model the ensemble asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEndpoint {
    pub name: String,
    pub url: Url,
}

/// The validated, non-empty list of models with unique names, in configuration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelList(Vec<ModelEndpoint>);

impl ModelList {
    pub fn endpoints(&self) -> &[ModelEndpoint] {
        &self.0
    }
}

impl fmt::Display for ModelList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, model) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", model.name, model.url)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no models configured: expected a comma-separated list of name=url")]
    NoModels,
    #[error("model entry {0:?} is not of the form name=url")]
    NotNameUrl(String),
    #[error(
        "model name {0:?} is invalid: use 1 to {MAX_MODEL_NAME} letters, digits, '-', '_' or '.'"
    )]
    InvalidName(String),
    #[error("model name {0:?} appears more than once (names are compared ignoring case)")]
    DuplicateName(String),
    #[error("URL {url:?} of model {name:?} is invalid: {reason}")]
    InvalidUrl {
        name: String,
        url: String,
        reason: String,
    },
    #[error(
        "URL {url:?} of model {name:?} must use http:// (this build has no TLS; model calls stay inside the cluster)"
    )]
    UnsupportedScheme { name: String, url: String },
    #[error("unknown aggregation {0:?}: use average_probability, max_confidence or majority_vote")]
    UnknownStrategy(String),
    #[error("model timeout {0:?} is not a positive duration such as 5s or 800ms")]
    ModelTimeout(String),
    #[error("body limit {0:?} is not a number of bytes of at least {IMAGE_BYTES}")]
    BodyLimit(String),
}

/// Parses `name=url[,name=url...]`. Blank entries (e.g. a trailing comma) are ignored.
pub fn parse_models(value: &str) -> Result<ModelList, ConfigError> {
    let mut seen = HashSet::new();
    let mut models = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, url) = entry
            .split_once('=')
            .ok_or_else(|| ConfigError::NotNameUrl(entry.to_owned()))?;
        let (name, url) = (name.trim(), url.trim());
        let valid_name = !name.is_empty()
            && name.len() <= MAX_MODEL_NAME
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return Err(ConfigError::InvalidName(name.to_owned()));
        }
        // Names differing only in case would look like the same model in answers and metrics.
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(ConfigError::DuplicateName(name.to_owned()));
        }
        models.push(ModelEndpoint {
            name: name.to_owned(),
            url: parse_model_url(name, url)?,
        });
    }
    if models.is_empty() {
        return Err(ConfigError::NoModels);
    }
    Ok(ModelList(models))
}

fn parse_model_url(name: &str, url: &str) -> Result<Url, ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidUrl {
        name: name.to_owned(),
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    match parsed.scheme() {
        "http" => {}
        // The workspace builds reqwest without TLS, so an https model would fail every call;
        // better to say so now than to answer 503 forever.
        "https" => {
            return Err(ConfigError::UnsupportedScheme {
                name: name.to_owned(),
                url: url.to_owned(),
            });
        }
        _ => return Err(invalid("not an http:// URL")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if parsed.fragment().is_some() {
        return Err(invalid("URLs with a #fragment are not allowed"));
    }
    Ok(parsed)
}

/// Accepts the snake_case names the wire format uses (`average_probability`) as well as
/// clap's kebab-case spelling (`average-probability`), ignoring case.
pub fn parse_strategy(value: &str) -> Result<AggregationStrategy, ConfigError> {
    let wanted = value.trim().to_ascii_lowercase().replace('-', "_");
    AggregationStrategy::value_variants()
        .iter()
        .copied()
        .find(|strategy| strategy.as_str() == wanted)
        .ok_or_else(|| ConfigError::UnknownStrategy(value.to_owned()))
}

/// A zero timeout would fail every model call.
pub fn parse_model_timeout(value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim())
        .ok()
        .filter(|timeout| !timeout.is_zero())
        .ok_or_else(|| ConfigError::ModelTimeout(value.to_owned()))
}

/// A body limit below one image would reject every request with 413.
pub fn parse_body_limit(value: &str) -> Result<usize, ConfigError> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|limit| *limit >= IMAGE_BYTES)
        .ok_or_else(|| ConfigError::BodyLimit(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("ensemble").chain(args.iter().copied()))
    }

    fn names(list: &ModelList) -> Vec<&str> {
        list.endpoints().iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn defaults_match_the_operator() {
        let args = parse(&[]).expect("defaults parse");
        assert_eq!(names(&args.models), ["mobilenetv2", "efficientnetb0"]);
        assert_eq!(
            args.models.endpoints()[0].url.as_str(),
            "http://mobilenetv2-service:5012/inference"
        );
        assert_eq!(
            args.models.endpoints()[1].url.as_str(),
            "http://efficientnetb0-service:5012/inference"
        );
        assert_eq!(args.aggregation, AggregationStrategy::AverageProbability);
        assert_eq!(args.model_timeout, Duration::from_secs(5));
        assert_eq!(args.top_k, 10);
        assert_eq!(args.max_body_bytes, 1024 * 1024);
        assert_eq!(args.server.listen_addr(DEFAULT_PORT).port(), 5011);
    }

    #[test]
    fn flags_are_honoured() {
        let args = parse(&[
            "--models",
            " a=http://127.0.0.1:9000/inference , b=http://b:80/x?v=1,",
            "--aggregation",
            "majority_vote",
            "--model-timeout",
            "250ms",
            "--top-k",
            "3",
            "--max-body-bytes",
            "200000",
        ])
        .expect("flags parse");
        assert_eq!(names(&args.models), ["a", "b"]);
        assert_eq!(args.models.endpoints()[1].url.as_str(), "http://b/x?v=1");
        assert_eq!(args.aggregation, AggregationStrategy::MajorityVote);
        assert_eq!(args.model_timeout, Duration::from_millis(250));
        assert_eq!(args.top_k, 3);
        assert_eq!(args.max_body_bytes, 200_000);
        assert_eq!(
            args.models.to_string(),
            "a=http://127.0.0.1:9000/inference,b=http://b/x?v=1"
        );
    }

    #[test]
    fn every_strategy_spelling_is_accepted() {
        for (text, expected) in [
            (
                "average_probability",
                AggregationStrategy::AverageProbability,
            ),
            ("max-confidence", AggregationStrategy::MaxConfidence),
            ("MAJORITY_VOTE", AggregationStrategy::MajorityVote),
        ] {
            assert_eq!(parse_strategy(text), Ok(expected));
        }
        assert!(matches!(
            parse_strategy("median"),
            Err(ConfigError::UnknownStrategy(_))
        ));
    }

    #[test]
    fn bad_model_lists_are_rejected_with_a_reason() {
        type Expected = fn(&ConfigError) -> bool;
        let cases: &[(&str, Expected)] = &[
            ("", |e| matches!(e, ConfigError::NoModels)),
            (" , ,", |e| matches!(e, ConfigError::NoModels)),
            ("mobilenetv2", |e| matches!(e, ConfigError::NotNameUrl(_))),
            ("=http://a:1/", |e| matches!(e, ConfigError::InvalidName(_))),
            ("a b=http://a:1/", |e| {
                matches!(e, ConfigError::InvalidName(_))
            }),
            (
                "a=http://x/,A=http://y/",
                |e| matches!(e, ConfigError::DuplicateName(n) if n == "A"),
            ),
            ("a=not a url", |e| {
                matches!(e, ConfigError::InvalidUrl { .. })
            }),
            ("a=ftp://x/", |e| {
                matches!(e, ConfigError::InvalidUrl { .. })
            }),
            ("a=http://x/#frag", |e| {
                matches!(e, ConfigError::InvalidUrl { .. })
            }),
            ("a=https://x/inference", |e| {
                matches!(e, ConfigError::UnsupportedScheme { .. })
            }),
        ];
        for (input, expected) in cases {
            match parse_models(input) {
                Err(error) => assert!(expected(&error), "{input:?}: unexpected {error:?}"),
                Ok(list) => panic!("{input:?} was accepted as {list}"),
            }
        }
        let long = format!("{}=http://x/", "m".repeat(MAX_MODEL_NAME + 1));
        assert!(matches!(
            parse_models(&long),
            Err(ConfigError::InvalidName(_))
        ));
    }

    #[test]
    fn bad_flags_fail_the_start_up() {
        for args in [
            &["--models", ""][..],
            &["--models", "a=http://x/,a=http://y/"],
            &["--aggregation", "median"],
            &["--model-timeout", "soon"],
            &["--model-timeout", "0s"],
            &["--top-k", "0"],
            &["--top-k", "1001"],
            &["--max-body-bytes", "1000"],
        ] {
            let error = parse(args).expect_err("must be rejected");
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
        let error = parse(&["--models", "a=http://x/,a=http://y/"]).expect_err("rejected");
        assert!(error.to_string().contains("more than once"), "{error}");
    }
}
