//! A multi-process shoal cluster for tests: every node is the real `shoal` binary, run as a
//! child process with its own data directory (`d1..dn` under one temp dir) and loopback
//! ports, and driven over HTTP (`reqwest`) and RESP (the `redis` crate).
//!
//! Nothing sleeps blindly: every wait polls a condition against a deadline and fails with
//! the tails of the node logs. Every child is killed when the cluster drops, including when
//! a test panics; a failing test's temp dir (data and full logs) is kept and its path
//! printed.

use std::collections::HashSet;
use std::fs::{self, File};
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use redis::aio::MultiplexedConnection;
use tempfile::TempDir;

#[path = "api.rs"]
mod api;
#[path = "netns.rs"]
mod netns;
// Re-exported for the test crates that include this harness; each uses a subset.
#[allow(unused_imports)]
pub use api::{Api, ClusterView, HttpError, Versioned};
pub use netns::Netns;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
/// Longest a node may take from spawn to answering `/health` and PING.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the shards may go without a (live) leader after a start, kill or restart.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a refused start may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one HTTP request may take: a node retries a request internally for up to 5 s
/// while a shard elects, so this leaves a wide margin above that.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest one RESP reply may take (same reasoning as `HTTP_TIMEOUT`).
const RESP_TIMEOUT: Duration = Duration::from_secs(15);
/// Interval between two checks of a polled condition.
pub const POLL: Duration = Duration::from_millis(50);
/// Shards of every test cluster: fewer than the default start faster.
const SHARDS: u32 = 4;
/// Lines of each node's log to show when a test fails.
const LOG_TAIL: usize = 40;
/// First port handed out when ports are picked below the kernel's ephemeral range.
const LOW_PORT: u16 = 10_000;

/// Loopback ports nothing listens on right now, never handed out twice by this process.
///
/// They come from below the kernel's ephemeral range when there is room: a killed node's
/// ports are free until it restarts, and a port from the ephemeral range could meanwhile
/// be taken as the local end of some outgoing connection (peers keep reconnecting to the
/// dead node), making the restart fail with "address in use".
pub fn free_ports(n: usize) -> Vec<u16> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = guard.get_or_insert_with(HashSet::new);
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    let mut rng = rand::rng();
    // Held until all are picked, so a port-0 fallback cannot return the same port twice.
    let mut held = Vec::with_capacity(n);
    for _attempt in 0..100_000 {
        if held.len() == n {
            break;
        }
        let candidate = if ephemeral_low > LOW_PORT + 1_000 {
            rng.random_range(LOW_PORT..ephemeral_low)
        } else {
            0
        };
        if candidate != 0 && handed_out.contains(&candidate) {
            continue;
        }
        let Ok(listener) = TcpListener::bind(("127.0.0.1", candidate)) else {
            continue;
        };
        let port = listener.local_addr().expect("local addr").port();
        if handed_out.insert(port) {
            held.push(listener);
        }
    }
    assert_eq!(held.len(), n, "could not find {n} free loopback ports");
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

#[path = "process.rs"]
mod process;
use process::{KillOnDrop, wait_exit};

/// Log lines repeated several times a second while a peer is down or cut off: left out
/// of the tails shown on failure (the kept log files have them).
const NOISE: [&str; 2] = ["failed to send a heartbeat", "update progress error"];

/// The last `lines` lines of a log file, without `NOISE`, or why it cannot be read.
fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let kept: Vec<&str> = text
                .lines()
                .filter(|line| !NOISE.iter().any(|noise| line.contains(noise)))
                .collect();
            kept[kept.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Sends `signal` (e.g. "STOP") to `pid` through kill(1): libc is not a dependency.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

/// Everything a node is started with; the same on every restart unless a test edits a
/// copy to check that the binary refuses it.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    /// The address every listener binds: loopback, or the node's own in its namespace.
    pub host: String,
    /// The network namespace the node runs in, if any (`Netns`).
    pub netns: Option<String>,
    pub data_dir: PathBuf,
    pub resp_port: u16,
    pub http_port: u16,
    pub peer_port: u16,
    /// `--initial-cluster`, identical on every founding node.
    pub initial_cluster: String,
    /// `--join` (members' peer addresses) for a node added later; then no
    /// `--initial-cluster` is passed.
    pub join: Option<String>,
    pub replication: usize,
    /// More `shoal server` flags, the same on every start.
    pub extra_args: Vec<String>,
    /// `--tls-cert`, `--tls-key` and `--tls-ca` (then without `--fault-injection`, which
    /// a node refuses beside TLS).
    pub tls: Option<NodeTls>,
}

