//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! Between MULTI and EXEC a command is not run but captured: its handler runs as usual
//! (so argument errors show at once, as Redis reports them when queueing), and the op it
//! would have submitted is kept with the renderer of its reply. EXEC submits every
//! captured op as one `WriteOp::Transaction`, which the shard applies as one log entry, in
//! order, with nothing in between; reads inside (GET, MGET, TTL...) run at apply time, so
//! they see the transaction's earlier writes. As in Redis Cluster, every key must live in
//! one shard (`-CROSSSLOT` otherwise). WATCH reads each key's version; EXEC makes the
//! transaction conditional on them and answers a null reply if one changed.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use shoal_core::slot::Slot;
use shoal_core::transaction::refuse_inside;
use shoal_core::{Command, Consistency, Error, Reply, WriteOp, WriteReply, key_slot};

use super::args::err;
use super::{Ctx, Outcome, Session, Spec, error_frame, node_error, unexpected};
use crate::resp::frame::Frame;

const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// Most commands MULTI queues, as shoal's transactions carry at most this many ops.
const MAX_QUEUED: usize = shoal_core::command::MAX_TRANSACTION_OPS;

/// Renders a captured op's reply inside EXEC's array.
type Render = Box<dyn FnOnce(WriteReply) -> Result<Frame, Error> + Send>;

/// What MULTI has queued so far.
#[derive(Default)]
pub(crate) struct Queue {
    items: Vec<Queued>,
    /// Keys and values queued so far: bounded like one write (`--max-value-bytes`), so a
    /// client cannot hold more than that in a session before EXEC.
    bytes: usize,
    /// A command was refused while queueing: EXEC answers EXECABORT.
    aborted: bool,
}

/// One place in EXEC's reply array: known already, or rendered from its op's result.
enum Answer {
    Known(Frame),
    FromOp(Render),
}

enum Queued {
    /// A command answered from node-local state (INFO, COMMAND...): its reply, as it was.
    Reply(Frame),
    /// A command on the connection's state (CLIENT SETNAME, READONLY, PING...): it runs at
    /// EXEC, in its place, so DISCARD leaves the connection as it was.
    Deferred {
        spec: &'static Spec,
        args: Vec<Bytes>,
    },
    Op {
        op: WriteOp,
        slot: Slot,
        render: Render,
    },
}

/// What one command's handler submitted while being queued.
#[derive(Default)]
pub(crate) struct Capture {
    op: Option<(WriteOp, Slot, Render)>,
    refused: Option<String>,
}

impl Capture {
    /// Keeps `command` instead of running it. Reads become read ops evaluated at apply
    /// time; what cannot run inside a shard's transaction is refused.
    pub(super) fn record(
        &mut self,
        command: Command,
        slot: Option<Slot>,
        render: impl FnOnce(Reply) -> Result<Frame, Error> + Send + 'static,
    ) {
        let Some(slot) = slot else {
            self.refused = Some("runs on every shard".into());
            return;
        };
        let captured: (WriteOp, Render) = match command {
            Command::Write(op) => {
                if let Some(why) = refuse_inside(&op) {
                    self.refused = Some(why.into());
                    return;
                }
                // Its own allocation: a queued op must not pin the connection's read
                // buffer until EXEC.
                let op = op.into_owned();
                (op, Box::new(move |reply| render(Reply::Write(reply))))
            }
            Command::Get { key } => (
                WriteOp::Read { keys: vec![key] }.into_owned(),
                Box::new(move |reply| match reply {
                    WriteReply::Records(mut records) if records.len() == 1 => {
                        render(Reply::Record(records.pop().flatten()))
                    }
                    _ => Err(unexpected()),
                }),
            ),
            Command::GetMany { keys } => (
                WriteOp::Read { keys }.into_owned(),
                Box::new(move |reply| match reply {
                    WriteReply::Records(records) => render(Reply::Records(records)),
                    _ => Err(unexpected()),
                }),
            ),
            Command::Scan { .. } | Command::Count | Command::RandomKey => {
                self.refused = Some("reads every shard".into());
                return;
            }
        };
        self.op = Some((captured.0, slot, captured.1));
    }
}

/// Keys WATCHed by a connection and the versions read for them.
#[derive(Default)]
pub(crate) struct Watched {
    keys: Vec<(Bytes, Option<u64>)>,
    /// A WATCH read failed: EXEC must not run as if the key were watched.
    broken: bool,
    /// Bumped by EXEC, DISCARD and UNWATCH, so a WATCH read still in flight then does
    /// not add its key afterwards.
    generation: u64,
}

