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
    // Listen for SIGTERM and Ctrl-C now, before anything is served: the trigger
    // installs its handlers when first polled, and a signal that came between
    // the first request and that poll would kill the process with the default
    // action instead of shutting it down gracefully.
    let mut trigger = Box::pin(platform::shutdown::signal());
    let signalled = tokio::select! {
        biased;
        () = &mut trigger => true,
        () = std::future::ready(()) => false,
    };
    let trigger = async move {
        if !signalled {
            trigger.await;
        }
    };
    let result = app.run(trigger).await;

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
