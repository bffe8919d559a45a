//! `kith`: the command-line interface of a kith node.
//!
//! Commands run in this process, or, when `kith up` runs on the home, in the daemon (which
//! holds the store and the network); either way they answer with the same frames
//! ([`wire::Frame`]) and print the same way.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod args;
mod keys_cmd;
mod progress;
mod render;
mod render_ledger;
mod render_pool;
mod render_site;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use kith_node::Home;
use serde_json::Value;

use args::{
    BackupCommand, Cli, Command, DeviceCommand, DropCommand, JobCommand, KeyCommand, LedgerCommand,
    LedgerSel, PeerCommand, PoolCommand, ServiceCommand, SiteCommand, StoreCommand,
};
use keys_cmd::{export, init};
use kith::wire::Frame;
use kith::{GetTo, PoolReq, Request, client};

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
    use crate::render_site as r;
    use kith::SiteReq;
    use kith::api::sites::*;
    let run = |req| execute(root, Request::Site(req), "");
    match command {
        SiteCommand::Publish { dir, name, pool, public: _, members, json } => {
            let dir = kith_node::store::absolute_in(&dir, cwd);
            kith::check_dir(&dir)?;
            let v: Published = typed(run(SiteReq::Publish { dir, name, pool, members })?)?;
            if json { render_pool::json(&v) } else { r::published(&v) }
        }
        SiteCommand::Ls { json } => {
            let v: SiteList = typed(run(SiteReq::Ls)?)?;
            if json { render_pool::json(&v) } else { r::list(&v) }
        }
        SiteCommand::Versions { name, json } => {
            let v: Versions = typed(run(SiteReq::Versions { name })?)?;
            if json { render_pool::json(&v) } else { r::versions(&v) }
        }
        SiteCommand::Rollback { name, version } => {
            r::rolled_back(&typed(run(SiteReq::Rollback { name, version })?)?)
        }
        SiteCommand::Rm { name } => r::removed(&typed(run(SiteReq::Rm { name })?)?),
        SiteCommand::Set { name, key, value } => {
            r::site_set(&typed(run(SiteReq::Set { name, key, value })?)?)
        }
        SiteCommand::Credential { pool, expires } => {
            r::credential(&typed(run(SiteReq::Credential { pool, expires })?)?)
        }
    }
}

