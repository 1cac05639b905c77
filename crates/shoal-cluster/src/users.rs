//! Users and their rights, kept in the metadata group (`shoal/users/<name>`) so every node
//! agrees on them. Writes run on the metadata leader (`AdminRequest::PutUser`,
//! `RemoveUser`); every node reads the table from there (`AdminRequest::Users`) and keeps
//! a copy for logins.
//!
//! Only password hashes are stored (PHC strings, made by the front end that took the
//! password); a password never reaches this layer or the log.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_core::auth::Role;
use shoal_core::shard::META_GROUP;
use shoal_core::{Condition, Error, Expiry, WriteOp, WriteReply};
use shoal_storage::Engine;

use crate::group::Group;
use crate::start_error::storage_err;

/// Where users are stored in the metadata group.
pub const USERS_PREFIX: &[u8] = b"shoal/users/";
/// Longest user name.
pub const MAX_NAME_BYTES: usize = 64;
/// Most users a cluster keeps (each node holds them all in memory).
pub const MAX_USERS: usize = 10_000;

/// One user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    pub name: String,
    pub role: Role,
    /// Keys the user may touch all start with this (`None`: any key).
    #[serde(default)]
    pub prefix: Option<Bytes>,
    /// The password's hash, as a PHC string (argon2id).
    pub hash: String,
}

/// Whether a write creates a user or changes an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserWrite {
    Create,
    /// Create, only if the cluster has no user yet: what an anonymous client may do. Checked
    /// on the metadata leader, so a node that has not yet heard of the first user cannot
    /// let an anonymous client add a second.
    CreateFirst,
    Update,
}

/// A user name: 1 to 64 characters of letters, digits, `_`, `-`, `.` and `@`.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "user name {name:?}: use 1 to {MAX_NAME_BYTES} letters, digits, '_', '-', '.' or '@'"
        )))
    }
}

fn key(name: &str) -> Bytes {
    let mut key = USERS_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    Bytes::from(key)
}

/// Every stored user, by name. Reads this node's metadata replica: call on the leader
/// after a read barrier for an up-to-date answer.
pub(crate) fn read_users(engine: &Engine) -> Result<Vec<StoredUser>, Error> {
    let page = engine
        .scan(
            META_GROUP,
            0,
            None,
            1 << 16,
            MAX_USERS + 1,
            Some(USERS_PREFIX),
            crate::clock::now_ms(),
            usize::MAX,
        )
        .map_err(storage_err)?;
    page.entries
        .iter()
        .map(|(key, record)| {
            serde_json::from_slice(&record.value).map_err(|e| {
                Error::Internal(format!(
                    "stored user {} does not decode: {e}",
                    String::from_utf8_lossy(key)
                ))
            })
        })
        .collect()
}

/// Creates or updates `user` (on the metadata leader).
pub(crate) async fn put_user(
    meta: &Group,
    engine: &Engine,
    user: StoredUser,
    mode: UserWrite,
) -> Result<(), Error> {
    validate_name(&user.name)?;
    meta.read_barrier()?
        .await
        .map_err(|_| Error::ShuttingDown)??;
    let users = read_users(engine)?;
    let existing = users.iter().find(|u| u.name == user.name);
    match (mode, existing) {
        (UserWrite::CreateFirst, _) if !users.is_empty() => {
            return Err(Error::Unauthenticated(
                "the cluster has users: log in as an admin to add more (the shoal CLI: --user \
                 with SHOAL_PASSWORD set)"
                    .into(),
            ));
        }
        (UserWrite::Create | UserWrite::CreateFirst, Some(_)) => {
            return Err(Error::Invalid(format!(
                "user {} already exists: change its password with `shoal user passwd`",
                user.name
            )));
        }
        (UserWrite::Update, None) => {
            return Err(Error::Invalid(format!("no user named {}", user.name)));
        }
        (UserWrite::Create | UserWrite::CreateFirst, None)
            if users.is_empty() && user.role != Role::Admin =>
        {
            return Err(Error::Invalid(format!(
                "the first user must be an admin (--role admin), not {}: once a user exists \
                 every client must log in, and only an admin can add users",
                user.role
            )));
        }
        (UserWrite::Create, None) if users.len() >= MAX_USERS => {
            return Err(Error::Invalid(format!(
                "the cluster already has {MAX_USERS} users, the most it keeps"
            )));
        }
        _ => {}
    }
    if let Some(old) = existing
        && old.role == Role::Admin
        && user.role != Role::Admin
        && admins(&users) == 1
    {
        return Err(last_admin(&user.name));
    }
    let condition = match mode {
        UserWrite::Create | UserWrite::CreateFirst => Condition::IfAbsent,
        UserWrite::Update => Condition::IfPresent,
    };
    let op = WriteOp::Put {
        key: key(&user.name),
        value: Bytes::from(serde_json::to_vec(&user).expect("a user serialises")),
        condition,
        expiry: Expiry::Clear,
        return_old: false,
    };
    match meta.propose(op)?.await.map_err(|_| Error::ShuttingDown)?? {
        WriteReply::Put {
            version: Some(_), ..
        } => Ok(()),
        // Someone else created or removed it in between.
        _ => Err(Error::Invalid(format!(
            "user {} changed at the same time; retry",
            user.name
        ))),
    }
}

/// Removes user `name` (on the metadata leader). The last admin cannot be removed.
pub(crate) async fn remove_user(meta: &Group, engine: &Engine, name: &str) -> Result<(), Error> {
    meta.read_barrier()?
        .await
        .map_err(|_| Error::ShuttingDown)??;
    let users = read_users(engine)?;
    let Some(user) = users.iter().find(|u| u.name == name) else {
        return Err(Error::Invalid(format!("no user named {name}")));
    };
    if user.role == Role::Admin && admins(&users) == 1 {
        return Err(last_admin(name));
    }
    let op = WriteOp::Delete {
        keys: vec![key(name)],
        if_version: None,
    };
    meta.propose(op)?.await.map_err(|_| Error::ShuttingDown)??;
    Ok(())
}

fn admins(users: &[StoredUser]) -> usize {
    users.iter().filter(|u| u.role == Role::Admin).count()
}

fn last_admin(name: &str) -> Error {
    Error::Invalid(format!(
        "{name} is the last admin: add another admin first, or nobody could manage users \
         with a password"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        assert!(validate_name("alice").is_ok());
        assert!(validate_name("svc.billing-1@eu").is_ok());
        for bad in ["", "has space", "slash/", &"x".repeat(65)] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.contains("letters, digits"), "{err}");
        }
    }

    #[test]
    fn a_stored_user_reads_back_without_its_prefix_field() {
        let json = r#"{"name":"a","role":"read","hash":"$argon2id$x"}"#;
        let user: StoredUser = serde_json::from_str(json).unwrap();
        assert_eq!(user.role, Role::Read);
        assert_eq!(user.prefix, None);
    }
}
