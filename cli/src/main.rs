//! `kith`: the command-line interface of a kith node.
//!
//! Commands run in this process, or, when `kith up` runs on the home, in the daemon (which
//! holds the store and the network); either way they answer with the same frames
//! ([`wire::Frame`]) and print the same way.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod progress;
mod render;
mod render_ledger;
mod render_pool;
mod render_site;

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use kith_node::net::mdns::MdnsConfig;
use kith_node::{Home, Identity};
use serde_json::Value;

use kith::wire::Frame;
use kith::{GetTo, PoolReq, Request, client};

/// Environment variable holding a passphrase for `key export` and `init --import`.
const PASSPHRASE_ENV: &str = "KITH_PASSPHRASE";

#[derive(Parser)]
#[command(
    name = "kith",
    version,
    about = "An offline-first mesh of neighbours pooling storage, hosting and bandwidth."
)]
struct Cli {
    /// The node's home directory [default: $KITH_HOME, else ~/.local/share/kith]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node in the foreground: discovery, serving, the control API (Ctrl-C stops it).
    Up {
        /// UDP address of the node's endpoint (repeat for several).
        #[arg(long, value_name = "ADDR", default_values_t = ["0.0.0.0:7781".parse::<SocketAddr>().expect("valid")])]
        listen: Vec<SocketAddr>,
        /// Address of the LAN-facing HTTP listener.
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7780")]
        http: SocketAddr,
        /// Do not announce or browse on mDNS.
        #[arg(long)]
        no_mdns: bool,
        /// Use mDNS on this interface only (repeat for several; `lo` for loopback).
        #[arg(long, value_name = "NAME")]
        mdns_iface: Vec<String>,
        /// Memory for opened site content the gateway keeps (hot pages served without
        /// fetching or decrypting again).
        #[arg(long, value_name = "SIZE", default_value = "256MiB")]
        site_cache: String,
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
    Pair,
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
    /// Offer this node's storage (and egress) to a pool.
    Offer {
        /// The pool (name or id; default: the only pool you are in).
        pool: Option<String>,
        /// Storage offered, such as 50GiB.
        #[arg(long)]
        storage: String,
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
    /// Create a home with a new identity, or with one exported from another machine.
    Init {
        /// Restore the identity in FILE (made by `kith key export`); the node gets a new key.
        #[arg(long, value_name = "FILE")]
        import: Option<PathBuf>,
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
    /// Restore an object: an id (or unique prefix), PATH@VERSION, or a stored path.
    Get {
        /// What to restore. With `kith up` running, a full id this node lacks is fetched from peers.
        spec: String,
        /// Where to restore it; it must not exist. `-` writes a file object to standard output.
        #[arg(short, long, value_name = "DEST")]
        output: Option<PathBuf>,
        /// Print a JSON report on standard output (not with `-o -`).
        #[arg(long)]
        json: bool,
    },
    /// List stored objects.
    Ls {
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
    /// Forget an object version; `kith gc` reclaims its space.
    Rm {
        /// An id (or unique prefix) or PATH@VERSION.
        spec: String,
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
enum KeyCommand {
    /// Write the identity to FILE, encrypted with a passphrase ($KITH_PASSPHRASE or a prompt).
    Export {
        /// Where to write the export; it must not exist.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum PoolCommand {
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
    /// 1h); role:MEMBER (admin or member).
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
enum SiteCommand {
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
struct LedgerSel {
    /// The pool (default: every pool this node is in).
    #[arg(long)]
    pool: Option<String>,
    /// The month, such as 2026-11 (default: this month).
    #[arg(long)]
    period: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum LedgerCommand {
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
enum DeviceCommand {
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
enum PeerCommand {
    /// Add a peer from its ticket (`kith id --ticket` on the other node); remembered.
    Add {
        /// The ticket.
        ticket: String,
    },
    /// Reach a known peer now: directly, or if it cannot be dialed (behind another NAT)
    /// through a WebRTC data channel signalled by a neighbour both reach; says which, or why
    /// neither worked.
    Link {
        /// The peer's node id (or its first characters).
        peer: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Up { .. }) {
        // As other command-line tools: `kith ls | head` ends quietly when head has enough,
        // instead of panicking on a closed pipe. (The daemon keeps Rust's default and sees the
        // error on a broken socket.)
        // SAFETY: setting a signal disposition before any thread exists has no other effect.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kith: error: {}", kith::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn resolve(name: &str, wait: &str, json: bool) -> Result<ExitCode> {
    let wait = std::time::Duration::from_millis(kith::parse_duration_ms(wait)?);
    let host = if name.contains('.') { name.to_string() } else { format!("{name}.local") };
    let ips = kith_node::net::mdns::resolve(&host, wait).map_err(|e| anyhow::anyhow!(e))?;
    if json {
        println!("{}", serde_json::json!({ "name": host, "addrs": ips }));
    } else {
        for ip in &ips {
            println!("{ip}");
        }
    }
    if ips.is_empty() {
        eprintln!("kith: nobody on this LAN answered for {host} within {} s", wait.as_secs_f32());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn site_command(root: &Path, cwd: &Path, command: SiteCommand) -> Result<ExitCode> {
    use crate::render_site::render;
    use kith::SiteReq;
    let run = |req| execute(root, Request::Site(req), "");
    match command {
        SiteCommand::Publish { dir, name, pool, public: _, members, json } => {
            let dir = kith_node::store::absolute_in(&dir, cwd);
            kith::check_dir(&dir)?;
            render(&run(SiteReq::Publish { dir, name, pool, members })?, "publish", json)
        }
        SiteCommand::Ls { json } => render(&run(SiteReq::Ls)?, "ls", json),
        SiteCommand::Versions { name, json } => {
            render(&run(SiteReq::Versions { name })?, "versions", json)
        }
        SiteCommand::Rollback { name, version } => {
            render(&run(SiteReq::Rollback { name, version })?, "rollback", false)
        }
        SiteCommand::Rm { name } => render(&run(SiteReq::Rm { name })?, "rm", false),
        SiteCommand::Credential { pool, expires } => {
            render(&run(SiteReq::Credential { pool, expires })?, "credential", false)
        }
    }
}

fn ledger_command(root: &Path, command: Option<LedgerCommand>, top: LedgerSel) -> Result<ExitCode> {
    use crate::render_ledger::{render_show, render_statement, render_verify};
    use kith::LedgerReq;
    let run = |req| execute(root, Request::Ledger(req), "");
    match command {
        None => {
            let LedgerSel { pool, period, json } = top;
            render_show(&run(LedgerReq::Show { pool, period })?, json)
        }
        Some(LedgerCommand::Verify { sel }) => {
            let json = sel.json || top.json;
            let req = LedgerReq::Verify {
                pool: sel.pool.or(top.pool),
                period: sel.period.or(top.period),
            };
            render_verify(&run(req)?, json)
        }
        Some(LedgerCommand::Statement { sel, format, output }) => {
            if format != "csv" && format != "json" {
                anyhow::bail!("unknown format `{format}` (csv or json)");
            }
            let req = LedgerReq::Statement {
                pool: sel.pool.or(top.pool),
                period: sel.period.or(top.period),
            };
            render_statement(&run(req)?, &format, output)
        }
        Some(LedgerCommand::Cost { pool, amount, what, period }) => {
            let v = run(LedgerReq::Cost { pool, amount, what, period })?;
            eprintln!(
                "cost of {}.{:02} entered in {} {}",
                v["cents"].as_i64().unwrap_or(0) / 100,
                v["cents"].as_i64().unwrap_or(0) % 100,
                v["name"].as_str().unwrap_or(""),
                v["period"].as_str().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(LedgerCommand::Seal { pool, period }) => {
            let v = run(LedgerReq::Seal { pool, period })?;
            eprintln!(
                "sealed {} {}: {} members, {} bytes",
                v["name"].as_str().unwrap_or(""),
                v["period"].as_str().unwrap_or(""),
                v["members"],
                v["bytes"]
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn pool_command(root: &Path, command: PoolCommand) -> Result<ExitCode> {
    use kith::api::pools::*;
    use render_pool as r;
    let call = |req| -> Result<Value> { execute(root, Request::Pool(req), "") };
    match command {
        PoolCommand::Create { name, replicas, quota, display } => r::pool_ref(
            &typed(call(PoolReq::Create { name, replicas, quota, display })?)?,
            "pool created",
        ),
        PoolCommand::Invite { pool, expires, uses } => {
            let pool = pool.unwrap_or_default();
            r::ticket(&typed(call(PoolReq::Invite { pool, expires, uses })?)?)
        }
        PoolCommand::Join { ticket, display } => {
            r::pool_ref(&typed(call(PoolReq::Join { ticket, display })?)?, "joined")
        }
        PoolCommand::Ls { json } => {
            let list: Vec<PoolSummary> = typed(call(PoolReq::Ls)?)?;
            if json { r::json(&list) } else { r::pools(&list) }
        }
        PoolCommand::Show { pool, json } => {
            let d: PoolDetail = typed(call(PoolReq::Show { pool: pool.unwrap_or_default() })?)?;
            if json { r::json(&d) } else { r::pool(&d) }
        }
        PoolCommand::Leave { pool, wait, force, yes } => {
            let mut yes = yes;
            if !yes {
                match call(PoolReq::LeavePlan { pool: pool.clone() }).and_then(typed::<LeavePlan>) {
                    Ok(plan) if plan.needs_confirmation => {
                        match confirm(&format!("Leaving {}", plan.name), &plan.warnings)? {
                            Some(true) => yes = true,
                            Some(false) => bail!("you stay in pool {}", plan.name),
                            None => {}
                        }
                    }
                    Ok(_) => {}
                    // With --force the capacity checks do not apply; the daemon says the rest.
                    Err(e) if !force => return Err(e),
                    Err(_) => {}
                }
            }
            let req = Request::Pool(PoolReq::Leave { pool, wait, force, yes });
            r::left(&typed(execute(root, req, "handing off")?)?)
        }
        PoolCommand::Dissolve { pool, yes } => {
            if !yes {
                let what = format!(
                    "every member's objects in {pool} come home to their own nodes and leave the pool; its sites stop being served; nobody can change the pool any more"
                );
                match confirm(&format!("Dissolving {pool}"), std::slice::from_ref(&what))? {
                    Some(true) => {}
                    Some(false) => bail!("pool {pool} was not dissolved"),
                    None => bail!(
                        "dissolving pool {pool} ends it for everyone: {what}. Run again with --yes to dissolve it"
                    ),
                }
            }
            r::dissolved(&typed(call(PoolReq::Dissolve { pool })?)?)
        }
        PoolCommand::Remove { pool, member } => {
            r::removed(&typed(call(PoolReq::Remove { pool, member })?)?)
        }
        PoolCommand::Set { pool, key, value } => {
            r::set(&typed(call(PoolReq::Set { pool, key, value })?)?)
        }
    }
}

/// Reads a command's answer as the type it is: the answer of a daemon of another kith version
/// may not read.
fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).context(
        "the daemon's answer has a form this kith does not read: is the running daemon another version of kith? (restart `kith up`)",
    )
}

/// Shows what an action takes away and asks on the terminal: the answer, or `None` without a
/// terminal to ask on (the caller must then pass `--yes`).
fn confirm(what: &str, warnings: &[String]) -> Result<Option<bool>> {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(None);
    }
    eprintln!("{what}:");
    for w in warnings {
        eprintln!("  - {w}");
    }
    eprint!("Go on? [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("cannot read the answer")?;
    Ok(Some(matches!(line.trim(), "y" | "Y" | "yes")))
}

fn run(cli: Cli) -> Result<ExitCode> {
    let root = Home::locate(cli.home.as_deref())?;
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let abs = |p: &Path| kith_node::store::absolute_in(p, &cwd);
    match cli.command {
        Command::Up { listen, http, no_mdns, mdns_iface, site_cache } => {
            let site_cache =
                kith_pools::parse_size(&site_cache).map_err(|e| anyhow::anyhow!(e))? as usize;
            init_logging();
            let home = open_home(&root)?;
            let mdns = MdnsConfig { disabled: no_mdns, interfaces: mdns_iface };
            kith::Daemon::run_until_signal(home, kith::Config { listen, http, mdns, site_cache })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Init { import } => init(&root, import.as_deref()),
        Command::Id { json, ticket: false } => render::id(&local_id(&root)?, json),
        Command::Id { json, ticket: true } => {
            render::ticket(&execute(&root, Request::Ticket, "")?, json)
        }
        Command::Key { command: KeyCommand::Export { file } } => export(&open_home(&root)?, &file),
        Command::Status { json } => render::status(&execute(&root, Request::Status, "")?, json),
        Command::Pool { command } => pool_command(&root, command),
        Command::Ledger { command, sel } => ledger_command(&root, command, sel),
        Command::Site { command } => site_command(&root, &cwd, command),
        Command::Resolve { name, wait, json } => resolve(&name, &wait, json),
        Command::Pair => {
            let v = execute(&root, Request::Pair, "")?;
            println!("{}", v["code"].as_str().unwrap_or(""));
            eprintln!(
                "valid for {} minutes and one upload, on {}",
                v["expires_s"].as_u64().unwrap_or(0) / 60,
                v["page"].as_str().unwrap_or("this node's page")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Identity { json } => {
            let v: kith::api::pools::IdentityDoc =
                typed(execute(&root, Request::Pool(PoolReq::Identity), "")?)?;
            if json { render_pool::json(&v) } else { render_pool::identity(&v) }
        }
        Command::Offer { pool, storage, egress, zone } => {
            let req = PoolReq::Offer { pool: pool.unwrap_or_default(), storage, egress, zone };
            render_pool::offered(&typed(execute(&root, Request::Pool(req), "")?)?)
        }
        Command::Device { command: DeviceCommand::Ls { json } } => {
            let list: Vec<kith::api::pools::Device> =
                typed(execute(&root, Request::Pool(PoolReq::Devices), "")?)?;
            if json { render_pool::json(&list) } else { render_pool::devices(&list) }
        }
        Command::Device { command: DeviceCommand::Revoke { node } } => render_pool::retired(
            &typed(execute(&root, Request::Pool(PoolReq::Revoke { node }), "")?)?,
        ),
        Command::Peers { json } => render::peers(&execute(&root, Request::Peers, "")?, json),
        Command::Peer { command: PeerCommand::Add { ticket } } => {
            render::peer_added(&execute(&root, Request::PeerAdd { ticket }, "")?)
        }
        Command::Peer { command: PeerCommand::Link { peer } } => {
            render::peer_linked(&execute(&root, Request::PeerLink { peer }, "reaching")?)
        }
        Command::Put { path, pool, json } => {
            let what = if pool.is_some() { "storing and replicating" } else { "storing" };
            render::put(&execute(&root, Request::Put { path: abs(&path), pool }, what)?, json)
        }
        Command::Get { spec, output, json } => {
            let to = match output {
                Some(p) if p == Path::new("-") => GetTo::Stdout,
                Some(p) => GetTo::Path(abs(&p)),
                None => GetTo::Here,
            };
            let to_stdout = to == GetTo::Stdout;
            let v = execute(
                &root,
                Request::Get { spec, cwd, to },
                if to_stdout { "" } else { "restoring" },
            )?;
            if json && !to_stdout {
                println!("{v}");
            } else if !to_stdout {
                render::restored(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { json } => render::objects(&execute(&root, Request::Ls, "")?, json),
        Command::Log { path, json } => {
            let v = execute(&root, Request::Log { path: abs(&path) }, "")?;
            if !json && v.as_array().is_some_and(|a| a.is_empty()) {
                bail!("no versions stored from {}", abs(&path).display());
            }
            render::objects(&v, json)
        }
        Command::Rm { spec } => {
            let v = execute(&root, Request::Rm { spec, cwd }, "")?;
            eprintln!(
                "forgot object {}; run `kith gc` to reclaim its space",
                v["id"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc { json } => render::gc(&execute(&root, Request::Gc, "")?, json),
        Command::Verify { json } => {
            render::verify(&execute(&root, Request::Verify, "verifying")?, json)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // iroh's accept loop warns about every failed handshake of a peer (another node dialling
    // an old address of a replaced device): kith says that once, in its own words.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,iroh=warn,iroh::protocol=error,noq_proto=error,actix_server=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Opens the home, creating it with a new identity if it does not exist yet.
fn open_home(root: &Path) -> Result<Home> {
    let (home, created) = Home::open_or_init(root)?;
    if created {
        eprintln!("kith: created a new home with a new identity in {}", root.display());
    }
    Ok(home)
}

/// Runs a request in the daemon if one runs on the home, else in this process; shows its
/// progress (labelled `label`), writes its data to standard output, and returns its result.
fn execute(root: &Path, req: Request, label: &'static str) -> Result<Value> {
    let mut next: Box<dyn FnMut() -> Result<Option<Frame>>> = match client::send(root, &req)? {
        Some(mut body) => Box::new(move || Frame::read(&mut body)),
        None => local(root, req)?,
    };
    let bar = progress::Bar::new(label);
    let mut stdout = std::io::stdout().lock();
    let result = loop {
        match next()? {
            Some(Frame::Progress { done, total, files }) => bar.update(done, total, files),
            Some(Frame::Data(d)) => {
                stdout.write_all(&d).context("cannot write to standard output")?
            }
            Some(Frame::Warning(w)) => bar.println(&format!("kith: warning: {w}")),
            Some(Frame::Result(v)) => break Ok(v),
            Some(Frame::Error(e)) => break Err(anyhow::anyhow!(e)),
            None => {
                break Err(anyhow::anyhow!(
                    "the operation ended without an answer (did the daemon stop?)"
                ));
            }
        }
    };
    bar.finish();
    stdout.flush()?;
    result
}

/// Runs a request in this process, with the home's store.
fn local(root: &Path, req: Request) -> Result<Box<dyn FnMut() -> Result<Option<Frame>>>> {
    let mut frames = kith::local::run(open_home(root)?, req)?;
    Ok(Box::new(move || frames.next_frame()))
}

fn local_id(root: &Path) -> Result<Value> {
    let home = open_home(root)?;
    let identity = home.identity()?;
    Ok(serde_json::json!({
        "node": home.node_key()?.id().to_string(),
        "identity": identity.id().to_string(),
        "age": identity.recipient().to_string(),
    }))
}

fn init(root: &Path, import: Option<&Path>) -> Result<ExitCode> {
    let Some(file) = import else {
        let (_, created) = Home::open_or_init(root)?;
        let verb = if created { "created" } else { "already initialised:" };
        eprintln!("kith: {verb} {}", root.display());
        return render::id(&local_id(root)?, false);
    };
    let mut data = Vec::new();
    std::fs::File::open(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .take(kith_node::keys::MAX_KEY_FILE_BYTES as u64 + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let pass = passphrase("Passphrase of the key export", false)?;
    let identity = Identity::import(&data, &pass)
        .with_context(|| format!("cannot import {}", file.display()))?;
    Home::init(root, identity)?;
    eprintln!("kith: imported the identity into {} with a new node key", root.display());
    render::id(&local_id(root)?, false)
}

fn export(home: &Home, file: &Path) -> Result<ExitCode> {
    use std::os::unix::fs::OpenOptionsExt;
    if file.exists() {
        bail!("{} already exists; choose a new file name", file.display());
    }
    let identity = home.identity()?;
    let pass = passphrase("Passphrase for the export", true)?;
    let bytes = identity.export(&pass)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", file.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(file);
        })?;
    eprintln!("kith: wrote the identity {} to {}", identity.id(), file.display());
    Ok(ExitCode::SUCCESS)
}

/// A passphrase from $KITH_PASSPHRASE, else asked on the terminal (twice when `confirm`).
fn passphrase(prompt: &str, confirm: bool) -> Result<String> {
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        if p.is_empty() {
            bail!("{PASSPHRASE_ENV} is set but empty");
        }
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail!("no passphrase: set {PASSPHRASE_ENV} or run kith on a terminal");
    }
    let p =
        rpassword::prompt_password(format!("{prompt}: ")).context("cannot read the passphrase")?;
    if p.is_empty() {
        bail!("the passphrase is empty");
    }
    if confirm && rpassword::prompt_password("Again: ").context("cannot read the passphrase")? != p
    {
        bail!("the passphrases differ");
    }
    Ok(p)
}
