//! `shoal bench`: a closed-loop load generator for a running cluster over HTTP.
//!
//! N connections each send one request at a time (PUT or GET of `bench-key-%06d`, keys
//! drawn uniformly at random) for a fixed duration; latencies go into one HDR histogram per
//! connection, merged at the end. By default every request goes straight to the leader of
//! its key's shard (read from `/v1/cluster`, slots computed here as the nodes do), the way
//! a cluster-aware client works; `--route node` sends everything to `--addr` instead,
//! which forwards. The key names match `scripts/shoal_wrk.lua`, so either tool can read
//! what the other wrote.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use serde_json::json;
use shoal_core::map::ClusterView;
use shoal_core::slot::{SLOT_COUNT, key_slot};

use crate::client::{Format, base_url};

/// Limits on the load a run may ask for.
const MAX_CONNECTIONS: usize = 10_000;
const MAX_KEYS: u64 = 100_000_000;
const MAX_VALUE_BYTES: usize = 8 * 1024 * 1024;
const MAX_DURATION_SECS: u64 = 24 * 3600;
/// A request that takes longer than this counts as failed (a timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest latency the histograms record; slower requests are clamped to it.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Op {
    /// PUT a value (every write acknowledged after its quorum's fsync).
    Put,
    /// GET a key (404s count as answers: the key does not exist).
    Get,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Route {
    /// Each request to the leader of its key's shard (a cluster-aware client).
    Leader,
    /// Every request to --addr, which forwards to the leader (a plain client).
    Node,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    shoal bench --addr 127.0.0.1:7101 --op put --connections 50 --duration-secs 15\n  \
    shoal bench --op get --preload --output json")]
pub struct BenchArgs {
    /// HTTP address of any node: host:port or http://host:port.
    #[arg(long, env = "SHOAL_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// What each request does.
    #[arg(long, value_enum, default_value_t = Op::Put)]
    pub op: Op,
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// How long to measure.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Distinct keys, `bench-key-000000` upwards, drawn uniformly at random.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Size of each PUT value (and of the values --preload writes).
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Where requests go.
    #[arg(long, value_enum, default_value_t = Route::Leader)]
    pub route: Route,
    /// GETs read any replica's applied state (`?consistency=stale`) instead of
    /// linearizable reads.
    #[arg(long)]
    pub stale: bool,
    /// Write every key once before measuring (so GETs find them).
    #[arg(long)]
    pub preload: bool,
    /// `human`: a short report; `json`: one JSON object.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub output: Format,
}

impl BenchArgs {
    fn check(&self) -> Result<(), String> {
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return Err(format!(
                "--connections must be 1 to {MAX_CONNECTIONS}, not {}",
                self.connections
            ));
        }
        if self.keys == 0 || self.keys > MAX_KEYS {
            return Err(format!("--keys must be 1 to {MAX_KEYS}, not {}", self.keys));
        }
        if self.value_bytes > MAX_VALUE_BYTES {
            return Err(format!(
                "--value-bytes must be at most {MAX_VALUE_BYTES} (the server's default value limit), not {}",
                self.value_bytes
            ));
        }
        if self.duration_secs == 0 || self.duration_secs > MAX_DURATION_SECS {
            return Err(format!(
                "--duration-secs must be 1 to {MAX_DURATION_SECS}, not {}",
                self.duration_secs
            ));
        }
        Ok(())
    }
}

/// Where each slot's requests go: an index into `bases`.
struct Targets {
    bases: Vec<String>,
    by_slot: Vec<u16>,
    /// Appended to GET URLs (`?consistency=stale` or nothing).
    get_query: &'static str,
}

impl Targets {
    fn new(args: &BenchArgs, default_base: &str, view: &ClusterView) -> Targets {
        let mut bases = vec![default_base.to_string()];
        let mut by_slot = vec![0u16; SLOT_COUNT as usize];
        if args.route == Route::Leader {
            for shard in &view.shards {
                let Some(leader) = shard.leader else { continue };
                let Some(node) = view.nodes.iter().find(|n| n.info.id == leader) else {
                    continue;
                };
                let Ok(base) = base_url(&node.info.http_addr) else {
                    continue;
                };
                let index = match bases.iter().position(|b| *b == base) {
                    Some(i) => i,
                    None => {
                        bases.push(base);
                        bases.len() - 1
                    }
                };
                for slot in shard.range.start as u32..shard.range.end {
                    by_slot[slot as usize] = index as u16;
                }
            }
        }
        let get_query = if args.stale { "?consistency=stale" } else { "" };
        Targets {
            bases,
            by_slot,
            get_query,
        }
    }

    /// How many nodes requests go to.
    fn in_use(&self) -> usize {
        let mut used: Vec<u16> = self.by_slot.clone();
        used.sort_unstable();
        used.dedup();
        used.len()
    }

