//! Who may run what: the roles a user can have, an optional key prefix they are confined
//! to, and the check every front end runs on a command before it reaches the node. Pure,
//! so RESP, HTTP and gRPC decide alike and the rules are tested here once.
//!
//! - `read`: reads only (GET, MGET, SCAN, KEYS, EXISTS, TTL, ...).
//! - `readwrite`: reads and writes of keys.
//! - `admin`: everything, including what affects every key or the cluster (FLUSHALL,
//!   cluster changes, user management).
//!
//! A user with a prefix may only touch keys that start with it, and may only list keys
//! under it (a scan whose prefix starts with theirs); counting every key (DBSIZE) or
//! picking any key (RANDOMKEY) is refused to them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::command::{Command, WriteOp};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    ReadWrite,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::ReadWrite => "readwrite",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may do what `access` needs.
    pub fn allows(self, access: Access) -> bool {
        match access {
            Access::Read => true,
            Access::Write => self >= Role::ReadWrite,
            Access::Admin => self == Role::Admin,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "read" => Ok(Role::Read),
            "readwrite" => Ok(Role::ReadWrite),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "unknown role {text:?}: use read, readwrite or admin"
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Admin,
}

impl Access {
    fn verb(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "administer the cluster",
        }
    }
}

/// An authenticated user's rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub user: String,
    pub role: Role,
    /// Keys the user may touch all start with this (`None`: any key).
    pub prefix: Option<Bytes>,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("user {user} (role {role}) may not {}", needs.verb())]
    Role {
        user: String,
        role: Role,
        needs: Access,
    },
    #[error("user {user} may only use keys starting with {}", show(prefix))]
    Key { user: String, prefix: Bytes },
}

impl From<Denied> for crate::Error {
    fn from(denied: Denied) -> Self {
        crate::Error::Denied(denied.to_string())
    }
}

fn show(bytes: &Bytes) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// The keys a command touches, as far as a prefix rule cares.
enum Reach<'a> {
    Keys(Vec<&'a Bytes>),
    /// Keys under this prefix (`None`: every key).
    Under(Option<&'a Bytes>),
}

/// What `command` needs.
pub fn access_of(command: &Command) -> Access {
    match command {
        Command::Get { .. }
        | Command::GetMany { .. }
        | Command::Scan { .. }
        | Command::Count
        | Command::RandomKey => Access::Read,
        Command::Write(op) => write_access(op),
    }
}

fn write_access(op: &WriteOp) -> Access {
    match op {
        // Every key of the shard, and TTL reaping is the leader's own business.
        WriteOp::Flush | WriteOp::Reap { .. } => Access::Admin,
        WriteOp::Read { .. } => Access::Read,
        WriteOp::Transaction { ops, .. } => {
            ops.iter()
                .map(write_access)
                .fold(Access::Read, |a, b| match (a, b) {
                    (Access::Admin, _) | (_, Access::Admin) => Access::Admin,
                    (Access::Write, _) | (_, Access::Write) => Access::Write,
                    _ => Access::Read,
                })
        }
        _ => Access::Write,
    }
}

fn reach(command: &Command) -> Reach<'_> {
    match command {
        Command::Get { key } => Reach::Keys(vec![key]),
        Command::GetMany { keys } => Reach::Keys(keys.iter().collect()),
        Command::Scan { prefix, .. } => Reach::Under(prefix.as_ref()),
        Command::Count | Command::RandomKey => Reach::Under(None),
        Command::Write(op) => {
            let mut keys = Vec::new();
            if !write_keys(op, &mut keys) {
                return Reach::Under(None);
            }
            Reach::Keys(keys)
        }
    }
}

/// Adds the keys `op` touches to `keys`; false if it touches every key.
fn write_keys<'a>(op: &'a WriteOp, keys: &mut Vec<&'a Bytes>) -> bool {
    match op {
        WriteOp::Put { key, .. }
        | WriteOp::IncrBy { key, .. }
        | WriteOp::IncrByFloat { key, .. }
        | WriteOp::Append { key, .. }
        | WriteOp::SetRange { key, .. }
        | WriteOp::SetExpiry { key, .. }
        | WriteOp::GetDel { key }
        | WriteOp::GetEx { key, .. }
        | WriteOp::SetExpiryIf { key, .. } => keys.push(key),
        WriteOp::Delete { keys: k, .. } | WriteOp::Reap { keys: k } | WriteOp::Read { keys: k } => {
            keys.extend(k)
        }
        WriteOp::PutMany { pairs, .. } => keys.extend(pairs.iter().map(|(k, _)| k)),
        WriteOp::Rename { from, to, .. } => keys.extend([from, to]),
        WriteOp::Flush => return false,
        WriteOp::Transaction { ops, watched } => {
            keys.extend(watched.iter().map(|(k, _)| k));
            for op in ops {
                if !write_keys(op, keys) {
                    return false;
                }
            }
        }
    }
    true
}

