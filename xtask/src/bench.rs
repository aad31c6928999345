//! `cargo xtask bench`: release builds of both services and of two baselines
//! (crate `bench`: bare tonic, bare axum), load-tested on loopback with
//! h2load in the same run, rounds interleaved, medians reported. Prints one
//! table (and updates BENCHMARKS.md and docs/bench.png) with the budgets of
//! issue 10 marked met or missed. `cargo xtask test bench` runs a short one.

mod load;
mod report;
mod targets;

use crate::{
    procfs,
    tools::{Tool, Tools},
    workspace,
};
use anyhow::{Context, bail, ensure};
use clap::Args;
use load::{Call, Load};
use report::{Report, Sample, Startup, Target};
use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};
use targets::{PROD, Process, Telemetry, Traces};

/// What the `bench` test step needs installed: h2load, binutils' strip and
/// matplotlib (in the Python venv) for the plot.
pub const TOOLS: &[Tool] = &[
    Tool::Debian {
        command: "h2load",
        package: "nghttp2-client",
    },
    Tool::Debian {
        command: "strip",
        package: "binutils",
    },
    Tool::Python,
];

#[derive(Args)]
pub struct BenchArgs {
    /// Interleaved rounds; every figure is the median over them.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Multiplies every scenario's number of requests.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// The most seconds one scenario may take before the bench fails.
    #[arg(long, default_value_t = 60)]
    bound_seconds: u64,
    /// Leave BENCHMARKS.md and docs/bench.png alone (results stay under the
    /// target dir's bench/).
    #[arg(long)]
    no_update: bool,
}

struct Settings {
    rounds: usize,
    scale: f64,
    bound: Duration,
    startup_runs: usize,
    /// Update BENCHMARKS.md and docs/bench.png.
    update_docs: bool,
    command: String,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    ensure!(args.scale > 0.0, "--scale must be positive");
    let target_dir = workspace::target_dir()?;
    let tools = Tools::new(&target_dir);
    tools.ensure(TOOLS)?;
    let mut command = "cargo xtask bench".to_owned();
    for arg in std::env::args().skip(2) {
        command += &format!(" {arg}");
    }
    bench(
        &tools,
        &target_dir,
        &Settings {
            rounds: args.rounds,
            scale: args.scale,
            bound: Duration::from_secs(args.bound_seconds),
            startup_runs: 5,
            update_docs: !args.no_update,
            command,
        },
    )
}

/// The step `cargo xtask test` runs: every scenario, a few thousand requests
/// each, one round; the answers are checked, the budgets only reported.
pub fn test(tools: &Tools, target_dir: &Path) -> anyhow::Result<()> {
    bench(
        tools,
        target_dir,
        &Settings {
            rounds: 1,
            scale: 0.1,
            bound: Duration::from_secs(60),
            startup_runs: 2,
            update_docs: false,
            command: "cargo xtask test bench".into(),
        },
    )
}

/// The concurrencies of every call.
const CONCURRENCIES: [usize; 3] = [1, 16, 64];

/// Requests per scenario at scale 1: enough for a stable p99 (≥ 100 samples
/// past it) and a second or more of load where the rate is high.
fn requests(call: Call, concurrency: usize) -> usize {
    match (call, concurrency) {
        (Call::Recommend, 1) => 10_000,
        (Call::Recommend, _) => 60_000,
        (Call::Page, 1) => 5_000,
        (Call::Page, _) => 25_000,
    }
}

/// Requests each target gets before the rounds: connections made, caches
/// and allocator pools warm.
const WARMUP_REQUESTS: usize = 2_000;

/// The processes, by index in the list `bench` starts.
const SINK: usize = 0;
const BARE_TONIC: usize = 1;
const RECOMMENDATIONS: usize = 2;
const RECOMMENDATIONS_ALWAYS: usize = 3;
const RECOMMENDATIONS_WARN: usize = 4;
const BARE_AXUM: usize = 5;
const BARE_CHAIN: usize = 6;
const MARKETPLACE: usize = 7;
const MARKETPLACE_WARN: usize = 8;
const RECOMMENDATIONS_QUIET: usize = 9;
const RECOMMENDATIONS_UNTRACED: usize = 10;
const MARKETPLACE_UNTRACED: usize = 11;

