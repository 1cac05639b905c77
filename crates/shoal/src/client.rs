//! `shoal get|put|del|scan`: a small command-line client over the Rust client
//! (`shoal-client`, gRPC), which routes each key to its shard's leader by itself.
//!
//! Output is `human` (values raw on stdout, notes on stderr) or `json` (exactly one JSON
//! object on stdout, errors included). Exit codes: 0 success, 1 the node answered "no"
//! (key not found, condition failed), 2 anything else (usage, connection, server errors).

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use shoal_api::http::encoding::bytes_field;
use shoal_client::{ClientConfig, PutOptions, ScanOptions};
use tokio::io::AsyncReadExt;

/// Longest a request may take before the CLI gives up; a node answers or times out well
/// within this, so hitting it means the node is stuck or unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The server's page-size cap; `scan` asks for at most this much per request.
const MAX_PAGE: u64 = 1000;

/// The key-value subcommands; `main` flattens them into the top-level command list.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Print the value of a key (the version goes to stderr).
    #[command(after_help = "Examples:\n  shoal get user:42\n  shoal get user:42 --output json")]
    Get(GetArgs),
    /// Set a key to a value, optionally with a TTL or a condition.
    #[command(
        after_help = "Examples:\n  shoal put greeting hello\n  shoal put session:1 token \
                            --ttl 3600\n  cat photo.jpg | shoal put photo -\n  shoal put counter \
                            8 --if-version 12   (compare-and-set)"
    )]
    Put(PutArgs),
    /// Delete a key, optionally only if it is at a given version.
    #[command(after_help = "Examples:\n  shoal del greeting\n  shoal del lock --if-version 7")]
    Del(DelArgs),
    /// List keys in slot order (not sorted by name), following pages until --limit.
    #[command(
        after_help = "Examples:\n  shoal scan --prefix user: --limit 20\n  shoal scan --all \
                            --output json"
    )]
    Scan(ScanArgs),
}

/// Where the node is and how to print; shared by every subcommand.
#[derive(Debug, Args)]
pub struct Connection {
    /// gRPC address of any shoal node (its --grpc-addr): host:port.
    #[arg(long, env = "SHOAL_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// `human`: values raw on stdout, notes on stderr; `json`: one JSON object on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    #[command(flatten)]
    pub access: crate::client_access::ClientAccessArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key (any bytes your shell can pass).
    pub key: OsString,
    /// Read from any replica without a leadership check: faster, possibly behind.
    #[arg(long)]
    pub stale: bool,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key (any bytes your shell can pass).
    pub key: OsString,
    /// The value; `-` reads it from stdin (for binary data or large values).
    pub value: OsString,
    /// Expire the key this many seconds from now (without it the key never expires).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl: Option<u64>,
    /// Only write if the key is at exactly this version (0: only if it does not exist).
    #[arg(long, value_name = "N", conflicts_with = "if_absent")]
    pub if_version: Option<u64>,
    /// Only write if the key does not exist yet.
    #[arg(long)]
    pub if_absent: bool,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Args)]
pub struct DelArgs {
    /// The key (any bytes your shell can pass).
    pub key: OsString,
    /// Only delete if the key is at exactly this version.
    #[arg(long, value_name = "N")]
    pub if_version: Option<u64>,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Only keys starting with this.
    #[arg(long)]
    pub prefix: Option<OsString>,
    /// Stop after this many keys.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
    /// List every key, however many (instead of --limit).
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,
    /// Continue a previous listing from the cursor it printed.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Read from any replica without a leadership check: faster, possibly behind.
    #[arg(long)]
    pub stale: bool,
    #[command(flatten)]
    pub conn: Connection,
}

/// Runs one key-value subcommand, printing its result or a one-line error.
pub async fn run(cmd: KvCommand) -> ExitCode {
    let format = cmd.connection().output;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut sink = Sink {
        out: &mut out,
        err: &mut err,
        tty: std::io::stdout().is_terminal(),
    };
    let result = execute(cmd, &mut sink).await;
    // A closed pipe (`shoal scan | head`) is the reader's choice, not a failure.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            let _ = match format {
                Format::Human => writeln!(sink.err, "error: {error}"),
                Format::Json => writeln!(sink.out, "{}", error.to_json()),
            };
            ExitCode::from(error.exit_code())
        }
    }
}

impl KvCommand {
    fn connection(&self) -> &Connection {
        match self {
            KvCommand::Get(a) => &a.conn,
            KvCommand::Put(a) => &a.conn,
            KvCommand::Del(a) => &a.conn,
            KvCommand::Scan(a) => &a.conn,
        }
    }
}

