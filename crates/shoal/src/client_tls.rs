//! TLS for the command-line clients (`shoal get|put|del|scan`, `shoal cluster ...`): the
//! flags, and the one setting a command makes at its start that every request it sends
//! then uses (a cluster command talks to several nodes, all of one cluster).

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct ClientTlsArgs {
    /// The cluster CA (PEM): connect over TLS and check the node's certificate with it.
    /// Needed for a node started with --tls-cert.
    #[arg(long, env = "SHOAL_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) to present, for nodes that ask for one.
    #[arg(long, env = "SHOAL_TLS_CERT", value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(
        long,
        env = "SHOAL_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

static CHOSEN: OnceLock<ClientTlsArgs> = OnceLock::new();

impl ClientTlsArgs {
    /// Makes these the settings of every request this process sends.
    pub fn apply(&self) {
        let _ = CHOSEN.set(self.clone());
    }

    /// The settings in use (none: plaintext).
    pub fn current() -> ClientTlsArgs {
        CHOSEN.get().cloned().unwrap_or_default()
    }

    pub fn enabled(&self) -> bool {
        self.tls_ca.is_some()
    }

    /// For the gRPC client.
    pub fn grpc(&self) -> Result<Option<shoal_client::ClientTls>, String> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        shoal_client::ClientTls::from_files(ca, identity)
            .map(Some)
            .map_err(|e| format!("--tls-ca/--tls-cert: {e}"))
    }

    /// For the HTTP client.
    pub fn rustls(&self) -> Result<Option<shoal_tls::rustls::ClientConfig>, String> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        shoal_tls::client_config(ca, identity, &[b"http/1.1"])
            .map(Some)
            .map_err(|e| e.to_string())
    }
}
