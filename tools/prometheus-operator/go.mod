// The Prometheus Operator's CRDs (example/prometheus-operator-crd/ in this module's source),
// which tests/deploy validates kustomize/components/prometheus-operator against. Nothing is
// built from it: `cargo xtask test deploy` only downloads it (go mod download).
module bookshop/tools/prometheus-operator

go 1.26.0

require github.com/prometheus-operator/prometheus-operator v0.85.0
