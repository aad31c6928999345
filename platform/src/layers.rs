//! The order of the middleware, the one place it is written down. Both kinds
//! of server stack the same concerns the same way, outermost first
//! ([`crate::grpc::server`], [`crate::http::with_layers`]):
//!
//! 1. **in flight**: a request counts from the moment the server calls the
//!    service until its response body ends, so a drain cut short says how many
//!    it abandons;
//! 2. **observer**: one per request, ended once: its span is current while
//!    everything inside runs (every line the layers and the handler log carries
//!    the trace id, and the span covers the whole call); its metrics count every
//!    answer the way the caller saw it, panics and sheds included; then its
//!    access line (and, for gRPC, a line per failed call);
//! 3. *(HTTP)* **the service's response headers**, on every answer: error
//!    pages and 503s too;
//! 4. **load shedding**: before any work, so a request over the limit costs
//!    next to nothing; its permit is held until the handler has answered. gRPC
//!    sheds per service (`LimitCallsLayer`, so health checks and reflection are
//!    still answered); HTTP for every route;
//! 5. **panics**: innermost, so a panicking handler becomes an ordinary answer
//!    (INTERNAL, a 500 page) that every layer above sees like any other (and
//!    its permit is given back).
//!
//! tonic's own timeout sits outside all of them: a call it cuts off is dropped
//! there, and the observer counts it CANCELLED.
