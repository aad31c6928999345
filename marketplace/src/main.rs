//! The `marketplace` binary: config → telemetry → bind → serve until a signal → flush.

use marketplace::{App, Config};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // A bad setting exits here with one line and EX_USAGE, before anything binds.
    let config = platform::config::parse::<Config>();
    let telemetry = match platform::telemetry::init("marketplace", &config.common) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("error: cannot start telemetry: {err:#}");
            return ExitCode::FAILURE;
        }
    };

    let result = serve(config).await;
    // Flushed last, so the shutdown's own log lines are exported too.
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::bind(config).await?;
    app.run(platform::shutdown::signal()).await
}
