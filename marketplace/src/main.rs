//! The `marketplace` binary: config → telemetry → bind → serve until a signal → flush.

use marketplace::{App, Config};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // A bad setting exits here with one line and EX_USAGE, before anything binds.
    let config: Config = platform::config::parse();
    let telemetry = match platform::telemetry::init("marketplace", &config.common) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("error: cannot set up telemetry: {err:#}");
            return ExitCode::FAILURE;
        }
    };

    let app = match App::bind(config).await {
        Ok(app) => app,
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
