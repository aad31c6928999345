//! The service's settings, parsed once from flags and environment before anything binds.

use clap::{Args, Parser};
use platform::config::{CommonArgs, count, millis};
use std::{path::PathBuf, time::Duration};

/// Every setting of the service; `--help` lists them with their environment names.
#[derive(Parser, Debug, Clone, PartialEq)]
#[command(version, about)]
pub struct Config {
    /// Port of the gRPC listener (Recommendations, grpc.health.v1, reflection).
    #[arg(long, env = "GRPC_PORT", default_value_t = 50051)]
    pub grpc_port: u16,

    /// Port of the admin listener (/metrics, /healthz, /readyz).
    #[arg(long, env = "ADMIN_PORT", default_value_t = 9464)]
    pub admin_port: u16,

    /// A JSON catalog to serve instead of the embedded one.
    #[arg(long, env = "CATALOG_PATH")]
    pub catalog_path: Option<PathBuf>,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// The bounds every call is served under.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct Limits {
    /// The most Recommend calls handled at once; past it a call is answered
    /// RESOURCE_EXHAUSTED at once instead of queueing. Health checks and
    /// reflection are not limited.
    #[arg(
        long,
        env = "GRPC_MAX_CONCURRENT_CALLS",
        default_value = "256",
        value_parser = count(1..=65_536)
    )]
    pub grpc_max_concurrent_calls: usize,

    /// Milliseconds a call may take before it is cut off (CANCELLED); a
    /// caller's shorter `grpc-timeout` applies instead.
    #[arg(
        long = "grpc-request-timeout-ms",
        env = "GRPC_REQUEST_TIMEOUT_MS",
        value_name = "GRPC_REQUEST_TIMEOUT_MS",
        default_value = "5000",
        value_parser = millis(1..=600_000)
    )]
    pub request_timeout: Duration,

    /// The largest request message accepted, in bytes (OUT_OF_RANGE past it).
    #[arg(
        long,
        env = "GRPC_MAX_REQUEST_BYTES",
        default_value = "4096",
        value_parser = count(256..=4_194_304)
    )]
    pub grpc_max_request_bytes: usize,

    /// The largest response message sent, in bytes (the call fails
    /// OUT_OF_RANGE rather than send more).
    #[arg(
        long,
        env = "GRPC_MAX_RESPONSE_BYTES",
        default_value = "65536",
        value_parser = count(1_024..=67_108_864)
    )]
    pub grpc_max_response_bytes: usize,
}

impl Default for Limits {
    /// The flags' defaults.
    fn default() -> Self {
        platform::config::defaults()
    }
}

impl Default for Config {
    /// The flags' defaults; the environment is not read.
    fn default() -> Self {
        platform::config::defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flags_are_consistent_and_named_by_their_environment_variables() {
        bookshop_test_support::settings::debug_assert_settings(Config::command());
    }

    #[test]
    fn defaults_match_the_design() {
        let config = Config::default();
        assert_eq!(config.grpc_port, 50051);
        assert_eq!(config.admin_port, 9464);
        assert_eq!(config.catalog_path, None);
        assert_eq!(config.limits.grpc_max_concurrent_calls, 256);
        assert_eq!(config.limits.request_timeout, Duration::from_secs(5));
        assert_eq!(config.limits.grpc_max_request_bytes, 4_096);
        assert_eq!(config.limits.grpc_max_response_bytes, 65_536);
    }

    #[test]
    fn the_request_timeout_is_read_in_milliseconds() {
        let config =
            Config::try_parse_from(["recommendations", "--grpc-request-timeout-ms=250"]).unwrap();
        assert_eq!(config.limits.request_timeout, Duration::from_millis(250));
    }

    #[test]
    fn each_limit_is_bounded_and_names_its_setting() {
        for (flag, bad, name) in [
            (
                "--grpc-max-concurrent-calls",
                "0",
                "GRPC_MAX_CONCURRENT_CALLS",
            ),
            ("--grpc-request-timeout-ms", "0", "GRPC_REQUEST_TIMEOUT_MS"),
            (
                "--grpc-request-timeout-ms",
                "600001",
                "GRPC_REQUEST_TIMEOUT_MS",
            ),
            ("--grpc-max-request-bytes", "255", "GRPC_MAX_REQUEST_BYTES"),
            (
                "--grpc-max-response-bytes",
                "many",
                "GRPC_MAX_RESPONSE_BYTES",
            ),
        ] {
            let err = Config::try_parse_from(["recommendations", flag, bad]).unwrap_err();
            assert!(err.to_string().contains(name), "{flag}={bad}: {err}");
        }
    }

    #[test]
    fn a_bad_port_is_rejected_naming_the_setting() {
        let err = Config::try_parse_from(["recommendations", "--grpc-port", "abc"]).unwrap_err();
        assert!(err.to_string().contains("GRPC_PORT"), "{err}");
    }
}