impl Watched {
    fn clear(&mut self) {
        self.keys.clear();
        self.broken = false;
        self.generation += 1;
    }
}

pub(crate) type SharedWatched = Arc<Mutex<Watched>>;

/// Whether `spec` acts on the transaction itself rather than being queued by it.
pub(crate) fn is_control(spec: &Spec) -> bool {
    matches!(
        spec.name,
        "multi" | "exec" | "discard" | "watch" | "unwatch" | "quit" | "reset"
    )
}

/// Queues one command of an open transaction, answering `+QUEUED` or why not.
pub(crate) fn queue(
    ctx: &Ctx,
    session: &mut Session,
    spec: Option<&'static Spec>,
    args: &[Bytes],
) -> Outcome {
    let queued = session.transaction.as_ref().map_or(0, |q| q.items.len());
    let outcome = if queued >= MAX_QUEUED {
        Outcome::Now(err(format!(
            "a transaction holds at most {MAX_QUEUED} commands; EXEC or DISCARD first"
        )))
    } else if let Some(spec) = spec.filter(|s| runs_at_exec(s) && s.arity_ok(args.len())) {
        push(
            session,
            Queued::Deferred {
                spec,
                args: args.to_vec(),
            },
        );
        return Outcome::Now(Frame::simple("QUEUED"));
    } else {
        *session.capture.get_mut() = Some(Capture::default());
        let outcome = super::dispatch(ctx, session, spec, args);
        let capture = session.capture.get_mut().take().unwrap_or_default();
        match (capture.refused, capture.op, outcome) {
            (Some(why), _, _) => Outcome::Now(refused(args, &why)),
            (None, Some((op, slot, render)), _) => {
                let limit = ctx.limits.max_value_bytes;
                let bytes =
                    session.transaction.as_ref().map_or(0, |q| q.bytes) + op.payload_bytes();
                if bytes > limit {
                    Outcome::Now(err(format!(
                        "a transaction carries at most {limit} bytes of keys and values \
                         (--max-value-bytes); this command would bring it to {bytes}"
                    )))
                } else {
                    if let Some(queue) = session.transaction.as_mut() {
                        queue.bytes = bytes;
                    }
                    push(session, Queued::Op { op, slot, render });
                    return Outcome::Now(Frame::simple("QUEUED"));
                }
            }
            (None, None, Outcome::Now(frame)) if !matches!(frame, Frame::Error(_)) => {
                push(session, Queued::Reply(frame));
                return Outcome::Now(Frame::simple("QUEUED"));
            }
            // A read outside the capture (SCAN, KEYS): dropping it cancels it.
            (None, None, Outcome::Later(_)) => Outcome::Now(refused(args, "reads every shard")),
            (None, None, other) => other,
        }
    };
    if let Some(queue) = session.transaction.as_mut() {
        queue.aborted = true;
    }
    outcome
}

/// The command table's connection and cluster groups (CLIENT, HELLO, READONLY, PING...):
/// answered from the connection's state, and some change it, so they run at EXEC like any
/// other queued command, as in Redis.
fn runs_at_exec(spec: &Spec) -> bool {
    matches!(spec.group, "connection" | "cluster")
}

fn push(session: &mut Session, item: Queued) {
    if let Some(queue) = session.transaction.as_mut() {
        queue.items.push(item);
    }
}

fn refused(args: &[Bytes], why: &str) -> Frame {
    err(format!(
        "'{}' cannot run inside MULTI: {why}, and a transaction runs on one shard",
        super::args::lossy(&args[0]).to_lowercase()
    ))
}

pub(super) fn multi(_: &Ctx, session: &mut Session, _: &[Bytes]) -> Result<Outcome, Frame> {
    if session.transaction.is_some() {
        return Err(err("MULTI calls can not be nested"));
    }
    session.transaction = Some(Queue::default());
    Ok(Outcome::Now(Frame::ok()))
}

pub(super) fn discard(_: &Ctx, session: &mut Session, _: &[Bytes]) -> Result<Outcome, Frame> {
    if session.transaction.take().is_none() {
        return Err(err("DISCARD without MULTI"));
    }
    session.watched.lock().expect("watch lock").clear();
    Ok(Outcome::Now(Frame::ok()))
}

pub(super) fn unwatch(_: &Ctx, session: &mut Session, _: &[Bytes]) -> Result<Outcome, Frame> {
    session.watched.lock().expect("watch lock").clear();
    Ok(Outcome::Now(Frame::ok()))
}