/// A node's TLS files.
#[derive(Clone, Debug)]
pub struct NodeTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl NodeSpec {
    pub fn peer_addr(&self) -> String {
        format!("{}:{}", self.host, self.peer_port)
    }

    /// `shoal server` with this spec's flags, a clean environment and no stdin.
    pub fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the binary, so the child's pid is the node's.
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, SHOAL]);
                cmd
            }
            None => Command::new(SHOAL),
        };
        // The binary reads SHOAL_* variables as flag defaults: none may leak in.
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("SHOAL_") {
                cmd.env_remove(var);
            }
        }
        // Plain log lines: they end up in files, read by people.
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .arg("server")
            .args(["--id", &self.id.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--resp-addr", &format!("{}:{}", self.host, self.resp_port)])
            .args(["--http-addr", &format!("{}:{}", self.host, self.http_port)])
            // Port 0: the bound address reaches clients through the cluster map.
            .args(["--grpc-addr", &format!("{}:0", self.host)])
            .args(["--peer-addr", &self.peer_addr()]);
        match &self.join {
            Some(join) => cmd.args(["--join", join]),
            None => cmd.args(["--initial-cluster", &self.initial_cluster]),
        };
        cmd.args(["--replication", &self.replication.to_string()])
            .args(["--shards", &SHARDS.to_string()])
            .args(["--log-level", "info,openraft=warn"]);
        match &self.tls {
            Some(tls) => cmd
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key)
                .arg("--tls-ca")
                .arg(&tls.ca),
            None => cmd.arg("--fault-injection"),
        };
        if self.netns.is_some() {
            // Namespaced nodes listen on their own (non-loopback) addresses, plaintext.
            cmd.arg("--insecure-listen-any");
        }
        cmd.args(&self.extra_args);
        cmd
    }

    /// Runs this spec to completion, expecting a refused start (it must exit on its own
    /// within `EXIT_TIMEOUT`). Output goes to files, so a chatty child cannot block.
    pub fn run_to_exit(&self) -> Finished {
        let dir = tempfile::tempdir().expect("temp dir");
        let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut cmd = self.command();
        cmd.stdout(File::create(&out_path).expect("stdout file"));
        cmd.stderr(File::create(&err_path).expect("stderr file"));
        let description = format!("{cmd:?}");
        let mut child = KillOnDrop(cmd.spawn().expect("spawn shoal"));
        let status = wait_exit(&mut child.0, EXIT_TIMEOUT)
            .unwrap_or_else(|| panic!("{description} did not exit within {EXIT_TIMEOUT:?}"));
        Finished {
            status,
            stderr: fs::read_to_string(err_path).expect("read stderr"),
        }
    }
}

/// What a finished `shoal server` printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stderr: String,
}

/// One node: its spec and, while it runs, its process.
struct Node {
    spec: NodeSpec,
    child: Option<KillOnDrop>,
    paused: bool,
    logs_dir: PathBuf,
    starts: u32,
    log: PathBuf,
}

impl Node {
    /// Starts the process; its stderr goes to a log file of its own per start.
    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "node {} is already running",
            self.spec.id
        );
        self.starts += 1;
        self.log = self
            .logs_dir
            .join(format!("node{}-start{}.log", self.spec.id, self.starts));
        let mut cmd = self.spec.command();
        cmd.stdout(Stdio::null())
            .stderr(File::create(&self.log).expect("log file"));
        self.child = Some(KillOnDrop(cmd.spawn().expect("spawn shoal server")));
        self.paused = false;
    }

    /// Panics (with the log tail) if the process has exited.
    fn assert_running(&mut self) {
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("node {} is not running", self.spec.id));
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            panic!(
                "node {} exited ({status}); its log ends:\n{}",
                self.spec.id,
                tail(&self.log, LOG_TAIL)
            );
        }
    }

    fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", self.spec.id))
            .0
            .id()
    }
}

