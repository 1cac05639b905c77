//! End-to-end tests of the `shoal` binary: each test runs the real executable as a child
//! process, with its own temp data directory and free loopback ports, and drives it over
//! RESP (the `redis` crate) and through the binary's own `get|put|del|scan` CLI.
//!
//! Nothing here sleeps blindly: a server is ready when it answers PING, and every wait
//! (start, exit, a reply) is bounded, so a hung server fails a test instead of hanging it.
//! Every child is killed when its guard drops, including when a test panics.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

#[path = "server/descriptors.rs"]
mod descriptors;
#[path = "server/full_disk.rs"]
mod full_disk;
#[path = "server/peer_flood.rs"]
mod peer_flood;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
/// Longest a node may take from spawn to answering PING.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a graceful shutdown, a refused start or a CLI command may take.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one RESP exchange may take.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Fewer shards than the default start faster; the same value is passed on every restart.
const SHARDS: &str = "4";
/// Lines of a failed test's server log to show (startup alone logs a few hundred).
const LOG_TAIL: usize = 40;
/// Environment variables the binary reads; cleared for every child so the caller's
/// environment cannot change what a test exercises.
const SHOAL_ENV: [&str; 7] = [
    "SHOAL_ID",
    "SHOAL_DATA_DIR",
    "SHOAL_RESP_ADDR",
    "SHOAL_HTTP_ADDR",
    "SHOAL_GRPC_ADDR",
    "SHOAL_LOG",
    "SHOAL_ADDR",
];

/// The binary with a clean environment and no stdin.
fn shoal() -> Command {
    let mut cmd = Command::new(SHOAL);
    for var in SHOAL_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Loopback ports nothing listens on right now, all different: bind port 0 `N` times
/// (holding every listener so no port comes back twice), read the ports, close them.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [TcpListener; N] =
        std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"));
    listeners.map(|l| l.local_addr().expect("local addr").port())
}

fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

#[path = "cluster/process.rs"]
mod process;
use process::{KillOnDrop, wait_exit};

/// What a finished command printed.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion within `EXIT_TIMEOUT`, failing the test if it takes longer.
/// Output goes to files, so a chatty child can never block on a full pipe.
fn run(mut cmd: Command) -> Finished {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    cmd.stdout(File::create(&out_path).expect("stdout file"));
    cmd.stderr(File::create(&err_path).expect("stderr file"));
    let description = format!("{cmd:?}");
    let mut child = KillOnDrop(cmd.spawn().expect("spawn shoal"));
    let status = wait_exit(&mut child.0, EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("{description} did not finish within {EXIT_TIMEOUT:?}"));
    Finished {
        status,
        stdout: fs::read_to_string(out_path).expect("read stdout"),
        stderr: fs::read_to_string(err_path).expect("read stderr"),
    }
}

/// The binary's `get|put|del|scan` with these arguments.
fn cli(args: &[&str]) -> Finished {
    let mut cmd = shoal();
    cmd.args(args);
    run(cmd)
}

/// A RESP connection with bounded reads and writes.
fn try_connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let con = client.get_connection_with_timeout(Duration::from_secs(2))?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

/// One node's data directory and ports, kept across restarts.
struct Node {
    root: TempDir,
    resp_port: u16,
    http_port: u16,
    grpc_port: u16,
    starts: u32,
    /// Flags added to every start.
    extra_args: Vec<String>,
    /// The open-file limit, soft and hard, the server starts under (None: this process's).
    open_file_limit: Option<u64>,
}

impl Node {
    fn new() -> Node {
        let [resp_port, http_port, grpc_port] = free_ports();
        Node {
            root: tempfile::tempdir().expect("temp dir"),
            resp_port,
            http_port,
            grpc_port,
            starts: 0,
            extra_args: Vec::new(),
            open_file_limit: None,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The gRPC address the CLI's key-value commands take as `--addr`.
    fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The HTTP address `shoal bench` and `shoal cluster` take as `--addr`.
    fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// Starts `shoal server` on this node's directory and ports; returns once it answers
    /// PING. Its stderr goes to a file of its own per start, shown if the test fails.
    fn start(&mut self) -> Server {
        self.starts += 1;
        let log = self.root.path().join(format!("server-{}.log", self.starts));
        let mut cmd = shoal();
        cmd.arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--resp-addr", &format!("127.0.0.1:{}", self.resp_port)])
            .args(["--http-addr", &self.http_addr()])
            .args(["--grpc-addr", &self.grpc_addr()])
            .args(["--shards", SHARDS])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"));
        if let Some(limit) = self.open_file_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is one system call, safe between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    use rustix::process::{Resource, Rlimit, setrlimit};
                    let limit = Rlimit {
                        current: Some(limit),
                        maximum: Some(limit),
                    };
                    setrlimit(Resource::Nofile, limit).map_err(std::io::Error::from)
                });
            }
        }
        let mut server = Server {
            child: KillOnDrop(cmd.spawn().expect("spawn shoal server")),
            resp_port: self.resp_port,
            log,
        };
        server.wait_ready();
        server
    }
}

