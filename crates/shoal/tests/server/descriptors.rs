//! A connection flood under the common open-file limit (1024, soft and hard) must not take
//! the descriptors the storage engine needs: before the node capped clients to what its limit
//! leaves, 1,100 idle connections made fjall's next file open fail with EMFILE, which poisons
//! the engine and stops every shard until a restart, while `/health` still said ok.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::{Node, get, try_connect};

const LIMIT: u64 = 1024;
const FLOOD: usize = 1_100;
/// 64 KiB values, enough of them that every shard snapshots (each opens files) and the
/// memtables take a few MiB.
const WRITES: u64 = 600;
const VALUE_BYTES: usize = 64 * 1024;

/// This test process opens the flood too: let it hold that many sockets.
fn raise_own_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let want = (FLOOD as u64 + 256).min(limit.maximum.unwrap_or(u64::MAX));
    if limit.current.is_some_and(|soft| soft < want) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: limit.maximum,
            },
        )
        .expect("raise this test's open-file limit");
    }
}

/// One HTTP/1.1 exchange on a fresh connection: the status and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect over HTTP");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, body.to_string())
}

#[test]
fn a_connection_flood_under_a_low_open_file_limit_leaves_storage_its_descriptors() {
    raise_own_limit();
    let mut node = Node::new();
    node.open_file_limit = Some(LIMIT);
    node.extra_args = vec!["--snapshot-every".into(), "100".into()];
    let server = node.start();
    assert!(
        server
            .log()
            .contains("--max-connections 10000 lowered to 512 to fit the open-file limit of 1024"),
        "the node says what it fitted"
    );
    // The writer connects first; then the flood takes every other place.
    let mut writer = server.connect();
    let mut flood = Vec::new();
    for i in 0..FLOOD {
        let port = if i % 2 == 0 {
            node.resp_port
        } else {
            node.http_port
        };
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            flood.push(stream);
        }
    }
    // A client over the limit is told so, on either port, and closed.
    let mut late = TcpStream::connect(("127.0.0.1", node.resp_port)).expect("connect");
    late.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(&mut late).read_line(&mut line).unwrap();
    assert_eq!(line, "-ERR max number of clients reached\r\n");
    let (status, body) = http_get(node.http_port, "/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too_many_connections"), "{body}");

    let value = "v".repeat(VALUE_BYTES);
    for i in 0..WRITES {
        let reply: redis::RedisResult<String> = redis::cmd("SET")
            .arg(format!("fd:{i}"))
            .arg(&value)
            .query(&mut writer);
        if let Err(e) = reply {
            panic!("write {i} failed under the flood: {e}");
        }
    }
    drop(flood);
    // Places free up as the node sees the closes: wait for a connection to be admitted.
    let mut con = {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match try_connect(node.resp_port).and_then(|mut con| {
                redis::cmd("PING").query::<String>(&mut con)?;
                Ok(con)
            }) {
                Ok(con) => break con,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("no place freed after the flood closed: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    };
    for i in (0..WRITES).step_by(37) {
        assert_eq!(
            get(&mut con, &format!("fd:{i}")).map(|v| v.len()),
            Some(VALUE_BYTES)
        );
    }
    let (status, body) = http_get(node.http_port, "/health");
    assert_eq!(status, 200, "{body}");
    let log = server.log();
    assert!(!log.contains("Too many open files"), "{log}");
    // The log is a file, not a terminal: no colour codes in it.
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a log file: {log}");
}
