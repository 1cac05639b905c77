//! Real network isolation for the chaos suite (root only): every node runs in a network
//! namespace of its own, with its own address on a private bridge, and partitions drop
//! packets in the kernel (blackhole routes) instead of asking the nodes' transport to.
//!
//! Routes are used rather than iptables or netem because they need nothing installed and
//! no kernel module beyond what network namespaces already require; a blackhole route
//! drops packets silently, exactly as a cut cable or a dropping firewall does, so TCP
//! connections stall and time out rather than fail fast. The test client lives in the
//! root namespace and always reaches every node, as Jepsen's control node does.

use std::process::Command;

use rand::Rng;

/// A bridge, one namespace per node, and their addresses; all removed when dropped.
pub struct Netns {
    tag: String,
    /// Addresses are `10.{net.0}.{net.1}.{node id}`; the root namespace is `.254`.
    net: (u8, u8),
    nodes: usize,
}

/// Runs `ip` with `args`; the error names the command and what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Why this machine cannot isolate nodes in namespaces, if it cannot (not root, no
    /// `ip`, namespaces refused by the kernel or a container).
    pub fn unavailable() -> Option<String> {
        let probe = format!("shoal-probe-{}", std::process::id());
        match ip(&["netns", "add", &probe]) {
            Ok(()) => {
                let _ = ip(&["netns", "del", &probe]);
                None
            }
            Err(e) => Some(e),
        }
    }

    /// Creates namespaces for nodes `1..=nodes` on a fresh bridge with a random private
    /// /24, so several clusters can run side by side.
    pub fn create(nodes: usize) -> Netns {
        assert!((1..=250).contains(&nodes), "1 to 250 nodes per bridge");
        let mut rng = rand::rng();
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let netns = Netns {
                tag: format!("{:06x}", rng.random_range(0..0x100_0000u32)),
                net: (rng.random_range(100..200), rng.random_range(0..=255)),
                nodes,
            };
            match netns.build() {
                Ok(()) => return netns,
                // Dropping removes whatever part was built.
                Err(e) => last_error = e,
            }
        }
        panic!("cannot build the namespaces: {last_error}");
    }

    fn bridge(&self) -> String {
        format!("shb{}", self.tag)
    }

    fn veth(&self, id: u64) -> String {
        format!("shv{}n{id}", self.tag)
    }

    /// The namespace of node `id`.
    pub fn namespace(&self, id: u64) -> String {
        format!("shoal-{}-{id}", self.tag)
    }

    /// Node `id`'s address, reachable from the root namespace and the other nodes.
    pub fn addr(&self, id: u64) -> String {
        format!("10.{}.{}.{id}", self.net.0, self.net.1)
    }

    fn build(&self) -> Result<(), String> {
        let bridge = self.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        let root_addr = format!("10.{}.{}.254/24", self.net.0, self.net.1);
        ip(&["addr", "add", &root_addr, "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for id in 1..=self.nodes as u64 {
            let (ns, veth) = (self.namespace(id), self.veth(id));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let addr = format!("{}/24", self.addr(id));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Node `id` drops every packet to `peers` (and keeps talking to everyone else);
    /// replaces whatever it dropped before. Works whether the node runs or not.
    pub fn block(&self, id: u64, peers: &[u64]) {
        let ns = self.namespace(id);
        ip(&["-n", &ns, "route", "flush", "type", "blackhole"])
            .unwrap_or_else(|e| panic!("unblock node {id}: {e}"));
        for &peer in peers {
            let dst = format!("{}/32", self.addr(peer));
            ip(&["-n", &ns, "route", "add", "blackhole", &dst])
                .unwrap_or_else(|e| panic!("block {peer} on node {id}: {e}"));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and so the pair.
        for id in 1..=self.nodes as u64 {
            let _ = ip(&["netns", "del", &self.namespace(id)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
