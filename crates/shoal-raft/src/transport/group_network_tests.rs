//! The replication pipeline against a scripted follower: how many requests it keeps in
//! flight, the order of its answers, where it stops, and what happens to commit-only
//! requests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, poll};
use openraft::raft::StreamAppendError;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::transport::{CallError, unreachable};
use crate::types::Entry;

fn log_id(index: u64) -> LogId {
    LogId::new(
        openraft::vote::leader_id_adv::CommittedLeaderId {
            term: 1,
            node_id: 1,
        },
        index,
    )
}

/// Entries `prev + 1 ..= prev + entries` after `prev`.
fn request(prev: u64, entries: u64) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new(1, 1),
        prev_log_id: Some(log_id(prev)),
        entries: (prev + 1..=prev + entries)
            .map(|i| Entry::new_blank(log_id(i)))
            .collect(),
        leader_commit: None,
    }
}

/// A follower the test answers by hand: what was sent (prev index, entry count), and the
/// answers still owed, oldest first.
#[derive(Clone, Default)]
struct Follower {
    sent: Arc<Mutex<Vec<(u64, usize)>>>,
    owed: Arc<Mutex<VecDeque<oneshot::Sender<AppendResponse>>>>,
}

impl Follower {
    fn sender(
        &self,
    ) -> impl FnMut(AppendEntriesRequest<TypeConfig>) -> BoxFuture<'static, AppendResponse> + use<>
    {
        let follower = self.clone();
        move |request| {
            let prev = request.prev_log_id.map_or(0, |l| l.index);
            follower
                .sent
                .lock()
                .unwrap()
                .push((prev, request.entries.len()));
            let (tx, rx) = oneshot::channel();
            follower.owed.lock().unwrap().push_back(tx);
            async move {
                rx.await.unwrap_or_else(|_| {
                    Err(RPCError::Unreachable(unreachable(
                        2,
                        CallError::Lost("dropped".into()),
                    )))
                })
            }
            .boxed()
        }
    }

    /// A pipeline of `depth` and `hold` over `input`, sending to this follower.
    fn pipeline(
        &self,
        input: impl Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
        depth: usize,
        hold: Duration,
    ) -> impl Stream<Item = AppendResult> + Unpin {
        Box::pin(Pipeline::new(input, self.sender(), depth, hold).answers())
    }

    fn sent(&self) -> Vec<(u64, usize)> {
        self.sent.lock().unwrap().clone()
    }

    /// Answers the `nth` oldest request still owed an answer.
    fn answer(&self, nth: usize, response: AppendEntriesResponse<TypeConfig>) {
        let tx = self.owed.lock().unwrap().remove(nth).expect("owed");
        let _ = tx.send(Ok(response));
    }
}

/// openraft's side: a request stream the test feeds.
fn input() -> (
    mpsc::UnboundedSender<AppendEntriesRequest<TypeConfig>>,
    impl Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let request = rx.recv().await?;
        Some((request, rx))
    });
    (tx, Box::pin(stream))
}

#[tokio::test]
async fn keeps_depth_requests_in_flight_and_answers_in_order() {
    let follower = Follower::default();
    let (tx, input) = input();
    for i in 0..5 {
        tx.send(request(i, 1)).unwrap();
    }
    let mut answers = follower.pipeline(input, 3, Duration::ZERO);
    assert!(poll!(answers.next()).is_pending());
    assert_eq!(
        follower.sent(),
        vec![(0, 1), (1, 1), (2, 1)],
        "three in flight, no more"
    );

    // The second answer arrives first: nothing is yielded until the first's is in.
    follower.answer(1, AppendEntriesResponse::Success);
    assert!(poll!(answers.next()).is_pending());
    assert_eq!(follower.sent().len(), 3);
    follower.answer(0, AppendEntriesResponse::Success);
    assert_eq!(answers.next().await.unwrap().unwrap(), Ok(Some(log_id(1))));
    assert_eq!(answers.next().await.unwrap().unwrap(), Ok(Some(log_id(2))));
    // Two answers freed two places.
    assert!(poll!(answers.next()).is_pending());
    assert_eq!(
        follower.sent(),
        vec![(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)]
    );
}

