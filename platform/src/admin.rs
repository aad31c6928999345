//! The admin listener every service runs beside its main one:
//! `GET /metrics`, `GET /healthz` and `GET /readyz`.

use crate::{health::Readiness, metrics};
use axum::{
    Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get,
};
use prometheus::Registry;
use std::future::Future;
use tokio::net::TcpListener;

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    registry: Registry,
}

/// The admin routes, over the service's readiness and metrics registry.
pub fn router(readiness: Readiness, registry: Registry) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AdminState {
            readiness,
            registry,
        })
}

/// Serves the admin routes until `stop` resolves, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    match metrics::render(&state.registry) {
        Ok(text) => Ok((
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )),
        Err(err) => {
            tracing::error!(%err, "cannot encode metrics");
            Err(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// The process is up and its event loop answers: that is all liveness means.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    async fn get_status(router: Router, path: &str) -> StatusCode {
        let request = Request::get(path).body(Body::empty()).unwrap();
        router.oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn readyz_turns_503_once_not_ready_while_healthz_stays_200() {
        let readiness = Readiness::new();
        let admin = router(readiness.clone(), Registry::new());
        assert_eq!(get_status(admin.clone(), "/readyz").await, StatusCode::OK);
        readiness.set_not_ready();
        assert_eq!(
            get_status(admin.clone(), "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get_status(admin.clone(), "/healthz").await, StatusCode::OK);
        assert_eq!(get_status(admin, "/nope").await, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn metrics_serves_the_registry_in_text_format() {
        let admin = router(Readiness::new(), metrics::registry("svc", "0.0.1"));
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        let response = admin.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("build_info{"), "{text}");
    }
}
