//! One group's network client for one follower, with pipelined log replication.
//!
//! openraft replicates a group's log to a follower by handing the network a stream of
//! AppendEntries requests (`stream_append`). Its default (and openraft-multi's adapter)
//! sends one request and waits for the answer before taking the next: one round trip plus
//! the follower's fsync per batch, per group and follower. Here up to
//! `TransportOptions::append_pipeline` requests are in flight at once, answers are yielded
//! in request order, and the stream ends at the first error, conflict or partial success,
//! as the trait requires. The follower keeps them in order (`server::spawn_in_order`).
//!
//! A request that carries no entries only moves the follower's commit index forward
//! (openraft sends one whenever the leader commits and has nothing new to send): it waits
//! up to `TransportOptions::commit_update_delay` for the next request with entries, which
//! carries the same commit index and goes instead. A follower's commit index only decides
//! when it applies entries; acknowledgements and the leader's commits do not wait for it.

use std::future::Future;
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use futures_util::{Stream, StreamExt};
use openraft::OptionalSend;
use openraft::base::{BoxFuture, BoxStream};
use openraft::entry::RaftEntry;
use openraft::error::{RPCError, ReplicationClosed, StreamingError};
use openraft::network::{RPCOption, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft_multi::GroupRouter;
use shoal_core::ShardId;

use super::client::PeerRouter;
use crate::state_machine::SnapshotFile;
use crate::types::{LogId, TypeConfig, Vote};

/// `(target, group)`'s client: unary calls go through the node's `PeerRouter`.
pub struct GroupNetwork {
    router: PeerRouter,
    target: u64,
    group: ShardId,
}

impl GroupNetwork {
    pub fn new(router: PeerRouter, target: u64, group: ShardId) -> Self {
        Self {
            router,
            target,
            group,
        }
    }
}

type AppendResult = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

type AppendResponse = Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>;

/// An AppendEntries on its way, with the range it covers: what its answer acknowledges.
type InFlight = BoxFuture<'static, (AppendResponse, Range)>;

struct Range {
    prev: Option<LogId>,
    last: Option<LogId>,
}

/// The state of one pipelined stream. `send` queues one request for the follower at once
/// (before its future is polled) and resolves to its answer.
struct Pipeline<S, F> {
    send: F,
    depth: usize,
    /// `None` once openraft's input ended.
    input: Option<S>,
    in_flight: FuturesOrdered<InFlight>,
    /// A request without entries (it only tells the follower the commit index) waits here
    /// up to `hold` for a request with entries, which carries the same news and replaces it.
    held: Option<(AppendEntriesRequest<TypeConfig>, tokio::time::Instant)>,
    hold: Duration,
    /// Set once an answer ended the stream: nothing more is sent or yielded.
    ended: bool,
}

impl<S, F, R> Pipeline<S, F>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
    F: FnMut(AppendEntriesRequest<TypeConfig>) -> R,
    R: Future<Output = AppendResponse> + Send + 'static,
{
    fn new(input: S, send: F, depth: usize, hold: Duration) -> Self {
        Self {
            send,
            depth: depth.max(1),
            input: Some(input),
            in_flight: FuturesOrdered::new(),
            held: None,
            hold,
            ended: false,
        }
    }

    /// The answers, in request order.
    fn answers(self) -> impl Stream<Item = AppendResult> {
        futures_util::stream::unfold(self, |mut pipeline| async move {
            let answer = pipeline.next().await?;
            Some((answer, pipeline))
        })
    }

    /// The next answer, in request order, sending requests while there is room.
    async fn next(&mut self) -> Option<AppendResult> {
        loop {
            if self.ended
                || (self.input.is_none() && self.in_flight.is_empty() && self.held.is_none())
            {
                return None;
            }
            let sending = self.input.is_some() && self.in_flight.len() < self.depth;
            let hold_until = self.held.as_ref().map(|(_, until)| *until);
            tokio::select! {
                // Answers first: they free room and let openraft advance the commit index.
                biased;
                answered = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    let (response, range) = answered.expect("not empty");
                    return Some(self.answer(response, range));
                }
                request = next_request(&mut self.input), if sending => match request {
                    Some(request) if request.entries.is_empty() && !self.hold.is_zero() => {
                        let until = hold_until
                            .unwrap_or_else(|| tokio::time::Instant::now() + self.hold);
                        self.held = Some((request, until));
                    }
                    Some(request) => {
                        // It carries the commit index the held request would have.
                        self.held = None;
                        self.send(request);
                    }
                    None => {
                        self.input = None;
                        self.send_held();
                    }
                },
                _ = tokio::time::sleep_until(hold_until.unwrap_or_else(tokio::time::Instant::now)),
                    if hold_until.is_some() && self.in_flight.len() < self.depth => self.send_held(),
            }
        }
    }

    fn send_held(&mut self) {
        if let Some((request, _)) = self.held.take() {
            self.send(request);
        }
    }

    fn send(&mut self, request: AppendEntriesRequest<TypeConfig>) {
        let range = Range {
            prev: request.prev_log_id,
            last: request
                .entries
                .last()
                .map(|e| e.log_id())
                .or(request.prev_log_id),
        };
        let call = (self.send)(request);
        self.in_flight
            .push_back(Box::pin(async move { (call.await, range) }));
    }

    /// Converts one answer as openraft's sequential `stream_append` does; one that does not
    /// acknowledge the whole request ends the stream (openraft then starts another from
    /// what was acknowledged).
    fn answer(&mut self, response: AppendResponse, range: Range) -> AppendResult {
        match response {
            Ok(response) => {
                let partial = matches!(&response,
                    AppendEntriesResponse::PartialSuccess(upto) if *upto != range.last);
                let result = response.into_stream_result(range.prev, range.last);
                if partial || result.is_err() {
                    self.ended = true;
                }
                Ok(result)
            }
            Err(e) => {
                self.ended = true;
                Err(e)
            }
        }
    }
}

async fn next_request<S>(input: &mut Option<S>) -> Option<AppendEntriesRequest<TypeConfig>>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
{
    match input {
        Some(input) => input.next().await,
        None => std::future::pending().await,
    }
}

impl RaftNetworkV2<TypeConfig> for GroupNetwork {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.router
            .append_call(self.target, self.group, rpc, option)
            .await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, AppendResult>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let router = self.router.clone();
        let (target, group) = (self.target, self.group);
        let options = self.router.options();
        let answers = Pipeline::new(
            input,
            move |request| router.append_call(target, group, request, option.clone()),
            options.append_pipeline,
            options.commit_update_delay,
        )
        .answers();
        let answers: BoxStream<'s, AppendResult> = Box::pin(answers);
        Box::pin(async move { Ok(answers) })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.router.vote(self.target, self.group, rpc, option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.router
            .pre_vote(self.target, self.group, rpc, option)
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        self.router
            .full_snapshot(self.target, self.group, vote, snapshot, cancel, option)
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.router
            .transfer_leader(self.target, self.group, req, option)
            .await
    }
}

#[cfg(test)]
#[path = "group_network_tests.rs"]
mod tests;
