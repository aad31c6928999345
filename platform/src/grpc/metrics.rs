//! The go-grpc-prometheus metrics, per method, so the usual dashboards and
//! alerts work: `grpc_{server,client}_started_total`, `…_handled_total` (by
//! `grpc_code`) and `…_handling_seconds`.

use super::{
    Rpc, Side,
    call_end::{all_codes, code_name},
};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    register_histogram_vec_with_registry, register_int_counter_vec_with_registry,
};

/// The series of one method, looked up once so a call costs no label hashing.
#[derive(Debug)]
pub(super) struct Series {
    pub started: IntCounter,
    /// Indexed by the code's number.
    pub handled: Vec<IntCounter>,
    pub seconds: Histogram,
}

/// The metrics of one side, registered.
#[derive(Debug)]
pub(super) struct Vecs {
    started: IntCounterVec,
    handled: IntCounterVec,
    seconds: HistogramVec,
}

impl Vecs {
    pub fn register(side: Side, registry: &Registry) -> prometheus::Result<Self> {
        let (prefix, subject) = match side {
            Side::Server => ("grpc_server", "RPCs started on the server"),
            Side::Client => ("grpc_client", "RPCs started by the client"),
        };
        let labels = ["grpc_type", "grpc_service", "grpc_method"];
        let opts = |name: &str, help: &str| Opts::new(format!("{prefix}_{name}"), help);
        let started = opts("started_total", &format!("Total number of {subject}."));
        let handled = format!("Total number of {subject} that completed, by gRPC code.");
        let handled = opts("handled_total", &handled);
        let seconds = opts(
            "handling_seconds",
            &format!("Time from start to completion of {subject}."),
        );
        let seconds =
            HistogramOpts::from(seconds).buckets(crate::metrics::LATENCY_BUCKETS.to_vec());
        Ok(Self {
            started: register_int_counter_vec_with_registry!(started, &labels, registry)?,
            handled: register_int_counter_vec_with_registry!(
                handled,
                &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
                registry
            )?,
            seconds: register_histogram_vec_with_registry!(seconds, &labels, registry)?,
        })
    }

    /// Every series of `rpc`, created at 0 (as go-grpc-prometheus does) so that
    /// rate() and alerts see a 0 rather than a gap.
    pub fn series(&self, rpc: &Rpc) -> Series {
        let labels = [rpc.kind, rpc.service.as_str(), rpc.method.as_str()];
        let [kind, service, method] = labels;
        Series {
            started: self.started.with_label_values(&labels),
            handled: all_codes()
                .map(|code| {
                    self.handled
                        .with_label_values(&[kind, service, method, code_name(code)])
                })
                .collect(),
            seconds: self.seconds.with_label_values(&labels),
        }
    }
}
