//! `shoal demo`: a local N-node cluster in one command. Starts N `shoal server` child
//! processes on loopback (data in a temporary directory unless `--data-dir`), waits until
//! every shard has a leader, prints the addresses and what to try, and stops every node
//! cleanly on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::process::{Child, Command};

use crate::cluster_cmd;

/// Longest the cluster may take to start and elect every shard's leader.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    nodes: u16,
    /// Keep the nodes' data under this directory (d1, d2, ...) instead of a temporary one
    /// removed at exit. Reusing it restarts the same cluster with its data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Node N serves RESP on BASE+N, HTTP on BASE+100+N, gRPC on BASE+300+N and talks to
    /// peers on BASE+200+N.
    #[arg(long, default_value_t = 7000)]
    base_port: u16,
    /// Replicas per shard.
    #[arg(long, default_value_t = 3)]
    replication: u32,
    /// Number of shards.
    #[arg(long, default_value_t = 16)]
    shards: u32,
    /// Run the cluster with TLS everywhere: a throwaway CA and a certificate per node are
    /// made under the data directory (tls/), peers talk mutual TLS, and the printed
    /// commands show how to connect.
    #[arg(long)]
    tls: bool,
}

/// The demo's throwaway CA and its node certificates, and its admin's password (a TLS
/// node serves nobody anonymously).
struct DemoPki {
    dir: PathBuf,
    ca: PathBuf,
    password_file: PathBuf,
    password: String,
}

/// The user the TLS demo makes and logs in as.
const DEMO_ADMIN: &str = "admin";

impl DemoPki {
    /// Makes a CA and certificates for nodes 1..=`nodes` + 1 (the last for a node added by
    /// hand), valid for 127.0.0.1 and localhost. Kept when already there (a restarted demo
    /// with --data-dir keeps its CA).
    fn make(root: &Path, nodes: u16) -> Result<Self, String> {
        let dir = root.join("tls");
        let ca = dir.join("ca.pem");
        let password_file = dir.join("admin-password");
        let password = |dir: &Path| -> Result<String, String> {
            if let Ok(kept) = std::fs::read_to_string(&password_file) {
                return Ok(kept.trim().to_string());
            }
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let made = crate::user_cmd::random_password();
            std::fs::write(&password_file, format!("{made}\n"))
                .map_err(|e| format!("cannot write {}: {e}", password_file.display()))?;
            Ok(made)
        };
        if ca.exists() && dir.join(format!("node{}.pem", nodes + 1)).exists() {
            let password = password(&dir)?;
            return Ok(DemoPki {
                password_file: dir.join("admin-password"),
                password,
                dir,
                ca,
            });
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let authority = shoal_tls::DevCa::new("shoal demo CA")?;
        let io = |e: std::io::Error| format!("cannot write certificates to {}: {e}", dir.display());
        authority.write(&dir).map_err(io)?;
        for id in 1..=nodes + 1 {
            authority
                .issue(&format!("node{id}"), &["127.0.0.1", "localhost"])?
                .write(&dir, &format!("node{id}"))
                .map_err(io)?;
        }
        let password = password(&dir)?;
        Ok(DemoPki {
            password_file: dir.join("admin-password"),
            password,
            dir,
            ca,
        })
    }

    fn flags(&self, id: u16) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.dir.join(format!("node{id}.pem")).display().to_string(),
            "--tls-key".into(),
            self.dir
                .join(format!("node{id}-key.pem"))
                .display()
                .to_string(),
            "--tls-ca".into(),
            self.ca.display().to_string(),
        ]
    }
}

struct DemoNode {
    id: u16,
    resp: String,
    http: String,
    grpc: String,
    log: PathBuf,
    child: Child,
    running: bool,
    /// How the demo started it, for the line that tells how to restart it by hand.
    command: String,
}

