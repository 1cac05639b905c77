//! How the command-line clients (`shoal get|put|del`, `shoal cluster ...`, `shoal user
//! ...`, `shoal bench`) reach a secured cluster: TLS and the user to log in as. The flags,
//! and the one setting a command makes at its start that every request it sends then uses
//! (a cluster command talks to several nodes, all of one cluster).
//!
//! The password is never a flag (it would show in `ps` and shell history): it comes from
//! `SHOAL_PASSWORD` or `--password-file`.

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct ClientAccessArgs {
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
    /// Log in as this user (the cluster has users once `shoal user add` made one). The
    /// password comes from SHOAL_PASSWORD or --password-file.
    #[arg(long, env = "SHOAL_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// A file holding --user's password (its first line).
    #[arg(long, value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,
}

static CHOSEN: OnceLock<ClientAccessArgs> = OnceLock::new();

impl ClientAccessArgs {
    /// Makes these the settings of every request this process sends.
    pub fn apply(&self) {
        let _ = CHOSEN.set(self.clone());
    }

    /// The settings in use (none: plaintext).
    pub fn current() -> ClientAccessArgs {
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

    /// The user and password to log in with, if --user is given.
    pub fn credentials(&self) -> Result<Option<shoal_client::Credentials>, String> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        let password = match &self.password_file {
            Some(file) => std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read --password-file {}: {e}", file.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            None => std::env::var("SHOAL_PASSWORD").map_err(|_| {
                format!(
                    "--user {user}: set SHOAL_PASSWORD to the password, or give --password-file"
                )
            })?,
        };
        Ok(Some(shoal_client::Credentials {
            user: user.clone(),
            password,
        }))
    }

    /// The `Authorization` header of HTTP requests, if --user is given.
    pub fn http_headers(&self) -> Result<reqwest::header::HeaderMap, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(credentials) = self.credentials()? {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", credentials.user, credentials.password));
            let mut value: reqwest::header::HeaderValue = format!("Basic {encoded}")
                .parse()
                .map_err(|_| "--user: the credentials cannot be sent in a header".to_string())?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(headers)
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