/// Where results go: stdout and stderr in production, buffers in tests.
struct Sink<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    /// Whether `out` is a terminal: then a value gets a trailing newline for readability.
    tty: bool,
}

async fn execute(cmd: KvCommand, sink: &mut Sink<'_>) -> Result<(), CliError> {
    let conn = cmd.connection();
    let tls = conn.access.grpc().map_err(CliError::Usage)?;
    let credentials = conn.access.credentials().map_err(CliError::Usage)?;
    let client = Client::connect(&conn.addr, tls, credentials).await?;
    match cmd {
        KvCommand::Get(args) => get(&client, args, sink).await,
        KvCommand::Put(args) => put(&client, args, sink).await,
        KvCommand::Del(args) => del(&client, args, sink).await,
        KvCommand::Scan(args) => scan(&client, args, sink).await,
    }
}

async fn get(client: &Client, args: GetArgs, sink: &mut Sink<'_>) -> Result<(), CliError> {
    let key = args.key.as_encoded_bytes();
    let found = if args.stale {
        client.inner.get_stale(key.to_vec()).await
    } else {
        client.inner.get(key.to_vec()).await
    };
    let Some(found) = found.map_err(|e| client.error(e, Some(key)))? else {
        return Err(client.refused("not_found", "no such key", Some(key), None));
    };
    let value = found.value;
    match args.conn.output {
        Format::Human => {
            sink.out.write_all(&value)?;
            if sink.tty && !value.ends_with(b"\n") {
                sink.out.write_all(b"\n")?;
            }
            sink.out.flush()?;
            let version = found.version;
            match found.expire_at_ms {
                Some(at) => writeln!(sink.err, "(version {version}, expires at {at} unix ms)")?,
                None => writeln!(sink.err, "(version {version})")?,
            }
        }
        Format::Json => {
            let mut fields = bytes_field("value", &value);
            fields.insert("version".into(), json!(found.version));
            fields.insert("expire_at".into(), json!(found.expire_at_ms));
            write_keyed(sink, key, Value::Object(fields))?;
        }
    }
    Ok(())
}

async fn put(client: &Client, args: PutArgs, sink: &mut Sink<'_>) -> Result<(), CliError> {
    let key = args.key.as_encoded_bytes();
    let value = if args.value == "-" {
        let mut buf = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut buf)
            .await
            .map_err(|e| CliError::Usage(format!("cannot read the value from stdin: {e}")))?;
        buf
    } else {
        args.value.as_encoded_bytes().to_vec()
    };
    let mut options = PutOptions::new();
    if let Some(ttl) = args.ttl {
        options = options.ttl(Duration::from_secs(ttl));
    }
    if let Some(version) = args.if_version {
        options = options.if_version(version);
    }
    if args.if_absent {
        options = options.if_absent();
    }
    let version = client
        .inner
        .put_with(key.to_vec(), value, options)
        .await
        .map_err(|e| client.error(e, Some(key)))?;
    match args.conn.output {
        Format::Human => writeln!(sink.out, "OK (version {version})")?,
        Format::Json => write_keyed(sink, key, json!({ "version": version }))?,
    }
    Ok(())
}

async fn del(client: &Client, args: DelArgs, sink: &mut Sink<'_>) -> Result<(), CliError> {
    let key = args.key.as_encoded_bytes();
    let deleted = client.inner.delete_if(key.to_vec(), args.if_version).await;
    if !deleted.map_err(|e| client.error(e, Some(key)))? {
        return Err(client.refused("not_found", "no such key", Some(key), None));
    }
    match args.conn.output {
        Format::Human => writeln!(sink.out, "OK (deleted)")?,
        Format::Json => write_keyed(sink, key, json!({ "deleted": true }))?,
    }
    Ok(())
}

