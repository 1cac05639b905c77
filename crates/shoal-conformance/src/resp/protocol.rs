//! Protocol scenarios: pipelining order, RESP3, inline commands, malformed frames,
//! size limits, the connection limit and graceful shutdown.

use super::*;

pub async fn pipelining_keeps_order(server: Server) {
    let mut con = connect(server.addr).await;
    // 100 mixed commands in one pipeline; a model predicts every reply.
    let mut model: HashMap<String, i64> = HashMap::new();
    let mut pipe = redis::pipe();
    let mut expected = Vec::new();
    for i in 0..100i64 {
        let key = format!("p{}", i % 7);
        match i % 5 {
            0 | 3 => {
                pipe.cmd("SET").arg(&key).arg(i);
                model.insert(key, i);
                expected.push(Value::Okay);
            }
            1 => {
                pipe.cmd("INCR").arg(&key);
                let value = model.entry(key).or_insert(0);
                *value += 1;
                expected.push(Value::Int(*value));
            }
            _ => {
                pipe.cmd("GET").arg(&key);
                expected.push(model.get(&key).map_or(Value::Nil, |v| bulk(&v.to_string())));
            }
        }
    }
    let replies: Vec<Value> = pipe.query_async(&mut con).await.expect("pipeline");
    assert_eq!(replies, expected);

    // A run of writes then a run of reads: the reads see every write.
    let mut pipe = redis::pipe();
    for i in 0..16 {
        pipe.cmd("SET").arg(format!("w{i}")).arg(i);
    }
    for i in 0..16 {
        pipe.cmd("GET").arg(format!("w{i}"));
    }
    let replies: Vec<Value> = pipe.query_async(&mut con).await.expect("pipeline");
    assert_eq!(&replies[..16], vec![Value::Okay; 16].as_slice());
    assert_eq!(
        replies[16..],
        (0..16).map(|i| bulk(&i.to_string())).collect::<Vec<_>>()
    );

    // Local commands keep their place, and errors do not break the pipeline.
    let replies: Vec<Value> = redis::pipe()
        .cmd("SET")
        .arg("l")
        .arg("1")
        .cmd("PING")
        .cmd("GET")
        .arg("l")
        .cmd("CLIENT")
        .arg("SETNAME")
        .arg("piped")
        .cmd("CLIENT")
        .arg("GETNAME")
        .cmd("INCR")
        .arg("l")
        .cmd("ECHO")
        .arg("e")
        .query_async(&mut con)
        .await
        .expect("pipeline");
    assert_eq!(
        replies,
        vec![
            Value::Okay,
            Value::SimpleString("PONG".into()),
            bulk("1"),
            Value::Okay,
            bulk("piped"),
            Value::Int(2),
            bulk("e")
        ]
    );

    // Raw: one write carrying writes, reads and an error, answered in order.
    let mut raw = Raw::connect(server.addr).await;
    let mut batch = Vec::new();
    for args in [
        &["SET", "rw", "a"][..],
        &["GET", "rw"],
        &["APPEND", "rw", "b"],
        &["NOPE"],
        &["GET", "rw"],
    ] {
        batch.extend(request(args));
    }
    raw.send(&batch).await;
    raw.expect(b"+OK\r\n$1\r\na\r\n:2\r\n-ERR unknown command 'NOPE', with args beginning with: \r\n$2\r\nab\r\n").await;
}

