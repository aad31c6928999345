//! The marketplace's settings, parsed once from flags and environment.

use clap::{Args, Parser};
use platform::config::{count, millis};
use std::time::Duration;

/// Every setting of the marketplace; each is a `--flag` and an environment variable.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Config {
    /// Port of the web pages.
    #[arg(long, env = "HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,

    /// Port of the admin listener: /metrics, /healthz, /readyz.
    #[arg(long, env = "ADMIN_PORT", default_value_t = 9465)]
    pub admin_port: u16,

    /// Host name or IP address of the recommendations service.
    #[arg(long, env = "RECOMMENDATIONS_HOST", default_value = "localhost", value_parser = parse_host)]
    pub recommendations_host: String,

    /// gRPC port of the recommendations service.
    #[arg(long, env = "RECOMMENDATIONS_PORT", default_value_t = 50051)]
    pub recommendations_port: u16,

    /// Milliseconds a page waits for recommendations before showing a notice instead.
    #[arg(
        long = "recommendations-timeout-ms",
        env = "RECOMMENDATIONS_TIMEOUT_MS",
        value_name = "RECOMMENDATIONS_TIMEOUT_MS",
        default_value = "500",
        value_parser = millis(1..)
    )]
    pub recommendations_timeout: Duration,

    /// Milliseconds a client has to send a complete request head (from
    /// connecting, or from the head's first byte on a kept-alive connection);
    /// slower clients are disconnected.
    #[arg(
        long = "http-header-read-timeout-ms",
        env = "HTTP_HEADER_READ_TIMEOUT_MS",
        value_name = "HTTP_HEADER_READ_TIMEOUT_MS",
        default_value = "5000",
        value_parser = millis(100..=60_000)
    )]
    pub http_header_read_timeout: Duration,

    /// Milliseconds a kept-alive connection may sit idle before it is closed.
    /// Longer than any client pools one (the mesh's Envoy: an hour), since a
    /// close races the client reusing the connection.
    #[arg(
        long = "http-idle-timeout-ms",
        env = "HTTP_IDLE_TIMEOUT_MS",
        value_name = "HTTP_IDLE_TIMEOUT_MS",
        default_value = "3900000",
        value_parser = millis(1_000..=86_400_000)
    )]
    pub http_idle_timeout: Duration,

    /// The most bytes a request head (request line and headers) may take;
    /// larger ones are answered 431.
    #[arg(
        long,
        env = "HTTP_MAX_HEADER_BYTES",
        default_value = "16384",
        value_parser = count(8_192..=1_048_576)
    )]
    pub http_max_header_bytes: usize,

    /// The most page requests handled at once; past it a request is answered
    /// 503 with Retry-After at once instead of queueing.
    #[arg(
        long,
        env = "HTTP_MAX_CONCURRENT_REQUESTS",
        default_value = "256",
        value_parser = count(1..=65_536)
    )]
    pub http_max_concurrent_requests: usize,

    #[command(flatten)]
    pub channel: ChannelArgs,

    /// Jaeger's web UI, e.g. http://localhost:16686: pages then link to their trace.
    #[arg(long, env = "JAEGER_UI_URL", value_parser = platform::config::http_url)]
    pub jaeger_ui_url: Option<String>,

    #[command(flatten)]
    pub common: platform::config::CommonArgs,
}

/// The bounds of the channel to the recommendations service.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct ChannelArgs {
    /// Milliseconds between HTTP/2 PINGs on the connection to recommendations,
    /// idle or not: a peer that stopped answering is noticed, and the channel
    /// reconnects, instead of calls timing out on a dead connection.
    #[arg(
        long = "recommendations-keepalive-interval-ms",
        env = "RECOMMENDATIONS_KEEPALIVE_INTERVAL_MS",
        value_name = "RECOMMENDATIONS_KEEPALIVE_INTERVAL_MS",
        default_value = "10000",
        value_parser = millis(100..=3_600_000)
    )]
    pub keepalive_interval: Duration,

    /// Milliseconds to wait for a PING's answer before the connection counts
    /// as dead: calls on it fail UNAVAILABLE, and the next one reconnects.
    #[arg(
        long = "recommendations-keepalive-timeout-ms",
        env = "RECOMMENDATIONS_KEEPALIVE_TIMEOUT_MS",
        value_name = "RECOMMENDATIONS_KEEPALIVE_TIMEOUT_MS",
        default_value = "5000",
        value_parser = millis(100..=600_000)
    )]
    pub keepalive_timeout: Duration,

    /// The largest response message accepted from recommendations, in bytes;
    /// a larger one fails the call (OUT_OF_RANGE) and the page degrades.
    #[arg(
        long,
        env = "RECOMMENDATIONS_MAX_RESPONSE_BYTES",
        default_value = "65536",
        value_parser = count(1_024..=67_108_864)
    )]
    pub recommendations_max_response_bytes: usize,
}

impl Default for ChannelArgs {
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

impl Config {
    /// The bounds every connection to the pages is served under.
    pub fn connection_limits(&self) -> platform::http::ConnectionLimits {
        platform::http::ConnectionLimits {
            header_read_timeout: self.http_header_read_timeout,
            idle_timeout: self.http_idle_timeout,
            max_header_bytes: self.http_max_header_bytes,
        }
    }

