//! Which background services a node runs, built from the node's parts: the one place that
//! knows both `Inner` and every service, so the service modules take only the handles they
//! use and never import the node (see `supervisor` for how they run and stop). The disk
//! sampler starts earlier, with the engine, in `node.rs`.

use shoal_core::Error;
use shoal_core::shard::META_GROUP;

use crate::bootstrap::{MapPublisher, publish_map};
use crate::cluster_map::{MapFollower, adopt_stored};
use crate::gossip::{AddressBook, GossipService};
use crate::handler::StatusSource;
use crate::leadership::LeaderBalancer;
use crate::mover::Reconciler;
use crate::node::Inner;
use crate::peers::PeerBook;
use crate::reaper::Reaper;
use crate::replicas::ReplicaKeeper;

/// Starts every service of a node whose groups are open; `lone`: a node started without
/// peers (it may gain some later: the peer services run anyway).
pub(crate) async fn start(
    inner: &Inner,
    me: u64,
    lone: bool,
    gossip: Option<Gossiping>,
) -> Result<(), Error> {
    start_map_services(inner, lone).await?;
    let reaper = Reaper::new(inner.groups.clone(), inner.engine.clone(), &inner.tuning);
    inner.services.start("reaper", |cancel| reaper.run(cancel));
    let keeper = ReplicaKeeper {
        me,
        map: inner.map.subscribe(),
        groups: inner.groups.clone(),
        opener: inner.opener.clone(),
        data_dir: inner.config.data_dir.clone(),
        removed: inner.removed.clone(),
    };
    inner
        .services
        .start("replica-keeper", |cancel| keeper.run(cancel));
    let reconciler = Reconciler {
        control: inner.control.clone(),
        limits: inner.tuning.moves.clone(),
        dead_after: inner.tuning.dead_after,
    };
    inner
        .services
        .start("reconciler", |cancel| reconciler.run(cancel));
    if !inner.tuning.leader_balance_interval.is_zero() {
        let balancer = LeaderBalancer {
            me,
            groups: inner.groups.clone(),
            map: inner.map.subscribe(),
            meta_preferred: inner.map.current().meta.first().copied(),
            transfers: inner.leader_transfers.clone(),
            interval: inner.tuning.leader_balance_interval,
        };
        inner
            .services
            .start("leader-balancer", |cancel| balancer.run(cancel));
    }
    start_peer_services(inner, gossip);
    Ok(())
}

/// Gossip, started with the peer listener (`gossip::start`), for its service to run.
pub(crate) struct Gossiping {
    pub handle: chitchat::ChitchatHandle,
    pub book: AddressBook,
    pub source: StatusSource,
}

/// On a node with a metadata replica: adopts the stored map if it is newer than the seed,
/// and makes sure the bootstrap map is stored (inline on a lone node, else by the
/// `MapPublisher` service).
async fn start_map_services(inner: &Inner, lone: bool) -> Result<(), Error> {
    let follower = MapFollower {
        groups: inner.groups.clone(),
        engine: inner.engine.clone(),
        map: inner.map.clone(),
    };
    inner
        .services
        .start("map-follower", |cancel| follower.run(cancel));
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
        if !publish_map(&meta, &inner.engine, &inner.topology.map).await? {
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
    Ok(())
}

/// Starts the services that keep this node's view of its peers current, the `PeerBook` and
/// the `GossipService` (a node without a peer address has no peers).
fn start_peer_services(inner: &Inner, gossip: Option<Gossiping>) {
    let me = inner.config.id;
    let book = PeerBook {
        me,
        map: inner.map.subscribe(),
        router: inner.router.clone(),
        peers: inner.peers.clone(),
    };
    inner.services.start("peer-book", |cancel| book.run(cancel));
    let Some(gossip) = gossip else {
        return;
    };
    let service = GossipService {
        me,
        handle: gossip.handle,
        book: gossip.book,
        source: gossip.source,
        interval: inner.tuning.gossip.interval,
        map: inner.map.subscribe(),
        cell: inner.map.clone(),
        router: inner.router.clone(),
        peers: inner.peers.clone(),
        groups: inner.groups.clone(),
        disk: inner.engine.disk().clone(),
    };
    inner.services.start("gossip", |cancel| service.run(cancel));
}
