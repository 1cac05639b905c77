//! Which background services a node runs, built from the node's parts: the one place that
//! knows both `Inner` and every service, so the service modules take only the handles they
//! use and never import the node (see `supervisor` for how they run and stop). The disk
//! sampler starts earlier, with the engine, in `node.rs`.

use shoal_core::Error;
use shoal_core::shard::META_GROUP;

use crate::bootstrap::{MapPublisher, publish_map};
use crate::cluster_map::{MapFollower, adopt_stored};
use crate::leadership::LeaderBalancer;
use crate::node::Inner;
use crate::peers::PeerBook;
use crate::reaper::Reaper;
use crate::status::StatusPoll;

/// Starts every service of a node whose groups are open; `members` is the cluster's size.
pub(crate) async fn start(inner: &Inner, me: u64, members: usize) -> Result<(), Error> {
    start_map_services(inner, members == 1).await?;
    let reaper = Reaper::new(inner.groups.clone(), inner.engine.clone(), &inner.tuning);
    inner.services.start("reaper", |cancel| reaper.run(cancel));
    if members > 1 && !inner.tuning.leader_balance_interval.is_zero() {
        let balancer = LeaderBalancer {
            me,
            groups: inner.groups.clone(),
            map: inner.map.subscribe(),
            meta_preferred: inner.topology.meta_replicas.first().copied(),
            transfers: inner.leader_transfers.clone(),
            interval: inner.tuning.leader_balance_interval,
        };
        inner
            .services
            .start("leader-balancer", |cancel| balancer.run(cancel));
    }
    start_peer_services(inner, members > 1);
    Ok(())
}

/// On a node with a metadata replica: adopts the stored map if it is newer than the seed,
/// and makes sure the bootstrap map is stored (inline on a lone node, else by the
/// `MapPublisher` service).
async fn start_map_services(inner: &Inner, lone: bool) -> Result<(), Error> {
    let Some(meta) = inner.groups.get(META_GROUP) else {
        return Ok(());
    };
    if adopt_stored(&inner.engine, &inner.map)? {
        tracing::info!(
            epoch = inner.map.current().epoch,
            "adopted the stored cluster map"
        );
    }
    if lone {
        if !publish_map(meta, &inner.engine, &inner.topology.map).await? {
            return Err(Error::Internal(
                "the cluster map could not be stored".into(),
            ));
        }
    } else {
        let publisher = MapPublisher {
            groups: inner.groups.clone(),
            engine: inner.engine.clone(),
            map: inner.topology.map.clone(),
        };
        inner
            .services
            .start("map-publisher", |cancel| publisher.run(cancel));
    }
    let follower = MapFollower {
        groups: inner.groups.clone(),
        engine: inner.engine.clone(),
        map: inner.map.clone(),
    };
    inner
        .services
        .start("map-follower", |cancel| follower.run(cancel));
    Ok(())
}

/// Starts the services that keep this node's view of its peers current, the `PeerBook` and
/// the `StatusPoll`, when the cluster has other nodes (`peers`). A lone node starts
/// neither: one that grows will need both started when its first peer joins.
fn start_peer_services(inner: &Inner, peers: bool) {
    if !peers {
        return;
    }
    let me = inner.config.id;
    let book = PeerBook {
        me,
        map: inner.map.subscribe(),
        router: inner.router.clone(),
        peers: inner.peers.clone(),
    };
    inner.services.start("peer-book", |cancel| book.run(cancel));
    let poll = StatusPoll {
        me,
        map: inner.map.subscribe(),
        router: inner.router.clone(),
        peers: inner.peers.clone(),
        groups: inner.groups.clone(),
        disk: inner.engine.disk().clone(),
        interval: inner.tuning.status_interval,
    };
    inner
        .services
        .start("status-poll", |cancel| poll.run(cancel));
}