pub async fn resp3_after_hello(server: Server) {
    let mut raw = Raw::connect(server.addr).await;
    raw.send(&request(&["GET", "nothing"])).await;
    raw.expect(b"$-1\r\n").await;
    raw.send(&request(&["HELLO", "3"])).await;
    let hello = raw.until(b"$7\r\nmodules\r\n*0\r\n").await;
    let hello = String::from_utf8_lossy(&hello);
    assert!(
        hello.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nshoal\r\n$7\r\nversion\r\n"),
        "{hello}"
    );
    assert!(
        hello.contains("$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:"),
        "{hello}"
    );
    assert!(
        hello.contains("$4\r\nmode\r\n$7\r\ncluster\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"),
        "{hello}"
    );
    raw.send(&request(&["GET", "nothing"])).await;
    raw.expect(b"_\r\n").await;
    raw.send(&request(&["CONFIG", "GET", "save"])).await;
    raw.expect(b"%1\r\n$4\r\nsave\r\n$0\r\n\r\n").await;
    raw.send(&request(&["SET", "k", "v"])).await;
    raw.expect(b"+OK\r\n").await;
    raw.send(&request(&["SET", "{k}1", "v"])).await;
    raw.expect(b"+OK\r\n").await;
    raw.send(&request(&["MGET", "{k}1", "{k}2"])).await;
    raw.expect(b"*2\r\n$1\r\nv\r\n_\r\n").await;
    raw.send(&request(&["CLUSTER", "INFO"])).await;
    raw.expect(b"=").await;
    raw.until(b"cluster_stats_messages_received:0\r\n\r\n")
        .await;
    // Back to RESP2.
    raw.send(&request(&["HELLO", "2"])).await;
    raw.until(b"$7\r\nmodules\r\n*0\r\n").await;
    raw.send(&request(&["GET", "nothing"])).await;
    raw.expect(b"$-1\r\n").await;

    // A client library negotiating RESP3 itself.
    let client =
        redis::Client::open(format!("redis://{}/?protocol=resp3", server.addr)).expect("url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect with RESP3");
    assert_eq!(q(&mut con, &["GET", "k"]).await, bulk("v"));
    assert_eq!(q(&mut con, &["GET", "nothing"]).await, Value::Nil);
    assert_eq!(
        q(&mut con, &["CONFIG", "GET", "appendonly"]).await,
        Value::Map(vec![(bulk("appendonly"), bulk("no"))])
    );
}

pub async fn inline_commands(server: Server) {
    let mut raw = Raw::connect(server.addr).await;
    raw.send(b"PING\r\n").await;
    raw.expect(b"+PONG\r\n").await;
    raw.send(b"SET il \"a b\"\r\nGET il\r\n\r\nping\n").await;
    raw.expect(b"+OK\r\n$3\r\na b\r\n+PONG\r\n").await;
    raw.send(b"GET 'it''s'\r\n").await;
    raw.expect(b"-ERR Protocol error: unbalanced quotes in request\r\n")
        .await;
    raw.expect_closed().await;
}

