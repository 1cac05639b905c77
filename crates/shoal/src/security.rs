//! The node's security flags and the rules it starts by: TLS material (`--tls-*`), where a
//! node without TLS may listen (loopback, unless `--insecure-listen-any`), which browser
//! origins may call the HTTP API, and that fault injection never runs beside TLS.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::Args;
use shoal_tls::{Tls, TlsFiles};

#[derive(Args, Debug, Clone)]
pub struct SecurityArgs {
    /// This node's TLS certificate chain (PEM, leaf first). With --tls-key, every listener
    /// (RESP, HTTP, gRPC) accepts only TLS, and peers talk mutual TLS. The files are
    /// checked every 2 s and reloaded when they change: rotate by replacing them.
    #[arg(
        long,
        env = "SHOAL_TLS_CERT",
        requires = "tls_key",
        help_heading = "Security"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "SHOAL_TLS_KEY",
        requires = "tls_cert",
        help_heading = "Security"
    )]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM). Peers must present a certificate it signed (mutual TLS);
    /// clients may, and need it to check this node's certificate. Needed with --tls-cert
    /// whenever the node has peers.
    #[arg(
        long,
        env = "SHOAL_TLS_CA",
        requires = "tls_cert",
        help_heading = "Security"
    )]
    pub tls_ca: Option<PathBuf>,
    /// Without TLS, listen on non-loopback addresses anyway: anyone who can reach the
    /// ports can then read and write every key, and speak for a cluster member.
    #[arg(long, help_heading = "Security")]
    pub insecure_listen_any: bool,
    /// Browser origins (scheme://host[:port]) allowed to call the HTTP API, comma-separated;
    /// `*` allows any. Requests from web pages at other origins are refused.
    #[arg(
        long,
        env = "SHOAL_HTTP_ALLOW_ORIGIN",
        value_delimiter = ',',
        help_heading = "Security"
    )]
    pub http_allow_origin: Vec<String>,
}

/// The addresses a node listens on, by the flag that set each.
pub struct Listening {
    pub addrs: Vec<(&'static str, String)>,
    /// The node talks to peers (it has a --peer-addr).
    pub peers: bool,
    pub fault_injection: bool,
}

impl SecurityArgs {
    /// Loads the TLS material and checks the start rules; errors say which flag to change.
    pub fn check(&self, listening: &Listening) -> Result<Option<Tls>, String> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                Tls::load(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: self.tls_ca.clone(),
                })
                .map_err(|e| e.to_string())?,
            ),
            _ => None,
        };
        if let Some(tls) = &tls {
            if listening.fault_injection {
                return Err(
                    "--fault-injection is for tests and is never allowed with TLS: \
                            drop one of --fault-injection and --tls-cert"
                        .into(),
                );
            }
            if listening.peers && !tls.has_ca() {
                return Err(
                    "peers authenticate each other with mutual TLS: give --tls-ca, \
                            the CA that signed every node's certificate"
                        .into(),
                );
            }
            return Ok(Some(tls.clone()));
        }
        if self.insecure_listen_any {
            return Ok(None);
        }
        for (flag, addr) in &listening.addrs {
            if !is_loopback(addr) {
                return Err(format!(
                    "{flag} {addr} is not a loopback address, and this node has no TLS: anyone \
                     who reaches it could read and write every key. Give --tls-cert, --tls-key \
                     and --tls-ca (see docs/security.md), or accept the risk with \
                     --insecure-listen-any"
                ));
            }
        }
        Ok(None)
    }
}

/// Whether every address `addr` (`host:port`) resolves to is a loopback one.
fn is_loopback(addr: &str) -> bool {
    let resolved: Vec<SocketAddr> = match addr.to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        // Not resolvable: never assumed safe (binding it fails with its own message).
        Err(_) => return false,
    };
    !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SecurityArgs {
        SecurityArgs {
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            insecure_listen_any: false,
            http_allow_origin: Vec::new(),
        }
    }

    fn listening(addrs: &[(&'static str, &str)]) -> Listening {
        Listening {
            addrs: addrs.iter().map(|(f, a)| (*f, a.to_string())).collect(),
            peers: false,
            fault_injection: false,
        }
    }

    #[test]
    fn without_tls_only_loopback_unless_insecure() {
        let ok = listening(&[
            ("--resp-addr", "127.0.0.1:6379"),
            ("--peer-addr", "localhost:7000"),
        ]);
        assert!(args().check(&ok).unwrap().is_none());
        let open = listening(&[("--resp-addr", "0.0.0.0:6379")]);
        let err = args().check(&open).unwrap_err();
        assert!(
            err.starts_with("--resp-addr 0.0.0.0:6379 is not a loopback address"),
            "{err}"
        );
        assert!(err.contains("--insecure-listen-any"), "{err}");
        let insecure = SecurityArgs {
            insecure_listen_any: true,
            ..args()
        };
        assert!(insecure.check(&open).unwrap().is_none());
    }

    #[test]
    fn tls_refuses_fault_injection_and_peers_without_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = shoal_tls::DevCa::new("test").unwrap();
        let (cert, key) = ca
            .issue("node", &["127.0.0.1"])
            .unwrap()
            .write(dir.path(), "node")
            .unwrap();
        let with_tls = SecurityArgs {
            tls_cert: Some(cert),
            tls_key: Some(key),
            ..args()
        };
        let mut l = listening(&[("--resp-addr", "0.0.0.0:6379")]);
        assert!(
            with_tls.check(&l).unwrap().is_some(),
            "TLS may listen anywhere"
        );
        l.peers = true;
        assert!(with_tls.check(&l).unwrap_err().contains("give --tls-ca"));
        l.peers = false;
        l.fault_injection = true;
        assert!(
            with_tls
                .check(&l)
                .unwrap_err()
                .contains("--fault-injection")
        );
    }
}
