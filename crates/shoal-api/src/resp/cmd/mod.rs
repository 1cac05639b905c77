//! The command layer: one request (command name and arguments) in, one reply frame out.
//!
//! Each family of commands has its own module and only translates: arguments become a
//! `shoal_core::Command`, `Node::execute` runs it, and the `Reply` or `Error` becomes the
//! frame Redis would send. `table` lists every command with its arity and [`Kind`], which
//! the connection uses to keep pipelined commands in order.

mod args;
mod cluster;
mod keys;
mod scan;
mod server;
mod session;
mod strings;
mod table;
mod transaction;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use shoal_core::auth::{Access, Denied, Grant};
use shoal_core::record::Record;
use shoal_core::slot::Slot;
use shoal_core::{Command, Consistency, Error, Limits, Reply, WriteOp, WriteReply};

use super::RespConfig;
use super::frame::{self, Frame};
use crate::backend::Backend;

pub(crate) use session::Session;
pub(crate) use table::{Kind, Spec, lookup};
pub(crate) use transaction::{Capture, Queue, SharedWatched, is_control, queue};

/// A reply still being computed. Boxed so one run can hold replies of any command.
pub(crate) type Pending = BoxFuture<'static, Frame>;

/// What running a command produced.
pub(crate) enum Outcome {
    /// The reply is known now (local commands, argument errors).
    Now(Frame),
    /// The reply comes from the node. For single-command reads and writes the command has
    /// already been submitted, so its place in the node's order is fixed.
    Later(Pending),
    /// Send this reply, then close the connection (QUIT).
    Close(Frame),
    /// A password is being checked (AUTH, HELLO AUTH): the connection waits for it before
    /// running anything sent after it, since those commands run as the new user.
    Login(Login),
}

/// A login in progress.
pub(crate) struct Login {
    pub check: BoxFuture<'static, Result<Grant, crate::auth::LoginError>>,
    /// Builds the reply once logged in (HELLO switches protocol and names the client here).
    pub then: Box<dyn FnOnce(&mut Session) -> Frame + Send>,
}

/// Redis's reply to a command sent before logging in.
pub(crate) const NOAUTH: &str = "NOAUTH Authentication required.";

/// Redis's reply when the user's role does not allow the command.
fn no_permission(user: &str, command: &str) -> Frame {
    Frame::error(format!(
        "NOPERM User {user} has no permissions to run the '{command}' command"
    ))
}

/// What running `spec` needs beyond being logged in, where the command alone says it
/// (keys are checked on the `Command` in `Ctx::allowed`). EXEC is judged by what it runs.
fn needs(spec: &Spec) -> Option<Access> {
    match (spec.kind, spec.name) {
        (_, "flushall" | "flushdb") => Some(Access::Admin),
        (_, "exec") | (Kind::Local, _) => None,
        (Kind::Read, _) => Some(Access::Read),
        (Kind::Write, _) => Some(Access::Write),
    }
}

/// A command implementation. `Err` is an immediate error reply, so handlers can use `?` on
/// argument checks.
pub(crate) type Handler = fn(&Ctx, &mut Session, &[Bytes]) -> Result<Outcome, Frame>;

/// State shared by every connection of one listener.
pub(crate) struct Ctx {
    pub node: Arc<dyn Backend>,
    pub limits: Limits,
    pub config: RespConfig,
    /// Largest argument the frame decoder accepts (value limit plus slack).
    pub max_bulk: usize,
    pub local_addr: SocketAddr,
    pub started: Instant,
    clients: Arc<AtomicUsize>,
    next_client_id: AtomicU64,
}

impl Ctx {
    pub fn new(node: Arc<dyn Backend>, config: RespConfig, local_addr: SocketAddr) -> Self {
        let limits = node.limits();
        Self {
            node,
            limits,
            config,
            max_bulk: frame::max_bulk_bytes(limits.max_value_bytes),
            local_addr,
            started: Instant::now(),
            clients: Arc::new(AtomicUsize::new(0)),
            next_client_id: AtomicU64::new(1),
        }
    }

