//! The go-grpc-prometheus metrics, per method: `grpc_{server,client}_started_total`,
//! `grpc_{server,client}_handled_total` (by `grpc_code`) and
//! `grpc_{server,client}_handling_seconds`, so the usual dashboards and alerts work.

use super::{
    Rpc, Side,
    call_end::{all_codes, code_name},
};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
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
    /// Registers the metrics of `side` in `registry`; fails if they are
    /// registered already.
    pub fn register(side: Side, registry: &Registry) -> prometheus::Result<Self> {
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
        Ok(Self {
            started,
            handled,
            seconds,
        })
    }

    /// Every series of `rpc`, created at 0 (as go-grpc-prometheus pre-initialises
    /// them) so that rate() and alerts see a 0 rather than a gap.
    pub fn series(&self, rpc: &Rpc) -> Series {
        let labels = [rpc.kind, rpc.service.as_str(), rpc.method.as_str()];
        Series {
            started: self.started.with_label_values(&labels),
            handled: all_codes()
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
