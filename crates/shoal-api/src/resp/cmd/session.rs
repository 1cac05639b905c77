//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, CLIENT, QUIT, and the per-connection
//! state they read and change.

use std::net::SocketAddr;

use bytes::Bytes;
use shoal_core::Consistency;

use super::args::{self, err, is, syntax_error, unknown_subcommand, wrong_args};
use super::{Ctx, Login, Outcome};
use crate::auth::{ANONYMOUS, Caller};
use crate::resp::frame::{Frame, Protocol};

/// The Redis version shoal reports: the command set and protocol it is compatible with.
/// Clients look at it (in HELLO and INFO) to decide which features to use.
pub(crate) const REDIS_COMPAT_VERSION: &str = "7.2.0";

const AUTH_WITHOUT_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// What one connection remembers between commands.
pub(crate) struct Session {
    pub id: u64,
    pub peer: SocketAddr,
    pub protocol: Protocol,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    /// Linearizable by default; READONLY lets reads be served from any replica.
    pub consistency: Consistency,
    /// Set once the client asks for the slot map (CLUSTER SLOTS/SHARDS/NODES): it routes
    /// by itself, so a key led elsewhere gets `-MOVED` instead of being forwarded.
    pub routes_itself: bool,
    /// The commands queued since MULTI, until EXEC or DISCARD.
    pub transaction: Option<super::Queue>,
    /// Keys WATCHed for the next EXEC (filled in as their reads return).
    pub watched: super::SharedWatched,
    /// Set while MULTI queues a command: `Ctx::submit` records what it would run here.
    pub capture: std::cell::RefCell<Option<super::Capture>>,
    /// Who is logged in on this connection.
    pub caller: Caller,
    /// The command running now (for NOPERM errors).
    pub command: &'static str,
}

impl Session {
    pub fn new(id: u64, peer: SocketAddr) -> Self {
        Self {
            id,
            peer,
            protocol: Protocol::Resp2,
            name: None,
            lib_name: None,
            lib_ver: None,
            consistency: Consistency::Linearizable,
            routes_itself: false,
            transaction: None,
            watched: Default::default(),
            capture: Default::default(),
            caller: Caller::default(),
            command: "",
        }
    }
}

pub(super) fn ping(_: &Ctx, _: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    Ok(Outcome::Now(match args {
        [_] => Frame::simple("PONG"),
        [_, message] => Frame::Bulk(message.clone()),
        _ => wrong_args("ping"),
    }))
}

pub(super) fn echo(_: &Ctx, _: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    Ok(Outcome::Now(Frame::Bulk(args[1].clone())))
}

pub(super) fn quit(_: &Ctx, _: &mut Session, _: &[Bytes]) -> Result<Outcome, Frame> {
    Ok(Outcome::Close(Frame::ok()))
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
pub(super) fn hello(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let mut protocol = session.protocol;
    if let Some(version) = args.get(1) {
        protocol = match crate::resp::frame::parse_int(version) {
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return Err(Frame::error("NOPROTO unsupported protocol version")),
            None => return Err(err("Protocol version is not an integer or out of range")),
        };
    }
    let mut credentials = None;
    let mut name = None;
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        if is(&args[i], "AUTH") && more >= 2 {
            credentials = Some((&args[i + 1], &args[i + 2]));
            i += 3;
        } else if is(&args[i], "SETNAME") && more >= 1 {
            name = Some(&args[i + 1]);
            i += 2;
        } else {
            return Err(err(format!(
                "Syntax error in HELLO option '{}'",
                args::lossy(&args[i])
            )));
        }
    }
    let name = name.map(valid_client_name).transpose()?;
    let then = move |session: &mut Session| {
        if let Some(name) = name {
            session.name = name;
        }
        session.protocol = protocol;
        Frame::Map(vec![
            (Frame::bulk("server"), Frame::bulk("shoal")),
            (Frame::bulk("version"), Frame::bulk(REDIS_COMPAT_VERSION)),
            (Frame::bulk("proto"), Frame::Integer(protocol.version())),
            (Frame::bulk("id"), Frame::Integer(session.id as i64)),
            (Frame::bulk("mode"), Frame::bulk("cluster")),
            (Frame::bulk("role"), Frame::bulk("master")),
            (Frame::bulk("modules"), Frame::Array(vec![])),
        ])
    };
    match credentials {
        Some((user, password)) => login(ctx, session, Some(user), password, Box::new(then)),
        None if session.caller.grant(&ctx.config.auth).is_none() => Err(Frame::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        )),
        None => Ok(Outcome::Now(then(session))),
    }
}

