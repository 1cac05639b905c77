//! Users and roles on a 3-node cluster, as clients see them: before any user, clients are
//! served without logging in; `shoal user add` makes the first admin and from then on
//! every protocol wants a login; users made through one node log in through another; each
//! role runs its class of commands and is refused the rest with Redis's own strings; a key
//! prefix confines a user; a removed user's open connection loses access at once.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

const ROOT_PASSWORD: &str = "root-secret";

/// One RESP connection, read and written raw, so replies are compared byte for byte with
/// what Redis sends.
struct Raw {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Raw {
    async fn connect(cluster: &Cluster, id: u64) -> Raw {
        let spec = cluster.spec(id);
        let stream = TcpStream::connect((spec.host.as_str(), spec.resp_port))
            .await
            .expect("connect over RESP");
        Raw {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Sends one command and returns its reply, raw.
    async fn call(&mut self, args: &[&str]) -> String {
        self.pipeline(&[args]).await.remove(0)
    }

    /// Sends `commands` in one write and returns their replies, raw.
    async fn pipeline(&mut self, commands: &[&[&str]]) -> Vec<String> {
        let mut request = String::new();
        for args in commands {
            request.push_str(&format!("*{}\r\n", args.len()));
            for arg in *args {
                request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
            }
        }
        self.stream
            .write_all(request.as_bytes())
            .await
            .expect("write");
        let mut replies = Vec::new();
        while replies.len() < commands.len() {
            replies.push(self.reply().await);
        }
        replies
    }

    async fn reply(&mut self) -> String {
        loop {
            if let Some(end) = reply_end(&self.buffer, 0) {
                let reply: Vec<u8> = self.buffer.drain(..end).collect();
                return String::from_utf8_lossy(&reply).into_owned();
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk));
            let n = read.await.expect("a reply in time").expect("read");
            assert!(
                n > 0,
                "closed after {:?}",
                String::from_utf8_lossy(&self.buffer)
            );
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Where the reply starting at `at` ends, if it is all there (RESP2 and RESP3 maps).
fn reply_end(buf: &[u8], at: usize) -> Option<usize> {
    let line = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&buf[at + 1..line]).ok()?;
    let after = line + 2;
    match buf[at] {
        b'$' | b'=' | b'!' => {
            let len: i64 = head.parse().ok()?;
            let end = after + len.max(0) as usize + if len < 0 { 0 } else { 2 };
            (buf.len() >= end).then_some(end)
        }
        b'*' | b'%' | b'~' => {
            let n: i64 = head.parse().ok()?;
            let items = if buf[at] == b'%' { n * 2 } else { n };
            (0..items.max(0)).try_fold(after, |pos, _| reply_end(buf, pos))
        }
        _ => Some(after),
    }
}

/// Runs `shoal user ...` against node `via`, logged in as `login` if given; its stdout,
/// or its stderr as the error.
fn shoal_user(
    cluster: &Cluster,
    via: u64,
    login: Option<(&str, &str)>,
    new_password: Option<&str>,
    args: &[&str],
) -> Result<String, String> {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .arg("user")
        .args(args)
        .args(["--addr", cluster.http_url(via).as_str()])
        .env_remove("SHOAL_USER")
        .env_remove("SHOAL_PASSWORD")
        .env_remove("SHOAL_NEW_PASSWORD");
    if let Some((user, password)) = login {
        command
            .env("SHOAL_USER", user)
            .env("SHOAL_PASSWORD", password);
    }
    if let Some(password) = new_password {
        command.env("SHOAL_NEW_PASSWORD", password);
    }
    let out = command.output().expect("run shoal user");
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Logs in on a new connection to node `id`, polling until that node knows the user (other
/// nodes learn of new users within about a second).
async fn logged_in(cluster: &Cluster, id: u64, user: &str, password: &str) -> Raw {
    poll_until(
        &format!("{user} logs in through node {id}"),
        Duration::from_secs(10),
        || async {
            let mut raw = Raw::connect(cluster, id).await;
            match raw.call(&["AUTH", user, password]).await.as_str() {
                "+OK\r\n" => Ok(raw),
                other => Err(other.to_string()),
            }
        },
    )
    .await
}

/// INFO stats, as text.
async fn raw_info(raw: &mut Raw) -> String {
    raw.call(&["INFO", "stats"]).await
}

const NOAUTH: &str = "-NOAUTH Authentication required.\r\n";
const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
const NO_KEY_ACCESS: &str = "-NOPERM No permissions to access a key\r\n";

fn no_permission(user: &str, command: &str) -> String {
    format!("-NOPERM User {user} has no permissions to run the '{command}' command\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_log_in_on_every_node_and_each_role_runs_only_its_commands() {
    let cluster = Cluster::start(3).await;

    // No users yet: served without logging in, and AUTH behaves as a password-less Redis.
    let mut anonymous = Raw::connect(&cluster, 1).await;
    assert_eq!(anonymous.call(&["SET", "app1:k", "v0"]).await, "+OK\r\n");
    assert_eq!(
        anonymous.call(&["AUTH", "pw"]).await,
        "-ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?\r\n"
    );
    assert_eq!(
        anonymous.call(&["ACL", "WHOAMI"]).await,
        "$7\r\ndefault\r\n"
    );
    let listed = shoal_user(&cluster, 1, None, None, &["list"]).unwrap();
    assert!(listed.contains("no users"), "{listed}");

    // The first user must be an admin; adding it needs no login (this is the node's machine).
    let err = shoal_user(
        &cluster,
        1,
        None,
        Some("x"),
        &["add", "app", "--role", "read"],
    )
    .unwrap_err();
    assert!(err.contains("the first user must be an admin"), "{err}");
    let out = shoal_user(
        &cluster,
        1,
        None,
        Some(ROOT_PASSWORD),
        &["add", "root", "--role", "admin"],
    )
    .unwrap();
    assert_eq!(out, "added user root\n");

    // Now every protocol wants a login, on every node; the open anonymous connection too.
    assert_eq!(anonymous.call(&["GET", "app1:k"]).await, NOAUTH);
    let err = shoal_user(
        &cluster,
        2,
        None,
        Some("x"),
        &["add", "other", "--role", "read"],
    )
    .unwrap_err();
    // Refused by node 2 if it knows of root already, else by the metadata leader.
    assert!(
        err.contains("requires a user name and password") || err.contains("log in as an admin"),
        "{err}"
    );
    poll_until(
        "node 3 wants a login over HTTP",
        Duration::from_secs(10),
        || async {
            match cluster.api().get(3, "app1:k").await {
                Err(e) if e.code == "unauthenticated" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // The admin adds a reader confined to `app1:` and a writer, through node 2.
    let root = Some(("root", ROOT_PASSWORD));
    let generated = shoal_user(
        &cluster,
        2,
        root,
        None,
        &["add", "reader", "--role", "read", "--prefix", "app1:"],
    )
    .unwrap();
    let reader_password = generated
        .lines()
        .find_map(|line| line.strip_prefix("password: "))
        .expect("a generated password is printed")
        .to_string();
    shoal_user(
        &cluster,
        2,
        root,
        Some("writer-secret"),
        &["add", "writer", "--role", "readwrite"],
    )
    .unwrap();
    let err = shoal_user(
        &cluster,
        2,
        root,
        Some("x"),
        &["add", "writer", "--role", "read"],
    )
    .unwrap_err();
    assert!(err.contains("already exists"), "{err}");
    let listed = shoal_user(&cluster, 1, root, None, &["list"]).unwrap();
    assert!(
        listed.contains("reader") && listed.contains("app1:") && listed.contains("readwrite"),
        "{listed}"
    );

    // Wrong and missing passwords, with Redis's strings (on node 3, once it knows writer).
    logged_in(&cluster, 3, "writer", "writer-secret").await;
    let mut raw = Raw::connect(&cluster, 3).await;
    assert_eq!(raw.call(&["AUTH", "writer", "wrong"]).await, WRONGPASS);
    assert_eq!(raw.call(&["AUTH", "nobody", "wrong"]).await, WRONGPASS);
    assert_eq!(raw.call(&["AUTH", "wrong"]).await, WRONGPASS);
    assert_eq!(raw.call(&["PING"]).await, NOAUTH);
    assert!(
        raw.call(&["HELLO", "3"])
            .await
            .starts_with("-NOAUTH HELLO must be called"),
        "HELLO without AUTH before logging in"
    );
    let hello = raw
        .call(&["HELLO", "3", "AUTH", "writer", "writer-secret"])
        .await;
    assert!(
        hello.starts_with('%'),
        "HELLO 3 AUTH answers a RESP3 map: {hello:?}"
    );

    // The writer (logged in through node 3, made through node 2): reads and writes of any
    // key, not what is the admin's.
    let writer = &mut raw;
    assert_eq!(writer.call(&["ACL", "WHOAMI"]).await, "$6\r\nwriter\r\n");
    assert_eq!(writer.call(&["SET", "app1:a", "1"]).await, "+OK\r\n");
    assert_eq!(writer.call(&["SET", "other:b", "2"]).await, "+OK\r\n");
    assert_eq!(writer.call(&["INCR", "app1:n"]).await, ":1\r\n");
    assert_eq!(writer.call(&["GET", "other:b"]).await, "$1\r\n2\r\n");
    assert_eq!(writer.call(&["EXPIRE", "other:b", "100"]).await, ":1\r\n");
    assert_eq!(writer.call(&["MULTI"]).await, "+OK\r\n");
    assert_eq!(writer.call(&["SET", "app1:t", "x"]).await, "+QUEUED\r\n");
    assert_eq!(writer.call(&["GET", "app1:t"]).await, "+QUEUED\r\n");
    assert_eq!(writer.call(&["EXEC"]).await, "*2\r\n+OK\r\n$1\r\nx\r\n");
    assert_eq!(
        writer.call(&["FLUSHALL"]).await,
        no_permission("writer", "flushall")
    );
    assert_eq!(
        writer.call(&["ACL", "LIST"]).await,
        "-NOPERM User writer has no permissions to run the 'acl|list' command\r\n"
    );

    // Pipelined after AUTH, commands run as the user AUTH logs in (and before it, as nobody).
    let mut fresh = Raw::connect(&cluster, 3).await;
    let replies = fresh
        .pipeline(&[
            &["GET", "app1:a"],
            &["AUTH", "writer", "writer-secret"],
            &["SET", "app1:p", "1"],
            &["ACL", "WHOAMI"],
        ])
        .await;
    assert_eq!(replies, [NOAUTH, "+OK\r\n", "+OK\r\n", "$6\r\nwriter\r\n"]);

    // The reader: reads under app1: only; no writes, no listing or counting everything.
    let mut reader = logged_in(&cluster, 1, "reader", &reader_password).await;
    assert_eq!(reader.call(&["GET", "app1:a"]).await, "$1\r\n1\r\n");
    assert_eq!(
        reader.call(&["MGET", "app1:a", "app1:a"]).await,
        "*2\r\n$1\r\n1\r\n$1\r\n1\r\n"
    );
    assert_eq!(reader.call(&["EXISTS", "app1:a"]).await, ":1\r\n");
    assert_eq!(reader.call(&["TTL", "app1:a"]).await, ":-1\r\n");
    let keys = reader.call(&["KEYS", "app1:*"]).await;
    assert!(keys.starts_with("*5\r\n"), "{keys:?}");
    assert_eq!(
        reader.call(&["SET", "app1:a", "2"]).await,
        no_permission("reader", "set")
    );
    assert_eq!(
        reader.call(&["DEL", "app1:a"]).await,
        no_permission("reader", "del")
    );
    assert_eq!(reader.call(&["GET", "other:b"]).await, NO_KEY_ACCESS);
    assert_eq!(
        reader.call(&["MGET", "app1:{x}", "other:{x}"]).await,
        NO_KEY_ACCESS
    );
    assert_eq!(reader.call(&["KEYS", "*"]).await, NO_KEY_ACCESS);
    assert_eq!(reader.call(&["SCAN", "0"]).await, NO_KEY_ACCESS);
    assert_eq!(reader.call(&["DBSIZE"]).await, NO_KEY_ACCESS);
    assert_eq!(reader.call(&["PING"]).await, "+PONG\r\n");
    assert_eq!(
        reader.call(&["FLUSHALL"]).await,
        no_permission("reader", "flushall")
    );
    assert_eq!(reader.call(&["MULTI"]).await, "+OK\r\n");
    assert_eq!(
        reader.call(&["SET", "app1:z", "1"]).await,
        no_permission("reader", "set")
    );
    assert_eq!(
        reader.call(&["EXEC"]).await,
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );

    // Failed logins are counted where they happened (node 3 saw at least the three above).
    let info = raw_info(&mut logged_in(&cluster, 3, "root", ROOT_PASSWORD).await).await;
    let denied: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("acl_access_denied_auth:"))
        .expect("INFO stats counts failed logins")
        .trim()
        .parse()
        .unwrap();
    assert!(denied >= 3, "{denied} failed logins counted");

    // The admin sees everything, and the users as ACL rules.
    let mut admin = logged_in(&cluster, 2, "root", ROOT_PASSWORD).await;
    let rules = [
        "user reader on ~app1:* +@read +@connection",
        "user root on ~* +@all",
        "user writer on ~* +@read +@write +@connection -@dangerous",
    ];
    let expected: String = rules
        .iter()
        .map(|rule| format!("${}\r\n{rule}\r\n", rule.len()))
        .collect();
    assert_eq!(
        admin.call(&["ACL", "LIST"]).await,
        format!("*3\r\n{expected}")
    );
    assert_eq!(admin.call(&["DBSIZE"]).await, ":6\r\n");

    // HTTP basic auth: the same users and rules.
    let api = cluster.api();
    let reader_http = api.as_user("reader", &reader_password);
    assert_eq!(
        reader_http.get(2, "app1:a").await.unwrap().unwrap().value,
        "1"
    );
    let refused = reader_http.put(2, "app1:a", "3").await.unwrap_err();
    assert_eq!(
        (refused.status, refused.code.as_str()),
        (Some(403), "permission_denied")
    );
    let refused = reader_http.get(2, "other:b").await.unwrap_err();
    assert_eq!(refused.status, Some(403));
    let wrong = api
        .as_user("reader", "nope")
        .get(2, "app1:a")
        .await
        .unwrap_err();
    assert_eq!(
        (wrong.status, wrong.code.as_str()),
        (Some(401), "unauthenticated")
    );
    let writer_http = api.as_user("writer", "writer-secret");
    writer_http.put(3, "app1:h", "over http").await.unwrap();
    let refused = writer_http.remove_node(3, 3).await.unwrap_err();
    assert_eq!(refused.status, Some(403));

    // gRPC metadata: the same.
    let view = api.as_user("root", ROOT_PASSWORD).view(1).await.unwrap();
    let grpc = view.nodes[0].grpc_addr.clone();
    let grpc_as = |user: &str, password: &str| {
        let config = shoal_client::ClientConfig {
            credentials: Some(shoal_client::Credentials {
                user: user.to_string(),
                password: password.to_string(),
            }),
            max_attempts: 1,
            ..Default::default()
        };
        let grpc = grpc.clone();
        async move { shoal_client::Client::connect_with(&[grpc.as_str()], config).await }
    };
    let reader_grpc = grpc_as("reader", &reader_password).await.expect("connect");
    let got = reader_grpc.get("app1:h").await.expect("gRPC get");
    assert_eq!(got.map(|v| v.value.to_vec()), Some(b"over http".to_vec()));
    let err = reader_grpc
        .put("app1:h", "x")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("may not write"), "{err}");
    assert!(
        grpc_as("reader", "nope").await.is_err(),
        "a wrong password gets no map"
    );

    // A user changes their own password; the old one stops working.
    shoal_user(
        &cluster,
        1,
        Some(("writer", "writer-secret")),
        Some("writer-new"),
        &["passwd", "writer"],
    )
    .unwrap();
    let err = shoal_user(
        &cluster,
        1,
        Some(("writer", "writer-new")),
        Some("x"),
        &["passwd", "reader"],
    )
    .unwrap_err();
    assert!(err.contains("may not administer"), "{err}");
    logged_in(&cluster, 3, "writer", "writer-new").await;

    // A removed user's open connection loses access (on a node that learns of it later).
    shoal_user(&cluster, 2, root, None, &["remove", "reader"]).unwrap();
    // The reader's node learns of it within a second; until then it still answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = reader.call(&["GET", "app1:a"]).await;
        if reply == NOAUTH {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still served after removal: {reply:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let err = shoal_user(&cluster, 2, root, None, &["remove", "root"]).unwrap_err();
    assert!(err.contains("last admin"), "{err}");
}