pub async fn run(args: DemoArgs) -> ExitCode {
    match demo(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

async fn demo(args: DemoArgs) -> Result<(), String> {
    let n = args.nodes;
    let port = |offset: u16, id: u16| -> Result<u16, String> {
        args.base_port.checked_add(offset + id).ok_or_else(|| {
            format!(
                "--base-port {} leaves no room for {n} nodes",
                args.base_port
            )
        })
    };
    let mut plan = Vec::new();
    for id in 1..=n {
        plan.push((
            id,
            port(0, id)?,
            port(100, id)?,
            port(200, id)?,
            port(300, id)?,
        ));
    }
    for (_, resp, http, peer, grpc) in &plan {
        for p in [resp, http, peer, grpc] {
            std::net::TcpListener::bind(("127.0.0.1", *p)).map_err(|e| {
                format!("port {p} is not free ({e}); pick other ports with --base-port")
            })?;
        }
    }
    let temp;
    let root: PathBuf = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("shoal-demo-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let initial_cluster = plan
        .iter()
        .map(|(id, _, _, peer, _)| format!("{id}=127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the shoal binary: {e}"))?;
    let pki = match args.tls {
        true => {
            let pki = DemoPki::make(&root, n)?;
            // The demo's own requests (readiness) go over TLS too, as its admin.
            crate::client_access::ClientAccessArgs {
                tls_ca: Some(pki.ca.clone()),
                user: Some(DEMO_ADMIN.to_string()),
                password_file: Some(pki.password_file.clone()),
                ..Default::default()
            }
            .apply();
            Some(pki)
        }
        false => None,
    };
    let mut nodes = Vec::new();
    for (id, resp, http, peer, grpc) in &plan {
        let log = root.join(format!("node-{id}.log"));
        let log_file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut server_args: Vec<String> = vec![
            "server".into(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            root.join(format!("d{id}")).display().to_string(),
            "--resp-addr".into(),
            format!("127.0.0.1:{resp}"),
            "--http-addr".into(),
            format!("127.0.0.1:{http}"),
            "--peer-addr".into(),
            format!("127.0.0.1:{peer}"),
            "--grpc-addr".into(),
            format!("127.0.0.1:{grpc}"),
            "--initial-cluster".into(),
            initial_cluster.clone(),
            "--replication".into(),
            args.replication.to_string(),
            "--shards".into(),
            args.shards.to_string(),
            // Each node shares the machine with the others.
            "--raft-threads".into(),
            "1".into(),
            "--io-threads".into(),
            "1".into(),
        ];
        if let Some(pki) = &pki {
            server_args.extend(pki.flags(*id));
        }
        let command = format!("{} {}", exe.display(), server_args.join(" "));
        let child = Command::new(&exe)
            .args(&server_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start node {id}: {e}"))?;
        nodes.push(DemoNode {
            id: *id,
            resp: format!("127.0.0.1:{resp}"),
            http: format!("127.0.0.1:{http}"),
            grpc: format!("127.0.0.1:{grpc}"),
            log,
            child,
            running: true,
            command,
        });
    }

    let started = wait_ready(&mut nodes, pki.as_ref()).await;
    if let Err(message) = started {
        stop_all(&mut nodes).await;
        return Err(message);
    }
    print_intro(&args, &root, &nodes, pki.as_ref());

    let outcome = watch(&mut nodes).await;
    eprintln!("\nstopping {n} nodes...");
    stop_all(&mut nodes).await;
    if args.data_dir.is_none() {
        eprintln!("removed {}", root.display());
    }
    outcome
}

/// Waits until every node answers and every shard has a leader, with a spinner.
async fn wait_ready(nodes: &mut [DemoNode], pki: Option<&DemoPki>) -> Result<(), String> {
    // A TLS cluster first gets its admin, added as its operator would from this machine.
    let mut admin_added = pki.is_none();
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let deadline = Instant::now() + START_TIMEOUT;
    let result = loop {
        for node in nodes.iter_mut() {
            if let Ok(Some(status)) = node.child.try_wait() {
                node.running = false;
                break_with_log(
                    node,
                    &format!("node {} exited during startup ({status})", node.id),
                );
            }
        }
        if let Some(dead) = nodes.iter().find(|n| !n.running) {
            break Err(format!(
                "node {} did not start; its log is {}",
                dead.id,
                dead.log.display()
            ));
        }
        let first = &nodes[0].http;
        if let (false, Some(pki)) = (admin_added, pki) {
            bar.set_message("starting: adding the admin user");
            admin_added = add_admin(first, pki).await;
        } else {
            match cluster_cmd::fetch(first).await {
                Ok(view) => {
                    let up = view.nodes.iter().filter(|n| n.up).count();
                    let led = view.shards.iter().filter(|s| s.leader.is_some()).count();
                    bar.set_message(format!(
                        "starting: {up}/{} nodes up, {led}/{} shards with a leader",
                        view.nodes.len(),
                        view.shards.len()
                    ));
                    if up == view.nodes.len() && led == view.shards.len() {
                        break Ok(());
                    }
                }
                Err(_) => bar.set_message("starting: waiting for node 1 to answer"),
            }
        }
        if Instant::now() >= deadline {
            break Err(format!(
                "the cluster did not become ready within {} s; logs are in {}",
                START_TIMEOUT.as_secs(),
                nodes[0].log.parent().unwrap_or(Path::new(".")).display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    result
}

/// Adds the TLS demo's admin through `addr` without logging in (allowed from this machine
/// while the cluster has no user); true once it exists.
async fn add_admin(addr: &str, pki: &DemoPki) -> bool {
    let Ok(Some(tls)) = crate::client_access::ClientAccessArgs::current().rustls() else {
        return false;
    };
    let Ok(http) = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(10))
        .build()
    else {
        return false;
    };
    let body = serde_json::json!({
        "name": DEMO_ADMIN, "password": pki.password, "role": "admin",
    });
    match http
        .post(format!("https://{addr}/v1/users"))
        .json(&body)
        .send()
        .await
    {
        Ok(response) if response.status().is_success() => true,
        // A demo restarted on its --data-dir: the admin is there from the last run.
        Ok(response) => response
            .text()
            .await
            .is_ok_and(|text| text.contains("has users") || text.contains("already exists")),
        Err(_) => false,
    }
}

fn break_with_log(node: &DemoNode, headline: &str) {
    eprintln!("{headline}; last lines of {}:", node.log.display());
    if let Ok(text) = std::fs::read_to_string(&node.log) {
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[lines.len().saturating_sub(10)..] {
            eprintln!("  {line}");
        }
    }
}

fn print_intro(args: &DemoArgs, root: &Path, nodes: &[DemoNode], pki: Option<&DemoPki>) {
    let kept = if args.data_dir.is_some() {
        "kept"
    } else {
        "removed at exit"
    };
    println!(
        "shoal demo: {} nodes, {} shards, {} replicas each (data in {}, {kept})\n",
        nodes.len(),
        args.shards,
        args.replication.min(u32::from(args.nodes)),
        root.display()
    );
    println!(
        "{:<5} {:<16} {:<24} {:<16} LOG",
        "NODE", "RESP", "HTTP", "GRPC"
    );
    for node in nodes {
        println!(
            "{:<5} {:<16} {:<24} {:<16} {}",
            node.id,
            node.resp,
            format!(
                "{}://{}",
                if pki.is_some() { "https" } else { "http" },
                node.http
            ),
            node.grpc,
            node.log.display()
        );
    }
    let first = &nodes[0];
    let last = &nodes[nodes.len() - 1];
    let port = |addr: &str| addr.rsplit(':').next().unwrap_or_default().to_string();
    println!("\nTry this:");
    // What each tool needs to speak TLS to the demo, or nothing without --tls.
    let (redis_tls, curl, shoal_tls, grpcurl) = match pki {
        Some(pki) => {
            let ca = pki.ca.display().to_string();
            let password = &pki.password;
            let basic = {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(format!("{DEMO_ADMIN}:{password}"))
            };
            println!(
                "  (TLS: clients check the nodes against {ca} and log in as {DEMO_ADMIN}, password {password}, also in {})",
                pki.password_file.display()
            );
            (
                format!(
                    "--tls --cacert {ca} --user {DEMO_ADMIN} --pass {password} --no-auth-warning "
                ),
                format!("curl --cacert {ca} -u {DEMO_ADMIN}:{password} https://"),
                format!(
                    " --tls-ca {ca} --user {DEMO_ADMIN} --password-file {}",
                    pki.password_file.display()
                ),
                format!("-cacert {ca} -H 'authorization: Basic {basic}'"),
            )
        }
        None => (
            String::new(),
            "curl http://".to_string(),
            String::new(),
            "-plaintext".to_string(),
        ),
    };
    println!(
        "  redis-cli {redis_tls}-c -p {} set hello world && redis-cli {redis_tls}-p {} get hello",
        port(&first.resp),
        port(&last.resp)
    );
    println!(
        "  {curl}{}/v1/kv/hello && shoal cluster status --addr {}{shoal_tls}",
        last.http, first.http
    );
    println!("  shoal get hello --addr {}{shoal_tls}", first.grpc);
    println!(
        "  grpcurl {grpcurl} -d '{{\"key\": \"aGVsbG8=\"}}' {} shoal.v1.KV/Get",
        first.grpc
    );

    // Growing: the next node's ports follow the demo's scheme.
    let next = nodes.len() as u32 + 1;
    let at = |offset: u32| u32::from(args.base_port) + offset + next;
    if at(300) <= u32::from(u16::MAX) {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "shoal".into());
        println!(
            "\nGrow it: start node {next} in another terminal; it joins and replicas move to it:"
        );
        let tls_flags = pki
            .map(|pki| format!(" {}", pki.flags(next as u16).join(" ")))
            .unwrap_or_default();
        println!(
            "  {exe} server --id {next} --data-dir {} --resp-addr 127.0.0.1:{} --http-addr 127.0.0.1:{} --peer-addr 127.0.0.1:{} --grpc-addr 127.0.0.1:{} --join 127.0.0.1:{} --raft-threads 1 --io-threads 1{tls_flags}",
            root.join(format!("d{next}")).display(),
            at(0),
            at(100),
            at(200),
            at(300),
            u32::from(args.base_port) + 201
        );
        println!(
            "  shoal cluster wait-balanced --addr {}{shoal_tls} && shoal cluster status --addr {}{shoal_tls}",
            first.http, first.http
        );
        println!(
            "Shrink it again: shoal cluster remove-node --addr {} --node {next} --wait{shoal_tls}",
            first.http
        );
    }
    println!("\nPress Ctrl-C to stop the cluster.");
}

/// Runs until Ctrl-C or SIGTERM; reports nodes that exit on their own meanwhile.
async fn watch(nodes: &mut [DemoNode]) -> Result<(), String> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        #[cfg(unix)]
        let stop = async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        #[cfg(not(unix))]
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        tokio::select! {
            _ = stop => return Ok(()),
            _ = ticker.tick() => {
                for node in nodes.iter_mut().filter(|n| n.running) {
                    if let Ok(Some(status)) = node.child.try_wait() {
                        node.running = false;
                        break_with_log(node, &format!("node {} exited ({status})", node.id));
                        eprintln!(
                            "restart it by hand with the same flags and data directory (it catches up):\n  {} 2>>{}",
                            node.command,
                            node.log.display()
                        );
                    }
                }
                // A node restarted by hand is not the demo's child but still serves: the demo
                // ends only once no node of its cluster answers at all.
                if nodes.iter().all(|n| !n.running) && !any_answers(nodes).await {
                    return Err("every node has exited and none answers on its RESP address".into());
                }
            }
        }
    }
}

/// Whether any node accepts a connection on its RESP address (started by hand, say).
async fn any_answers(nodes: &[DemoNode]) -> bool {
    for node in nodes {
        let connect = tokio::net::TcpStream::connect(&node.resp);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            return true;
        }
    }
    false
}

/// SIGTERM to every node, then waits; a node that does not stop in time is killed.
async fn stop_all(nodes: &mut [DemoNode]) {
    for node in nodes.iter_mut().filter(|n| n.running) {
        if let Some(pid) = node.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for node in nodes.iter_mut().filter(|n| n.running) {
        match tokio::time::timeout(STOP_TIMEOUT, node.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!(
                    "node {} did not stop within {} s; killing it",
                    node.id,
                    STOP_TIMEOUT.as_secs()
                );
                let _ = node.child.kill().await;
            }
        }
        node.running = false;
    }
}
