//! `kith up --serve-relay ADDR:PORT`: iroh's own relay server (the `iroh-relay` crate), run by
//! a node that both neighbourhoods reach (an uplink, a point-to-point link), so that nodes with
//! no direct path between them still reach each other (docs/federation.md "Relays").
//!
//! - Plain HTTP on the address given: what it carries is already end-to-end encrypted QUIC
//!   between the two nodes, and the relay's handshake proves each client's node key. No
//!   certificates, no ACME, no QUIC address discovery.
//! - Who may use it: the nodes of this node's pools' active members; under each agreement in
//!   force where one of its pools lends relay, the partner's nodes named in it (its contacts)
//!   and those the partner named as its holders for the pool; and the peers this node's owner
//!   added with `kith peer add`. Anyone else is refused with a reason, a neighbour on its LAN
//!   too. Read again every second: a node that is no longer let in (its member left, the
//!   agreement ended) has its relayed connections cut.
//! - How much: the bytes it receives from clients in a calendar month, at most the sum of the
//!   egress its pools lend with relay (`--lend-egress`) in the agreements in force. Past it the
//!   relay stops (every relayed connection ends; at the rate of the moment, within 20 ms of
//!   traffic before the bound) until the next month; the count is kept in
//!   `HOME/relay-usage` across restarts. The bound counts everything the relay carries, the
//!   pool's own traffic too. With no agreement in force that lends relay, or none that states
//!   an egress, the relay carries its own pools' nodes and the peers added by ticket, unbounded
//!   (its owner's own traffic).
//! - For whom: what each partner's nodes sent through it goes into the pool's ledger, on the
//!   partner's line (`relayed_for`), counted by the front door ([`gate`]) per connection.
//!   And bounded per partner: once a partner's nodes exchanged this month the egress its
//!   agreement lends (when it states one), they are cut and refused until the next month,
//!   while the pool's own nodes and other partners' go on (counted every check, kept in
//!   `HOME/relay-partners`).
//!   The door also bounds connections before the relay's handshake (how many, how long).

mod gate;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use iroh::EndpointId;
use iroh_relay::server::{
    Access, AccessControl, ClientRequest, ConnectionId, RelayConfig, Server, ServerConfig,
};
use kith_crdt::Key;
use kith_node::net::Node;
use kith_node::net::ticket::NodeTicket;
use kith_pools::docs::Pools;
use kith_pools::ledger::Period;
use kith_pools::replica::Replicator;
use tokio_util::sync::CancellationToken;

use crate::api::node::RelayStatus;

/// The file that keeps this month's count.
const USAGE_FILE: &str = "relay-usage";
/// The file that keeps this month's count per partner (per agreement).
const PARTNERS_FILE: &str = "relay-partners";
/// How often the count is read and checked against the bound. The relay stops once what it
/// carried, plus what it carried in the last such interval, reaches the bound: at the rate
/// of the moment it stops just before the bound, past it only by a sudden rise of traffic.
const CHECK_EVERY: Duration = Duration::from_millis(20);
/// How often the agreements and who may use the relay are read again (what is lent, whether
/// any lends relay), in checks.
const AGREEMENTS_EVERY: u32 = 50;
/// How often the count is saved while it grows.
const SAVE_EVERY: Duration = Duration::from_secs(10);
/// How often what the pool gave partners otherwise (its ledger) is read again.
const ELSEWHERE_EVERY: Duration = Duration::from_secs(10);

/// Who may use the relay, counted.
struct Admit {
    /// Whether it serves now (what is lent not used up); when not, the relay still answers
    /// (nodes keep it as their relay, and say why they are refused) but admits nobody.
    open: std::sync::atomic::AtomicBool,
    /// Who may use it (see the module's notes), read again every [`AGREEMENTS_EVERY`] checks.
    allowed: RwLock<Arc<HashSet<EndpointId>>>,
    /// The nodes connected now, with their number of connections.
    connected: Mutex<HashMap<EndpointId, u32>>,
    clients: AtomicU64,
    refused: AtomicU64,
    /// Nodes whose refusal was logged.
    said: Mutex<std::collections::HashSet<EndpointId>>,
    /// Partners' nodes whose agreement's egress is used up this month, with why.
    spent: RwLock<Arc<HashMap<EndpointId, String>>>,
    /// The front door, told which node each connection it let in carries.
    gate: Arc<gate::Gate>,
}

/// Node keys the relay server keeps parsed (iroh-relay's default is a million).
const KEY_CACHE: usize = 4096;

/// Refusals logged at most (then only counted).
const MAX_SAID: usize = 1000;

/// Relayed connections one node may hold at once: iroh keeps one per relay, a few for a moment
/// while it reconnects. A node let in cannot tie up the relay with thousands.
const MAX_PER_NODE: u32 = 4;

/// Relayed connections in all (each holds a task and buffers in the relay server).
const MAX_CLIENTS: u64 = 4096;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for Admit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admit").field("clients", &self.clients).finish_non_exhaustive()
    }
}

