//! A 3-node cluster with TLS everywhere (`Cluster::start_tls`): clients with the cluster CA
//! and the admin's password work over RESP, HTTPS and gRPC, and without the password are
//! refused; plaintext clients are told to use TLS; a peer without a
//! certificate from the cluster CA is refused in the handshake and the node says who and
//! why; a node's certificate is replaced on disk and served without a restart; redis-cli
//! speaks to it with `--tls`.

use std::path::Path;
use std::sync::Arc;

use shoal_client::{Client, ClientConfig, ClientTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use harness::LEADER_TIMEOUT;

use super::*;

/// Node `id`'s address for `port` (a spec's field).
fn addr(cluster: &Cluster, port: impl Fn(&NodeSpec) -> u16, id: u64) -> String {
    let spec = cluster.spec(id);
    format!("{}:{}", spec.host, port(&spec))
}

/// What a plaintext client gets back for `request`, read to the end.
async fn plaintext_exchange(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply));
    // A reset after the message is fine: what was read is the answer.
    let _ = read.await.expect("the node answers and closes");
    String::from_utf8_lossy(&reply).into_owned()
}

/// Opens a TLS connection to a peer port as a would-be peer presenting `identity` (or no
/// certificate), sends a byte and reads: the node ends the connection one way or another.
async fn knock_as_peer(addr: &str, ca: &Path, identity: Option<(&Path, &Path)>) {
    let config = shoal_tls::client_config(ca, identity, &[shoal_tls::PEER_ALPN]).expect("config");
    let stream = TcpStream::connect(addr).await.expect("connect");
    let name = shoal_tls::server_name(addr).expect("name");
    let connector = shoal_tls::TlsConnector::from(Arc::new(config));
    // TLS 1.3: the client's handshake may finish before the server checks its certificate;
    // the refusal then arrives as an alert on the first read.
    if let Ok(mut stream) = connector.connect(name, stream).await {
        let _ = stream.write_all(b"x").await;
        let mut buf = [0u8; 64];
        let outcome = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
        let outcome = outcome.expect("the node ends an impostor's connection");
        assert!(
            matches!(outcome, Ok(0) | Err(_)),
            "an impostor peer was answered: {outcome:?}"
        );
    }
}

/// Waits until node `id`'s log has a line with all of `words`.
async fn logged(cluster: &Cluster, id: u64, words: &[&str]) {
    poll_until(
        &format!("node {id} logs {words:?}"),
        Duration::from_secs(10),
        || async {
            let text = cluster.log_text(id);
            match text
                .lines()
                .find(|line| words.iter().all(|w| line.contains(w)))
            {
                Some(_) => Ok(()),
                None => Err("not yet".to_string()),
            }
        },
    )
    .await
}

/// The DER of the first certificate in a PEM file.
fn leaf_der(pem: &Path) -> Vec<u8> {
    shoal_tls::read_certs("--tls-cert", pem).expect("certificate")[0].to_vec()
}

