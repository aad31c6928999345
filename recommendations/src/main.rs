//! The `recommendations` binary: config → telemetry → bind → serve until a signal → flush.

use recommendations::{App, Config, StartupError};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // A bad setting exits here with one line and EX_USAGE.
    let config: Config = platform::config::parse();
    let telemetry = match platform::telemetry::init("recommendations", &config.common) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("error: cannot set up telemetry: {err:#}");
            return ExitCode::FAILURE;
        }
    };

    let app = match App::bind(config).await {
        Ok(app) => app,
        // A bad catalog file is a bad setting, like a bad port number.
        Err(StartupError::Catalog(err)) => return platform::config::usage_error(err),
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = app.run(platform::shutdown::signal()).await;

    // Last, so that the shutdown's own logs and spans are flushed too.
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