impl AccessControl for Admit {
    async fn on_connect(&self, request: &ClientRequest) -> Access {
        let id = request.endpoint_id();
        let conn = request.headers().get(gate::HEADER);
        let conn = conn.and_then(|v| u128::from_str_radix(v.to_str().ok()?, 16).ok());
        let Some(conn) = conn else {
            // The server listens on loopback: only a local program could come round the door.
            return Access::Deny { reason: Some("connect through the relay's address".into()) };
        };
        if !self.open.load(Ordering::Relaxed) {
            return Access::Deny {
                reason: Some("this relay has carried what its pool lends this month".into()),
            };
        }
        let spent = self.spent.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned();
        if let Some(why) = spent {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Access::Deny { reason: Some(why) };
        }
        let allowed = self.allowed.read().unwrap_or_else(|e| e.into_inner()).contains(&id);
        if allowed {
            let mut connected = lock(&self.connected);
            let n = connected.entry(id).or_default();
            if *n >= MAX_PER_NODE || self.clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
                self.refused.fetch_add(1, Ordering::Relaxed);
                if *n == 0 {
                    connected.remove(&id);
                }
                return Access::Deny {
                    reason: Some(format!(
                        "this relay holds at most {MAX_PER_NODE} connections of one node and {MAX_CLIENTS} in all"
                    )),
                };
            }
            if !self.gate.admitted(conn, id) {
                if *n == 0 {
                    connected.remove(&id);
                }
                return Access::Deny { reason: Some("connection closed".into()) };
            }
            *n += 1;
            self.clients.fetch_add(1, Ordering::Relaxed);
            Access::Allow
        } else {
            // Said once per node (a refused node retries every few seconds).
            self.refused.fetch_add(1, Ordering::Relaxed);
            let first = {
                let mut said = lock(&self.said);
                said.len() < MAX_SAID && said.insert(id)
            };
            if first {
                tracing::info!(node = %id.fmt_short(), "relay: refused a node it does not know");
            }
            Access::Deny {
                reason: Some(
                    "this relay carries its pool's nodes and its federation partners' only".into(),
                ),
            }
        }
    }

    fn on_disconnect(&self, id: EndpointId, _connection: ConnectionId) {
        self.clients.fetch_sub(1, Ordering::Relaxed);
        let mut connected = lock(&self.connected);
        if let Some(n) = connected.get_mut(&id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                connected.remove(&id);
            }
        }
    }
}

/// The federated partners' nodes the relay lets in, and what their agreements lend.
#[derive(Debug, Default)]
struct Partners {
    /// Each node, with the pools and agreements it is let in under (all with one partner
    /// pool: a node two partner pools both claim is let in under neither).
    nodes: HashMap<EndpointId, Vec<(Key, Key)>>,
    /// Each agreement that lends relay: the egress it lends a month (0: none stated) and the
    /// partner's name.
    lent: HashMap<Key, (u64, String)>,
    /// The pool of this node lending under each of those agreements.
    pool_of: HashMap<Key, Key>,
}

impl Partners {
    /// The agreements in force where one of this node's pools lends relay: how many, and the
    /// egress they lend in all (`None` when none states one).
    fn lending(&self) -> (usize, Option<u64>) {
        let stated = self.lent.values().map(|(egress, _)| *egress).filter(|e| *e > 0);
        let bound =
            stated.fold(None, |sum: Option<u64>, e| Some(sum.unwrap_or(0).saturating_add(e)));
        (self.lent.len(), bound)
    }
}

/// Who may use the relay now (see the module's notes); and of them, the federated partners'
/// nodes, with the pool and agreement each is let in under (for the ledger and the bound).
fn allowed(node: &Node, pools: &Pools, rep: &Replicator) -> (HashSet<EndpointId>, Partners) {
    let mut set = HashSet::from([node.id()]);
    set.extend(node.peers().into_iter().filter(|p| p.owner).map(|p| p.id));
    let now = pools.now_ms();
    let list = pools.list();
    for (_, v) in &list {
        for m in v.members.values().filter(|m| m.state == kith_pools::State::Active) {
            set.extend(m.nodes.keys().filter_map(|k| EndpointId::from_bytes(k).ok()));
        }
    }
    let mut partners = Partners::default();
    // Node → (pool, agreement, partner pool) for every agreement that names it.
    let mut claims: HashMap<EndpointId, Vec<(Key, Key, Key)>> = HashMap::new();
    for (pool, v) in &list {
        for (ag, e) in &v.federation.agreements {
            let lends = e.agreement.lending_of(pool).is_some_and(|(l, _)| l.relay);
            if !(lends && matches!(e.state(pool, now), "active" | "leaving")) {
                continue;
            }
            let a = &e.agreement;
            let lends = a.lending_of(pool).map_or(0, |(l, _)| l.egress);
            let Some((partner, name)) = a.partner_of(pool) else { continue };
            partners.lent.insert(*ag, (lends, name.to_string()));
            partners.pool_of.insert(*ag, *pool);
            let contacts = a.offer.contact.iter().chain(&a.acceptance.contact);
            let theirs = contacts
                .filter_map(|t| t.parse::<NodeTicket>().ok())
                .map(|t| t.id)
                .chain(rep.partner_holders(&a.id()));
            for id in theirs {
                // A node of this node's own pools is not the partner's, whatever it says.
                if !set.contains(&id) {
                    claims.entry(id).or_default().push((*pool, *ag, partner));
                }
            }
        }
    }
    // The contacts and holders a partner names are its word: a node two partner pools both
    // name is nobody's (else one could have another's nodes counted against its own bound,
    // or refused once it used up its own).
    for (id, c) in claims {
        if c.iter().all(|x| x.2 == c[0].2) {
            partners.nodes.insert(id, c.into_iter().map(|(p, a, _)| (p, a)).collect());
        }
    }
    set.extend(partners.nodes.keys().copied());
    (set, partners)
}

