//! The paced client: `GET /` at a fixed rate, whatever the latency (a request
//! leaves on its tick, not when the previous one answered, so a slow server
//! cannot slow the load down), each answer checked.

use crate::{measure::quantile_ms, services};
use anyhow::{Context, ensure};
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{sync::Semaphore, time::MissedTickBehavior};

/// The most requests in flight at once; a tick finding none free is counted
/// as skipped (the rate was not held), which fails the soak.
pub const MAX_IN_FLIGHT: usize = 64;
/// Kept-alive connections: a small pool, so the marketplace's descriptors
/// measure the marketplace, not the client.
const IDLE_CONNECTIONS: usize = 8;
/// The pages asked for, in turn.
const QUERIES: [&str; 3] = [
    "?category=mystery",
    "?category=science_fiction",
    "?category=self_help",
];
const ERRORS_SHOWN: usize = 5;

/// What the load saw; read for progress lines while it runs.
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
    pub latencies_us: Vec<u64>,
}

pub type Counters = Arc<Mutex<Counts>>;

pub async fn drive(
    addr: SocketAddr,
    rate: u32,
    duration: Duration,
    counters: Counters,
) -> anyhow::Result<Counts> {
    let client = services::http_client().pool_max_idle_per_host(IDLE_CONNECTIONS);
    let client = client.build().context("cannot build the HTTP client")?;
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
    // A late tick is made up at once: the average rate holds.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let started = Instant::now();
    while started.elapsed() < duration {
        ticks.tick().await;
        let mut counts = counters.lock().expect("not poisoned");
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            counts.skipped += 1;
            continue;
        };
        let query = QUERIES[counts.sent as usize % QUERIES.len()];
        let url = format!("http://{addr}/{query}");
        counts.sent += 1;
        let (client, counters) = (client.clone(), counters.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = page(&client, &url).await;
            let mut counts = counters.lock().expect("not poisoned");
            counts
                .latencies_us
                .push(started.elapsed().as_micros() as u64);
            match outcome {
                Ok(full) => {
                    counts.answered += 1;
                    counts.degraded += u64::from(!full);
                }
                Err(err) => {
                    counts.errors += 1;
                    if counts.first_errors.len() < ERRORS_SHOWN {
                        counts.first_errors.push(format!("{url}: {err:#}"));
                    }
                }
            }
            drop(permit);
        });
    }
    // Every request has a timeout (the client's); this bounds the wait for all.
    let all = u32::try_from(MAX_IN_FLIGHT).expect("a small number");
    let all_answered = in_flight.acquire_many(all);
    let _all = tokio::time::timeout(Duration::from_secs(10), all_answered)
        .await
        .context("the last requests did not finish")??;
    let mut counts = std::mem::take(&mut *counters.lock().expect("not poisoned"));
    let latencies = &mut counts.latencies_us;
    latencies.sort_unstable();
    let at = |q| quantile_ms(latencies, q);
    (counts.p50_ms, counts.p99_ms, counts.max_ms) = (at(0.50), at(0.99), at(1.0));
    Ok(counts)
}

/// One page: full (`true`) or degraded (`false`); an error for anything else.
async fn page(client: &reqwest::Client, url: &str) -> anyhow::Result<bool> {
    let response = client.get(url).send().await?;
    let status = response.status();
    let html = response.text().await.context("reading the page")?;
    ensure!(status == reqwest::StatusCode::OK, "{status}");
    services::full_page(&html)
}
