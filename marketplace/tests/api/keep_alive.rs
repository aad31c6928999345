//! A kept-alive connection sits idle between requests as long as its client
//! pools it: the header read timeout does not close it (a client reusing it just
//! then would lose its request), `HTTP_IDLE_TIMEOUT_MS` does.

use crate::helpers::{FakeRecommendations, TestApp, spawn_app_with_client, test_config};
use axum::body::Body;
use hyper::{Request, StatusCode, client::conn::http1::SendRequest, header::HOST};
use hyper_util::rt::{TokioExecutor, TokioIo};
use marketplace::Config;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{net::TcpStream, task::JoinHandle, time::timeout};

const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Generous: the machine is shared, and the point is "bounded", not "fast".
const MARGIN: Duration = Duration::from_secs(5);

async fn app(idle_timeout: Duration) -> TestApp {
    let config = Config {
        http_header_read_timeout: HEADER_READ_TIMEOUT,
        http_idle_timeout: idle_timeout,
        ..test_config()
    };
    spawn_app_with_client(config, Arc::new(FakeRecommendations::Books)).await
}

/// A real HTTP/1.1 client on one connection, with no pool to fall back on: a
/// request it sends goes on that connection or fails. The handle ends when the
/// connection closes.
async fn one_connection(app: &TestApp) -> (SendRequest<Body>, JoinHandle<hyper::Result<()>>) {
    let stream = TcpStream::connect(app.http_url.trim_start_matches("http://"))
        .await
        .unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    (sender, tokio::spawn(connection))
}

async fn get_page(sender: &mut SendRequest<Body>) -> hyper::Result<StatusCode> {
    sender.ready().await?;
    let request = Request::get("/")
        .header(HOST, "marketplace")
        .body(Body::empty())
        .unwrap();
    read_page(sender.send_request(request).await?).await
}

async fn read_page(response: hyper::Response<hyper::body::Incoming>) -> hyper::Result<StatusCode> {
    let status = response.status();
    axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
        .await
        .expect("the page is read whole");
    Ok(status)
}

#[tokio::test]
async fn a_connection_idle_past_the_header_read_timeout_serves_the_next_page() {
    // What a pooling client (Envoy, reqwest) does: it reuses a connection idle
    // for as long as its own idle timeout, which the server's must outlast. At
    // the header read timeout is where the server used to close it.
    let app = app(Duration::from_secs(3_600)).await;
    let (mut sender, connection) = one_connection(&app).await;
    assert_eq!(get_page(&mut sender).await.unwrap(), StatusCode::OK);
    tokio::time::sleep(HEADER_READ_TIMEOUT * 2).await;
    let again = get_page(&mut sender).await;
    assert!(
        matches!(again, Ok(StatusCode::OK)),
        "the kept-alive connection was closed while idle: {again:?}"
    );
    assert!(!connection.is_finished());
}

#[tokio::test]
async fn a_connection_idle_past_the_idle_timeout_is_closed() {
    let idle_timeout = Duration::from_millis(1_500);
    let app = app(idle_timeout).await;
    let (mut sender, connection) = one_connection(&app).await;
    assert_eq!(get_page(&mut sender).await.unwrap(), StatusCode::OK);
    let idle_since = Instant::now();
    timeout(idle_timeout + MARGIN, connection)
        .await
        .expect("the server closes an idle connection within the timeout and a margin")
        .unwrap()
        .expect("a clean close");
    let idle = idle_since.elapsed();
    assert!(
        idle >= idle_timeout,
        "closed after {idle:?} idle, before the idle timeout"
    );
}

#[tokio::test]
async fn an_http2_connection_idle_past_the_header_read_timeout_serves_the_next_page() {
    // HTTP/2 has no heads between answers to time: frames (settings, pings, window updates)
    // flow on an idle connection, and none of them may start a head's deadline.
    let app = app(Duration::from_secs(3_600)).await;
    let stream = TcpStream::connect(app.http_url.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    for _ in 0..2 {
        sender.ready().await.unwrap();
        let request = Request::get("http://marketplace/")
            .body(Body::empty())
            .unwrap();
        let page = read_page(sender.send_request(request).await.unwrap()).await;
        assert!(matches!(page, Ok(StatusCode::OK)), "{page:?}");
        tokio::time::sleep(HEADER_READ_TIMEOUT * 2).await;
    }
    assert!(!connection.is_finished());
}
