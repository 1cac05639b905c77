//! The `shoal` binary: a thin CLI over the library crates.
//!
//! `shoal server` runs a node; `shoal get|put|del|scan` talk to a running node over HTTP.

mod client;
mod server;

use clap::{Parser, Subcommand};

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
    Server(server::ServerArgs),
    #[command(flatten)]
    Kv(client::KvCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The server's client-facing runtime; client commands need only one thread.
    let threads = match &cli.command {
        Commands::Server(args) => server::io_threads(args),
        Commands::Kv(_) => 1,
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
            Commands::Server(args) => server::run(args).await,
            Commands::Kv(cmd) => client::run(cmd).await,
        }
    })
}