/// The certificate node `addr` presents on a new TLS connection.
async fn served_leaf(addr: &str, ca: &Path) -> Result<Vec<u8>, String> {
    let config = shoal_tls::client_config(ca, None, &[]).map_err(|e| e.to_string())?;
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let stream = shoal_tls::TlsConnector::from(Arc::new(config))
        .connect(shoal_tls::server_name(addr)?, stream)
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = stream.get_ref();
    Ok(session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or("no certificate")?
        .to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_tls_clients_and_refuses_plaintext_and_impostor_peers() {
    let cluster = Cluster::start_tls(3).await;
    let dir = cluster.tls_dir();
    let ca = dir.join("ca.pem");

    // HTTPS, RESP over TLS and gRPC over TLS, each through a different node.
    let api = cluster.api();
    api.put(1, "tls:http", "one").await.expect("put over HTTPS");
    assert_eq!(api.get(3, "tls:http").await.unwrap().unwrap().value, "one");
    assert_eq!(
        cluster
            .resp_tls(2, &["SET", "tls:resp", "two"])
            .await
            .unwrap(),
        "+OK\r\n"
    );
    assert_eq!(
        cluster.resp_tls(3, &["GET", "tls:resp"]).await.unwrap(),
        "$3\r\ntwo\r\n"
    );
    // A reply larger than the socket's buffers: all of it arrives (TLS must be flushed).
    let big = "x".repeat(4 << 20);
    assert_eq!(
        cluster
            .resp_tls(1, &["SET", "tls:big", &big])
            .await
            .unwrap(),
        "+OK\r\n"
    );
    let reply = cluster.resp_tls(1, &["GET", "tls:big"]).await.unwrap();
    assert_eq!(reply, format!("${}\r\n{big}\r\n", big.len()));
    let view = poll_until("every gRPC address in the map", LEADER_TIMEOUT, || async {
        let view = api.view(1).await.map_err(|e| e.to_string())?;
        match view.nodes.iter().all(|n| !n.grpc_addr.is_empty()) {
            true => Ok(view),
            false => Err("not yet".to_string()),
        }
    })
    .await;
    let grpc = view.nodes[0].grpc_addr.clone();
    let (admin, password) = cluster.admin();
    let config = ClientConfig {
        tls: Some(ClientTls::from_files(&ca, None).expect("CA")),
        credentials: Some(shoal_client::Credentials {
            user: admin.to_string(),
            password: password.to_string(),
        }),
        ..ClientConfig::default()
    };
    let client = Client::connect_with(&[grpc.as_str()], config)
        .await
        .expect("connect over gRPC with TLS");
    client.put("tls:grpc", "three").await.expect("gRPC put");
    let got = client.get("tls:resp").await.expect("gRPC get");
    assert_eq!(got.map(|v| v.value.to_vec()), Some(b"two".to_vec()));

    // A TLS client that does not log in is refused, on every protocol.
    assert_eq!(
        cluster
            .resp_tls_anonymous(2, &["GET", "tls:resp"])
            .await
            .unwrap(),
        "-NOAUTH Authentication required.\r\n"
    );
    let anonymous = ClientConfig {
        tls: Some(ClientTls::from_files(&ca, None).expect("CA")),
        max_attempts: 1,
        ..ClientConfig::default()
    };
    assert!(
        Client::connect_with(&[grpc.as_str()], anonymous)
            .await
            .is_err(),
        "an anonymous gRPC client must not get the map"
    );

    // Plaintext clients are refused, and told why in their own protocol.
    let resp =
        plaintext_exchange(&addr(&cluster, |s| s.resp_port, 1), b"*1\r\n$4\r\nPING\r\n").await;
    assert!(
        resp.starts_with("-ERR this node accepts only TLS"),
        "{resp:?}"
    );
    let http = plaintext_exchange(
        &addr(&cluster, |s| s.http_port, 2),
        b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert!(
        http.starts_with("HTTP/1.1 400") && http.contains("tls_required"),
        "{http:?}"
    );
    let plain = ClientConfig {
        max_attempts: 1,
        ..ClientConfig::default()
    };
    assert!(
        Client::connect_with(&[grpc.as_str()], plain).await.is_err(),
        "a plaintext gRPC client must not get the map"
    );

    // Would-be peers: plaintext, no certificate, a self-signed one, one from another CA.
    let peer3 = cluster.spec(3).peer_addr();
    let reply = plaintext_exchange(&peer3, b"\x00\x00\x00\x10 not a tls hello").await;
    assert!(reply.contains("accepts only TLS"), "{reply:?}");
    logged(&cluster, 3, &["refused a peer connection", "plaintext"]).await;

    knock_as_peer(&peer3, &ca, None).await;
    logged(
        &cluster,
        3,
        &["refused a peer connection", "TLS handshake failed"],
    )
    .await;

    let stranger = tempfile::tempdir().expect("temp dir");
    let other_ca = shoal_tls::DevCa::new("another CA").expect("CA");
    let (cert, key) = other_ca
        .issue("node1", &["127.0.0.1"])
        .unwrap()
        .write(stranger.path(), "other")
        .unwrap();
    knock_as_peer(&peer3, &ca, Some((&cert, &key))).await;
    let self_signed = shoal_tls::DevCa::new("node1").expect("CA");
    let (cert, key) = self_signed
        .issue("node1", &["127.0.0.1"])
        .unwrap()
        .write(stranger.path(), "self")
        .unwrap();
    knock_as_peer(&peer3, &ca, Some((&cert, &key))).await;
    logged(
        &cluster,
        3,
        &["refused a peer connection", "invalid peer certificate"],
    )
    .await;

    // Gossip rides the mutual-TLS peer connections: no node listens for it on UDP (the
    // peer port is free on UDP), yet every node hears every other as up with its addresses.
    for id in 1..=3 {
        let peer = cluster.spec(id).peer_addr();
        std::net::UdpSocket::bind(&peer)
            .unwrap_or_else(|e| panic!("node {id} listens on {peer}/udp: {e}"));
    }
    cluster.wait_for_client_addresses().await;

    // None of that disturbed the cluster: a write through node 3 reaches every node.
    api.put(3, "tls:after", "still")
        .await
        .expect("put after the knocks");
    assert_eq!(
        api.get(1, "tls:after").await.unwrap().unwrap().value,
        "still"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let cluster = Cluster::start_tls(3).await;
    let dir = cluster.tls_dir();
    let ca = dir.join("ca.pem");
    let resp1 = addr(&cluster, |s| s.resp_port, 1);
    let before = served_leaf(&resp1, &ca).await.expect("TLS to node 1");
    assert_eq!(before, leaf_der(&dir.join("node1.pem")));

    // Rotate node 1's key and certificate in place (written whole, then renamed).
    cluster
        .tls_authority()
        .issue("node1-rotated", &["127.0.0.1", "localhost"])
        .unwrap()
        .write(&dir, "node1")
        .unwrap();
    let rotated = leaf_der(&dir.join("node1.pem"));
    assert_ne!(before, rotated);
    poll_until(
        "node 1 serves its new certificate",
        Duration::from_secs(30),
        || async {
            match served_leaf(&resp1, &ca).await? == rotated {
                true => Ok(()),
                false => Err("still the old one".to_string()),
            }
        },
    )
    .await;
    logged(&cluster, 1, &["TLS certificate files changed"]).await;

    // Peers accept the new certificate too: a write led anywhere reaches every node, and
    // node 1 keeps its place (its peers reconnect to it with the new certificate).
    let api = cluster.api();
    for i in 0..8 {
        let key = format!("rotated:{i}");
        api.put(1, &key, "v").await.expect("put after rotation");
        assert_eq!(api.get(2, &key).await.unwrap().unwrap().value, "v");
    }

    // redis-cli with --tls, where redis-tools is installed.
    let Ok(out) = std::process::Command::new("redis-cli")
        .arg("--version")
        .output()
    else {
        eprintln!("skipped the redis-cli --tls check: redis-cli is not installed");
        return;
    };
    assert!(out.status.success());
    let port = cluster.spec(2).resp_port.to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(&ca)
            .args(["-h", "127.0.0.1", "-p", &port, "--no-auth-warning"])
            .args(["--user", cluster.admin().0, "--pass", cluster.admin().1])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "tls:cli", "four"]), "OK");
    assert_eq!(cli(&["GET", "tls:cli"]), "four");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_tls_cluster_over_mutual_tls_and_gossips_over_it() {
    let mut cluster = Cluster::start_tls(3).await;
    let id = cluster.add_node().await;
    // The new member is heard, with its addresses, by every node: its join and its gossip
    // both went over mutual TLS (no node listens for gossip on UDP).
    cluster.wait_for_client_addresses().await;
    let view = cluster.api().view(1).await.expect("view");
    assert!(
        view.nodes.iter().any(|n| n.id == id && n.up),
        "node {id} joined and is up: {:?}",
        view.nodes
    );
    assert_eq!(
        cluster
            .resp_tls(id, &["SET", "joined:k", "v"])
            .await
            .unwrap(),
        "+OK\r\n"
    );
    assert_eq!(
        cluster.resp_tls(1, &["GET", "joined:k"]).await.unwrap(),
        "$1\r\nv\r\n"
    );
}
