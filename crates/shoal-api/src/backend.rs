//! The slice of the node the front ends use, as one object-safe trait.
//!
//! Production only ever passes a `shoal_cluster::Node`; the trait exists so each front end's
//! whole protocol behaviour (framing, pipelining order, routing, status codes, paging) can
//! be tested against the in-memory fake (`crate::fake`, feature `test-util`) without starting
//! Raft groups. Both
//! front ends hold it as `Arc<dyn Backend>`: dynamic dispatch costs one allocation per
//! command, noise next to a Raft round.

use futures_util::future::BoxFuture;
use shoal_cluster::Node;
use shoal_cluster::users::{StoredUser, UserWrite};
use shoal_core::map::ClusterView;
use shoal_core::{Command, Consistency, Error, Limits, Reply, ShardId, ShardLayout};

fn no_users() -> Error {
    Error::Disabled(
        "user management".into(),
        "this node keeps no users (a test backend)".into(),
    )
}

pub trait Backend: Send + Sync + 'static {
    /// Orders `command` now (before the future is polled) and resolves to its result.
    fn execute(
        &self,
        command: Command,
        consistency: Consistency,
    ) -> BoxFuture<'static, Result<Reply, Error>>;
    /// Like `execute`, but a command for a shard led by another node fails with
    /// `NotLeader` instead of being forwarded (for clients that route by themselves).
    fn execute_direct(
        &self,
        command: Command,
        consistency: Consistency,
    ) -> BoxFuture<'static, Result<Reply, Error>> {
        self.execute(command, consistency)
    }
    /// Cuts this node off from `peers` (fault injection; refused unless the node was
    /// started with it).
    fn set_blocked_peers(&self, _peers: Vec<u64>) -> Result<(), Error> {
        Err(Error::fault_injection_disabled())
    }
    /// Reports `bytes` of free disk space instead of the real figure (None: stop); fault
    /// injection, refused unless the node was started with it.
    fn set_disk_free_override(&self, _bytes: Option<u64>) -> Result<(), Error> {
        Err(Error::fault_injection_disabled())
    }
    /// Answers a read at once when the node can (see `Node::try_read_now`); `None` means
    /// "use `execute`".
    fn try_read_now(
        &self,
        _command: &Command,
        _consistency: Consistency,
    ) -> Option<Result<Reply, Error>> {
        None
    }
    /// Drains node `id` out of the cluster (`cluster remove-node`).
    fn remove_node(&self, _id: u64) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(async { Err(Error::Invalid("this node cannot change the cluster".into())) })
    }
    /// Pauses or resumes new replica moves (`cluster rebalance pause|resume`).
    fn set_rebalance_paused(&self, _paused: bool) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(async { Err(Error::Invalid("this node cannot change the cluster".into())) })
    }
    /// Every user of the cluster, from the metadata leader.
    fn users(&self) -> BoxFuture<'static, Result<Vec<StoredUser>, Error>> {
        Box::pin(async { Err(no_users()) })
    }
    /// Creates or changes a user; answers every user.
    fn put_user(
        &self,
        _user: StoredUser,
        _mode: UserWrite,
    ) -> BoxFuture<'static, Result<Vec<StoredUser>, Error>> {
        Box::pin(async { Err(no_users()) })
    }
    /// Removes a user; answers every user left.
    fn remove_user(&self, _name: String) -> BoxFuture<'static, Result<Vec<StoredUser>, Error>> {
        Box::pin(async { Err(no_users()) })
    }
    /// Raft's runtime statistics of the groups this node leads, as text.
    fn raft_stats(&self) -> BoxFuture<'static, String> {
        Box::pin(async { "this node runs no Raft groups\n".to_string() })
    }
    /// The leader of `shard` as far as this node knows (routing hints for clients).
    fn leader_of(&self, _shard: ShardId) -> Option<u64> {
        None
    }
    /// The epoch of this node's cluster map (0: no map, as in tests), so clients can tell
    /// theirs is old.
    fn map_epoch(&self) -> u64 {
        0
    }
    /// This node's id.
    fn id(&self) -> u64;
    fn limits(&self) -> Limits;
    fn layout(&self) -> &ShardLayout;
    fn allow_flush(&self) -> bool;
    fn max_keys_reply(&self) -> usize;
    fn cluster_view(&self) -> ClusterView;
    /// `name:value` counters for INFO's stats section.
    fn stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Shards (Raft groups) stopped on this node for good, with why (`/health`).
    fn failed_groups(&self) -> Vec<(ShardId, Error)> {
        Vec::new()
    }
    /// `name:bytes` for INFO's memory section: the budget, its parts, what they hold.
    fn memory(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

impl Backend for Node {
    fn failed_groups(&self) -> Vec<(ShardId, Error)> {
        Node::failed_groups(self)
    }

    fn execute(
        &self,
        command: Command,
        consistency: Consistency,
    ) -> BoxFuture<'static, Result<Reply, Error>> {
        Box::pin(Node::execute(self, command, consistency))
    }

    fn execute_direct(
        &self,
        command: Command,
        consistency: Consistency,
    ) -> BoxFuture<'static, Result<Reply, Error>> {
        Box::pin(Node::execute_direct(self, command, consistency))
    }

    fn set_blocked_peers(&self, peers: Vec<u64>) -> Result<(), Error> {
        match self.faults() {
            Some(faults) => {
                faults.set_blocked(peers);
                Ok(())
            }
            None => Err(Error::fault_injection_disabled()),
        }
    }

    fn set_disk_free_override(&self, bytes: Option<u64>) -> Result<(), Error> {
        Node::set_disk_free_override(self, bytes)
    }

    fn try_read_now(
        &self,
        command: &Command,
        consistency: Consistency,
    ) -> Option<Result<Reply, Error>> {
        Node::try_read_now(self, command, consistency)
    }

    fn remove_node(&self, id: u64) -> BoxFuture<'static, Result<(), Error>> {
        let node = self.clone();
        Box::pin(async move { node.remove_node(id).await })
    }

    fn set_rebalance_paused(&self, paused: bool) -> BoxFuture<'static, Result<(), Error>> {
        let node = self.clone();
        Box::pin(async move { node.set_rebalance_paused(paused).await })
    }

    fn users(&self) -> BoxFuture<'static, Result<Vec<StoredUser>, Error>> {
        let node = self.clone();
        Box::pin(async move { node.users().await })
    }

    fn put_user(
        &self,
        user: StoredUser,
        mode: UserWrite,
    ) -> BoxFuture<'static, Result<Vec<StoredUser>, Error>> {
        let node = self.clone();
        Box::pin(async move { node.put_user(user, mode).await })
    }

    fn remove_user(&self, name: String) -> BoxFuture<'static, Result<Vec<StoredUser>, Error>> {
        let node = self.clone();
        Box::pin(async move { node.remove_user(&name).await })
    }

    fn leader_of(&self, shard: ShardId) -> Option<u64> {
        Node::leader_of(self, shard)
    }

    fn map_epoch(&self) -> u64 {
        Node::map_epoch(self)
    }

    fn id(&self) -> u64 {
        Node::id(self)
    }

    fn limits(&self) -> Limits {
        Node::limits(self)
    }

    fn layout(&self) -> &ShardLayout {
        Node::layout(self)
    }

    fn allow_flush(&self) -> bool {
        Node::allow_flush(self)
    }

    fn max_keys_reply(&self) -> usize {
        Node::max_keys_reply(self)
    }

    fn cluster_view(&self) -> ClusterView {
        Node::cluster_view(self)
    }

    fn raft_stats(&self) -> BoxFuture<'static, String> {
        let node = self.clone();
        Box::pin(async move { node.raft_stats().await })
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        let s = Node::stats(self);
        vec![
            ("total_commands_processed", s.commands),
            ("shoal_log_entries_proposed", s.log_entries_proposed),
            ("shoal_writes_proposed", s.writes_proposed),
            ("shoal_fsyncs", s.fsyncs),
            ("shoal_fsync_requests", s.fsync_requests),
            ("shoal_shards_led", s.shards_led),
            ("shoal_leader_transfers", s.leader_transfers),
            ("shoal_disk_free_bytes", s.disk_free_bytes),
            ("shoal_disk_reserve_bytes", s.disk_reserve_bytes),
            ("shoal_disk_refused", s.disk_refused),
            ("shoal_append_entries_received", s.append_entries_received),
            ("shoal_append_entries_empty", s.append_entries_empty),
            ("shoal_append_entries_conflicts", s.append_entries_conflicts),
        ]
    }

    fn memory(&self) -> Vec<(&'static str, u64)> {
        let m = Node::memory(self);
        let b = m.budget;
        // Redis's used_memory is what its allocator holds; the resident set is the figure
        // the budget bounds here, so both report it.
        let rss = m.rss_bytes.unwrap_or(0);
        vec![
            ("used_memory", rss),
            ("used_memory_rss", rss),
            ("maxmemory", b.total_bytes),
            ("shoal_memory_budget_block_cache", b.block_cache_bytes),
            ("shoal_memory_budget_write_buffers", b.write_buffer_bytes),
            ("shoal_memory_budget_record_cache", b.record_cache_bytes),
            ("shoal_memory_budget_raft_log_cache", b.raft_log_cache_bytes),
            ("shoal_memory_budget_reserve", b.reserve_bytes),
            ("shoal_memory_block_cache", m.block_cache_bytes),
            ("shoal_memory_write_buffers", m.write_buffer_bytes),
            ("shoal_memory_record_cache", m.record_cache_bytes),
            ("shoal_memory_raft_log_cache", m.raft_log_cache_bytes),
        ]
    }
}
