//! Logging setup: JSON lines for machines, readable text for people.

use crate::config::{CommonArgs, LogFormat};
use std::io::IsTerminal;
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// Holds what must be flushed when the process ends; call
/// [`Telemetry::shutdown`] after serving stopped, as the last step.
#[must_use = "keep the guard and call shutdown() after serving ends"]
#[derive(Debug)]
pub struct Telemetry {
    service: &'static str,
}

/// Installs the global logger for `service`.
///
/// Fails if the filter is invalid or a global logger is already installed.
pub fn init(service: &'static str, args: &CommonArgs) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::builder().parse(&args.rust_log)?;
    let format = args
        .log_format
        .unwrap_or(if std::io::stdout().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        });
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .try_init()?,
        LogFormat::Text => registry.with(fmt::layer()).try_init()?,
    }
    tracing::info!(
        service,
        version = env!("CARGO_PKG_VERSION"),
        "telemetry ready"
    );
    Ok(Telemetry { service })
}

impl Telemetry {
    /// Flushes what is buffered. Logs are written synchronously, so today
    /// this only records the end; trace export will flush here.
    pub fn shutdown(self) {
        tracing::info!(service = self.service, "stopped");
    }
}
