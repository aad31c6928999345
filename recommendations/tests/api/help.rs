//! `--help` and `--version` of the real binary: printed in full on stdout with
//! exit code 0, unlike a bad setting (one line, 64). The deploy checks read
//! `--help` to learn which variables a binary accepts.

use bookshop_test_support::process;

fn binary(arg: &str) -> tokio::process::Command {
    let mut command = process::command(env!("CARGO_BIN_EXE_recommendations"));
    command.arg(arg);
    command
}

#[tokio::test]
async fn help_lists_every_setting_with_its_variable_and_exits_0() {
    let output = process::output(&mut binary("--help")).await;
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    for variable in [
        "GRPC_PORT",
        "GRPC_MAX_CONCURRENT_CALLS",
        "SHUTDOWN_DELAY_SECONDS",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(stdout.contains(&format!("[env: {variable}=")), "{stdout}");
    }
}

#[tokio::test]
async fn version_prints_the_name_and_version_and_exits_0() {
    let output = process::output(&mut binary("--version")).await;
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.trim(),
        concat!("recommendations ", env!("CARGO_PKG_VERSION"))
    );
}
