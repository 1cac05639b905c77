//! TLS for every shoal channel: the node's certificate, key and cluster CA, loaded from PEM
//! files (`--tls-cert`, `--tls-key`, `--tls-ca`), turned into one rustls configuration per
//! channel, and reloaded when the files change so certificates rotate without a restart.
//!
//! One crypto provider (ring) is used everywhere: every configuration here names it, and
//! [`install_provider`] makes it the process default for the crates that build their own
//! (tonic, reqwest).
//!
//! The channels differ in two ways:
//! - **Client certificates.** The peer channel requires one signed by the cluster CA: a
//!   connection without one, or with one from another CA, fails in the handshake, before
//!   any frame is read. Client channels (RESP, HTTP, gRPC) accept one when a CA is given,
//!   and do not require it.
//! - **ALPN.** gRPC speaks `h2`, HTTP `http/1.1`, the peer transport `shoal-peer`; RESP
//!   names none, as Redis does.

mod pki;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub use pki::{DevCa, Issued};
pub use rustls;
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How often the certificate files are checked for changes. Rotation takes effect for new
/// connections within this; connections already open keep the certificate they began with.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The ALPN protocol of the peer transport: a peer port answers nothing else.
pub const PEER_ALPN: &[u8] = b"shoal-peer";

/// The crypto provider every configuration here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default crypto provider, for crates that build their own
/// rustls configurations. Harmless when one is already installed.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where the node's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The cluster CA (PEM, one or more certificates): peers must present a certificate
    /// it signed, and clients may.
    pub ca: Option<PathBuf>,
}

/// Why TLS material could not be used. Each names the flag whose file is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {flag} {}: {source}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {} holds no {what} in PEM form (a block starting -----BEGIN {what}-----)", path.display())]
    Missing {
        flag: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{flag} {} is not usable: {reason}", path.display())]
    Invalid {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Config(String),
}

/// What a listener or connection carries; decides ALPN and client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Resp,
    Http,
    Grpc,
    Peer,
}

impl Channel {
    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Channel::Resp => Vec::new(),
            Channel::Http => vec![b"http/1.1".to_vec()],
            Channel::Grpc => vec![b"h2".to_vec()],
            Channel::Peer => vec![PEER_ALPN.to_vec()],
        }
    }
}

/// One load of the files: a configuration per channel.
struct Loaded {
    stamp: Stamp,
    resp: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
    grpc: Arc<ServerConfig>,
    /// Present when a CA is: peers must be authenticated.
    peer_server: Option<Arc<ServerConfig>>,
    peer_client: Option<Arc<ClientConfig>>,
}

/// The files' identities (inode, change time, modification time, size) when last loaded:
/// a renewed certificate often has the same size, and a rename changes the inode.
type Stamp = Vec<Option<(u64, i64, i64, SystemTime, u64)>>;

/// The node's TLS state, shared by every listener and the peer transport; cheap to clone.
/// Listeners take the current configuration per connection, so a reload applies to every
/// connection accepted after it.
#[derive(Clone)]
pub struct Tls {
    files: Arc<TlsFiles>,
    loaded: Arc<RwLock<Arc<Loaded>>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Loads the files; errors say which flag's file is wrong and how.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let loaded = load(&files)?;
        Ok(Tls {
            files: Arc::new(files),
            loaded: Arc::new(RwLock::new(Arc::new(loaded))),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether a cluster CA was given (peers can be authenticated).
    pub fn has_ca(&self) -> bool {
        self.files.ca.is_some()
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The server side of `channel` as it is now. `None` for the peer channel without a CA.
    pub fn acceptor(&self, channel: Channel) -> Option<TlsAcceptor> {
        let loaded = self.current();
        let config = match channel {
            Channel::Resp => loaded.resp.clone(),
            Channel::Http => loaded.http.clone(),
            Channel::Grpc => loaded.grpc.clone(),
            Channel::Peer => loaded.peer_server.clone()?,
        };
        Some(TlsAcceptor::from(config))
    }

    /// The client side of the peer channel: presents this node's certificate and checks the
    /// peer's against the CA. `None` without a CA.
    pub fn peer_connector(&self) -> Option<TlsConnector> {
        self.current().peer_client.clone().map(TlsConnector::from)
    }

    /// Loads the files again if any changed since the last load. On an error the previous
    /// configuration stays in use (a half-written file is retried at the next check).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = stamp(&self.files);
        if stamp == self.current().stamp {
            return Ok(false);
        }
        let loaded = load(&self.files)?;
        *self
            .loaded
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(loaded);
        Ok(true)
    }

    /// Checks the files every [`RELOAD_INTERVAL`] until `stop` completes, logging reloads
    /// and files that cannot be used.
    pub async fn watch(self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut failing: Option<String> = None;
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(RELOAD_INTERVAL) => {}
            }
            match self.reload_if_changed() {
                Ok(true) => {
                    failing = None;
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate files changed; new connections use them");
                }
                Ok(false) => {}
                Err(e) => {
                    let message = e.to_string();
                    // Said once per distinct problem, not every interval.
                    if failing.as_deref() != Some(message.as_str()) {
                        tracing::error!(error = %message, "changed TLS files cannot be used; the previous certificate stays in use until they are fixed");
                        failing = Some(message);
                    }
                }
            }
        }
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    [Some(&files.cert), Some(&files.key), files.ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path).ok().and_then(|m| {
                Some((
                    m.ino(),
                    m.ctime(),
                    m.ctime_nsec(),
                    m.modified().ok()?,
                    m.len(),
                ))
            })
        })
        .collect()
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates in a PEM file, in order.
pub fn read_certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            flag,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            flag,
            path: path.to_path_buf(),
            what: "CERTIFICATE",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("--tls-key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Missing {
            flag: "--tls-key",
            path: path.to_path_buf(),
            what: "PRIVATE KEY",
        },
        e => TlsError::Invalid {
            flag: "--tls-key",
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })
}

