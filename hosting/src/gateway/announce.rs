//! Announcing the names of the sites this node serves on mDNS.

use std::sync::Arc;
use std::time::Duration;

use kith_pools::docs::Pools;

/// How often the announced site names are brought in line with the pools.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);

/// Keeps the names of the sites this node serves announced on mDNS (`NAME.local`, answering
/// with this node's addresses, HTTP on `port`) until `cancel`, and withdraws them then: its
/// pools' sites, and the partners' sites it is an edge of.
pub async fn announce(
    pools: Arc<Pools>,
    edges: Arc<kith_pools::replica::Edges>,
    mdns: Arc<kith_node::net::mdns::Mdns>,
    port: u16,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        let mut want: std::collections::BTreeSet<String> = pools
            .list()
            .iter()
            .flat_map(|(_, v)| {
                v.sites()
                    .filter(|(o, n, s)| {
                        s.served().is_some() && v.site(n).is_some_and(|(w, _)| w == **o)
                    })
                    .map(|(_, n, _)| n.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        want.extend(edges.names());
        let have: std::collections::BTreeSet<String> = mdns.published_names().into_iter().collect();
        for n in want.difference(&have) {
            match mdns.publish_name(n, port) {
                Ok(()) => tracing::info!(site = %n, "answering for {n}.local on mDNS"),
                Err(e) => tracing::warn!(site = %n, error = %e, "cannot announce a site name"),
            }
        }
        for n in have.difference(&want) {
            mdns.unpublish_name(n);
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
        }
    }
    for n in mdns.published_names() {
        mdns.unpublish_name(&n);
    }
}
