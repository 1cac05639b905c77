//! `/v1/users`: the cluster's users, for admins (`shoal user add|remove|passwd|list`).
//!
//! - `GET /v1/users`: `{"users": [{"name", "role", "prefix"}]}` (never the hashes).
//! - `POST /v1/users` with `{"name", "password", "role", "prefix"?}`: creates a user. While
//!   the cluster has none, an anonymous client (on this machine, if TLS is on) may create
//!   the first one, which must be an admin: how a cluster gets its first user.
//! - `PUT /v1/users/{name}` with any of `{"password", "role", "prefix"}` (`""` clears the
//!   prefix): changes a user. A user may change their own password without being admin.
//! - `DELETE /v1/users/{name}`: removes a user (never the last admin).
//!
//! Each answers the users after the change; this node's logins see it at once, the other
//! nodes' within a second (`crate::auth::REFRESH_INTERVAL`).

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_cluster::users::{StoredUser, UserWrite};
use shoal_core::Error;
use shoal_core::auth::{Access, Role};

use super::AppState;
use super::auth::{Anonymous, Caller};
use super::error::ApiError;
use crate::auth::hash_password;

/// Longest password accepted (argon2 takes any length; this bounds the work per login).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest key prefix a user may be confined to.
pub const MAX_PREFIX_BYTES: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    name: String,
    password: String,
    role: Role,
    #[serde(default)]
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserChange {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    prefix: Option<String>,
}

fn invalid(message: String) -> ApiError {
    Error::Invalid(message).into()
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| invalid(format!("expected {expected}: {e}")))
}

async fn hashed(password: String) -> Result<String, ApiError> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid(format!(
            "a password is 1 to {MAX_PASSWORD_BYTES} bytes; this one is {}",
            password.len()
        )));
    }
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::from(Error::Internal(format!("hashing failed: {e}"))))?
        .map_err(|e| ApiError::from(Error::Internal(e)))
}

fn prefix(prefix: Option<String>) -> Result<Option<Bytes>, ApiError> {
    match prefix {
        Some(p) if p.len() > MAX_PREFIX_BYTES => Err(invalid(format!(
            "a key prefix is at most {MAX_PREFIX_BYTES} bytes"
        ))),
        Some(p) if !p.is_empty() => Ok(Some(Bytes::from(p))),
        _ => Ok(None),
    }
}

/// The users as answered to clients: no hashes.
fn listing(state: &AppState, users: Vec<StoredUser>) -> Json<Value> {
    let shown: Vec<Value> = users
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "role": u.role,
                "prefix": u.prefix.as_deref().map(String::from_utf8_lossy),
            })
        })
        .collect();
    state.config.auth.set_users(users);
    Json(json!({ "users": shown }))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Admin)?;
    let users = state.backend.users().await?;
    Ok(listing(&state, users))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    grant: Option<axum::Extension<shoal_core::auth::Grant>>,
    anonymous: Option<axum::Extension<Anonymous>>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    if let Some(grant) = grant {
        Caller(grant.0).require(Access::Admin)?;
    }
    // Without credentials only the first user may be added, and the metadata leader is the
    // judge of "first" (this node may not have heard of a user added a moment ago).
    let mode = match anonymous {
        Some(_) => UserWrite::CreateFirst,
        None => UserWrite::Create,
    };
    let new: NewUser = body(
        &bytes,
        r#"{"name": "...", "password": "...", "role": "read|readwrite|admin", "prefix": "..."}"#,
    )?;
    shoal_cluster::users::validate_name(&new.name)?;
    let user = StoredUser {
        name: new.name,
        role: new.role,
        prefix: prefix(new.prefix)?,
        hash: hashed(new.password).await?,
    };
    let users = state.backend.put_user(user, mode).await?;
    Ok(listing(&state, users))
}

/// Only a logged-in user may change or remove users: an anonymous caller is served only
/// while this node knows of no user, and then there is none to change.
fn logged_in(anonymous: Option<axum::Extension<Anonymous>>) -> Result<(), ApiError> {
    match anonymous {
        Some(_) => Err(Error::Unauthenticated("log in as an admin to change users".into()).into()),
        None => Ok(()),
    }
}

pub(crate) async fn change(
    State(state): State<AppState>,
    caller: Caller,
    anonymous: Option<axum::Extension<Anonymous>>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    logged_in(anonymous)?;
    let change: UserChange = body(
        &bytes,
        r#"{"password": "...", "role": "read|readwrite|admin", "prefix": "..."} (any of them)"#,
    )?;
    let own_password = caller.0.user == name && change.role.is_none() && change.prefix.is_none();
    if !own_password {
        caller.require(Access::Admin)?;
    }
    let users = state.backend.users().await?;
    let Some(mut user) = users.into_iter().find(|u| u.name == name) else {
        return Err(invalid(format!("no user named {name}")));
    };
    if let Some(role) = change.role {
        user.role = role;
    }
    if change.prefix.is_some() {
        user.prefix = prefix(change.prefix)?;
    }
    if let Some(password) = change.password {
        user.hash = hashed(password).await?;
    }
    let users = state.backend.put_user(user, UserWrite::Update).await?;
    Ok(listing(&state, users))
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    anonymous: Option<axum::Extension<Anonymous>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    logged_in(anonymous)?;
    caller.require(Access::Admin)?;
    let users = state.backend.remove_user(name).await?;
    Ok(listing(&state, users))
}
