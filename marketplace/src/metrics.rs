//! The marketplace's own metrics, registered beside platform's process and build ones.

use crate::RecommendationsError;
use prometheus::{IntCounterVec, Opts, Registry};

/// Every `reason` label value of the fallback counter (see [`RecommendationsError::reason`]).
const FALLBACK_REASONS: [&str; 3] = ["unavailable", "deadline_exceeded", "error"];

/// Counters the page handlers update.
#[derive(Clone, Debug)]
pub struct Metrics {
    fallbacks: IntCounterVec,
}

impl Metrics {
    /// Registers the metrics in `registry`; fails if they are already there.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "marketplace_recommendations_fallback_total",
                "Pages served with a notice instead of recommendations, by reason.",
            ),
            &["reason"],
        )?;
        // Every series exists from the start, so rate() and alerts see a 0, not a gap.
        for reason in FALLBACK_REASONS {
            fallbacks.with_label_values(&[reason]);
        }
        registry.register(Box::new(fallbacks.clone()))?;
        Ok(Self { fallbacks })
    }

    pub fn count_fallback(&self, error: &RecommendationsError) {
        self.fallbacks.with_label_values(&[error.reason()]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fallback_reason_is_exported_from_the_start() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).unwrap();
        metrics.count_fallback(&RecommendationsError::DeadlineExceeded);
        let text = platform::metrics::render(&registry).unwrap();
        for reason in FALLBACK_REASONS {
            assert!(text.contains(&format!("reason=\"{reason}\"")), "{text}");
        }
        assert!(
            text.contains(
                r#"marketplace_recommendations_fallback_total{reason="deadline_exceeded"} 1"#
            ),
            "{text}"
        );
    }
}
