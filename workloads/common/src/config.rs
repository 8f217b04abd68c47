//! Flags every service shares. Each flag has an environment fallback so that pods are configured
//! by environment (as the operator does) and local runs by flags.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Listening address, limits and shutdown behaviour of a service's HTTP server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Interface to listen on.
    #[arg(long, env = "HOST", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub host: IpAddr,
    /// Port to listen on (each service has its own default).
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,
    /// Longest time one request may take before it is answered with 504.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish before the process exits.
    #[arg(long, env = "SHUTDOWN_GRACE_PERIOD", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace_period: Duration,
    #[command(flatten)]
    pub log: LogArgs,
}

impl ServerArgs {
    pub fn listen_addr(&self, default_port: u16) -> SocketAddr {
        SocketAddr::new(self.host, self.port.unwrap_or(default_port))
    }
}

/// Log output settings.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,preprocessing=debug`); `RUST_LOG` wins when set.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// `plain` for people, `json` for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Parses a boolean the way people write it in environment variables. Unlike upstream, `false`
/// and `0` mean false (upstream treated any non-empty value as true).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    #[test]
    fn defaults_and_flags() {
        let cli = Cli::try_parse_from(["svc"]).expect("defaults parse");
        assert_eq!(
            cli.server.listen_addr(5010),
            "0.0.0.0:5010".parse().expect("addr")
        );
        assert_eq!(cli.server.request_timeout, Duration::from_secs(30));
        assert_eq!(cli.server.log.log_format, LogFormat::Plain);

        let cli = Cli::try_parse_from([
            "svc",
            "--host",
            "127.0.0.1",
            "--port",
            "6000",
            "--request-timeout",
            "1500ms",
            "--log-format",
            "json",
        ])
        .expect("flags parse");
        assert_eq!(
            cli.server.listen_addr(5010),
            "127.0.0.1:6000".parse().expect("addr")
        );
        assert_eq!(cli.server.request_timeout, Duration::from_millis(1500));
        assert_eq!(cli.server.log.log_format, LogFormat::Json);
    }

    #[test]
    fn rejects_nonsense() {
        assert!(Cli::try_parse_from(["svc", "--port", "70000"]).is_err());
        assert!(Cli::try_parse_from(["svc", "--request-timeout", "soon"]).is_err());
        assert!(Cli::try_parse_from(["svc", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn booleans_are_parsed_not_merely_present() {
        assert_eq!(parse_bool("false"), Some(false));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool(" TRUE "), Some(true));
        assert_eq!(parse_bool("1"), Some(true));
        assert_eq!(parse_bool("maybe"), None);
    }
}