impl Grant {
    /// May this user do what `access` needs (outside any command: cluster changes, user
    /// management)?
    pub fn check_access(&self, access: Access) -> Result<(), Denied> {
        if self.role.allows(access) {
            Ok(())
        } else {
            Err(Denied::Role {
                user: self.user.clone(),
                role: self.role,
                needs: access,
            })
        }
    }

    /// An admin with no prefix: may run anything, so callers can skip building checks.
    pub fn unrestricted(&self) -> bool {
        self.role == Role::Admin && self.prefix.is_none()
    }

    /// May this user run `command`? Checks the role, then every key against the prefix.
    pub fn check(&self, command: &Command) -> Result<(), Denied> {
        self.check_access(access_of(command))?;
        let Some(prefix) = &self.prefix else {
            return Ok(());
        };
        let inside = match reach(command) {
            Reach::Keys(keys) => keys.iter().all(|k| k.starts_with(prefix)),
            Reach::Under(Some(under)) => under.starts_with(prefix),
            Reach::Under(None) => false,
        };
        if inside {
            Ok(())
        } else {
            Err(Denied::Key {
                user: self.user.clone(),
                prefix: prefix.clone(),
            })
        }
    }

    /// Whether this user may touch `key` (for front ends that check keys themselves, such
    /// as a key named in a URL).
    pub fn may_touch(&self, key: &[u8]) -> bool {
        self.prefix.as_ref().is_none_or(|p| key.starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Condition, Expiry, ScanCursor};

    fn grant(role: Role, prefix: Option<&'static str>) -> Grant {
        Grant {
            user: "alice".into(),
            role,
            prefix: prefix.map(|p| Bytes::from_static(p.as_bytes())),
        }
    }

    fn put(key: &'static str) -> Command {
        Command::Write(WriteOp::Put {
            key: Bytes::from_static(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            condition: Condition::None,
            expiry: Expiry::Keep,
            return_old: false,
        })
    }

    fn get(key: &'static str) -> Command {
        Command::Get {
            key: Bytes::from_static(key.as_bytes()),
        }
    }

    fn scan(prefix: Option<&'static str>) -> Command {
        Command::Scan {
            cursor: ScanCursor::default(),
            limit: 10,
            prefix: prefix.map(|p| Bytes::from_static(p.as_bytes())),
            with_values: false,
        }
    }

    #[test]
    fn roles_are_ordered_read_readwrite_admin() {
        let reader = grant(Role::Read, None);
        assert!(reader.check(&get("k")).is_ok());
        let err = reader.check(&put("k")).unwrap_err();
        assert_eq!(err.to_string(), "user alice (role read) may not write");
        let writer = grant(Role::ReadWrite, None);
        assert!(writer.check(&put("k")).is_ok());
        assert!(writer.check(&Command::Write(WriteOp::Flush)).is_err());
        assert!(
            grant(Role::Admin, None)
                .check(&Command::Write(WriteOp::Flush))
                .is_ok()
        );
        assert_eq!("ReadWrite".parse::<Role>(), Ok(Role::ReadWrite));
        assert!(
            "root"
                .parse::<Role>()
                .unwrap_err()
                .contains("read, readwrite or admin")
        );
    }

    #[test]
    fn a_transaction_needs_what_its_strongest_op_needs() {
        let reads = Command::Write(WriteOp::Transaction {
            ops: vec![WriteOp::Read {
                keys: vec![Bytes::from_static(b"a")],
            }],
            watched: vec![],
        });
        assert_eq!(access_of(&reads), Access::Read);
        let mixed = Command::Write(WriteOp::Transaction {
            ops: vec![
                WriteOp::Read {
                    keys: vec![Bytes::from_static(b"a")],
                },
                WriteOp::Flush,
            ],
            watched: vec![],
        });
        assert_eq!(access_of(&mixed), Access::Admin);
    }

    #[test]
    fn a_prefix_confines_every_key_a_command_touches() {
        let tenant = grant(Role::ReadWrite, Some("app1:"));
        assert!(tenant.check(&put("app1:x")).is_ok());
        let err = tenant.check(&put("app2:x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "user alice may only use keys starting with \"app1:\""
        );
        let rename = Command::Write(WriteOp::Rename {
            from: Bytes::from_static(b"app1:a"),
            to: Bytes::from_static(b"other"),
            if_target_absent: false,
        });
        assert!(tenant.check(&rename).is_err(), "the target counts too");
        let watched = Command::Write(WriteOp::Transaction {
            ops: vec![],
            watched: vec![(Bytes::from_static(b"elsewhere"), None)],
        });
        assert!(tenant.check(&watched).is_err(), "a watched key counts too");
        assert!(tenant.check(&scan(Some("app1:users:"))).is_ok());
        assert!(tenant.check(&scan(Some("app"))).is_err());
        assert!(tenant.check(&scan(None)).is_err());
        assert!(tenant.check(&Command::Count).is_err());
        assert!(tenant.may_touch(b"app1:k") && !tenant.may_touch(b"app2:k"));
    }
}
