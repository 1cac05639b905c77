//! `shoal user add|passwd|remove|list`: the cluster's users, over any node's HTTP API
//! (`/v1/users`). Adding users needs an admin login (`--user` with SHOAL_PASSWORD), except
//! the first user, which must be an admin and may be added without one from the node's own
//! machine.
//!
//! A new password comes from SHOAL_NEW_PASSWORD or `--new-password-file`; without either,
//! a random one is made and printed once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use rand::Rng;
use serde_json::{Value, json};

use crate::client::Format;
use crate::cluster_cmd::{http_client, unreachable};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user. The first user of a cluster must be an admin; from then on every
    /// client must log in.
    #[command(
        after_help = "Examples:\n  shoal user add root --role admin\n  SHOAL_USER=root SHOAL_PASSWORD=... shoal user add app1 --role readwrite --prefix app1:"
    )]
    Add(AddArgs),
    /// Change a user's password (any user may change their own), role or key prefix.
    Passwd(PasswdArgs),
    /// Remove a user (never the last admin). Their open connections lose access at once.
    Remove(NameArgs),
    /// List the users with their roles and key prefixes.
    List(CommonArgs),
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// HTTP address of any node: host:port, http://host:port or https://host:port.
    #[arg(long, env = "SHOAL_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// `human`: sentences and tables; `json`: the node's answer.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    #[command(flatten)]
    pub access: crate::client_access::ClientAccessArgs,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The user's name.
    pub name: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The new user's name: 1 to 64 letters, digits, `_`, `-`, `.` or `@`.
    pub name: String,
    /// `read`: reads only; `readwrite`: reads and writes of keys; `admin`: everything,
    /// including FLUSHALL, cluster changes and users.
    #[arg(long)]
    pub role: shoal_core::auth::Role,
    /// Confine the user to keys starting with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// A file holding the new password (its first line); else SHOAL_NEW_PASSWORD; else a
    /// random one is made and printed.
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// The user's name.
    pub name: String,
    /// Change the role too (admins only).
    #[arg(long)]
    pub role: Option<shoal_core::auth::Role>,
    /// Change the key prefix too (admins only); `""` removes it.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Keep the password; change only --role or --prefix.
    #[arg(long, conflicts_with = "new_password_file")]
    pub keep_password: bool,
    /// A file holding the new password (its first line); else SHOAL_NEW_PASSWORD; else a
    /// random one is made and printed.
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Characters of generated passwords: no look-alikes, nothing a shell or URL treats
/// specially. 24 of them carry about 138 bits.
const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const GENERATED_LENGTH: usize = 24;

/// The new password, and whether it was generated (then it is printed).
fn new_password(file: Option<&PathBuf>) -> Result<(String, bool), String> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read --new-password-file {}: {e}", file.display()))?;
        return Ok((text.lines().next().unwrap_or_default().to_string(), false));
    }
    if let Ok(password) = std::env::var("SHOAL_NEW_PASSWORD") {
        return Ok((password, false));
    }
    Ok((random_password(), true))
}

/// A new random password.
pub fn random_password() -> String {
    let mut rng = rand::rng();
    (0..GENERATED_LENGTH)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub async fn run(cmd: UserCommand) -> ExitCode {
    let common = match &cmd {
        UserCommand::Add(a) => &a.common,
        UserCommand::Passwd(a) => &a.common,
        UserCommand::Remove(a) => &a.common,
        UserCommand::List(a) => a,
    };
    common.access.apply();
    let output = common.output;
    match execute(&cmd).await {
        Ok(lines) => {
            match output {
                Format::Json => println!("{}", lines.json),
                Format::Human => print!("{}", lines.human),
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            match output {
                Format::Json => println!("{}", json!({ "error": { "message": message } })),
                Format::Human => eprintln!("error: {message}"),
            }
            ExitCode::from(1)
        }
    }
}

struct Answer {
    human: String,
    json: Value,
}

async fn execute(cmd: &UserCommand) -> Result<Answer, String> {
    let (addr, method, path, body, generated) = match cmd {
        UserCommand::Add(a) => {
            let (password, generated) = new_password(a.new_password_file.as_ref())?;
            let body = json!({
                "name": a.name,
                "password": password,
                "role": a.role,
                "prefix": a.prefix,
            });
            let shown = generated.then_some(password);
            (
                &a.common.addr,
                "POST",
                "/v1/users".to_string(),
                Some(body),
                shown,
            )
        }
        UserCommand::Passwd(a) => {
            let mut body = json!({});
            let mut shown = None;
            if !a.keep_password {
                let (password, generated) = new_password(a.new_password_file.as_ref())?;
                body["password"] = json!(password);
                shown = generated.then_some(password);
            }
            if let Some(role) = a.role {
                body["role"] = json!(role);
            }
            if let Some(prefix) = &a.prefix {
                body["prefix"] = json!(prefix);
            }
            let path = format!("/v1/users/{}", a.name);
            (&a.common.addr, "PUT", path, Some(body), shown)
        }
        UserCommand::Remove(a) => {
            let path = format!("/v1/users/{}", a.name);
            (&a.common.addr, "DELETE", path, None, None)
        }
        UserCommand::List(a) => (&a.addr, "GET", "/v1/users".to_string(), None, None),
    };
    let (base, http) = http_client(addr, Duration::from_secs(30))?;
    let url = format!("{base}{path}");
    let request = match method {
        "POST" => http.post(url),
        "PUT" => http.put(url),
        "DELETE" => http.delete(url),
        _ => http.get(url),
    };
    let request = match &body {
        Some(body) => request.json(body),
        None => request,
    };
    let response = request.send().await.map_err(|e| unreachable(addr, e))?;
    let status = response.status();
    let answer: Value = response
        .json()
        .await
        .map_err(|e| format!("{addr} answered {status} without JSON: {e}"))?;
    if !status.is_success() {
        let message = answer["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_string();
        return Err(format!("{addr} refused: {message}"));
    }
    let users = answer["users"].as_array().cloned().unwrap_or_default();
    let mut human = match cmd {
        UserCommand::Add(a) => format!("added user {}\n", a.name),
        UserCommand::Passwd(a) => format!("changed user {}\n", a.name),
        UserCommand::Remove(a) => format!("removed user {}\n", a.name),
        UserCommand::List(_) => table(&users),
    };
    let mut json = answer;
    if let Some(password) = generated {
        human.push_str(&format!(
            "password: {password}\n(shown once: keep it somewhere safe)\n"
        ));
        json["password"] = json!(password);
    }
    Ok(Answer { human, json })
}

fn table(users: &[Value]) -> String {
    let mut out = format!("{:<24} {:<10} {}\n", "NAME", "ROLE", "KEY PREFIX");
    for user in users {
        out.push_str(&format!(
            "{:<24} {:<10} {}\n",
            user["name"].as_str().unwrap_or("?"),
            user["role"].as_str().unwrap_or("?"),
            user["prefix"].as_str().unwrap_or("(any key)"),
        ));
    }
    if users.is_empty() {
        out.push_str("(no users: clients are served without logging in)\n");
    }
    out
}
