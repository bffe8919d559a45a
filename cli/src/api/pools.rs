//! Pool commands and what they answer.

use serde::{Deserialize, Serialize};

/// A pool command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "pool_op", rename_all = "snake_case")]
pub enum PoolReq {
    /// Found a pool; answers [`PoolRef`].
    Create {
        /// Its name (1 to 64 characters).
        name: String,
        /// Copies of every chunk (default 3).
        replicas: Option<u64>,
        /// Storage each member may use (a size; none by default).
        quota: Option<String>,
        /// The founder's name in the pool.
        display: Option<String>,
    },
    /// Issue an invite ticket; answers [`Ticket`].
    Invite {
        /// The pool (empty: the only one).
        pool: String,
        /// How long it is valid (a duration).
        expires: String,
        /// How many may join with it.
        uses: u32,
    },
    /// Join with a ticket; answers [`PoolRef`].
    Join {
        /// The ticket from `kith pool invite`.
        ticket: String,
        /// The joiner's name in the pool.
        display: Option<String>,
    },
    /// This identity's pools; answers a list of [`PoolSummary`].
    Ls,
    /// This identity's document; answers [`IdentityDoc`].
    Identity,
    /// One pool in detail; answers [`PoolDetail`].
    Show {
        /// The pool (empty: the only one).
        pool: String,
    },
    /// What leaving would take away, checked before anything changes; answers [`LeavePlan`].
    LeavePlan {
        /// The pool.
        pool: String,
    },
    /// Leave, after handing off held chunks; answers [`Left`].
    Leave {
        /// The pool.
        pool: String,
        /// How long to wait for the hand-off (a duration).
        #[serde(default = "default_wait")]
        wait: String,
        /// Leave without a hand-off.
        #[serde(default)]
        force: bool,
        /// The member confirmed what leaving takes away.
        #[serde(default)]
        yes: bool,
    },
    /// End the pool for everyone (its last admin); answers [`Dissolved`].
    Dissolve {
        /// The pool.
        pool: String,
    },
    /// This identity's devices; answers a list of [`Device`].
    Devices,
    /// Retire a device of this identity; answers [`Retired`].
    Revoke {
        /// The device's node id or a prefix of at least 4 characters.
        node: String,
    },
    /// Remove a member (admins); answers [`Removed`].
    Remove {
        /// The pool.
        pool: String,
        /// The member's name or id prefix.
        member: String,
    },
    /// Set a charter field or a role (admins); answers [`Set`].
    Set {
        /// The pool.
        pool: String,
        /// The key (see `kith pool set --help`).
        key: String,
        /// The new value.
        value: String,
    },
    /// Offer this node's storage; answers [`Offered`].
    Offer {
        /// The pool (empty: the only one).
        pool: String,
        /// Storage offered (a size).
        storage: String,
        /// Egress per month (a size; unlimited by default).
        egress: Option<String>,
        /// The failure domain (household).
        zone: Option<String>,
    },
    /// An admin's offer to federate with another pool; answers [`FedTicket`].
    FedInvite {
        /// The pool (empty: the only one).
        pool: String,
        /// What it lends.
        lend: FedLend,
        /// Price per GiB-month of storage (empty: none, credit both ways).
        #[serde(default)]
        price_storage: String,
        /// Price per GB sent.
        #[serde(default)]
        price_egress: String,
        /// The term in days (renewed for as long again unless notice is given).
        term_days: u32,
        /// Notice in days.
        notice_days: u32,
        /// How long the ticket may be taken up (a duration, such as 7d).
        expires: String,
    },
    /// An admin takes up another pool's offer for this pool; answers [`FedTicket`] (the
    /// acceptance, for the offering pool).
    FedJoin {
        /// This pool (empty: the only one).
        pool: String,
        /// The `kithfed1…` ticket.
        ticket: String,
        /// What this pool lends back.
        lend: FedLend,
    },
    /// An admin of the offering pool records the other pool's acceptance; answers
    /// [`FedAgreement`].
    FedAccept {
        /// The pool (empty: the only one).
        pool: String,
        /// The `kithfedok1…` ticket.
        ticket: String,
    },
    /// The agreements of every pool this node is in; answers `Vec<FedAgreement>`.
    FedList,
    /// An admin gives notice on an agreement; answers [`FedAgreement`].
    FedLeave {
        /// The pool (empty: the only one).
        pool: String,
        /// A prefix of the agreement's id, or the partner pool's name.
        agreement: String,
    },
    /// Lend this node to run the pool's jobs (`cpu` 0 withdraws it).
    OfferCompute {
        /// The pool (empty: the only one).
        pool: String,
        /// Jobs at once (one core each).
        cpu: u64,
        /// Memory a job may use (a size).
        memory: String,
        /// Hours of the day, `22-7` (empty: always).
        #[serde(default)]
        hours: String,
    },
}

