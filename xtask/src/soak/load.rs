//! The paced client: `GET /` at a fixed rate, whatever the latency (a request
//! is sent on its tick, not when the previous one answered, so a slow server
//! cannot slow the load down), each answer checked.

use anyhow::Context;
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{sync::Semaphore, time::MissedTickBehavior};

/// The most requests in flight at once; a tick finding none free is counted
/// as skipped (the rate was not held), which fails the soak.
const MAX_IN_FLIGHT: usize = 64;
/// Kept-alive connections: a small pool, so the marketplace's descriptors
/// measure the marketplace, not the client.
const IDLE_CONNECTIONS: usize = 8;
/// A page slower than this is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// What a degraded page says (docs/design.md: the "unavailable" notice).
const DEGRADED: &str = "recommendations are unavailable";
/// The pages asked for, in turn.
const QUERIES: [&str; 3] = [
    "?category=mystery",
    "?category=science_fiction",
    "?category=self_help",
];
/// How many error messages are kept to show.
const ERRORS_SHOWN: usize = 5;

/// The running tally, read for progress lines while the load runs.
#[derive(Default)]
pub struct Counters {
    answered: AtomicU64,
    errors: AtomicU64,
    degraded: AtomicU64,
    skipped: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    latencies_us: Mutex<Vec<u64>>,
}

/// What the load saw.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    pub degraded: u64,
    pub skipped: u64,
    pub first_errors: Vec<String>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Counters {
    pub fn snapshot(&self) -> Counts {
        Counts {
            answered: self.answered.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            degraded: self.degraded.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            ..Counts::default()
        }
    }

    fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut shown = self.first_errors.lock().expect("not poisoned");
        if shown.len() < ERRORS_SHOWN {
            shown.push(message);
        }
    }
}

/// Sends `rate` requests a second to the marketplace at `addr` for
/// `duration`, then waits for the last answers.
pub async fn drive(
    addr: SocketAddr,
    rate: u32,
    duration: Duration,
    counters: Arc<Counters>,
) -> anyhow::Result<Counts> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(IDLE_CONNECTIONS)
        .build()
        .context("cannot build the HTTP client")?;
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
    // A late tick is made up at once: the average rate holds.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < duration {
        ticks.tick().await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            counters.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let url = format!("http://{addr}/{}", QUERIES[sent as usize % QUERIES.len()]);
        sent += 1;
        let (client, counters) = (client.clone(), counters.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = page(&client, &url).await;
            let latency = started.elapsed().as_micros() as u64;
            match outcome {
                Ok(true) => {
                    counters.answered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {
                    counters.answered.fetch_add(1, Ordering::Relaxed);
                    counters.degraded.fetch_add(1, Ordering::Relaxed);
                }
                Err(message) => counters.error(message),
            }
            counters
                .latencies_us
                .lock()
                .expect("not poisoned")
                .push(latency);
            drop(permit);
        });
    }
    // Every request is bounded by REQUEST_TIMEOUT; this bounds the wait for all.
    let all = u32::try_from(MAX_IN_FLIGHT).expect("a small number");
    let _all_answered = tokio::time::timeout(REQUEST_TIMEOUT * 2, in_flight.acquire_many(all))
        .await
        .context("the last requests did not finish")??;
    let mut counts = counters.snapshot();
    counts.sent = sent;
    counts.first_errors = counters.first_errors.lock().expect("not poisoned").clone();
    let mut latencies = std::mem::take(&mut *counters.latencies_us.lock().expect("not poisoned"));
    latencies.sort_unstable();
    let at = |quantile: f64| {
        let index = ((latencies.len() as f64 - 1.0) * quantile).round() as usize;
        latencies.get(index).map_or(0.0, |us| *us as f64 / 1000.0)
    };
    (counts.p50_ms, counts.p99_ms, counts.max_ms) = (at(0.50), at(0.99), at(1.0));
    Ok(counts)
}

/// One page: `Ok(true)` for a full page, `Ok(false)` for a degraded one.
async fn page(client: &reqwest::Client, url: &str) -> Result<bool, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|err| format!("{url}: {err}"))?;
    let status = response.status();
    let html = response
        .text()
        .await
        .map_err(|err| format!("{url}: reading the page: {err}"))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!("{url}: {status}"));
    }
    if html.contains(DEGRADED) {
        return Ok(false);
    }
    match html.matches("<li").count() {
        3 => Ok(true),
        books => Err(format!("{url}: {books} books on the page, not 3")),
    }
}