/// A root store holding every certificate of a CA file.
pub fn read_roots(flag: &'static str, path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(flag, path)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            flag,
            path: path.to_path_buf(),
            reason: format!("not a CA certificate rustls accepts: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    // Stamped before reading: a change while reading is seen at the next check.
    let stamp = stamp(files);
    let provider = provider();
    let chain = read_certs("--tls-cert", &files.cert)?;
    let key = read_key(&files.key)?;
    let certified = Arc::new(
        CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(|e| {
            TlsError::Config(format!(
                "--tls-key {} does not fit --tls-cert {}: {e}",
                files.key.display(),
                files.cert.display()
            ))
        })?,
    );
    let roots = match &files.ca {
        Some(path) => Some(read_roots("--tls-ca", path)?),
        None => None,
    };
    let config_error = |e: rustls::Error| TlsError::Config(format!("TLS configuration: {e}"));
    let verifier_error = |e: rustls::server::VerifierBuilderError| {
        TlsError::Config(format!("--tls-ca cannot verify certificates: {e}"))
    };
    let server = |channel: Channel,
                  require_client_cert: bool|
     -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?;
        let builder = match &roots {
            Some(roots) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
                let verifier = if require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(verifier.build().map_err(verifier_error)?)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(
            rustls::sign::SingleCertAndKey::from(certified.as_ref().clone()),
        ));
        config.alpn_protocols = channel.alpn();
        Ok(Arc::new(config))
    };
    let (peer_server, peer_client) = match &roots {
        Some(roots) => {
            let verifier =
                WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(verifier_error)?;
            let mut client = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(config_error)?
                .with_webpki_verifier(verifier)
                .with_client_auth_cert(chain, key)
                .map_err(config_error)?;
            client.alpn_protocols = Channel::Peer.alpn();
            (Some(server(Channel::Peer, true)?), Some(Arc::new(client)))
        }
        None => (None, None),
    };
    Ok(Loaded {
        stamp,
        resp: server(Channel::Resp, false)?,
        http: server(Channel::Http, false)?,
        grpc: server(Channel::Grpc, false)?,
        peer_server,
        peer_client,
    })
}

/// A client configuration for tools and tests: trusts `ca`, and presents `identity`
/// (certificate and key files) when given.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let roots = read_roots("--tls-ca", ca)?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs("--tls-cert", cert)?, read_key(key)?)
            .map_err(|e| TlsError::Config(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Checks that `cert` (a peer's, already verified against the CA) names the host of
/// `addr`, the peer address the node it claims to be has in the cluster map: a certificate
/// the CA issued to one node cannot speak for another.
pub fn check_peer_identity(cert: &CertificateDer<'_>, addr: &str) -> Result<(), String> {
    let name = server_name(addr)?;
    let parsed = rustls::server::ParsedCertificate::try_from(cert)
        .map_err(|e| format!("its certificate cannot be read: {e}"))?;
    rustls::client::verify_server_name(&parsed, &name)
        .map_err(|e| format!("its certificate is not valid for its peer address {addr} ({e})"))
}

/// The name a certificate must carry to be `addr`'s (`host:port`): its host, an IP address
/// or a DNS name.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{addr}: {host} is not a host name TLS can check ({e})"))
}

#[cfg(test)]
mod tests;
