//! The Prometheus registry every service starts from: the `process_*`
//! collector and `build_info{service,version} 1`.

use prometheus::{Registry, TextEncoder, register_int_gauge_vec_with_registry};

/// The buckets of every latency histogram, in seconds: from half a millisecond (an
/// in-process answer, a cached page) to ten seconds (well past any deadline we set).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A registry holding the process collector and `build_info`.
pub fn registry(service: &str, version: &str) -> Registry {
    let registry = Registry::new();
    // Both registrations only fail on a duplicate name, impossible in a new registry.
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("a new registry has no process collector yet");
    let build_info = register_int_gauge_vec_with_registry!(
        "build_info",
        "Build information; the value is always 1.",
        &["service", "version"],
        registry
    );
    let build_info = build_info.expect("a new registry has no build_info yet");
    build_info.with_label_values(&[service, version]).set(1);
    registry
}

/// Renders every metric of `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> prometheus::Result<String> {
    TextEncoder::new().encode_to_string(&registry.gather())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_exposes_build_info_and_process_metrics() {
        let text = render(&registry("svc", "1.2.3")).unwrap();
        assert!(
            text.contains(r#"build_info{service="svc",version="1.2.3"} 1"#),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