/// RUST_LOG with every other info line but no access lines (the gRPC and
/// HTTP trace layers log only those at info).
const NO_ACCESS_LINES: &str = "info,platform::grpc::trace=warn,platform::http::trace=warn";

/// The targets the budgets are about.
const GRPC_TARGET: &str = "recommendations: info logs, OTLP 10%";
const PAGE_TARGET: &str = "marketplace → recommendations: info logs, OTLP 10%";
/// Every layer and metric, no spans and no access lines: what tracing and
/// logging cost is the difference to the rows above.
const UNTRACED_GRPC: &str = "recommendations: RUST_LOG=warn, OTEL_SDK_DISABLED";
const UNTRACED_PAGE: &str = "marketplace → recommendations: RUST_LOG=warn, OTEL_SDK_DISABLED";

/// (label, call, baseline, processes: the first gets the load)
fn targets() -> Vec<(&'static str, Call, bool, Vec<usize>)> {
    vec![
        ("bare tonic", Call::Recommend, true, vec![BARE_TONIC]),
        (GRPC_TARGET, Call::Recommend, false, vec![RECOMMENDATIONS]),
        (
            "recommendations: info logs, OTLP 100%",
            Call::Recommend,
            false,
            vec![RECOMMENDATIONS_ALWAYS],
        ),
        (
            "recommendations: no access lines, OTLP 10%",
            Call::Recommend,
            false,
            vec![RECOMMENDATIONS_QUIET],
        ),
        (
            "recommendations: RUST_LOG=warn, no exporter",
            Call::Recommend,
            false,
            vec![RECOMMENDATIONS_WARN],
        ),
        (
            UNTRACED_GRPC,
            Call::Recommend,
            false,
            vec![RECOMMENDATIONS_UNTRACED],
        ),
        (
            "bare axum → bare tonic",
            Call::Page,
            true,
            vec![BARE_CHAIN, BARE_TONIC],
        ),
        (
            PAGE_TARGET,
            Call::Page,
            false,
            vec![MARKETPLACE, RECOMMENDATIONS],
        ),
        (
            "marketplace → recommendations: RUST_LOG=warn, no exporter",
            Call::Page,
            false,
            vec![MARKETPLACE_WARN, RECOMMENDATIONS_WARN],
        ),
        (
            UNTRACED_PAGE,
            Call::Page,
            false,
            vec![MARKETPLACE_UNTRACED, RECOMMENDATIONS_UNTRACED],
        ),
        ("bare axum, fixed list", Call::Page, false, vec![BARE_AXUM]),
    ]
}