/// `WATCH key [key ...]`: reads each key's version now (linearizably); EXEC applies only
/// if they are unchanged. A Read command, so the connection finishes it before EXEC.
pub(super) fn watch(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    if session.transaction.is_some() {
        return Err(err("WATCH inside MULTI is not allowed"));
    }
    for key in &args[1..] {
        ctx.allowed(session, &Command::Get { key: key.clone() })?;
    }
    let reads: Vec<_> = args[1..]
        .iter()
        .map(|key| {
            let command = Command::Get { key: key.clone() };
            let read = if session.routes_itself {
                ctx.node.execute_direct(command, Consistency::Linearizable)
            } else {
                ctx.node.execute(command, Consistency::Linearizable)
            };
            (key.clone(), read)
        })
        .collect();
    let watched = session.watched.clone();
    let generation = watched.lock().expect("watch lock").generation;
    let node = ctx.node.clone();
    Ok(Outcome::Later(Box::pin(async move {
        let mut versions = Vec::with_capacity(reads.len());
        let mut failure = None;
        for (key, read) in reads {
            match read.await {
                Ok(Reply::Record(record)) => versions.push((key, record.map(|r| r.version))),
                Ok(_) => failure = Some(error_frame(&unexpected())),
                Err(e) => failure = Some(node_error(&*node, &e, Some(key_slot(&key)))),
            }
        }
        let mut state = watched.lock().expect("watch lock");
        if state.generation != generation {
            return Frame::ok(); // unwatched meanwhile
        }
        state.keys.extend(versions);
        match failure {
            Some(frame) => {
                state.broken = true;
                frame
            }
            None => Frame::ok(),
        }
    })))
}

/// `EXEC`: submits the queued commands as one transaction and answers their replies as
/// an array, or a null reply if a watched key changed.
pub(super) fn exec(ctx: &Ctx, session: &mut Session, _: &[Bytes]) -> Result<Outcome, Frame> {
    let Some(queue) = session.transaction.take() else {
        return Err(err("EXEC without MULTI"));
    };
    let watched = {
        let mut state = session.watched.lock().expect("watch lock");
        let keys = std::mem::take(&mut state.keys);
        let broken = state.broken;
        state.clear();
        if broken { None } else { Some(keys) }
    };
    if queue.aborted {
        return Err(Frame::error(EXECABORT));
    }
    let Some(watched) = watched else {
        return Ok(Outcome::Now(Frame::Null));
    };
    let mut ops = Vec::new();
    let mut slot = watched.first().map(|(key, _)| key_slot(key));
    let mut items = Vec::with_capacity(queue.items.len());
    for item in queue.items {
        match item {
            Queued::Reply(frame) => items.push(Answer::Known(frame)),
            Queued::Deferred { spec, args } => {
                let frame = match super::dispatch(ctx, session, Some(spec), &args) {
                    Outcome::Now(frame) | Outcome::Close(frame) => frame,
                    Outcome::Later(_) | Outcome::Login(_) => err(format!(
                        "'{}' cannot run inside MULTI: it waits on the cluster",
                        spec.name
                    )),
                };
                items.push(Answer::Known(frame));
            }
            Queued::Op {
                op,
                slot: op_slot,
                render,
            } => {
                slot.get_or_insert(op_slot);
                ops.push(op);
                items.push(Answer::FromOp(render));
            }
        }
    }
    let Some(slot) = slot else {
        // Nothing to run on a shard.
        let frames = items
            .into_iter()
            .filter_map(|item| match item {
                Answer::Known(frame) => Some(frame),
                Answer::FromOp(_) => None,
            })
            .collect();
        return Ok(Outcome::Now(Frame::Array(frames)));
    };
    let op = WriteOp::Transaction { ops, watched };
    Ok(
        ctx.write(session, op, Some(slot), move |reply| match reply {
            WriteReply::Transaction(None) => Ok(Frame::Null),
            WriteReply::Transaction(Some(results)) => {
                let mut results = results.into_iter();
                let frames = items
                    .into_iter()
                    .map(|item| match item {
                        Answer::Known(frame) => frame,
                        Answer::FromOp(render) => match results.next() {
                            Some(Ok(reply)) => render(reply).unwrap_or_else(|e| error_frame(&e)),
                            Some(Err(e)) => error_frame(&e),
                            None => error_frame(&unexpected()),
                        },
                    })
                    .collect();
                Ok(Frame::Array(frames))
            }
            _ => Err(unexpected()),
        }),
    )
}