    /// The recommendations service's address as a gRPC endpoint URI.
    pub fn recommendations_uri(&self) -> String {
        format!(
            "http://{}:{}",
            self.recommendations_host, self.recommendations_port
        )
    }
}

/// Accepts what can stand as the host of a URI, so a typo fails at start
/// with the setting's name rather than on the first page.
fn parse_host(value: &str) -> Result<String, String> {
    format!("http://{value}:1")
        .parse::<axum::http::Uri>()
        .ok()
        .filter(|uri| !value.is_empty() && uri.host() == Some(value))
        .map(|_| value.to_owned())
        .ok_or_else(|| "not a host name or IP address".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, error::ErrorKind};

    #[test]
    fn the_flags_are_consistent_and_named_by_their_environment_variables() {
        bookshop_test_support::settings::debug_assert_settings(Config::command());
    }

    #[test]
    fn defaults_match_the_design() {
        let config = Config::default();
        assert_eq!(config.http_port, 8080);
        assert_eq!(config.admin_port, 9465);
        assert_eq!(config.recommendations_uri(), "http://localhost:50051");
        assert_eq!(config.recommendations_timeout, Duration::from_millis(500));
        assert_eq!(config.jaeger_ui_url, None);
        assert_eq!(config.http_max_concurrent_requests, 256);
        assert_eq!(config.channel.keepalive_interval, Duration::from_secs(10));
        assert_eq!(config.channel.keepalive_timeout, Duration::from_secs(5));
        assert_eq!(config.channel.recommendations_max_response_bytes, 65_536);
        assert_eq!(
            config.connection_limits(),
            platform::http::ConnectionLimits {
                header_read_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(65 * 60),
                max_header_bytes: 16_384,
            }
        );
    }

    #[test]
    fn the_timings_are_read_in_milliseconds() {
        let config = Config::try_parse_from([
            "marketplace",
            "--recommendations-timeout-ms=1",
            "--http-header-read-timeout-ms=60000",
            "--http-idle-timeout-ms=90000",
            "--recommendations-keepalive-interval-ms=3600000",
            "--recommendations-keepalive-timeout-ms=100",
        ])
        .unwrap();
        assert_eq!(config.recommendations_timeout, Duration::from_millis(1));
        assert_eq!(config.http_header_read_timeout, Duration::from_secs(60));
        assert_eq!(config.http_idle_timeout, Duration::from_secs(90));
        assert_eq!(
            config.channel.keepalive_interval,
            Duration::from_secs(3_600)
        );
        assert_eq!(config.channel.keepalive_timeout, Duration::from_millis(100));
    }

    #[test]
    fn the_header_bounds_are_bounded_and_name_their_settings() {
        for (flag, bad, name) in [
            (
                "--http-header-read-timeout-ms",
                "0",
                "HTTP_HEADER_READ_TIMEOUT_MS",
            ),
            (
                "--http-header-read-timeout-ms",
                "60001",
                "HTTP_HEADER_READ_TIMEOUT_MS",
            ),
            ("--http-idle-timeout-ms", "999", "HTTP_IDLE_TIMEOUT_MS"),
            ("--http-idle-timeout-ms", "86400001", "HTTP_IDLE_TIMEOUT_MS"),
            ("--http-max-header-bytes", "8191", "HTTP_MAX_HEADER_BYTES"),
            (
                "--http-max-header-bytes",
                "1048577",
                "HTTP_MAX_HEADER_BYTES",
            ),
        ] {
            let err = Config::try_parse_from(["marketplace", flag, bad]).unwrap_err();
            assert!(err.to_string().contains(name), "{flag}={bad}: {err}");
        }
    }

    #[test]
    fn the_channel_bounds_are_bounded_and_name_their_settings() {
        for (flag, bad, name) in [
            (
                "--recommendations-keepalive-interval-ms",
                "99",
                "RECOMMENDATIONS_KEEPALIVE_INTERVAL_MS",
            ),
            (
                "--recommendations-keepalive-timeout-ms",
                "0",
                "RECOMMENDATIONS_KEEPALIVE_TIMEOUT_MS",
            ),
            (
                "--recommendations-max-response-bytes",
                "1023",
                "RECOMMENDATIONS_MAX_RESPONSE_BYTES",
            ),
        ] {
            let err = Config::try_parse_from(["marketplace", flag, bad]).unwrap_err();
            assert!(err.to_string().contains(name), "{flag}={bad}: {err}");
        }
    }

    #[test]
    fn the_concurrency_limit_is_bounded_and_names_its_setting() {
        for bad in ["0", "65537", "many"] {
            let err =
                Config::try_parse_from(["marketplace", "--http-max-concurrent-requests", bad])
                    .unwrap_err();
            assert!(
                err.to_string().contains("HTTP_MAX_CONCURRENT_REQUESTS"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_jaeger_ui_url_must_be_an_http_url() {
        let config = Config::try_parse_from([
            "marketplace",
            "--jaeger-ui-url",
            "https://jaeger.example/ui",
        ])
        .unwrap();
        assert_eq!(
            config.jaeger_ui_url.as_deref(),
            Some("https://jaeger.example/ui")
        );
        for bad in ["jaeger:16686", "ftp://jaeger", "http://"] {
            let err = Config::try_parse_from(["marketplace", "--jaeger-ui-url", bad]).unwrap_err();
            assert!(err.to_string().contains("JAEGER_UI_URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_zero_timeout_is_rejected_naming_the_setting() {
        let err = Config::try_parse_from(["marketplace", "--recommendations-timeout-ms", "0"])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(
            err.to_string().contains("RECOMMENDATIONS_TIMEOUT_MS"),
            "{err}"
        );
    }

    #[test]
    fn a_host_that_cannot_be_in_a_uri_is_rejected() {
        for host in ["", "two words", "a/b", "host:80"] {
            let result = Config::try_parse_from(["marketplace", "--recommendations-host", host]);
            assert!(result.is_err(), "{host:?} was accepted");
        }
        let config =
            Config::try_parse_from(["marketplace", "--recommendations-host", "10.0.0.7"]).unwrap();
        assert_eq!(config.recommendations_uri(), "http://10.0.0.7:50051");
    }
}