/// A running `shoal server`: killed when dropped, its log printed if the test is failing.
struct Server {
    child: KillOnDrop,
    resp_port: u16,
    log: PathBuf,
}

impl Server {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls until a PING succeeds; fails at once if the server exits first.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.0.try_wait().expect("try_wait") {
                panic!("the server exited ({status}) before answering PING");
            }
            let pong = try_connect(self.resp_port)
                .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con));
            match pong {
                Ok(pong) if pong == "PONG" => return,
                Ok(other) => panic!("PING answered {other:?}"),
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("no PONG within {START_TIMEOUT:?}: {e}"),
            }
        }
    }

    fn connect(&self) -> redis::Connection {
        try_connect(self.resp_port).expect("connect over RESP")
    }

    /// Sends SIGTERM (through kill(1): libc is not a dependency).
    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits for the process to exit, failing the test after `EXIT_TIMEOUT`.
    fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child.0, EXIT_TIMEOUT)
            .unwrap_or_else(|| panic!("the server did not exit within {EXIT_TIMEOUT:?}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
            eprintln!(
                "--- server stderr, last {LOG_TAIL} lines ({}) ---\n{tail}",
                self.log.display()
            );
        }
    }
}

fn key(i: u64) -> String {
    format!("key:{i}")
}

/// Values differ per key and in length, so a mix-up or truncation cannot go unnoticed.
fn value(i: u64) -> String {
    format!("value-{i}-{}", "x".repeat((i % 97) as usize))
}

/// Writes `keys` with one pipeline and checks every reply is OK.
fn set_all(con: &mut redis::Connection, keys: std::ops::Range<u64>) {
    let mut pipe = redis::pipe();
    for i in keys.clone() {
        pipe.cmd("SET").arg(key(i)).arg(value(i));
    }
    let replies: Vec<redis::Value> = pipe.query(con).expect("pipelined SETs");
    assert_eq!(replies.len(), keys.clone().count());
    for (i, reply) in keys.zip(replies) {
        assert_eq!(reply, redis::Value::Okay, "SET {}", key(i));
    }
}

/// Checks, with one pipeline of GETs, that key(i) holds value(i) for every i in `keys`.
/// (Not MGET: like Redis Cluster, shoal refuses multi-key commands across slots.)
fn assert_all_present(con: &mut redis::Connection, keys: std::ops::Range<u64>) {
    let names: Vec<String> = keys.clone().map(key).collect();
    let mut pipe = redis::pipe();
    for name in &names {
        pipe.cmd("GET").arg(name);
    }
    let values: Vec<Option<String>> = pipe.query(con).expect("pipelined GETs");
    assert_eq!(values.len(), names.len());
    let wrong: Vec<String> = keys
        .zip(values)
        .filter(|(i, got)| got.as_deref() != Some(value(*i).as_str()))
        .map(|(i, got)| format!("{} = {got:?}", key(i)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} keys lost or wrong, e.g. {:?}",
        wrong.len(),
        names.len(),
        &wrong[..wrong.len().min(5)]
    );
}

fn get(con: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(con).expect("GET")
}

/// The one line of `stderr`, failing the test if there is not exactly one, or a panic.
fn one_line(stderr: &str) -> &str {
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr:?}");
    lines[0]
}

#[test]
fn an_address_in_use_is_a_one_line_error_naming_the_flag() {
    let flags = ["--resp-addr", "--http-addr", "--grpc-addr"];
    for flag in flags {
        let dir = tempfile::tempdir().expect("temp dir");
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_addr = taken.local_addr().expect("local addr").to_string();
        let mut cmd = shoal();
        cmd.arg("server")
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        for other in flags {
            let addr = if other == flag {
                taken_addr.clone()
            } else {
                format!("127.0.0.1:{}", free_port())
            };
            cmd.args([other, &addr]);
        }
        let started = Instant::now();
        let done = run(cmd);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{flag}: took {:?} to fail",
            started.elapsed()
        );
        assert_eq!(done.status.code(), Some(1), "{flag}: {done:?}");
        let line = one_line(&done.stderr);
        assert!(line.starts_with("error: "), "{line}");
        for expected in [flag, taken_addr.as_str(), "already in use"] {
            assert!(
                line.contains(expected),
                "{flag}: no {expected:?} in {line:?}"
            );
        }
        drop(taken);
    }
}

