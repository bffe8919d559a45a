//! Printing results for people (or as JSON).

use std::process::ExitCode;

use anyhow::Result;
use serde_json::Value;

use kith::api::store::*;
use kith::fmt;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn json_out(v: &Value) -> Result<ExitCode> {
    println!("{v}");
    Ok(ExitCode::SUCCESS)
}

pub fn id(v: &Value, json: bool) -> Result<ExitCode> {
    if json {
        return json_out(v);
    }
    println!("node      {}", s(&v["node"]));
    println!("identity  {}", s(&v["identity"]));
    println!("age       {}", s(&v["age"]));
    Ok(ExitCode::SUCCESS)
}

/// `kith id --ticket`.
pub fn ticket(v: &NodeTicket) -> Result<ExitCode> {
    println!("{}", v.ticket);
    Ok(ExitCode::SUCCESS)
}

/// `kith doctor`'s checks, one line each, with what to fix under those that need it.
pub fn doctor(d: &kith::api::node::Doctor) {
    for c in &d.checks {
        println!("{:<5} {:<9} {}", c.level, c.what, c.says);
        if let Some(f) = &c.fix {
            println!("{:<5} {:<9} fix: {f}", "", "");
        }
    }
}

/// `kith status`.
pub fn status(v: &kith::api::node::Status) -> Result<ExitCode> {
    println!("node      {}", v.node);
    println!("identity  {}", v.identity);
    println!("home      {}", v.home);
    if v.running {
        println!("state     up for {} s", v.uptime_s);
        println!("addrs     {}", v.addrs.join(", "));
        match (&v.urls[..], &v.http) {
            ([], Some(h)) => println!("http      http://{h}/"),
            (urls, _) => println!("http      {}", urls.join("  ")),
        }
        if let Some(m) = &v.metrics {
            println!("metrics   {m}");
        }
        if !v.relays.is_empty() {
            let home = match (&v.home_relay, &v.relay_error) {
                (Some(h), _) => format!("connected to {h}"),
                (None, Some(why)) => format!("not connected: {why}"),
                (None, None) => "not connected to any yet".to_string(),
            };
            println!("relays    {} ({home})", v.relays.join(", "));
        }
        if let Some(r) = &v.relay {
            let bound = match r.bound_bytes {
                Some(b) => format!(" of {} lent", fmt::bytes(b)),
                None => String::new(),
            };
            let state = match (&r.why_not, r.serving) {
                (Some(why), _) => format!("not serving: {why}"),
                (None, true) => format!("serving, {} clients", r.clients),
                (None, false) => "starting".to_string(),
            };
            println!(
                "relay     {} {state}; relayed {}{bound} in {}; {} unknown nodes refused",
                r.url,
                fmt::bytes(r.relayed_bytes),
                r.month,
                r.refused
            );
            for p in &r.partners {
                let lent = match p.lent_bytes {
                    0 => String::new(),
                    n if p.relayed_bytes.saturating_add(p.elsewhere_bytes) >= n => {
                        format!(
                            " of {} lent: used up, its nodes refused until next month",
                            fmt::bytes(n)
                        )
                    }
                    n => format!(" of {} lent", fmt::bytes(n)),
                };
                let otherwise = match p.elsewhere_bytes {
                    0 => String::new(),
                    n => format!(" (and {} served by the pool otherwise)", fmt::bytes(n)),
                };
                println!(
                    "          for pool {}: {}{otherwise}{lent}",
                    p.partner,
                    fmt::bytes(p.relayed_bytes)
                );
            }
        }
        if let Some(at) = v.retired_ms {
            println!(
                "RETIRED   another device of this identity retired this one on {}: it takes no part in pools",
                fmt::time(at.max(0) as u64)
            );
        }
        if let Some(p) = &v.peers {
            println!("peers     {} known, {} reachable", p.known, p.reachable);
        }
    } else {
        println!("state     not running (start it with `kith up`)");
    }
    let st = &v.store;
    println!(
        "store     {} objects, {} chunks in {} packs, {}",
        st.objects,
        st.chunks,
        st.packs,
        fmt::bytes(st.bytes)
    );
    if let Some(g) = &v.gateway {
        println!(
            "gateway   {} requests, {} from the cache, {} store reads, {} fetched",
            g.requests, g.cache_hits, g.store_reads, g.fetched
        );
    }
    if !v.refused.is_empty() {
        let list: Vec<String> = v.refused.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        println!("refused   {}", list.join("; "));
    }
    if !v.operations.is_empty() {
        println!();
        for o in &v.operations {
            let stage = if o.stage.is_empty() { String::new() } else { format!(" ({})", o.stage) };
            let done = if o.bytes_total > 0 {
                format!("{} of {}", fmt::bytes(o.bytes_done), fmt::bytes(o.bytes_total))
            } else {
                fmt::bytes(o.bytes_done)
            };
            let left = o.eta_s.map(|s| format!(", about {s} s left")).unwrap_or_default();
            println!(
                "running   {}{stage}: {done} in {} s, {}/s{left}",
                o.what,
                o.running_s,
                fmt::bytes(o.rate_bps)
            );
        }
    }
    if !v.workers.is_empty() {
        println!();
        println!(
            "{:<24}  {:<7}  {:>6}  {:<19}  {:>8}  NOTE",
            "WORKER", "STATE", "PASSES", "LAST", "TOOK"
        );
        for w in &v.workers {
            let last = w.last_ms.map(fmt::time).unwrap_or_else(|| "-".into());
            let note = match (&w.last_error, w.progress, w.eta_s) {
                (Some(e), _, _) => e.clone(),
                (None, Some((d, t)), eta) => {
                    let left = eta.map(|s| format!(", about {s} s left")).unwrap_or_default();
                    format!("{d}/{t}{left}")
                }
                _ => String::new(),
            };
            println!(
                "{:<24}  {:<7}  {:>6}  {:<19}  {:>6}ms  {note}",
                w.name, w.state, w.passes, last, w.last_took_ms
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith peers`.
pub fn peers(list: &[Peer]) -> Result<ExitCode> {
    if list.is_empty() {
        eprintln!(
            "no peers yet: nodes on this LAN appear by themselves (mDNS); add one elsewhere with `kith peer add TICKET`"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16}  {:<11}  {:<19}  {:>6}  {:<11}  {:<22}  ADDRESSES",
        "NODE", "STATE", "LAST SEEN", "RTT", "LEARNED", "ROUTE"
    );
    for p in list {
        // A ticket peer is `you` when its owner added it, `pool` when learned from a pool or
        // a partner.
        let via = match (p.mdns, p.manual, p.owner) {
            (true, true, true) => "mdns,you",
            (true, true, false) => "mdns,pool",
            (true, false, _) => "mdns",
            (false, true, true) => "you",
            (false, true, false) => "pool",
            _ => "-",
        };
        let seen = p.last_seen_ms.map(fmt::time).unwrap_or_else(|| "never".into());
        let route = match (&p.route, &p.link_error) {
            (Some(r), _) => r.as_str(),
            (None, Some(_)) => "none (see --json)",
            (None, None) => "-",
        };
        let rtt = p.rtt_ms.map(|ms| format!("{ms} ms")).unwrap_or_else(|| "-".into());
        println!(
            "{:<16}  {:<11}  {:<19}  {:>6}  {:<11}  {:<22}  {}",
            &p.id[..16.min(p.id.len())],
            p.state,
            seen,
            rtt,
            via,
            route,
            p.addrs.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith peer add`.
pub fn peer_added(p: &Peer) -> Result<ExitCode> {
    if p.saved == Some(true) {
        eprintln!("saved peer {}; `kith up` will use it", p.id);
    } else {
        eprintln!("added peer {} ({})", p.id, p.state);
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith peer link`.
pub fn peer_linked(v: &Linked) -> Result<ExitCode> {
    println!("{} {}", v.id, v.route);
    Ok(ExitCode::SUCCESS)
}

/// `kith put`; exit status 3 when the pool put is not complete (stored here, not yet in the
/// pool: restic's code for an incomplete snapshot).
pub fn put(v: &Put) -> Result<ExitCode> {
    println!("{}", v.id);
    let (scanned, new) = (v.bytes_scanned, v.bytes_new);
    let share = if scanned > 0 { 100.0 * new as f64 / scanned as f64 } else { 0.0 };
    eprintln!("stored {} as version {}", v.source, v.version);
    eprintln!(
        "  {} files ({} unchanged), {} folders, {} links",
        v.files, v.files_unchanged, v.dirs, v.symlinks
    );
    eprintln!(
        "  {} scanned, {} read, {} new ({share:.1}%), {} added to the store",
        fmt::bytes(scanned),
        fmt::bytes(v.bytes_read),
        fmt::bytes(new),
        fmt::bytes(v.bytes_stored)
    );
    eprintln!(
        "  dedup ratio {:.1}%, {:.2} s, {}",
        100.0 - share,
        v.seconds,
        fmt::rate(scanned, v.seconds)
    );
    match &v.pool {
        None => Ok(ExitCode::SUCCESS),
        Some(p) => pool_put(p),
    }
}

/// How a put went to a pool's holders.
pub fn pool_put(p: &PoolPut) -> Result<ExitCode> {
    eprintln!(
        "put into pool {} ({} blobs, {}), {} replicas over {} holders, in {:.2} s:",
        p.pool_name.clone().unwrap_or_else(|| p.pool[..8.min(p.pool.len())].to_string()),
        p.blobs,
        fmt::bytes(p.bytes),
        p.replicas,
        p.holders,
        p.seconds
    );
    for a in &p.acks {
        let short = &a.node[..8.min(a.node.len())];
        let node = match &a.member {
            Some(m) => format!("{m}'s node {short}"),
            None => short.to_string(),
        };
        match (a.ok, &a.error) {
            (true, _) => eprintln!("  {node}  holds {} blobs ({})", a.blobs, fmt::bytes(a.bytes)),
            (false, e) => eprintln!("  {node}  FAILED: {}", e.as_deref().unwrap_or("")),
        }
    }
    if p.short_blobs > 0 {
        eprintln!(
            "only {} of {} copies could be placed: the pool has {} holder(s) offering storage; repair adds the missing copies when members offer more",
            p.holders.min(p.replicas),
            p.replicas,
            p.holders
        );
    }
    if !p.complete {
        if p.acks.iter().any(|a| !a.ok) {
            eprintln!(
                "not every holder acknowledged; the object is stored here and repair keeps copying it to the pool in the background (see `kith pool show`)"
            );
        }
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith get` to a path.
pub fn restored(v: &Restored) {
    let what = match &v.inside {
        Some(inside) => format!("{}:{inside}", &v.id[..12.min(v.id.len())]),
        None => v.id[..12.min(v.id.len())].to_string(),
    };
    if v.fetched_bytes > 0 {
        eprintln!(
            "fetched {} from peers in {:.2} s ({})",
            fmt::bytes(v.fetched_bytes),
            v.fetch_seconds,
            fmt::rate(v.fetched_bytes, v.fetch_seconds)
        );
    }
    eprintln!(
        "restored {what} to {}: {} files, {} folders, {} links, {} in {:.2} s ({})",
        v.dest.as_deref().unwrap_or("standard output"),
        v.files,
        v.dirs,
        v.symlinks,
        fmt::bytes(v.bytes),
        v.seconds,
        fmt::rate(v.bytes, v.seconds)
    );
}

/// `kith ls` and `kith log`.
pub fn objects(list: &[Object]) -> Result<ExitCode> {
    println!(
        "{:<12}  {:>4}  {:<19}  {:<4}  {:>7}  {:>10}  SOURCE",
        "ID", "VER", "STORED", "KIND", "FILES", "SIZE"
    );
    for o in list {
        println!(
            "{:<12}  {:>4}  {:<19}  {:<4}  {:>7}  {:>10}  {}",
            &o.id[..12.min(o.id.len())],
            o.version,
            fmt::time(o.created_ms),
            o.kind,
            o.files,
            fmt::bytes(o.bytes),
            o.source
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith store rebuild-index`.
pub fn rebuilt(v: &Rebuilt) -> Result<ExitCode> {
    if let Some(p) = &v.moved_aside {
        eprintln!("moved the old index aside to {p}");
    }
    eprintln!(
        "read {} packs ({} blobs); recorded {} objects again ({} with their version numbers from the journal, {} found by their roots and numbered by time)",
        v.packs, v.blobs, v.objects, v.from_journal, v.found_by_time
    );
    if v.forgotten > 0 {
        eprintln!("{} forgotten versions stay forgotten (`kith gc` reclaims them)", v.forgotten);
    }
    if v.partial > 0 || v.foreign_roots > 0 {
        eprintln!(
            "{} parts of objects fetched from peers and {} roots kept for pool members are blobs, not objects here",
            v.partial, v.foreign_roots
        );
    }
    if let Some(d) = &v.journal_damage {
        eprintln!(
            "warning: the object journal is damaged ({d}); what follows it was found by roots"
        );
    }
    for p in &v.damaged_packs {
        eprintln!("warning: {p} (left in place)");
    }
    for l in &v.lost {
        eprintln!("lost: {l}");
    }
    if v.damaged_packs.is_empty() && v.lost.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("run `kith verify` to see what can still be restored");
        Ok(ExitCode::from(1))
    }
}

/// `kith export` (`wrote`) and `kith import`.
pub fn exported(v: &Exported, wrote: bool) -> Result<ExitCode> {
    if wrote && v.blobs == 0 && v.objects > 0 && v.resumed_blobs == 0 {
        eprintln!(
            "restored the latest version of {} paths under {} ({}) in {:.2} s",
            v.objects,
            v.path,
            fmt::bytes(v.blob_bytes),
            v.seconds
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (verb, objects) = if wrote { ("wrote", "objects") } else { ("took in", "new objects") };
    eprintln!(
        "{verb} {}: {} {objects}, {} chunks ({}) in {:.2} s",
        v.path,
        v.objects,
        v.blobs,
        fmt::bytes(v.blob_bytes),
        v.seconds
    );
    if !wrote && v.blobs_present > 0 {
        eprintln!("{} chunks were here already", v.blobs_present);
    }
    if wrote && v.resumed_blobs > 0 {
        eprintln!("continued an interrupted export: {} chunks were in it already", v.resumed_blobs);
    }
    if v.incomplete > 0 {
        eprintln!(
            "warning: {} objects were left out: the file does not carry all their chunks",
            v.incomplete
        );
    }
    if !v.pools.is_empty() {
        eprintln!(
            "pools named: {} (with `kith up` running, a node of this identity finds them by itself)",
            v.pools.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith rm`.
pub fn forgotten(v: &Forgotten) {
    let id = &v.id[..12.min(v.id.len())];
    if !v.released_from.is_empty() {
        eprintln!(
            "released object {id} from pool {}: its quota is free, and its holders reclaim its space",
            v.released_from.join(", pool ")
        );
    }
    if v.local {
        eprintln!("forgot object {id} here; run `kith gc` to reclaim its space");
    }
}

/// `kith backup add`.
pub fn backup_added(v: &BackupJob) -> Result<ExitCode> {
    let to = if v.to == "home" {
        "this node's store".to_string()
    } else if v.to.starts_with('/') {
        format!("the folder {} (read it with `kith --home {} log PATH`)", v.to, v.to)
    } else {
        format!("pool {}", v.to)
    };
    eprintln!(
        "backup {}: {} into {to} every {}, keeping {}; with `kith up` running, the first run starts within seconds",
        v.name,
        v.path,
        fmt::span(v.every_s * 1000),
        v.keep
    );
    Ok(ExitCode::SUCCESS)
}

/// `kith backup ls`.
pub fn backups(v: &[BackupJob]) -> Result<ExitCode> {
    if v.is_empty() {
        eprintln!("no backup jobs (add one with `kith backup add PATH --to POOL|home`)");
        return Ok(ExitCode::SUCCESS);
    }
    let now = kith_node::keys::now_ms() as i64;
    for j in v {
        let last = match (j.last_run_ms, &j.last_error) {
            (None, _) => "not run yet".to_string(),
            (Some(t), None) => format!(
                "last ran {} ago (version {})",
                fmt::span((now - t).max(0) as u64),
                j.last_version.map(|v| v.to_string()).unwrap_or_default()
            ),
            (Some(t), Some(e)) => {
                format!("last ran {} ago: {e}", fmt::span((now - t).max(0) as u64))
            }
        };
        println!(
            "{}  {} -> {}  every {}  keep {}  {last}",
            j.name,
            j.path,
            j.to,
            fmt::span(j.every_s * 1000),
            j.keep
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith backup run`.
pub fn backup_runs(v: &[BackupRun]) {
    for r in v {
        match (&r.error, r.version) {
            (Some(e), _) => eprintln!("kith: error: backup {} failed: {e}", r.name),
            (None, Some(version)) => {
                let into = match &r.pool {
                    Some(p) if p.starts_with('/') => format!("in the folder {p}"),
                    Some(p) => format!("here and in pool {p}"),
                    None => "here".into(),
                };
                eprintln!(
                    "backup {}: version {version} stored {into} in {:.1} s ({} files unchanged, {} new)",
                    r.name,
                    r.seconds,
                    r.files_unchanged,
                    fmt::bytes(r.bytes_new)
                );
                if !r.forgotten.is_empty() {
                    let vs: Vec<String> = r.forgotten.iter().map(|v| v.to_string()).collect();
                    eprintln!(
                        "  the retention forgot version {} (and reclaimed their space)",
                        vs.join(", ")
                    );
                }
                if let Some(w) = &r.warning {
                    eprintln!("  {w}");
                }
            }
            (None, None) => {}
        }
    }
}

/// `kith drop make` (`made`) and `kith drop apply`.
pub fn dropped(v: &Dropped, made: bool) -> Result<ExitCode> {
    if made {
        let what = if v.incremental {
            "what the other side lacks since its last drop applied here"
        } else {
            "everything (no drop from the other side was applied here yet, or --full)"
        };
        eprintln!(
            "wrote {} for pool {}: {what}: {} changes, chunks of {} object{} ({} blobs, {})",
            v.path,
            v.pool,
            v.changes,
            v.objects,
            if v.objects == 1 { "" } else { "s" },
            v.blobs,
            fmt::bytes(v.blob_bytes)
        );
        if v.blobs_missing > 0 {
            let why = if v.offline {
                "this node lacks them, and kith is not running to fetch them from the pool's nodes (start `kith up`)"
            } else {
                "neither this node nor any node of the pool it could reach has them"
            };
            eprintln!(
                "{} blobs of those objects are not in the drop: {why}; the next drop made here carries them once this node has them",
                v.blobs_missing
            );
        }
        eprintln!("carry it to the other side and run `kith drop apply FILE` there");
    } else if v.changes == 0 && v.blobs == 0 {
        eprintln!(
            "applied {} to pool {}: nothing new, this node had all of it already",
            v.path, v.pool
        );
    } else {
        eprintln!(
            "applied {} to pool {}: {} new changes, {} new blobs ({}), {} already here",
            v.path,
            v.pool,
            v.changes,
            v.blobs,
            fmt::bytes(v.blob_bytes),
            v.blobs_present
        );
    }
    if !made && v.blobs_skipped > 0 {
        eprintln!(
            "{} blobs in the file belong to nothing the pool lists, and were not taken",
            v.blobs_skipped
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith move`.
pub fn moved(v: &Moved) -> Result<ExitCode> {
    let (n, them) = if v.objects == 1 {
        ("1 object".to_string(), "it")
    } else {
        (format!("{} objects", v.objects), "them")
    };
    if v.objects == 0 && v.stayed.is_empty() {
        eprintln!("pool {} holds no objects of yours; nothing to move", v.from);
    } else if v.objects > 0 && v.to == "home" {
        eprintln!(
            "moved {n} ({}) from pool {} home to this node's store in {:.1} s; pool {} released {them}, and its holders reclaim the space",
            fmt::bytes(v.bytes),
            v.from,
            v.seconds,
            v.from
        );
    } else if v.objects > 0 {
        eprintln!(
            "moved {n} ({}) from pool {} into pool {} in {:.1} s, every chunk confirmed on {} of {}'s holders; pool {} released {them}, and its holders reclaim the space",
            fmt::bytes(v.bytes),
            v.from,
            v.to,
            v.seconds,
            v.copies,
            v.to,
            v.from
        );
    }
    for s in &v.sites {
        let hint = if v.to == "home" {
            String::new()
        } else {
            format!(
                " (publish it in pool {} with `kith site publish DIR --name {s} --pool {}`)",
                v.to, v.to
            )
        };
        eprintln!(
            "site {s} stays published in pool {}: a move takes objects, not sites{hint}",
            v.from
        );
    }
    for s in &v.stayed {
        let name = if s.name.is_empty() { String::new() } else { format!(" ({})", s.name) };
        eprintln!(
            "object {}{name} stays in pool {}: {}",
            &s.id[..12.min(s.id.len())],
            v.from,
            s.reason
        );
    }
    if v.stayed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("nothing was lost; run the same `kith move` again once that is fixed");
        Ok(ExitCode::FAILURE)
    }
}

/// `kith ls SPEC`: as `ls -l`, a line per entry.
pub fn files(v: &Files) -> Result<ExitCode> {
    for e in &v.entries {
        let kind = match e.kind.as_str() {
            "dir" => 'd',
            "symlink" => 'l',
            _ => '-',
        };
        let path = if e.path.is_empty() { ".".to_string() } else { e.path.clone() };
        let link = e.target.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default();
        println!(
            "{kind}{:04o}  {:>10}  {:<19}  {path}{link}",
            e.mode & 0o7777,
            if kind == '-' { fmt::bytes(e.size) } else { String::new() },
            fmt::time(u64::try_from(e.mtime_s).unwrap_or(0) * 1000)
        );
    }
    if v.fetched_bytes > 0 {
        eprintln!("read the tree of {} from peers ({})", &v.id[..12], fmt::bytes(v.fetched_bytes));
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith diff`: a line per change, `+` added, `-` removed, `M` modified, `U` metadata only
/// (as `restic diff`).
pub fn diff(v: &Diff) -> Result<ExitCode> {
    for c in &v.changes {
        let mark = match c.change.as_str() {
            "added" => '+',
            "removed" => '-',
            "modified" => 'M',
            _ => 'U',
        };
        let path = if c.path.is_empty() { "." } else { &c.path };
        let slash = if c.kind == "dir" && !c.path.is_empty() { "/" } else { "" };
        println!("{mark}  {path}{slash}");
    }
    let count = |k: &str| v.changes.iter().filter(|c| c.change == k).count();
    eprintln!(
        "{} added, {} removed, {} modified, {} with other metadata only",
        count("added"),
        count("removed"),
        count("modified"),
        count("metadata")
    );
    Ok(ExitCode::SUCCESS)
}

/// `kith gc`.
pub fn gc(v: &Collected) -> Result<ExitCode> {
    eprintln!(
        "kept {} objects and {} chunks; removed {} chunks, deleted {} packs, rewrote {}; freed {}",
        v.objects,
        v.blobs_kept,
        v.blobs_removed,
        v.packs_deleted,
        v.packs_rewritten,
        fmt::bytes(v.bytes_freed)
    );
    if v.bytes_unreferenced_kept > 0 {
        eprintln!(
            "  {} of unreferenced chunks stay in packs that are mostly in use",
            fmt::bytes(v.bytes_unreferenced_kept)
        );
    }
    if let Some(why) = &v.rewrite_skipped {
        eprintln!("kith: warning: {why}; free some space and run `kith gc` again to give it back");
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith verify`; exit status 1 when something is damaged.
pub fn verify(v: &Verified, json: bool) -> Result<ExitCode> {
    let code = if v.damaged { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    if json {
        println!("{}", serde_json::to_string(v)?);
        return Ok(code);
    }
    println!(
        "checked {} chunks ({}) in {} packs, and {} objects",
        v.blobs,
        fmt::bytes(v.bytes),
        v.packs,
        v.objects
    );
    for b in &v.damaged_blobs {
        println!("damaged chunk {}: {}", b.chunk, b.reason);
    }
    for d in &v.damaged_objects {
        let src = d.source.as_ref().map(|x| format!(" ({x})")).unwrap_or_default();
        println!("damaged object {}{src}: {} problem(s)", d.id, d.problem_count);
        for p in &d.problems {
            println!("  {p}");
        }
    }
    if !v.unindexed_packs.is_empty() || v.unreferenced_blobs > 0 {
        println!(
            "{} unindexed packs and {} unreferenced chunks (left by interrupted puts, or once held for a pool this node no longer serves); `kith gc` removes them",
            v.unindexed_packs.len(),
            v.unreferenced_blobs
        );
    }
    if !v.damaged {
        println!("no damage found");
    }
    Ok(code)
}

/// `kith job run`.
pub fn job(v: &kith::api::jobs::JobDone) -> Result<ExitCode> {
    println!("{}", v.out);
    let agreed = v.runners.iter().filter(|r| r.answer == "agreed").count();
    let by = if v.runners.is_empty() {
        "ran here".to_string()
    } else {
        format!("{agreed} of {} runner(s) agreed", v.runners.len())
    };
    eprintln!(
        "job {}: exit {}, {} file(s), {}, {:.2} CPU-s of fuel; {by}; result {} stored as {}",
        &v.id[..16],
        v.exit,
        v.files,
        fmt::bytes(v.bytes),
        v.cpu_seconds,
        &v.hash[..16],
        &v.object[..16.min(v.object.len())]
    );
    for r in &v.runners {
        eprintln!("  {}  {}  {} ms", &r.node[..16], r.answer, r.wall_ms);
    }
    Ok(if v.exit == 0 { ExitCode::SUCCESS } else { ExitCode::from(v.exit.clamp(1, 255) as u8) })
}

fn when(ms: i64) -> String {
    fmt::time(ms.max(0) as u64)
}

/// `kith job ls`.
pub fn job_list(v: &kith::api::jobs::JobList) -> Result<ExitCode> {
    if v.jobs.is_empty() {
        println!(
            "no jobs yet: `kith job run MODULE -o OUT` runs one here, `--pool POOL` on the pool"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16}  {:<9}  {:<10}  {:<20}  {:<12}  {:<19}  RESULT",
        "JOB", "STATE", "POOL", "WHAT", "RUNNERS", "STARTED"
    );
    for j in &v.jobs {
        let what = if j.side == "runner" { format!("for {}", j.what) } else { j.what.clone() };
        let runners = if j.side == "runner" || j.pool.is_empty() {
            "here".to_string()
        } else {
            let agreed = j.runners.iter().filter(|r| r.answer == "agreed").count();
            format!("{agreed}/{} agreed", j.redundancy)
        };
        let result = match (&j.hash, &j.error) {
            (Some(h), _) => format!("{} exit {}", &h[..12], j.exit.unwrap_or(0)),
            (None, Some(e)) => e.chars().take(60).collect(),
            _ => String::new(),
        };
        println!(
            "{:<16}  {:<9}  {:<10}  {:<20}  {:<12}  {:<19}  {result}",
            &j.id[..16],
            j.state,
            if j.pool.is_empty() { "-" } else { &j.pool },
            what.chars().take(20).collect::<String>(),
            runners,
            when(j.started_ms),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith job show`.
pub fn job_entry(j: &kith::api::jobs::JobEntry) -> Result<ExitCode> {
    println!("job       {}", j.id);
    if j.side == "runner" {
        println!("running   here, for {} in pool {}", j.what, j.pool);
    } else {
        let on = if j.pool.is_empty() {
            "this node".to_string()
        } else {
            format!("pool {} ({} runner(s) must agree)", j.pool, j.redundancy)
        };
        println!("module    {} on {on}", j.what);
    }
    println!("state     {}", j.state);
    println!("started   {}", when(j.started_ms));
    if let Some(e) = j.ended_ms {
        println!("ended     {} ({:.1} s)", when(e), (e - j.started_ms) as f64 / 1000.0);
    }
    if let Some(h) = &j.hash {
        println!("result    {h} (exit {}, {:.3} CPU-s)", j.exit.unwrap_or(0), j.cpu_seconds);
    }
    if let Some(o) = &j.out {
        println!("out       {o}");
    }
    if let Some(o) = &j.object {
        println!("object    {o}");
    }
    if let Some(e) = &j.error {
        println!("error     {e}");
    }
    for r in &j.runners {
        println!("runner    {}  {}  {} ms", &r.node[..16], r.answer, r.wall_ms);
    }
    Ok(ExitCode::SUCCESS)
}
