//! The parts of `cargo xtask bench` that speak gRPC (h2load cannot read
//! trailers) or must time a process from its exec: the prepared Recommend
//! body for h2load, a check of sampled answers, exec-to-SERVING with idle
//! RSS, and an OTLP sink for the services' spans.

use anyhow::{Context as _, bail, ensure};
use bookshop_test_support::otlp;
use clap::{Parser, Subcommand, ValueEnum};
use prost::Message as _;
use recommendations::catalog::{Catalog, Category};
use recommendations_proto::v1::{
    BookCategory, RecommendationRequest, recommendations_client::RecommendationsClient,
};
use std::{
    collections::HashSet,
    path::PathBuf,
    process::Stdio,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes the gRPC-framed Recommend request h2load sends (mystery, 3 books).
    GrpcBody {
        #[arg(long)]
        out: PathBuf,
    },
    /// Calls Recommend `calls` times over every category; fails unless each
    /// answer is OK with 3 distinct books of the asked category.
    Check {
        /// http://host:port
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 30)]
        calls: usize,
    },
    /// Starts a service `runs` times; prints, as JSON, the milliseconds from
    /// exec to SERVING and the RSS after `idle_ms` of idling.
    Startup {
        #[arg(long, value_enum)]
        service: Service,
        #[arg(long)]
        bin: PathBuf,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value_t = 1000)]
        idle_ms: u64,
    },
    /// An OTLP/gRPC trace receiver that counts spans; prints the running
    /// total as `{"spans":N}` after each export.
    OtlpSink {
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
}

#[derive(ValueEnum, Clone, Copy)]
enum Service {
    /// SERVING: gRPC health answers SERVING for the Recommendations service.
    Recommendations,
    /// SERVING: GET /readyz on the admin listener answers 200.
    Marketplace,
}

/// How long a started service gets to become SERVING.
const SERVING_BOUND: Duration = Duration::from_secs(10);
/// One check call's bound.
const CALL_BOUND: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::GrpcBody { out } => {
            let message = request(Category::Mystery).encode_to_vec();
            // The gRPC frame: uncompressed flag, big-endian length, message.
            let mut body = vec![0];
            body.extend(u32::try_from(message.len())?.to_be_bytes());
            body.extend(message);
            std::fs::write(&out, body).with_context(|| format!("cannot write {}", out.display()))
        }
        Command::Check { addr, calls } => check(addr, calls).await,
        Command::Startup {
            service,
            bin,
            runs,
            idle_ms,
        } => startup(service, bin, runs, Duration::from_millis(idle_ms)).await,
        Command::OtlpSink { port } => otlp_sink(port).await,
    }
}

fn request(category: Category) -> RecommendationRequest {
    let category = match category {
        Category::Mystery => BookCategory::Mystery,
        Category::ScienceFiction => BookCategory::ScienceFiction,
        Category::SelfHelp => BookCategory::SelfHelp,
    };
    RecommendationRequest {
        user_id: 1,
        category: category.into(),
        max_results: 3,
    }
}

async fn check(addr: String, calls: usize) -> anyhow::Result<()> {
    let catalog = Catalog::embedded()?;
    let channel = Endpoint::from_shared(addr.clone())?
        .timeout(CALL_BOUND)
        .connect_timeout(CALL_BOUND)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let mut client = RecommendationsClient::new(channel);
    for call in 0..calls {
        let category = Category::ALL[call % Category::ALL.len()];
        let books = client
            .recommend(request(category))
            .await
            .with_context(|| format!("call {call} ({category}) to {addr} failed"))?
            .into_inner()
            .recommendations;
        let shelf: HashSet<i32> = catalog.books(category).iter().map(|b| b.id).collect();
        let ids: HashSet<i32> = books.iter().map(|b| b.id).collect();
        ensure!(
            books.len() == 3 && ids.len() == 3 && ids.is_subset(&shelf),
            "call {call} to {addr}: expected 3 distinct {category} books, got {books:?}"
        );
    }
    println!("{}", serde_json::json!({ "checked_calls": calls }));
    Ok(())
}

async fn startup(
    service: Service,
    bin: PathBuf,
    runs: usize,
    idle: Duration,
) -> anyhow::Result<()> {
    let mut serving_ms = Vec::new();
    let mut idle_rss_kib = Vec::new();
    for _ in 0..runs {
        let (main_port, admin_port) = (free_port()?, free_port()?);
        let main_env = match service {
            Service::Recommendations => "GRPC_PORT",
            Service::Marketplace => "HTTP_PORT",
        };
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&bin)
            .env(main_env, main_port.to_string())
            .env("ADMIN_PORT", admin_port.to_string())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        loop {
            let serving = match service {
                Service::Recommendations => grpc_serving(main_port).await,
                Service::Marketplace => http_ready(admin_port).await,
            };
            if serving {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("{} exited ({status}) before serving", bin.display());
            }
            if started.elapsed() > SERVING_BOUND {
                bail!("{} not serving within {SERVING_BOUND:?}", bin.display());
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        serving_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(idle).await;
        let pid = child.id().context("the service exited while idle")?;
        idle_rss_kib.push(rss_kib(pid)?);
        child.kill().await?;
    }
    println!(
        "{}",
        serde_json::json!({ "serving_ms": serving_ms, "idle_rss_kib": idle_rss_kib })
    );
    Ok(())
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn grpc_serving(port: u16) -> bool {
    let Ok(endpoint) = Endpoint::from_shared(format!("http://127.0.0.1:{port}")) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_millis(200))
        .timeout(Duration::from_secs(1))
        .connect()
        .await
    else {
        return false;
    };
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "recommendations.v1.Recommendations".into(),
        })
        .await;
    answer.is_ok_and(|answer| answer.into_inner().status == ServingStatus::Serving as i32)
}

async fn http_ready(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head.ends_with(b" 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// The trace tests' OTLP receiver, counting the spans rather than keeping them.
async fn otlp_sink(port: u16) -> anyhow::Result<()> {
    let (listener, _) = bench::listen("grpc_addr", port).await?;
    let total = AtomicU64::new(0);
    otlp::serve(listener, move |spans| {
        let spans = spans.len() as u64;
        let total = total.fetch_add(spans, Ordering::Relaxed) + spans;
        println!("{}", serde_json::json!({ "spans": total }));
    })
    .await?;
    Ok(())
}
