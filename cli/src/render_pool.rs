//! Rendering the pool commands' typed answers as text (`--json` prints them as they are).

use std::process::ExitCode;

use anyhow::Result;
use kith::api::pools::*;
use kith::fmt;
use serde::Serialize;

/// The first `n` characters of an id.
fn short(id: &str, n: usize) -> &str {
    &id[..n.min(id.len())]
}

/// Prints `t` as JSON.
pub fn json<T: Serialize>(t: &T) -> Result<ExitCode> {
    println!("{}", serde_json::to_string(t)?);
    Ok(ExitCode::SUCCESS)
}

/// `kith pool create` and `join`.
pub fn pool_ref(r: &PoolRef, what: &str) -> Result<ExitCode> {
    eprintln!("{what}: {} ({})", r.name, short(&r.id, 16));
    Ok(ExitCode::SUCCESS)
}

/// `kith pool invite`.
pub fn ticket(t: &Ticket) -> Result<ExitCode> {
    println!("{}", t.ticket);
    eprintln!("valid until {} for {} use(s)", fmt::time(t.expires_ms), t.uses);
    Ok(ExitCode::SUCCESS)
}

/// `kith pool ls`.
pub fn pools(list: &[PoolSummary]) -> Result<ExitCode> {
    if list.is_empty() {
        eprintln!(
            "you are in no pool yet: `kith pool create NAME`, or `kith pool join TICKET` with a ticket from a member"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16}  {:<20}  {:>7}  {:>8}  {:>10}  YOU",
        "ID", "NAME", "MEMBERS", "REPLICAS", "OFFERED"
    );
    for p in list {
        println!(
            "{:<16}  {:<20}  {:>7}  {:>8}  {:>10}  {}",
            short(&p.id, 16),
            p.name,
            p.members,
            p.replicas,
            fmt::bytes(p.offered),
            p.role.as_deref().unwrap_or(""),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith identity`.
pub fn identity(v: &IdentityDoc) -> Result<ExitCode> {
    let name = if v.name.is_empty() { "(no name)" } else { &v.name };
    println!("identity  {name} ({})", v.id);
    for d in &v.devices {
        let this = if d.this { "  (this node)" } else { "" };
        println!("device    {}  {}{this}", short(&d.node, 16), d.name);
    }
    for r in &v.recipients {
        println!("recipient {r}");
    }
    for p in &v.pools {
        println!("pool      {}  {}", short(&p.id, 16), p.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith pool show`.
pub fn pool(v: &PoolDetail) -> Result<ExitCode> {
    let c = &v.charter;
    println!("pool      {} ({})", c.name, v.id);
    let quota = if c.quota == 0 { "none".to_string() } else { fmt::bytes(c.quota) };
    println!(
        "charter   {} replicas, quota {quota}, costs {}, joins by {}, CPU {}",
        c.replicas,
        c.cost_rule,
        c.join_rule,
        if c.cpu_price.is_empty() {
            "as credit".to_string()
        } else {
            format!("at {} per CPU-hour", c.cpu_price)
        }
    );
    if v.you != "active" {
        println!(
            "YOU       {}: this node no longer takes part in this pool; what follows is its last known state",
            v.you
        );
    }
    capacity(v);
    members(v);
    objects(v);
    if let Some(r) = &v.replication {
        replication(r);
    }
    if let Some(o) = &v.offsite {
        offsite(c.offsite_replicas, o);
    }
    if !v.edges.is_empty() {
        edges(&v.edges);
    }
    audits(v);
    runners(v);
    if !v.rejected_changes.is_empty() {
        println!();
        println!("rejected changes from peers:");
        for r in &v.rejected_changes {
            println!(
                "  {}  {}  {}",
                fmt::time(r.at_ms.max(0) as u64),
                short(&r.peer, 16),
                r.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn capacity(v: &PoolDetail) {
    let (c, cap) = (&v.charter, &v.capacity);
    let met = if v.policy_met {
        "met".to_string()
    } else {
        format!(
            "NOT met: {} zone(s) offer storage for {} replicas (more members offer storage with `kith offer {} --storage SIZE --zone NAME`, or lower the factor with `kith pool set {} replicas N`)",
            cap.zones, c.replicas, c.name, c.name
        )
    };
    match (cap.used, cap.free) {
        (Some(used), Some(free)) => println!(
            "capacity  {} offered in {} zone(s), {} used, {} free; policy {met}",
            fmt::bytes(cap.offered),
            cap.zones,
            fmt::bytes(used),
            fmt::bytes(free)
        ),
        _ => println!(
            "capacity  {} offered in {} zone(s); policy {met}",
            fmt::bytes(cap.offered),
            cap.zones
        ),
    }
}

fn members(v: &PoolDetail) {
    println!();
    println!(
        "{:<16}  {:<16}  {:<7}  {:<8}  NODES (storage, zone)",
        "MEMBER", "NAME", "ROLE", "STATE"
    );
    for m in &v.members {
        let nodes: Vec<String> = m
            .nodes
            .iter()
            .map(|n| {
                let zone = if n.zone.is_empty() { "own" } else { &n.zone };
                let cpu = if n.cpu == 0 {
                    String::new()
                } else {
                    let hours =
                        if n.hours.is_empty() { String::new() } else { format!(" {}h", n.hours) };
                    format!(", {} jobs of {}{hours}", n.cpu, fmt::bytes(n.memory))
                };
                format!("{} ({}, {zone}{cpu})", short(&n.id, 8), fmt::bytes(n.storage))
            })
            .collect();
        println!(
            "{:<16}  {:<16}  {:<7}  {:<8}  {}",
            short(&m.id, 16),
            m.name,
            m.role,
            m.state,
            nodes.join(", ")
        );
    }
}

fn objects(v: &PoolDetail) {
    if v.objects.is_empty() {
        return;
    }
    println!();
    println!("{:<16}  {:<24}  {:>10}  {:<16}  STORED", "OBJECT", "NAME", "SIZE", "OWNER");
    for o in &v.objects {
        println!(
            "{:<16}  {:<24}  {:>10}  {:<16}  {}",
            short(&o.id, 16),
            o.name,
            fmt::bytes(o.bytes),
            o.owner_name,
            fmt::time(o.at_ms.max(0) as u64)
        );
    }
}

fn edges(edges: &[kith::api::pools::EdgeServed]) {
    println!();
    println!("cdn edge  this node serves partners' public sites at NAME.local (kith up --cdn)");
    println!("{:<20}  {:<24}  {:>7}  {:>10}", "PARTNER", "SITE", "VERSION", "KEPT");
    for e in edges {
        if e.sites.is_empty() {
            println!("{:<20}  {:<24}  {:>7}  {:>10}", e.partner, "(none yet)", "-", "-");
        }
        for (i, (site, version)) in e.sites.iter().enumerate() {
            let kept = if i == 0 { fmt::bytes(e.bytes) } else { String::new() };
            println!("{:<20}  {:<24}  {:>7}  {:>10}", e.partner, site, version, kept);
        }
        if let Some((served, lent)) = e.egress {
            println!(
                "          {}: egress served this month {} of the {} lent a month{}",
                e.partner,
                fmt::bytes(served),
                fmt::bytes(lent),
                if served >= lent { " (all of it: not served here until next month)" } else { "" }
            );
        }
        if let Some(err) = &e.error {
            println!("          {}: {err}", e.partner);
        }
    }
}

fn offsite(copies: u64, o: &kith::api::pools::Offsite) {
    println!();
    println!("off-site  {copies} copy(ies) of every chunk on federated pools' nodes");
    if o.partners.is_empty() {
        println!("          no partner lends storage yet (see `kith federation ls`)");
    } else {
        println!(
            "{:<20}  {:>7}  {:>10}  {:>10}  {:>6}",
            "PARTNER", "HOLDERS", "PLACED", "HELD", "DONE"
        );
        for p in &o.partners {
            let done = (p.held_bytes * 100)
                .checked_div(p.placed_bytes)
                .map_or("-".to_string(), |x| format!("{x}%"));
            let note = match p.silent_ms {
                Some(ms) if p.replaced => format!(
                    "  silent {}: past its notice, its copies go to other partners",
                    fmt::span(ms.max(0) as u64)
                ),
                Some(ms) => format!(
                    "  silent {} (its copies move elsewhere once silent past the notice)",
                    fmt::span(ms.max(0) as u64)
                ),
                None => String::new(),
            };
            let note = match p.leaving_ends_ms {
                Some(end) if p.others_lend => format!(
                    "{note}  leaving (ends {}): its copies are placed with the other partners; it keeps what it holds until then",
                    fmt::time(end.max(0) as u64)
                ),
                Some(end) => format!(
                    "{note}  leaving (ends {}): no other partner lends this pool storage: new objects get no off-site copy, and from then none has one (`kith federation invite` another pool)",
                    fmt::time(end.max(0) as u64)
                ),
                None => note,
            };
            let audits = match (&p.audit_failing, p.audits_passed + p.audits_failed) {
                (Some(why), _) => format!("  failing an audit: {why}"),
                (None, 0) => String::new(),
                (None, n) => format!("  audits {} of {n} passed", p.audits_passed),
            };
            println!(
                "{:<20}  {:>7}  {:>10}  {:>10}  {:>6}{note}{audits}",
                p.name,
                p.holders,
                fmt::bytes(p.placed_bytes),
                fmt::bytes(p.held_bytes),
                done
            );
        }
    }
    if let Some(e) = &o.error {
        println!("          not all checked: {e}");
    }
}

fn replication(r: &Replication) {
    println!();
    if let Some(e) = &r.error {
        println!("replication: cannot check: {e}");
        return;
    }
    println!(
        "replication  {} objects, {} in {} blobs; under-replicated {} ({} blobs), lost {} blobs",
        r.objects,
        fmt::bytes(r.bytes),
        r.blobs,
        fmt::bytes(r.under_replicated_bytes),
        r.under_replicated_blobs,
        r.lost_blobs
    );
    if !r.lost_objects.is_empty() {
        println!(
            "             lost: object(s) {}: no node holds all of them any more (their owner can take them out with `kith rm ID`)",
            r.lost_objects.join(", ")
        );
    }
    if r.unconfirmed_blobs > 0 {
        let who: Vec<&str> = r.silent.iter().map(|n| short(n, 8)).collect();
        println!(
            "             {} blobs unconfirmed: node(s) {} did not answer and may hold them",
            r.unconfirmed_blobs,
            who.join(", ")
        );
    }
    println!(
        "{:<16}  {:<12}  {:<5}  {:>8}  {:>10}  {:>10}  NOTE",
        "HOLDER", "MEMBER", "STATE", "SILENT", "ASSIGNED", "CONFIRMED"
    );
    for h in &r.holders {
        println!(
            "{:<16}  {:<12}  {:<5}  {:>7}s  {:>10}  {:>10}  {}",
            short(&h.node, 16),
            h.member.as_deref().unwrap_or(""),
            h.state,
            h.silent_s,
            h.assigned_blobs,
            h.confirmed_blobs,
            h.error.as_deref().unwrap_or("")
        );
    }
    for e in &r.unreadable {
        println!("  cannot read: {e}");
    }
    if !r.over_quota.is_empty() {
        println!(
            "  over their owner's quota, held by no node: object(s) {}",
            r.over_quota.join(", ")
        );
    }
}

fn runners(v: &PoolDetail) {
    if v.runners.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<16}  {:<16}  {:>6}  {:>9}  LATEST DISAGREEMENT",
        "RUNNER NODE", "MEMBER", "AGREED", "DISAGREED"
    );
    for r in &v.runners {
        let latest = match (r.doubtful, r.reason.is_empty()) {
            (true, _) => format!("asked last: {}", r.reason),
            (false, true) => "-".to_string(),
            (false, false) => r.reason.clone(),
        };
        println!(
            "{:<16}  {:<16}  {:>6}  {:>9}  {latest}",
            short(&r.node, 16),
            r.member_name,
            r.agreed,
            r.disagreed
        );
    }
}

fn audits(v: &PoolDetail) {
    if v.audits.is_empty() {
        return;
    }
    // Reputation: of all the audits a member's nodes underwent, the share they passed.
    let mut by_member: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for a in &v.audits {
        if let Some(m) = v.members.iter().find(|m| m.nodes.iter().any(|n| n.id == a.node)) {
            let e = by_member.entry(m.name.as_str()).or_default();
            e.0 += a.passed;
            e.1 += a.failed;
        }
    }
    println!();
    for (name, (passed, failed)) in &by_member {
        let total = passed + failed;
        if let Some(share) = (passed * 100).checked_div(total) {
            println!("reputation {name}: {share}% of {total} audits passed");
        }
    }
    println!("{:<16}  {:<16}  {:>6}  {:>6}  LATEST", "AUDITED NODE", "BY", "PASSED", "FAILED");
    for a in &v.audits {
        let latest =
            if a.failing { format!("FAILING: {}", a.reason) } else { "passed".to_string() };
        println!(
            "{:<16}  {:<16}  {:>6}  {:>6}  {latest}",
            short(&a.node, 16),
            a.auditor_name,
            a.passed,
            a.failed
        );
    }
}

/// `kith pool leave`.
pub fn left(v: &Left) -> Result<ExitCode> {
    let handed = if v.handed_off { ", after the others copied what you held" } else { "" };
    eprintln!("left pool {}{handed}", v.left);
    if !v.delivered {
        eprintln!(
            "  no other member's node has heard it yet: keep kith running until it reaches one"
        );
    }
    if v.objects > 0 {
        eprintln!("  your {} object(s) are in this node's store (`kith ls`)", v.objects);
    }
    if !v.sites.is_empty() {
        eprintln!(
            "  your site(s) {} are no longer served by the pool; their last version is an object in this node's store",
            v.sites.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith pool dissolve`.
pub fn dissolved(v: &Dissolved) -> Result<ExitCode> {
    eprintln!(
        "dissolved pool {}: its {} other member(s) bring their objects home and leave; nobody can change it any more",
        v.dissolved, v.members
    );
    if !v.delivered && v.members > 0 {
        eprintln!(
            "  no other member's node has heard it yet: keep kith running until it reaches one"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith device ls`.
pub fn devices(list: &[Device]) -> Result<ExitCode> {
    println!("{:<16}  {:<20}  {:<19}  STATE", "NODE", "NAME", "ADDED");
    for d in list {
        let state = if let Some(at) = d.retired_ms {
            format!("retired {}", fmt::time(at.max(0) as u64))
        } else if d.this {
            "this device".to_string()
        } else if let Some(at) = d.last_seen_ms {
            format!("seen {}", fmt::time(at.max(0) as u64))
        } else {
            "not seen since this node started".to_string()
        };
        let name = if d.name.is_empty() { "(unknown)" } else { &d.name };
        let added = if d.added_ms > 0 { fmt::time(d.added_ms as u64) } else { "-".into() };
        println!("{:<16}  {:<20}  {:<19}  {state}", short(&d.node, 16), name, added);
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith device revoke`.
pub fn retired(v: &Retired) -> Result<ExitCode> {
    eprintln!("retired device {} ({})", short(&v.node, 16), v.name);
    if v.pools.is_empty() {
        eprintln!("  it held nothing in your pools");
    } else {
        eprintln!(
            "  taken out of pool(s) {}: what it held is copied to other holders",
            v.pools.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith pool remove`.
pub fn removed(v: &Removed) -> Result<ExitCode> {
    eprintln!("removed member {}", short(&v.removed, 16));
    Ok(ExitCode::SUCCESS)
}

/// `kith pool set`.
pub fn set(v: &Set) -> Result<ExitCode> {
    eprintln!("set {} to {}", v.set, v.value);
    Ok(ExitCode::SUCCESS)
}

/// `kith offer --cpu`.
pub fn compute_offered(v: &kith::api::pools::ComputeOffered) -> Result<ExitCode> {
    if v.cpu == 0 {
        eprintln!("this node no longer runs the pool's jobs");
    } else {
        let hours = if v.hours.is_empty() {
            "at any hour".to_string()
        } else {
            format!("from {}h", v.hours.replace('-', "h to "))
        };
        eprintln!(
            "this node runs up to {} of the pool's jobs at once, {} of memory each, {hours}",
            v.cpu,
            fmt::bytes(v.memory)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith offer`.
pub fn offered(v: &Offered) -> Result<ExitCode> {
    let zone =
        if v.zone.is_empty() { "your own zone".to_string() } else { format!("zone {}", v.zone) };
    let egress = if v.egress == 0 {
        "unlimited egress".to_string()
    } else {
        format!("{} egress a month", fmt::bytes(v.egress))
    };
    eprintln!("offered {} of storage and {egress}, in {zone}", fmt::bytes(v.storage));
    Ok(ExitCode::SUCCESS)
}

/// `kith federation ls` (and what accept and leave print).
pub fn agreements(v: &[kith::api::pools::FedAgreement]) -> Result<ExitCode> {
    if v.is_empty() {
        println!(
            "no federation agreements: an admin offers one with `kith federation invite POOL --lend-storage SIZE`"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let lends = |storage: u64, egress: u64, cdn: bool, relay: bool| {
        let mut parts = Vec::new();
        if storage > 0 {
            parts.push(format!("{} storage", fmt::bytes(storage)));
        }
        if egress > 0 {
            parts.push(format!("{}/month egress", fmt::bytes(egress)));
        }
        if cdn {
            parts.push("CDN".to_string());
        }
        if relay {
            parts.push("relay".to_string());
        }
        if parts.is_empty() { "nothing".to_string() } else { parts.join(", ") }
    };
    for a in v {
        let state = match a.ends_ms {
            Some(end) if a.state != "active" => {
                format!("{} (ends {})", a.state, fmt::time(end.max(0) as u64))
            }
            _ => a.state.clone(),
        };
        println!("{}  {} <-> {}  {state}", &a.id[..16], a.pool, a.partner_name);
        println!(
            "    {} lends {}",
            a.pool,
            lends(a.lends_storage, a.lends_egress, a.lends_cdn, a.lends_relay)
        );
        println!(
            "    {} lends {}",
            a.partner_name,
            lends(a.lent_storage, a.lent_egress, a.lent_cdn, a.lent_relay)
        );
        let price = if a.price_storage.is_empty() && a.price_egress.is_empty() {
            "credit both ways".to_string()
        } else {
            format!(
                "{} per GiB-month, {} per GB",
                if a.price_storage.is_empty() { "0" } else { &a.price_storage },
                if a.price_egress.is_empty() { "0" } else { &a.price_egress }
            )
        };
        println!(
            "    since {} ({} by this pool), {}-day term, {} days' notice, {price}",
            fmt::time(a.since_ms),
            a.side,
            a.term_days,
            a.notice_days
        );
        if !a.relays.is_empty() {
            println!("    relay {} (this pool's nodes use it)", a.relays.join(", "));
        }
        if a.held_here_bytes > 0 {
            println!(
                "    this node holds {} for {} ({} blobs)",
                fmt::bytes(a.held_here_bytes),
                a.partner_name,
                a.held_here_blobs
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith federation show`.
pub fn fed_show(v: &kith::api::pools::FedShow) -> Result<ExitCode> {
    let a = &v.agreement;
    agreements(std::slice::from_ref(a))?;
    let bh = |n: i64| format!("{}·h", fmt::bytes(n.max(0) as u64));
    let b = |n: i64| fmt::bytes(n.max(0) as u64);
    match &v.this_month {
        None => println!(
            "  {}: nothing recorded with {} yet (nodes record every `record_every`, an hour by default)",
            v.period, a.partner_name
        ),
        Some(p) => {
            println!("  {} in {}'s ledger:", v.period, a.pool);
            println!(
                "    held for {}: {} recorded, {} receipted by it (what is priced)",
                a.partner_name,
                bh(p.held_for_byte_hours),
                bh(p.receipted_held_for_byte_hours)
            );
            println!(
                "    held by {}: {} ({} signed to its holders), audits {} passed, {} failed{}",
                a.partner_name,
                bh(p.held_by_byte_hours),
                bh(p.signed_held_by_byte_hours),
                p.audits_passed,
                p.audits_failed,
                if p.unaudited { " (none passed yet: its word only)" } else { "" }
            );
            println!(
                "    sent to {}: {} (copies back receipted by it: {}), relayed for it: {}",
                a.partner_name,
                b(p.served_to_bytes),
                b(p.receipted_sent_bytes),
                b(p.relayed_for_bytes)
            );
            println!(
                "    received from {}: {} ({} signed for), relayed by it: {}",
                a.partner_name,
                b(p.received_from_bytes),
                b(p.signed_received_bytes),
                b(p.relayed_by_bytes)
            );
            if p.proofs_given + p.proofs_failed > 0 {
                println!(
                    "    its audits of this pool's nodes: {} proofs given, {} failed",
                    p.proofs_given, p.proofs_failed
                );
            }
            if p.priced && p.owes_cents == 0 {
                println!("    so far: nothing owed either way (under a cent)");
            } else if p.priced {
                let owes = p.owes_cents;
                let (who, cents) = if owes >= 0 {
                    (format!("{} owes {}", a.pool, a.partner_name), owes)
                } else {
                    (format!("{} owes {}", a.partner_name, a.pool), -owes)
                };
                println!("    so far: {who} {}.{:02}", cents / 100, cents % 100);
            } else {
                println!(
                    "    so far: credit {:+.3} units to {} (given less taken; no prices)",
                    p.given - p.taken,
                    a.pool
                );
            }
        }
    }
    match &v.offsite {
        Some(o) => println!(
            "  off-site copies at {}: {} placed, {} held by {} node(s){}",
            a.partner_name,
            fmt::bytes(o.placed_bytes),
            fmt::bytes(o.held_bytes),
            o.holders,
            o.audit_failing
                .as_ref()
                .map(|w| format!("; failing an audit: {w}"))
                .unwrap_or_default()
        ),
        None if v.offsite_replicas > 0 && a.lent_storage > 0 => println!(
            "  off-site copies at {}: none seen by this node yet (its off-site pass places them)",
            a.partner_name
        ),
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}