#[test]
fn sigterm_exits_zero_and_keeps_every_write() {
    const KEYS: u64 = 1000;
    let mut node = Node::new();
    let mut server = node.start();
    let mut con = server.connect();
    set_all(&mut con, 0..KEYS);
    // Overwrites and deletes must survive as well.
    let _: () = redis::cmd("SET")
        .arg(key(0))
        .arg("overwritten")
        .query(&mut con)
        .expect("SET");
    let deleted: u64 = redis::cmd("DEL").arg(key(1)).query(&mut con).expect("DEL");
    assert_eq!(deleted, 1);

    // The connection stays open: an idle client must not hold up the shutdown.
    server.sigterm();
    let status = server.wait_exit();
    assert!(status.success(), "exit after SIGTERM: {status}");
    drop(con);
    drop(server);

    let server = node.start();
    let mut con = server.connect();
    assert_all_present(&mut con, 2..KEYS);
    assert_eq!(get(&mut con, &key(0)).as_deref(), Some("overwritten"));
    assert_eq!(get(&mut con, &key(1)), None);
    let size: u64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(size, KEYS - 1);
}

#[test]
fn sigkill_keeps_every_acknowledged_write() {
    const BATCH: u64 = 20;
    const BEFORE_KILL: u64 = 1000;
    let mut node = Node::new();
    let mut server = node.start();

    // A writer pipelines batches until the server dies under it, counting the keys whose
    // batch was fully acknowledged; the kill lands while writes are in flight.
    let acked = Arc::new(AtomicU64::new(0));
    let mut con = server.connect();
    let writer = {
        let acked = Arc::clone(&acked);
        thread::spawn(move || {
            for start in (0..).step_by(BATCH as usize) {
                let mut pipe = redis::pipe();
                for i in start..start + BATCH {
                    pipe.cmd("SET").arg(key(i)).arg(value(i));
                }
                match pipe.query::<Vec<redis::Value>>(&mut con) {
                    Ok(replies) if replies.iter().all(|r| *r == redis::Value::Okay) => {
                        acked.store(start + BATCH, Ordering::SeqCst);
                    }
                    Ok(replies) => panic!("a SET was refused: {replies:?}"),
                    Err(_) => return, // the server is gone
                }
            }
        })
    };
    let deadline = Instant::now() + START_TIMEOUT;
    while acked.load(Ordering::SeqCst) < BEFORE_KILL {
        assert!(!writer.is_finished(), "the writer stopped early");
        assert!(Instant::now() < deadline, "writes too slow");
        thread::sleep(Duration::from_millis(5));
    }
    server.child.0.kill().expect("SIGKILL");
    let status = server.wait_exit();
    assert_eq!(
        status.code(),
        None,
        "killed by a signal, not an exit: {status}"
    );
    writer.join().expect("writer thread");
    let acked = acked.load(Ordering::SeqCst);
    assert!(acked >= BEFORE_KILL);
    drop(server);

    let server = node.start();
    let mut con = server.connect();
    assert_all_present(&mut con, 0..acked);
}

