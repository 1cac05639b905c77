//! Crash safety with a real process: a child node is killed with SIGKILL while writing;
//! after restart every write it acknowledged is there and the engine opens cleanly. A
//! torn journal tail (garbage after the last intact batch) is cut at open, not fatal.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};

use bytes::Bytes;
use shoal_cluster::{Node, NodeConfig};
use shoal_core::{Command, Condition, Consistency, Expiry, Limits, Reply, WriteOp};

const DIR_ENV: &str = "SHOAL_CRASH_TEST_DIR";

fn config(dir: &Path) -> NodeConfig {
    NodeConfig {
        id: 1,
        data_dir: dir.to_path_buf(),
        shards: 8,
        resp_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        grpc_addr: String::new(),
        limits: Limits::default(),
        allow_flush: false,
        max_keys_reply: 1000,
        cluster: Default::default(),
    }
}

fn put(i: u64) -> Command {
    Command::Write(WriteOp::Put {
        key: Bytes::from(format!("key-{i}")),
        value: Bytes::from(format!("value-{i}")),
        condition: Condition::None,
        expiry: Expiry::Clear,
        return_old: false,
    })
}

/// The child: writes forever from 16 concurrent writers, printing each acknowledged key.
/// Only runs when the parent test starts it (the env var is set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_writer() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let node = Node::start(config(Path::new(&dir))).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    for writer in 0..16u64 {
        let node = node.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            for n in 0.. {
                let i = n * 16 + writer;
                node.execute(put(i), Consistency::Linearizable)
                    .await
                    .unwrap();
                let _ = tx.send(i);
            }
        });
    }
    let mut out = std::io::stdout().lock();
    while let Some(i) = rx.recv().await {
        writeln!(out, "ack {i}").unwrap();
        out.flush().unwrap();
    }
}

fn journal_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "jnl") {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_and_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 3000 {
        let line = lines.next().expect("child exited early").unwrap();
        if let Some(i) = line.strip_prefix("ack ") {
            acked.push(i.parse::<u64>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    child.wait().unwrap();
    // Anything printed before the kill was acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(i) = line.strip_prefix("ack ") {
            acked.push(i.parse::<u64>().unwrap());
        }
    }

    // Tear the tail of the newest journal: right after its last written byte (journals are
    // preallocated with zeros), garbage as a crash in the middle of a batch would leave.
    let journals = journal_files(dir.path());
    assert!(
        !journals.is_empty(),
        "no journal found under {}",
        dir.path().display()
    );
    let newest = journals
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let torn = (end + 777).min(bytes.len());
    bytes[end..torn].fill(0xA5);
    std::fs::write(newest, &bytes).unwrap();

    let node = Node::start(config(dir.path()))
        .await
        .expect("engine must open cleanly after a crash");
    for i in &acked {
        let reply = node
            .execute(
                Command::Get {
                    key: Bytes::from(format!("key-{i}")),
                },
                Consistency::Linearizable,
            )
            .await
            .unwrap();
        match reply {
            Reply::Record(Some(r)) => assert_eq!(r.value, Bytes::from(format!("value-{i}"))),
            other => panic!("acknowledged key-{i} lost after SIGKILL: {other:?}"),
        }
    }
    node.shutdown().await;
}