fn bench(tools: &Tools, target_dir: &Path, settings: &Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    // Two builds: with `bench` in the same one, its dependencies' features would be unified into
    // the services', and what is measured would not be the binaries the Dockerfiles build.
    workspace::build_release()?;
    workspace::run(workspace::cargo().args([
        "build",
        "--release",
        "--locked",
        "--package",
        "bench",
    ]))?;
    let bin = |name: &str| target_dir.join("release").join(name);
    let work = target_dir.join("bench");
    fs::create_dir_all(&work)?;
    let load_before = procfs::load_average();
    let body = work.join("recommend.grpc");
    workspace::run(
        Command::new(bin("bench-tool"))
            .arg("grpc-body")
            .arg("--out")
            .arg(&body),
    )?;

    let mut processes = start_processes(&bin)?;
    let sink = processes[SINK].addr("grpc_addr")?;
    let startups = vec![
        startup(&bin, "recommendations", sink, &[], settings.startup_runs)?,
        startup(
            &bin,
            "marketplace",
            sink,
            &upstream(&processes[RECOMMENDATIONS])?,
            settings.startup_runs,
        )?,
    ];

    let targets: Vec<(Target, Vec<usize>)> = targets()
        .into_iter()
        .map(|(label, call, baseline, procs)| {
            let target = Target {
                label,
                call,
                baseline,
            };
            (target, procs)
        })
        .collect();
    for (target, procs) in &targets {
        let mut warmup = scenario(&processes, target, procs, 16, WARMUP_REQUESTS, &body, &work)?;
        warmup.bound = settings.bound;
        warmup
            .run()
            .with_context(|| format!("warming up {}", target.label))?;
    }

    let mut samples = Vec::new();
    let total = settings.rounds * CONCURRENCIES.len() * targets.len();
    for round in 0..settings.rounds {
        for call in [Call::Recommend, Call::Page] {
            for &concurrency in &CONCURRENCIES {
                let of_call: Vec<usize> = (0..targets.len())
                    .filter(|&i| targets[i].0.call == call)
                    .collect();
                // A different target goes first each round, so none always
                // runs right after the same neighbour.
                for k in 0..of_call.len() {
                    let index = of_call[(k + round) % of_call.len()];
                    let (target, procs) = &targets[index];
                    let n = ((requests(call, concurrency) as f64) * settings.scale).ceil() as usize;
                    let mut load =
                        scenario(&processes, target, procs, concurrency, n, &body, &work)?;
                    load.bound = settings.bound;
                    let pids: Vec<u32> = procs.iter().map(|&i| processes[i].pid()).collect();
                    for &pid in &pids {
                        procfs::reset_peak(pid)?;
                    }
                    let cpu_before = cpu_of(&pids)?;
                    let run = load.run().with_context(|| {
                        format!("{} at concurrency {concurrency}", target.label)
                    })?;
                    let cpu = cpu_of(&pids)? - cpu_before;
                    let peak_rss_mib = pids
                        .iter()
                        .map(|&pid| Ok(procfs::peak_rss_kib(pid)? as f64 / 1024.0))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    for &i in procs {
                        processes[i].alive()?;
                    }
                    check_answers(&bin, call, load.addr)
                        .with_context(|| format!("checking {}'s answers", target.label))?;
                    let sample = Sample {
                        target: index,
                        concurrency,
                        per_second: run.per_second,
                        p50_ms: run.p50_ms,
                        p99_ms: run.p99_ms,
                        cpu_per_10k: cpu / n as f64 * 10_000.0,
                        peak_rss_mib,
                    };
                    eprintln!(
                        "bench: [{:>2}/{total}] round {}/{} {:<9} c={concurrency:<2} {:<58} {n} in {:.2} s, {:>7.0} req/s, p50 {:.3} ms, p99 {:.3} ms, CPU {:.2} s/10k",
                        samples.len() + 1,
                        round + 1,
                        settings.rounds,
                        match call {
                            Call::Recommend => "Recommend",
                            Call::Page => "GET /",
                        },
                        target.label,
                        run.seconds,
                        run.per_second,
                        run.p50_ms,
                        run.p99_ms,
                        sample.cpu_per_10k,
                    );
                    samples.push(sample);
                }
            }
        }
    }
    check_no_fallbacks(&processes[MARKETPLACE])?;
    check_no_fallbacks(&processes[MARKETPLACE_WARN])?;
    // The info-level services really logged a line per call (the comparison
    // with the bare servers is only fair if they did).
    let rec_lines = processes[RECOMMENDATIONS].lines();
    let spans = processes[SINK]
        .spans
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "bench: recommendations (info) wrote {rec_lines} log lines; the OTLP sink received {spans} spans"
    );
    ensure!(
        rec_lines as usize >= WARMUP_REQUESTS,
        "recommendations at info level wrote only {rec_lines} lines: are access lines off?"
    );
    ensure!(spans > 0, "no span reached the OTLP sink");
    drop(processes);

    let sizes = vec![
        (
            "recommendations",
            stripped_size(&bin("recommendations"), &work)?,
        ),
        ("marketplace", stripped_size(&bin("marketplace"), &work)?),
    ];
    let targets: Vec<Target> = targets.into_iter().map(|(target, _)| target).collect();
    let rows = report::rows(&targets, &samples, &CONCURRENCIES);
    let report = Report {
        targets,
        rows,
        startups,
        sizes,
        date: format!("{} UTC", procfs::utc_minute()?),
        machine: procfs::machine(),
        load_before,
        load_after: procfs::load_average(),
        rounds: settings.rounds,
        command: settings.command.clone(),
    };
    let budgets = report.budgets(GRPC_TARGET, PAGE_TARGET);
    let markdown = report.markdown(&budgets);
    println!("{markdown}");

    let json = work.join("results.json");
    fs::write(&json, serde_json::to_vec_pretty(&report.plot_json())?)?;
    fs::write(work.join("results.md"), &markdown)?;
    let (document, plot) = if settings.update_docs {
        (
            workspace::root().join("BENCHMARKS.md"),
            workspace::root().join("docs/bench.png"),
        )
    } else {
        (work.join("BENCHMARKS.md"), work.join("bench.png"))
    };
    workspace::run(
        tools
            .command("python")?
            .arg(workspace::root().join("bench/plot.py"))
            .arg(&json)
            .arg(&plot),
    )?;
    let existing = fs::read_to_string(&document).unwrap_or_else(|_| "# Benchmarks\n".into());
    fs::write(&document, report::splice(&existing, &markdown))?;
    eprintln!(
        "bench: table in {}, plot in {}, in {:.0?}",
        document.display(),
        plot.display(),
        started.elapsed()
    );
    Ok(())
}