#[test]
fn help_exits_zero_and_names_the_main_flags() {
    let top = cli(&["--help"]);
    assert!(top.status.success(), "{top:?}");
    for expected in ["server", "get", "put", "del", "scan"] {
        assert!(
            top.stdout.contains(expected),
            "no {expected} in {}",
            top.stdout
        );
    }

    let server = cli(&["server", "--help"]);
    assert!(server.status.success(), "{server:?}");
    for flag in [
        "--data-dir",
        "--resp-addr",
        "--http-addr",
        "--shards",
        "--max-value-bytes",
        "--max-key-bytes",
    ] {
        assert!(
            server.stdout.contains(flag),
            "no {flag} in {}",
            server.stdout
        );
    }

    let version = cli(&["--version"]);
    assert!(version.status.success(), "{version:?}");
    assert!(version.stdout.starts_with("shoal "), "{}", version.stdout);

    let bad = cli(&["server", "--no-such-flag"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(bad.stderr.contains("--no-such-flag"), "{}", bad.stderr);
}

#[test]
fn cli_against_a_running_server() {
    let mut node = Node::new();
    let server = node.start();
    let addr = node.grpc_addr();
    let a = addr.as_str();

    let put = cli(&["put", "greeting", "hello", "--addr", a]);
    assert!(put.status.success(), "{put:?}");
    let version: u64 = put
        .stdout
        .strip_prefix("OK (version ")
        .and_then(|rest| rest.strip_suffix(")\n"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("put printed {:?}", put.stdout));

    // Not a terminal: the value exactly, no newline added; the version on stderr.
    let got = cli(&["get", "greeting", "--addr", a]);
    assert!(got.status.success(), "{got:?}");
    assert_eq!(got.stdout, "hello");
    assert_eq!(got.stderr, format!("(version {version})\n"));

    let got = cli(&["get", "greeting", "--addr", a, "--output", "json"]);
    assert!(got.status.success(), "{got:?}");
    let parsed: Value = serde_json::from_str(&got.stdout).expect("get prints JSON");
    assert_eq!(
        parsed,
        json!({"key": "greeting", "value": "hello", "version": version, "expire_at": null})
    );

    // The address can come from SHOAL_GRPC_ADDR instead of --addr.
    let mut cmd = shoal();
    cmd.args(["get", "greeting"]).env("SHOAL_GRPC_ADDR", a);
    assert_eq!(run(cmd).stdout, "hello");

    // Written over gRPC, read over RESP, and the other way round.
    let mut con = server.connect();
    assert_eq!(get(&mut con, "greeting").as_deref(), Some("hello"));
    let _: () = redis::cmd("SET")
        .arg("from-resp")
        .arg("resp value")
        .query(&mut con)
        .expect("SET");
    assert_eq!(cli(&["get", "from-resp", "--addr", a]).stdout, "resp value");

    let missing = cli(&["get", "missing", "--addr", a]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert_eq!(missing.stdout, "");
    assert_eq!(one_line(&missing.stderr), "error: key `missing` not found");

    let missing = cli(&["get", "missing", "--addr", a, "--output", "json"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    let parsed: Value = serde_json::from_str(&missing.stdout).expect("errors print JSON too");
    assert_eq!(parsed["error"]["code"], "not_found", "{parsed}");
    assert_eq!(missing.stderr, "");

    let scan = cli(&["scan", "--all", "--addr", a, "--output", "json"]);
    assert!(scan.status.success(), "{scan:?}");
    let parsed: Value = serde_json::from_str(&scan.stdout).expect("scan prints JSON");
    let mut keys: Vec<&str> = parsed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["key"].as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["from-resp", "greeting"], "{parsed}");

    let del = cli(&["del", "greeting", "--addr", a]);
    assert!(del.status.success(), "{del:?}");
    assert_eq!(
        cli(&["get", "greeting", "--addr", a]).status.code(),
        Some(1)
    );
    assert_eq!(get(&mut con, "greeting"), None);

    // Nothing listening: a connection failure is exit 2, not "not found".
    let nowhere = format!("127.0.0.1:{}", free_port());
    let unreachable = cli(&["get", "greeting", "--addr", &nowhere]);
    assert_eq!(unreachable.status.code(), Some(2), "{unreachable:?}");
    assert!(
        one_line(&unreachable.stderr).contains("cannot reach a shoal node"),
        "{}",
        unreachable.stderr
    );
}

/// Runs `shoal server` on `data_dir`, expecting it to refuse to start.
#[test]
fn bench_measures_a_running_node_and_reports_json() {
    let mut node = Node::new();
    let server = node.start();
    let addr = node.http_addr();
    let report = |args: &[&str]| -> Value {
        let mut all = vec!["bench", "--addr", addr.as_str(), "--output", "json"];
        all.extend_from_slice(args);
        let run = cli(&all);
        assert!(run.status.success(), "{run:?}");
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
    };
    for (op, extra) in [("put", &[][..]), ("get", &["--preload"][..])] {
        let mut args = vec!["--op", op, "--duration-secs", "1", "--connections", "4"];
        args.extend_from_slice(&["--keys", "50"]);
        args.extend_from_slice(extra);
        let r = report(&args);
        assert_eq!(r["op"], op, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(r["nodes_targeted"], 1, "{r}");
        let ok = r["ok"].as_u64().expect("ok count");
        assert!(ok > 0 && r["requests"] == ok, "{r}");
        let (p50, max) = (
            r["latency_ms"]["p50"].as_f64(),
            r["latency_ms"]["max"].as_f64(),
        );
        assert!(p50.unwrap() > 0.0 && p50 <= max, "{r}");
    }
    // The preloaded keys are really there, under the names the wrk script uses too.
    let mut con = server.connect();
    assert_eq!(
        get(&mut con, "bench-key-000049").as_deref(),
        Some("v".repeat(100).as_str())
    );

    // The same tool over gRPC and RESP, by operation count, with a mix and pipelining.
    let (grpc, resp) = (node.grpc_addr(), format!("127.0.0.1:{}", node.resp_port));
    for (protocol, target) in [("grpc", &grpc), ("resp", &resp)] {
        let run = cli(&[
            "bench",
            "--protocol",
            protocol,
            "--addr",
            target,
            "--output",
            "json",
            "--ops",
            "400",
            "--mix",
            "1:1",
            "--pipeline",
            "4",
            "--connections",
            "2",
            "--keys",
            "50",
            "--distribution",
            "zipf",
        ]);
        assert!(run.status.success(), "{run:?}");
        let r: Value = serde_json::from_str(&run.stdout).expect("JSON report");
        assert_eq!(
            (r["protocol"].as_str(), r["op"].as_str()),
            (Some(protocol), Some("mix"))
        );
        assert_eq!(
            (r["ok"].as_u64(), r["errors"].as_u64()),
            (Some(400), Some(0)),
            "{r}"
        );
        assert!(r["latency_ms"]["p999"].as_f64().unwrap() > 0.0, "{r}");
    }

    let refused = cli(&["bench", "--addr", addr.as_str(), "--connections", "0"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert_eq!(
        one_line(&refused.stderr),
        "error: --connections must be 1 to 10000, not 0"
    );
}

fn refused_start(data_dir: &Path) -> Finished {
    let [resp_port, http_port] = free_ports();
    let mut cmd = shoal();
    cmd.arg("server")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--resp-addr", &format!("127.0.0.1:{resp_port}")])
        .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
        .args(["--grpc-addr", "127.0.0.1:0"])
        .args(["--shards", SHARDS]);
    run(cmd)
}

#[test]
fn a_data_dir_that_is_a_file_is_a_one_line_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"some bytes").expect("write file");
    for data_dir in [file.clone(), file.join("below")] {
        let done = refused_start(&data_dir);
        assert_eq!(
            done.status.code(),
            Some(1),
            "{}: {done:?}",
            data_dir.display()
        );
        let line = one_line(&done.stderr);
        assert!(line.starts_with("error: "), "{line}");
        assert!(line.contains("data directory"), "{line}");
        assert!(
            line.contains(&data_dir.display().to_string()),
            "the path is not named: {line}"
        );
    }
    // The file is left alone.
    assert_eq!(fs::read(&file).expect("read file"), b"some bytes");
}

/// A base port for `shoal demo --nodes 3` whose nine ports (RESP, HTTP, peer per node) are
/// all free right now.
fn free_demo_base() -> u16 {
    for _ in 0..100 {
        let base = rand::random_range(20_000u16..50_000);
        let ports = (1..=3).flat_map(|i| [base + i, base + 100 + i, base + 200 + i]);
        let held: Result<Vec<TcpListener>, _> =
            ports.map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
        if held.is_ok() {
            return base;
        }
    }
    panic!("no free range of demo ports found");
}

#[test]
fn demo_runs_a_three_node_cluster_and_stops_it_on_sigterm() {
    let base = free_demo_base();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("demo");
    let mut child = KillOnDrop(
        shoal()
            .args(["demo", "--nodes", "3", "--shards", SHARDS])
            .args(["--base-port", &base.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn shoal demo"),
    );
    // Read its stdout on a thread so the wait for "ready" is bounded.
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + START_TIMEOUT * 2;
    while !printed.iter().any(|l: &String| l.contains("Press Ctrl-C")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => panic!("demo did not become ready; it printed: {printed:#?}"),
        }
    }
    let text = printed.join("\n");
    for i in 1..=3u16 {
        assert!(
            text.contains(&format!("127.0.0.1:{}", base + i)),
            "the RESP address of node {i} is printed: {text}"
        );
    }
    assert!(text.contains("redis-cli -c -p"), "a try-this line: {text}");
    // Any node serves any key.
    let mut first = try_connect(base + 1).expect("connect to node 1");
    let _: () = redis::cmd("SET")
        .arg("demo-key")
        .arg("demo-value")
        .query(&mut first)
        .expect("SET");
    let mut third = try_connect(base + 3).expect("connect to node 3");
    assert_eq!(get(&mut third, "demo-key").as_deref(), Some("demo-value"));
    drop((first, third));

    let pid = child.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = wait_exit(&mut child.0, EXIT_TIMEOUT).expect("demo exits after SIGTERM");
    assert!(exit.success(), "demo exit status: {exit}");
    // Every node stopped: nothing listens on their RESP ports any more.
    for i in 1..=3u16 {
        assert!(
            TcpListener::bind(("127.0.0.1", base + i)).is_ok(),
            "node {i}'s RESP port is free again"
        );
    }
    assert!(data.join("d1").is_dir(), "--data-dir keeps the data");
}
