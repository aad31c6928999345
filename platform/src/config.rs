//! Settings shared by every service, and parsing that fails the way
//! docs/design.md asks: one line naming the setting, exit code 64 (EX_USAGE).

use clap::{
    ArgAction, Args, Command, Parser, ValueEnum,
    builder::{BoolishValueParser, RangedU64ValueParser, TypedValueParser},
    error::ErrorKind,
};
use std::{fmt::Display, ops::RangeBounds, process::ExitCode, time::Duration};

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
    #[arg(long = "shutdown-delay-seconds", env = "SHUTDOWN_DELAY_SECONDS",
          value_name = "SHUTDOWN_DELAY_SECONDS", default_value = "5", value_parser = seconds(..))]
    pub shutdown_delay: Duration,

    /// The most seconds given to in-flight requests once listeners close.
    #[arg(long = "shutdown-timeout-seconds", env = "SHUTDOWN_TIMEOUT_SECONDS",
          value_name = "SHUTDOWN_TIMEOUT_SECONDS", default_value = "20", value_parser = seconds(..))]
    pub shutdown_timeout: Duration,

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

impl Default for CommonArgs {
    fn default() -> Self {
        defaults()
    }
}

impl Default for TraceArgs {
    fn default() -> Self {
        defaults()
    }
}

/// The sampler names of the OpenTelemetry specification.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[value(rename_all = "snake_case")]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    #[value(name = "traceidratio")]
    TraceIdRatio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    #[value(name = "parentbased_traceidratio")]
    ParentbasedTraceIdRatio,
}

/// How log lines are written.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Accepts an `http://` or `https://` URL with a host: a clap value parser
/// for settings that name a server.
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

fn parse_log_filter(value: &str) -> Result<String, String> {
    let filter = tracing_subscriber::EnvFilter::builder().parse(value);
    filter.map(|_| value.to_owned()).map_err(|e| e.to_string())
}

/// Whole milliseconds in `range`, as a [`Duration`]: a clap value parser for
/// settings named `…_MS`, whose errors speak in that unit ("0 is not in 1..=600000").
pub fn millis(range: impl RangeBounds<u64>) -> impl TypedValueParser<Value = Duration> {
    RangedU64ValueParser::<u64>::from(range).map(Duration::from_millis)
}

/// Whole seconds in `range`: [`millis`] for settings named `…_SECONDS`.
pub fn seconds(range: impl RangeBounds<u64>) -> impl TypedValueParser<Value = Duration> {
    RangedU64ValueParser::<u64>::from(range).map(Duration::from_secs)
}

/// A whole number in `range`, as a `usize`: for counts and sizes in bytes.
pub fn count(range: impl RangeBounds<u64>) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::from(range)
}

/// The settings `T` holds when none is given: its flags' defaults, the one
/// place they are written. The environment is not read, so tests starting
/// from them see the same values whatever variables are set.
pub fn defaults<T: Args>() -> T {
    let command = T::augment_args(Command::new("defaults")).mut_args(|arg| arg.env(None));
    let parsed = command
        .try_get_matches_from(["defaults"])
        .and_then(|matches| T::from_arg_matches(&matches));
    parsed.unwrap_or_else(|err| panic!("the flags' defaults do not parse: {err}"))
}

/// Parses the command line and environment into `T`. `--help` and
/// `--version` print and exit 0; any other problem prints one line naming
/// the setting and exits with [`EX_USAGE`].
pub fn parse<T: Parser>() -> T {
    T::try_parse().unwrap_or_else(|err| match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => err.exit(),
        _ => {
            let rendered = err.render().to_string();
            eprintln!("{}", rendered.lines().next().unwrap_or("invalid settings"));
            std::process::exit(EX_USAGE.into())
        }
    })
}

