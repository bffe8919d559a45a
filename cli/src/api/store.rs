//! What the store commands answer: put, get, ls, log, rm, gc, verify; and peers.

use serde::{Deserialize, Serialize};

/// `kith put`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Put {
    /// The object's id.
    pub id: String,
    /// Its version number for its source.
    pub version: u64,
    /// What it is recorded under (the absolute source path).
    pub source: String,
    /// Files.
    pub files: u64,
    /// Folders.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Files not read again (unchanged since the last version).
    pub files_unchanged: u64,
    /// Bytes of the files.
    pub bytes_scanned: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// New chunks.
    pub chunks_new: u64,
    /// Their plaintext bytes.
    pub bytes_new: u64,
    /// Bytes added to the store.
    pub bytes_stored: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// What could not be stored, and why.
    pub warnings: Vec<String>,
    /// With `--pool`: how the holders took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolPut>,
}

/// How an object went to a pool's holders.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolPut {
    /// The pool (hex).
    pub pool: String,
    /// The pool's name.
    pub pool_name: Option<String>,
    /// The manifest (hex).
    pub manifest: String,
    /// Blobs of the object.
    pub blobs: u64,
    /// Their bytes (one copy).
    pub bytes: u64,
    /// The replication factor.
    pub replicas: u64,
    /// Holders the pool could use.
    pub holders: u64,
    /// Each chosen holder's answer.
    pub acks: Vec<Ack>,
    /// Seconds the replication took.
    pub seconds: f64,
    /// Blobs that got fewer holders than the replication factor.
    pub short_blobs: u64,
    /// Whether every copy was placed and acknowledged.
    pub complete: bool,
}

/// One holder's answer to a put.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ack {
    /// The holder (hex).
    pub node: String,
    /// The member it belongs to, by name.
    pub member: Option<String>,
    /// Blobs assigned to it.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Whether it holds them now.
    pub ok: bool,
    /// Bytes it fetched.
    pub fetched: Option<u64>,
    /// Why it could not hold them.
    pub error: Option<String>,
}

/// `kith get`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restored {
    /// The object.
    pub id: String,
    /// Where it was restored (absent: to standard output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    /// The file or folder inside the object that was restored (absent: all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside: Option<String>,
    /// Files.
    #[serde(default)]
    pub files: u64,
    /// Folders.
    #[serde(default)]
    pub dirs: u64,
    /// Symlinks.
    #[serde(default)]
    pub symlinks: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Seconds the restore took.
    #[serde(default)]
    pub seconds: f64,
    /// Bytes fetched from peers first.
    pub fetched_bytes: u64,
    /// Seconds the fetch took.
    #[serde(default)]
    pub fetch_seconds: f64,
}

/// An object in `kith ls` and `kith log`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Object {
    /// Its id.
    pub id: String,
    /// Its version number for its source.
    pub version: u64,
    /// When it was stored (ms since the epoch).
    pub created_ms: u64,
    /// What it is recorded under.
    pub source: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// Files.
    pub files: u64,
    /// Folders.
    pub dirs: u64,
    /// Bytes.
    pub bytes: u64,
    /// The version before it.
    pub parent: Option<String>,
}

/// An entry of an object in `kith ls ID`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path inside the object (empty for the object's root entry).
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// Bytes (files).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time (seconds since the epoch).
    pub mtime_s: i64,
    /// The link's target (symlinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `kith ls ID`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Files {
    /// The object.
    pub id: String,
    /// Its entries, in tree order (each folder before what it holds, names sorted).
    pub entries: Vec<FileEntry>,
    /// Bytes fetched from peers to read its tree.
    pub fetched_bytes: u64,
}

/// One line of `kith diff`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Difference {
    /// `added`, `removed`, `modified` (content, type or link target) or `metadata` (mode,
    /// owner or time only).
    pub change: String,
    /// Path inside the objects.
    pub path: String,
    /// `file`, `dir` or `symlink` (the newer one's, when both exist).
    pub kind: String,
    /// Size before (files that existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_size: Option<u64>,
    /// Size after (files that exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_size: Option<u64>,
}

/// `kith diff`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Diff {
    /// The older object.
    pub old: String,
    /// The newer object.
    pub new: String,
    /// What changed, by path.
    pub changes: Vec<Difference>,
}

