//! A peer connection's byte stream: plain TCP, or TLS over it when the node has a cluster
//! CA (mutual: each end presents a certificate the CA signed).

use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::wire::{HelloReply, encode, write_frame};

/// The first byte of every TLS connection (a handshake record).
pub(super) const TLS_HANDSHAKE: u8 = 0x16;

pub(crate) type PeerStream = Either<TcpStream, Box<tokio_rustls::TlsStream<TcpStream>>>;

/// Over TLS: why the peer's certificate does not fit the peer address `addr` of the node
/// it says it is (`None`: it fits, or the connection is not TLS).
pub(super) fn identity_mismatch(stream: &PeerStream, addr: Option<&str>) -> Option<String> {
    let Either::Right(stream) = stream else {
        return None;
    };
    let Some(addr) = addr else {
        return Some("its peer address is not known here".into());
    };
    let (_, session) = stream.get_ref();
    let Some(cert) = session.peer_certificates().and_then(|c| c.first()) else {
        return Some("it presented no certificate".into());
    };
    shoal_tls::check_peer_identity(cert, addr).err()
}

/// Opens a connection to `addr`, in TLS when `tls` is given.
pub(super) async fn dial(addr: &str, tls: Option<&shoal_tls::Tls>) -> Result<PeerStream, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let Some(connector) = tls.and_then(|tls| tls.peer_connector()) else {
        return Ok(Either::Left(stream));
    };
    let name = shoal_tls::server_name(addr)?;
    let stream = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
    Ok(Either::Right(Box::new(stream.into())))
}

/// Completes the server side of a peer's TLS handshake, when this node requires TLS. A
/// plaintext connection is named as such rather than failing as a garbled handshake.
pub(super) async fn accept(
    stream: TcpStream,
    tls: Option<&shoal_tls::Tls>,
) -> Result<PeerStream, String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let Some(acceptor) = tls.and_then(|tls| tls.acceptor(shoal_tls::Channel::Peer)) else {
        return Ok(Either::Left(stream));
    };
    let mut first = [0u8; 1];
    let mut stream = stream;
    match stream.peek(&mut first).await {
        Ok(0) => return Err("closed before the TLS handshake".into()),
        Ok(_) if first[0] != TLS_HANDSHAKE => {
            let why = "a plaintext connection: this node's peer port accepts only TLS with a \
                       certificate signed by its --tls-ca; start the calling node with --tls-cert, \
                       --tls-key and --tls-ca";
            // A plaintext node reads this as a refused hello, and logs why.
            if let Ok(reply) = encode(&HelloReply::Refused(why.to_string())) {
                let _ = write_frame(&mut stream, &reply).await;
            }
            return Err(why.into());
        }
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    let stream = acceptor
        .accept(stream)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    Ok(Either::Right(Box::new(stream.into())))
}