    /// Admits one more client if under the limit. The guard keeps it counted until dropped.
    pub fn admit(&self) -> Option<ClientGuard> {
        let permit = self.config.connections.try_admit()?;
        self.clients.fetch_add(1, Ordering::AcqRel);
        Some(ClientGuard {
            _permit: permit,
            clients: self.clients.clone(),
            id: self.next_client_id.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn connected_clients(&self) -> usize {
        self.clients.load(Ordering::Acquire)
    }

    /// Submits a read now and renders its reply when it arrives.
    fn read(
        &self,
        session: &Session,
        command: Command,
        slot: Option<Slot>,
        render: impl FnOnce(Reply) -> Result<Frame, Error> + Send + 'static,
    ) -> Outcome {
        self.submit(session, command, session.consistency, slot, render)
    }

    /// Reads one key and renders its record (`None`: absent or expired).
    fn get(
        &self,
        session: &Session,
        key: Bytes,
        render: impl FnOnce(Option<Record>) -> Result<Frame, Error> + Send + 'static,
    ) -> Outcome {
        let slot = shoal_core::key_slot(&key);
        self.read(
            session,
            Command::Get { key },
            Some(slot),
            |reply| match reply {
                Reply::Record(record) => render(record),
                _ => Err(unexpected()),
            },
        )
    }

    /// Submits a write now and renders its reply when it is applied.
    fn write(
        &self,
        session: &Session,
        op: WriteOp,
        slot: Option<Slot>,
        render: impl FnOnce(WriteReply) -> Result<Frame, Error> + Send + 'static,
    ) -> Outcome {
        self.submit(
            session,
            Command::Write(op),
            Consistency::Linearizable,
            slot,
            |reply| match reply {
                Reply::Write(reply) => render(reply),
                _ => Err(unexpected()),
            },
        )
    }

    /// Whether the connection's user may run `command` (its role, and every key against
    /// its prefix), as Redis's NOPERM errors.
    fn allowed(&self, session: &Session, command: &Command) -> Result<(), Frame> {
        let Some(grant) = session.caller.cached() else {
            return Err(Frame::error(NOAUTH));
        };
        if grant.unrestricted() {
            return Ok(());
        }
        grant.check(command).map_err(|denied| match denied {
            Denied::Role { user, .. } => no_permission(&user, session.command),
            Denied::Key { .. } => Frame::error("NOPERM No permissions to access a key"),
        })
    }

    fn submit(
        &self,
        session: &Session,
        command: Command,
        consistency: Consistency,
        slot: Option<Slot>,
        render: impl FnOnce(Reply) -> Result<Frame, Error> + Send + 'static,
    ) -> Outcome {
        if let Err(refused) = self.allowed(session, &command) {
            return Outcome::Now(refused);
        }
        // Queued by MULTI: kept for EXEC instead of run.
        if let Some(capture) = session.capture.borrow_mut().as_mut() {
            capture.record(command, slot, render);
            return Outcome::Now(Frame::simple("QUEUED"));
        }
        // `execute` fixes the command's place in the node's order here, before the future
        // is polled: that is what lets the connection submit a run of pipelined commands and
        // await them together.
        if let Some(result) = self.node.try_read_now(&command, consistency) {
            return Outcome::Now(match result.and_then(render) {
                Ok(frame) => frame,
                Err(err) => node_error(&*self.node, &err, slot),
            });
        }
        // Clients that asked for the slot map route by themselves: they get -MOVED rather
        // than a forwarded request.
        let pending = if session.routes_itself {
            self.node.execute_direct(command, consistency)
        } else {
            self.node.execute(command, consistency)
        };
        let node = self.node.clone();
        Outcome::Later(Box::pin(async move {
            match pending.await.and_then(render) {
                Ok(frame) => frame,
                Err(err) => node_error(&*node, &err, slot),
            }
        }))
    }
}

/// Keeps one client counted in [`Ctx::connected_clients`] while alive.
pub(crate) struct ClientGuard {
    /// Holds the connection's place under the node's connection limit.
    _permit: crate::connections::ConnectionPermit,
    clients: Arc<AtomicUsize>,
    id: u64,
}

impl ClientGuard {
    /// The connection's id (CLIENT ID, HELLO).
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs one request: looks up, checks arity, calls the handler.
pub(crate) fn dispatch(
    ctx: &Ctx,
    session: &mut Session,
    spec: Option<&'static Spec>,
    args: &[Bytes],
) -> Outcome {
    let Some(spec) = spec else {
        return Outcome::Now(args::unknown_command(args));
    };
    // Redis's order: unknown command, arity, login, permissions.
    if !spec.arity_ok(args.len()) {
        return Outcome::Now(args::wrong_args(spec.name));
    }
    if !matches!(spec.name, "auth" | "hello" | "quit") {
        let Some(grant) = session.caller.grant(&ctx.config.auth) else {
            return Outcome::Now(Frame::error(NOAUTH));
        };
        if let Some(access) = needs(spec)
            && !grant.role.allows(access)
        {
            return Outcome::Now(no_permission(&grant.user, spec.name));
        }
    }
    session.command = spec.name;
    match (spec.handler)(ctx, session, args) {
        Ok(outcome) => outcome,
        Err(frame) => Outcome::Now(frame),
    }
}

/// The error for a reply whose shape does not fit the command: a bug between layers, never
/// the client's fault.
fn unexpected() -> Error {
    Error::Internal("the node answered with an unexpected reply type".to_string())
}

/// Renders a shoal error the way Redis clients expect it.
fn error_frame(err: &Error) -> Frame {
    match err {
        Error::CrossShard => Frame::error(args::CROSSSLOT),
        Error::NoLeader { .. } | Error::Overloaded { .. } => {
            Frame::error(format!("TRYAGAIN {err}"))
        }
        _ => Frame::error(format!("ERR {err}")),
    }
}

/// Like [`error_frame`], but a `NotLeader` for a known slot becomes Redis Cluster's
/// `-MOVED <slot> <host:port>` so cluster clients go to the leader themselves.
fn node_error(node: &dyn Backend, err: &Error, slot: Option<Slot>) -> Frame {
    if let (Error::NotLeader { leader, .. }, Some(slot)) = (err, slot) {
        let view = node.cluster_view();
        if let Some(leader) = view.nodes.iter().find(|n| n.info.id == *leader) {
            return Frame::error(format!("MOVED {slot} {}", leader.info.resp_addr));
        }
    }
    error_frame(err)
}

// Renderers of `WriteReply`s shared by the command families.

fn int_reply(reply: WriteReply) -> Result<Frame, Error> {
    match reply {
        WriteReply::Int(n) => Ok(Frame::Integer(n)),
        _ => Err(unexpected()),
    }
}

/// Lengths (APPEND, SETRANGE) and delete counts (DEL) as integers.
fn count_reply(reply: WriteReply) -> Result<Frame, Error> {
    match reply {
        WriteReply::Len(n) | WriteReply::Deleted(n) => Ok(Frame::Integer(n as i64)),
        _ => Err(unexpected()),
    }
}

/// Whether a conditional write took effect, as Redis's `:1` / `:0`.
fn applied_reply(reply: WriteReply) -> Result<Frame, Error> {
    match reply {
        WriteReply::Applied(applied) => Ok(Frame::Integer(i64::from(applied))),
        WriteReply::Put { version, .. } => Ok(Frame::Integer(i64::from(version.is_some()))),
        _ => Err(unexpected()),
    }
}

/// The value read by GETDEL / GETEX / GETSET, or null.
fn value_reply(reply: WriteReply) -> Result<Frame, Error> {
    match reply {
        WriteReply::Value(value) | WriteReply::Put { old: value, .. } => {
            Ok(Frame::bulk_or_null(value))
        }
        _ => Err(unexpected()),
    }
}

fn ok_reply(reply: WriteReply) -> Result<Frame, Error> {
    match reply {
        WriteReply::Ok
        | WriteReply::Applied(true)
        | WriteReply::Put {
            version: Some(_), ..
        } => Ok(Frame::ok()),
        _ => Err(unexpected()),
    }
}