/// Starts checking `password` for `user` (`None`: AUTH with a password only, which Redis
/// checks against its default user).
fn login(
    ctx: &Ctx,
    session: &Session,
    user: Option<&Bytes>,
    password: &Bytes,
    then: Box<dyn FnOnce(&mut Session) -> Frame + Send>,
) -> Result<Outcome, Frame> {
    let auth = ctx.config.auth.clone();
    if !auth.has_users() {
        // Nobody to log in as. Without TLS the node serves anonymous clients and behaves
        // as a Redis whose default user has no password.
        return match user {
            _ if auth.required() => Err(Frame::error(WRONGPASS)),
            None => Err(Frame::error(AUTH_WITHOUT_PASSWORD)),
            Some(user) if user.as_ref() == ANONYMOUS.as_bytes() => Ok(Outcome::Login(Login {
                check: Box::pin(std::future::ready(
                    auth.anonymous()
                        .ok_or(crate::auth::LoginError::WrongPassword),
                )),
                then,
            })),
            Some(_) => Err(Frame::error(WRONGPASS)),
        };
    }
    let user = match user {
        None => ANONYMOUS.to_string(),
        Some(user) => String::from_utf8(user.to_vec()).map_err(|_| Frame::error(WRONGPASS))?,
    };
    let (password, peer) = (password.clone(), session.peer.ip());
    Ok(Outcome::Login(Login {
        check: Box::pin(async move { auth.login(peer, &user, &password).await }),
        then,
    }))
}

pub(super) fn auth(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let (user, password) = match args {
        [_, password] => (None, password),
        [_, user, password] => (Some(user), password),
        _ => return Err(syntax_error()),
    };
    login(ctx, session, user, password, Box::new(|_| Frame::ok()))
}

const ACL_HELP: &[&str] = &[
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "WHOAMI",
    "    Return the current connection username.",
    "USERS",
    "    List all the registered usernames (admin).",
    "LIST",
    "    Show users and their rights in Redis's ACL rule form (admin).",
    "HELP",
    "    Print this help.",
    "Users are managed with `shoal user add|remove|passwd|list`.",
];

/// `ACL WHOAMI | USERS | LIST | HELP`. Users are changed with `shoal user`, not ACL SETUSER:
/// a shoal user has a role and an optional key prefix, not Redis's rule lists.
pub(super) fn acl(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let sub = &args[1];
    if args.len() != 2 {
        return Err(wrong_args(&format!(
            "acl|{}",
            args::lossy(sub).to_ascii_lowercase()
        )));
    }
    let reply = if is(sub, "WHOAMI") {
        Frame::bulk(session.caller.name().to_string())
    } else if is(sub, "HELP") {
        Frame::Array(ACL_HELP.iter().map(|line| Frame::simple(*line)).collect())
    } else if is(sub, "USERS") || is(sub, "LIST") {
        let lower = args::lossy(sub).to_ascii_lowercase();
        match session.caller.cached() {
            Some(grant) if grant.role == shoal_core::auth::Role::Admin => {}
            Some(grant) => {
                return Err(Frame::error(format!(
                    "NOPERM User {} has no permissions to run the 'acl|{lower}' command",
                    grant.user
                )));
            }
            None => return Err(Frame::error(super::NOAUTH)),
        }
        let users = ctx.config.auth.users();
        if is(sub, "USERS") {
            Frame::Array(users.into_iter().map(|u| Frame::bulk(u.name)).collect())
        } else {
            Frame::Array(
                users
                    .iter()
                    .map(|u| Frame::bulk(acl_rule(&u.name, u.role, u.prefix.as_deref())))
                    .collect(),
            )
        }
    } else if is(sub, "SETUSER") || is(sub, "DELUSER") || is(sub, "GETUSER") {
        return Err(err(format!(
            "ACL {} is not supported: manage users with `shoal user add|remove|passwd|list`",
            args::lossy(sub).to_ascii_uppercase()
        )));
    } else {
        return Err(unknown_subcommand(sub, "ACL"));
    };
    Ok(Outcome::Now(reply))
}