/// A RESP connection to `url` with bounded connect and reply times.
pub async fn resp_connection(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(RESP_TIMEOUT);
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Sends one RESP command over TLS (checking the server against `ca`) and reads one
/// reply, returned raw (`+OK\r\n`, `$5\r\nworld\r\n`, `-ERR ...\r\n`).
pub async fn resp_over_tls(addr: &str, ca: &Path, args: &[&str]) -> Result<String, String> {
    resp_over_tls_as(addr, ca, None, args).await
}

/// Like `resp_over_tls`, logged in first (AUTH) as `login` when given.
pub async fn resp_over_tls_as(
    addr: &str,
    ca: &Path,
    login: Option<(&str, &str)>,
    args: &[&str],
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let config = shoal_tls::client_config(ca, None, &[]).map_err(|e| e.to_string())?;
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = shoal_tls::server_name(addr)?;
        let mut stream = shoal_tls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let encode = |args: &[&str]| {
            let mut request = format!("*{}\r\n", args.len());
            for arg in args {
                request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
            }
            request
        };
        let mut request = String::new();
        if let Some((user, password)) = login {
            request.push_str(&encode(&["AUTH", user, password]));
        }
        request.push_str(&encode(args));
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        let mut logging_in = login.is_some();
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!(
                    "closed after {:?}",
                    String::from_utf8_lossy(&reply)
                ));
            }
            reply.extend_from_slice(&chunk[..n]);
            if logging_in && reply.len() >= 5 {
                if !reply.starts_with(b"+OK\r\n") {
                    return Err(format!("AUTH: {}", String::from_utf8_lossy(&reply)));
                }
                reply.drain(..5);
                logging_in = false;
            }
            if !logging_in && complete_reply(&reply) {
                return Ok(String::from_utf8_lossy(&reply).into_owned());
            }
        }
    };
    tokio::time::timeout(RESP_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no reply from {addr} within {RESP_TIMEOUT:?}"))?
}

