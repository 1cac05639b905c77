use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

struct Pki {
    dir: tempfile::TempDir,
    ca: DevCa,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test CA").unwrap();
        ca.write(dir.path()).unwrap();
        Pki { dir, ca }
    }

    fn node(&self, stem: &str) -> TlsFiles {
        let (cert, key) = self
            .ca
            .issue(stem, &["127.0.0.1", "localhost"])
            .unwrap()
            .write(self.dir.path(), stem)
            .unwrap();
        TlsFiles {
            cert,
            key,
            ca: Some(self.dir.path().join("ca.pem")),
        }
    }
}

/// Accepts one connection on the peer channel and echoes one line; returns the address.
async fn peer_server(tls: Tls) -> (String, tokio::task::JoinHandle<Result<(), String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let acceptor = tls.acceptor(Channel::Peer).unwrap();
        let mut stream = acceptor.accept(stream).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(&buf).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        Ok(())
    });
    (addr, task)
}

async fn dial(addr: &str, connector: TlsConnector) -> Result<(), String> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut stream = connector
        .connect(server_name(addr)?, stream)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"hello")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(&buf, b"hello");
    Ok(())
}

#[tokio::test]
async fn peers_signed_by_the_cluster_ca_talk_and_others_are_refused_in_the_handshake() {
    let pki = Pki::new();
    let a = Tls::load(pki.node("node1")).unwrap();
    let b = Tls::load(pki.node("node2")).unwrap();
    let (addr, server) = peer_server(a.clone()).await;
    dial(&addr, b.peer_connector().unwrap()).await.unwrap();
    server.await.unwrap().unwrap();

    // A node of another CA that trusts ours: its certificate is refused by the server.
    let other = Pki::new();
    let stranger = other.node("node9");
    let stranger = client_config(
        &pki.dir.path().join("ca.pem"),
        Some((&stranger.cert, &stranger.key)),
        &[PEER_ALPN],
    )
    .unwrap();
    let (addr, server) = peer_server(a.clone()).await;
    let _ = dial(&addr, TlsConnector::from(Arc::new(stranger))).await;
    let refused = server.await.unwrap().unwrap_err();
    assert!(refused.contains("invalid peer certificate"), "{refused}");

    // No client certificate at all: refused too.
    let anonymous = client_config(&pki.dir.path().join("ca.pem"), None, &[PEER_ALPN]).unwrap();
    let (addr, server) = peer_server(a).await;
    let _ = dial(&addr, TlsConnector::from(Arc::new(anonymous))).await;
    let refused = server.await.unwrap().unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections() {
    let pki = Pki::new();
    let files = pki.node("node1");
    let tls = Tls::load(files.clone()).unwrap();
    assert!(!tls.reload_if_changed().unwrap(), "nothing changed yet");
    let before = tls.acceptor(Channel::Resp).unwrap();
    // Rotate: a new key and certificate from the same CA, and a changed size or mtime.
    pki.ca
        .issue(
            "node1-rotated",
            &["127.0.0.1", "localhost", "node1.example"],
        )
        .unwrap()
        .write(pki.dir.path(), "node1")
        .unwrap();
    assert!(tls.reload_if_changed().unwrap());
    let after = tls.acceptor(Channel::Resp).unwrap();
    assert!(!Arc::ptr_eq(before.config(), after.config()));

    // A broken file is refused and the previous configuration stays.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    let err = tls.reload_if_changed().unwrap_err().to_string();
    assert!(err.contains("--tls-cert"), "{err}");
    let kept = tls.acceptor(Channel::Resp).unwrap();
    assert!(Arc::ptr_eq(after.config(), kept.config()));
}

#[test]
fn errors_name_the_flag_and_the_file() {
    let pki = Pki::new();
    let files = pki.node("node1");
    let missing = TlsFiles {
        key: pki.dir.path().join("absent.pem"),
        ..files.clone()
    };
    let err = Tls::load(missing).unwrap_err().to_string();
    assert!(err.starts_with("cannot read --tls-key"), "{err}");

    let other = pki.node("node2");
    let mismatched = TlsFiles {
        key: other.key,
        ..files.clone()
    };
    let err = Tls::load(mismatched).unwrap_err().to_string();
    assert!(err.contains("does not fit --tls-cert"), "{err}");

    let not_pem = TlsFiles {
        ca: Some(files.key.clone()),
        ..files
    };
    let err = Tls::load(not_pem).unwrap_err().to_string();
    assert!(
        err.contains("--tls-ca") && err.contains("CERTIFICATE"),
        "{err}"
    );
}

#[test]
fn server_names_come_from_the_host_part() {
    assert_eq!(
        format!("{:?}", server_name("127.0.0.1:7000").unwrap()),
        format!("{:?}", ServerName::try_from("127.0.0.1").unwrap())
    );
    assert!(server_name("node-1.example:7000").is_ok());
    assert!(server_name("[::1]:7000").is_ok());
}

#[test]
fn a_peer_certificate_must_name_the_claimed_nodes_address() {
    let pki = Pki::new();
    let cert = pki
        .ca
        .issue("node2", &["10.0.0.2", "node2.example"])
        .unwrap();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap();
    assert!(check_peer_identity(&der, "10.0.0.2:7000").is_ok());
    assert!(check_peer_identity(&der, "node2.example:7000").is_ok());
    let err = check_peer_identity(&der, "10.0.0.3:7000").unwrap_err();
    assert!(
        err.contains("not valid for its peer address 10.0.0.3:7000"),
        "{err}"
    );
}
