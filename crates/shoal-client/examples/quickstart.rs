//! Connects to a cluster through one node and uses the typed API.
//!
//! `cargo run -p shoal-client --example quickstart -- 127.0.0.1:7301`

use std::time::Duration;

use shoal_client::{Client, Op, OpOutcome, PutOptions, Txn};

#[tokio::main]
async fn main() -> Result<(), shoal_client::Error> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:50051".into());
    let client = Client::connect(&addr).await?;
    println!("connected through {addr}, map epoch {}", client.map_epoch());

    let version = client.put("greeting", "hello").await?;
    let read = client.get("greeting").await?.expect("just written");
    println!("greeting = {:?} at version {version}", read.value);

    // Compare-and-set: the second one loses and says what the version is now.
    let newer = client.cas("greeting", version, "hello again").await?;
    match client.cas("greeting", version, "stale").await {
        Err(e) => println!("stale cas refused: {e}"),
        Ok(v) => println!("unexpected: stale cas applied at {v}"),
    }

    let session = PutOptions::new().ttl(Duration::from_secs(60)).if_absent();
    client.put_with("session:42", "alice", session).await?;

    let txn = Txn::new()
        .compare("{cart7}items", 0)
        .op(Op::put("{cart7}items", "2"))
        .op(Op::incr("{cart7}items", 3))
        .op(Op::get("{cart7}items"));
    if let OpOutcome::Incr(n) = client.txn(txn).await?[1] {
        println!("cart has {n} items (transaction on one shard)");
    }

    let ops = (0..100)
        .map(|i| Op::put(format!("user:{i:03}"), "x"))
        .collect();
    let written = client.batch(ops).await?.len();
    let listed = client.scan("user:", 0, false).await?.len();
    println!("batch wrote {written} keys across shards; scan lists {listed}");
    println!("greeting now at version {newer}; {:?}", client.stats());
    Ok(())
}
