//! Metrics read straight from a Prometheus registry (`Registry::gather`), by
//! family name and labels: no text format to parse.

use prometheus::{
    Registry,
    proto::{Metric, MetricFamily, MetricType},
};
use std::collections::BTreeMap;

/// A label set, to compare with [`series`].
pub type Labels = BTreeMap<String, String>;

/// A label set from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// Every series of the family `name` in `registry`, by its labels: a counter's or
/// gauge's value, a histogram's sample count. Empty when there is no such family.
pub fn series(registry: &Registry, name: &str) -> BTreeMap<Labels, f64> {
    family(registry, name)
        .map(|family| {
            family
                .get_metric()
                .iter()
                .map(|metric| (labels_of(metric), value_of(family.get_field_type(), metric)))
                .collect()
        })
        .unwrap_or_default()
}

/// The series of `name` with exactly `with` as labels, if there is one.
pub fn value(registry: &Registry, name: &str, with: &[(&str, &str)]) -> Option<f64> {
    series(registry, name).get(&labels(with)).copied()
}

/// The series of `name` that are not 0 and whose labels include all of `with`.
pub fn nonzero(registry: &Registry, name: &str, with: &[(&str, &str)]) -> BTreeMap<Labels, f64> {
    series(registry, name)
        .into_iter()
        .filter(|(labels, value)| {
            *value != 0.0
                && with
                    .iter()
                    .all(|(key, want)| labels.get(*key).map(String::as_str) == Some(*want))
        })
        .collect()
}

/// The upper bounds of the buckets of the histogram `name` with exactly `with`
/// as labels (without the implicit `+Inf`), and its sample count.
pub fn buckets(registry: &Registry, name: &str, with: &[(&str, &str)]) -> (Vec<f64>, u64) {
    let family = family(registry, name).unwrap_or_else(|| panic!("no family {name}"));
    let wanted = labels(with);
    let metric = family
        .get_metric()
        .iter()
        .find(|metric| labels_of(metric) == wanted)
        .unwrap_or_else(|| panic!("no series {name}{wanted:?}"));
    let histogram = metric.get_histogram();
    let bounds = histogram
        .get_bucket()
        .iter()
        .map(|bucket| bucket.upper_bound())
        .collect();
    (bounds, histogram.get_sample_count())
}

fn family(registry: &Registry, name: &str) -> Option<MetricFamily> {
    registry
        .gather()
        .into_iter()
        .find(|family| family.name() == name)
}

fn labels_of(metric: &Metric) -> Labels {
    metric
        .get_label()
        .iter()
        .map(|pair| (pair.name().to_owned(), pair.value().to_owned()))
        .collect()
}

fn value_of(kind: MetricType, metric: &Metric) -> f64 {
    match kind {
        MetricType::COUNTER => metric.get_counter().get_value(),
        MetricType::GAUGE => metric.get_gauge().get_value(),
        MetricType::HISTOGRAM => metric.get_histogram().get_sample_count() as f64,
        other => panic!("{other:?} metrics are not read here"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

    #[test]
    fn counters_and_histograms_are_read_by_family_and_labels() {
        let registry = Registry::new();
        let counter = IntCounterVec::new(Opts::new("calls_total", "Calls."), &["code"]).unwrap();
        let histogram = HistogramVec::new(
            HistogramOpts::new("call_seconds", "Time.").buckets(vec![0.1, 1.0]),
            &["code"],
        )
        .unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        registry.register(Box::new(histogram.clone())).unwrap();
        counter.with_label_values(&["OK"]).inc_by(2);
        counter.with_label_values(&["Internal"]);
        histogram.with_label_values(&["OK"]).observe(0.5);

        assert_eq!(
            series(&registry, "calls_total"),
            BTreeMap::from([
                (labels(&[("code", "Internal")]), 0.0),
                (labels(&[("code", "OK")]), 2.0),
            ])
        );
        assert_eq!(
            value(&registry, "calls_total", &[("code", "OK")]),
            Some(2.0)
        );
        assert_eq!(value(&registry, "calls_total", &[]), None);
        assert_eq!(
            nonzero(&registry, "calls_total", &[]),
            BTreeMap::from([(labels(&[("code", "OK")]), 2.0)])
        );
        assert_eq!(
            value(&registry, "call_seconds", &[("code", "OK")]),
            Some(1.0)
        );
        assert_eq!(
            buckets(&registry, "call_seconds", &[("code", "OK")]),
            (vec![0.1, 1.0], 1)
        );
        assert!(series(&registry, "absent").is_empty());
    }
}
