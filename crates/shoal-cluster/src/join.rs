//! Joining a running cluster (`--join`), and the copy of the cluster map every node keeps
//! in its data directory.
//!
//! A new node asks any member it is given (their peer addresses) to admit it, over a guest
//! connection (`shoal_raft::transport::guest_call`): the member passes the request to the
//! metadata group's leader, which adds the node to the map (a new epoch) and answers with
//! that map. The node saves the map, then records its identity (the cluster id comes from
//! the map, never from its own flags), so a restart with the same flags resumes from the
//! saved map without asking again. A crash between admission and saving just asks again,
//! which is idempotent for the same id and address.

use std::path::Path;
use std::time::{Duration, Instant};

use shoal_core::Error;
use shoal_core::map::{ClusterMap, NodeInfo};
use shoal_raft::transport::guest_call;

use crate::admin::{AdminReply, AdminRequest, decode, encode};
use crate::topology::{Identity, Topology};

const MAP_FILE: &str = "cluster-map.json";

/// The cluster map this node saved last, if any.
pub(crate) fn saved_map(data_dir: &Path) -> Result<Option<ClusterMap>, Error> {
    let path = data_dir.join(MAP_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Storage(format!(
                "{} is unreadable ({e}): move it aside and restart; the node fetches the map from its peers",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Storage(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Saves `map` durably (write, fsync, rename, fsync the directory).
pub(crate) fn save_map(data_dir: &Path, map: &ClusterMap) -> Result<(), Error> {
    let path = data_dir.join(MAP_FILE);
    let tmp = data_dir.join("cluster-map.json.tmp");
    let bytes = serde_json::to_vec_pretty(map).expect("the map serialises");
    std::fs::create_dir_all(data_dir)
        .and_then(|_| std::fs::write(&tmp, bytes))
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .and_then(|_| std::fs::File::open(data_dir)?.sync_all())
        .map_err(|e| Error::Storage(format!("cannot write {}: {e}", path.display())))
}

/// Asks the members at `seeds` to admit `me`, trying each in turn until one answers or
/// `patience` runs out; returns the map that admitted it. A refusal (an id or address in
/// use, a removed id) is final and returned at once.
pub(crate) async fn request_admission(
    seeds: &[String],
    me: &NodeInfo,
    tls: Option<&shoal_tls::Tls>,
    patience: Duration,
) -> Result<ClusterMap, Error> {
    let payload = encode(&AdminRequest::Join(me.clone()));
    let started = Instant::now();
    // The latest failure per member, for the error message.
    let mut failures: std::collections::BTreeMap<&str, String> = Default::default();
    loop {
        for seed in seeds {
            match guest_call(
                seed,
                me.id,
                "",
                tls,
                payload.clone(),
                Duration::from_secs(10),
            )
            .await
            {
                Ok(answer) => match decode::<Result<AdminReply, Error>>(&answer)? {
                    Ok(AdminReply::Map(map)) => return Ok(map),
                    Ok(other) => {
                        return Err(Error::Internal(format!(
                            "{seed} answered a join with {other:?}"
                        )));
                    }
                    Err(e @ Error::Invalid(_)) => {
                        return Err(Error::Invalid(format!(
                            "the cluster refused to admit this node: {e}"
                        )));
                    }
                    Err(e) => {
                        failures.insert(seed, format!("{seed}: {e}"));
                    }
                },
                Err(e) => {
                    failures.insert(seed, e);
                }
            }
        }
        if started.elapsed() >= patience {
            let failures: Vec<String> = failures.into_values().collect();
            return Err(Error::Invalid(format!(
                "cannot join: no member at --join {} admitted this node within {} s ({}); \
                 check the addresses are members' --peer-addr and that they are running",
                seeds.join(","),
                patience.as_secs(),
                failures.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asks the members at `seeds` for their cluster map (a restarted node that may have been
/// removed while it was down). `None` when none answers quickly.
pub(crate) async fn fetch_map(
    seeds: &[String],
    me: u64,
    cluster_id: &str,
    tls: Option<&shoal_tls::Tls>,
) -> Option<ClusterMap> {
    let payload = encode(&AdminRequest::Map);
    for seed in seeds {
        if let Ok(answer) = guest_call(
            seed,
            me,
            cluster_id,
            tls,
            payload.clone(),
            Duration::from_secs(2),
        )
        .await
            && let Ok(Ok(AdminReply::Map(map))) = decode::<Result<AdminReply, Error>>(&answer)
        {
            return Some(map);
        }
    }
    None
}

/// The map this node starts from, and the founding topology when it is a founding member
/// (`--initial-cluster`, or a lone node) rather than one that joined. The saved map, when
/// the data directory has one of this cluster, wins over the flags: the cluster may have
/// changed since it was founded.
pub(crate) async fn seed_map(
    config: &crate::NodeConfig,
    info: &NodeInfo,
    tuning: &crate::Tuning,
) -> Result<(ClusterMap, Option<Topology>), Error> {
    let cluster = &config.cluster;
    let saved = saved_map(&config.data_dir)?;
    if !cluster.join.is_empty() {
        if !cluster.initial_cluster.is_empty() {
            return Err(Error::Invalid(
                "--join and --initial-cluster together: --initial-cluster founds a new cluster, \
                 --join adds this node to a running one; pass only one"
                    .into(),
            ));
        }
        if cluster.peer_addr.is_none() {
            return Err(Error::Invalid(
                "--join needs --peer-addr: the members reach this node there".into(),
            ));
        }
        let identity = read_identity(&config.data_dir)?;
        if let (Some(identity), Some(map)) = (&identity, saved)
            && identity.cluster_id == map.cluster_id
        {
            return Ok((map, None));
        }
        let map = request_admission(
            &cluster.join,
            info,
            tuning.transport.tls.as_ref(),
            tuning.join_patience,
        )
        .await?;
        if let Some(identity) = identity
            && identity.cluster_id != map.cluster_id
        {
            return Err(Error::Invalid(format!(
                "data directory {} belongs to cluster {}, but --join reaches cluster {}: \
                 use an empty --data-dir to join it",
                config.data_dir.display(),
                identity.cluster_id,
                map.cluster_id
            )));
        }
        save_map(&config.data_dir, &map)?;
        return Ok((map, None));
    }
    let lone = cluster.initial_cluster.is_empty();
    let members = if lone {
        // A lone node: its peer address is not part of its identity.
        vec![(info.id, "local".to_string())]
    } else {
        cluster.initial_cluster.clone()
    };
    if members.len() > 1 && cluster.peer_addr.is_none() {
        return Err(Error::Invalid(
            "--initial-cluster lists other nodes, so --peer-addr is required".into(),
        ));
    }
    let mut topology = Topology::new(info.id, &members, config.shards, cluster.replication)?;
    if lone {
        // Nodes that join a lone node reach it at its real address.
        topology.map.nodes[0].peer_addr = info.peer_addr.clone();
    }
    let seed = match saved {
        Some(map) if map.cluster_id == topology.map.cluster_id => map,
        _ => topology.map.clone(),
    };
    Ok((seed, Some(topology)))
}

/// The identity recorded in `data_dir`, if any.
fn read_identity(data_dir: &Path) -> Result<Option<Identity>, Error> {
    let path = data_dir.join("identity.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Storage(format!("{} is unreadable: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Storage(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// The error a node removed from the cluster starts (or stops serving) with.
pub(crate) fn removed_error(me: u64, map: &ClusterMap) -> Error {
    let cluster = map.cluster_id.clone();
    if map.dead.contains(&me) {
        Error::Replaced { node: me, cluster }
    } else {
        Error::Removed { node: me, cluster }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saved_map_survives_a_restart_and_a_damaged_one_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        assert!(saved_map(dir.path()).unwrap().is_none());
        let members: Vec<(u64, String)> = (1..=3).map(|i| (i, format!("h:{i}"))).collect();
        let map = crate::topology::Topology::new(1, &members, 4, 3)
            .unwrap()
            .map;
        save_map(dir.path(), &map).unwrap();
        assert_eq!(saved_map(dir.path()).unwrap(), Some(map));
        std::fs::write(dir.path().join(MAP_FILE), b"{").unwrap();
        let err = saved_map(dir.path()).unwrap_err().to_string();
        assert!(err.contains("move it aside"), "{err}");
    }
}
