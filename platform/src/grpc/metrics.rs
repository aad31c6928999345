//! The go-grpc-prometheus metrics, per method: `grpc_{server,client}_started_total`,
//! `grpc_{server,client}_handled_total` (by `grpc_code`) and
//! `grpc_{server,client}_handling_seconds`, so the usual dashboards and alerts work.

use super::{
    Methods, Rpc, Side,
    status::{ALL_CODES, BoxError, EndBody, EndFuture, OnEnd, code_name},
};
use http::{Request, Response};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};
use tonic::Status;
use tower::{Layer, Service};

/// The series of one method, looked up once so a call costs no label hashing.
#[derive(Debug)]
struct Series {
    started: IntCounter,
    /// Indexed by the code's number.
    handled: Vec<IntCounter>,
    seconds: Histogram,
}

#[derive(Debug)]
struct Vecs {
    started: IntCounterVec,
    handled: IntCounterVec,
    seconds: HistogramVec,
}

impl Vecs {
    /// Every series of `rpc`, created at 0 (as go-grpc-prometheus pre-initialises
    /// them) so that rate() and alerts see a 0 rather than a gap.
    fn series(&self, rpc: &Rpc) -> Series {
        let labels = [rpc.kind, rpc.service.as_str(), rpc.method.as_str()];
        Series {
            started: self.started.with_label_values(&labels),
            handled: ALL_CODES
                .into_iter()
                .map(|code| {
                    let [kind, service, method] = labels;
                    self.handled
                        .with_label_values(&[kind, service, method, code_name(code)])
                })
                .collect(),
            seconds: self.seconds.with_label_values(&labels),
        }
    }
}

/// Wraps services in [`Metrics`].
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    methods: Methods,
    vecs: Arc<Vecs>,
    known: Arc<HashMap<String, Arc<Series>>>,
    /// Made on the first call to a path that is no known method.
    unknown: Arc<OnceLock<Arc<Series>>>,
}

impl MetricsLayer {
    /// Registers the metrics of `side` in `registry`, with every series of the
    /// known `methods` at 0; fails if they are registered already.
    pub fn register(side: Side, registry: &Registry, methods: Methods) -> prometheus::Result<Self> {
        let (prefix, subject) = match side {
            Side::Server => ("grpc_server", "RPCs started on the server"),
            Side::Client => ("grpc_client", "RPCs started by the client"),
        };
        let labels = ["grpc_type", "grpc_service", "grpc_method"];
        let started = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_started_total"),
                format!("Total number of {subject}."),
            ),
            &labels,
        )?;
        let handled = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_handled_total"),
                format!("Total number of {subject} that completed, by gRPC code."),
            ),
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                format!("{prefix}_handling_seconds"),
                format!("Time from start to completion of {subject}."),
            )
            .buckets(crate::metrics::LATENCY_BUCKETS.to_vec()),
            &labels,
        )?;
        registry.register(Box::new(started.clone()))?;
        registry.register(Box::new(handled.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        let vecs = Vecs {
            started,
            handled,
            seconds,
        };
        let known = methods
            .iter()
            .map(|rpc| (format!("/{rpc}"), Arc::new(vecs.series(rpc))))
            .collect();
        Ok(Self {
            methods,
            vecs: Arc::new(vecs),
            known: Arc::new(known),
            unknown: Arc::default(),
        })
    }

    fn series(&self, path: &str) -> Arc<Series> {
        if let Some(series) = self.known.get(path) {
            return series.clone();
        }
        self.unknown
            .get_or_init(|| Arc::new(self.vecs.series(&self.methods.resolve(path))))
            .clone()
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// Counts and times each call of `S`.
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    layer: MetricsLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Metrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body,
{
    type Response = Response<EndBody<ResBody, Handled>>;
    type Error = BoxError;
    type Future = EndFuture<S::Future, Handled>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let series = self.layer.series(request.uri().path());
        series.started.inc();
        let handled = Handled {
            series,
            started: Instant::now(),
        };
        EndFuture::new(self.inner.call(request), handled)
    }
}

/// Counts a call as handled, with its code, and observes its duration.
pub struct Handled {
    series: Arc<Series>,
    started: Instant,
}

impl OnEnd for Handled {
    fn on_end(self, status: &Status) {
        self.series.handled[status.code() as usize].inc();
        self.series
            .seconds
            .observe(self.started.elapsed().as_secs_f64());
    }
}
