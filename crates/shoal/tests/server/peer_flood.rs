//! The peer port before a caller has introduced itself: 200 connections that each announce a
//! 288 MiB hello and send nothing more once took a node from 97 MB to 3.2 GB RSS (every
//! announced frame was allocated up front), stalled it long enough for its peers to move its
//! leaderships, and held a client SET for 10 s. Now a hello is at most 4 KiB, buffers grow
//! only as bytes arrive, and at most 64 callers may be mid-hello at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::{Node, free_port, get};

const FLOOD: usize = 200;

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn a_flood_of_huge_hellos_costs_the_node_no_memory_and_no_service() {
    let peer_port = free_port();
    let mut node = Node::new();
    node.extra_args = vec!["--peer-addr".into(), format!("127.0.0.1:{peer_port}")];
    let server = node.start();
    let pid = server.child.0.id();
    let mut con = server.connect();
    let _: String = redis::cmd("SET")
        .arg("before")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let rss_before = status_kib(pid, "VmRSS:");

    let announced = (288u32 << 20).to_le_bytes();
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", peer_port)) else {
            continue;
        };
        if stream.write_all(&announced).is_ok() {
            flood.push(stream);
        }
    }
    // The node closes every one of them (too big a hello, or too many callers at once);
    // once all are closed it has handled them all.
    for stream in &mut flood {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        assert!(
            read.is_ok()
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "the node did not close a flooding connection: {read:?}"
        );
    }
    // Clients were served throughout, and the node's peak memory hardly moved.
    let _: String = redis::cmd("SET")
        .arg("after")
        .arg("2")
        .query(&mut con)
        .unwrap();
    assert_eq!(get(&mut con, "before").as_deref(), Some("1"));
    let peak = status_kib(pid, "VmHWM:");
    assert!(
        peak < rss_before + 64 * 1024,
        "peak RSS {peak} KiB against {rss_before} KiB before the flood"
    );
}
