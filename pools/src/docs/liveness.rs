//! When each node of this node's pools was last heard from: a node that answers a session or a
//! request is alive, whatever the outcome of what followed.

use iroh::EndpointId;
use kith_crdt::Key;

use super::Pools;

impl Pools {
    /// When `node` last answered this one (ms since the epoch), since this node started.
    pub fn last_seen_ms(&self, node: &Key) -> Option<i64> {
        if *node == self.node {
            return Some(self.now_ms());
        }
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied()
    }

    /// Notes that `node` just answered this one (a sync session's greeting, a request): it is
    /// alive, whatever the outcome of what followed. Only nodes listed in a pool here are
    /// remembered, so strangers cannot grow the table.
    pub fn saw(&self, node: &Key) {
        let listed = self
            .all_views()
            .iter()
            .any(|(_, v)| v.members.values().any(|m| m.nodes.contains_key(node)));
        if !listed {
            return;
        }
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(*node, self.now_ms());
    }

    /// How long `node` has gone without a session with this one (ms), counting from the
    /// start of these [`Pools`] for a node not seen since.
    pub fn silent_for_ms(&self, node: &Key) -> i64 {
        if *node == self.node {
            return 0;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied();
        self.now_ms() - seen.unwrap_or(self.started_ms)
    }

    /// Whether `node` was heard from within `within_ms` (this node always is).
    pub fn is_up(&self, node: &Key, within_ms: i64) -> bool {
        if *node == self.node {
            return true;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied();
        seen.is_some_and(|t| self.now_ms() - t <= within_ms)
    }

    /// The other nodes of `v`'s active members, most recently heard from first (whom to ask
    /// for a pool's blobs).
    pub fn nodes_by_recency(&self, v: &crate::view::PoolView) -> Vec<EndpointId> {
        let mut nodes: Vec<(i64, Key)> = v
            .holders()
            .into_iter()
            .filter(|h| h.node != self.node)
            .map(|h| (self.silent_for_ms(&h.node), h.node))
            .collect();
        nodes.sort();
        nodes.dedup_by_key(|(_, n)| *n);
        nodes.into_iter().filter_map(|(_, n)| EndpointId::from_bytes(&n).ok()).collect()
    }
}
