//! The paced client: `GET /` at a fixed rate, whatever the latency (a request
//! leaves on its tick, not when the previous one answered, so a slow server
//! cannot slow the load down), each answer checked.

use crate::{measure::quantile_ms, services};
use anyhow::Context;
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{sync::Semaphore, time::MissedTickBehavior};

/// The most requests in flight; a tick finding none free is skipped, which fails the soak.
pub const MAX_IN_FLIGHT: u32 = 64;
/// A small pool, so the marketplace's descriptors measure it, not the client.
const IDLE_CONNECTIONS: usize = 8;
/// The categories asked for, in turn.
const CATEGORIES: [&str; 3] = ["mystery", "science_fiction", "self_help"];
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
    /// Sorted once the load is over.
    pub latencies_us: Vec<u64>,
}

impl Counts {
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        quantile_ms(&self.latencies_us, quantile)
    }
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
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize));
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
        let category = CATEGORIES[counts.sent as usize % CATEGORIES.len()];
        let url = format!("http://{addr}/?category={category}");
        counts.sent += 1;
        let (client, counters) = (client.clone(), counters.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = services::page(&client, &url).await;
            let mut counts = counters.lock().expect("not poisoned");
            let took = started.elapsed().as_micros() as u64;
            counts.latencies_us.push(took);
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
    let all_answered = in_flight.acquire_many(MAX_IN_FLIGHT);
    let _all = tokio::time::timeout(Duration::from_secs(10), all_answered)
        .await
        .context("the last requests did not finish")??;
    let mut counts = std::mem::take(&mut *counters.lock().expect("not poisoned"));
    counts.latencies_us.sort_unstable();
    Ok(counts)
}
