//! The grpc_server_* and grpc_client_* series: codes, labels, cancellation.

use crate::helpers::{echo_labels, hang, spawn_app};
use bookshop_test_support::dummy::v1::{EchoRequest, EchoResponse};
use bookshop_test_support::metrics::{buckets, value};
use platform::grpc::ClientStack;
use std::time::Duration;
use tonic::{Code, Request, client::Grpc, codegen::http::uri::PathAndQuery, transport::Channel};
use tonic_prost::ProstCodec;

/// Every code, as go-grpc-prometheus names it.
const CODES: [(Code, &str); 17] = [
    (Code::Ok, "OK"),
    (Code::Cancelled, "Canceled"),
    (Code::Unknown, "Unknown"),
    (Code::InvalidArgument, "InvalidArgument"),
    (Code::DeadlineExceeded, "DeadlineExceeded"),
    (Code::NotFound, "NotFound"),
    (Code::AlreadyExists, "AlreadyExists"),
    (Code::PermissionDenied, "PermissionDenied"),
    (Code::ResourceExhausted, "ResourceExhausted"),
    (Code::FailedPrecondition, "FailedPrecondition"),
    (Code::Aborted, "Aborted"),
    (Code::OutOfRange, "OutOfRange"),
    (Code::Unimplemented, "Unimplemented"),
    (Code::Internal, "Internal"),
    (Code::Unavailable, "Unavailable"),
    (Code::DataLoss, "DataLoss"),
    (Code::Unauthenticated, "Unauthenticated"),
];

#[tokio::test(flavor = "current_thread")]
async fn every_series_of_a_known_method_exists_at_zero_before_any_call() {
    let app = spawn_app().await;
    for (registry, side) in [
        (&app.server_registry, "server"),
        (&app.client_registry, "client"),
    ] {
        let started = format!("grpc_{side}_started_total");
        assert_eq!(value(registry, &started, &echo_labels(&[])), Some(0.0));
        for (_, name) in CODES {
            let handled = format!("grpc_{side}_handled_total");
            let labels = echo_labels(&[("grpc_code", name)]);
            assert_eq!(value(registry, &handled, &labels), Some(0.0), "{name}");
        }
        let seconds = format!("grpc_{side}_handling_seconds");
        assert_eq!(value(registry, &seconds, &echo_labels(&[])), Some(0.0));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_code_is_counted_once_under_its_name_on_both_sides() {
    let app = spawn_app().await;
    for (code, _) in CODES {
        let answer = app.echo(code, "chosen by the test").await;
        assert_eq!(answer.err().map_or(Code::Ok, |status| status.code()), code);
    }

    for (registry, side) in [
        (&app.server_registry, "server"),
        (&app.client_registry, "client"),
    ] {
        let started = format!("grpc_{side}_started_total");
        assert_eq!(value(registry, &started, &echo_labels(&[])), Some(17.0));
        for (_, name) in CODES {
            let handled = format!("grpc_{side}_handled_total");
            let labels = echo_labels(&[("grpc_code", name)]);
            assert_eq!(
                value(registry, &handled, &labels),
                Some(1.0),
                "{side} {name}"
            );
        }
        let seconds = format!("grpc_{side}_handling_seconds");
        assert_eq!(value(registry, &seconds, &echo_labels(&[])), Some(17.0));
        let (bounds, count) = buckets(registry, &seconds, &echo_labels(&[]));
        assert_eq!(
            (bounds.first(), bounds.last(), count),
            (Some(&0.0005), Some(&10.0), 17)
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_unknown_method_answers_unimplemented_and_is_counted_under_fixed_labels() {
    let app = spawn_app().await;
    let mut grpc: Grpc<ClientStack<Channel>> = Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<_, EchoResponse, _>(
            Request::new(EchoRequest::default()),
            PathAndQuery::from_static("/dummy.v1.Dummy/Nope"),
            ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    let unknown = [
        ("grpc_type", "unknown"),
        ("grpc_service", "unknown"),
        ("grpc_method", "unknown"),
    ];
    let mut handled = unknown.to_vec();
    handled.push(("grpc_code", "Unimplemented"));
    for (registry, side) in [
        (&app.server_registry, "server"),
        (&app.client_registry, "client"),
    ] {
        let started = format!("grpc_{side}_started_total");
        assert_eq!(value(registry, &started, &unknown), Some(1.0), "{side}");
        let name = format!("grpc_{side}_handled_total");
        assert_eq!(value(registry, &name, &handled), Some(1.0), "{side}");
        let text = platform::metrics::render(registry).unwrap();
        assert!(!text.contains("Nope"), "the raw path leaked: {text}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_call_its_caller_drops_counts_once_as_canceled_on_both_sides() {
    let mut app = spawn_app().await;
    app.give_up_on_a_call().await;

    let canceled = echo_labels(&[("grpc_code", "Canceled")]);
    let registry = &app.client_registry;
    assert_eq!(
        value(registry, "grpc_client_handled_total", &canceled),
        Some(1.0)
    );
    let count = value(registry, "grpc_client_handling_seconds", &echo_labels(&[]));
    assert_eq!(count, Some(1.0), "handled once in all");

    // The server learns of it from the stream's reset, and drops the handler.
    app.wait_until_abandoned().await;
    let registry = &app.server_registry;
    assert_eq!(
        value(registry, "grpc_server_handled_total", &canceled),
        Some(1.0)
    );
    let count = value(registry, "grpc_server_handling_seconds", &echo_labels(&[]));
    assert_eq!(count, Some(1.0), "handled once in all");
}

#[tokio::test(flavor = "current_thread")]
async fn both_kinds_of_client_deadline_count_as_canceled() {
    let mut app = spawn_app().await;
    // tonic's own: `grpc-timeout`, enforced by the channel, which fails the call
    // with CANCELLED.
    let mut request = Request::new(hang());
    request.set_timeout(Duration::from_millis(20));
    let status = app.client.clone().echo(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled);
    app.wait_until_abandoned().await;

    // The caller's own, as the marketplace's pages have it: the future is dropped.
    let mut client = app.client.clone();
    let call = tokio::time::timeout(Duration::from_millis(20), client.echo(hang()));
    assert!(call.await.is_err(), "the deadline passed");
    app.wait_until_abandoned().await;

    let canceled = echo_labels(&[("grpc_code", "Canceled")]);
    let deadline = echo_labels(&[("grpc_code", "DeadlineExceeded")]);
    for (registry, side) in [
        (&app.server_registry, "server"),
        (&app.client_registry, "client"),
    ] {
        let handled = format!("grpc_{side}_handled_total");
        assert_eq!(value(registry, &handled, &canceled), Some(2.0), "{side}");
        assert_eq!(value(registry, &handled, &deadline), Some(0.0), "{side}");
    }
}
