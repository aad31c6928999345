//! Spans and access lines: one trace from the client span to the server span.

use crate::helpers::{ECHO, attribute, spawn_app};
use bookshop_test_support::dummy::v1::EchoRequest;
use opentelemetry::trace::{SpanKind, Status as SpanStatus};
use tonic::Code;
use tracing::Instrument as _;

#[tokio::test(flavor = "current_thread")]
async fn the_server_span_continues_the_trace_of_the_client_span() {
    let app = spawn_app().await;
    let answer = app.echo(Code::Ok, "hello").await.unwrap();

    let [client] = app
        .spans
        .named(ECHO)
        .into_iter()
        .filter(|span| span.span_kind == SpanKind::Client)
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let [server] = app
        .spans
        .named(ECHO)
        .into_iter()
        .filter(|span| span.span_kind == SpanKind::Server)
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let client_ids = &client.span_context;
    assert_eq!(server.span_context.trace_id(), client_ids.trace_id());
    assert_eq!(server.parent_span_id, client_ids.span_id());
    assert!(server.parent_span_is_remote);
    // What travelled: W3C `traceparent` naming the client span.
    assert_eq!(
        answer.traceparent,
        format!("00-{}-{}-01", client_ids.trace_id(), client_ids.span_id())
    );

    for span in [&client, &server] {
        assert_eq!(attribute(span, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(
            attribute(span, "rpc.service").as_deref(),
            Some("dummy.v1.Dummy")
        );
        assert_eq!(attribute(span, "rpc.method").as_deref(), Some("Echo"));
        assert_eq!(
            attribute(span, "rpc.grpc.status_code").as_deref(),
            Some("0")
        );
        assert_eq!(span.status, SpanStatus::Unset);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_client_span_is_a_child_of_the_callers_span() {
    let app = spawn_app().await;
    let page = tracing::info_span!("page");
    app.echo(Code::Ok, "hello")
        .instrument(page.clone())
        .await
        .unwrap();
    drop(page);

    let [page] = app.spans.named("page").try_into().unwrap();
    let client = app
        .spans
        .named(ECHO)
        .into_iter()
        .find(|span| span.span_kind == SpanKind::Client)
        .unwrap();
    assert_eq!(client.parent_span_id, page.span_context.span_id());
    assert_eq!(client.span_context.trace_id(), page.span_context.trace_id());
}

#[tokio::test(flavor = "current_thread")]
async fn a_server_span_fails_only_for_server_faults_and_a_client_span_for_any_error() {
    let app = spawn_app().await;
    app.echo(Code::NotFound, "no such echo").await.unwrap_err();
    app.echo(Code::Internal, "broken").await.unwrap_err();

    let spans = app.spans.named(ECHO);
    let status_of = |kind: SpanKind, code: &str| {
        spans
            .iter()
            .find(|span| {
                span.span_kind == kind
                    && attribute(span, "rpc.grpc.status_code").as_deref() == Some(code)
            })
            .map(|span| span.status.clone())
            .unwrap()
    };
    assert_eq!(status_of(SpanKind::Server, "5"), SpanStatus::Unset);
    assert_eq!(
        status_of(SpanKind::Server, "13"),
        SpanStatus::error("broken")
    );
    assert_eq!(
        status_of(SpanKind::Client, "5"),
        SpanStatus::error("no such echo")
    );
    assert_eq!(
        status_of(SpanKind::Client, "13"),
        SpanStatus::error("broken")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn each_side_writes_one_access_line_per_call_inside_its_span() {
    let app = spawn_app().await;
    app.echo(Code::Ok, "hello").await.unwrap();
    app.echo(Code::InvalidArgument, "bad").await.unwrap_err();

    for (message, kind) in [
        ("gRPC call handled", SpanKind::Server),
        ("gRPC call finished", SpanKind::Client),
    ] {
        let lines = app.logs.with_message(message);
        let codes: Vec<_> = lines
            .iter()
            .map(|line| line.field("code").unwrap())
            .collect();
        assert_eq!(codes, ["OK", "InvalidArgument"], "{message}");
        let spans: Vec<_> = app
            .spans
            .named(ECHO)
            .into_iter()
            .filter(|span| span.span_kind == kind)
            .collect();
        // One span per line, so the pairs below cover every line.
        assert_eq!(spans.len(), lines.len(), "{message}: {spans:#?}");
        for (line, span) in lines.iter().zip(&spans) {
            assert_eq!(line.level, tracing::Level::INFO);
            assert_eq!(line.field("method"), Some(ECHO));
            let duration: f64 = line.field("duration_ms").unwrap().parse().unwrap();
            // A real call over TCP takes some time, and far less than a test's bound.
            assert!(
                duration > 0.0 && duration < bookshop_test_support::WAIT.as_secs_f64() * 1000.0,
                "{duration}"
            );
            let ids = (span.span_context.trace_id(), span.span_context.span_id());
            assert_eq!(line.ids, Some(ids), "{message} in its span");
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_unknown_method_gets_a_fixed_span_name_and_its_path_only_in_the_access_line() {
    let app = spawn_app().await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    grpc.unary::<_, bookshop_test_support::dummy::v1::EchoResponse, _>(
        tonic::Request::new(EchoRequest::default()),
        tonic::codegen::http::uri::PathAndQuery::from_static("/dummy.v1.Dummy/Nope"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .unwrap_err();

    let spans = app.spans.named("unknown/unknown");
    assert_eq!(spans.len(), 2, "a client and a server span: {spans:?}");
    let [line] = app
        .logs
        .with_message("gRPC call handled")
        .try_into()
        .unwrap();
    assert_eq!(line.field("method"), Some("unknown/unknown"));
    assert_eq!(line.field("path"), Some("/dummy.v1.Dummy/Nope"));
    assert_eq!(line.field("code"), Some("Unimplemented"));
}

#[tokio::test(flavor = "current_thread")]
async fn health_checks_are_counted_but_neither_traced_nor_logged_at_info() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let app = spawn_app().await;
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    app.echo(Code::Ok, "hello").await.unwrap();

    let check = "grpc.health.v1.Health/Check";
    assert!(app.spans.named(check).is_empty());
    assert_eq!(app.spans.named(ECHO).len(), 2, "the echo is still traced");
    let access: Vec<_> = app
        .logs
        .with_message("gRPC call handled")
        .into_iter()
        .map(|line| (line.field("method").unwrap().to_owned(), line.level))
        .collect();
    assert_eq!(
        access,
        [
            (check.to_owned(), tracing::Level::DEBUG),
            (ECHO.to_owned(), tracing::Level::INFO)
        ]
    );
    let checks = bookshop_test_support::metrics::value(
        &app.server_registry,
        "grpc_server_handled_total",
        &[
            ("grpc_type", "unary"),
            ("grpc_service", "grpc.health.v1.Health"),
            ("grpc_method", "Check"),
            ("grpc_code", "OK"),
        ],
    );
    assert_eq!(checks, Some(1.0));
}
