//! The `shoal` binary: a thin CLI over the library crates.
//!
//! `shoal server` runs a node; `shoal demo` runs a local cluster; `shoal cluster status`
//! shows one; `shoal bench` measures one; `shoal get|put|del|scan` talk to a running node
//! over HTTP.

mod bench;
mod client;
mod client_access;
mod cluster_cmd;
mod cluster_verify;
mod demo;
mod fds;
mod security;
mod server;
mod user_cmd;

use clap::{Parser, Subcommand};

// A request crosses several threads (front end, Raft, group commit) and allocates on one,
// frees on another; glibc's per-thread arenas handle that poorly (lock traffic, heaps
// grown and shrunk with mprotect).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// shoal: a distributed, strongly consistent, sharded key-value store that speaks the
/// Redis protocol (RESP) and HTTP/JSON.
#[derive(Parser)]
#[command(name = "shoal", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a shoal node (the data lives in --data-dir).
    Server(Box<server::ServerArgs>),
    /// Start a local cluster of N nodes, print its addresses, stop it on Ctrl-C.
    Demo(demo::DemoArgs),
    /// Measure a running cluster: N connections of PUTs or GETs for a while, with latencies.
    Bench(bench::BenchArgs),
    /// Inspect a running cluster.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// Manage the cluster's users: who may log in, with which role and key prefix.
    #[command(subcommand)]
    User(user_cmd::UserCommand),
    #[command(flatten)]
    Kv(client::KvCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The server's client-facing runtime; client commands need only one thread.
    let threads = match &cli.command {
        Commands::Server(args) => server::io_threads(args),
        Commands::Kv(_) | Commands::Demo(_) | Commands::Cluster(_) | Commands::User(_) => 1,
        // The load generator needs threads of its own to keep its connections busy.
        Commands::Bench(_) => 2,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Commands::Server(args) => server::run(*args).await,
            Commands::Kv(cmd) => client::run(cmd).await,
            Commands::Demo(args) => demo::run(args).await,
            Commands::Cluster(cmd) => cluster_cmd::run(cmd).await,
            Commands::User(cmd) => user_cmd::run(cmd).await,
            Commands::Bench(args) => bench::run(args).await,
        }
    })
}

#[cfg(test)]
mod cli_tests {
    /// clap checks its definitions only when a command is parsed: this checks all of them
    /// (unique names, valid `requires`), so a clash fails here rather than for a user.
    #[test]
    fn every_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