fn default_wait() -> String {
    "10m".into()
}

impl PoolReq {
    /// Whether it only reads the documents (works without the daemon, on the files).
    pub fn reads_only(&self) -> bool {
        matches!(self, PoolReq::Ls | PoolReq::Show { .. } | PoolReq::Identity | PoolReq::Devices)
    }
}

/// A pool created or joined.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolRef {
    /// Its id (hex).
    pub id: String,
    /// Its name.
    pub name: String,
}

/// An invite ticket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ticket {
    /// `kithpool1...`.
    pub ticket: String,
    /// When it expires (ms since the epoch).
    pub expires_ms: u64,
    /// How many may join with it.
    pub uses: u32,
}

/// A pool in a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolSummary {
    /// Its id (hex).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Active members.
    pub members: u64,
    /// The replication factor.
    pub replicas: u64,
    /// Storage offered by its members' nodes (bytes).
    pub offered: u64,
    /// This identity's role and state, such as `admin (active)`.
    pub role: Option<String>,
}

/// This identity's document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityDoc {
    /// The identity (hex).
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Its devices.
    pub devices: Vec<IdentityDevice>,
    /// Its age recipients.
    pub recipients: Vec<String>,
    /// Its pools.
    pub pools: Vec<IdentityPool>,
}

/// A device in the identity document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityDevice {
    /// Its node id (hex).
    pub node: String,
    /// Its name.
    pub name: String,
    /// When it was added (ms since the epoch).
    pub added_ms: i64,
    /// Whether it is this node.
    pub this: bool,
}

/// A pool in the identity document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityPool {
    /// Its id (hex).
    pub id: String,
    /// Its name when it was recorded.
    pub name: String,
    /// When the identity joined (ms since the epoch).
    pub joined_ms: i64,
}

/// One pool in detail: `kith pool show`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolDetail {
    /// Its id (hex).
    pub id: String,
    /// Its rules.
    pub charter: Charter,
    /// Every active member's audit records.
    pub audits: Vec<Audit>,
    /// Runner nodes' reputations: how often their answers to other members' jobs agreed.
    #[serde(default)]
    pub runners: Vec<RunnerStanding>,
    /// Active members' objects.
    pub objects: Vec<PoolObject>,
    /// Every member, former ones included.
    pub members: Vec<Member>,
    /// What the nodes offer, and what placement uses.
    pub capacity: Capacity,
    /// Whether enough zones offer storage for the replication factor.
    pub policy_met: bool,
    /// Peers' changes this node refused.
    pub rejected_changes: Vec<Rejection>,
    /// Bytes of document sync this node sent and received since it started.
    pub sync_bytes: SyncBytes,
    /// This identity in the pool: `active`, `left`, `removed`, `dissolved` or `not a member`.
    pub you: String,
    /// The heads of this node's copy of the pool document (hex, sorted): two nodes with the
    /// same heads hold the same document.
    #[serde(default)]
    pub heads: Vec<String>,
    /// What the holders answered (absent for a pool this identity is out of).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
    /// This node's latest repair pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
    /// Where the off-site copies are (with `offsite_replicas` set), asked now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsite: Option<Offsite>,
    /// Partners' public sites this node serves as their CDN edge, under this pool's
    /// agreements (`kith up --cdn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<EdgeServed>,
}

