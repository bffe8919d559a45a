//! Rendering `kith site`.

use std::process::ExitCode;

use anyhow::Result;
use kith::api::sites::*;
use kith::fmt;

/// `kith site publish`.
pub fn published(v: &Published) -> Result<ExitCode> {
    eprintln!(
        "published {} version {} ({}): {} files, {}, {} new blobs, in {:.2} s",
        v.name,
        v.version,
        v.access,
        v.files,
        fmt::bytes(v.bytes),
        v.new_blobs,
        v.seconds
    );
    for x in &v.skipped {
        eprintln!("  left out {x}");
    }
    for x in &v.urls {
        println!("{x}");
    }
    let p = &v.pool_put;
    if p.short_blobs > 0 {
        eprintln!(
            "only {} of {} copies could be placed: the pool has {} holder(s) offering storage; repair adds copies when members offer more",
            p.holders.min(p.replicas),
            p.replicas,
            p.holders
        );
    }
    for a in p.acks.iter().filter(|a| !a.ok) {
        eprintln!(
            "holder {} could not take its copy yet ({}); repair keeps copying in the background",
            &a.node[..8.min(a.node.len())],
            a.error.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith site ls`.
pub fn list(v: &SiteList) -> Result<ExitCode> {
    if v.sites.is_empty() && v.edge.is_empty() {
        eprintln!("no sites yet (kith site publish DIR --name NAME)");
    }
    for x in &v.sites {
        println!(
            "{:<24} v{:<4} {:<8} {:>6} files {:>10}  {} in {}{}",
            x.name,
            x.version,
            x.access,
            x.files.unwrap_or(0),
            fmt::bytes(x.bytes.unwrap_or(0)),
            x.owner_name,
            x.pool_name,
            if x.served { "" } else { "  (name taken: not served)" }
        );
    }
    for x in &v.edge {
        println!(
            "{:<24} v{:<4} {:<8} {:>6} files {:>10}  pool {}'s, served here as its CDN edge",
            x.name,
            x.version,
            "public",
            x.files,
            fmt::bytes(x.bytes),
            x.partner,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith site versions`.
pub fn versions(v: &Versions) -> Result<ExitCode> {
    for x in &v.versions {
        println!(
            "{}{:<4} {} {:>6} files {:>10}",
            if x.current { "*" } else { " " },
            x.version,
            fmt::time(x.at_ms.max(0) as u64),
            x.files,
            fmt::bytes(x.bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith site rollback`.
pub fn rolled_back(v: &RolledBack) -> Result<ExitCode> {
    eprintln!("{} now serves version {}", v.name, v.version);
    Ok(ExitCode::SUCCESS)
}

/// `kith site set`.
pub fn site_set(v: &SiteSet) -> Result<ExitCode> {
    eprintln!("{} keeps its newest {} versions (and the one it serves)", v.name, v.keep);
    if !v.forgotten.is_empty() {
        let list: Vec<String> = v.forgotten.iter().map(u64::to_string).collect();
        eprintln!("forgot versions {}; their holders reclaim the space", list.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith site rm`.
pub fn removed(v: &SiteRemoved) -> Result<ExitCode> {
    eprintln!("took {} down ({} versions forgotten)", v.name, v.versions);
    Ok(ExitCode::SUCCESS)
}

/// `kith site credential`.
pub fn credential(v: &Credential) -> Result<ExitCode> {
    println!("{}", v.credential);
    eprintln!(
        "valid until {}; send it as `Authorization: Bearer ...` or the cookie kith_access",
        fmt::time(v.expires_ms)
    );
    Ok(ExitCode::SUCCESS)
}
