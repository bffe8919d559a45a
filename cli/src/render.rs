//! Printing results for people (or as JSON).

use std::process::ExitCode;

use anyhow::Result;
use serde_json::Value;

use kith::fmt;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

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

pub fn ticket(v: &Value, json: bool) -> Result<ExitCode> {
    if json {
        return json_out(v);
    }
    println!("{}", s(&v["ticket"]));
    Ok(ExitCode::SUCCESS)
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
    if !v.workers.is_empty() {
        println!();
        println!(
            "{:<24}  {:<7}  {:>6}  {:<19}  {:>8}  NOTE",
            "WORKER", "STATE", "PASSES", "LAST", "TOOK"
        );
        for w in &v.workers {
            let last = w.last_ms.map(fmt::time).unwrap_or_else(|| "-".into());
            let note = match (&w.last_error, w.progress) {
                (Some(e), _) => e.clone(),
                (None, Some((d, t))) => format!("{d}/{t}"),
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

pub fn peers(v: &Value, json: bool) -> Result<ExitCode> {
    if json {
        return json_out(v);
    }
    if v.as_array().is_none_or(|a| a.is_empty()) {
        eprintln!(
            "no peers yet: nodes on this LAN appear by themselves (mDNS); add one elsewhere with `kith peer add TICKET`"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16}  {:<11}  {:<19}  {:<10}  {:<22}  ADDRESSES",
        "NODE", "STATE", "LAST SEEN", "LEARNED", "ROUTE"
    );
    for p in v.as_array().into_iter().flatten() {
        let via = match (p["mdns"].as_bool(), p["manual"].as_bool()) {
            (Some(true), Some(true)) => "mdns,ticket",
            (Some(true), _) => "mdns",
            (_, Some(true)) => "ticket",
            _ => "-",
        };
        let seen = p["last_seen_ms"].as_u64().map(fmt::time).unwrap_or_else(|| "never".into());
        let addrs: Vec<&str> = p["addrs"].as_array().into_iter().flatten().map(s).collect();
        let route = match p["route"].as_str() {
            Some(r) => r,
            None if p["link_error"].is_string() => "none (see --json)",
            None => "-",
        };
        println!(
            "{:<16}  {:<11}  {:<19}  {:<10}  {:<22}  {}",
            &s(&p["id"])[..16.min(s(&p["id"]).len())],
            s(&p["state"]),
            seen,
            via,
            route,
            addrs.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn peer_added(v: &Value) -> Result<ExitCode> {
    if v["saved"].as_bool() == Some(true) {
        eprintln!("saved peer {}; `kith up` will use it", s(&v["id"]));
    } else {
        eprintln!("added peer {} ({})", s(&v["id"]), s(&v["state"]));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn peer_linked(v: &Value) -> Result<ExitCode> {
    println!("{} {}", s(&v["id"]), s(&v["route"]));
    Ok(ExitCode::SUCCESS)
}

pub fn put(v: &Value, json: bool) -> Result<ExitCode> {
    if json {
        return json_out(v);
    }
    println!("{}", s(&v["id"]));
    let (scanned, new) = (u(&v["bytes_scanned"]), u(&v["bytes_new"]));
    let secs = v["seconds"].as_f64().unwrap_or(0.0);
    let share = if scanned > 0 { 100.0 * new as f64 / scanned as f64 } else { 0.0 };
    eprintln!("stored {} as version {}", s(&v["source"]), u(&v["version"]));
    eprintln!(
        "  {} files ({} unchanged), {} folders, {} links",
        u(&v["files"]),
        u(&v["files_unchanged"]),
        u(&v["dirs"]),
        u(&v["symlinks"])
    );
    eprintln!(
        "  {} scanned, {} read, {} new ({share:.1}%), {} added to the store",
        fmt::bytes(scanned),
        fmt::bytes(u(&v["bytes_read"])),
        fmt::bytes(new),
        fmt::bytes(u(&v["bytes_stored"]))
    );
    eprintln!("  dedup ratio {:.1}%, {secs:.2} s, {}", 100.0 - share, fmt::rate(scanned, secs));
    let p = &v["pool"];
    if p.is_null() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "put into pool {} ({} blobs, {}), {} replicas over {} holders, in {:.2} s:",
        p["pool_name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| s(&p["pool"])[..8.min(s(&p["pool"]).len())].to_string()),
        u(&p["blobs"]),
        fmt::bytes(u(&p["bytes"])),
        u(&p["replicas"]),
        u(&p["holders"]),
        p["seconds"].as_f64().unwrap_or(0.0)
    );
    for a in p["acks"].as_array().into_iter().flatten() {
        let short = &s(&a["node"])[..8.min(s(&a["node"]).len())];
        let node = match a["member"].as_str() {
            Some(m) => format!("{m}'s node {short}"),
            None => short.to_string(),
        };
        match a["ok"].as_bool() {
            Some(true) => eprintln!(
                "  {node}  holds {} blobs ({})",
                u(&a["blobs"]),
                fmt::bytes(u(&a["bytes"]))
            ),
            _ => eprintln!("  {node}  FAILED: {}", s(&a["error"])),
        }
    }
    if u(&p["short_blobs"]) > 0 {
        eprintln!(
            "only {} of {} copies could be placed: the pool has {} holder(s) offering storage; repair adds the missing copies when members offer more",
            u(&p["holders"]).min(u(&p["replicas"])),
            u(&p["replicas"]),
            u(&p["holders"])
        );
    }
    if p["complete"].as_bool() != Some(true) {
        let failed = p["acks"].as_array().into_iter().flatten().any(|a| a["ok"] != true);
        if failed {
            eprintln!(
                "not every holder acknowledged; the object is stored here and repair keeps copying it to the pool in the background (see `kith pool show`)"
            );
        }
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn restored(v: &Value) {
    let secs = v["seconds"].as_f64().unwrap_or(0.0);
    let fetched = u(&v["fetched_bytes"]);
    if fetched > 0 {
        let fs = v["fetch_seconds"].as_f64().unwrap_or(0.0);
        eprintln!(
            "fetched {} from peers in {fs:.2} s ({})",
            fmt::bytes(fetched),
            fmt::rate(fetched, fs)
        );
    }
    eprintln!(
        "restored {} to {}: {} files, {} folders, {} links, {} in {secs:.2} s ({})",
        &s(&v["id"])[..12.min(s(&v["id"]).len())],
        s(&v["dest"]),
        u(&v["files"]),
        u(&v["dirs"]),
        u(&v["symlinks"]),
        fmt::bytes(u(&v["bytes"])),
        fmt::rate(u(&v["bytes"]), secs)
    );
}

pub fn objects(v: &Value, json: bool) -> Result<ExitCode> {
    if json {
        return json_out(v);
    }
    println!(
        "{:<12}  {:>4}  {:<19}  {:<4}  {:>7}  {:>10}  SOURCE",
        "ID", "VER", "STORED", "KIND", "FILES", "SIZE"
    );
    for o in v.as_array().into_iter().flatten() {
        println!(
            "{:<12}  {:>4}  {:<19}  {:<4}  {:>7}  {:>10}  {}",
            &s(&o["id"])[..12.min(s(&o["id"]).len())],
            u(&o["version"]),
            fmt::time(u(&o["created_ms"])),
            s(&o["kind"]),
            u(&o["files"]),
            fmt::bytes(u(&o["bytes"])),
            s(&o["source"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn gc(v: &Value, json: bool) -> Result<ExitCode> {
    if json {
        return json_out(v);
    }
    eprintln!(
        "kept {} objects and {} chunks; removed {} chunks, deleted {} packs, rewrote {}; freed {}",
        u(&v["objects"]),
        u(&v["blobs_kept"]),
        u(&v["blobs_removed"]),
        u(&v["packs_deleted"]),
        u(&v["packs_rewritten"]),
        fmt::bytes(u(&v["bytes_freed"]))
    );
    if u(&v["bytes_unreferenced_kept"]) > 0 {
        eprintln!(
            "  {} of unreferenced chunks stay in packs that are mostly in use",
            fmt::bytes(u(&v["bytes_unreferenced_kept"]))
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify(v: &Value, json: bool) -> Result<ExitCode> {
    let damaged = v["damaged"].as_bool() == Some(true);
    let code = if damaged { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    if json {
        println!("{v}");
        return Ok(code);
    }
    println!(
        "checked {} chunks ({}) in {} packs, and {} objects",
        u(&v["blobs"]),
        fmt::bytes(u(&v["bytes"])),
        u(&v["packs"]),
        u(&v["objects"])
    );
    for b in v["damaged_blobs"].as_array().into_iter().flatten() {
        println!("damaged chunk {}: {}", s(&b["chunk"]), s(&b["reason"]));
    }
    for d in v["damaged_objects"].as_array().into_iter().flatten() {
        let src = d["source"].as_str().map(|x| format!(" ({x})")).unwrap_or_default();
        println!("damaged object {}{src}: {} problem(s)", s(&d["id"]), u(&d["problem_count"]));
        for p in d["problems"].as_array().into_iter().flatten() {
            println!("  {}", s(p));
        }
    }
    let unindexed = v["unindexed_packs"].as_array().map_or(0, |a| a.len());
    if unindexed > 0 || u(&v["unreferenced_blobs"]) > 0 {
        println!(
            "{unindexed} unindexed packs and {} unreferenced chunks (left by interrupted puts, or once held for a pool this node no longer serves); `kith gc` removes them",
            u(&v["unreferenced_blobs"])
        );
    }
    if !damaged {
        println!("no damage found");
    }
    Ok(code)
}
