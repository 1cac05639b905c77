//! `shoal bench`: a closed-loop load generator over HTTP, gRPC or RESP.
//!
//! N connections each send a round of `--pipeline` requests at a time (reads and writes of
//! `bench-key-%06d` in the `--mix` ratio, keys drawn uniformly or Zipf-distributed), for a
//! duration or a number of operations; latencies go into one HDR histogram per connection,
//! merged at the end. Over HTTP and gRPC every request goes by default straight to the
//! leader of its key's shard, the way a cluster-aware client works; `--route node` sends
//! everything to `--addr` instead, which forwards. RESP always goes to `--addr`, so the
//! same tool measures shoal and any Redis server side by side. The key names match
//! `scripts/shoal_wrk.lua`, so either tool can read what the other wrote.

mod drivers;
mod zipf;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use serde_json::json;

use crate::client::{Format, base_url};
use drivers::{HttpTargets, Request, Setup};

/// Limits on the load a run may ask for.
const MAX_CONNECTIONS: usize = 10_000;
const MAX_PIPELINE: usize = 1_000;
const MAX_KEYS: u64 = 100_000_000;
const MAX_VALUE_BYTES: usize = 8 * 1024 * 1024;
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
const MAX_OPS: u64 = 10_000_000_000;
/// A request that takes longer than this counts as failed (a timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest latency the histograms record; slower requests are clamped to it.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Op {
    /// Writes only (PUT, Put, SET), each acknowledged after its quorum's fsync.
    Put,
    /// Reads only (GET, Get); absent keys count as answers.
    Get,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Route {
    /// Each request to the leader of its key's shard (a cluster-aware client).
    Leader,
    /// Every request to --addr, which forwards to the leader (a plain client).
    Node,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// HTTP/JSON API (`--addr` is a node's --http-addr).
    Http,
    /// gRPC (`--addr` is a node's --grpc-addr).
    Grpc,
    /// Redis protocol (`--addr` is shoal's --resp-addr or any Redis server).
    Resp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// A few hot keys (YCSB's Zipf, skew 0.99).
    Zipf,
}

/// Reads and writes in proportion, e.g. `90:10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub reads: u32,
    pub writes: u32,
}