/// `kith store rebuild-index`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rebuilt {
    /// Where the old index went, if there was one.
    pub moved_aside: Option<String>,
    /// Packs read.
    pub packs: u64,
    /// Packs that could not be read (left in place), with why.
    pub damaged_packs: Vec<String>,
    /// Blobs found.
    pub blobs: u64,
    /// Objects recorded again.
    pub objects: u64,
    /// Of those, named by the object journal (with their version numbers).
    pub from_journal: u64,
    /// Of those, found only as roots, numbered by time.
    pub found_by_time: u64,
    /// Forgotten versions whose roots are still in packs (they stay forgotten).
    pub forgotten: u64,
    /// Versions that cannot be restored whole, and what is missing.
    pub lost: Vec<String>,
    /// Roots of this identity with chunks missing (parts fetched from peers).
    pub partial: u64,
    /// Roots of others (kept for pool members).
    pub foreign_roots: u64,
    /// Dedup tokens restored.
    pub tokens: u64,
    /// Why the journal could be read only in part.
    pub journal_damage: Option<String>,
}

/// The typed answer of a rebuild.
pub fn rebuilt(r: &kith_node::store::RebuildReport) -> Rebuilt {
    Rebuilt {
        moved_aside: r.moved_aside.as_ref().map(|p| p.display().to_string()),
        packs: r.packs,
        damaged_packs: r.damaged_packs.clone(),
        blobs: r.blobs,
        objects: r.objects,
        from_journal: r.from_journal,
        found_by_time: r.found_by_time,
        forgotten: r.forgotten,
        lost: r.lost.clone(),
        partial: r.partial,
        foreign_roots: r.foreign_roots,
        tokens: r.tokens,
        journal_damage: r.journal_damage.clone(),
    }
}

/// `kith export` and `kith import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exported {
    /// The file.
    pub path: String,
    /// Objects written, or recorded here.
    pub objects: u64,
    /// Blobs written, or new here.
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Blobs this store had already (import).
    #[serde(default)]
    pub blobs_present: u64,
    /// Blobs an interrupted export had written already (export, resumed).
    #[serde(default)]
    pub resumed_blobs: u64,
    /// Changes of the identity document that were new here (import).
    #[serde(default)]
    pub identity_changes: u64,
    /// Objects the file names without carrying all their chunks (import: left out).
    #[serde(default)]
    pub incomplete: u64,
    /// The pools named (this identity's memberships).
    pub pools: Vec<String>,
    /// Seconds it took.
    pub seconds: f64,
}

/// `kith rm`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forgotten {
    /// The object forgotten.
    pub id: String,
    /// Whether it was an object of this node's store (`kith gc` reclaims its space here).
    #[serde(default)]
    pub local: bool,
    /// The pools it was released from (their holders reclaim its space).
    #[serde(default)]
    pub released_from: Vec<String>,
}

/// `kith move`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Moved {
    /// The source pool.
    pub from: String,
    /// The destination pool, or `home`.
    pub to: String,
    /// Objects released from the source after their copies were confirmed.
    pub objects: u64,
    /// Their bytes (one copy).
    pub bytes: u64,
    /// Bytes fetched first to make objects whole on this node.
    pub fetched_bytes: u64,
    /// Copies every moved blob has at least in the destination, as its holders confirmed.
    pub copies: u64,
    /// Objects that stayed in the source, and why.
    #[serde(default)]
    pub stayed: Vec<MoveStayed>,
    /// This identity's sites in the source (a move does not take them).
    #[serde(default)]
    pub sites: Vec<String>,
    /// Seconds it took.
    pub seconds: f64,
}

/// An object `kith move` left in the source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveStayed {
    /// The object (hex).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// `kith drop make` and `kith drop apply`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dropped {
    /// The file.
    pub path: String,
    /// The pool's name.
    pub pool: String,
    /// Changes carried (make) or new here (apply).
    pub changes: u64,
    /// Objects whose chunks it carries (make).
    pub objects: u64,
    /// Blobs carried (make) or new here (apply).
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Blobs this store had already (apply).
    pub blobs_present: u64,
    /// Blobs of carried objects that are not in the drop (make): nowhere on this node.
    pub blobs_missing: u64,
    /// Blobs the file carried that the pool does not reference (apply): not taken.
    #[serde(default)]
    pub blobs_skipped: u64,
    /// Made with no `kith up` running: nothing was fetched from the pool's nodes.
    #[serde(default)]
    pub offline: bool,
    /// Bytes fetched from the pool's nodes first, to make the drop complete (make).
    pub fetched_bytes: u64,
    /// Made since what the other side acknowledged (make), else everything.
    pub incremental: bool,
    /// Seconds it took.
    pub seconds: f64,
}

