//! One client connection: reads whatever has arrived, runs every complete request, and
//! writes all the replies of that batch with one write.
//!
//! Pipelining with Redis's ordering: consecutive commands of the same kind (all reads or all
//! writes) are submitted to the node in order and awaited together, so 16 pipelined SETs
//! share one Raft round. When the kind switches, the earlier run finishes first, so a read
//! always sees the writes sent before it on this connection. Replies always leave in request
//! order. Connection-local commands (PING, CLIENT, HELLO...) take their place in that order
//! without ending a run.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::secure::ClientStream;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::cmd::{self, ClientGuard, Ctx, Kind, Outcome, Pending, Session};
use super::frame::{self, Frame, Protocol};

/// Room made in the input buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Stop gathering already-arrived input into one batch beyond this many bytes, so a fast
/// client cannot make one batch (and its replies) arbitrarily large.
const MAX_BATCH_INPUT: usize = 1024 * 1024;
/// Write replies out as soon as this many bytes are waiting, even mid-batch.
const FLUSH_THRESHOLD: usize = 1024 * 1024;

/// Runs one client connection to its end. Errors (a client vanishing mid-write) end only
/// this connection and are not worth more than a debug line.
pub(crate) async fn serve(
    stream: ClientStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    guard: ClientGuard,
    shutdown: watch::Receiver<bool>,
) {
    let session = Session::new(guard.id(), peer);
    let decoder = frame::RequestDecoder::new(ctx.max_bulk);
    let mut connection = Connection {
        stream,
        decoder,
        ctx,
        session,
        input: BytesMut::with_capacity(READ_CHUNK),
        output: BytesMut::new(),
        run: Run::default(),
    };
    if let Err(err) = connection.serve(shutdown).await {
        tracing::debug!(%err, %peer, "RESP connection ended with an error");
    }
    drop(guard);
}

/// `POST` (a request line) or `Host:` (a header), as Redis checks: no Redis command has
/// either name, and every HTTP request a browser sends carries one of them.
fn looks_like_http(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"POST") || name.eq_ignore_ascii_case(b"HOST:")
}

/// Whether the connection stays open after a batch.
enum Flow {
    Continue,
    Close,
}

/// Commands submitted to the node and not yet answered, in request order.
#[derive(Default)]
struct Run {
    /// Read or Write once a node command joined the run; `None` while only local replies wait.
    kind: Option<Kind>,
    pending: FuturesOrdered<Pending>,
    /// The protocol each reply is encoded in: a `HELLO 3` mid-pipeline changes it for the
    /// replies after it only.
    protocols: VecDeque<Protocol>,
}

struct Connection {
    stream: ClientStream,
    /// Remembers how far a request still arriving was parsed.
    decoder: frame::RequestDecoder,
    ctx: Arc<Ctx>,
    session: Session,
    input: BytesMut,
    output: BytesMut,
    run: Run,
}