fn ledger_command(root: &Path, command: Option<LedgerCommand>, top: LedgerSel) -> Result<ExitCode> {
    use crate::render_ledger as r;
    use kith::LedgerReq;
    let run = |req| execute(root, Request::Ledger(req), "");
    match command {
        None => {
            let LedgerSel { pool, period, json } = top;
            let v: kith::api::ledger::Tables = typed(run(LedgerReq::Show { pool, period })?)?;
            if json { render_pool::json(&v) } else { r::render_show(&v) }
        }
        Some(LedgerCommand::Verify { sel }) => {
            let json = sel.json || top.json;
            let req = LedgerReq::Verify {
                pool: sel.pool.or(top.pool),
                period: sel.period.or(top.period),
            };
            r::render_verify(&typed(run(req)?)?, json)
        }
        Some(LedgerCommand::Statement { sel, format, output }) => {
            if format != "csv" && format != "json" {
                anyhow::bail!("unknown format `{format}` (csv or json)");
            }
            let req = LedgerReq::Statement {
                pool: sel.pool.or(top.pool),
                period: sel.period.or(top.period),
            };
            r::render_statement(&typed(run(req)?)?, &format, output)
        }
        Some(LedgerCommand::Cost { pool, amount, what, period }) => {
            r::cost_entered(&typed(run(LedgerReq::Cost { pool, amount, what, period })?)?)
        }
        Some(LedgerCommand::Seal { pool, period }) => {
            r::sealed(&typed(run(LedgerReq::Seal { pool, period })?)?)
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
        PoolCommand::Invite { pool, expires, uses, qr, json } => {
            let pool = pool.unwrap_or_default();
            let t: Ticket = typed(call(PoolReq::Invite { pool, expires, uses })?)?;
            if json {
                return r::json(&t);
            }
            if qr {
                eprint!("{}", kith::qr::text(&t.ticket).map_err(anyhow::Error::msg)?);
            }
            r::ticket(&t)
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
        Command::Up { print_config: true, .. } => {
            print!("{}", kith::config::example());
            Ok(ExitCode::SUCCESS)
        }
        Command::Up {
            listen,
            http,
            no_mdns,
            mdns_iface,
            site_cache,
            metrics,
            cdn,
            relay,
            serve_relay,
            config,
            print_config: false,
        } => {
            let (file, from) = kith::config::FileConfig::load(config.as_deref(), &root)?;
            let flags = kith::config::Flags {
                listen,
                http,
                no_mdns,
                mdns_iface,
                site_cache,
                metrics,
                cdn,
                relay,
                serve_relay,
                config,
            };
            let config = file.merge(flags)?;
            init_logging();
            if let Some(p) = from {
                tracing::info!(file = %p.display(), "read the config file");
            }
            kith::Daemon::run_until_signal(open_home(&root)?, config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Init { import, keep_identity_key } => {
            init(&root, import.as_deref(), keep_identity_key)
        }
        Command::Id { json, ticket: false } => render::id(&local_id(&root)?, json),
        Command::Id { json, ticket: true } => {
            let t: kith::api::store::NodeTicket = typed(execute(&root, Request::Ticket, "")?)?;
            if json { render_pool::json(&t) } else { render::ticket(&t) }
        }
        Command::Key { command: KeyCommand::Export { file } } => export(&open_home(&root)?, &file),
        Command::Backup { command: BackupCommand::Add { path, to, every, keep, name, json } } => {
            // A place with a `/` in it is a folder, taken from where the command runs.
            let to = if to.contains('/') { abs(Path::new(&to)).display().to_string() } else { to };
            let req = Request::BackupAdd { path: abs(&path), to, every, keep, name };
            let v: kith::api::store::BackupJob = typed(execute(&root, req, "")?)?;
            if json { render_pool::json(&v) } else { render::backup_added(&v) }
        }
        Command::Backup { command: BackupCommand::Ls { json } } => {
            let v: Vec<kith::api::store::BackupJob> =
                typed(execute(&root, Request::BackupLs, "")?)?;
            if json { render_pool::json(&v) } else { render::backups(&v) }
        }
        Command::Backup { command: BackupCommand::Run { name, json } } => {
            let v: Vec<kith::api::store::BackupRun> =
                typed(execute(&root, Request::BackupRun { name }, "backing up")?)?;
            let failed = v.iter().any(|r| r.error.is_some());
            if json {
                render_pool::json(&v)?;
            } else {
                render::backup_runs(&v);
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Backup { command: BackupCommand::Rm { name } } => {
            let v: kith::api::store::BackupJob =
                typed(execute(&root, Request::BackupRm { name }, "")?)?;
            eprintln!(
                "removed backup job {}; the versions it stored stay (`kith log {}`)",
                v.name, v.path
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Drop { command: DropCommand::Make { pool, output, full, json } } => {
            let req =
                Request::DropMake { pool: pool.unwrap_or_default(), path: abs(&output), full };
            let v: kith::api::store::Dropped = typed(execute(&root, req, "")?)?;
            if json { render_pool::json(&v) } else { render::dropped(&v, true) }
        }
        Command::Drop { command: DropCommand::Apply { file, json } } => {
            let v: kith::api::store::Dropped =
                typed(execute(&root, Request::DropApply { path: abs(&file) }, "")?)?;
            if json { render_pool::json(&v) } else { render::dropped(&v, false) }
        }
        Command::Service {
            command: ServiceCommand::Install { system, no_enable, unit_dir, print },
        } => {
            use kith::service::{Scope, install, unit};
            let scope = if system { Scope::System } else { Scope::User };
            if print {
                let exe = std::env::current_exe().context("cannot tell where kith is")?;
                print!("{}", unit(scope, &exe, &root));
                return Ok(ExitCode::SUCCESS);
            }
            let done = install(scope, &root, unit_dir.as_deref(), !no_enable)?;
            println!("wrote {}", done.path.display());
            let ctl = if system { "systemctl" } else { "systemctl --user" };
            let jr = if system { "journalctl -u kith" } else { "journalctl --user -u kith" };
            if done.enabled {
                println!("enabled and started; `{ctl} status kith` shows it, `{jr}` its log");
            } else {
                println!("start it with `{ctl} daemon-reload && {ctl} enable --now kith`");
            }
            if system {
                println!(
                    "its home is {}: `kith --home {} status` (as root) talks to it",
                    done.home.display(),
                    done.home.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Store { command: StoreCommand::RebuildIndex { json } } => {
            let r = kith_node::Store::rebuild_index(&Home::open(&root)?)?;
            let v = kith::api::store::rebuilt(&r);
            if json { render_pool::json(&v) } else { render::rebuilt(&v) }
        }
        Command::Dashboard { open, new_token, json } => {
            let d: kith::api::node::DashboardUrl =
                typed(execute(&root, Request::Dashboard { new_token }, "")?)?;
            if json {
                return render_pool::json(&d);
            }
            println!("{}", d.local);
            for u in &d.lan {
                println!("{u}");
            }
            eprintln!(
                "kith: anyone with this address can run this node's pools: keep it to yourself"
            );
            if open {
                let opened = std::process::Command::new("xdg-open").arg(&d.local).status();
                if !opened.is_ok_and(|s| s.success()) {
                    eprintln!("kith: could not open a browser (xdg-open); open the address above");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { json } => {
            let d: kith::api::node::Doctor = typed(execute(&root, Request::Doctor, "")?)?;
            if json {
                render_pool::json(&d)?;
            } else {
                render::doctor(&d);
            }
            let failed = d.checks.iter().any(|c| c.level == "fail");
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Status { json } => {
            let v: kith::api::node::Status = typed(execute(&root, Request::Status, "")?)?;
            if json { render_pool::json(&v) } else { render::status(&v) }
        }
        Command::Pool { command } => pool_command(&root, command),
        Command::Ledger { command, sel } => ledger_command(&root, command, sel),
        Command::Site { command } => site_command(&root, &cwd, command),
        Command::Resolve { name, wait, json } => resolve(&name, &wait, json),
        Command::Pair { qr } => {
            let v: kith::api::store::PairCode = typed(execute(&root, Request::Pair, "")?)?;
            if qr {
                match &v.page {
                    Some(page) => eprint!(
                        "{}",
                        kith::qr::text(&format!("{page}#pair={}", v.code))
                            .map_err(anyhow::Error::msg)?
                    ),
                    None => eprintln!("kith: no LAN address to draw: type the code instead"),
                }
            }
            println!("{}", v.code);
            eprintln!(
                "valid for {} minutes and one upload, on {}",
                v.expires_s / 60,
                v.page.as_deref().unwrap_or("this node's page")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Identity { json } => {
            let v: kith::api::pools::IdentityDoc =
                typed(execute(&root, Request::Pool(PoolReq::Identity), "")?)?;
            if json { render_pool::json(&v) } else { render_pool::identity(&v) }
        }
        Command::Offer { pool, storage, egress, zone, cpu, memory, hours } => {
            let pool = pool.unwrap_or_default();
            if let Some(cpu) = cpu {
                let req = PoolReq::OfferCompute {
                    pool: pool.clone(),
                    cpu,
                    memory,
                    hours: hours.unwrap_or_default(),
                };
                render_pool::compute_offered(&typed(execute(&root, Request::Pool(req), "")?)?)?;
            }
            match storage {
                Some(storage) => {
                    let req = PoolReq::Offer { pool, storage, egress, zone };
                    render_pool::offered(&typed(execute(&root, Request::Pool(req), "")?)?)
                }
                None => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Device { command: DeviceCommand::Ls { json } } => {
            let list: Vec<kith::api::pools::Device> =
                typed(execute(&root, Request::Pool(PoolReq::Devices), "")?)?;
            if json { render_pool::json(&list) } else { render_pool::devices(&list) }
        }
        Command::Device { command: DeviceCommand::Revoke { node } } => render_pool::retired(
            &typed(execute(&root, Request::Pool(PoolReq::Revoke { node }), "")?)?,
        ),
        Command::Peers { json } => {
            let list: Vec<kith::api::store::Peer> = typed(execute(&root, Request::Peers, "")?)?;
            if json { render_pool::json(&list) } else { render::peers(&list) }
        }
        Command::Peer { command: PeerCommand::Add { ticket } } => {
            render::peer_added(&typed(execute(&root, Request::PeerAdd { ticket }, "")?)?)
        }
        Command::Peer { command: PeerCommand::Rm { peer } } => {
            let r: kith::api::store::PeerRemoved =
                typed(execute(&root, Request::PeerRm { peer }, "")?)?;
            eprintln!("removed peer {}", r.id);
            Ok(ExitCode::SUCCESS)
        }
        Command::Peer { command: PeerCommand::Link { peer } } => {
            render::peer_linked(&typed(execute(&root, Request::PeerLink { peer }, "reaching")?)?)
        }
        Command::Put { path, pool, json } => {
            let what = if pool.is_some() { "storing and replicating" } else { "storing" };
            let v: kith::api::store::Put =
                typed(execute(&root, Request::Put { path: abs(&path), pool }, what)?)?;
            if json { render_pool::json(&v) } else { render::put(&v) }
        }
        Command::Get { spec, output, json } => {
            let to = match output {
                Some(p) if p == Path::new("-") => GetTo::Stdout,
                Some(p) => GetTo::Path(abs(&p)),
                None => GetTo::Here,
            };
            let to_stdout = to == GetTo::Stdout;
            let v: kith::api::store::Restored = typed(execute(
                &root,
                Request::Get { spec, cwd, to },
                if to_stdout { "" } else { "restoring" },
            )?)?;
            if json && !to_stdout {
                render_pool::json(&v)?;
            } else if !to_stdout {
                render::restored(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { spec: None, json } => {
            let list: Vec<kith::api::store::Object> = typed(execute(&root, Request::Ls, "")?)?;
            if json { render_pool::json(&list) } else { render::objects(&list) }
        }
        Command::Ls { spec: Some(spec), json } => {
            let v: kith::api::store::Files =
                typed(execute(&root, Request::Files { spec, cwd }, "reading")?)?;
            if json { render_pool::json(&v) } else { render::files(&v) }
        }
        Command::Diff { old, new, json } => {
            let v: kith::api::store::Diff =
                typed(execute(&root, Request::Diff { old, new, cwd }, "reading")?)?;
            if json { render_pool::json(&v) } else { render::diff(&v) }
        }
        Command::Log { path, json } => {
            let list: Vec<kith::api::store::Object> =
                typed(execute(&root, Request::Log { path: abs(&path) }, "")?)?;
            if json {
                return render_pool::json(&list);
            }
            if list.is_empty() {
                bail!("no versions stored from {}", abs(&path).display());
            }
            render::objects(&list)
        }
        Command::Rm { spec, local } => {
            let v: kith::api::store::Forgotten =
                typed(execute(&root, Request::Rm { spec, cwd, here_only: local }, "")?)?;
            render::forgotten(&v);
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { output, plain, json } => {
            let req = match (output, plain) {
                (_, Some(dir)) => Request::Export { path: abs(&dir), plain: true },
                (Some(file), None) => Request::Export { path: abs(&file), plain: false },
                (None, None) => bail!("give -o FILE, or --plain DIR"),
            };
            let v: kith::api::store::Exported = typed(execute(&root, req, "exporting")?)?;
            if json { render_pool::json(&v) } else { render::exported(&v, true) }
        }
        Command::Move { from, to, json } => {
            let v: kith::api::store::Moved =
                typed(execute(&root, Request::Move { from, to }, "moving")?)?;
            if !json {
                return render::moved(&v);
            }
            render_pool::json(&v)?;
            // Objects left behind make the exit status say so in JSON too.
            Ok(if v.stayed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Import { file, json } => {
            let v: kith::api::store::Exported =
                typed(execute(&root, Request::Import { path: abs(&file) }, "importing")?)?;
            if json { render_pool::json(&v) } else { render::exported(&v, false) }
        }
        Command::Job {
            command:
                JobCommand::Run {
                    module,
                    pool,
                    redundancy,
                    input,
                    stdin,
                    args,
                    env,
                    fuel,
                    memory,
                    output,
                    json,
                },
        } => {
            let env = env
                .iter()
                .map(|e| {
                    e.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| anyhow::anyhow!("--env takes NAME=VALUE, not `{e}`"))
                })
                .collect::<Result<Vec<_>>>()?;
            let req = kith::api::jobs::JobRun {
                module: abs(&module),
                redundancy: if pool.is_some() { redundancy } else { 1 },
                pool,
                // A path that does not exist may name an object of the store.
                input: input.as_deref().filter(|p| p.exists()).map(abs),
                input_object: input
                    .as_deref()
                    .filter(|p| !p.exists())
                    .map(|p| p.to_string_lossy().into_owned()),
                stdin: stdin.as_deref().map(abs),
                args,
                env,
                fuel,
                memory,
                out: abs(&output),
            };
            let v: kith::api::jobs::JobDone = typed(execute(&root, Request::JobRun(req), "")?)?;
            if json { render_pool::json(&v) } else { render::job(&v) }
        }
        Command::Federation { command } => federation(&root, command),
        Command::Job { command: JobCommand::Ls { json } } => {
            let v: kith::api::jobs::JobList = typed(execute(&root, Request::JobLs, "")?)?;
            if json { render_pool::json(&v) } else { render::job_list(&v) }
        }
        Command::Job { command: JobCommand::Show { id, json } } => {
            let v: kith::api::jobs::JobEntry = typed(execute(&root, Request::JobShow { id }, "")?)?;
            if json { render_pool::json(&v) } else { render::job_entry(&v) }
        }
        Command::Job { command: JobCommand::Cancel { id, json } } => {
            let v: kith::api::jobs::JobCancelled =
                typed(execute(&root, Request::JobCancel { id }, "")?)?;
            if json {
                render_pool::json(&v)
            } else {
                eprintln!(
                    "cancelled {} job(s) asked for here and {} running here for others",
                    v.submitted, v.running_for_others
                );
                Ok(ExitCode::SUCCESS)
            }
        }
        Command::Gc { json } => {
            let v: kith::api::store::Collected = typed(execute(&root, Request::Gc, "")?)?;
            if json { render_pool::json(&v) } else { render::gc(&v) }
        }
        Command::Verify { json } => {
            render::verify(&typed(execute(&root, Request::Verify, "verifying")?)?, json)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // iroh's accept loop warns about every failed handshake of a peer (another node dialling
    // an old address of a replaced device): kith says that once, in its own words.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // The relay server warns about every node it refuses; kith says so itself.
        EnvFilter::new(
            "info,iroh=warn,iroh::protocol=error,noq_proto=error,actix_server=warn,\
             iroh_relay::server::http_server=error",
        )
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Under systemd, standard error goes to the journal, which keeps its own time.
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        fmt.without_time().try_init()
    } else {
        fmt.try_init()
    };
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
        None => local(root, req, progress::shown(label))?,
    };
    let bar = progress::Bar::new(label);
    let mut stdout = std::io::stdout().lock();
    let result = loop {
        match next()? {
            Some(Frame::Progress { done, total, files }) => bar.update(done, total, files),
            Some(Frame::Stage(s)) => bar.stage(&s),
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

/// Runs a request in this process, with the home's store; `shown`: whether its progress is.
fn local(
    root: &Path,
    req: Request,
    shown: bool,
) -> Result<Box<dyn FnMut() -> Result<Option<Frame>>>> {
    let mut frames = kith::local::run(open_home(root)?, req, shown)?;
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

fn fed_lend(l: args::FedLendArgs) -> kith::api::pools::FedLend {
    kith::api::pools::FedLend {
        storage: l.lend_storage,
        egress: l.lend_egress,
        cdn: l.cdn,
        relay: l.relay,
    }
}

fn federation(root: &Path, command: args::FedCommand) -> Result<ExitCode> {
    use args::FedCommand as F;
    use kith::api::pools::{FedAgreement, FedTicket};
    let ticket = |v: FedTicket, json: bool, what: &str| -> Result<ExitCode> {
        if json {
            return render_pool::json(&v);
        }
        println!("{}", v.ticket);
        eprintln!("{what}");
        Ok(ExitCode::SUCCESS)
    };
    // An offer made: its ticket, with a warning when it names what it cannot carry.
    let invite = |req: PoolReq, json: bool, what: &str| -> Result<ExitCode> {
        let v: FedTicket = typed(execute(root, Request::Pool(req), "")?)?;
        if let Some(w) = v.warning.as_ref().filter(|_| !json) {
            eprintln!("warning: {w}");
        }
        ticket(v, json, what)
    };
    match command {
        F::Invite {
            pool,
            lend,
            price_storage,
            price_egress,
            term_days,
            notice_days,
            expires,
            json,
        } => {
            let req = PoolReq::FedInvite {
                pool,
                lend: fed_lend(lend),
                price_storage,
                price_egress,
                term_days,
                notice_days,
                expires,
            };
            invite(
                req,
                json,
                "give this ticket to an admin of the other pool: `kith federation join THEIR-POOL TICKET`",
            )
        }
        F::Counter {
            pool,
            ticket: t,
            lend,
            price_storage,
            price_egress,
            term_days,
            notice_days,
            expires,
            json,
        } => {
            // The offer answered: read and checked, not taken up (its terms are the defaults
            // of this one).
            let offer = kith_federation::Offer::from_ticket(t.trim())
                .map_err(|e| anyhow::anyhow!("that is not a federation offer ticket: {e}"))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            offer.check(now).map_err(|e| anyhow::anyhow!("that offer cannot be answered: {e}"))?;
            let d: kith::api::pools::PoolDetail =
                typed(execute(root, Request::Pool(PoolReq::Show { pool: pool.clone() }), "")?)?;
            if kith_crdt::hex(&offer.pool) == d.id {
                anyhow::bail!(
                    "that is an offer of pool {pool} itself: give it to the other pool's admin"
                );
            }
            let price = |given: Option<String>, micro: u64| {
                given.unwrap_or_else(|| kith::api::ledger::price(micro))
            };
            let req = PoolReq::FedInvite {
                pool,
                lend: fed_lend(lend),
                price_storage: price(price_storage, offer.price.storage_per_gib_month),
                price_egress: price(price_egress, offer.price.egress_per_gb),
                term_days: term_days.unwrap_or(offer.term_days),
                notice_days: notice_days.unwrap_or(offer.notice_days),
                expires,
            };
            invite(
                req,
                json,
                &format!(
                    "this answers pool {}'s offer (which stays open until it expires): give this ticket to its admin, who takes it up with `kith federation join {} TICKET --lend-storage SIZE`",
                    offer.pool_name, offer.pool_name
                ),
            )
        }
        F::Join { pool, ticket: t, lend, json } => {
            let req = PoolReq::FedJoin { pool, ticket: t, lend: fed_lend(lend) };
            let v: FedTicket = typed(execute(root, Request::Pool(req), "")?)?;
            if json {
                return render_pool::json(&v);
            }
            if let Some(w) = &v.warning {
                eprintln!("warning: {w}");
            }
            if let Some(by) = &v.recorded_by {
                eprintln!("agreed: recorded in your pool, and by pool {by} (its node was reached)");
                return Ok(ExitCode::SUCCESS);
            }
            let why = v.not_delivered.clone().unwrap_or_default();
            ticket(
                v,
                false,
                &format!(
                    "agreed and recorded in your pool; the offering pool's node could not record it ({why}): give this ticket to its admin: `kith federation accept THEIR-POOL TICKET`"
                ),
            )
        }
        F::Accept { pool, ticket: t, json } => {
            let v: FedAgreement =
                typed(execute(root, Request::Pool(PoolReq::FedAccept { pool, ticket: t }), "")?)?;
            if json { render_pool::json(&v) } else { render_pool::agreements(&[v]) }
        }
        F::Ls { json } => {
            let v: Vec<FedAgreement> = typed(execute(root, Request::Pool(PoolReq::FedList), "")?)?;
            if json { render_pool::json(&v) } else { render_pool::agreements(&v) }
        }
        F::Show { pool, agreement, json } => {
            // The pool by name or id prefix, as every pool command takes it.
            let d: kith::api::pools::PoolDetail =
                typed(execute(root, Request::Pool(PoolReq::Show { pool: pool.clone() }), "")?)?;
            let all: Vec<FedAgreement> =
                typed(execute(root, Request::Pool(PoolReq::FedList), "")?)?;
            let mine: Vec<&FedAgreement> = all.iter().filter(|a| a.pool_id == d.id).collect();
            if mine.is_empty() {
                anyhow::bail!(
                    "pool {pool} has no federation agreement on this node: `kith federation ls` lists them"
                );
            }
            let by_name: Vec<&&FedAgreement> =
                mine.iter().filter(|a| a.partner_name == agreement).collect();
            let found: Vec<&&FedAgreement> = if by_name.is_empty() {
                mine.iter().filter(|a| a.id.starts_with(&agreement.to_lowercase())).collect()
            } else {
                by_name
            };
            let a = match found.as_slice() {
                [one] => (**one).clone(),
                [] => anyhow::bail!(
                    "no agreement of pool {pool} with a pool named {agreement}, nor with an id starting so: `kith federation ls` lists them"
                ),
                _ => anyhow::bail!(
                    "{} agreements of pool {pool} match {agreement}: give more of the agreement's id",
                    found.len()
                ),
            };
            let req = kith::LedgerReq::Show { pool: Some(d.id.clone()), period: None };
            let tables: kith::api::ledger::Tables =
                typed(execute(root, Request::Ledger(req), "")?)?;
            let this_month = tables
                .pools
                .iter()
                .flat_map(|t| t.partners.iter())
                .find(|p| p.agreement == a.id)
                .cloned();
            let offsite = d
                .offsite
                .as_ref()
                .and_then(|o| o.partners.iter().find(|p| p.pool == a.partner))
                .cloned();
            let v = kith::api::pools::FedShow {
                agreement: a,
                this_month,
                period: tables.period,
                offsite,
                offsite_replicas: d.charter.offsite_replicas,
            };
            if json { render_pool::json(&v) } else { render_pool::fed_show(&v) }
        }
        F::Leave { pool, agreement, json } => {
            let v: FedAgreement =
                typed(execute(root, Request::Pool(PoolReq::FedLeave { pool, agreement }), "")?)?;
            if json { render_pool::json(&v) } else { render_pool::agreements(&[v]) }
        }
    }
}