/// A backup job (`kith backup add`, `ls`, `rm`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupJob {
    /// Its name.
    pub name: String,
    /// What it stores.
    pub path: String,
    /// `home`, or the pool it puts into.
    pub to: String,
    /// How often (s).
    pub every_s: u64,
    /// What it keeps (`daily=7,weekly=4`, or `all`).
    pub keep: String,
    /// When it last ran (ms since the epoch).
    pub last_run_ms: Option<i64>,
    /// When it last succeeded.
    pub last_ok_ms: Option<i64>,
    /// When it runs next (absent: as soon as the daemon looks).
    pub next_run_ms: Option<i64>,
    /// Why its last run failed (or what it warned of).
    pub last_error: Option<String>,
    /// The version its last run stored.
    pub last_version: Option<u32>,
    /// Runs so far.
    pub runs: u64,
    /// Versions its retention forgot so far.
    pub forgotten: u64,
}

/// One run of a backup job (`kith backup run`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRun {
    /// The job.
    pub name: String,
    /// The version stored, if the put went through.
    pub version: Option<u32>,
    /// Its object id.
    #[serde(default)]
    pub made: Option<String>,
    /// Files not read again (unchanged since the last version).
    pub files_unchanged: u64,
    /// Bytes new to the store.
    pub bytes_new: u64,
    /// The pool it was put into, or the folder (a path).
    pub pool: Option<String>,
    /// Versions the retention forgot (here and in the job's pool).
    pub forgotten: Vec<u32>,
    /// Their object ids.
    #[serde(default)]
    pub forgotten_ids: Vec<String>,
    /// A warning (stored, not yet fully replicated).
    pub warning: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds it took.
    pub seconds: f64,
}

/// `kith gc`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Collected {
    /// Objects kept.
    pub objects: u64,
    /// Blobs kept.
    pub blobs_kept: u64,
    /// Blobs removed.
    pub blobs_removed: u64,
    /// Packs deleted.
    pub packs_deleted: u64,
    /// Packs rewritten.
    pub packs_rewritten: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Unreferenced bytes left in packs below the rewrite threshold.
    pub bytes_unreferenced_kept: u64,
    /// Why packs due for a rewrite were left (a full disk); what needed no room was freed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_skipped: Option<String>,
}

/// `kith verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verified {
    /// Whether anything is damaged.
    pub damaged: bool,
    /// Packs read.
    pub packs: u64,
    /// Blobs checked.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects walked.
    pub objects: u64,
    /// Blobs that do not match their id.
    pub damaged_blobs: Vec<DamagedBlob>,
    /// Objects that cannot be restored whole.
    pub damaged_objects: Vec<DamagedObject>,
    /// Pack files the index does not list.
    pub unindexed_packs: Vec<String>,
    /// Blobs no object references.
    pub unreferenced_blobs: u64,
}

/// A damaged blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DamagedBlob {
    /// Its id.
    pub chunk: String,
    /// What is wrong.
    pub reason: String,
}

/// A damaged object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DamagedObject {
    /// Its id.
    pub id: String,
    /// What it was stored from.
    pub source: Option<String>,
    /// What is wrong (the first ones).
    pub problems: Vec<String>,
    /// How many problems in all.
    pub problem_count: u64,
}

/// A peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peer {
    /// Its node id.
    pub id: String,
    /// Its addresses.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// Announced on this LAN (mDNS).
    #[serde(default)]
    pub mdns: bool,
    /// Added by ticket.
    #[serde(default)]
    pub manual: bool,
    /// Added by this node's owner (`kith peer add`), not learned from a pool or a partner.
    #[serde(default)]
    pub owner: bool,
    /// `unknown`, `reachable`, `unreachable` or `another key at its address`.
    #[serde(default)]
    pub state: String,
    /// When it last answered (ms since the epoch).
    #[serde(default)]
    pub last_seen_ms: Option<u64>,
    /// Round trip of its last answer to a ping (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u32>,
    /// Its kith version, as it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its clock minus this node's (ms), as it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// How it is reached: `direct`, or a link through a neighbour.
    #[serde(default)]
    pub route: Option<String>,
    /// Why the last attempt to link it failed.
    #[serde(default)]
    pub link_error: Option<String>,
    /// Saved without asking it (the daemon was not running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<bool>,
}

/// `kith peer rm`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRemoved {
    /// The peer's node id.
    pub id: String,
}

/// `kith peer link`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Linked {
    /// The peer.
    pub id: String,
    /// How it is reached.
    pub route: String,
}

/// `kith id --ticket`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeTicket {
    /// `kith1...`.
    pub ticket: String,
}

/// `kith pair`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairCode {
    /// The code a browser types.
    pub code: String,
    /// Seconds it is valid.
    pub expires_s: u64,
    /// The node's page.
    pub page: Option<String>,
}