/// A partner whose public sites this node serves as its CDN edge.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EdgeServed {
    /// The partner pool's name.
    pub partner: String,
    /// Its sites served here, with the version of each.
    pub sites: Vec<(String, u64)>,
    /// Stored bytes kept for them.
    pub bytes: u64,
    /// Egress served to the partner this month by the pool (as this node knows it) and what
    /// the agreement lends a month, when it states a bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<(u64, u64)>,
    /// Why the last ask or fetch failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A pool's off-site copies on the nodes of federated pools.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Offsite {
    /// Per partner pool.
    pub partners: Vec<OffsitePartner>,
    /// What could not be checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One partner pool's share of the off-site copies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OffsitePartner {
    /// Its name.
    pub name: String,
    /// Its id (hex).
    pub pool: String,
    /// Its nodes lending storage to this pool.
    pub holders: usize,
    /// Bytes placement gives them (copies counted).
    pub placed_bytes: u64,
    /// Of those, bytes they confirmed they hold.
    pub held_bytes: u64,
    /// How long it has not answered (ms), when it did not answer lately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_ms: Option<i64>,
    /// Silent past its agreement's notice: its copies are placed with other partners.
    #[serde(default)]
    pub replaced: bool,
    /// Audits of its holders this node made (one random chunk of a blob each confirmed, every
    /// `audit_every`): passed.
    #[serde(default)]
    pub audits_passed: u64,
    /// Failed.
    #[serde(default)]
    pub audits_failed: u64,
    /// Why one of its holders failed its last audit, while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_failing: Option<String>,
    /// When its agreement ends, once a side gave notice (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaving_ends_ms: Option<i64>,
    /// Whether another partner, not leaving, lends this pool storage (a leaving partner's
    /// copies are placed there; else they stay with it until the end, and then there are none).
    #[serde(default)]
    pub others_lend: bool,
}

/// A pool's rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charter {
    /// Its name.
    pub name: String,
    /// Copies of every chunk.
    pub replicas: u64,
    /// Bytes each member may store (0: no limit).
    pub quota: u64,
    /// How costs split.
    pub cost_rule: String,
    /// How members join.
    pub join_rule: String,
    /// How long a silent holder waits before its share is copied elsewhere (ms).
    pub repair_after_ms: u64,
    /// How often holders are audited (ms).
    pub audit_every_ms: u64,
    /// How often usage goes into the ledger (ms).
    pub record_every_ms: u64,
    /// When it was dissolved (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dissolved_ms: Option<i64>,
    /// What a reference CPU-hour of jobs costs (`0.02`); empty: CPU counts as credit.
    #[serde(default)]
    pub cpu_price: String,
    /// Copies of each chunk kept by federated pools.
    #[serde(default)]
    pub offsite_replicas: u64,
}

/// One member's audit record of one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Audit {
    /// The auditing member (hex).
    pub auditor: String,
    /// Its name.
    pub auditor_name: String,
    /// The audited node (hex).
    pub node: String,
    /// Audits passed.
    pub passed: u64,
    /// Audits failed.
    pub failed: u64,
    /// Whether the latest failed.
    pub failing: bool,
    /// Why the latest failure failed.
    pub reason: String,
    /// When it was recorded (ms since the epoch).
    pub at_ms: i64,
}

/// A runner node's standing: its answers to other members' jobs that were checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerStanding {
    /// The node (hex).
    pub node: String,
    /// Its member's name.
    pub member_name: String,
    /// Answers that agreed with the accepted result.
    pub agreed: u64,
    /// Answers that did not.
    pub disagreed: u64,
    /// The latest disagreement any member recorded.
    #[serde(default)]
    pub reason: String,
    /// Whether it is asked last (at least 3 checked, fewer than half agreeing).
    pub doubtful: bool,
}

/// An object stored in the pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolObject {
    /// Its id (hex).
    pub id: String,
    /// Its owner (hex).
    pub owner: String,
    /// The owner's name.
    pub owner_name: String,
    /// The owner's state.
    pub owner_state: String,
    /// The name it was stored under.
    pub name: String,
    /// Stored bytes (one copy).
    pub bytes: u64,
    /// Blobs.
    pub blobs: u64,
    /// When it was stored (ms since the epoch).
    pub at_ms: i64,
}

/// A member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    /// Its identity (hex).
    pub id: String,
    /// Its name.
    pub name: String,
    /// `admin` or `member`.
    pub role: String,
    /// `active`, `left` or `removed`.
    pub state: String,
    /// When it joined (ms since the epoch).
    pub joined_ms: i64,
    /// Its nodes and their offers.
    pub nodes: Vec<MemberNode>,
}

/// A member's node and its offer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberNode {
    /// The node (hex).
    pub id: String,
    /// Storage offered (bytes).
    pub storage: u64,
    /// Egress per month (bytes; 0: unlimited).
    pub egress: u64,
    /// Its zone (empty: the member's own).
    pub zone: String,
    /// Jobs it runs at once for the pool (0: none).
    #[serde(default)]
    pub cpu: u64,
    /// Memory a job may use there (bytes).
    #[serde(default)]
    pub memory: u64,
    /// Hours it runs jobs (empty: always).
    #[serde(default)]
    pub hours: String,
}

/// What the nodes offer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capacity {
    /// Storage offered (bytes).
    pub offered: u64,
    /// Zones offering storage.
    pub zones: u64,
    /// Every copy placement asks for (bytes), when the holders were asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    /// What the offers leave (bytes), when the holders were asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<u64>,
}