async fn scan(client: &Client, args: ScanArgs, sink: &mut Sink<'_>) -> Result<(), CliError> {
    let limit = if args.all { u64::MAX } else { args.limit };
    let mut cursor = args.cursor.clone();
    let mut listed: u64 = 0;
    let mut items = Vec::new();
    loop {
        let mut options = ScanOptions::new().limit((limit - listed).min(MAX_PAGE) as u32);
        if let Some(prefix) = &args.prefix {
            options = options.prefix(prefix.as_encoded_bytes().to_vec());
        }
        if let Some(cursor) = &cursor {
            options = options.cursor(cursor.clone());
        }
        if args.stale {
            options = options.stale();
        }
        let page = client
            .inner
            .scan_page(&options)
            .await
            .map_err(|e| client.error(e, None))?;
        listed += page.entries.len() as u64;
        let page_items = page.entries.iter().map(|entry| {
            let mut item = bytes_field("key", &entry.key);
            item.insert("version".into(), json!(entry.version));
            item.insert("expire_at".into(), json!(entry.expire_at_ms));
            Value::Object(item)
        });
        match args.conn.output {
            // Printed page by page, so `--all` over many keys starts output at once.
            Format::Human => {
                for item in page_items {
                    writeln!(sink.out, "{}", human_key(&item))?;
                }
                sink.out.flush()?;
            }
            Format::Json => items.extend(page_items),
        }
        cursor = page.next_cursor;
        if cursor.is_none() || listed >= limit {
            break;
        }
    }
    match args.conn.output {
        Format::Human => match &cursor {
            Some(next) => writeln!(
                sink.err,
                "({listed} keys; more remain: raise --limit, use --all, or continue with \
                 --cursor {next})"
            )?,
            None => writeln!(sink.err, "({listed} keys)")?,
        },
        Format::Json => writeln!(
            sink.out,
            "{}",
            json!({ "items": items, "count": listed, "next_cursor": cursor })
        )?,
    }
    Ok(())
}

/// A listed key for humans: as text, or `base64:...` when it is not UTF-8.
fn human_key(item: &Value) -> String {
    match (item["key"].as_str(), item["key_base64"].as_str()) {
        (Some(key), _) => key.to_string(),
        (None, Some(b64)) => format!("base64:{b64}"),
        (None, None) => item.to_string(),
    }
}

/// Prints `{"key": ..., ...fields}` as one line; `fields` is a JSON object.
fn write_keyed(sink: &mut Sink<'_>, key: &[u8], fields: Value) -> Result<(), CliError> {
    let mut object = bytes_field("key", key);
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    writeln!(sink.out, "{}", Value::Object(object))?;
    Ok(())
}

/// The cluster through the Rust client, and the address the user gave, for messages.
struct Client {
    inner: shoal_client::Client,
    addr: String,
}

impl Client {
    async fn connect(
        addr: &str,
        tls: Option<shoal_client::ClientTls>,
        credentials: Option<shoal_client::Credentials>,
    ) -> Result<Self, CliError> {
        let config = ClientConfig {
            request_timeout: REQUEST_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            tls,
            credentials,
            ..ClientConfig::default()
        };
        let inner = shoal_client::Client::connect_with(&[addr], config)
            .await
            .map_err(|e| match e {
                shoal_client::Error::InvalidAddress { addr, reason } => {
                    CliError::Usage(format!("--addr `{addr}`: {reason}, e.g. 127.0.0.1:50051"))
                }
                _ => CliError::Unreachable(addr.to_string()),
            })?;
        Ok(Self {
            inner,
            addr: addr.to_string(),
        })
    }

    /// The client's error as the CLI shows it.
    fn error(&self, err: shoal_client::Error, key: Option<&[u8]>) -> CliError {
        match err {
            shoal_client::Error::Refused {
                code,
                message,
                actual_version,
            } => self.refused(&code, &message, key, actual_version),
            shoal_client::Error::Indeterminate(_) => self.failed("indeterminate", err.to_string()),
            shoal_client::Error::Unavailable(detail) => self.failed(
                "unavailable",
                format!("{detail}; check `shoal cluster status`, then retry"),
            ),
            shoal_client::Error::InvalidAddress { addr, reason } => {
                CliError::Usage(format!("address `{addr}`: {reason}"))
            }
        }
    }

    fn refused(
        &self,
        code: &str,
        message: &str,
        key: Option<&[u8]>,
        actual_version: Option<Option<u64>>,
    ) -> CliError {
        CliError::Refused(Refusal {
            code: code.to_string(),
            line: describe(code, message, key, actual_version, &self.addr),
        })
    }

    fn failed(&self, code: &'static str, detail: String) -> CliError {
        CliError::Failed {
            code,
            addr: self.addr.clone(),
            detail,
        }
    }
}

