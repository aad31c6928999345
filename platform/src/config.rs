//! Settings shared by every service, and parsing that fails the way docs/design.md
//! asks: one line naming the setting, exit code 64 (EX_USAGE).

use clap::{ArgAction, Args, Parser, ValueEnum, builder::BoolishValueParser, error::ErrorKind};
use std::{fmt::Display, process::ExitCode, time::Duration};

/// `sysexits.h` EX_USAGE: the process was started with a bad setting.
pub const EX_USAGE: u8 = 64;

/// Settings every service has: logging and the shutdown timings.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct CommonArgs {
    /// Log filter, in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub rust_log: String,

    /// Log line format; json when stdout is not a terminal, text otherwise.
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Seconds to keep serving after turning not-ready, so that endpoints
    /// and sidecars stop routing to this pod first.
    #[arg(long, env = "SHUTDOWN_DELAY_SECONDS", default_value_t = 5)]
    pub shutdown_delay_seconds: u64,

    /// The most seconds given to in-flight requests once listeners close.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 20)]
    pub shutdown_timeout_seconds: u64,

    #[command(flatten)]
    pub traces: TraceArgs,
}

/// The standard OpenTelemetry settings this process honours.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct TraceArgs {
    /// OTLP/gRPC collector, e.g. http://localhost:4317; traces are exported
    /// only when it is set.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = http_url)]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// The `service.name` of traces (default: the binary's name).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,

    /// Which traces to record.
    #[arg(long, env = "OTEL_TRACES_SAMPLER", value_enum, default_value_t = Sampler::ParentbasedAlwaysOn)]
    pub otel_traces_sampler: Sampler,

    /// The ratio for the `*traceidratio` samplers, from 0 to 1.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0, value_parser = parse_ratio)]
    pub otel_traces_sampler_arg: f64,

    /// Turns tracing off entirely (no spans, no trace ids in logs).
    #[arg(long, env = "OTEL_SDK_DISABLED", default_value_t = false, action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub otel_sdk_disabled: bool,
}

impl Default for TraceArgs {
    fn default() -> Self {
        Self {
            otel_exporter_otlp_endpoint: None,
            otel_service_name: None,
            otel_traces_sampler: Sampler::ParentbasedAlwaysOn,
            otel_traces_sampler_arg: 1.0,
            otel_sdk_disabled: false,
        }
    }
}

/// The sampler names of the OpenTelemetry specification.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    #[value(name = "always_on")]
    AlwaysOn,
    #[value(name = "always_off")]
    AlwaysOff,
    #[value(name = "traceidratio")]
    TraceIdRatio,
    #[value(name = "parentbased_always_on")]
    ParentbasedAlwaysOn,
    #[value(name = "parentbased_always_off")]
    ParentbasedAlwaysOff,
    #[value(name = "parentbased_traceidratio")]
    ParentbasedTraceIdRatio,
}

/// Accepts an `http://` or `https://` URL with a host: a clap value parser for
/// settings that name a server.
pub fn http_url(value: &str) -> Result<String, String> {
    let uri: axum::http::Uri = value.parse().map_err(|e| format!("{e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(value.to_owned()),
        _ => Err("expected an http:// or https:// URL with a host".into()),
    }
}

fn parse_ratio(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err("expected a number from 0 to 1".into()),
    }
}

impl Default for CommonArgs {
    /// The defaults of the flags, but with no shutdown delay: what tests want.
    fn default() -> Self {
        Self {
            rust_log: "info".into(),
            log_format: None,
            shutdown_delay_seconds: 0,
            shutdown_timeout_seconds: 20,
            traces: TraceArgs::default(),
        }
    }
}

impl CommonArgs {
    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_secs(self.shutdown_delay_seconds)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_seconds)
    }
}

/// How log lines are written.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

fn parse_log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map(|_| value.to_owned())
        .map_err(|e| e.to_string())
}

/// Parses the command line and environment into `T`.
///
/// `--help` and `--version` print and exit 0; any other problem prints one
/// line naming the setting (clap's value name is the environment variable's
/// name) and exits with [`EX_USAGE`].
pub fn parse<T: Parser>() -> T {
    T::try_parse().unwrap_or_else(|err| match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => err.exit(),
        _ => {
            let rendered = err.render().to_string();
            let line = rendered.lines().next().unwrap_or("invalid settings");
            eprintln!("{line}");
            std::process::exit(EX_USAGE.into())
        }
    })
}

/// Reports a startup problem caused by a bad setting (for example a bad
/// catalog file) as one line, and returns the EX_USAGE exit code.
pub fn usage_error(problem: impl Display) -> ExitCode {
    eprintln!("error: {problem}");
    ExitCode::from(EX_USAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct TestConfig {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn defaults_match_the_design() {
        let config = TestConfig::try_parse_from(["test"]).unwrap();
        assert_eq!(config.common.rust_log, "info");
        assert_eq!(config.common.shutdown_delay(), Duration::from_secs(5));
        assert_eq!(config.common.shutdown_timeout(), Duration::from_secs(20));
        assert_eq!(config.common.log_format, None);
    }

    #[test]
    fn a_bad_log_filter_is_rejected_naming_the_setting() {
        let err = TestConfig::try_parse_from(["test", "--rust-log", "foo=notalevel"]).unwrap_err();
        assert!(err.to_string().contains("RUST_LOG"), "{err}");
    }

    #[test]
    fn the_otel_settings_default_to_the_specification() {
        let config = TestConfig::try_parse_from(["test"]).unwrap();
        assert_eq!(config.common.traces, TraceArgs::default());
    }

    #[test]
    fn otel_settings_are_parsed_and_checked() {
        let config = TestConfig::try_parse_from([
            "test",
            "--otel-exporter-otlp-endpoint=http://collector:4317",
            "--otel-traces-sampler=parentbased_traceidratio",
            "--otel-traces-sampler-arg=0.1",
            "--otel-sdk-disabled=true",
        ])
        .unwrap();
        let traces = config.common.traces;
        assert_eq!(
            traces.otel_exporter_otlp_endpoint.as_deref(),
            Some("http://collector:4317")
        );
        assert_eq!(traces.otel_traces_sampler, Sampler::ParentbasedTraceIdRatio);
        assert_eq!(traces.otel_traces_sampler_arg, 0.1);
        assert!(traces.otel_sdk_disabled);
        for bad in [
            "--otel-exporter-otlp-endpoint=collector:4317",
            "--otel-traces-sampler=sometimes",
            "--otel-traces-sampler-arg=1.5",
            "--otel-sdk-disabled=maybe",
        ] {
            let err = TestConfig::try_parse_from(["test", bad]).unwrap_err();
            assert!(err.to_string().contains("OTEL_"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_unknown_log_format_is_rejected() {
        let err = TestConfig::try_parse_from(["test", "--log-format", "xml"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        assert!(err.to_string().contains("LOG_FORMAT"), "{err}");
    }
}