/// A refused change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejection {
    /// The peer that sent it.
    pub peer: String,
    /// Why it was refused.
    pub reason: String,
    /// When (ms since the epoch).
    pub at_ms: i64,
}

/// Sync traffic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncBytes {
    /// Sent.
    pub sent: u64,
    /// Received.
    pub received: u64,
}

/// What the holders answered, or why they were not asked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Replication {
    /// Why the holders could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Objects in the pool.
    #[serde(default)]
    pub objects: u64,
    /// Their bytes (one copy).
    #[serde(default)]
    pub bytes: u64,
    /// Their blobs.
    #[serde(default)]
    pub blobs: u64,
    /// Bytes missing from full replication.
    #[serde(default)]
    pub under_replicated_bytes: u64,
    /// Blobs with fewer copies than the replication factor.
    #[serde(default)]
    pub under_replicated_blobs: u64,
    /// Blobs no node has, every node having answered.
    #[serde(default)]
    pub lost_blobs: u64,
    /// Blobs no answering node has, while some did not answer.
    #[serde(default)]
    pub unconfirmed_blobs: u64,
    /// Nodes that did not answer (hex).
    #[serde(default)]
    pub silent: Vec<String>,
    /// Manifests this node could not read.
    #[serde(default)]
    pub unreadable: Vec<String>,
    /// Objects with a lost blob (ids, 16 hex digits).
    #[serde(default)]
    pub lost_objects: Vec<String>,
    /// Objects over their owner's quota, which no holder keeps (ids, 16 hex digits).
    #[serde(default)]
    pub over_quota: Vec<String>,
    /// Per holder.
    #[serde(default)]
    pub holders: Vec<Holder>,
}

/// One holder's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    /// The node (hex).
    pub node: String,
    /// The member it belongs to, by name.
    #[serde(default)]
    pub member: Option<String>,
    /// `up`, `down`, `out` or `failing`.
    pub state: String,
    /// Seconds since this node last heard from it.
    pub silent_s: u64,
    /// Blobs placement gives it.
    pub assigned_blobs: u64,
    /// Their bytes.
    pub assigned_bytes: u64,
    /// Of those, blobs it confirmed holding.
    pub confirmed_blobs: u64,
    /// Why it could not be asked.
    pub error: Option<String>,
}

/// This node's latest repair pass of a pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Repair {
    /// When it ended (ms since the epoch).
    pub at_ms: i64,
    /// Blobs this node should hold.
    pub responsible_blobs: u64,
    /// Their bytes.
    pub responsible_bytes: u64,
    /// Of those, blobs it still lacks.
    pub lacking_blobs: u64,
    /// Blobs it fetched so far.
    pub repaired_blobs: u64,
    /// Their bytes.
    pub repaired_bytes: u64,
    /// What failed in the pass.
    pub error: Option<String>,
}

/// What leaving would take away.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeavePlan {
    /// The pool (hex).
    pub pool: String,
    /// Its name.
    pub name: String,
    /// This member's sites.
    pub sites: Vec<String>,
    /// This member's objects.
    pub objects: u64,
    /// Their bytes.
    pub object_bytes: u64,
    /// The other members' bytes (one copy).
    pub others_bytes: u64,
    /// Whether the member should confirm.
    pub needs_confirmation: bool,
    /// What leaving takes away, in sentences.
    pub warnings: Vec<String>,
}

/// A member left.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Left {
    /// The pool's name.
    pub left: String,
    /// Whether the others copied what this member's nodes held first.
    pub handed_off: bool,
    /// Its sites, no longer served (kept as objects).
    pub sites: Vec<String>,
    /// Its objects, now only in its own store.
    pub objects: u64,
    /// Whether another node has the departure already.
    pub delivered: bool,
}

/// A pool dissolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dissolved {
    /// The pool's name.
    pub dissolved: String,
    /// The other members, who bring their objects home.
    pub members: u64,
    /// Whether another node has the dissolution already.
    pub delivered: bool,
}

/// A device of this identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    /// Its node id (hex).
    pub node: String,
    /// Its name.
    pub name: String,
    /// When it was added (ms since the epoch).
    pub added_ms: i64,
    /// When it was retired.
    pub retired_ms: Option<i64>,
    /// Whether it is this node.
    pub this: bool,
    /// When this node last heard from it.
    pub last_seen_ms: Option<i64>,
}

/// A device retired.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Retired {
    /// Its node id (hex).
    pub node: String,
    /// Its name.
    pub name: String,
    /// The pools it was taken out of.
    pub pools: Vec<String>,
}