/// Normalises an HTTP `--addr` (of `shoal bench` and `shoal cluster`) into a base URL:
/// `host:port` gets `http://`, a trailing `/` goes.
pub(crate) fn base_url(addr: &str) -> Result<String, CliError> {
    let trimmed = addr.trim().trim_end_matches('/');
    let usage = |why: &str| {
        CliError::Usage(format!(
            "--addr `{addr}` {why}: pass a node's HTTP address as host:port, e.g. 127.0.0.1:8080"
        ))
    };
    if trimmed.is_empty() {
        return Err(usage("is empty"));
    }
    let tls = crate::client_access::ClientAccessArgs::current().enabled();
    let scheme = if tls { "https" } else { "http" };
    let with_scheme = if trimmed.starts_with("http://") {
        if tls {
            return Err(usage(
                "uses http:// with --tls-ca; use https:// or host:port",
            ));
        }
        trimmed.to_string()
    } else if trimmed.starts_with("https://") {
        if !tls {
            return Err(usage(
                "uses https://: give --tls-ca, the CA that signed the node's certificate",
            ));
        }
        trimmed.to_string()
    } else if trimmed.contains("://") {
        return Err(usage("has a scheme other than http:// or https://"));
    } else {
        format!("{scheme}://{trimmed}")
    };
    let url =
        reqwest::Url::parse(&with_scheme).map_err(|e| usage(&format!("is not valid ({e})")))?;
    if url.path() != "/" || url.query().is_some() {
        return Err(usage("has a path; give only host and port"));
    }
    Ok(with_scheme)
}

/// The line shown for a refusal: the node's message plus the next step, where we know a
/// better one than the message implies.
fn describe(
    code: &str,
    message: &str,
    key: Option<&[u8]>,
    actual_version: Option<Option<u64>>,
    addr: &str,
) -> String {
    let key = key.map(String::from_utf8_lossy).unwrap_or_default();
    let hint = match code {
        // The node's "no such key" says less than naming the key.
        "not_found" => return format!("key `{key}` not found"),
        "version_mismatch" => match actual_version.flatten() {
            Some(version) => format!("re-read the key and retry with --if-version {version}"),
            None => "the key does not exist; use --if-absent to create it".to_string(),
        },
        "key_exists" => {
            return format!("key `{key}` already exists: drop --if-absent to overwrite it");
        }
        "unimplemented" => format!(
            "{addr} does not serve the gRPC API this client expects: check --addr, and that \
             client and node versions match"
        ),
        "no_leader" | "not_leader" | "overloaded" | "shutting_down" | "timeout" => {
            "retry in a moment".to_string()
        }
        "storage" | "internal" => "the node failed: see its logs".to_string(),
        _ => return message.to_string(),
    };
    format!("{message}; {hint}")
}

/// What the node said when it refused a request.
#[derive(Debug)]
pub(crate) struct Refusal {
    code: String,
    /// What the user sees: the node's message and what to do next.
    line: String,
}

/// Everything that can stop a command; `Display` is the one line a human sees.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Bad flags or input.
    Usage(String),
    /// Nothing accepts connections at this address.
    Unreachable(String),
    /// Connected, but the exchange failed: timeout, reset, or an answer that is not shoal's.
    Failed {
        code: &'static str,
        addr: String,
        detail: String,
    },
    /// The node answered with an error.
    Refused(Refusal),
    /// Writing our own output failed.
    Output(std::io::Error),
}

impl From<std::io::Error> for CliError {
    fn from(err: std::io::Error) -> Self {
        CliError::Output(err)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(message) => f.write_str(message),
            CliError::Unreachable(addr) => write!(
                f,
                "cannot reach a shoal node at {addr}: is one running? start one with `shoal \
                 server`, or pass --addr"
            ),
            CliError::Failed { addr, detail, .. } => {
                write!(f, "request to {addr} failed: {detail}")
            }
            CliError::Refused(refusal) => f.write_str(&refusal.line),
            CliError::Output(err) => write!(f, "cannot write output: {err}"),
        }
    }
}

impl CliError {
    /// 1 when the node answered "no" (missing key, failed condition), 2 otherwise.
    fn exit_code(&self) -> u8 {
        const ANSWERED_NO: [&str; 4] =
            ["not_found", "version_mismatch", "key_exists", "key_missing"];
        match self {
            CliError::Refused(r) if ANSWERED_NO.contains(&r.code.as_str()) => 1,
            _ => 2,
        }
    }

    /// The error as the one JSON object `--output json` prints.
    fn to_json(&self) -> Value {
        let code = match self {
            CliError::Usage(_) => "usage",
            CliError::Unreachable(_) => "unreachable",
            CliError::Failed { code, .. } => code,
            CliError::Refused(r) => r.code.as_str(),
            CliError::Output(_) => "output",
        };
        json!({ "error": { "code": code, "message": self.to_string() } })
    }
}

#[cfg(test)]
mod tests;
