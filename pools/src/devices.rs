//! The devices of this identity: listing them, and retiring one that is lost for good.
//!
//! Retiring a device marks it in the identity document (synced to the identity's other
//! devices and to the custodians in its pools) and takes it out of every pool this identity is
//! in: placement stops counting it as a holder (its share is re-placed by repair) and nobody
//! dials it for the pool any more. Each device signs with its own key (certified by the
//! identity), so every pool and the identity document refuse the retired device's changes,
//! every node refuses it blobs and sessions, and a new data key it never sees seals what is
//! stored from then on (`crate::datakeys`). A device imported without the identity key
//! (`kith init --import`, the default) has nothing left to sign or open new data with; one
//! that kept the identity key could certify itself a new node key (docs/security.md).

use kith_crdt::{Key, hex};

use crate::docs::Pools;
use crate::pool::PoolError;

/// One device of this identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its node id.
    pub node: Key,
    /// Its name (host name by default).
    pub name: String,
    /// When it was added (ms since the epoch).
    pub added_ms: i64,
    /// When it was retired, if it was.
    pub retired_ms: Option<i64>,
    /// Whether it is the device this runs on.
    pub this: bool,
    /// When this node last heard from it (ms since the epoch), if ever since it started.
    pub last_seen_ms: Option<i64>,
}

/// What retiring a device did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    /// The device.
    pub node: Key,
    /// Its name.
    pub name: String,
    /// The pools it was taken out of (names).
    pub pools: Vec<String>,
}

/// Why a device could not be retired.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// No device of this identity matches.
    #[error("no device of this identity matches `{0}` (see `kith device ls`)")]
    Unknown(String),
    /// Too few characters to name a device safely.
    #[error("`{0}` is too short: give at least 4 characters of the node id (see `kith device ls`)")]
    TooShort(String),
    /// Several match.
    #[error("`{0}` matches several devices; give more of the node id (see `kith device ls`)")]
    Ambiguous(String),
    /// It is the device this command runs on.
    #[error(
        "{0} is the device you are on; retire it from another device of yours \
         (`kith device revoke {0}` there)"
    )]
    ThisDevice(String),
    /// The identity document or a pool refused.
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// The identity's devices (from its document, and the nodes its pools list under it, which
/// a restored device knows before the document comes back); `seen` says when this node last
/// heard from a node.
pub fn list(pools: &Pools, seen: impl Fn(&Key) -> Option<i64>) -> Vec<DeviceInfo> {
    let Some(v) = pools.identity() else { return Vec::new() };
    let mut out: Vec<DeviceInfo> = v
        .devices
        .iter()
        .map(|(node, d)| DeviceInfo {
            node: *node,
            name: d.name.clone(),
            added_ms: d.added_ms,
            retired_ms: d.revoked_ms,
            this: *node == pools.node(),
            last_seen_ms: seen(node),
        })
        .collect();
    for node in pool_nodes(pools) {
        if !out.iter().any(|d| d.node == node) {
            out.push(DeviceInfo {
                node,
                name: String::new(),
                added_ms: 0,
                retired_ms: None,
                this: node == pools.node(),
                last_seen_ms: seen(&node),
            });
        }
    }
    out
}

/// Nodes the pools list under this identity.
fn pool_nodes(pools: &Pools) -> Vec<Key> {
    let me = pools.signer().author().key;
    let mut out: Vec<Key> = pools
        .list()
        .iter()
        .filter_map(|(_, v)| v.members.get(&me))
        .flat_map(|m| m.nodes.keys().copied())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Retires the device whose node id starts with `spec` (at least 4 hex digits).
pub fn retire(pools: &Pools, spec: &str, now_ms: i64) -> Result<Retired, DeviceError> {
    let v = pools.identity().ok_or_else(|| DeviceError::Unknown(spec.into()))?;
    let want = spec.trim().to_ascii_lowercase();
    let mut known: Vec<Key> = v.devices.keys().copied().chain(pool_nodes(pools)).collect();
    known.sort();
    known.dedup();
    let hits: Vec<Key> =
        known.into_iter().filter(|n| want.len() >= 4 && hex(&n[..]).starts_with(&want)).collect();
    if want.len() < 4 {
        return Err(DeviceError::TooShort(spec.into()));
    }
    let node = match hits.as_slice() {
        [n] => *n,
        [] => return Err(DeviceError::Unknown(spec.into())),
        _ => return Err(DeviceError::Ambiguous(spec.into())),
    };
    if node == pools.node() {
        return Err(DeviceError::ThisDevice(hex(&node[..8])));
    }
    // The pools that count on it now (retiring it in the identity document retires it in
    // them too, see `Pools::follow_identity`).
    let me = pools.signer().author().key;
    let held: Vec<String> = pools
        .list()
        .iter()
        .filter(|(_, v)| v.members.get(&me).is_some_and(|m| m.nodes.contains_key(&node)))
        .map(|(_, v)| v.charter.name.clone())
        .collect();
    pools.with_identity(|d, s, now| {
        // A device the document has not heard of yet (only a pool listed it) is listed first.
        d.add_device(s, &node, "", now)?;
        d.revoke_device(s, &node, now).map(|_| ())
    })?;
    // New objects are sealed to a key the retired device never sees.
    pools.rotate_data_key()?;
    for (id, _) in pools.list() {
        let signer = pools.signer();
        pools.with_pool(&hex(&id), |p| p.retire_node(signer, &node, now_ms))?;
    }
    let taken = held;
    let name = v.devices.get(&node).map(|d| d.name.clone()).unwrap_or_default();
    Ok(Retired { node, name, pools: taken })
}

/// Devices retired by the identities this node knows (its own and those it keeps), so the
/// node can stop dialling them.
pub fn retired_nodes(pools: &Pools) -> Vec<Key> {
    let mut out: Vec<Key> = pools
        .identity()
        .into_iter()
        .chain(pools.custody_views())
        .flat_map(|v| v.devices.into_iter().filter(|(_, d)| d.revoked_ms.is_some()).map(|(n, _)| n))
        .collect();
    out.sort();
    out.dedup();
    out
}
