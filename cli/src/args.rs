//! The command line: every command, its arguments and its help text (clap).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kith",
    version,
    about = "An offline-first mesh of neighbours pooling storage, hosting and bandwidth."
)]
pub(crate) struct Cli {
    /// The node's home directory [default: $KITH_HOME, else ~/.local/share/kith]
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the node in the foreground: discovery, serving, the control API (Ctrl-C stops it).
    Up {
        /// UDP address of the node's endpoint (repeat for several) [default: 0.0.0.0:7781]
        #[arg(long, value_name = "ADDR")]
        listen: Vec<SocketAddr>,
        /// Address of the LAN-facing HTTP listener [default: 0.0.0.0:7780]
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
        /// Do not announce or browse on mDNS.
        #[arg(long)]
        no_mdns: bool,
        /// Use mDNS on this interface only (repeat for several; `lo` for loopback).
        #[arg(long, value_name = "NAME")]
        mdns_iface: Vec<String>,
        /// Memory for opened site content the gateway keeps (hot pages served without
        /// fetching or decrypting again) [default: 256MiB]
        #[arg(long, value_name = "SIZE")]
        site_cache: Option<String>,
        /// Serve Prometheus metrics at http://ADDR/metrics (off by default; for example
        /// 127.0.0.1:9781).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
        /// Serve federated partners' public sites at NAME.local as their CDN edge (when a
        /// pool of this node lends its partner CDN: `kith federation invite/join --cdn`).
        #[arg(long)]
        cdn: bool,
        /// Use the relay at URL to reach nodes with no direct path (a federation partner's
        /// neighbourhood), such as http://10.0.0.5:7790 (repeat for several; none by default:
        /// nothing leaves the LAN).
        #[arg(long, value_name = "URL")]
        relay: Vec<String>,
        /// Serve a relay on ADDR:PORT, the address both neighbourhoods reach, for this node's
        /// pools and the partners they lend relay (`kith federation invite/join --relay`).
        #[arg(long, value_name = "ADDR")]
        serve_relay: Option<SocketAddr>,
        /// Read settings from this TOML file [default: HOME/kith.toml, if there is one]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the config file with every key and its default, and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Print the address of this node's web dashboard (with its login token).
    Dashboard {
        /// Open it in a browser.
        #[arg(long)]
        open: bool,
        /// Replace the token first: every address given before stops working.
        #[arg(long)]
        new_token: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check this node's setup (keys, daemon, config, ports, LAN, disk against offers, peers'
    /// clocks and versions) and say what to fix; fails if something does not work.
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the node, its addresses, peers and store usage.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the peers this node knows, and whether they answer.
    Peers {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The usage ledger: who gave and took what in each pool, and who owes what.
    ///
    /// Without a subcommand: a table per member for the period (this month by default).
    Ledger {
        #[command(subcommand)]
        command: Option<LedgerCommand>,
        #[command(flatten)]
        sel: LedgerSel,
    },
    /// Print a pairing code: a browser on this node's page (http://NODE:7780/kith/) may upload
    /// one file into your store with it (ten minutes, one upload).
    Pair {
        /// Also draw the page's address with the code as a QR code, for a phone's camera.
        #[arg(long)]
        qr: bool,
    },
    /// Look a name up on the LAN over mDNS, as a phone would (bakery, or bakery.local).
    Resolve {
        /// The name.
        name: String,
        /// How long to listen for answers (s, m).
        #[arg(long, default_value = "3s", value_name = "DURATION")]
        wait: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sites: publish a folder to a pool; every member's node serves it.
    Site {
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// Pools: communities sharing their members' storage.
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// This identity's document: name, devices, age recipients, pools (synced among them).
    Identity {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Offer this node's storage (and egress), or its CPU for jobs, to a pool.
    Offer {
        /// The pool (name or id; default: the only pool you are in).
        pool: Option<String>,
        /// Storage offered, such as 50GiB.
        #[arg(long, required_unless_present = "cpu")]
        storage: Option<String>,
        /// Lend this node to run members' jobs: how many at once (one core each; 0 withdraws).
        #[arg(long)]
        cpu: Option<u64>,
        /// Memory a job may use here, such as 4GiB (with --cpu).
        #[arg(long, default_value = "1GiB", requires = "cpu")]
        memory: String,
        /// Hours of the day jobs run here, such as 22-7 (with --cpu; default: always).
        #[arg(long, requires = "cpu")]
        hours: Option<String>,
        /// Egress per month, such as 100GB (default: unlimited).
        #[arg(long)]
        egress: Option<String>,
        /// Failure domain such as a household; replicas go to distinct zones.
        #[arg(long)]
        zone: Option<String>,
    },
    /// Manage peers.
    Peer {
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// The devices of your identity: list them, retire a lost one.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Scheduled backups of a path, into a pool or home, with a retention.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Drops: a pool's changes and chunks in a file, carried between neighbourhoods with no link.
    Drop {
        #[command(subcommand)]
        command: DropCommand,
    },
    /// The store itself: rebuild its index.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Run `kith up` as a systemd service.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Create a home with a new identity, or with one exported from another machine.
    Init {
        /// Make this a device of the identity in FILE (made by `kith key export`): the node
        /// gets a new key, certified by the identity, and keeps no copy of the identity key,
        /// so another device can cut it off (`kith device revoke`). The export stays your key.
        #[arg(long, value_name = "FILE")]
        import: Option<PathBuf>,
        /// With --import: keep the identity key on this device too (it can then export it
        /// again, but cannot be cut off by another device).
        #[arg(long, requires = "import")]
        keep_identity_key: bool,
    },
    /// Print this node's id, the identity id and the age recipient.
    Id {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Print a ticket other nodes can add with `kith peer add` (needs `kith up`).
        #[arg(long)]
        ticket: bool,
    },
    /// Manage the identity's keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Store a file or folder as a new version; prints the object id.
    Put {
        /// The file, folder or symlink to store.
        path: PathBuf,
        /// Also put it into this pool: its chunks go to the pool's holders, who acknowledge.
        #[arg(long, value_name = "POOL")]
        pool: Option<String>,
        /// Print a JSON report on standard output instead of the id.
        #[arg(long)]
        json: bool,
    },
    /// Restore an object: an id (or unique prefix), PATH@VERSION, or a stored path; SPEC:path/inside restores one file or folder of it.
    Get {
        /// What to restore. With `kith up` running, a full id this node lacks is fetched from peers (for SPEC:path/inside, only that part's chunks).
        spec: String,
        /// Where to restore it; it must not exist. `-` writes a file object to standard output.
        #[arg(short, long, value_name = "DEST")]
        output: Option<PathBuf>,
        /// Print a JSON report on standard output (not with `-o -`).
        #[arg(long)]
        json: bool,
    },
    /// List stored objects; with SPEC, the files of that object (version).
    Ls {
        /// An id (or unique prefix), PATH@VERSION, or a stored path: list its files.
        spec: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What changed between two versions: added, removed, modified and metadata-only entries.
    Diff {
        /// The older version (an id, a prefix, PATH@VERSION or a stored path).
        old: String,
        /// The newer version.
        new: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the versions stored from a path.
    Log {
        /// The source path.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget an object version, here and in the pools you put it into (their holders reclaim its space); `kith gc` reclaims it here.
    Rm {
        /// An id (or unique prefix) or PATH@VERSION.
        spec: String,
        /// Forget it only on this node: your pools keep their copy, and `kith get ID` fetches it back.
        #[arg(long)]
        local: bool,
    },
    /// Write everything of your identity (identity document, every version of every object, pool memberships) into one file; chunks stay encrypted, so it is safe to hand to anyone.
    Export {
        /// The file to write; it must not exist.
        #[arg(
            short,
            long,
            value_name = "FILE",
            required_unless_present = "plain",
            conflicts_with = "plain"
        )]
        output: Option<PathBuf>,
        /// Instead: the latest version of every stored path, as ordinary files under DIR (which must not exist), each at its original path inside it.
        #[arg(long, value_name = "DIR")]
        plain: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move your objects out of a pool: into another pool, or home to this node. Each object is placed and its copies confirmed before the old pool releases it; run it again to finish a move that was stopped.
    Move {
        /// The pool to move out of.
        #[arg(long)]
        from: String,
        /// The pool to move into, or `home` (this node's store).
        #[arg(long)]
        to: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take in an export of your identity (no network needed); what the store has already is skipped.
    Import {
        /// The file (made by `kith export`).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Federation: agreements in which pools lend each other storage, CDN edges, egress and
    /// relaying (admins).
    Federation {
        #[command(subcommand)]
        command: FedCommand,
    },
    /// WebAssembly jobs: run one here, or on the pool's nodes with their results compared.
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Reclaim the space of chunks that no object references.
    Gc {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check every chunk against its hash and every object's structure.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum KeyCommand {
    /// Write the identity to FILE, encrypted with a passphrase ($KITH_PASSPHRASE or a prompt).
    Export {
        /// Where to write the export; it must not exist.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum PoolCommand {
    /// Found a pool; you become its admin.
    Create {
        /// Its name.
        name: String,
        /// Copies of every chunk (default 3).
        #[arg(long)]
        replicas: Option<u64>,
        /// Storage each member may use, such as 100GiB (default: no limit).
        #[arg(long)]
        quota: Option<String>,
        /// Your name in the pool.
        #[arg(long = "as", value_name = "NAME")]
        display: Option<String>,
    },
    /// Print a ticket that lets someone join.
    Invite {
        /// The pool (default: the only pool you are in).
        pool: Option<String>,
        /// How long the ticket is valid (s, m, h, d).
        #[arg(long, default_value = "24h")]
        expires: String,
        /// How many people may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Also draw the ticket as a QR code, for a phone's camera.
        #[arg(long)]
        qr: bool,
        /// Print the ticket, its expiry and uses as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Join a pool with a ticket.
    Join {
        /// The ticket from `kith pool invite`.
        ticket: String,
        /// Your name in the pool.
        #[arg(long = "as", value_name = "NAME")]
        display: Option<String>,
    },
    /// List the pools this node is in.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Members, roles, offers and capacity of a pool.
    Show {
        /// The pool (default: the only pool you are in).
        pool: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Leave a pool: your objects come home to this node, the others copy what your nodes hold
    /// for them, then you are out (your sites stop being served).
    Leave {
        /// The pool.
        pool: String,
        /// How long to wait for the hand-off.
        #[arg(long, default_value = "10m", value_name = "DURATION")]
        wait: String,
        /// Leave at once, without a hand-off (the pool repairs from the other copies, if any).
        #[arg(long)]
        force: bool,
        /// Do not ask before taking your sites and objects out of the pool.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// End the pool for everyone (its last admin): members' objects come home to their nodes,
    /// sites stop, and nobody can change it any more.
    Dissolve {
        /// The pool.
        pool: String,
        /// Do not ask first.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Remove a member (admins).
    Remove {
        /// The pool.
        pool: String,
        /// The member's name or id prefix.
        member: String,
    },
    /// Change a setting of the pool's charter, or a member's role (admins).
    ///
    /// Keys: name (text); replicas (copies of every chunk, at most the zones offering
    /// storage); quota (storage per member, such as 100GiB, 0 for none); cost_rule
    /// (proportional or credits); join_rule (invite); repair_after (how long a silent holder
    /// waits before its share is copied elsewhere, such as 10m); audit_every (how often holders
    /// are audited, such as 10m); record_every (how often usage goes into the ledger, such as
    /// 1h); cpu_price (what a reference CPU-hour of members' jobs costs, such as 0.02; 0 counts
    /// CPU as credit); offsite_replicas (copies of every chunk kept by federated pools that lend
    /// this one storage, 0 to 3); role:MEMBER (admin or member).
    Set {
        /// The pool.
        pool: String,
        /// What to set.
        key: String,
        /// The new value.
        value: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum SiteCommand {
    /// Publish a folder as a new version of a site (served at `http://NAME.local:7780/`).
    Publish {
        /// The folder.
        dir: PathBuf,
        /// The site's name (one DNS label: a-z, 0-9, -).
        #[arg(long)]
        name: String,
        /// The pool (default: the only pool this node is in).
        #[arg(long)]
        pool: Option<String>,
        /// Anyone on the LAN may read it (the default).
        #[arg(long, conflicts_with = "members")]
        public: bool,
        /// Only the pool's members may read it (with `kith site credential`).
        #[arg(long)]
        members: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The sites of this node's pools.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The versions of a site.
    Versions {
        /// The site.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve an earlier version of your site again.
    Rollback {
        /// The site.
        name: String,
        /// The version (see `kith site versions`).
        version: u64,
    },
    /// Change a setting of your site: `keep N` keeps the newest N versions (and the one served) and forgets the others.
    Set {
        /// The site.
        name: String,
        /// The setting (`keep`).
        key: String,
        /// Its value.
        value: String,
    },
    /// Take your site down (every version).
    Rm {
        /// The site.
        name: String,
    },
    /// Print a credential that opens the pool's members-only sites.
    Credential {
        /// The pool (default: the only pool this node is in).
        #[arg(long)]
        pool: Option<String>,
        /// How long it is valid (s, m, h, d).
        #[arg(long, default_value = "30d")]
        expires: String,
    },
}

#[derive(clap::Args, Clone)]
pub(crate) struct LedgerSel {
    /// The pool (default: every pool this node is in).
    #[arg(long)]
    pub(crate) pool: Option<String>,
    /// The month, such as 2026-11 (default: this month).
    #[arg(long)]
    pub(crate) period: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub(crate) enum LedgerCommand {
    /// Recompute every member's figures from the evidence (receipts, audits) and flag rows
    /// that do not match; exit status 1 if any does.
    Verify {
        #[command(flatten)]
        sel: LedgerSel,
    },
    /// Write what each member owes for a period, for a treasurer (CSV or JSON).
    Statement {
        #[command(flatten)]
        sel: LedgerSel,
        /// csv or json.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Write to this file (it must not exist) instead of standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Enter a shared cost the pool paid, such as electricity (admins).
    Cost {
        /// The pool.
        pool: String,
        /// The amount, such as 42.50, in the pool's currency.
        #[arg(allow_hyphen_values = true)]
        amount: String,
        /// What it paid for.
        what: String,
        /// The month it belongs to (default: this month).
        #[arg(long)]
        period: Option<String>,
    },
    /// Seal a month that has ended: a signed summary that carries credit balances into the
    /// next month's ledger (admins).
    Seal {
        /// The pool.
        pool: String,
        /// The month, such as 2026-10.
        period: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Rebuild a lost or damaged index from the packs, the object journal and the roots (with
    /// `kith up` stopped); the old index is moved aside, never deleted.
    RebuildIndex {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum ServiceCommand {
    /// Write a systemd unit for `kith up` and enable it: this user's (its home), or with
    /// --system the machine's (a node of its own in /var/lib/kith, run by a user of its own).
    Install {
        /// The machine's service instead of this user's.
        #[arg(long)]
        system: bool,
        /// Write the unit only; do not enable or start it.
        #[arg(long)]
        no_enable: bool,
        /// Write the unit into DIR instead of systemd's folder.
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
        /// Print the unit and change nothing.
        #[arg(long)]
        print: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum BackupCommand {
    /// Store PATH on a schedule (kith up runs it; a run missed while the machine was off runs at start), keeping what --keep says.
    Add {
        /// The file or folder.
        path: PathBuf,
        /// A pool, `home` (this node's store only), or a folder on another disk (a path with a `/`: it becomes a kith home of your identity, readable with `kith --home DIR`).
        #[arg(long)]
        to: String,
        /// How often: 30m, 1h, 1d.
        #[arg(long, default_value = "1h")]
        every: String,
        /// Versions to keep, as restic's forget: last=N, hourly=N, daily=N, weekly=N, monthly=N, yearly=N (comma-separated), or all.
        #[arg(long, default_value = "all")]
        keep: String,
        /// The job's name (default: the path's last part).
        #[arg(long)]
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The jobs: what, where, when they last ran and how it went.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a job now (or every job).
    Run {
        /// The job.
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a job; the versions it stored stay.
    Rm {
        /// The job.
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum DropCommand {
    /// Write what the other side of a pool lacks into a file (changes and the chunks they reference), to carry where there is no link.
    Make {
        /// The pool (default: the only pool this node is in).
        #[arg(long)]
        pool: Option<String>,
        /// The file to write; it must not exist.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Everything, not only what the other side lacks since the last drop from it applied here.
        #[arg(long)]
        full: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take in a drop made on the other side (checked like a sync; applying it twice changes nothing).
    Apply {
        /// The file (made by `kith drop make`).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum DeviceCommand {
    /// Every device of this identity, when each was last heard from, which are retired.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Retire a lost, stolen or replaced device (from another of your devices): your pools stop
    /// counting it as a holder (its share is copied elsewhere) and nobody dials it any more.
    Revoke {
        /// The device's node id (or its first characters, see `kith device ls`).
        node: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum PeerCommand {
    /// Add a peer from its ticket (`kith id --ticket` on the other node); remembered.
    Add {
        /// The ticket.
        ticket: String,
    },
    /// Remove a peer: forgotten by this node (and no longer carried by a relay it serves);
    /// a neighbour on the LAN is found again by mDNS.
    Rm {
        /// The peer's node id (or its first characters).
        peer: String,
    },
    /// Reach a known peer now: directly, or if it cannot be dialed (behind another NAT)
    /// through a WebRTC data channel signalled by a neighbour both reach; says which, or why
    /// neither worked.
    Link {
        /// The peer's node id (or its first characters).
        peer: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum JobCommand {
    /// Run a WASI command (`.wasm`, or `.wat` text) and write its result into a new folder:
    /// `stdout` and `output/` (what it wrote at /output).
    Run {
        /// The module.
        module: PathBuf,
        /// Run it on this many members' nodes of POOL and keep the result only if they agree.
        #[arg(long)]
        pool: Option<String>,
        /// How many members' nodes must agree (with --pool).
        #[arg(long, default_value_t = 2, requires = "pool")]
        redundancy: u32,
        /// A file or folder the job reads at /input, or an object of this node's store (its
        /// id or a prefix, or PATH@N, as `kith ls` shows).
        #[arg(long)]
        input: Option<PathBuf>,
        /// A file the job reads as its standard input.
        #[arg(long)]
        stdin: Option<PathBuf>,
        /// An argument for the job (repeat for several).
        #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
        args: Vec<String>,
        /// An environment variable, NAME=VALUE (repeat for several).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Fuel it may burn (about 10^9 per CPU-second; default: ten minutes' worth).
        #[arg(long)]
        fuel: Option<u64>,
        /// Memory it may use, such as 256MiB.
        #[arg(long, default_value = "256MiB")]
        memory: String,
        /// The folder its result goes into (must not exist).
        #[arg(short, long)]
        output: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The jobs asked for here (running, and the last 100 finished) and those running here
    /// for other members.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One job: what each runner answered, its result, or why it failed.
    Show {
        /// A prefix of the job's id (at least 4 characters).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a job asked for here (its runners stop too), or one running here for another
    /// member (it is told the job was cancelled).
    Cancel {
        /// A prefix of the job's id (at least 4 characters).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What a pool lends in a federation agreement.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FedLendArgs {
    /// Storage for the other pool's off-site replicas, such as 200GiB.
    #[arg(long, value_name = "SIZE", default_value = "")]
    pub lend_storage: String,
    /// Bytes a month its nodes send for the other pool, such as 50GB.
    #[arg(long, value_name = "SIZE", default_value = "")]
    pub lend_egress: String,
    /// Its nodes serve the other pool's public sites (CDN edges).
    #[arg(long)]
    pub cdn: bool,
    /// Its relay carries the other pool's traffic.
    #[arg(long)]
    pub relay: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum FedCommand {
    /// Offer another pool an agreement: prints a kithfed1 ticket for an admin of that pool.
    Invite {
        /// Your pool.
        pool: String,
        #[command(flatten)]
        lend: FedLendArgs,
        /// Price per GiB-month of storage held, both ways (none: credit both ways).
        #[arg(long, value_name = "PRICE", default_value = "")]
        price_storage: String,
        /// Price per GB sent, both ways.
        #[arg(long, value_name = "PRICE", default_value = "")]
        price_egress: String,
        /// The term, renewed for as long again unless a side gives notice.
        #[arg(long, default_value_t = 365)]
        term_days: u32,
        /// The notice a side gives before it leaves.
        #[arg(long, default_value_t = 30)]
        notice_days: u32,
        /// How long the ticket may be taken up.
        #[arg(long, default_value = "7d")]
        expires: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take up another pool's offer for your pool: prints a kithfedok1 ticket for its admin.
    Join {
        /// Your pool.
        pool: String,
        /// The kithfed1 ticket.
        ticket: String,
        #[command(flatten)]
        lend: FedLendArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Answer another pool's offer with your pool's own: a kithfed1 ticket for its admin,
    /// with what your pool lends and the terms you want (each term not given is the offer's).
    Counter {
        /// Your pool.
        pool: String,
        /// The other pool's kithfed1 ticket.
        ticket: String,
        #[command(flatten)]
        lend: FedLendArgs,
        /// Price per GiB-month of storage held, both ways (default: the offer's; `0`: none).
        #[arg(long, value_name = "PRICE")]
        price_storage: Option<String>,
        /// Price per GB sent, both ways (default: the offer's; `0`: none).
        #[arg(long, value_name = "PRICE")]
        price_egress: Option<String>,
        /// The term (default: the offer's).
        #[arg(long)]
        term_days: Option<u32>,
        /// The notice (default: the offer's).
        #[arg(long)]
        notice_days: Option<u32>,
        /// How long your ticket may be taken up.
        #[arg(long, default_value = "7d")]
        expires: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Record the other pool's acceptance of your pool's offer (the kithfedok1 ticket).
    Accept {
        /// Your pool.
        pool: String,
        /// The kithfedok1 ticket.
        ticket: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The agreements of every pool this node is in.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One agreement in full: what each side lends, its terms and state, this month's line
    /// of the ledger with what the partner receipted, and the off-site copies there.
    Show {
        /// Your pool.
        pool: String,
        /// The partner pool's name, or a prefix of the agreement's id.
        agreement: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Give notice on an agreement: it ends after its notice period.
    Leave {
        /// Your pool.
        pool: String,
        /// The partner pool's name, or a prefix of the agreement's id.
        agreement: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}
