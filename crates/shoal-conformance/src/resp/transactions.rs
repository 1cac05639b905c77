//! MULTI/EXEC/DISCARD/WATCH: what Redis answers, atomicity within one shard, and
//! optimistic locking under contention.

use std::sync::Arc;

use super::*;

pub async fn transactions(server: Server) {
    // The exact bytes: every queued command answers +QUEUED, EXEC an array of the replies.
    let mut raw = Raw::connect(server.addr).await;
    let mut batch = Vec::new();
    for args in [
        &["MULTI"][..],
        &["SET", "{t}n", "1"],
        &["INCRBY", "{t}n", "4"],
        &["GET", "{t}n"],
        &["PING"],
        &["EXEC"],
    ] {
        batch.extend(request(args));
    }
    raw.send(&batch).await;
    raw.expect(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n+OK\r\n:5\r\n$1\r\n5\r\n+PONG\r\n")
        .await;

    let mut con = connect(server.addr).await;
    let c = &mut con;
    // The errors, in Redis's words.
    assert_eq!(e(c, &["EXEC"]).await, "ERR EXEC without MULTI");
    assert_eq!(e(c, &["DISCARD"]).await, "ERR DISCARD without MULTI");
    assert_eq!(q(c, &["MULTI"]).await, Value::Okay);
    assert_eq!(e(c, &["MULTI"]).await, "ERR MULTI calls can not be nested");
    assert_eq!(
        e(c, &["WATCH", "x"]).await,
        "ERR WATCH inside MULTI is not allowed"
    );
    assert_eq!(q(c, &["DISCARD"]).await, Value::Okay);

    // A command that changes the connection runs at EXEC, in its place, as in Redis: a
    // discarded CLIENT SETNAME leaves no name, an executed one is seen by what follows it.
    assert_eq!(q(c, &["MULTI"]).await, Value::Okay);
    assert_eq!(
        q(c, &["CLIENT", "SETNAME", "discarded"]).await,
        Value::SimpleString("QUEUED".into())
    );
    assert_eq!(q(c, &["DISCARD"]).await, Value::Okay);
    assert_eq!(q(c, &["CLIENT", "GETNAME"]).await, Value::Nil);
    assert_eq!(q(c, &["MULTI"]).await, Value::Okay);
    for args in [
        &["CLIENT", "GETNAME"][..],
        &["CLIENT", "SETNAME", "kept"],
        &["CLIENT", "GETNAME"],
    ] {
        assert_eq!(q(c, args).await, Value::SimpleString("QUEUED".into()));
    }
    assert_eq!(
        q(c, &["EXEC"]).await,
        Value::Array(vec![
            Value::Nil,
            Value::Okay,
            Value::BulkString(b"kept".to_vec())
        ])
    );
    // Arity is still checked when queueing.
    assert_eq!(q(c, &["MULTI"]).await, Value::Okay);
    assert!(
        e(c, &["CLIENT"])
            .await
            .contains("wrong number of arguments")
    );
    assert_eq!(q(c, &["DISCARD"]).await, Value::Okay);

    // A command refused while queueing discards the whole transaction.
    assert_eq!(q(c, &["MULTI"]).await, Value::Okay);
    assert_eq!(
        q(c, &["SET", "{t}never", "1"]).await,
        Value::SimpleString("QUEUED".into())
    );
    assert!(
        e(c, &["NOPE"])
            .await
            .starts_with("ERR unknown command 'NOPE'")
    );
    assert!(e(c, &["GET"]).await.contains("wrong number of arguments"));
    assert!(
        e(c, &["KEYS", "*"])
            .await
            .contains("cannot run inside MULTI")
    );
    assert_eq!(
        e(c, &["EXEC"]).await,
        "EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(q(c, &["GET", "{t}never"]).await, Value::Nil);

    // A command that fails when applied fails alone; the others take effect.
    assert_eq!(q(c, &["SET", "{t}s", "text"]).await, Value::Okay);
    let mut batch = Vec::new();
    for args in [
        &["MULTI"][..],
        &["INCR", "{t}s"],
        &["SET", "{t}after", "1"],
        &["EXEC"],
    ] {
        batch.extend(request(args));
    }
    raw.send(&batch).await;
    raw.expect(
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n-ERR value is not an integer or out of range\r\n+OK\r\n",
    )
    .await;
    assert_eq!(q(c, &["GET", "{t}after"]).await, bulk("1"));

    // What a transaction may carry is bounded like one write, checked while queueing.
    let half = "v".repeat(MAX_VALUE_BYTES / 2);
    assert_eq!(q(c, &["MULTI"]).await, Value::Okay);
    q(c, &["SET", "{t}big1", &half]).await;
    let over = e(c, &["SET", "{t}big2", &half]).await;
    assert!(over.contains("--max-value-bytes"), "{over}");
    assert_eq!(
        e(c, &["EXEC"]).await,
        "EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(q(c, &["EXISTS", "{t}big1"]).await, Value::Int(0));

    // DISCARD drops the queue.
    assert_eq!(q(c, &["MULTI"]).await, Value::Okay);
    q(c, &["SET", "{t}dropped", "1"]).await;
    assert_eq!(q(c, &["DISCARD"]).await, Value::Okay);
    assert_eq!(q(c, &["GET", "{t}dropped"]).await, Value::Nil);

    // Keys of one transaction must live in one shard, as in Redis Cluster.
    assert_eq!(q(c, &["MULTI"]).await, Value::Okay);
    q(c, &["SET", "foo", "1"]).await;
    q(c, &["SET", "bar", "1"]).await;
    assert!(e(c, &["EXEC"]).await.starts_with("CROSSSLOT"));
    assert_eq!(q(c, &["EXISTS", "foo"]).await, Value::Int(0));
    assert_eq!(q(c, &["EXISTS", "bar"]).await, Value::Int(0));

    // An empty transaction answers an empty array.
    assert_eq!(q(c, &["MULTI"]).await, Value::Okay);
    assert_eq!(q(c, &["EXEC"]).await, Value::Array(vec![]));

    // The redis crate's atomic pipeline (MULTI/EXEC around the commands).
    let (set, total, read, ttl): (String, i64, String, i64) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("{p}a")
        .arg(1)
        .cmd("INCRBY")
        .arg("{p}a")
        .arg(5)
        .cmd("GET")
        .arg("{p}a")
        .cmd("TTL")
        .arg("{p}a")
        .query_async(c)
        .await
        .expect("atomic pipeline");
    assert_eq!(
        (set.as_str(), total, read.as_str(), ttl),
        ("OK", 6, "6", -1)
    );
}

pub async fn watch_makes_exec_conditional(server: Server) {
    let mut watcher = connect(server.addr).await;
    let mut other = connect(server.addr).await;
    let (w, o) = (&mut watcher, &mut other);

    // A watched key changed by another client: EXEC applies nothing and answers null.
    assert_eq!(q(o, &["SET", "{w}k", "first"]).await, Value::Okay);
    assert_eq!(q(w, &["WATCH", "{w}k"]).await, Value::Okay);
    assert_eq!(q(o, &["SET", "{w}k", "second"]).await, Value::Okay);
    assert_eq!(q(w, &["MULTI"]).await, Value::Okay);
    q(w, &["SET", "{w}k", "mine"]).await;
    assert_eq!(q(w, &["EXEC"]).await, Value::Nil);
    assert_eq!(q(o, &["GET", "{w}k"]).await, bulk("second"));

    // EXEC forgets the watch: the same transaction now applies.
    assert_eq!(q(w, &["MULTI"]).await, Value::Okay);
    q(w, &["SET", "{w}k", "mine"]).await;
    assert_eq!(q(w, &["EXEC"]).await, Value::Array(vec![Value::Okay]));

    // Unchanged watched keys, including one that stays absent, let it apply.
    assert_eq!(q(w, &["WATCH", "{w}k", "{w}absent"]).await, Value::Okay);
    assert_eq!(q(w, &["MULTI"]).await, Value::Okay);
    q(w, &["SET", "{w}k", "again"]).await;
    assert_eq!(q(w, &["EXEC"]).await, Value::Array(vec![Value::Okay]));

    // A watched absent key that appears aborts; UNWATCH and DISCARD forget the watch.
    assert_eq!(q(w, &["WATCH", "{w}new"]).await, Value::Okay);
    assert_eq!(q(o, &["SET", "{w}new", "1"]).await, Value::Okay);
    assert_eq!(q(w, &["MULTI"]).await, Value::Okay);
    q(w, &["DEL", "{w}new"]).await;
    assert_eq!(q(w, &["EXEC"]).await, Value::Nil);
    assert_eq!(q(w, &["WATCH", "{w}new"]).await, Value::Okay);
    assert_eq!(q(o, &["SET", "{w}new", "2"]).await, Value::Okay);
    assert_eq!(q(w, &["UNWATCH"]).await, Value::Okay);
    assert_eq!(q(w, &["MULTI"]).await, Value::Okay);
    q(w, &["DEL", "{w}new"]).await;
    assert_eq!(q(w, &["EXEC"]).await, Value::Array(vec![Value::Int(1)]));

    // Optimistic increments from many clients at once: every EXEC that succeeded counted
    // exactly once, none was lost.
    const CLIENTS: usize = 6;
    const EACH: i64 = 10;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let addr = server.addr;
            tokio::spawn(async move {
                let mut con = connect(addr).await;
                let mut done = 0;
                let mut conflicts = 0u64;
                while done < EACH {
                    q(&mut con, &["WATCH", "{w}counter"]).await;
                    let current = match q(&mut con, &["GET", "{w}counter"]).await {
                        Value::Nil => 0,
                        value => text(&value).parse::<i64>().expect("a number"),
                    };
                    q(&mut con, &["MULTI"]).await;
                    q(&mut con, &["SET", "{w}counter", &(current + 1).to_string()]).await;
                    match q(&mut con, &["EXEC"]).await {
                        Value::Nil => conflicts += 1,
                        Value::Array(replies) => {
                            assert_eq!(replies, vec![Value::Okay]);
                            done += 1;
                        }
                        other => panic!("EXEC answered {other:?}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    assert_eq!(
        q(o, &["GET", "{w}counter"]).await,
        bulk(&(CLIENTS as i64 * EACH).to_string())
    );
}

/// MGET reads its keys as of one moment, as in Redis: while transactions move amounts
/// between keys, every MGET of all of them must see the same total.
pub async fn mget_sees_transactions_whole(server: Server) {
    const KEYS: usize = 4;
    const WRITERS: usize = 3;
    const TRANSFERS: usize = 1500;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("{{m}}k{i}")).collect();
    let mut con = connect(server.addr).await;
    let mut open = redis::cmd("MSET");
    for key in &keys {
        open.arg(key).arg(100);
    }
    open.query_async::<()>(&mut con).await.expect("MSET");
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (addr, keys) = (server.addr, keys.clone());
            tokio::spawn(async move {
                let mut con = connect(addr).await;
                for i in 0..TRANSFERS {
                    let (from, to) = (&keys[(w + i) % KEYS], &keys[(w + i + 1) % KEYS]);
                    let _: (i64, i64) = redis::pipe()
                        .atomic()
                        .cmd("DECRBY")
                        .arg(from)
                        .arg(7)
                        .cmd("INCRBY")
                        .arg(to)
                        .arg(7)
                        .query_async(&mut con)
                        .await
                        .expect("transfer");
                }
            })
        })
        .collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (addr, keys, done) = (server.addr, keys.clone(), done.clone());
            tokio::spawn(async move {
                let mut con = connect(addr).await;
                let (mut reads, mut torn) = (0u64, Vec::new());
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let values: Vec<i64> = redis::cmd("MGET")
                        .arg(&keys)
                        .query_async(&mut con)
                        .await
                        .expect("MGET");
                    reads += 1;
                    if values.iter().sum::<i64>() != 100 * KEYS as i64 {
                        torn.push(values);
                    }
                }
                (reads, torn)
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        let (reads, torn) = reader.await.expect("reader");
        assert!(reads > 0, "a reader read nothing");
        assert!(
            torn.is_empty(),
            "{} of {reads} MGETs saw a transfer half done: {:?}",
            torn.len(),
            &torn[..torn.len().min(5)]
        );
    }
}