/// Reports a startup problem caused by a bad setting (a bad catalog file, say)
/// as one line, and returns the EX_USAGE exit code.
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
        let common = CommonArgs::default();
        assert_eq!(common.rust_log, "info");
        assert_eq!(common.shutdown_delay, Duration::from_secs(5));
        assert_eq!(common.shutdown_timeout, Duration::from_secs(20));
        assert_eq!(common.log_format, None);
    }

    #[test]
    fn the_shutdown_timings_are_read_in_seconds_and_named_by_their_variables() {
        let config = TestConfig::try_parse_from([
            "test",
            "--shutdown-delay-seconds=0",
            "--shutdown-timeout-seconds=3",
        ])
        .unwrap();
        assert_eq!(config.common.shutdown_delay, Duration::ZERO);
        assert_eq!(config.common.shutdown_timeout, Duration::from_secs(3));
        for (flag, name) in [
            ("--shutdown-delay-seconds", "SHUTDOWN_DELAY_SECONDS"),
            ("--shutdown-timeout-seconds", "SHUTDOWN_TIMEOUT_SECONDS"),
        ] {
            for bad in ["-1", "1.5", "5s", ""] {
                let arg = format!("{flag}={bad}");
                let err = TestConfig::try_parse_from(["test", &arg]).unwrap_err();
                assert!(err.to_string().contains(name), "{arg}: {err}");
            }
        }
    }

    /// Settings of each parser, as a service would declare them.
    #[derive(Parser, Debug)]
    struct Bounded {
        #[arg(long = "timeout-ms", value_name = "TIMEOUT_MS", default_value = "500",
              value_parser = millis(1..=600_000))]
        timeout: Duration,
        #[arg(long = "delay-seconds", value_name = "DELAY_SECONDS", default_value = "5",
              value_parser = seconds(..=60))]
        delay: Duration,
        #[arg(long, default_value = "4096", value_parser = count(256..=4_194_304))]
        max_bytes: usize,
        /// Always set where tests run: shows whether the environment is read.
        #[arg(long, env = "PATH", default_value = "")]
        path: String,
    }

    fn parse_bounded(args: &[&str]) -> Result<Bounded, clap::Error> {
        Bounded::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
    }

    #[test]
    fn millis_and_seconds_accept_their_bounds_in_their_unit() {
        let low = parse_bounded(&["--timeout-ms=1", "--delay-seconds=0", "--max-bytes=256"]);
        let low = low.unwrap();
        assert_eq!(low.timeout, Duration::from_millis(1));
        assert_eq!(low.delay, Duration::ZERO);
        assert_eq!(low.max_bytes, 256);
        let high = parse_bounded(&[
            "--timeout-ms=600000",
            "--delay-seconds=60",
            "--max-bytes=4194304",
        ]);
        let high = high.unwrap();
        assert_eq!(high.timeout, Duration::from_secs(600));
        assert_eq!(high.delay, Duration::from_secs(60));
        assert_eq!(high.max_bytes, 4_194_304);
    }

    #[test]
    fn out_of_range_values_are_rejected_naming_the_setting_and_the_bounds() {
        for (arg, message) in [
            (
                "--timeout-ms=0",
                "invalid value '0' for '--timeout-ms <TIMEOUT_MS>': 0 is not in 1..=600000",
            ),
            (
                "--timeout-ms=600001",
                "invalid value '600001' for '--timeout-ms <TIMEOUT_MS>': 600001 is not in 1..=600000",
            ),
            (
                "--delay-seconds=61",
                "invalid value '61' for '--delay-seconds <DELAY_SECONDS>': 61 is not in 0..=60",
            ),
            (
                "--max-bytes=255",
                "invalid value '255' for '--max-bytes <MAX_BYTES>': 255 is not in 256..=4194304",
            ),
        ] {
            let err = parse_bounded(&[arg]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{arg}");
            let first_line = err.to_string().lines().next().unwrap().to_owned();
            assert_eq!(first_line, format!("error: {message}"));
        }
    }

    #[test]
    fn what_is_not_a_whole_number_is_rejected_naming_the_setting() {
        for arg in ["--timeout-ms", "--delay-seconds", "--max-bytes"] {
            for bad in ["", "abc", "-1", "1.5", "5s", "18446744073709551616"] {
                let err = parse_bounded(&[&format!("{arg}={bad}")]).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::ValueValidation, "{arg}={bad}");
                let name = arg
                    .trim_start_matches("--")
                    .replace('-', "_")
                    .to_uppercase();
                assert!(err.to_string().contains(&name), "{arg}={bad}: {err}");
            }
        }
    }

    #[test]
    fn defaults_are_the_flags_defaults_and_never_read_the_environment() {
        let defaults: Bounded = defaults();
        assert_eq!(defaults.timeout, Duration::from_millis(500));
        assert_eq!(defaults.delay, Duration::from_secs(5));
        assert_eq!(defaults.max_bytes, 4_096);
        assert_eq!(defaults.path, "");
        // Parsing the command line does read it, which is what the services want.
        if std::env::var_os("PATH").is_some_and(|path| !path.is_empty()) {
            assert_ne!(parse_bounded(&[]).unwrap().path, "");
        }
    }

    #[test]
    fn the_common_settings_are_named_by_their_environment_variables() {
        use clap::CommandFactory;
        bookshop_test_support::settings::debug_assert_settings(TestConfig::command());
    }

    #[test]
    fn a_bad_log_filter_is_rejected_naming_the_setting() {
        let err = TestConfig::try_parse_from(["test", "--rust-log", "foo=notalevel"]).unwrap_err();
        assert!(err.to_string().contains("RUST_LOG"), "{err}");
    }

    #[test]
    fn the_otel_settings_default_to_the_specification() {
        let traces = TraceArgs::default();
        assert_eq!(traces.otel_exporter_otlp_endpoint, None);
        assert_eq!(traces.otel_service_name, None);
        assert_eq!(traces.otel_traces_sampler, Sampler::ParentbasedAlwaysOn);
        assert_eq!(traces.otel_traces_sampler_arg, 1.0);
        assert!(!traces.otel_sdk_disabled);
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