/// This month's count per agreement in the partners file (`MONTH` on the first line, then
/// `AGREEMENT-HEX BYTES` lines; nothing for another month, no file or a damaged one).
fn load_partners(file: &std::path::Path, month: &str) -> HashMap<Key, u64> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut lines = text.lines();
    if lines.next() != Some(month) {
        return HashMap::new();
    }
    let mut out = HashMap::new();
    for line in lines.take(MAX_PARTNER_LINES) {
        let mut w = line.split_whitespace();
        let key = w.next().and_then(key_of);
        if let (Some(k), Some(n)) = (key, w.next().and_then(|n| n.parse().ok())) {
            out.insert(k, n);
        }
    }
    out
}

/// A key written in hex (64 digits).
fn key_of(h: &str) -> Option<Key> {
    if h.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(k)
}

fn save_partners(file: &std::path::Path, month: &str, used: &HashMap<Key, u64>) {
    let mut text = format!("{month}\n");
    for (k, n) in used.iter().take(MAX_PARTNER_LINES) {
        text.push_str(&format!("{} {n}\n", kith_crdt::hex(k)));
    }
    if let Err(e) = kith_node::fsutil::write_atomic(file, text.as_bytes(), 0o600) {
        tracing::warn!(error = %e, "relay: cannot save this month's count per partner");
    }
}

/// Agreements kept in the partners file at most.
const MAX_PARTNER_LINES: usize = 4096;

/// Relays taken from agreements at most (each names at most a few; a pool has few partners).
const MAX_LEARNED: usize = 16;

/// How often [`follow`] reads the agreements again.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// The relays this node uses: those it was told to use (`configured`), and those the
/// agreements of its pools (`list`) that have not ended name for them
/// ([`kith_federation::Agreement::relays_for`]: their own, and an offering partner's that it
/// lends), at most [`MAX_LEARNED`]. One this pool accepted and the partner has not confirmed
/// yet counts: when the acceptance was carried by hand, the partner's nodes may be reachable
/// only through that relay once the partner recorded it.
fn wanted(
    list: &[(Key, kith_pools::PoolView)],
    now_ms: i64,
    configured: &[iroh::RelayUrl],
) -> Vec<iroh::RelayUrl> {
    let mut want = configured.to_vec();
    let mut learned = 0;
    for (pool, v) in list {
        for e in v.federation.agreements.values() {
            if e.state(pool, now_ms) == "ended" {
                continue;
            }
            for url in e.agreement.relays_for(pool) {
                let Ok(url) = url.parse::<iroh::RelayUrl>() else { continue };
                if !want.contains(&url) && learned < MAX_LEARNED {
                    want.push(url);
                    learned += 1;
                }
            }
        }
    }
    want
}

/// The pool and agreement under which a partner lends this node's pools the relay at `url`
/// ([`kith_federation::Agreement::partner_relays_for`]: named by the partner, not by this
/// pool's side too) in an agreement in force, if any.
fn lender_of(
    list: &[(Key, kith_pools::PoolView)],
    now_ms: i64,
    url: &iroh::RelayUrl,
) -> Option<(Key, Key)> {
    list.iter().find_map(|(pool, v)| {
        v.federation.agreements.iter().find_map(|(id, e)| {
            let named = e.agreement.partner_relays_for(pool).into_iter();
            let named = named.filter_map(|u| u.parse::<iroh::RelayUrl>().ok()).any(|u| u == *url);
            (named && matches!(e.state(pool, now_ms), "active" | "leaving")).then_some((*pool, *id))
        })
    })
}

