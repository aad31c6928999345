//! The error log: one line per failed call, at the level its code deserves.

use crate::helpers::{ECHO, spawn_app};
use opentelemetry::trace::SpanKind;
use tonic::Code;
use tracing::Level;

#[tokio::test(flavor = "current_thread")]
async fn a_failed_call_is_logged_once_with_its_code_message_and_trace_id() {
    let app = spawn_app().await;
    app.echo(Code::NotFound, "no such echo").await.unwrap_err();

    let [line] = app
        .logs
        .with_message("gRPC call failed")
        .try_into()
        .unwrap();
    assert_eq!(line.level, Level::WARN, "the caller's fault");
    assert_eq!(line.field("method"), Some(ECHO));
    assert_eq!(line.field("code"), Some("NotFound"));
    assert_eq!(line.field("status_message"), Some("no such echo"));
    let server = app
        .spans
        .named(ECHO)
        .into_iter()
        .find(|span| span.span_kind == SpanKind::Server)
        .unwrap();
    let (trace_id, _) = line.ids.expect("logged inside the call's span");
    assert_eq!(trace_id, server.span_context.trace_id());
}

#[tokio::test(flavor = "current_thread")]
async fn server_faults_are_logged_as_errors_and_successes_not_at_all() {
    let app = spawn_app().await;
    app.echo(Code::Ok, "fine").await.unwrap();
    for code in [
        Code::Internal,
        Code::Unknown,
        Code::DataLoss,
        Code::Unavailable,
    ] {
        app.echo(code, "our fault").await.unwrap_err();
    }
    app.echo(Code::InvalidArgument, "their fault")
        .await
        .unwrap_err();

    let lines = app.logs.with_message("gRPC call failed");
    let logged: Vec<_> = lines
        .iter()
        .map(|line| (line.field("code").unwrap(), line.level))
        .collect();
    assert_eq!(
        logged,
        [
            ("Internal", Level::ERROR),
            ("Unknown", Level::ERROR),
            ("DataLoss", Level::ERROR),
            ("Unavailable", Level::ERROR),
            ("InvalidArgument", Level::WARN),
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_call_its_caller_gives_up_is_logged_once_as_canceled() {
    let mut app = spawn_app().await;
    app.give_up_on_a_call().await;
    app.wait_until_abandoned().await;

    let [line] = app
        .logs
        .with_message("gRPC call failed")
        .try_into()
        .unwrap();
    assert_eq!(line.field("code"), Some("Canceled"));
    assert_eq!(line.level, Level::WARN);
    assert!(line.ids.is_some(), "logged inside the call's span");
}