/// Whether `reply` holds one whole simple, error, integer or bulk reply.
fn complete_reply(reply: &[u8]) -> bool {
    let Some(line_end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    if reply[0] != b'$' {
        return true;
    }
    let len: i64 = String::from_utf8_lossy(&reply[1..line_end])
        .parse()
        .unwrap_or(-1);
    len < 0 || reply.len() >= line_end + 2 + len as usize + 2
}

/// Polls `check` every `POLL` until it returns `Some`, or panics with `what` and the last
/// thing `check` reported after `limit`.
pub async fn poll_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(found) => return found,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {limit:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// A running cluster of `shoal` processes, killed when dropped. Node ids are `1..=n`.
pub struct Cluster {
    nodes: Vec<Node>,
    /// The CA of a TLS cluster (`start_tls`), and the authority that made its certificates.
    tls_ca: Option<PathBuf>,
    tls_authority: Option<shoal_tls::DevCa>,
    /// The admin a TLS cluster's clients log in as (a TLS node serves nobody anonymously).
    admin: Option<(String, String)>,
    /// The highest node id ever used: removed ids are never reused.
    high_id: u64,
    api: Api,
    /// After `nodes`, so the processes are gone before their namespaces.
    net: Option<Netns>,
    /// Last field, so the processes are gone before their directories are removed.
    root: Option<TempDir>,
}

impl Cluster {
    /// Like `start`, with TLS everywhere: a CA made for the test (its files under
    /// `tls_dir()`), a certificate per node, peers on mutual TLS, clients on HTTPS and RESP
    /// over TLS.
    pub async fn start_tls(n: usize) -> Cluster {
        let mut cluster = Self::build(n, &[], None);
        let dir = cluster.tls_dir();
        fs::create_dir_all(&dir).expect("tls dir");
        let ca = shoal_tls::DevCa::new("shoal test CA").expect("CA");
        let ca_path = ca.write(&dir).expect("write CA");
        for node in &mut cluster.nodes {
            let id = node.spec.id;
            let (cert, key) = ca
                .issue(&format!("node{id}"), &["127.0.0.1", "localhost"])
                .expect("node certificate")
                .write(&dir, &format!("node{id}"))
                .expect("write node certificate");
            node.spec.tls = Some(NodeTls {
                cert,
                key,
                ca: ca_path.clone(),
            });
        }
        let urls: std::collections::BTreeMap<u64, String> = cluster
            .nodes
            .iter()
            .map(|n| {
                (
                    n.spec.id,
                    format!("https://{}:{}", n.spec.host, n.spec.http_port),
                )
            })
            .collect();
        let tls = shoal_tls::client_config(&ca_path, None, &[b"http/1.1"]).expect("client TLS");
        cluster.api = Api::with_tls(urls.clone(), tls.clone(), None);
        cluster.tls_ca = Some(ca_path);
        cluster.tls_authority = Some(ca);
        let ids = cluster.ids();
        cluster.restart_many(&ids).await;
        // A TLS cluster serves nobody anonymously: its first admin is added from this
        // machine (the bootstrap a real operator does with `shoal user add`).
        let admin = ("root".to_string(), "test-admin-password".to_string());
        let bootstrap = &cluster.api;
        poll_until("the first admin is added", LEADER_TIMEOUT, || async {
            bootstrap
                .add_user(1, &admin.0, &admin.1, "admin", None)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        cluster.api = Api::with_tls(urls, tls, Some(admin.clone()));
        cluster.admin = Some(admin);
        // Every node learns of the admin within a second (each reads the users from the
        // metadata leader); tests start once all have.
        for id in cluster.ids() {
            let cluster = &cluster;
            poll_until(
                &format!("node {id} knows the admin"),
                LEADER_TIMEOUT,
                || async move { cluster.resp_tls(id, &["PING"]).await },
            )
            .await;
        }
        cluster.wait_for_leaders(1).await;
        cluster
    }

    /// The admin's user name and password, for a cluster started with `start_tls`.
    pub fn admin(&self) -> (&str, &str) {
        let (user, password) = self.admin.as_ref().expect("a TLS cluster");
        (user, password)
    }

    /// Where a TLS cluster's CA and certificates are.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.as_ref().expect("root dir").path().join("tls")
    }

    /// The CA of a cluster started with `start_tls`.
    pub fn tls_authority(&self) -> &shoal_tls::DevCa {
        self.tls_authority.as_ref().expect("a TLS cluster")
    }

    /// Sends one RESP command to node `id` over TLS and returns the raw reply.
    /// Logged in as the cluster's admin.
    pub async fn resp_tls(&self, id: u64, args: &[&str]) -> Result<String, String> {
        let spec = &self.node(id).spec;
        let ca = self.tls_ca.as_ref().expect("a TLS cluster");
        let addr = format!("{}:{}", spec.host, spec.resp_port);
        resp_over_tls_as(&addr, ca, Some(self.admin()), args).await
    }

    /// Like `resp_tls`, without logging in.
    pub async fn resp_tls_anonymous(&self, id: u64, args: &[&str]) -> Result<String, String> {
        let spec = &self.node(id).spec;
        let ca = self.tls_ca.as_ref().expect("a TLS cluster");
        resp_over_tls(&format!("{}:{}", spec.host, spec.resp_port), ca, args).await
    }

    /// Starts `n` nodes (replication 3, or `n` if fewer) concurrently and waits until every
    /// node answers `/health` and PING and every shard has a leader (as node 1 sees it).
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, &[]).await
    }

    /// Like `start`, with more `shoal server` flags for every node.
    pub async fn start_with(n: usize, extra_args: &[&str]) -> Cluster {
        Self::start_on(n, extra_args, None).await
    }

    /// Like `start`, with every node in a network namespace of its own (root only; see
    /// `Netns`): partitions then drop packets in the kernel.
    pub async fn start_isolated(n: usize) -> Cluster {
        Self::start_on(n, &[], Some(Netns::create(n))).await
    }

    async fn start_on(n: usize, extra_args: &[&str], net: Option<Netns>) -> Cluster {
        let mut cluster = Self::build(n, extra_args, net);
        let ids = cluster.ids();
        cluster.restart_many(&ids).await;
        cluster.wait_for_leaders(1).await;
        cluster
    }

    /// Forms a new cluster of `n` nodes without `late`, then starts `late` (on their
    /// first start, with empty data directories) once the others lead some shard.
    pub async fn start_late(n: usize, late: &[u64]) -> Cluster {
        let mut cluster = Self::build(n, &[], None);
        let early: Vec<u64> = cluster
            .ids()
            .into_iter()
            .filter(|id| !late.contains(id))
            .collect();
        cluster.restart_many(&early).await;
        let (api, asking) = (&cluster.api, early[0]);
        poll_until(
            &format!("the early nodes lead some shard (as node {asking} sees it)"),
            LEADER_TIMEOUT,
            move || async move {
                let view = api.view(asking).await.map_err(|e| e.to_string())?;
                if view.shards.iter().any(|s| s.leader.is_some()) {
                    Ok(())
                } else {
                    Err("no shard has a leader yet".to_string())
                }
            },
        )
        .await;
        cluster.restart_many(late).await;
        cluster.wait_for_leaders(1).await;
        cluster
    }

    /// The nodes' specs and directories, none started.
    fn build(n: usize, extra_args: &[&str], net: Option<Netns>) -> Cluster {
        let root = tempfile::Builder::new()
            .prefix("shoal-cluster-")
            .tempdir()
            .expect("temp dir");
        let logs_dir = root.path().join("logs");
        fs::create_dir_all(&logs_dir).expect("logs dir");
        // Each namespace has its own ports: fixed ones do there.
        let ports = match &net {
            Some(_) => (0..n).flat_map(|_| [6379, 8080, 7000]).collect(),
            None => free_ports(3 * n),
        };
        let host = |id: u64| match &net {
            Some(net) => net.addr(id),
            None => "127.0.0.1".to_string(),
        };
        let initial_cluster = (0..n)
            .map(|i| format!("{}={}:{}", i + 1, host(i as u64 + 1), ports[3 * i + 2]))
            .collect::<Vec<_>>()
            .join(",");
        let nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                spec: NodeSpec {
                    id: i as u64 + 1,
                    host: host(i as u64 + 1),
                    netns: net.as_ref().map(|net| net.namespace(i as u64 + 1)),
                    data_dir: root.path().join(format!("d{}", i + 1)),
                    resp_port: ports[3 * i],
                    http_port: ports[3 * i + 1],
                    peer_port: ports[3 * i + 2],
                    initial_cluster: initial_cluster.clone(),
                    join: None,
                    replication: n.min(3),
                    extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
                    tls: None,
                },
                child: None,
                paused: false,
                logs_dir: logs_dir.clone(),
                starts: 0,
                log: PathBuf::new(),
            })
            .collect();
        let urls = nodes
            .iter()
            .map(|node| {
                (
                    node.spec.id,
                    format!("http://{}:{}", node.spec.host, node.spec.http_port),
                )
            })
            .collect();
        Cluster {
            nodes,
            high_id: n as u64,
            tls_ca: None,
            admin: None,
            tls_authority: None,
            api: Api::new(urls),
            net,
            root: Some(root),
        }
    }

    /// Adds a node with the next id that joins the running cluster (`--join` with every
    /// running member's peer address), and waits until it is healthy. Returns its id.
    pub async fn add_node(&mut self) -> u64 {
        self.high_id += 1;
        let id = self.high_id;
        let join = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.spec.peer_addr())
            .collect::<Vec<_>>()
            .join(",");
        let template = self.nodes[0].spec.clone();
        let ports = free_ports(3);
        let root = self.root.as_ref().expect("root dir").path().to_path_buf();
        let mut spec = NodeSpec {
            id,
            data_dir: root.join(format!("d{id}")),
            resp_port: ports[0],
            http_port: ports[1],
            peer_port: ports[2],
            join: Some(join),
            ..template
        };
        // In a TLS cluster the new node gets its own certificate from the cluster CA.
        let scheme = match (&self.tls_authority, &mut spec.tls) {
            (Some(ca), Some(tls)) => {
                let dir = self.tls_dir();
                let (cert, key) = ca
                    .issue(&format!("node{id}"), &["127.0.0.1", "localhost"])
                    .expect("node certificate")
                    .write(&dir, &format!("node{id}"))
                    .expect("write node certificate");
                tls.cert = cert;
                tls.key = key;
                "https"
            }
            _ => "http",
        };
        self.api
            .add(id, format!("{scheme}://{}:{}", spec.host, spec.http_port));
        let logs_dir = self.nodes[0].logs_dir.clone();
        self.nodes.push(Node {
            spec,
            child: None,
            paused: false,
            logs_dir,
            starts: 0,
            log: PathBuf::new(),
        });
        self.restart(id).await;
        id
    }

    /// Drains node `id` out of the cluster (asking another running node), waits until the
    /// cluster has removed it, then stops it and forgets it (it refuses to serve anyway).
    pub async fn remove_and_forget(&mut self, id: u64) {
        let via = self
            .live_ids()
            .into_iter()
            .find(|n| *n != id)
            .expect("another running node");
        let api = self.api.clone();
        poll_until(
            &format!("node {via} accepts removing node {id}"),
            LEADER_TIMEOUT,
            || async {
                api.remove_node(via, id)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )
        .await;
        poll_until(
            &format!("node {id} removed (as node {via} sees it)"),
            Duration::from_secs(120),
            || async {
                let view = api.view(via).await.map_err(|e| e.to_string())?;
                if view.nodes.iter().any(|n| n.id == id) {
                    Err(format!(
                        "still a member; {} moves in flight",
                        view.moves.len()
                    ))
                } else {
                    Ok(())
                }
            },
        )
        .await;
        if self.node(id).child.is_some() {
            self.kill(id);
        }
        self.nodes.retain(|n| n.spec.id != id);
    }

    /// Whether the nodes run in network namespaces of their own.
    pub fn is_isolated(&self) -> bool {
        self.net.is_some()
    }

    /// What node `id` has logged since its latest start.
    pub fn log_text(&self, id: u64) -> String {
        let node = self.node(id);
        fs::read_to_string(&node.log).unwrap_or_default()
    }

    /// Every node id, `1..=n`.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.spec.id).collect()
    }

    /// Nodes running and not paused.
    pub fn live_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && !n.paused)
            .map(|n| n.spec.id)
            .collect()
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.spec.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.spec.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The HTTP API of the cluster (any node by id).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Node `id`'s flags, for tests that restart it with edited ones.
    pub fn spec(&self, id: u64) -> NodeSpec {
        self.node(id).spec.clone()
    }

    pub fn http_url(&self, id: u64) -> String {
        self.api.url(id).to_string()
    }

    pub fn resp_url(&self, id: u64) -> String {
        let spec = &self.node(id).spec;
        format!("redis://{}:{}/", spec.host, spec.resp_port)
    }

    /// A plain RESP connection to node `id` (it forwards commands for other shards).
    pub async fn resp(&self, id: u64) -> MultiplexedConnection {
        resp_connection(&self.resp_url(id))
            .await
            .unwrap_or_else(|e| panic!("connect over RESP to node {id}: {e}"))
    }

    /// SIGKILL: the node dies at once, with no chance to flush or say goodbye.
    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        child.0.kill().expect("SIGKILL");
        child.0.wait().expect("reap the killed node");
        node.paused = false;
    }

    /// Starts node `id` again with the same flags and data dir; waits until it is healthy.
    pub async fn restart(&mut self, id: u64) {
        self.restart_many(&[id]).await;
    }

    /// Starts all of `ids` at once, then waits until each is healthy.
    pub async fn restart_many(&mut self, ids: &[u64]) {
        for &id in ids {
            self.node_mut(id).spawn();
        }
        for &id in ids {
            self.wait_healthy(id).await;
        }
    }

    /// SIGSTOP: the process freezes (like a long GC pause or a stalled VM) with its
    /// connections open.
    pub fn pause(&mut self, id: u64) {
        let node = self.node_mut(id);
        signal(node.pid(), "STOP");
        node.paused = true;
    }

    /// SIGCONT after `pause`.
    pub fn resume(&mut self, id: u64) {
        let node = self.node_mut(id);
        signal(node.pid(), "CONT");
        node.paused = false;
    }

    /// Cuts the cluster into `groups`: every node drops traffic with the nodes outside its
    /// group (a node in no group is cut off from everyone).
    pub async fn partition(&self, groups: &[&[u64]]) {
        for id in self.ids() {
            let own: &[u64] = groups
                .iter()
                .find(|g| g.contains(&id))
                .copied()
                .unwrap_or(&[]);
            let blocked: Vec<u64> = self
                .ids()
                .into_iter()
                .filter(|other| *other != id && !own.contains(other))
                .collect();
            self.block(id, &blocked).await;
        }
    }

    /// Node `id` drops all traffic with `peers` (replacing what it dropped before).
    /// In the transport this needs the node running unless `peers` is empty; in
    /// namespaces it works on a down node too.
    pub async fn block(&self, id: u64, peers: &[u64]) {
        if let Some(net) = &self.net {
            net.block(id, peers);
            return;
        }
        if !self.live_ids().contains(&id) {
            assert!(peers.is_empty(), "cannot partition node {id}: it is down");
            return;
        }
        self.api
            .set_blocked_peers(id, peers)
            .await
            .unwrap_or_else(|e| panic!("block {peers:?} on node {id}: {e}"));
    }

    /// Ends any partition: every node talks to every peer again.
    pub async fn heal(&self) {
        for id in self.ids() {
            self.block(id, &[]).await;
        }
    }

    /// Starts node `id` again and waits until it is healthy, or until it exits on its own
    /// (a refused start): then `Err` with what it logged.
    pub async fn try_restart(&mut self, id: u64) -> Result<(), String> {
        self.node_mut(id).spawn();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let node = self.node_mut(id);
            let child = node.child.as_mut().expect("just spawned");
            if let Some(status) = child.0.try_wait().expect("try_wait") {
                node.child = None;
                let log = fs::read_to_string(&node.log).unwrap_or_default();
                return Err(format!("exited ({status}):\n{log}"));
            }
            if self.api.healthy(id).await {
                self.wait_healthy(id).await;
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "node {id} neither healthy nor exited within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Gives stopped node `id` a new, empty disk: its data directory is moved aside and
    /// it will start with `--rejoin`, as an operator replaces a failed disk.
    pub fn replace_disk(&mut self, id: u64) {
        self.wipe_disk(id);
        let node = self.node_mut(id);
        if !node.spec.extra_args.iter().any(|a| a == "--rejoin") {
            node.spec.extra_args.push("--rejoin".into());
        }
    }

    /// Moves stopped node `id`'s data directory aside: it starts on an empty one, with
    /// the same flags.
    pub fn wipe_disk(&mut self, id: u64) {
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} must be stopped first");
        let dir = node.spec.data_dir.clone();
        let aside = dir.with_extension(format!("aside-{}", node.starts));
        fs::rename(&dir, &aside).expect("move the data directory aside");
    }

    /// Polls until node `id` answers `/health` as itself and PING; fails at once if the
    /// process exits first.
    pub async fn wait_healthy(&mut self, id: u64) {
        let deadline = Instant::now() + START_TIMEOUT;
        let resp_url = self.resp_url(id);
        loop {
            self.node_mut(id).assert_running();
            if self.api.healthy(id).await {
                let pong = match (&self.tls_ca, &self.admin) {
                    (Some(_), Some(_)) => self.resp_tls(id, &["PING"]).await,
                    // Before its first user a TLS node refuses everyone, but answers.
                    (Some(_), None) => self.resp_tls_anonymous(id, &["PING"]).await.map(|reply| {
                        match reply.starts_with("-NOAUTH") {
                            true => "+PONG\r\n".to_string(),
                            false => reply,
                        }
                    }),
                    (None, _) => match resp_connection(&resp_url).await {
                        Ok(mut con) => redis::cmd("PING").query_async::<String>(&mut con).await,
                        Err(e) => Err(e),
                    }
                    .map(|pong| format!("+{pong}\r\n"))
                    .map_err(|e| e.to_string()),
                };
                if matches!(pong.as_deref(), Ok("+PONG\r\n")) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {id} not healthy within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls node `asking`'s view until every shard has a leader that is a live node.
    pub async fn wait_for_leaders(&self, asking: u64) -> ClusterView {
        let live = &self.live_ids();
        let api = &self.api;
        poll_until(
            &format!("every shard led by a live node (as node {asking} sees it)"),
            LEADER_TIMEOUT,
            move || async move {
                let view = api.view(asking).await.map_err(|e| e.to_string())?;
                let unled: Vec<(u32, Option<u64>)> = view
                    .shards
                    .iter()
                    .filter(|s| !s.leader.is_some_and(|l| live.contains(&l)))
                    .map(|s| (s.id, s.leader))
                    .collect();
                if unled.is_empty() {
                    Ok(view)
                } else {
                    Err(format!("shards without a live leader: {unled:?}"))
                }
            },
        )
        .await
    }

    /// Polls until every live node's view lists every node's RESP address, as CLUSTER
    /// SLOTS and MOVED need (nodes learn each other's from the status exchange).
    pub async fn wait_for_client_addresses(&self) {
        for asking in self.live_ids() {
            let api = &self.api;
            poll_until(
                &format!("node {asking} knows every node's client addresses"),
                LEADER_TIMEOUT,
                move || async move {
                    let view = api.view(asking).await.map_err(|e| e.to_string())?;
                    let unknown: Vec<u64> = view
                        .nodes
                        .iter()
                        .filter(|n| n.resp_addr.is_empty() || n.http_addr.is_empty() || !n.up)
                        .map(|n| n.id)
                        .collect();
                    if unknown.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("nodes without addresses or down: {unknown:?}"))
                    }
                },
            )
            .await;
        }
    }

    /// The shard holding `key`: its slot (CLUSTER KEYSLOT over RESP, asked of a live node)
    /// located in the slot ranges of `/v1/cluster`.
    pub async fn shard_of_key(&self, key: &str) -> u32 {
        let asking = *self.live_ids().first().expect("a live node");
        let mut con = self.resp(asking).await;
        let slot: u32 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("CLUSTER KEYSLOT");
        let view = self.api.view(asking).await.expect("GET /v1/cluster");
        view.shards
            .iter()
            .find(|s| s.range.start <= slot && slot < s.range.end)
            .unwrap_or_else(|| panic!("no shard owns slot {slot}: {view:?}"))
            .id
    }

    /// The live leader of `shard`, waiting (bounded) for every shard to have one.
    pub async fn leader_of_shard(&self, shard: u32) -> u64 {
        let asking = *self.live_ids().first().expect("a live node");
        let view = self.wait_for_leaders(asking).await;
        view.shards
            .iter()
            .find(|s| s.id == shard)
            .unwrap_or_else(|| panic!("no shard {shard}: {view:?}"))
            .leader
            .expect("wait_for_leaders saw a leader")
    }

    /// The live leader of `key`'s shard.
    pub async fn leader_of_key(&self, key: &str) -> u64 {
        let shard = self.shard_of_key(key).await;
        self.leader_of_shard(shard).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !thread::panicking() {
            return;
        }
        for node in &self.nodes {
            eprintln!(
                "--- node {} ({}), last {LOG_TAIL} lines of {} (heartbeat noise left out) ---\n{}",
                node.spec.id,
                match (&node.child, node.paused) {
                    (None, _) => "down",
                    (Some(_), true) => "paused",
                    (Some(_), false) => "running",
                },
                node.log.display(),
                tail(&node.log, LOG_TAIL)
            );
        }
        if let Some(root) = self.root.take() {
            eprintln!(
                "--- cluster data and full logs kept in {} ---",
                root.keep().display()
            );
        }
    }
}
