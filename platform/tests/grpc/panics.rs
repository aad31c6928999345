//! A panicking handler: INTERNAL for the caller, counted and logged, server up.

use crate::helpers::{ECHO, echo_labels, spawn_app};
use bookshop_test_support::dummy::v1::EchoRequest;
use bookshop_test_support::metrics::value;
use tonic::Code;
use tracing::Level;

#[tokio::test(flavor = "current_thread")]
async fn a_panicking_handler_answers_internal_and_the_next_call_succeeds() {
    let app = spawn_app().await;
    let request = EchoRequest {
        message: "secret detail".into(),
        panic: true,
        ..EchoRequest::default()
    };
    let status = app.client.clone().echo(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(
        status.message(),
        "internal error",
        "nothing of the panic leaks"
    );

    let answer = app.echo(Code::Ok, "still here").await.unwrap();
    assert_eq!(answer.message, "still here");

    let registry = &app.server_registry;
    assert_eq!(value(registry, "grpc_server_panics_total", &[]), Some(1.0));
    let internal = echo_labels(&[("grpc_code", "Internal")]);
    assert_eq!(
        value(registry, "grpc_server_handled_total", &internal),
        Some(1.0)
    );
    let ok = echo_labels(&[("grpc_code", "OK")]);
    assert_eq!(value(registry, "grpc_server_handled_total", &ok), Some(1.0));
}

#[tokio::test(flavor = "current_thread")]
async fn a_panic_is_logged_with_its_text_inside_the_calls_span() {
    let app = spawn_app().await;
    let request = EchoRequest {
        message: "the detail".into(),
        panic: true,
        ..EchoRequest::default()
    };
    app.client.clone().echo(request).await.unwrap_err();

    let [panic] = app
        .logs
        .with_message("a gRPC handler panicked")
        .try_into()
        .unwrap();
    assert_eq!(panic.level, Level::ERROR);
    assert_eq!(panic.field("panic"), Some("the dummy panics: the detail"));
    assert!(panic.ids.is_some(), "logged inside the call's span");
    let [failed] = app
        .logs
        .with_message("gRPC call failed")
        .try_into()
        .unwrap();
    assert_eq!(failed.field("code"), Some("Internal"));
    assert_eq!(failed.field("method"), Some(ECHO));
    assert_eq!(failed.ids, panic.ids);
}