/// A user as one ACL LIST line: `user alice on ~app1:* +@read`.
fn acl_rule(name: &str, role: shoal_core::auth::Role, prefix: Option<&[u8]>) -> String {
    use shoal_core::auth::Role;
    let keys = match prefix {
        Some(prefix) => format!("~{}*", args::lossy(prefix)),
        None => "~*".to_string(),
    };
    let commands = match role {
        Role::Read => "+@read +@connection",
        Role::ReadWrite => "+@read +@write +@connection -@dangerous",
        Role::Admin => "+@all",
    };
    format!("user {name} on {keys} {commands}")
}

/// Only database 0 exists: a cluster has one keyspace, as in Redis Cluster.
pub(super) fn select(_: &Ctx, _: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    match args::int(&args[1])? {
        0 => Ok(Outcome::Now(Frame::ok())),
        _ => Err(err("DB index is out of range")),
    }
}

/// A client name as Redis accepts it: printable ASCII without spaces; empty clears it.
fn valid_client_name(name: &Bytes) -> Result<Option<Bytes>, Frame> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(err(
            "Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    // Kept for the connection's life: copied so it does not pin the read buffer.
    Ok((!name.is_empty()).then(|| Bytes::copy_from_slice(name)))
}

const CLIENT_HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "SETINFO <option> <value>",
    "    Set client meta attr. Options are:",
    "    * LIB-NAME: the client lib name.",
    "    * LIB-VER: the client lib version.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "HELP",
    "    Print this help.",
];

pub(super) fn client(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let sub = &args[1];
    let expect = |argc: usize, name: &str| {
        if args.len() == argc {
            Ok(())
        } else {
            Err(wrong_args(&format!("client|{name}")))
        }
    };
    let reply = if is(sub, "SETNAME") {
        expect(3, "setname")?;
        session.name = valid_client_name(&args[2])?;
        Frame::ok()
    } else if is(sub, "GETNAME") {
        expect(2, "getname")?;
        Frame::bulk_or_null(session.name.clone())
    } else if is(sub, "ID") {
        expect(2, "id")?;
        Frame::Integer(session.id as i64)
    } else if is(sub, "SETINFO") {
        expect(4, "setinfo")?;
        let value = Bytes::copy_from_slice(&args[3]);
        if value.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
            return Err(err(format!(
                "{} cannot contain spaces, newlines or special characters.",
                args::lossy(&args[2]).to_ascii_lowercase()
            )));
        }
        if is(&args[2], "LIB-NAME") {
            session.lib_name = Some(value);
        } else if is(&args[2], "LIB-VER") {
            session.lib_ver = Some(value);
        } else {
            return Err(err(format!(
                "Unrecognized option '{}'",
                args::lossy(&args[2])
            )));
        }
        Frame::ok()
    } else if is(sub, "INFO") {
        expect(2, "info")?;
        Frame::Verbatim(client_info(ctx, session))
    } else if is(sub, "HELP") {
        expect(2, "help")?;
        Frame::Array(
            CLIENT_HELP
                .iter()
                .map(|line| Frame::simple(*line))
                .collect(),
        )
    } else {
        return Err(unknown_subcommand(sub, "CLIENT"));
    };
    Ok(Outcome::Now(reply))
}

/// One CLIENT LIST style line for this connection.
fn client_info(ctx: &Ctx, session: &Session) -> String {
    let text = |value: &Option<Bytes>| value.as_deref().map(args::lossy).unwrap_or_default();
    format!(
        "id={} addr={} laddr={} name={} db=0 resp={} lib-name={} lib-ver={}\n",
        session.id,
        session.peer,
        ctx.local_addr,
        text(&session.name),
        session.protocol.version(),
        text(&session.lib_name),
        text(&session.lib_ver),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names() {
        assert_eq!(
            valid_client_name(&Bytes::from_static(b"app-1")),
            Ok(Some(Bytes::from_static(b"app-1")))
        );
        assert_eq!(valid_client_name(&Bytes::new()), Ok(None));
        assert!(valid_client_name(&Bytes::from_static(b"a b")).is_err());
        assert!(valid_client_name(&Bytes::from_static(b"a\nb")).is_err());
    }

    #[test]
    fn acl_rules_read_like_redis() {
        use shoal_core::auth::Role;
        assert_eq!(
            acl_rule("alice", Role::Read, Some(b"app1:")),
            "user alice on ~app1:* +@read +@connection"
        );
        assert_eq!(acl_rule("root", Role::Admin, None), "user root on ~* +@all");
    }
}