/// Starts every process, in the order of the indices above.
fn start_processes(bin: &dyn Fn(&str) -> PathBuf) -> anyhow::Result<Vec<Process>> {
    let sink = Process::start("otlp sink", &bin("bench-tool"), &["otlp-sink".into()], &[])?;
    let sink_addr = sink.addr("grpc_addr")?;
    let bare_tonic = Process::start("bare tonic", &bin("bare-tonic"), &[], &[])?;
    let bare_tonic_url = format!("http://{}", bare_tonic.addr("grpc_addr")?);
    let recommendations = |name, telemetry| {
        Process::service(name, &bin("recommendations"), telemetry, sink_addr, &[])
    };
    let rec = recommendations("recommendations", PROD)?;
    let rec_always = recommendations(
        "recommendations (100%)",
        Telemetry {
            rust_log: "info",
            traces: Traces::Exported("parentbased_always_on", "1"),
        },
    )?;
    let warn = Telemetry {
        rust_log: "warn",
        traces: Traces::NotExported,
    };
    let rec_warn = recommendations("recommendations (warn)", warn)?;
    let bare_axum = Process::start("bare axum", &bin("bare-axum"), &[], &[])?;
    let bare_chain = Process::start(
        "bare axum → bare tonic",
        &bin("bare-axum"),
        &["--upstream".into(), bare_tonic_url],
        &[],
    )?;
    let marketplace = |name, telemetry, upstream_of: &Process| {
        Process::service(
            name,
            &bin("marketplace"),
            telemetry,
            sink_addr,
            &upstream(upstream_of)?,
        )
    };
    let mkt = marketplace("marketplace", PROD, &rec)?;
    let mkt_warn = marketplace("marketplace (warn)", warn, &rec_warn)?;
    let rec_quiet = recommendations(
        "recommendations (no access lines)",
        Telemetry {
            rust_log: NO_ACCESS_LINES,
            ..PROD
        },
    )?;
    let untraced = Telemetry {
        traces: Traces::Off,
        ..warn
    };
    let rec_untraced = recommendations("recommendations (untraced)", untraced)?;
    let mkt_untraced = marketplace("marketplace (untraced)", untraced, &rec_untraced)?;
    Ok(vec![
        sink,
        bare_tonic,
        rec,
        rec_always,
        rec_warn,
        bare_axum,
        bare_chain,
        mkt,
        mkt_warn,
        rec_quiet,
        rec_untraced,
        mkt_untraced,
    ])
}

/// The marketplace's settings that point it at `recommendations`.
fn upstream(recommendations: &Process) -> anyhow::Result<Vec<(&'static str, String)>> {
    let addr = recommendations.addr("grpc_addr")?;
    Ok(vec![
        ("RECOMMENDATIONS_HOST", addr.ip().to_string()),
        ("RECOMMENDATIONS_PORT", addr.port().to_string()),
    ])
}

