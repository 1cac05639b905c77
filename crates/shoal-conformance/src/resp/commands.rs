//! Scenarios per command family: every command's replies and Redis's error strings.

use super::*;

pub async fn connection_commands(server: Server) {
    let mut con = connect(server.addr).await;
    assert_eq!(
        q(&mut con, &["PING"]).await,
        Value::SimpleString("PONG".into())
    );
    assert_eq!(q(&mut con, &["ping", "hi"]).await, bulk("hi"));
    assert_eq!(
        e(&mut con, &["PING", "a", "b"]).await,
        "ERR wrong number of arguments for 'ping' command"
    );
    assert_eq!(q(&mut con, &["ECHO", "x y"]).await, bulk("x y"));
    assert_eq!(q(&mut con, &["SELECT", "0"]).await, Value::Okay);
    assert_eq!(
        e(&mut con, &["SELECT", "1"]).await,
        "ERR DB index is out of range"
    );
    assert_eq!(
        e(&mut con, &["SELECT", "x"]).await,
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        e(&mut con, &["AUTH", "secret"]).await,
        "ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?"
    );
    assert_eq!(
        q(&mut con, &["AUTH", "default", "anything"]).await,
        Value::Okay
    );
    assert_eq!(
        e(&mut con, &["AUTH", "bob", "pw"]).await,
        "WRONGPASS invalid username-password pair or user is disabled."
    );

    assert_eq!(
        q(&mut con, &["CLIENT", "SETNAME", "app-1"]).await,
        Value::Okay
    );
    assert_eq!(q(&mut con, &["client", "getname"]).await, bulk("app-1"));
    assert_eq!(
        e(&mut con, &["CLIENT", "SETNAME", "a b"]).await,
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    assert_eq!(
        e(&mut con, &["CLIENT", "SETNAME"]).await,
        "ERR wrong number of arguments for 'client|setname' command"
    );
    assert!(int(&q(&mut con, &["CLIENT", "ID"]).await) > 0);
    assert_eq!(
        q(&mut con, &["CLIENT", "SETINFO", "LIB-NAME", "suite"]).await,
        Value::Okay
    );
    assert_eq!(
        e(&mut con, &["CLIENT", "SETINFO", "color", "red"]).await,
        "ERR Unrecognized option 'color'"
    );
    assert_eq!(
        e(&mut con, &["CLIENT", "FLY"]).await,
        "ERR unknown subcommand 'FLY'. Try CLIENT HELP."
    );
    assert!(text(&q(&mut con, &["CLIENT", "INFO"]).await).contains("name=app-1"));

    let hello = array(q(&mut con, &["HELLO", "2"]).await);
    assert_eq!(hello.len(), 14, "{hello:?}");
    let fields: HashMap<String, Value> = hello
        .chunks(2)
        .map(|pair| (text(&pair[0]), pair[1].clone()))
        .collect();
    assert_eq!(fields["server"], bulk("shoal"));
    assert_eq!(fields["proto"], Value::Int(2));
    assert_eq!(fields["mode"], bulk("cluster"));
    assert_eq!(fields["role"], bulk("master"));
    assert_eq!(fields["modules"], Value::Array(vec![]));
    assert!(int(&fields["id"]) > 0);
    assert!(!text(&fields["version"]).is_empty());
    assert_eq!(
        e(&mut con, &["HELLO", "4"]).await,
        "NOPROTO unsupported protocol version"
    );
    assert_eq!(
        e(&mut con, &["HELLO", "x"]).await,
        "ERR Protocol version is not an integer or out of range"
    );
    assert_eq!(
        e(&mut con, &["HELLO", "2", "FOO"]).await,
        "ERR Syntax error in HELLO option 'FOO'"
    );

    assert!(int(&q(&mut con, &["COMMAND", "COUNT"]).await) > 50);
    assert!(array(q(&mut con, &["COMMAND"]).await).len() > 50);
    let info = array(q(&mut con, &["COMMAND", "INFO", "get", "nosuch"]).await);
    assert_eq!(info[1], Value::Nil);
    assert_eq!(array(info[0].clone())[0], bulk("get"));
    assert_eq!(
        array(q(&mut con, &["COMMAND", "DOCS", "set"]).await).len(),
        2
    );

    assert_eq!(
        q(&mut con, &["CONFIG", "GET", "save"]).await,
        Value::Array(vec![bulk("save"), bulk("")])
    );
    assert_eq!(
        q(&mut con, &["CONFIG", "GET", "appendonly"]).await,
        Value::Array(vec![bulk("appendonly"), bulk("no")])
    );
    assert_eq!(
        q(&mut con, &["CONFIG", "GET", "no-such-param"]).await,
        Value::Array(vec![])
    );
    assert_eq!(
        e(&mut con, &["CONFIG", "SET", "maxmemory", "1"]).await,
        "ERR Unknown option or number of arguments for CONFIG SET - 'maxmemory'"
    );

    assert_eq!(
        e(&mut con, &["foo", "a", "b"]).await,
        "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    );
    assert_eq!(
        e(&mut con, &["GET"]).await,
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        e(&mut con, &["set", "k"]).await,
        "ERR wrong number of arguments for 'set' command"
    );

    let info = text(&q(&mut con, &["INFO"]).await);
    for needle in [
        "# Server",
        "redis_version:",
        "redis_mode:cluster",
        "# Clients",
        "connected_clients:",
        "# Cluster",
        "cluster_enabled:1",
        "# Keyspace",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle}: {info}");
    }
    let server_only = text(&q(&mut con, &["INFO", "server"]).await);
    assert!(server_only.contains("# Server") && !server_only.contains("# Keyspace"));
    assert_eq!(int(&q(&mut con, &["DBSIZE"]).await), 0);

    let mut raw = Raw::connect(server.addr).await;
    raw.send(&request(&["QUIT"])).await;
    raw.expect(b"+OK\r\n").await;
    raw.expect_closed().await;
}

pub async fn string_commands(server: Server) {
    let mut con = connect(server.addr).await;
    let c = &mut con;
    assert_eq!(q(c, &["GET", "s"]).await, Value::Nil);
    assert_eq!(q(c, &["SET", "s", "v1"]).await, Value::Okay);
    assert_eq!(q(c, &["GET", "s"]).await, bulk("v1"));
    assert_eq!(q(c, &["SET", "s", "v2", "NX"]).await, Value::Nil);
    assert_eq!(q(c, &["SET", "s", "v2", "XX"]).await, Value::Okay);
    assert_eq!(q(c, &["SET", "absent", "v", "XX"]).await, Value::Nil);
    assert_eq!(q(c, &["SET", "s", "v3", "GET"]).await, bulk("v2"));
    assert_eq!(q(c, &["SET", "fresh", "v", "GET"]).await, Value::Nil);
    assert_eq!(q(c, &["GET", "fresh"]).await, bulk("v"));
    assert_eq!(q(c, &["SET", "fresh", "w", "NX", "GET"]).await, bulk("v"));
    assert_eq!(q(c, &["GET", "fresh"]).await, bulk("v"));

    assert_eq!(q(c, &["SET", "t", "v", "EX", "100"]).await, Value::Okay);
    assert!((99..=100).contains(&int(&q(c, &["TTL", "t"]).await)));
    assert_eq!(q(c, &["SET", "t", "v", "KEEPTTL"]).await, Value::Okay);
    assert!((99..=100).contains(&int(&q(c, &["TTL", "t"]).await)));
    assert_eq!(q(c, &["SET", "t", "v"]).await, Value::Okay);
    assert_eq!(int(&q(c, &["TTL", "t"]).await), -1);
    assert_eq!(q(c, &["SET", "t", "v", "PX", "100000"]).await, Value::Okay);
    assert!((98_000..=100_000).contains(&int(&q(c, &["PTTL", "t"]).await)));
    let at = (now_secs() + 100).to_string();
    assert_eq!(q(c, &["SET", "t", "v", "EXAT", &at]).await, Value::Okay);
    assert!((98..=100).contains(&int(&q(c, &["TTL", "t"]).await)));
    let at_ms = ((now_secs() + 100) * 1000).to_string();
    assert_eq!(q(c, &["SET", "t", "v", "PXAT", &at_ms]).await, Value::Okay);
    assert!((98..=100).contains(&int(&q(c, &["TTL", "t"]).await)));
    assert_eq!(
        e(c, &["SET", "t", "v", "EX", "0"]).await,
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        e(c, &["SET", "t", "v", "PX", "-5"]).await,
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        e(c, &["SET", "t", "v", "EX", "ten"]).await,
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        e(c, &["SET", "t", "v", "NX", "XX"]).await,
        "ERR syntax error"
    );
    assert_eq!(e(c, &["SET", "t", "v", "EX"]).await, "ERR syntax error");
    assert_eq!(
        e(c, &["SET", "t", "v", "EX", "1", "PX", "1"]).await,
        "ERR syntax error"
    );
    assert_eq!(
        e(c, &["SET", "t", "v", "KEEPTTL", "EX", "1"]).await,
        "ERR syntax error"
    );

    assert_eq!(q(c, &["SETNX", "nx", "1"]).await, Value::Int(1));
    assert_eq!(q(c, &["SETNX", "nx", "2"]).await, Value::Int(0));
    assert_eq!(q(c, &["GET", "nx"]).await, bulk("1"));
    assert_eq!(q(c, &["SETEX", "se", "100", "v"]).await, Value::Okay);
    assert!((99..=100).contains(&int(&q(c, &["TTL", "se"]).await)));
    assert_eq!(
        e(c, &["SETEX", "se", "0", "v"]).await,
        "ERR invalid expire time in 'setex' command"
    );
    assert_eq!(q(c, &["PSETEX", "pe", "100000", "v"]).await, Value::Okay);
    assert!(int(&q(c, &["PTTL", "pe"]).await) > 98_000);
    assert_eq!(
        e(c, &["PSETEX", "pe", "-1", "v"]).await,
        "ERR invalid expire time in 'psetex' command"
    );

    assert_eq!(q(c, &["GETSET", "gs", "a"]).await, Value::Nil);
    assert_eq!(q(c, &["GETSET", "gs", "b"]).await, bulk("a"));
    assert_eq!(q(c, &["GETDEL", "gs"]).await, bulk("b"));
    assert_eq!(q(c, &["GETDEL", "gs"]).await, Value::Nil);
    assert_eq!(q(c, &["GET", "gs"]).await, Value::Nil);

    assert_eq!(q(c, &["SET", "ge", "v"]).await, Value::Okay);
    assert_eq!(q(c, &["GETEX", "ge", "EX", "100"]).await, bulk("v"));
    assert!((99..=100).contains(&int(&q(c, &["TTL", "ge"]).await)));
    assert_eq!(q(c, &["GETEX", "ge"]).await, bulk("v"));
    assert!((99..=100).contains(&int(&q(c, &["TTL", "ge"]).await)));
    assert_eq!(q(c, &["GETEX", "ge", "PERSIST"]).await, bulk("v"));
    assert_eq!(int(&q(c, &["TTL", "ge"]).await), -1);
    assert_eq!(q(c, &["GETEX", "nothing"]).await, Value::Nil);
    assert_eq!(
        e(c, &["GETEX", "ge", "EX", "0"]).await,
        "ERR invalid expire time in 'getex' command"
    );
    assert_eq!(e(c, &["GETEX", "ge", "KEEPTTL"]).await, "ERR syntax error");

    assert_eq!(q(c, &["MSET", "{m}a", "1", "{m}b", "2"]).await, Value::Okay);
    assert_eq!(
        q(c, &["MGET", "{m}a", "{m}b", "{m}c"]).await,
        Value::Array(vec![bulk("1"), bulk("2"), Value::Nil])
    );
    assert_eq!(
        e(c, &["MSET", "{m}a", "1", "{m}b"]).await,
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(
        q(c, &["MSETNX", "{m}a", "9", "{m}z", "9"]).await,
        Value::Int(0)
    );
    assert_eq!(q(c, &["GET", "{m}z"]).await, Value::Nil);
    assert_eq!(
        q(c, &["MSETNX", "{m}y", "1", "{m}z", "2"]).await,
        Value::Int(1)
    );
    assert_eq!(q(c, &["GET", "{m}z"]).await, bulk("2"));

    assert_eq!(q(c, &["INCR", "n"]).await, Value::Int(1));
    assert_eq!(q(c, &["INCRBY", "n", "10"]).await, Value::Int(11));
    assert_eq!(q(c, &["DECR", "n"]).await, Value::Int(10));
    assert_eq!(q(c, &["DECRBY", "n", "3"]).await, Value::Int(7));
    assert_eq!(
        e(c, &["INCRBY", "n", "x"]).await,
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        e(c, &["INCR", "s"]).await,
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        q(c, &["SET", "big", "9223372036854775807"]).await,
        Value::Okay
    );
    assert_eq!(
        e(c, &["INCR", "big"]).await,
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        e(c, &["DECRBY", "n", "-9223372036854775808"]).await,
        "ERR decrement would overflow"
    );
    assert_eq!(q(c, &["INCRBYFLOAT", "f", "10.5"]).await, bulk("10.5"));
    assert_eq!(q(c, &["INCRBYFLOAT", "f", "-0.5"]).await, bulk("10"));
    assert_eq!(
        e(c, &["INCRBYFLOAT", "f", "x"]).await,
        "ERR value is not a valid float"
    );

    assert_eq!(q(c, &["APPEND", "ap", "he"]).await, Value::Int(2));
    assert_eq!(q(c, &["APPEND", "ap", "llo"]).await, Value::Int(5));
    assert_eq!(q(c, &["GET", "ap"]).await, bulk("hello"));
    assert_eq!(q(c, &["STRLEN", "ap"]).await, Value::Int(5));
    assert_eq!(q(c, &["STRLEN", "nothing"]).await, Value::Int(0));
    assert_eq!(q(c, &["GETRANGE", "ap", "0", "1"]).await, bulk("he"));
    assert_eq!(q(c, &["GETRANGE", "ap", "-3", "-1"]).await, bulk("llo"));
    assert_eq!(q(c, &["GETRANGE", "nothing", "0", "-1"]).await, bulk(""));
    assert_eq!(
        e(c, &["GETRANGE", "ap", "a", "1"]).await,
        "ERR value is not an integer or out of range"
    );
    assert_eq!(q(c, &["SETRANGE", "ap", "7", "x"]).await, Value::Int(8));
    assert_eq!(q(c, &["GET", "ap"]).await, bulk("hello\0\0x"));
    assert_eq!(
        e(c, &["SETRANGE", "ap", "-1", "x"]).await,
        "ERR offset is out of range"
    );
    assert_eq!(
        e(c, &["SETRANGE", "ap", &MAX_VALUE_BYTES.to_string(), "x"]).await,
        format!(
            "ERR value is {} bytes, over the value size limit of {MAX_VALUE_BYTES} bytes (--max-value-bytes)",
            MAX_VALUE_BYTES + 1
        )
    );
}

pub async fn key_commands(server: Server) {
    let mut con = connect(server.addr).await;
    let c = &mut con;
    assert_eq!(q(c, &["MSET", "{k}a", "1", "{k}b", "2"]).await, Value::Okay);
    assert_eq!(
        q(c, &["EXISTS", "{k}a", "{k}b", "{k}a", "{k}none"]).await,
        Value::Int(3)
    );
    assert_eq!(q(c, &["EXISTS", "{k}a"]).await, Value::Int(1));
    assert_eq!(q(c, &["TOUCH", "{k}a", "{k}none"]).await, Value::Int(1));
    assert_eq!(
        q(c, &["DEL", "{k}a", "{k}b", "{k}none"]).await,
        Value::Int(2)
    );
    assert_eq!(q(c, &["EXISTS", "{k}a"]).await, Value::Int(0));
    assert_eq!(q(c, &["SET", "{k}c", "1"]).await, Value::Okay);
    assert_eq!(q(c, &["UNLINK", "{k}c", "{k}none"]).await, Value::Int(1));

    assert_eq!(q(c, &["SET", "e", "v"]).await, Value::Okay);
    assert_eq!(q(c, &["EXPIRE", "e", "100"]).await, Value::Int(1));
    assert!((99..=100).contains(&int(&q(c, &["TTL", "e"]).await)));
    assert_eq!(q(c, &["PEXPIRE", "e", "200000"]).await, Value::Int(1));
    assert!((198_000..=200_000).contains(&int(&q(c, &["PTTL", "e"]).await)));
    let at = now_secs() + 300;
    assert_eq!(
        q(c, &["EXPIREAT", "e", &at.to_string()]).await,
        Value::Int(1)
    );
    assert_eq!(q(c, &["EXPIRETIME", "e"]).await, Value::Int(at as i64));
    assert_eq!(
        q(c, &["PEXPIREAT", "e", &(at * 1000 + 5).to_string()]).await,
        Value::Int(1)
    );
    assert_eq!(
        q(c, &["PEXPIRETIME", "e"]).await,
        Value::Int(at as i64 * 1000 + 5)
    );
    assert_eq!(q(c, &["EXPIRE", "missing", "10"]).await, Value::Int(0));
    assert_eq!(
        e(c, &["EXPIRE", "e", "x"]).await,
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        e(c, &["EXPIRE", "e", "10", "FOO"]).await,
        "ERR Unsupported option FOO"
    );
    assert_eq!(
        e(c, &["EXPIRE", "e", "10", "NX", "XX"]).await,
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        e(c, &["EXPIRE", "e", "10", "GT", "LT"]).await,
        "ERR GT and LT options at the same time are not compatible"
    );
    // NX / XX / GT / LT, as Redis 7: a key without an expiry never expires, so GT never
    // sets one and LT always does. `e` expires at PEXPIREAT `at`*1000+5 here.
    assert_eq!(q(c, &["EXPIRE", "e", "10", "NX"]).await, Value::Int(0));
    assert_eq!(q(c, &["EXPIRE", "e", "1000", "GT"]).await, Value::Int(1));
    assert!((999..=1000).contains(&int(&q(c, &["TTL", "e"]).await)));
    assert_eq!(q(c, &["EXPIRE", "e", "500", "GT"]).await, Value::Int(0));
    assert_eq!(q(c, &["EXPIRE", "e", "2000", "LT"]).await, Value::Int(0));
    assert_eq!(
        q(c, &["EXPIRE", "e", "400", "XX", "LT"]).await,
        Value::Int(1)
    );
    assert!((399..=400).contains(&int(&q(c, &["TTL", "e"]).await)));
    assert_eq!(q(c, &["SET", "nottl", "v"]).await, Value::Okay);
    assert_eq!(q(c, &["EXPIRE", "nottl", "100", "XX"]).await, Value::Int(0));
    assert_eq!(q(c, &["EXPIRE", "nottl", "100", "GT"]).await, Value::Int(0));
    assert_eq!(
        q(c, &["EXPIRE", "nottl", "100", "XX", "LT"]).await,
        Value::Int(0)
    );
    assert_eq!(q(c, &["TTL", "nottl"]).await, Value::Int(-1));
    assert_eq!(
        q(c, &["PEXPIRE", "nottl", "100000", "LT"]).await,
        Value::Int(1)
    );
    assert_eq!(q(c, &["PERSIST", "nottl"]).await, Value::Int(1));
    assert_eq!(q(c, &["EXPIRE", "nottl", "100", "NX"]).await, Value::Int(1));
    assert_eq!(
        q(c, &["EXPIRE", "missing", "100", "LT"]).await,
        Value::Int(0)
    );
    // A condition that holds with a time in the past deletes the key.
    assert_eq!(q(c, &["EXPIREAT", "nottl", "1", "LT"]).await, Value::Int(1));
    assert_eq!(q(c, &["EXISTS", "nottl"]).await, Value::Int(0));
    assert_eq!(
        e(c, &["EXPIRE", "e", "9223372036854775807"]).await,
        "ERR invalid expire time in 'expire' command"
    );
    assert_eq!(q(c, &["PERSIST", "e"]).await, Value::Int(1));
    assert_eq!(q(c, &["TTL", "e"]).await, Value::Int(-1));
    assert_eq!(q(c, &["PTTL", "e"]).await, Value::Int(-1));
    assert_eq!(q(c, &["EXPIRETIME", "e"]).await, Value::Int(-1));
    assert_eq!(q(c, &["PERSIST", "e"]).await, Value::Int(0));
    assert_eq!(q(c, &["TTL", "missing"]).await, Value::Int(-2));
    assert_eq!(q(c, &["PTTL", "missing"]).await, Value::Int(-2));
    assert_eq!(q(c, &["EXPIRE", "e", "-1"]).await, Value::Int(1));
    assert_eq!(q(c, &["EXISTS", "e"]).await, Value::Int(0));
    assert_eq!(q(c, &["SET", "soon", "v", "PX", "50"]).await, Value::Okay);
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(q(c, &["GET", "soon"]).await, Value::Nil);

    assert_eq!(q(c, &["SET", "t", "v"]).await, Value::Okay);
    assert_eq!(
        q(c, &["TYPE", "t"]).await,
        Value::SimpleString("string".into())
    );
    assert_eq!(
        q(c, &["TYPE", "missing"]).await,
        Value::SimpleString("none".into())
    );

    // OBJECT answers what Redis would for the same string values.
    assert_eq!(q(c, &["SET", "o-int", "12345"]).await, Value::Okay);
    assert_eq!(q(c, &["SET", "o-lead", "012"]).await, Value::Okay);
    assert_eq!(q(c, &["SET", "o-raw", &"x".repeat(45)]).await, Value::Okay);
    assert_eq!(q(c, &["OBJECT", "ENCODING", "o-int"]).await, bulk("int"));
    assert_eq!(
        q(c, &["OBJECT", "encoding", "o-lead"]).await,
        bulk("embstr")
    );
    assert_eq!(q(c, &["OBJECT", "ENCODING", "t"]).await, bulk("embstr"));
    assert_eq!(q(c, &["OBJECT", "ENCODING", "o-raw"]).await, bulk("raw"));
    assert_eq!(q(c, &["OBJECT", "ENCODING", "missing"]).await, Value::Nil);
    assert_eq!(q(c, &["OBJECT", "REFCOUNT", "o-int"]).await, Value::Int(1));
    assert!(
        e(c, &["OBJECT", "IDLETIME", "o-int"])
            .await
            .contains("does not track key access times")
    );
    assert_eq!(
        e(c, &["OBJECT", "NOPE", "o-int"]).await,
        "ERR unknown subcommand 'NOPE'. Try OBJECT HELP."
    );
    assert_eq!(
        e(c, &["OBJECT", "ENCODING"]).await,
        "ERR wrong number of arguments for 'object|encoding' command"
    );
    assert!(matches!(q(c, &["OBJECT", "HELP"]).await, Value::Array(lines) if lines.len() > 4));

    assert_eq!(q(c, &["SET", "{r}a", "1", "EX", "100"]).await, Value::Okay);
    assert_eq!(q(c, &["RENAME", "{r}a", "{r}b"]).await, Value::Okay);
    assert_eq!(q(c, &["GET", "{r}b"]).await, bulk("1"));
    assert!(
        int(&q(c, &["TTL", "{r}b"]).await) > 0,
        "RENAME keeps the expiry"
    );
    assert_eq!(e(c, &["RENAME", "{r}a", "{r}b"]).await, "ERR no such key");
    assert_eq!(q(c, &["RENAMENX", "{r}b", "{r}c"]).await, Value::Int(1));
    assert_eq!(q(c, &["SET", "{r}d", "2"]).await, Value::Okay);
    assert_eq!(q(c, &["RENAMENX", "{r}c", "{r}d"]).await, Value::Int(0));
    assert_eq!(q(c, &["GET", "{r}d"]).await, bulk("2"));

    assert!(matches!(q(c, &["RANDOMKEY"]).await, Value::BulkString(_)));
}

pub async fn multi_key_commands_stay_in_one_shard(server: Server) {
    let mut con = connect(server.addr).await;
    const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
    for args in [
        &["MGET", "foo", "bar"][..],
        &["MSET", "foo", "1", "bar", "2"],
        &["MSETNX", "foo", "1", "bar", "2"],
        &["DEL", "foo", "bar"],
        &["UNLINK", "foo", "bar"],
        &["EXISTS", "foo", "bar"],
        &["RENAME", "foo", "bar"],
        &["RENAMENX", "foo", "bar"],
    ] {
        assert_eq!(e(&mut con, args).await, CROSSSLOT, "{args:?}");
    }
    // Hash tags put keys together.
    assert_eq!(
        q(&mut con, &["MSET", "{foo}1", "a", "{foo}2", "b"]).await,
        Value::Okay
    );
    assert_eq!(
        q(&mut con, &["DEL", "{foo}1", "{foo}2"]).await,
        Value::Int(2)
    );
}

pub async fn scan_and_keys(server: Server) {
    let mut con = connect(server.addr).await;
    let mut all = BTreeSet::new();
    let mut pipe = redis::pipe();
    for i in 0..120 {
        let key = format!("key:{i}");
        pipe.cmd("SET").arg(&key).arg(i).ignore();
        all.insert(key);
    }
    for i in 0..10 {
        let key = format!("other:{i}");
        pipe.cmd("SET").arg(&key).arg(i).ignore();
        all.insert(key);
    }
    pipe.query_async::<()>(&mut con).await.expect("pipeline");
    assert_eq!(q(&mut con, &["DBSIZE"]).await, Value::Int(130));

    let scan_all = async |con: &mut MultiplexedConnection, extra: &[&str]| {
        let mut seen = BTreeSet::new();
        let mut cursor = "0".to_string();
        for _ in 0..10_000 {
            let mut args = vec!["SCAN", cursor.as_str()];
            args.extend_from_slice(extra);
            let reply = array(q(con, &args).await);
            let next = text(&reply[0]);
            for key in array(reply[1].clone()) {
                seen.insert(text(&key));
            }
            if next == "0" {
                return seen;
            }
            cursor = next;
        }
        panic!("SCAN never finished");
    };
    assert_eq!(scan_all(&mut con, &["COUNT", "7"]).await, all);
    assert_eq!(scan_all(&mut con, &[]).await, all);
    let ones: BTreeSet<String> = all
        .iter()
        .filter(|k| k.starts_with("key:1"))
        .cloned()
        .collect();
    assert_eq!(
        scan_all(&mut con, &["MATCH", "key:1*", "COUNT", "5"]).await,
        ones
    );
    let tens: BTreeSet<String> = all
        .iter()
        .filter(|k| k.len() == 6 && k.starts_with("key:"))
        .cloned()
        .collect();
    assert_eq!(
        scan_all(&mut con, &["MATCH", "key:??", "TYPE", "string"]).await,
        tens
    );
    assert_eq!(
        q(&mut con, &["SCAN", "0", "TYPE", "hash"]).await,
        Value::Array(vec![bulk("0"), Value::Array(vec![])])
    );
    assert_eq!(
        e(&mut con, &["SCAN", "0", "TYPE", "blob"]).await,
        "ERR unknown type name 'blob'"
    );
    assert_eq!(e(&mut con, &["SCAN", "x"]).await, "ERR invalid cursor");
    assert_eq!(
        e(&mut con, &["SCAN", "0", "COUNT", "0"]).await,
        "ERR syntax error"
    );
    assert_eq!(
        e(&mut con, &["SCAN", "0", "COUNT"]).await,
        "ERR syntax error"
    );
    assert_eq!(
        e(&mut con, &["SCAN", "0", "FOO", "bar"]).await,
        "ERR syntax error"
    );

    let keys: BTreeSet<String> = array(q(&mut con, &["KEYS", "other:*"]).await)
        .iter()
        .map(text)
        .collect();
    assert_eq!(
        keys,
        all.iter()
            .filter(|k| k.starts_with("other:"))
            .cloned()
            .collect()
    );
    assert_eq!(array(q(&mut con, &["KEYS", "other:[0-2]"]).await).len(), 3);
    let too_many = e(&mut con, &["KEYS", "*"]).await;
    assert!(
        too_many.starts_with(&format!("ERR KEYS matched more than {MAX_KEYS_REPLY} keys"))
            && too_many.contains("SCAN"),
        "{too_many}"
    );
    let info = text(&q(&mut con, &["INFO", "keyspace"]).await);
    assert!(info.contains("db0:keys=130,expires=0,avg_ttl=0"), "{info}");
}

pub async fn flushall(server: Server) {
    let mut con = connect(server.addr).await;
    for key in ["foo", "bar", "hello", "{x}1", "{x}2"] {
        assert_eq!(q(&mut con, &["SET", key, "v"]).await, Value::Okay);
    }
    assert_eq!(q(&mut con, &["FLUSHALL"]).await, Value::Okay);
    assert_eq!(q(&mut con, &["DBSIZE"]).await, Value::Int(0));
    assert_eq!(q(&mut con, &["RANDOMKEY"]).await, Value::Nil);
    assert_eq!(e(&mut con, &["FLUSHALL", "NOW"]).await, "ERR syntax error");
    // In one pipeline, FLUSHALL deletes what came before it and nothing after it.
    let replies: Vec<Value> = redis::pipe()
        .cmd("SET")
        .arg("before")
        .arg("1")
        .cmd("FLUSHDB")
        .arg("SYNC")
        .cmd("SET")
        .arg("after")
        .arg("1")
        .cmd("GET")
        .arg("before")
        .cmd("GET")
        .arg("after")
        .query_async(&mut con)
        .await
        .expect("pipeline");
    assert_eq!(
        replies,
        vec![Value::Okay, Value::Okay, Value::Okay, Value::Nil, bulk("1")]
    );
}

pub async fn flushall_disabled(server: Server) {
    let mut con = connect(server.addr).await;
    assert_eq!(q(&mut con, &["SET", "k", "v"]).await, Value::Okay);
    assert_eq!(
        e(&mut con, &["FLUSHALL"]).await,
        "ERR FLUSHALL is disabled on this node: start the node with --allow-flush to enable it"
    );
    assert!(
        e(&mut con, &["FLUSHDB", "ASYNC"])
            .await
            .starts_with("ERR FLUSHDB is disabled")
    );
    assert_eq!(q(&mut con, &["GET", "k"]).await, bulk("v"));
}

pub async fn cluster_commands(server: Server) {
    let mut con = connect(server.addr).await;
    assert_eq!(
        q(&mut con, &["CLUSTER", "KEYSLOT", "foo"]).await,
        Value::Int(FOO_SLOT)
    );
    let id = text(&q(&mut con, &["CLUSTER", "MYID"]).await);
    assert!(
        id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let info = text(&q(&mut con, &["CLUSTER", "INFO"]).await);
    assert!(
        info.contains("cluster_state:ok\r\n") && info.contains("cluster_slots_assigned:16384\r\n"),
        "{info}"
    );
    assert!(info.contains("cluster_known_nodes:1\r\n"), "{info}");

    let slots = array(q(&mut con, &["CLUSTER", "SLOTS"]).await);
    assert_eq!(slots.len(), SHARDS as usize);
    let mut next = 0;
    for entry in slots {
        let entry = array(entry);
        assert_eq!(int(&entry[0]), next);
        next = int(&entry[1]) + 1;
        let master = array(entry[2].clone());
        assert_eq!(text(&master[0]), server.addr.ip().to_string());
        assert_eq!(int(&master[1]), i64::from(server.addr.port()));
        assert_eq!(text(&master[2]), id);
    }
    assert_eq!(next, 16384);
    assert_eq!(
        array(q(&mut con, &["CLUSTER", "SHARDS"]).await).len(),
        SHARDS as usize
    );
    let nodes = text(&q(&mut con, &["CLUSTER", "NODES"]).await);
    assert!(
        nodes.starts_with(&format!("{id} {}@", server.addr)),
        "{nodes}"
    );
    assert!(
        nodes.contains("myself,master") && nodes.contains(" 0-4095"),
        "{nodes}"
    );
    assert_eq!(
        e(&mut con, &["CLUSTER", "RESET"]).await,
        "ERR unknown subcommand 'RESET'. Try CLUSTER HELP."
    );

    assert_eq!(q(&mut con, &["READONLY"]).await, Value::Okay);
    assert_eq!(q(&mut con, &["SET", "r", "1"]).await, Value::Okay);
    assert_eq!(q(&mut con, &["READWRITE"]).await, Value::Okay);
    assert_eq!(q(&mut con, &["GET", "r"]).await, bulk("1"));
    assert_eq!(q(&mut con, &["ASKING"]).await, Value::Okay);
}