/// A member removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Removed {
    /// The member (hex).
    pub removed: String,
}

/// A charter field or role set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Set {
    /// The key.
    pub set: String,
    /// The value.
    pub value: String,
}

/// An offer recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offered {
    /// Storage (bytes).
    pub storage: u64,
    /// Egress per month (bytes; 0: unlimited).
    pub egress: u64,
    /// Zone.
    pub zone: String,
}

/// `kith offer POOL --cpu N`: what this node lends for jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComputeOffered {
    /// Jobs at once.
    pub cpu: u64,
    /// Memory a job may use (bytes).
    pub memory: u64,
    /// Hours (empty: always).
    pub hours: String,
}

/// What a pool lends in a federation agreement, as given on the command line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FedLend {
    /// Storage (a size; empty: none).
    #[serde(default)]
    pub storage: String,
    /// Egress a month (a size; empty: none).
    #[serde(default)]
    pub egress: String,
    /// CDN edges for the other pool's public sites.
    #[serde(default)]
    pub cdn: bool,
    /// Relaying for the other pool.
    #[serde(default)]
    pub relay: bool,
}

/// A federation ticket to pass on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FedTicket {
    /// The ticket (`kithfed1…` or `kithfedok1…`).
    pub ticket: String,
    /// The agreement's id (hex), once there is one.
    #[serde(default)]
    pub agreement: Option<String>,
    /// Until when an offer may be taken up (ms since the epoch).
    #[serde(default)]
    pub expires_ms: Option<u64>,
    /// The offering pool that recorded the acceptance itself, over the network.
    #[serde(default)]
    pub recorded_by: Option<String>,
    /// Why the acceptance could not be handed over (carry the ticket instead).
    #[serde(default)]
    pub not_delivered: Option<String>,
    /// Something the admin should know about what it signed (a relay lent with no URL named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `kith federation show`: one agreement, this month's line of the pool's ledger for it, and
/// the pool's off-site copies at the partner (as this node's last pass saw them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FedShow {
    /// The agreement.
    pub agreement: FedAgreement,
    /// The ledger's line for the partner this month, once anything was recorded.
    pub this_month: Option<crate::api::ledger::PartnerOwed>,
    /// The month.
    pub period: String,
    /// The off-site copies at the partner, when this pool keeps some there.
    pub offsite: Option<OffsitePartner>,
    /// Off-site copies of each chunk the pool keeps (`offsite_replicas`).
    pub offsite_replicas: u64,
}

/// One agreement, seen from one of its pools.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FedAgreement {
    /// Its id (hex).
    pub id: String,
    /// This pool's name.
    pub pool: String,
    /// This pool's id (hex).
    #[serde(default)]
    pub pool_id: String,
    /// The partner pool (hex) and its name.
    pub partner: String,
    /// The partner's name.
    pub partner_name: String,
    /// `offered` (this pool made the offer) or `accepted`.
    pub side: String,
    /// `active`, `leaving` or `ended`.
    pub state: String,
    /// Storage this pool lends (bytes).
    pub lends_storage: u64,
    /// Egress a month this pool lends.
    pub lends_egress: u64,
    /// Whether this pool's nodes are CDN edges for the partner.
    pub lends_cdn: bool,
    /// Whether this pool relays for the partner.
    pub lends_relay: bool,
    /// Storage the partner lends this pool.
    pub lent_storage: u64,
    /// Egress a month the partner lends.
    pub lent_egress: u64,
    /// Whether the partner is a CDN edge for this pool.
    pub lent_cdn: bool,
    /// Whether the partner relays for this pool.
    pub lent_relay: bool,
    /// Price per GiB-month of storage (empty: credit).
    pub price_storage: String,
    /// Price per GB sent.
    pub price_egress: String,
    /// When it started (ms since the epoch).
    pub since_ms: u64,
    /// Its term (days), renewed unless notice is given.
    pub term_days: u32,
    /// Its notice (days).
    pub notice_days: u32,
    /// When it ends, once notice was given.
    #[serde(default)]
    pub ends_ms: Option<i64>,
    /// The relays named by the pools that lend relay in it: both pools' nodes use them
    /// while it is in force.
    #[serde(default)]
    pub relays: Vec<String>,
    /// What this node holds for the partner under it: blobs and their bytes.
    #[serde(default)]
    pub held_here_blobs: u64,
    /// Their bytes.
    #[serde(default)]
    pub held_here_bytes: u64,
}
