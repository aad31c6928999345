//! How many requests are in progress, so that a drain cut short (by its timeout
//! or a second signal) can say how many it abandoned: tower-http's in-flight
//! counter. A request counts until its response body is finished or dropped.

use std::sync::Mutex;
use tower_http::metrics::{InFlightRequestsLayer, in_flight_requests::InFlightRequestsCounter};

/// Every counter made in the process (tests make many; a service one): a
/// second signal exits the process, so it reports their sum.
static PROCESS: Mutex<Vec<InFlightRequestsCounter>> = Mutex::new(Vec::new());

pub(super) fn process_in_flight() -> usize {
    let counters = PROCESS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    counters.iter().map(InFlightRequestsCounter::get).sum()
}

/// A count of requests in progress; clones share it.
#[derive(Debug, Clone)]
pub struct InFlight {
    counter: InFlightRequestsCounter,
}

impl Default for InFlight {
    fn default() -> Self {
        let counter = InFlightRequestsCounter::new();
        let mut counters = PROCESS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counters.push(counter.clone());
        Self { counter }
    }
}

impl InFlight {
    pub fn count(&self) -> usize {
        self.counter.get()
    }

    /// A layer counting the requests of the service it wraps here.
    pub fn layer(&self) -> InFlightRequestsLayer {
        InFlightRequestsLayer::new(self.counter.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use std::convert::Infallible;
    use tower::{Layer, ServiceExt};

    #[tokio::test]
    async fn a_request_counts_until_its_response_body_is_dropped() {
        let in_flight = InFlight::default();
        let (release, released) = tokio::sync::watch::channel(false);
        let service = in_flight
            .layer()
            .layer(tower::service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(String::from("body")))
            }));
        let held = in_flight
            .layer()
            .layer(tower::service_fn(move |_: Request<()>| {
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|go| *go).await;
                    Ok::<_, Infallible>(Response::new(String::new()))
                }
            }));

        let waiting = tokio::spawn(held.oneshot(Request::new(())));
        let response = service.oneshot(Request::new(())).await.unwrap();
        // The answered request's body is alive, the other one's handler is too.
        while in_flight.count() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(process_in_flight() >= 2);
        drop(response);
        assert_eq!(in_flight.count(), 1);

        release.send_replace(true);
        drop(waiting.await.unwrap().unwrap());
        assert_eq!(in_flight.count(), 0);
    }
}