/// Keeps this node's relays those [`wanted`] names until `stop`: a relay an agreement names is
/// used within [`FOLLOW_EVERY`] of the agreement being recorded here, and dropped as it ends.
/// What the node sends and receives through relays while the only relay it uses is one a
/// partner lends goes into the pool's ledger on that partner's line (`relayed_by`).
pub async fn follow(
    node: Arc<Node>,
    rep: Arc<Replicator>,
    configured: Vec<iroh::RelayUrl>,
    served: Option<iroh::RelayUrl>,
    stop: CancellationToken,
) {
    let pools = rep.pools().clone();
    let mut counted = node.relay_bytes();
    loop {
        let list = pools.list();
        let now = pools.now_ms();
        // Since the last look, through relays: counted on the line of the partner that lends
        // the one relay this node uses (iroh counts relayed bytes in all, not per relay: a
        // node using several counts nothing, rather than charge one partner for another's
        // relay; nor is the relay this node serves a partner's, whatever it names).
        let bytes = node.relay_bytes();
        let since = bytes.saturating_sub(counted);
        counted = bytes;
        let relays = node.relays();
        let only = match &relays[..] {
            [one] if Some(one) != served.as_ref() => Some(one),
            _ => None,
        };
        if let Some((pool, agreement)) = only.and_then(|u| lender_of(&list, now, u))
            && since > 0
        {
            rep.relayed_by(pool, agreement, since);
        }
        let want = wanted(&list, now, &configured);
        if node.set_relays(&want).await {
            let list: Vec<String> = want.iter().map(|u| u.to_string()).collect();
            tracing::info!(relays = %list.join(", "), "relays: using those given and those the agreements name");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
    }
}

/// A running relay.
#[derive(Debug, Clone)]
pub struct Relay {
    status: Arc<Mutex<RelayStatus>>,
}

impl Relay {
    /// What it is doing now.
    pub fn status(&self) -> RelayStatus {
        lock(&self.status).clone()
    }
}

/// The month the usage file counts (empty without a readable one).
fn usage_month(file: &std::path::Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.split_whitespace().next().filter(|m| Period::parse(m).is_ok()).unwrap_or("").to_string()
}

/// This month's count in the usage file: bytes, and the bound it was stopped at if it was
/// (`MONTH BYTES [BOUND]`; nothing for another month or no file).
fn load_usage(file: &std::path::Path, month: &str) -> (u64, Option<u64>) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut words = text.split_whitespace();
    if words.next() != Some(month) {
        return (0, None);
    }
    let bytes = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (bytes, words.next().and_then(|n| n.parse().ok()))
}

fn save_usage(file: &std::path::Path, month: &str, bytes: u64, spent: Option<u64>) {
    let text = match spent {
        Some(b) => format!("{month} {bytes} {b}\n"),
        None => format!("{month} {bytes}\n"),
    };
    if let Err(e) = kith_node::fsutil::write_atomic(file, text.as_bytes(), 0o600) {
        tracing::warn!(error = %e, "relay: cannot save this month's count");
    }
}

/// Starts serving a relay on `addr` for as long as `stop` is not cancelled; the task ends
/// once it has saved the month's count after `stop`.
pub async fn serve(
    addr: SocketAddr,
    node: Arc<Node>,
    rep: Arc<Replicator>,
    home: PathBuf,
    stop: CancellationToken,
) -> Result<(Relay, tokio::task::JoinHandle<()>)> {
    let url = format!("http://{addr}");
    let pools = rep.pools().clone();
    // Bind now, so a bad address fails `kith up` with a clear error.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve a relay on {addr}"))?;
    let gate = Arc::new(gate::Gate::new(gate::HANDSHAKE));
    let door = tokio::spawn(gate::serve(gate.clone(), listener, stop.clone()));
    let admit = Arc::new(Admit {
        open: std::sync::atomic::AtomicBool::new(false),
        allowed: RwLock::new(Arc::new(allowed(&node, &pools, &rep).0)),
        spent: RwLock::default(),
        connected: Mutex::default(),
        clients: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        said: Mutex::default(),
        gate,
    });
    let server = spawn(admit.clone()).await?;
    tracing::info!(%url, "relay: listening (nodes use it with `kith up --relay {url}`)");
    let file = home.join(USAGE_FILE);
    // As the watch counts it: the month only moves forward.
    let month = Period::of(pools.now_ms()).to_string().max(usage_month(&file));
    let status = Arc::new(Mutex::new(RelayStatus {
        url,
        month: month.clone(),
        relayed_bytes: load_usage(&file, &month).0,
        ..RelayStatus::default()
    }));
    let relay = Relay { status: status.clone() };
    let partners_file = home.join(PARTNERS_FILE);
    let used = load_partners(&partners_file, &month);
    let who = Who {
        node,
        rep,
        partners: Partners::default(),
        used,
        elsewhere: HashMap::new(),
        elsewhere_read: None,
        file: partners_file,
    };
    let task = tokio::spawn(watch(server, door, admit, who, file, status, stop));
    Ok((relay, task))
}