#[tokio::test]
async fn a_conflict_ends_the_stream() {
    let follower = Follower::default();
    let (tx, input) = input();
    for i in 3..6 {
        tx.send(request(i, 1)).unwrap();
    }
    let mut answers = follower.pipeline(input, 2, Duration::ZERO);
    assert!(poll!(answers.next()).is_pending());
    follower.answer(0, AppendEntriesResponse::Conflict);
    assert_eq!(
        answers.next().await.unwrap().unwrap(),
        Err(StreamAppendError::Conflict(log_id(3)))
    );
    assert!(answers.next().await.is_none(), "nothing after a conflict");
    assert_eq!(
        follower.sent(),
        vec![(3, 1), (4, 1)],
        "the third was never sent"
    );
}

#[tokio::test]
async fn a_partial_success_ends_the_stream() {
    let follower = Follower::default();
    let (tx, input) = input();
    tx.send(request(0, 4)).unwrap();
    tx.send(request(4, 1)).unwrap();
    let mut answers = follower.pipeline(input, 2, Duration::ZERO);
    assert!(poll!(answers.next()).is_pending());
    follower.answer(0, AppendEntriesResponse::PartialSuccess(Some(log_id(2))));
    assert_eq!(answers.next().await.unwrap().unwrap(), Ok(Some(log_id(2))));
    assert!(answers.next().await.is_none());
}

#[tokio::test]
async fn a_transport_error_ends_the_stream() {
    let follower = Follower::default();
    let (tx, input) = input();
    tx.send(request(0, 1)).unwrap();
    tx.send(request(1, 1)).unwrap();
    let mut answers = follower.pipeline(input, 2, Duration::ZERO);
    assert!(poll!(answers.next()).is_pending());
    follower.owed.lock().unwrap().clear(); // the connection dropped every call
    assert!(answers.next().await.unwrap().is_err());
    assert!(answers.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_commit_only_request_gives_way_to_one_with_entries() {
    let follower = Follower::default();
    let (tx, input) = input();
    tx.send(request(5, 0)).unwrap();
    tx.send(request(5, 2)).unwrap();
    let hold = Duration::from_millis(2);
    let mut answers = follower.pipeline(input, 4, hold);
    assert!(poll!(answers.next()).is_pending());
    assert_eq!(follower.sent(), vec![(5, 2)]);
    tokio::time::advance(hold * 2).await;
    assert!(poll!(answers.next()).is_pending());
    assert_eq!(
        follower.sent(),
        vec![(5, 2)],
        "the commit-only request is gone"
    );
}

#[tokio::test(start_paused = true)]
async fn a_commit_only_request_goes_once_its_hold_ends() {
    let follower = Follower::default();
    let (tx, input) = input();
    tx.send(request(5, 0)).unwrap();
    let hold = Duration::from_millis(2);
    let mut answers = follower.pipeline(input, 4, hold);
    assert!(poll!(answers.next()).is_pending());
    assert!(follower.sent().is_empty(), "held");
    tokio::time::advance(hold).await;
    assert!(poll!(answers.next()).is_pending());
    assert_eq!(follower.sent(), vec![(5, 0)]);
    follower.answer(0, AppendEntriesResponse::Success);
    assert_eq!(answers.next().await.unwrap().unwrap(), Ok(Some(log_id(5))));
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn a_commit_only_request_goes_at_once_when_the_input_ends() {
    // A heartbeat is a stream of one request without entries: it must not wait.
    let follower = Follower::default();
    let (tx, input) = input();
    tx.send(request(5, 0)).unwrap();
    drop(tx);
    let mut answers = follower.pipeline(input, 4, Duration::from_secs(60));
    assert!(poll!(answers.next()).is_pending());
    assert_eq!(follower.sent(), vec![(5, 0)]);
    follower.answer(0, AppendEntriesResponse::Success);
    assert_eq!(answers.next().await.unwrap().unwrap(), Ok(Some(log_id(5))));
    assert!(answers.next().await.is_none());
}