pub async fn malformed_frame_closes_only_that_connection(server: Server) {
    let mut other = connect(server.addr).await;
    assert_eq!(q(&mut other, &["SET", "x", "1"]).await, Value::Okay);
    for (input, reply) in [
        (
            &b"*1\r\n$4\r\nPING\r\n*1\r\n$x\r\n"[..],
            &b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"[..],
        ),
        (
            b"*1\r\n:1\r\n",
            b"-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*abc\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$-5\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
    ] {
        let mut raw = Raw::connect(server.addr).await;
        raw.send(input).await;
        raw.expect(reply).await;
        raw.expect_closed().await;
    }
    assert_eq!(q(&mut other, &["GET", "x"]).await, bulk("1"));
}

/// What `curl -X POST --data-binary $'SET csrf-key pwned\r\n' http://host:port/` sends, and
/// what a browser page could make a browser send: the connection closes at the request line
/// and the body never runs.
pub async fn http_request_closes_the_connection(server: Server) {
    let mut con = connect(server.addr).await;
    for request in [
        &b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 23\r\n\r\nSET csrf-key pwned\r\n"
            [..],
        // A proxy or client that sends the headers first still names the host.
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nSET csrf-key pwned\r\n",
        // Pipelined with a real command first: that one is answered, then the close.
        b"PING\r\npost /x HTTP/1.0\r\nSET csrf-key pwned\r\n",
    ] {
        let mut raw = Raw::connect(server.addr).await;
        raw.send(request).await;
        if request.starts_with(b"PING") {
            raw.expect(b"+PONG\r\n").await;
        }
        if request.starts_with(b"GET") {
            raw.expect(b"-ERR wrong number of arguments for 'get' command\r\n")
                .await;
        }
        raw.expect_closed().await;
    }
    assert_eq!(q(&mut con, &["EXISTS", "csrf-key"]).await, Value::Int(0));
}

pub async fn size_limits(server: Server) {
    let mut con = connect(server.addr).await;
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    let key_error = format!(
        "ERR key is {} bytes, over the key size limit of {MAX_KEY_BYTES} bytes (--max-key-bytes)",
        MAX_KEY_BYTES + 1
    );
    assert_eq!(e(&mut con, &["SET", &long_key, "v"]).await, key_error);
    assert_eq!(e(&mut con, &["GET", &long_key]).await, key_error);
    assert_eq!(e(&mut con, &["MGET", "a", &long_key]).await, key_error);
    assert_eq!(
        e(&mut con, &["SET", "", "v"]).await,
        "ERR key is empty: keys must be 1 byte or longer"
    );
    let exact_key = "k".repeat(MAX_KEY_BYTES);
    assert_eq!(q(&mut con, &["SET", &exact_key, "v"]).await, Value::Okay);

    let big = "v".repeat(MAX_VALUE_BYTES + 1);
    assert_eq!(
        e(&mut con, &["SET", "big", &big]).await,
        format!(
            "ERR value is {} bytes, over the value size limit of {MAX_VALUE_BYTES} bytes (--max-value-bytes)",
            MAX_VALUE_BYTES + 1
        )
    );
    let exact = "v".repeat(MAX_VALUE_BYTES);
    assert_eq!(q(&mut con, &["SET", "big", &exact]).await, Value::Okay);
    assert!(
        e(&mut con, &["APPEND", "big", "more"])
            .await
            .starts_with("ERR value is")
    );
    assert_eq!(
        q(&mut con, &["STRLEN", "big"]).await,
        Value::Int(MAX_VALUE_BYTES as i64)
    );

    // Far over the limit: refused by the framing before the data is even sent.
    let mut raw = Raw::connect(server.addr).await;
    raw.send(
        format!(
            "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n",
            MAX_VALUE_BYTES + 64 * 1024 + 1
        )
        .as_bytes(),
    )
    .await;
    raw.expect(b"-ERR Protocol error: invalid bulk length\r\n")
        .await;
    raw.expect_closed().await;
    assert_eq!(
        q(&mut con, &["PING"]).await,
        Value::SimpleString("PONG".into())
    );
}

pub async fn connection_limit(server: Server) {
    let mut first = connect(server.addr).await;
    let mut second = Raw::connect(server.addr).await;
    second.send(b"PING\r\n").await;
    second.expect(b"+PONG\r\n").await;
    let mut third = Raw::connect(server.addr).await;
    third
        .expect(b"-ERR max number of clients reached\r\n")
        .await;
    third.expect_closed().await;
    assert_eq!(
        q(&mut first, &["PING"]).await,
        Value::SimpleString("PONG".into())
    );
    // A slot frees up once a client leaves.
    drop(second);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let mut again = Raw::connect(server.addr).await;
        again.send(b"PING\r\n").await;
        let mut reply = [0u8; 1];
        let n = again.0.read(&mut reply).await.unwrap_or(0);
        if n == 1 && reply[0] == b'+' {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed slot was never reused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn graceful_shutdown(server: Server) {
    let mut idle = Raw::connect(server.addr).await;
    idle.send(b"PING\r\n").await;
    idle.expect(b"+PONG\r\n").await;
    let mut busy = Raw::connect(server.addr).await;
    let mut batch = Vec::new();
    for i in 0..50 {
        batch.extend(request(&["SET", &format!("g{i}"), "v"]));
    }
    busy.send(&batch).await;
    // Let the server read the batch, then stop it while the writes may still be in flight.
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.stop.send(()).expect("server still running");
    busy.expect(&b"+OK\r\n".repeat(50)).await;
    busy.expect_closed().await;
    idle.expect_closed().await;
    tokio::time::timeout(TIMEOUT, server.task)
        .await
        .expect("serve returns after shutdown")
        .expect("serve task")
        .expect("serve ok");
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "still accepting after shutdown"
    );
}