/// Starts iroh's relay server on a loopback port, behind the front door.
async fn spawn(admit: Arc<Admit>) -> Result<Server> {
    let mut relay = RelayConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    relay.access = admit.clone();
    relay.key_cache_capacity = Some(KEY_CACHE);
    let mut config = ServerConfig::default();
    config.relay = Some(relay);
    let server = Server::spawn(config).await.context("cannot start the relay server")?;
    admit.gate.set_inner(server.http_addr());
    Ok(server)
}

/// What the watch reads who may use the relay from, and what it counts per partner.
struct Who {
    node: Arc<Node>,
    rep: Arc<Replicator>,
    /// The partners' nodes let in, as last read.
    partners: Partners,
    /// What each agreement's partner exchanged through the relay this month.
    used: HashMap<Key, u64>,
    /// What the pool gave the partner otherwise this month under each agreement (its edges'
    /// responses, copies sent back, its other relays), by its ledger: the egress an agreement
    /// lends bounds all of it together. Read every [`ELSEWHERE_EVERY`].
    elsewhere: HashMap<Key, u64>,
    elsewhere_read: Option<std::time::Instant>,
    /// Where `used` is kept.
    file: PathBuf,
}

/// Whether a partner has exchanged what its agreement lends: the egress it states (none: no
/// bound of its own).
fn used_up(used: u64, lent: u64) -> bool {
    lent > 0 && used >= lent
}

impl Who {
    /// Counts what partners' nodes exchanged through the relay since the last time (for the
    /// ledger and their bounds); true if a partner has now used up what it is lent.
    fn count(&mut self, admit: &Admit) -> bool {
        let mut newly = false;
        for (node, bytes) in admit.gate.take_bytes() {
            let Some(under) = self.partners.nodes.get(&node) else { continue };
            // Counted under the first of its agreements with something left to lend.
            let left = under.iter().find(|(_, ag)| !used_up(self.used_of(ag), self.lent_of(ag)));
            let Some((pool, agreement)) = left.or(under.first()).copied() else { continue };
            self.rep.relayed_for(pool, agreement, bytes);
            let (lent, before) = (self.lent_of(&agreement), self.used_of(&agreement));
            newly |= !used_up(before, lent) && used_up(before.saturating_add(bytes), lent);
            let used = self.used.entry(agreement).or_default();
            *used = used.saturating_add(bytes);
        }
        newly
    }

    /// The egress given the partner of `agreement` this month: relayed here, and otherwise.
    fn used_of(&self, agreement: &Key) -> u64 {
        let here = self.used.get(agreement).copied().unwrap_or(0);
        here.saturating_add(self.elsewhere.get(agreement).copied().unwrap_or(0))
    }

    /// Reads again from the pools' ledgers what they gave each partner otherwise this month,
    /// when due.
    fn read_elsewhere(&mut self) {
        if self.elsewhere_read.is_some_and(|t| t.elapsed() < ELSEWHERE_EVERY) {
            return;
        }
        self.elsewhere_read = Some(std::time::Instant::now());
        for (ag, pool) in &self.partners.pool_of {
            if self.lent_of(ag) == 0 {
                continue;
            }
            match self.rep.egress_given(pool, ag, true) {
                Ok(n) => {
                    self.elsewhere.insert(*ag, n);
                }
                Err(e) => tracing::debug!(error = %e, "relay: cannot read the ledger"),
            }
        }
        self.elsewhere.retain(|ag, _| self.partners.pool_of.contains_key(ag));
    }

    fn lent_of(&self, agreement: &Key) -> u64 {
        self.partners.lent.get(agreement).map_or(0, |l| l.0)
    }

    /// What each partner exchanged this month, against what it is lent (by name).
    fn status(&self) -> Vec<crate::api::node::RelayPartner> {
        let mut out: Vec<_> = self
            .partners
            .lent
            .iter()
            .map(|(ag, (lent, name))| crate::api::node::RelayPartner {
                partner: name.clone(),
                relayed_bytes: self.used.get(ag).copied().unwrap_or(0),
                lent_bytes: *lent,
                elsewhere_bytes: self.elsewhere.get(ag).copied().unwrap_or(0),
            })
            .collect();
        out.sort_by(|a, b| a.partner.cmp(&b.partner));
        out
    }