fn parse_mix(text: &str) -> Result<Mix, String> {
    let bad = || format!("{text:?} is not a mix: give READS:WRITES, e.g. 90:10 or 0:1");
    let (r, w) = text.split_once(':').ok_or_else(bad)?;
    let mix = Mix {
        reads: r.trim().parse().map_err(|_| bad())?,
        writes: w.trim().parse().map_err(|_| bad())?,
    };
    if mix.reads == 0 && mix.writes == 0 {
        return Err("a mix needs reads or writes: not 0:0".into());
    }
    Ok(mix)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: give e.g. 30, 30s, 5m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    let duration = Duration::from_secs(secs);
    if secs == 0 || duration > MAX_DURATION {
        return Err(format!(
            "{text:?}: give 1 s to {} h",
            MAX_DURATION.as_secs() / 3600
        ));
    }
    Ok(duration)
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    shoal bench --addr 127.0.0.1:7101 --op put --connections 50 --duration 15s\n  \
    shoal bench --protocol grpc --addr 127.0.0.1:7301 --mix 90:10 --distribution zipf\n  \
    shoal bench --protocol resp --addr 127.0.0.1:6379 --pipeline 16 --ops 1000000\n  \
    shoal bench --op get --preload --output json")]
pub struct BenchArgs {
    /// TLS (HTTP and gRPC; for RESP over TLS use redis-benchmark --tls).
    #[command(flatten)]
    pub access: crate::client_access::ClientAccessArgs,
    /// Which API to load.
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,
    /// Any node's address for the protocol (host:port). Default: 127.0.0.1:8080 (http),
    /// 127.0.0.1:50051 (grpc), 127.0.0.1:6379 (resp).
    #[arg(long, env = "SHOAL_ADDR")]
    pub addr: Option<String>,
    /// What each request does (overridden by --mix).
    #[arg(long, value_enum, default_value_t = Op::Put)]
    pub op: Op,
    /// Reads and writes in this proportion, READS:WRITES (e.g. 90:10).
    #[arg(long, value_parser = parse_mix)]
    pub mix: Option<Mix>,
    /// Concurrent connections (per node with --route leader), each sending rounds.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Requests per round on each connection: one pipeline over RESP, concurrent calls
    /// over gRPC (multiplexed) and HTTP (on more pooled connections).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// How long to measure: 30, 30s, 5m, 1h. Default 10s unless --ops is given.
    #[arg(long, alias = "duration-secs", value_parser = parse_duration, conflicts_with = "ops")]
    pub duration: Option<Duration>,
    /// Stop after this many requests instead of after a duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Distinct keys, `bench-key-000000` upwards.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// How keys are drawn.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// Size of each written value (and of the values --preload writes).
    #[arg(long, alias = "value-bytes", default_value_t = 100)]
    pub value_size: usize,
    /// gRPC, leader-routed: every connection shares one client, so all calls to a node
    /// are multiplexed over one HTTP/2 connection (how an application uses the client);
    /// without it each connection has its own client and TCP connections.
    #[arg(long)]
    pub shared_client: bool,
    /// Where HTTP and gRPC requests go (RESP always goes to --addr).
    #[arg(long, value_enum, default_value_t = Route::Leader)]
    pub route: Route,
    /// Reads are served by any replica from its applied state (stale reads) instead of
    /// linearizable reads (HTTP and gRPC).
    #[arg(long)]
    pub stale: bool,
    /// Write every key once before measuring (so reads find them).
    #[arg(long)]
    pub preload: bool,
    /// `human`: a short report; `json`: one JSON object.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub output: Format,
}

impl BenchArgs {
    fn check(&self) -> Result<(), String> {
        let within = |name: &str, value: u64, max: u64| {
            if value == 0 || value > max {
                Err(format!("--{name} must be 1 to {max}, not {value}"))
            } else {
                Ok(())
            }
        };
        within(
            "connections",
            self.connections as u64,
            MAX_CONNECTIONS as u64,
        )?;
        within("pipeline", self.pipeline as u64, MAX_PIPELINE as u64)?;
        within("keys", self.keys, MAX_KEYS)?;
        if let Some(ops) = self.ops {
            within("ops", ops, MAX_OPS)?;
        }
        if self.value_size > MAX_VALUE_BYTES {
            return Err(format!(
                "--value-size must be at most {MAX_VALUE_BYTES} (the server's default value limit), not {}",
                self.value_size
            ));
        }
        if self.shared_client && (self.protocol != Protocol::Grpc || self.route != Route::Leader) {
            return Err("--shared-client is for --protocol grpc with --route leader".into());
        }
        if self.protocol == Protocol::Resp && self.stale {
            return Err("--stale is for HTTP and gRPC; RESP reads are linearizable".into());
        }
        Ok(())
    }

    fn mix(&self) -> Mix {
        self.mix.unwrap_or(match self.op {
            Op::Put => Mix {
                reads: 0,
                writes: 1,
            },
            Op::Get => Mix {
                reads: 1,
                writes: 0,
            },
        })
    }

    fn addr(&self) -> String {
        self.addr.clone().unwrap_or_else(|| {
            match self.protocol {
                Protocol::Http => "127.0.0.1:8080",
                Protocol::Grpc => "127.0.0.1:50051",
                Protocol::Resp => "127.0.0.1:6379",
            }
            .to_string()
        })
    }
}

/// What every connection draws requests from.
pub struct Workload {
    keys: u64,
    zipf: Option<zipf::Zipf>,
    mix: Mix,
    value: bytes::Bytes,
    stale: bool,
}

impl Workload {
    fn request(&self, rng: &mut impl Rng) -> Request {
        let index = match &self.zipf {
            Some(zipf) => zipf.sample(rng),
            None => rng.random_range(0..self.keys),
        };
        let total = self.mix.reads + self.mix.writes;
        Request {
            write: rng.random_range(0..total) >= self.mix.reads,
            key: key_name(index),
        }
    }
}

fn key_name(i: u64) -> String {
    format!("bench-key-{i:06}")
}

/// What one connection measured.
struct Tally {
    latencies: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latencies: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
            errors: 0,
            first_error: None,
        }
    }

    fn record(&mut self, answer: Result<Duration, String>) {
        match answer {
            Ok(waited) => {
                let us = (waited.as_micros() as u64).clamp(1, MAX_LATENCY_US);
                self.latencies.record(us).expect("clamped to the bounds");
            }
            Err(why) => {
                self.errors += 1;
                self.first_error.get_or_insert(why);
            }
        }
    }
}