impl Connection {
    async fn serve(&mut self, mut shutdown: watch::Receiver<bool>) -> io::Result<()> {
        loop {
            let flow = self.process_input().await?;
            if !self.output.is_empty() {
                // Let every other connection with input ready run its batch first, so the
                // replies leave in a burst (Redis writes at the end of its event-loop turn
                // for the same reason): a client's event loop then wakes once per burst
                // instead of once per connection, and waking it was 15% of a node's CPU
                // under GET -P 16 (kernel `sock_def_readable`), against 4% in Redis.
                tokio::task::yield_now().await;
            }
            self.flush().await?;
            if let Flow::Close = flow {
                // Best effort: the client may already be gone.
                let _ = self.stream.shutdown().await;
                return Ok(());
            }
            if *shutdown.borrow() {
                return Ok(());
            }
            if self.input.len() > self.ctx.config.max_request_bytes {
                let limit = self.ctx.config.max_request_bytes;
                self.reply_now(
                    Frame::error(format!(
                        "ERR Protocol error: request exceeds the limit of {limit} bytes (max_request_bytes)"
                    )),
                    self.session.protocol,
                );
                self.flush().await?;
                let _ = self.stream.shutdown().await;
                return Ok(());
            }
            self.input.reserve(READ_CHUNK);
            tokio::select! {
                read = self.stream.read_buf(&mut self.input) => {
                    if read? == 0 {
                        return Ok(());
                    }
                }
                _ = shutdown.changed() => return Ok(()),
            }
            // Take in everything else that already arrived, so one batch covers the whole
            // pipeline the client sent and its replies leave in one write.
            while self.input.len() < MAX_BATCH_INPUT {
                self.input.reserve(READ_CHUNK);
                match crate::secure::try_read_buf(&mut self.stream, &mut self.input) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) => return Err(err),
                }
            }
        }
    }

    /// Runs every complete request in the input buffer; replies end up in `output`.
    async fn process_input(&mut self) -> io::Result<Flow> {
        loop {
            match self.decoder.decode(&mut self.input) {
                Ok(Some(args)) if args.is_empty() => continue,
                Ok(Some(args)) if looks_like_http(&args[0]) => {
                    // A browser page can make a browser POST to this port: the lines of its
                    // body would run as commands. Redis closes such connections without a
                    // reply for the same reason.
                    self.finish_run().await?;
                    tracing::warn!(
                        peer = %self.session.peer,
                        "possible cross-protocol attack: an HTTP request ({:?} line) reached the RESP port; connection closed",
                        String::from_utf8_lossy(&args[0]),
                    );
                    return Ok(Flow::Close);
                }
                Ok(Some(args)) => {
                    if let Flow::Close = self.submit(args).await? {
                        self.finish_run().await?;
                        return Ok(Flow::Close);
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    // The requests before the malformed one still run and are answered.
                    self.finish_run().await?;
                    self.reply_now(Frame::error(format!("ERR {err}")), self.session.protocol);
                    return Ok(Flow::Close);
                }
            }
        }
        self.finish_run().await?;
        Ok(Flow::Continue)
    }

    /// Runs one request, keeping the ordering rules described at the top of this module.
    async fn submit(&mut self, args: Vec<Bytes>) -> io::Result<Flow> {
        let spec = cmd::lookup(&args[0]);
        // Inside MULTI a command is only queued: it touches no keys until EXEC.
        let queueing = self.session.transaction.is_some() && !spec.is_some_and(cmd::is_control);
        let kind = match spec {
            Some(spec) if !queueing => spec.kind,
            _ => Kind::Local,
        };
        if matches!(kind, Kind::Read | Kind::Write) && self.run.kind.is_some_and(|k| k != kind) {
            self.finish_run().await?;
        }
        let outcome = if queueing {
            cmd::queue(&self.ctx, &mut self.session, spec, &args)
        } else {
            cmd::dispatch(&self.ctx, &mut self.session, spec, &args)
        };
        // After dispatch: HELLO 3's own reply is already RESP3, as in Redis.
        let protocol = self.session.protocol;
        match outcome {
            Outcome::Now(frame) => self.reply_now(frame, protocol),
            Outcome::Later(pending) => {
                if matches!(kind, Kind::Read | Kind::Write) {
                    self.run.kind = Some(kind);
                }
                self.run.pending.push_back(pending);
                self.run.protocols.push_back(protocol);
            }
            Outcome::Close(frame) => {
                self.reply_now(frame, protocol);
                return Ok(Flow::Close);
            }
            Outcome::Login(login) => {
                // What was sent before runs as the old user, what follows as the new one.
                self.finish_run().await?;
                let frame = match login.check.await {
                    Ok(grant) => {
                        self.session.caller.logged_in(grant, &self.ctx.config.auth);
                        (login.then)(&mut self.session)
                    }
                    Err(err) => Frame::error(format!("WRONGPASS {err}")),
                };
                self.reply_now(frame, self.session.protocol);
            }
        }
        Ok(Flow::Continue)
    }

    /// Queues a reply that is already known behind the ones still pending.
    fn reply_now(&mut self, frame: Frame, protocol: Protocol) {
        if self.run.pending.is_empty() {
            frame.encode(protocol, &mut self.output);
        } else {
            self.run
                .pending
                .push_back(Box::pin(std::future::ready(frame)));
            self.run.protocols.push_back(protocol);
        }
    }

    /// Waits for every pending reply, in order, encoding each as it completes.
    async fn finish_run(&mut self) -> io::Result<()> {
        while let Some(frame) = self.run.pending.next().await {
            let protocol = self.run.protocols.pop_front().unwrap_or_default();
            frame.encode(protocol, &mut self.output);
            if self.output.len() >= FLUSH_THRESHOLD {
                self.flush().await?;
            }
        }
        self.run.kind = None;
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
            // TLS keeps what the socket could not take yet until flushed (a no-op on TCP):
            // without this the end of a large reply waits for the client's next request.
            self.stream.flush().await?;
        }
        Ok(())
    }
}