    fn url(&self, key: &str, op: Op) -> String {
        let base = &self.bases[self.by_slot[key_slot(key.as_bytes()) as usize] as usize];
        let query = if op == Op::Get { self.get_query } else { "" };
        format!("{base}/v1/kv/{key}{query}")
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

    fn fail(&mut self, why: String) {
        self.errors += 1;
        self.first_error.get_or_insert(why);
    }
}

/// One request; `Err` says why it failed.
async fn request(
    http: &reqwest::Client,
    url: String,
    op: Op,
    value: &bytes::Bytes,
) -> Result<(), String> {
    let response = match op {
        Op::Put => http.put(url).body(value.clone()).send().await,
        Op::Get => http.get(url).send().await,
    }
    .map_err(|e| e.to_string())?;
    let status = response.status();
    // Read the whole body: the connection is reused only once it has been drained.
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    let absent_key = op == Op::Get && status == reqwest::StatusCode::NOT_FOUND;
    if status.is_success() || absent_key {
        Ok(())
    } else {
        Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        ))
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

async fn bench(args: &BenchArgs) -> Result<serde_json::Value, String> {
    args.check()?;
    let base = base_url(&args.addr).map_err(|e| e.to_string())?;
    let view = crate::cluster_cmd::fetch(&args.addr).await?;
    let targets = Arc::new(Targets::new(args, &base, &view));
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(args.connections)
        .build()
        .map_err(|e| e.to_string())?;
    let value = bytes::Bytes::from(vec![b'v'; args.value_bytes]);
    let show_progress = args.output == Format::Human;

    if args.preload {
        preload(args, &http, &targets, &value, show_progress).await?;
    }

    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    let progress = bar(show_progress, args.duration_secs, "measuring");
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            let (http, targets, value, done) =
                (http.clone(), targets.clone(), value.clone(), done.clone());
            let (op, keys) = (args.op, args.keys);
            tokio::spawn(async move {
                let mut tally = Tally::new();
                while Instant::now() < deadline {
                    let key = key_name(rand::rng().random_range(0..keys));
                    let url = targets.url(&key, op);
                    let sent = Instant::now();
                    match request(&http, url, op, &value).await {
                        Ok(()) => {
                            let us = (sent.elapsed().as_micros() as u64).clamp(1, MAX_LATENCY_US);
                            tally.latencies.record(us).expect("clamped to the bounds");
                        }
                        Err(why) => tally.fail(why),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                tally
            })
        })
        .collect();
    let ticker = {
        let (progress, done) = (progress.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let secs = started.elapsed().as_secs_f64();
                progress.set_position(secs as u64);
                progress.set_message(format!(
                    "{} requests, {:.0}/s",
                    done.load(Ordering::Relaxed),
                    done.load(Ordering::Relaxed) as f64 / secs.max(0.001)
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
    Ok(json!({
        "op": match args.op { Op::Put => "put", Op::Get => "get" },
        "route": match args.route { Route::Leader => "leader", Route::Node => "node" },
        "consistency": match (args.op, args.stale) {
            (Op::Put, _) => serde_json::Value::Null,
            (Op::Get, true) => "stale".into(),
            (Op::Get, false) => "linearizable".into(),
        },
        "connections": args.connections,
        "keys": args.keys,
        "value_bytes": args.value_bytes,
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
            "max": total.latencies.max() as f64 / 1000.0,
        },
        "nodes_targeted": targets.in_use(),
    }))
}

/// Writes every key once, `connections` at a time.
async fn preload(
    args: &BenchArgs,
    http: &reqwest::Client,
    targets: &Arc<Targets>,
    value: &bytes::Bytes,
    show_progress: bool,
) -> Result<(), String> {
    let progress = bar(show_progress, args.keys, "preloading keys");
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            let (http, targets, value, next, progress) = (
                http.clone(),
                targets.clone(),
                value.clone(),
                next.clone(),
                progress.clone(),
            );
            let keys = args.keys;
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= keys {
                        return Ok::<(), String>(());
                    }
                    let key = key_name(i);
                    request(&http, targets.url(&key, Op::Put), Op::Put, &value)
                        .await
                        .map_err(|why| format!("preloading {key} failed: {why}"))?;
                    progress.inc(1);
                }
            })
        })
        .collect();
    for worker in workers {
        worker
            .await
            .map_err(|e| format!("a preload worker failed: {e}"))??;
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
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

fn render(report: &serde_json::Value) -> String {
    let l = &report["latency_ms"];
    let op = match report["consistency"].as_str() {
        Some(consistency) => format!("{} ({consistency})", report["op"].as_str().unwrap_or("")),
        None => report["op"].as_str().unwrap_or("").to_string(),
    };
    let mut out = format!(
        "shoal bench: {op}, {} connections, {} s, {} keys, {}-byte values, routed to {} ({} nodes)\n\
         requests   {} ok, {} failed ({:.0}/s)\n\
         latency    p50 {} ms, p90 {} ms, p99 {} ms, max {} ms\n",
        report["connections"],
        report["seconds"],
        report["keys"],
        report["value_bytes"],
        match report["route"].as_str() {
            Some("leader") => "each shard's leader",
            _ => "one node",
        },
        report["nodes_targeted"],
        report["ok"],
        report["errors"],
        report["rps"].as_f64().unwrap_or(0.0),
        l["p50"],
        l["p90"],
        l["p99"],
        l["max"],
    );
    if let Some(why) = report["first_error"].as_str() {
        out.push_str(&format!("first error: {why}\n"));
    }
    out
}
