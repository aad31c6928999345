//! One trace across both services, checked at an in-process OTLP receiver.
//!
//! A test binary of its own: telemetry is process-wide (one global
//! subscriber, tracer and propagator), so it cannot share a process with
//! the other tests. Both services run in this process and so share one
//! `service.name`; the spans' kinds and names tell them apart.

use bookshop_test_support::{WAIT, otlp::Receiver};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind},
};
use platform::config::{CommonArgs, TraceArgs};
use std::time::Duration;
use tokio::{sync::oneshot, time::timeout};

fn attribute<'s>(span: &'s Span, key: &str) -> Option<&'s Value> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref())
        .and_then(|AnyValue { value }| value.as_ref())
}

fn string(span: &Span, key: &str) -> Option<String> {
    match attribute(span, key) {
        Some(Value::StringValue(value)) => Some(value.clone()),
        _ => None,
    }
}

fn int(span: &Span, key: &str) -> Option<i64> {
    match attribute(span, key) {
        Some(Value::IntValue(value)) => Some(*value),
        _ => None,
    }
}

fn find<'s>(spans: &'s [Span], kind: SpanKind, name: &str) -> &'s Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|span| span.kind == kind as i32 && span.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind:?} span {name:?} among {spans:#?}"
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn one_page_view_is_one_trace_from_the_inbound_header_to_recommendations() {
    let (receiver, endpoint) = Receiver::start().await;
    let common = CommonArgs {
        // Stopped servers stop at once, so that the spans are all exported.
        shutdown_delay: Duration::ZERO,
        traces: TraceArgs {
            otel_exporter_otlp_endpoint: Some(endpoint),
            ..TraceArgs::default()
        },
        ..CommonArgs::default()
    };
    let telemetry = platform::telemetry::init("marketplace", &common).unwrap();

    let recommendations = recommendations::App::bind(recommendations::Config {
        grpc_port: 0,
        admin_port: 0,
        common: common.clone(),
        ..recommendations::Config::default()
    })
    .await
    .unwrap();
    let marketplace = marketplace::App::bind(marketplace::Config {
        http_port: 0,
        admin_port: 0,
        recommendations_host: "127.0.0.1".into(),
        recommendations_port: recommendations.grpc_addr().port(),
        recommendations_timeout: Duration::from_secs(5),
        common,
        ..marketplace::Config::default()
    })
    .await
    .unwrap();
    let page = format!("http://127.0.0.1:{}/", marketplace.http_addr().port());
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let (stop_too, stopped_too) = oneshot::channel::<()>();
    let servers = tokio::spawn(async move {
        let recommendations = recommendations.run(async {
            let _ = stopped_too.await;
        });
        let marketplace = marketplace.run(stopped);
        tokio::try_join!(recommendations, marketplace)
    });

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span_id = "00f067aa0ba902b7";
    let response = reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .unwrap()
        .get(&page)
        .header("traceparent", format!("00-{trace_id}-{caller_span_id}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert_eq!(html.matches("<li").count(), 3, "{html}");

    // Stop serving, then flush: every span of the page view is then exported.
    stop.send(()).unwrap();
    stop_too.send(()).unwrap();
    timeout(WAIT, servers)
        .await
        .expect("both servers stop in time")
        .unwrap()
        .unwrap();
    telemetry.shutdown().await;

    let spans = receiver.spans();
    let trace_id = hex(trace_id);
    assert!(!spans.is_empty(), "no span was exported");
    for span in &spans {
        assert_eq!(span.trace_id, trace_id, "{} is in another trace", span.name);
    }

    let page_span = find(&spans, SpanKind::Server, "GET /");
    assert_eq!(page_span.parent_span_id, hex(caller_span_id));
    assert_eq!(
        string(page_span, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(string(page_span, "http.route").as_deref(), Some("/"));
    assert_eq!(int(page_span, "http.response.status_code"), Some(200));

    let rpc = "recommendations.v1.Recommendations/Recommend";
    let client_span = find(&spans, SpanKind::Client, rpc);
    let server_span = find(&spans, SpanKind::Server, rpc);
    assert_eq!(client_span.parent_span_id, page_span.span_id);
    assert_eq!(server_span.parent_span_id, client_span.span_id);
    for span in [client_span, server_span] {
        assert_eq!(string(span, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(
            string(span, "rpc.service").as_deref(),
            Some("recommendations.v1.Recommendations")
        );
        assert_eq!(string(span, "rpc.method").as_deref(), Some("Recommend"));
        assert_eq!(int(span, "rpc.grpc.status_code"), Some(0));
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
