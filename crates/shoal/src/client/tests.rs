use clap::{CommandFactory, Parser};

use super::*;

#[derive(Debug, Parser)]
struct TestCli {
    #[command(subcommand)]
    command: KvCommand,
}

/// Parses a command line given as one string, split on spaces.
fn parse(line: &str) -> Result<KvCommand, clap::Error> {
    let args = std::iter::once("shoal").chain(line.split(' '));
    TestCli::try_parse_from(args).map(|cli| cli.command)
}

#[test]
fn command_definitions_are_valid() {
    TestCli::command().debug_assert();
}

#[test]
fn parses_flags() {
    let Ok(KvCommand::Put(put)) = parse("put k v --ttl 5 --if-version 3 --addr h:1") else {
        panic!("not a put");
    };
    assert_eq!(
        (put.ttl, put.if_version, put.if_absent),
        (Some(5), Some(3), false)
    );
    assert_eq!(put.conn.addr, "h:1");
    let Ok(KvCommand::Scan(scan)) = parse("scan --output json") else {
        panic!("not a scan");
    };
    assert_eq!(
        (scan.limit, scan.all, scan.conn.output),
        (100, false, Format::Json)
    );
}

#[test]
fn refuses_contradictory_or_invalid_flags() {
    for line in [
        "put k v --if-version 1 --if-absent",
        "put k v --ttl 0",
        "scan --limit 0",
        "scan --limit 5 --all",
        "get k --output yaml",
        "get",
    ] {
        assert!(parse(line).is_err(), "{line}");
    }
}

#[test]
fn normalises_addresses() {
    assert_eq!(base_url("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
    assert_eq!(base_url("http://node-1:80/").unwrap(), "http://node-1:80");
    assert_eq!(base_url(" localhost:9 ").unwrap(), "http://localhost:9");
    for bad in ["", "https://x:1", "ftp://x:1", "x:1/v1", "exa mple:1"] {
        let err = base_url(bad).unwrap_err().to_string();
        assert!(err.starts_with(&format!("--addr `{bad}`")), "{err}");
        assert!(err.contains("e.g. 127.0.0.1:8080"), "{err}");
    }
}

/// The line and exit code for a refusal with this code and message.
fn refused(code: &str, message: &str, actual: Option<u64>) -> (String, u8) {
    let line = describe(code, message, Some(b"k"), Some(actual), "h:1");
    let err = CliError::Refused(Refusal {
        code: code.into(),
        line,
    });
    assert_eq!(err.to_json()["error"]["code"], code);
    (err.to_string(), err.exit_code())
}

#[test]
fn refusals_say_what_to_do_and_exit_accordingly() {
    let line = |s: &str| s.to_string();
    assert_eq!(
        refused("not_found", "no such key", None),
        (line("key `k` not found"), 1)
    );
    assert_eq!(
        refused(
            "version_mismatch",
            "version mismatch: expected 3, key is at 5",
            Some(5)
        ),
        (
            line(
                "version mismatch: expected 3, key is at 5; re-read the key and retry with --if-version 5"
            ),
            1
        )
    );
    assert_eq!(
        refused("key_exists", "key already exists", None),
        (
            line("key `k` already exists: drop --if-absent to overwrite it"),
            1
        )
    );
    assert_eq!(
        refused("no_leader", "no leader", None),
        (line("no leader; retry in a moment"), 2)
    );
    assert_eq!(refused("invalid_argument", "bad", None), (line("bad"), 2));
}

/// Runs a command line (`{a}` is replaced by the node address), capturing its output.
async fn cli(line: &str, addr: &str) -> (Result<(), CliError>, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut sink = Sink {
        out: &mut out,
        err: &mut err,
        tty: false,
    };
    let command = parse(&line.replace("{a}", addr)).unwrap();
    let result = execute(command, &mut sink).await;
    (
        result,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

async fn ok(line: &str, addr: &str) -> (String, String) {
    let (result, out, err) = cli(line, addr).await;
    result.unwrap_or_else(|e| panic!("{line}: {e}"));
    (out, err)
}

async fn fails(line: &str, addr: &str) -> CliError {
    cli(line, addr).await.0.expect_err(line)
}

#[tokio::test]
async fn unreachable_node_is_a_clear_error() {
    // A port nothing listens on: bind one, note it, close it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = fails("get k --addr {a}", &addr).await;
    assert_eq!(err.exit_code(), 2);
    let expected = format!(
        "cannot reach a shoal node at {addr}: is one running? start one with `shoal server`, \
         or pass --addr"
    );
    assert_eq!(err.to_string(), expected);
    assert_eq!(err.to_json()["error"]["code"], "unreachable");
}

/// The commands against a real in-process node.
#[tokio::test]
async fn commands_against_a_real_node() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = &listener.local_addr().unwrap().to_string();
    let node = shoal_cluster::Node::start(shoal_cluster::NodeConfig {
        id: 1,
        data_dir: dir.path().to_path_buf(),
        shards: 2,
        resp_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        grpc_addr: a.clone(),
        limits: Default::default(),
        allow_flush: false,
        max_keys_reply: 1000,
        cluster: Default::default(),
    })
    .await
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = shoal_api::grpc::serve(listener, node.clone(), Default::default(), async {
        let _ = stopped.await;
    });
    let server = tokio::spawn(serve);

    let (out, _) = ok("put greeting hello --addr {a}", a).await;
    let version = out
        .strip_prefix("OK (version ")
        .and_then(|r| r.strip_suffix(")\n"));
    let version: u64 = version
        .unwrap_or_else(|| panic!("{out:?}"))
        .parse()
        .unwrap();
    let (out, err) = ok("get greeting --addr {a}", a).await;
    assert_eq!(
        (out.as_str(), err),
        ("hello", format!("(version {version})\n"))
    );
    let (out, _) = ok("get greeting --addr {a} --output json", a).await;
    let expected =
        json!({"key": "greeting", "value": "hello", "version": version, "expire_at": null});
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), expected);

    assert_eq!(
        fails("put greeting x --if-absent --addr {a}", a)
            .await
            .exit_code(),
        1
    );
    let err = fails(
        &format!("put greeting x --if-version {} --addr {{a}}", version - 1),
        a,
    )
    .await;
    assert_eq!(err.exit_code(), 1);
    assert!(
        err.to_string().contains(&format!("--if-version {version}")),
        "{err}"
    );

    for i in 0..25 {
        ok(&format!("put user:{i:02} v --ttl 600 --addr {{a}}"), a).await;
    }
    let (out, err) = ok("scan --prefix user: --limit 10 --addr {a}", a).await;
    assert_eq!(out.lines().count(), 10);
    assert!(
        err.contains("more remain") && err.contains("--cursor "),
        "{err}"
    );
    let (out, _) = ok("scan --prefix user: --all --addr {a} --output json", a).await;
    let listing: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (listing["count"].as_u64(), listing["next_cursor"].is_null()),
        (Some(25), true)
    );
    assert!(listing["items"][0]["expire_at"].is_u64());

    assert_eq!(ok("del greeting --addr {a}", a).await.0, "OK (deleted)\n");
    let err = fails("del greeting --addr {a}", a).await;
    assert_eq!(
        (err.to_string().as_str(), err.exit_code()),
        ("key `greeting` not found", 1)
    );
    assert_eq!(fails("get greeting --addr {a}", a).await.exit_code(), 1);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    node.shutdown().await;
}
