//! The mesh's request id (`x-request-id`) carried from a request to the calls
//! made while serving it. An Istio sidecar decides whether to trace a request
//! by the id's own bits, not by the caller's `traceparent`: a call without the
//! id gets a fresh one and the sidecar's own random decision, so under a ratio
//! below 100% a page the gateway sampled would lose everything past the
//! marketplace. Istio asks apps to pass it on, with the trace headers.

use http::{HeaderMap, HeaderValue};
use std::future::Future;

/// The header Envoy reads and writes.
pub const REQUEST_ID: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: HeaderValue;
}

/// Runs `serve` with `id` (the `x-request-id` of the request it serves, if it
/// came with one) as the id `pass_request_id` passes on.
pub async fn with_request_id<F: Future>(id: Option<HeaderValue>, serve: F) -> F::Output {
    match id {
        Some(id) => CURRENT.scope(id, serve).await,
        None => serve.await,
    }
}

/// Writes the request id of the request being served into an outgoing call's
/// `headers`; none outside one, or when it came without one.
pub fn pass_request_id(headers: &mut HeaderMap) {
    let _ = CURRENT.try_with(|id| headers.insert(REQUEST_ID, id.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> HeaderMap {
        let mut headers = HeaderMap::new();
        pass_request_id(&mut headers);
        headers
    }

    #[tokio::test]
    async fn a_call_made_while_serving_carries_the_requests_id() {
        let id = HeaderValue::from_static("5f6c-page");
        let outgoing = with_request_id(Some(id), async { call() }).await;
        assert_eq!(outgoing[REQUEST_ID], "5f6c-page");
    }

    #[tokio::test]
    async fn without_an_incoming_id_or_outside_a_request_a_call_carries_none() {
        let outgoing = with_request_id(None, async { call() }).await;
        assert!(outgoing.get(REQUEST_ID).is_none());
        assert!(call().get(REQUEST_ID).is_none());
    }
}
