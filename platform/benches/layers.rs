//! What the middleware costs per call, in process (no sockets): the real gRPC
//! server layers and the real telemetry, around a service that answers at once.
//! Each scenario adds one piece, so the differences are the pieces' costs:
//!
//! - `bare`: the service alone;
//! - `layers`: every layer, tracing off (`OTEL_SDK_DISABLED`), `RUST_LOG=warn`;
//! - `unsampled`: + an unsampled call's span (a root under `always_off`);
//! - `sampled`: + a sampled span, batched to an exporter that drops it;
//! - `access`: sampled + the access line, written as JSON to a sink (`info`).
//!
//! `cargo bench -p platform --bench layers` times them with criterion. For
//! instruction counts (repeatable on a shared machine), run the built bench
//! under callgrind with `LAYERS_SCENARIO=<name> LAYERS_CALLS=<n>`: it makes `n`
//! calls of that scenario and exits; two runs with different `n` give the
//! instructions per call without the set-up (BENCHMARKS.md has the figures).

use criterion::Criterion;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use opentelemetry_sdk::{error::OTelSdkResult, trace::SpanData};
use platform::{
    config::{CommonArgs, LogFormat, Sampler, TraceArgs},
    grpc::ServerLayers,
    shutdown::InFlight,
};
use prometheus::Registry;
use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};
use tonic::{body::Body as GrpcBody, codegen::Bytes};
use tower::{Service, ServiceExt};

const PATH: &str = "/recommendations.v1.Recommendations/Recommend";

const SCENARIOS: [&str; 5] = ["bare", "layers", "unsampled", "sampled", "access"];

/// An exporter that takes every batch and keeps nothing.
#[derive(Debug)]
struct Drop;

impl opentelemetry_sdk::trace::SpanExporter for Drop {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

/// A unary answer: one message, then `grpc-status: 0` in the trailers.
struct Answer {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.message.take() {
            Some(message) => Some(Frame::data(message)),
            None => self.trailers.take().map(Frame::trailers),
        };
        Poll::Ready(frame.map(Ok))
    }
}

fn answer() -> Response<Answer> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    Response::new(Answer {
        message: Some(Bytes::from_static(b"\0\0\0\0\x05hello")),
        trailers: Some(trailers),
    })
}

fn request() -> Request<GrpcBody> {
    Request::post(PATH)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(GrpcBody::empty())
        .unwrap()
}

fn args(scenario: &str) -> CommonArgs {
    let sampler = match scenario {
        "unsampled" => Sampler::AlwaysOff,
        _ => Sampler::AlwaysOn,
    };
    CommonArgs {
        rust_log: if scenario == "access" { "info" } else { "warn" }.into(),
        log_format: Some(LogFormat::Json),
        traces: TraceArgs {
            otel_traces_sampler: sampler,
            otel_sdk_disabled: matches!(scenario, "bare" | "layers"),
            ..TraceArgs::default()
        },
        ..CommonArgs::default()
    }
}

/// One call through `service`, its body read to the trailers.
async fn call<S, B>(service: &mut S)
where
    S: Service<Request<GrpcBody>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let response = service
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap();
    let mut body = response.into_body();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        std::hint::black_box(frame.unwrap());
    }
}

/// Runs `work` with `scenario`'s telemetry installed in this thread.
fn with_scenario<T>(scenario: &str, work: impl FnOnce(&str) -> T) -> T {
    let (subscriber, provider) =
        platform::telemetry::subscriber("bench", &args(scenario), std::io::sink, Some(Drop))
            .unwrap();
    let result = tracing::subscriber::with_default(subscriber, || work(scenario));
    if let Some(provider) = provider {
        provider.shutdown().unwrap();
    }
    result
}

fn layers() -> ServerLayers {
    let registry = Registry::new();
    platform::grpc::server_layers(
        &registry,
        &[recommendations_proto::v1::FILE_DESCRIPTOR_SET],
        &InFlight::default(),
    )
    .unwrap()
}

fn inner()
-> impl Service<Request<GrpcBody>, Response = Response<Answer>, Error = Infallible> + Clone {
    tower::service_fn(|_: Request<GrpcBody>| async { Ok::<_, Infallible>(answer()) })
}

/// `calls` calls of `scenario`, for callgrind.
fn run(scenario: &str, calls: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    with_scenario(scenario, |scenario| {
        runtime.block_on(async {
            if scenario == "bare" {
                let mut service = inner();
                for _ in 0..calls {
                    call(&mut service).await;
                }
            } else {
                let mut service = layers().service(inner());
                for _ in 0..calls {
                    call(&mut service).await;
                }
            }
        });
    });
}

fn main() {
    if let (Ok(scenario), Ok(calls)) = (
        std::env::var("LAYERS_SCENARIO"),
        std::env::var("LAYERS_CALLS"),
    ) {
        assert!(
            SCENARIOS.contains(&scenario.as_str()),
            "no scenario {scenario}"
        );
        run(&scenario, calls.parse().expect("LAYERS_CALLS is a number"));
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = criterion.benchmark_group("grpc server call");
    for scenario in SCENARIOS {
        with_scenario(scenario, |scenario| {
            group.bench_function(scenario, |b| {
                if scenario == "bare" {
                    let mut service = inner();
                    b.iter(|| runtime.block_on(call(&mut service)));
                } else {
                    let mut service = layers().service(inner());
                    b.iter(|| runtime.block_on(call(&mut service)));
                }
            });
        });
    }
    group.finish();
    criterion.final_summary();
}