    /// Reads again who may use the relay, cuts the connections of the nodes that may no
    /// longer (a partner's that used up what it is lent among them), and counts what
    /// partners' nodes sent through it since the last time.
    fn admit_again(&mut self, admit: &Admit, server: Option<&Server>) {
        self.count(admit);
        let (mut now, partners) = allowed(&self.node, self.rep.pools(), &self.rep);
        self.partners = partners;
        self.read_elsewhere();
        let mut spent = HashMap::new();
        for (node, under) in &self.partners.nodes {
            // Refused once every agreement it is let in under has lent what it lends.
            if !under.iter().all(|(_, ag)| used_up(self.used_of(ag), self.lent_of(ag))) {
                continue;
            }
            let Some((_, agreement)) = under.first() else { continue };
            let (lent, name) = self.partners.lent.get(agreement).cloned().unwrap_or_default();
            let used = self.used_of(agreement);
            now.remove(node);
            let otherwise = match self.elsewhere.get(agreement).copied().unwrap_or(0) {
                0 => String::new(),
                n => format!(", {} of it served by its pool otherwise", crate::fmt::bytes(n)),
            };
            spent.insert(
                *node,
                format!(
                    "this relay has carried what its pool lends pool {name} this month ({} of {}{otherwise}): it carries its nodes again next month",
                    crate::fmt::bytes(used),
                    crate::fmt::bytes(lent)
                ),
            );
        }
        *admit.spent.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(spent);
        let now = Arc::new(now);
        *admit.allowed.write().unwrap_or_else(|e| e.into_inner()) = now.clone();
        let gone: Vec<EndpointId> =
            lock(&admit.connected).keys().filter(|id| !now.contains(*id)).copied().collect();
        let Some(clients) = server.and_then(|s| s.relay_service()).map(|s| s.clients()) else {
            return;
        };
        // Asked again every second until the node is seen leaving (`on_disconnect`): a
        // connection admitted a moment ago may not be registered yet.
        for id in gone {
            if clients.disconnect(id, None) {
                tracing::info!(node = %id.fmt_short(), "relay: cut a node no longer let in");
            }
        }
    }
}