pub async fn run(args: BenchArgs) -> ExitCode {
    match bench(&args).await {
        Ok(report) => {
            let failed = report["errors"].as_u64().unwrap_or(0) > 0;
            match args.output {
                Format::Json => println!("{report}"),
                Format::Human => print!("{}", render(&report)),
            }
            if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(message) => {
            match args.output {
                Format::Json => println!(
                    "{}",
                    json!({"error": {"code": "bench_failed", "message": message}})
                ),
                Format::Human => eprintln!("error: {message}"),
            }
            ExitCode::from(2)
        }
    }
}

/// How requests will be sent, and to how many nodes (HTTP only knows before sending).
async fn setup(args: &BenchArgs) -> Result<(Setup, Option<usize>), String> {
    let addr = args.addr();
    match args.protocol {
        Protocol::Http => {
            let base = base_url(&addr).map_err(|e| e.to_string())?;
            let view = crate::cluster_cmd::fetch(&addr).await?;
            let targets = Arc::new(HttpTargets::new(args.route, &base, &view));
            let mut http = reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .pool_max_idle_per_host(args.connections * args.pipeline);
            if let Some(tls) = args.access.rustls()? {
                http = http.use_preconfigured_tls(tls);
            }
            http = http.default_headers(args.access.http_headers()?);
            let http = http.build().map_err(|e| e.to_string())?;
            let in_use = targets.in_use();
            Ok((Setup::Http { http, targets }, Some(in_use)))
        }
        Protocol::Grpc => {
            let addr = addr.trim_start_matches("http://").to_string();
            let tls = args.access.grpc()?;
            let credentials = args.access.credentials()?;
            Ok((
                Setup::Grpc {
                    shared: match args.shared_client {
                        true => Some(
                            drivers::smart_client(&addr, tls.clone(), credentials.clone()).await?,
                        ),
                        false => None,
                    },
                    addr,
                    route: args.route,
                    tls,
                    credentials,
                },
                None,
            ))
        }
        Protocol::Resp => {
            if args.access.enabled() {
                return Err(
                    "--tls-ca: shoal bench speaks RESP in plaintext only; measure RESP \
                            over TLS with redis-benchmark --tls --cacert <CA>"
                        .into(),
                );
            }
            let url = if addr.starts_with("redis://") {
                addr
            } else {
                format!("redis://{addr}")
            };
            let url = match args.access.credentials()? {
                None => url,
                Some(credentials) => {
                    let mut parsed =
                        reqwest::Url::parse(&url).map_err(|e| format!("--addr {url}: {e}"))?;
                    let bad = |_| format!("--addr {url}: cannot carry --user's credentials");
                    parsed.set_username(&credentials.user).map_err(bad)?;
                    parsed
                        .set_password(Some(&credentials.password))
                        .map_err(bad)?;
                    parsed.to_string()
                }
            };
            Ok((Setup::Resp { url }, Some(1)))
        }
    }
}

async fn bench(args: &BenchArgs) -> Result<serde_json::Value, String> {
    args.check()?;
    args.access.apply();
    let (setup, nodes_targeted) = setup(args).await?;
    let mix = args.mix();
    let workload = Arc::new(Workload {
        keys: args.keys,
        zipf: (args.distribution == Distribution::Zipf)
            .then(|| zipf::Zipf::new(args.keys, zipf::THETA)),
        mix,
        value: bytes::Bytes::from(vec![b'v'; args.value_size]),
        stale: args.stale,
    });
    let show_progress = args.output == Format::Human;
    let mut drivers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        drivers.push(setup.driver(&workload).await?);
    }
    if args.preload {
        preload(args, &mut drivers, show_progress).await?;
    }

    let done = Arc::new(AtomicU64::new(0));
    let claimed = Arc::new(AtomicU64::new(0));
    let duration = args.duration.unwrap_or(Duration::from_secs(10));
    let started = Instant::now();
    let deadline = args.ops.is_none().then(|| started + duration);
    let progress = match args.ops {
        Some(ops) => bar(show_progress, ops, "requests"),
        None => bar(show_progress, duration.as_secs(), "seconds"),
    };
    let workers: Vec<_> = drivers
        .into_iter()
        .map(|mut driver| {
            let (workload, done, claimed) = (workload.clone(), done.clone(), claimed.clone());
            let (pipeline, budget) = (args.pipeline as u64, args.ops);
            tokio::spawn(async move {
                let mut tally = Tally::new();
                loop {
                    let round = match (deadline, budget) {
                        (Some(deadline), _) if Instant::now() >= deadline => break,
                        (_, Some(budget)) => {
                            let first = claimed.fetch_add(pipeline, Ordering::Relaxed);
                            if first >= budget {
                                break;
                            }
                            pipeline.min(budget - first)
                        }
                        _ => pipeline,
                    };
                    let requests: Vec<Request> = {
                        let mut rng = rand::rng();
                        (0..round).map(|_| workload.request(&mut rng)).collect()
                    };
                    let answers = match tokio::time::timeout(
                        REQUEST_TIMEOUT,
                        driver.round(&requests),
                    )
                    .await
                    {
                        Ok(answers) => answers,
                        Err(_) => {
                            vec![Err(format!("no answer in {REQUEST_TIMEOUT:?}")); requests.len()]
                        }
                    };
                    for answer in answers {
                        tally.record(answer);
                    }
                    done.fetch_add(round, Ordering::Relaxed);
                }
                tally
            })
        })
        .collect();
    let ticker = {
        let (progress, done) = (progress.clone(), done.clone());
        let by_ops = args.ops.is_some();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let secs = started.elapsed().as_secs_f64();
                let count = done.load(Ordering::Relaxed);
                progress.set_position(if by_ops { count } else { secs as u64 });
                progress.set_message(format!(
                    "{count} requests, {:.0}/s",
                    count as f64 / secs.max(0.001)
                ));
            }
        })
    };
    let mut total = Tally::new();
    for worker in workers {
        let tally = worker
            .await
            .map_err(|e| format!("a bench worker failed: {e}"))?;
        total.latencies.add(&tally.latencies).expect("same bounds");
        total.errors += tally.errors;
        if total.first_error.is_none() {
            total.first_error = tally.first_error;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    ticker.abort();
    progress.finish_and_clear();

    let ok = total.latencies.len();
    let ms = |q: f64| total.latencies.value_at_quantile(q) as f64 / 1000.0;
    let op = match (mix.reads, mix.writes) {
        (0, _) => "put",
        (_, 0) => "get",
        _ => "mix",
    };
    Ok(json!({
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "addr": args.addr(),
        "op": op,
        "mix": format!("{}:{}", mix.reads, mix.writes),
        "route": match (args.protocol, args.route) {
            (Protocol::Resp, _) | (_, Route::Node) => "node",
            (_, Route::Leader) => "leader",
        },
        // Over RESP the server may be any Redis: what its reads guarantee is its own.
        "consistency": match (op, args.protocol, args.stale) {
            ("put", _, _) | (_, Protocol::Resp, _) => serde_json::Value::Null,
            (_, _, true) => "stale".into(),
            (_, _, false) => "linearizable".into(),
        },
        "connections": args.connections,
        "pipeline": args.pipeline,
        "keys": args.keys,
        "distribution": format!("{:?}", args.distribution).to_lowercase(),
        "value_bytes": args.value_size,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "requests": ok + total.errors,
        "ok": ok,
        "errors": total.errors,
        "first_error": total.first_error,
        "rps": (ok as f64 / elapsed).round(),
        "latency_ms": {
            "p50": ms(0.5),
            "p90": ms(0.9),
            "p99": ms(0.99),
            "p999": ms(0.999),
            "max": total.latencies.max() as f64 / 1000.0,
        },
        "nodes_targeted": nodes_targeted,
    }))
}

/// Writes every key once, the connections sharing the work.
async fn preload(
    args: &BenchArgs,
    drivers: &mut [drivers::Driver],
    show_progress: bool,
) -> Result<(), String> {
    let progress = bar(show_progress, args.keys, "preloading keys");
    let next = Arc::new(AtomicU64::new(0));
    let keys = args.keys;
    let pipeline = args.pipeline as u64;
    let work = drivers.iter_mut().map(|driver| {
        let (next, progress) = (next.clone(), progress.clone());
        async move {
            loop {
                let first = next.fetch_add(pipeline, Ordering::Relaxed);
                if first >= keys {
                    return Ok::<(), String>(());
                }
                let requests: Vec<Request> = (first..(first + pipeline).min(keys))
                    .map(|i| Request {
                        write: true,
                        key: key_name(i),
                    })
                    .collect();
                for (request, answer) in requests.iter().zip(driver.round(&requests).await) {
                    answer.map_err(|why| format!("preloading {} failed: {why}", request.key))?;
                }
                progress.inc(requests.len() as u64);
            }
        }
    });
    for result in futures_util::future::join_all(work).await {
        result?;
    }
    progress.finish_and_clear();
    Ok(())
}

fn bar(visible: bool, len: u64, what: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} (ETA {eta}) {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

fn render(report: &serde_json::Value) -> String {
    let l = &report["latency_ms"];
    let text = |field: &str| report[field].as_str().unwrap_or("").to_string();
    let op = match (text("op").as_str(), report["consistency"].as_str()) {
        ("mix", Some(c)) => format!("mix {} reads:writes ({c} reads)", text("mix")),
        ("mix", None) => format!("mix {} reads:writes", text("mix")),
        (op, Some(c)) => format!("{op} ({c})"),
        (op, None) => op.to_string(),
    };
    let routed = match (text("route").as_str(), &report["nodes_targeted"]) {
        ("leader", serde_json::Value::Number(n)) => format!("each shard's leader ({n} nodes)"),
        ("leader", _) => "each shard's leader".to_string(),
        _ => text("addr"),
    };
    let mut out = format!(
        "shoal bench: {} {op}, {} connections x {} pipelined, {} s, {} keys ({}), {}-byte values, to {routed}\n\
         requests   {} ok, {} failed ({:.0}/s)\n\
         latency    p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms, max {} ms\n",
        text("protocol"),
        report["connections"],
        report["pipeline"],
        report["seconds"],
        report["keys"],
        text("distribution"),
        report["value_bytes"],
        report["ok"],
        report["errors"],
        report["rps"].as_f64().unwrap_or(0.0),
        l["p50"],
        l["p90"],
        l["p99"],
        l["p999"],
        l["max"],
    );
    if let Some(why) = report["first_error"].as_str() {
        out.push_str(&format!("first error: {why}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_and_durations_parse_or_say_what_to_give() {
        assert_eq!(
            parse_mix("90:10").unwrap(),
            Mix {
                reads: 90,
                writes: 10
            }
        );
        assert!(parse_mix("0:0").unwrap_err().contains("not 0:0"));
        assert!(parse_mix("90").unwrap_err().contains("READS:WRITES"));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").unwrap_err().contains("unit"));
    }

    #[test]
    fn a_mix_draws_reads_and_writes_in_proportion() {
        let workload = Workload {
            keys: 10,
            zipf: None,
            mix: Mix {
                reads: 3,
                writes: 1,
            },
            value: bytes::Bytes::new(),
            stale: false,
        };
        let mut rng = rand::rng();
        let writes = (0..40_000)
            .filter(|_| workload.request(&mut rng).write)
            .count();
        assert!((9_000..11_000).contains(&writes), "{writes}");
    }
}
