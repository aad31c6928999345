//! The admin listener every service runs beside its main one:
//! `GET /metrics`, `GET /healthz` and `GET /readyz`.

use crate::{
    listener::{self, BindError},
    metrics,
    readiness::Readiness,
};
use axum::{Router, http::StatusCode, http::header, response::IntoResponse, routing::get};
use prometheus::Registry;
use std::{future::Future, net::SocketAddr};
use tokio::net::TcpListener;

/// A bound admin listener, ready to [`serve`](Admin::serve).
#[derive(Debug)]
pub struct Admin {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
}

impl Admin {
    /// Binds `0.0.0.0:port` for the admin routes over `readiness` and `registry`.
    pub async fn bind(
        port: u16,
        readiness: Readiness,
        registry: Registry,
    ) -> Result<Self, BindError> {
        let (listener, addr) = listener::bind("admin", port).await?;
        let router = router(readiness, registry);
        Ok(Self {
            listener,
            addr,
            router,
        })
    }

    /// The address bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stop` resolves, then lets open requests finish.
    pub async fn serve(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let serve = axum::serve(self.listener, self.router);
        serve.with_graceful_shutdown(stop).await
    }
}

fn router(readiness: Readiness, registry: Registry) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move { metrics_text(&registry) }),
        )
        // Up and its event loop answering: all liveness means.
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || async move { readyz(&readiness) }))
}

fn metrics_text(registry: &Registry) -> impl IntoResponse + use<> {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    metrics::render(registry)
        .map(|text| ([(header::CONTENT_TYPE, content_type)], text))
        .map_err(|err| {
            tracing::error!(%err, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR
        })
}

fn readyz(readiness: &Readiness) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
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
    async fn a_bound_admin_listener_reports_its_port_and_serves_until_stopped() {
        let admin = Admin::bind(0, Readiness::new(), Registry::new())
            .await
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], admin.local_addr().port()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(admin.serve(async {
            let _ = stopped.await;
        }));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), serving)
            .await
            .expect("the admin listener stops")
            .unwrap()
            .unwrap();
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