/// Counts, bounds and restarts the relay (see the module's notes).
async fn watch(
    server: Server,
    door: tokio::task::JoinHandle<()>,
    admit: Arc<Admit>,
    who: Who,
    file: PathBuf,
    status: Arc<Mutex<RelayStatus>>,
    stop: CancellationToken,
) {
    let mut server = Some(server);
    let pools = who.rep.pools().clone();
    // The month only moves forward: a clock set back (a device booted without one) does not
    // start the count again.
    let mut month = Period::of(pools.now_ms()).to_string().max(usage_month(&file));
    // Bytes counted this month before the running server started, and the bound the relay
    // was stopped at for this month, if it was.
    let (mut before, mut spent) = load_usage(&file, &month);
    // The running server's counter, and its value when `before` was taken.
    let mut counter = server.as_ref().map(|s| s.metrics().server.clone());
    let mut offset = 0;
    let mut saved = (before, tokio::time::Instant::now());
    let (mut ticks, mut lending, mut last) = (0u32, (0, None), before);
    let mut who = who;
    let mut saved_partners = (who.used.clone(), tokio::time::Instant::now());
    let count = |c: &Option<Arc<iroh_relay::server::Metrics>>| {
        c.as_ref().map(|m| m.bytes_recv.get()).unwrap_or(0)
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let now_month = Period::of(pools.now_ms()).to_string();
        if now_month > month {
            // A new month: the count starts again.
            (before, offset, month, spent) = (0, count(&counter), now_month, None);
            who.used.clear();
        }
        let used = before.saturating_add(count(&counter).saturating_sub(offset));
        let step = used.saturating_sub(last);
        last = used;
        if ticks.is_multiple_of(AGREEMENTS_EVERY) {
            who.admit_again(&admit, server.as_ref());
            lending = who.partners.lending();
        } else if who.count(&admit) {
            // A partner used up what it is lent: its nodes are cut now, not within a second.
            who.admit_again(&admit, server.as_ref());
        }
        ticks = ticks.wrapping_add(1);
        let (agreements, bound) = lending;
        // Stopped at a bound this month: it stays stopped, also when the agreements end or
        // stop stating an egress, unless an agreement lends more.
        let stays_spent = spent.is_some_and(|s| bound.is_none_or(|b| b <= s));
        let why_not = if stays_spent
            || (agreements > 0 && bound.is_some_and(|b| used.saturating_add(step) >= b))
        {
            Some(format!(
                "this month's lent egress is used up ({} of {}): it serves again next month",
                crate::fmt::bytes(used),
                crate::fmt::bytes(bound.unwrap_or(0))
            ))
        } else {
            None
        };
        let open = admit.open.load(Ordering::Relaxed);
        match (&why_not, open) {
            (Some(why), true) => {
                // Closed, and the connections it carries are cut: the server is started
                // again, admitting nobody.
                admit.open.store(false, Ordering::Relaxed);
                tracing::warn!(%why, "relay: stopped");
                admit.gate.set_inner(None);
                if let Some(s) = server.take() {
                    let _ = s.shutdown().await;
                }
                // What passed while it stopped is counted too.
                let used = before.saturating_add(count(&counter).saturating_sub(offset));
                (before, offset, counter, last) = (used, 0, None, used);
                spent = spent.max(bound);
                save_usage(&file, &month, used, spent);
                saved = (used, tokio::time::Instant::now());
            }
            (None, false) => {
                admit.open.store(true, Ordering::Relaxed);
                tracing::info!("relay: serving");
                spent = None;
            }
            _ => {}
        }
        if server.is_none() {
            match spawn(admit.clone()).await {
                Ok(s) => {
                    let used = before.saturating_add(count(&counter).saturating_sub(offset));
                    (before, offset) = (used, 0);
                    counter = Some(s.metrics().server.clone());
                    server = Some(s);
                }
                Err(e) => tracing::warn!(error = %e, "relay: cannot listen again"),
            }
        }
        let used = last;
        {
            let mut s = lock(&status);
            s.month = month.clone();
            s.relayed_bytes = used;
            s.bound_bytes = bound;
            s.serving = server.is_some() && admit.open.load(Ordering::Relaxed);
            s.clients = admit.clients.load(Ordering::Relaxed);
            s.refused = admit.refused.load(Ordering::Relaxed) + admit.gate.refused();
            s.why_not = why_not;
            if ticks % AGREEMENTS_EVERY == 1 {
                s.partners = who.status();
            }
        }
        if used != saved.0 && saved.1.elapsed() >= SAVE_EVERY {
            save_usage(&file, &month, used, spent);
            saved = (used, tokio::time::Instant::now());
        }
        if who.used != saved_partners.0 && saved_partners.1.elapsed() >= SAVE_EVERY {
            save_partners(&who.file, &month, &who.used);
            saved_partners = (who.used.clone(), tokio::time::Instant::now());
        }
    }
    if let Some(s) = server {
        let _ = s.shutdown().await;
    }
    // What partners' nodes exchanged since the last count (the door's connections ended
    // first), for the ledger the node records as it stops.
    let _ = door.await;
    who.admit_again(&admit, None);
    save_partners(&who.file, &month, &who.used);
    save_usage(&file, &month, before.saturating_add(count(&counter).saturating_sub(offset)), spent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relays_used_are_those_given_and_those_an_agreement_names_until_it_ends() {
        use kith_federation::{Acceptance, Agreement, Lend, Notice, Offer, Price};
        use kith_pools::Pool;
        const T0: i64 = 1_800_000_000_000;
        let (ada, bea) =
            (kith_crdt::Signer::new(&[1; 32], [0; 32]), kith_crdt::Signer::new(&[2; 32], [0; 32]));
        let mut street = Pool::create(&ada, "ada", Pool::charter("street"), T0).unwrap();
        let mut hill = Pool::create(&bea, "bea", Pool::charter("hill"), T0).unwrap();
        let given: iroh::RelayUrl = "http://10.0.0.9:7790".parse().unwrap();
        let lent: iroh::RelayUrl = "http://203.0.113.7:7790".parse().unwrap();
        let list = |p: &Pool| vec![(p.id(), p.view())];
        assert_eq!(wanted(&list(&street), T0, std::slice::from_ref(&given)), vec![given.clone()]);
        // Street lends its relay and names it; hill names one too but lends none.
        let o = Offer::sign(
            &ada,
            [1; 16],
            street.id(),
            "street",
            Lend { relay: true, egress: 1 << 30, ..Lend::default() },
            Price::default(),
            365,
            0,
            (T0 + 3_600_000) as u64,
            vec!["kithnode1street".into(), "http://203.0.113.7:7790".into()],
        );
        street.add_fed_offer(&ada, &o, T0 + 1).unwrap();
        let contact = vec!["https://198.51.100.9:443".into()];
        let a = Acceptance::sign(
            &bea,
            &o,
            hill.id(),
            "hill",
            Lend::default(),
            (T0 + 2) as u64,
            contact,
        );
        let ag = Agreement { offer: o, acceptance: a };
        hill.add_agreement(&bea, &ag, T0 + 2).unwrap();
        // Hill's nodes use it while street has not confirmed yet (the acceptance may reach
        // street only through it), street's once recorded; what was given stays first.
        assert_eq!(
            hill.view().federation.agreements[&ag.id()].state(&hill.id(), T0 + 3),
            "pending"
        );
        assert_eq!(wanted(&list(&hill), T0 + 3, &[]), vec![lent.clone()]);
        street.add_agreement(&ada, &ag, T0 + 3).unwrap();
        assert_eq!(
            wanted(&list(&street), T0 + 4, std::slice::from_ref(&given)),
            vec![given.clone(), lent.clone()]
        );
        assert_eq!(wanted(&list(&street), T0 + 4, std::slice::from_ref(&lent)), vec![lent.clone()]);
        // Notice (none due): it ends, and its relay is no longer used.
        let n = Notice::sign(&ada, ag.id(), (T0 + 5) as u64);
        street.record_notice(&ada, &n, T0 + 5).unwrap();
        assert!(wanted(&list(&street), T0 + 6, &[]).is_empty());
        assert_eq!(wanted(&list(&street), T0 + 6, std::slice::from_ref(&given)), vec![given]);
    }

    #[test]
    fn the_months_count_survives_a_restart_and_a_damaged_file_counts_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(USAGE_FILE);
        assert_eq!(load_usage(&file, "2026-12"), (0, None), "no file");
        save_usage(&file, "2026-12", 12_345, None);
        assert_eq!(load_usage(&file, "2026-12"), (12_345, None));
        save_usage(&file, "2026-12", 12_000_100, Some(12_000_000));
        assert_eq!(load_usage(&file, "2026-12"), (12_000_100, Some(12_000_000)));
        // The month the file counts: a clock set back to 1970 keeps counting 2026-12.
        assert_eq!(usage_month(&file), "2026-12");
        assert_eq!(String::from("1970-01").max(usage_month(&file)), "2026-12");
        // Another month starts from nothing; so does a file that is not a count.
        assert_eq!(load_usage(&file, "2027-01"), (0, None));
        std::fs::write(&file, b"\xff\x00garbage").unwrap();
        assert_eq!(load_usage(&file, "2026-12"), (0, None));
        assert_eq!(usage_month(&file), "");
        std::fs::write(&file, b"2026-12 lots").unwrap();
        assert_eq!(load_usage(&file, "2026-12"), (0, None));
    }

    #[test]
    fn the_months_count_per_partner_survives_a_restart_and_bounds_only_what_states_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(PARTNERS_FILE);
        assert!(load_partners(&file, "2026-12").is_empty(), "no file");
        let used = HashMap::from([([1; 32], 24_000_000), ([2; 32], 5)]);
        save_partners(&file, "2026-12", &used);
        assert_eq!(load_partners(&file, "2026-12"), used);
        // Another month starts from nothing; a damaged line is skipped, the others kept.
        assert!(load_partners(&file, "2027-01").is_empty());
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, format!("{text}zz 12\n{} lots\n", "ab".repeat(32))).unwrap();
        assert_eq!(load_partners(&file, "2026-12"), used);
        std::fs::write(&file, b"\xff\x00garbage").unwrap();
        assert!(load_partners(&file, "2026-12").is_empty());
        // Bounded once what is lent is exchanged; an agreement stating no egress is not.
        assert!(!used_up(23_999_999, 24_000_000) && used_up(24_000_000, 24_000_000));
        assert!(!used_up(u64::MAX, 0));
    }

    #[tokio::test]
    async fn a_node_let_in_holds_a_few_connections_at_most_and_a_stranger_none() {
        let (ours, stranger) =
            (iroh::SecretKey::generate().public(), iroh::SecretKey::generate().public());
        let admit = Admit {
            open: std::sync::atomic::AtomicBool::new(true),
            allowed: RwLock::new(Arc::new(HashSet::from([ours]))),
            connected: Mutex::default(),
            clients: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            said: Mutex::default(),
            spent: RwLock::default(),
            gate: Arc::new(gate::Gate::new(gate::HANDSHAKE)),
        };
        // Each request on a connection the door holds (as it names them).
        let request = |id| {
            let conn = admit.gate.open_for_test();
            let mut parts = http::Request::new(()).into_parts().0;
            parts.headers.insert(gate::HEADER, format!("{conn:032x}").parse().unwrap());
            ClientRequest::new(id, iroh_relay::http::ProtocolVersion::default(), parts)
        };
        let denied = |a: Access| match a {
            Access::Deny { reason } => reason.unwrap_or_default(),
            Access::Allow => String::new(),
        };
        let mut held = Vec::new();
        for _ in 0..MAX_PER_NODE {
            let r = request(ours);
            assert!(matches!(admit.on_connect(&r).await, Access::Allow));
            held.push(r);
        }
        // One more of the same node: refused, and not counted as connected.
        let why = denied(admit.on_connect(&request(ours)).await);
        assert!(why.contains("at most 4 connections of one node"), "{why}");
        assert_eq!(admit.clients.load(Ordering::Relaxed), MAX_PER_NODE as u64);
        // One ends: another may come.
        admit.on_disconnect(ours, held[0].connection_id());
        assert!(matches!(admit.on_connect(&request(ours)).await, Access::Allow));
        let why = denied(admit.on_connect(&request(stranger)).await);
        assert!(why.contains("partners' only"), "{why}");
        assert_eq!(admit.refused.load(Ordering::Relaxed), 2);
        // A partner that used up what its agreement lends: refused, saying so, while the
        // others go on.
        let partner = iroh::SecretKey::generate().public();
        let why = "this relay has carried what its pool lends pool hill this month".to_string();
        *admit.allowed.write().unwrap() = Arc::new(HashSet::from([ours]));
        *admit.spent.write().unwrap() = Arc::new(HashMap::from([(partner, why)]));
        let why = denied(admit.on_connect(&request(partner)).await);
        assert!(why.contains("lends pool hill this month"), "{why}");
        admit.on_disconnect(ours, held[2].connection_id());
        assert!(matches!(admit.on_connect(&request(ours)).await, Access::Allow));
        // The relay's bound used up: nobody, its own nodes neither.
        admit.open.store(false, Ordering::Relaxed);
        admit.on_disconnect(ours, held[1].connection_id());
        let why = denied(admit.on_connect(&request(ours)).await);
        assert!(why.contains("carried what its pool lends"), "{why}");
    }
}
