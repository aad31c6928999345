//! A client that trickles its request head is disconnected once
//! `HTTP_HEADER_READ_TIMEOUT_MS` is up (counted from the head's first byte on a
//! kept-alive connection), and the pages are served meanwhile; so is one that
//! connects and says nothing.

use crate::helpers::{
    FakeRecommendations, TestApp, count_li, get_page, spawn_app_with_client, test_config,
};
use marketplace::Config;
use reqwest::StatusCode;
use std::{
    io::ErrorKind,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    task::JoinHandle,
    time::timeout,
};

const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Generous: the machine is shared, and the point is "bounded", not "fast".
const MARGIN: Duration = Duration::from_secs(5);

async fn app() -> TestApp {
    let config = Config {
        http_header_read_timeout: HEADER_READ_TIMEOUT,
        ..test_config()
    };
    spawn_app_with_client(config, Arc::new(FakeRecommendations::Books)).await
}

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.http_url.trim_start_matches("http://");
    TcpStream::connect(addr).await.unwrap()
}

/// Reads until the server closes the connection (or resets it, which is how a
/// close with unread bytes looks); returns what it sent before.
async fn read_until_closed(reader: &mut OwnedReadHalf) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0; 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => return got,
            Err(err) => panic!("reading failed: {err}"),
        }
    }
}

/// Waits for the server to close `reader`'s connection, within the timeout and
/// a margin, and returns what it said.
async fn cut_off(reader: &mut OwnedReadHalf, started: Instant) -> String {
    let answer = timeout(HEADER_READ_TIMEOUT + MARGIN, read_until_closed(reader))
        .await
        .expect("the server cuts the client off within the timeout and a margin");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= HEADER_READ_TIMEOUT,
        "cut off after {elapsed:?}, before the timeout"
    );
    String::from_utf8_lossy(&answer).into_owned()
}

/// As [`cut_off`], the server saying nothing but, at most, 408.
async fn assert_cut_off(reader: &mut OwnedReadHalf, started: Instant) {
    let answer = cut_off(reader, started).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

/// Writes `at_once`, then `head` and `a`s forever, a byte every 50 ms, until the
/// server hangs up: a request head that never ends.
fn trickle(
    mut writer: OwnedWriteHalf,
    at_once: &'static [u8],
    head: &'static [u8],
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if writer.write_all(at_once).await.is_err() {
            return;
        }
        let mut every = tokio::time::interval(Duration::from_millis(50));
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            every.tick().await;
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
    })
}

const TRICKLED: &[u8] = b"GET / HTTP/1.1\r\nHost: marketplace\r\nX-Slow: ";

#[tokio::test]
async fn a_client_trickling_its_request_head_is_cut_off_after_the_timeout_while_pages_are_served() {
    let app = app().await;
    let started = Instant::now();
    let (mut reader, writer) = connect(&app).await.into_split();
    let trickle = trickle(writer, b"", TRICKLED);

    // Meanwhile, on another connection, a page is served.
    let (status, html) = get_page(&app.http_url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count_li(&html), 3, "{html}");
    assert!(!trickle.is_finished(), "the trickle was cut off too early");

    assert_cut_off(&mut reader, started).await;
    trickle.abort();
}

#[tokio::test]
async fn on_a_kept_alive_connection_a_trickled_second_request_is_cut_off_after_the_timeout() {
    let app = app().await;
    let started = Instant::now();
    let (mut reader, writer) = connect(&app).await.into_split();
    // One whole request first, then the next one's head a byte at a time.
    let first = b"GET / HTTP/1.1\r\nHost: marketplace\r\n\r\n";
    let trickle = trickle(writer, first, TRICKLED);
    let answer = cut_off(&mut reader, started).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    trickle.abort();
}

#[tokio::test]
async fn after_an_idle_spell_a_trickled_head_is_cut_off_the_timeout_after_its_first_byte() {
    let app = app().await;
    let (mut reader, mut writer) = connect(&app).await.into_split();
    writer
        .write_all(b"GET / HTTP/1.1\r\nHost: marketplace\r\n\r\n")
        .await
        .unwrap();
    // Idle past the timeout: not the head's time, so the connection stays.
    tokio::time::sleep(HEADER_READ_TIMEOUT * 2).await;
    let started = Instant::now();
    let trickle = trickle(writer, b"", TRICKLED);
    let answer = cut_off(&mut reader, started).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    trickle.abort();
}

#[tokio::test]
async fn a_client_that_connects_and_sends_nothing_is_cut_off_after_the_timeout() {
    let app = app().await;
    let started = Instant::now();
    let (mut reader, _writer) = connect(&app).await.into_split();
    assert_cut_off(&mut reader, started).await;
}

#[tokio::test]
async fn a_request_head_over_the_size_limit_is_answered_431() {
    let app = app().await;
    let started = Instant::now();
    let (mut reader, mut writer) = connect(&app).await.into_split();
    // Twice the limit of the test config (16 KiB), in one go.
    let head = format!(
        "GET / HTTP/1.1\r\nHost: marketplace\r\nX-Big: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    // The server may hang up before it has read it all.
    let _ = writer.write_all(head.as_bytes()).await;
    let answer = timeout(MARGIN, read_until_closed(&mut reader))
        .await
        .expect("the server answers and hangs up");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
        "{answer:?} after {:?}",
        started.elapsed()
    );
}