fn scenario<'a>(
    processes: &[Process],
    target: &Target,
    procs: &[usize],
    concurrency: usize,
    requests: usize,
    body: &'a Path,
    work: &Path,
) -> anyhow::Result<Load<'a>> {
    let front = &processes[procs[0]];
    let addr = match target.call {
        Call::Recommend => front.addr("grpc_addr")?,
        Call::Page => front.addr("http_addr")?,
    };
    Ok(Load {
        call: target.call,
        addr,
        concurrency,
        requests,
        bound: Duration::from_secs(60),
        body,
        log: work.join("h2load.log"),
    })
}

fn cpu_of(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|&pid| procfs::cpu_seconds(pid)).sum()
}

/// exec to SERVING and idle RSS, each the median of `runs` fresh starts of
/// `service` with the prod overlay's telemetry settings.
fn startup(
    bin: &dyn Fn(&str) -> PathBuf,
    service: &'static str,
    sink: SocketAddr,
    more_env: &[(&str, String)],
    runs: usize,
) -> anyhow::Result<Startup> {
    let mut command = Command::new(bin("bench-tool"));
    command
        .args(["startup", "--service", service, "--runs", &runs.to_string()])
        .arg("--bin")
        .arg(bin(service))
        .envs([("LOG_FORMAT", "json"), ("SHUTDOWN_DELAY_SECONDS", "0")])
        .envs(PROD.env(sink))
        .envs(more_env.iter().map(|(key, value)| (key, value)));
    let output = command.output().context("cannot run bench-tool startup")?;
    if !output.status.success() {
        bail!(
            "bench-tool startup --service {service} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let figures: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let numbers = |key: &str| -> anyhow::Result<Vec<f64>> {
        figures[key]
            .as_array()
            .with_context(|| format!("no {key} from bench-tool startup"))?
            .iter()
            .map(|value| value.as_f64().context("not a number"))
            .collect()
    };
    let serving_ms = report::median(&mut numbers("serving_ms")?);
    let idle_rss_mib = report::median(&mut numbers("idle_rss_kib")?) / 1024.0;
    eprintln!(
        "bench: {service}: exec to SERVING {serving_ms:.1} ms, idle RSS {idle_rss_mib:.1} MiB (medians of {runs})"
    );
    Ok(Startup {
        service,
        serving_ms,
        idle_rss_mib,
    })
}

/// A sample of answers, read by real clients: Recommend through tonic (h2load
/// cannot read the grpc-status trailer), pages for their three books.
fn check_answers(
    bin: &dyn Fn(&str) -> PathBuf,
    call: Call,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    match call {
        Call::Recommend => {
            let output = Command::new(bin("bench-tool"))
                .args(["check", "--calls", "30", "--addr"])
                .arg(format!("http://{addr}"))
                .output()?;
            ensure!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Call::Page => {
            for _ in 0..5 {
                let page = http_get(addr, "/")?;
                ensure!(
                    page.starts_with("HTTP/1.1 200"),
                    "GET / answered {}",
                    first_line(&page)
                );
                let books = page.matches("<li>").count();
                ensure!(
                    books == 3 && !page.contains("unavailable"),
                    "GET / showed {books} books (expected 3, and no fallback notice)"
                );
            }
        }
    }
    Ok(())
}

/// Fails if the marketplace ever showed a page without recommendations.
fn check_no_fallbacks(marketplace: &Process) -> anyhow::Result<()> {
    let metrics = http_get(marketplace.addr("admin_addr")?, "/metrics")?;
    let fallbacks: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("marketplace_recommendations_fallback_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    ensure!(
        fallbacks == 0.0,
        "{} showed {fallbacks} pages without recommendations",
        marketplace.name
    );
    Ok(())
}

/// A bare HTTP/1.1 GET: the whole answer, head and body.
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .with_context(|| format!("reading GET {path} from {addr}"))?;
    Ok(answer)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// The size of `binary` once stripped of symbols (a copy is stripped).
fn stripped_size(binary: &Path, work: &Path) -> anyhow::Result<u64> {
    let copy = work.join(binary.file_name().context("a binary file name")?);
    fs::copy(binary, &copy)?;
    workspace::run(Command::new("strip").arg(&copy))?;
    Ok(fs::metadata(&copy)?.len())
}
