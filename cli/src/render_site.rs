//! Rendering `kith site`.

use std::process::ExitCode;

use anyhow::Result;
use kith::fmt;
use serde_json::Value;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Prints a site command's result.
pub fn render(v: &Value, what: &str, json: bool) -> Result<ExitCode> {
    if json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    match what {
        "publish" => {
            eprintln!(
                "published {} version {} ({}): {} files, {}, {} new blobs, in {:.2} s",
                s(&v["name"]),
                u(&v["version"]),
                s(&v["access"]),
                u(&v["files"]),
                fmt::bytes(u(&v["bytes"])),
                u(&v["new_blobs"]),
                v["seconds"].as_f64().unwrap_or(0.0)
            );
            for x in v["skipped"].as_array().into_iter().flatten() {
                eprintln!("  left out {}", s(x));
            }
            for x in v["urls"].as_array().into_iter().flatten() {
                println!("{}", s(x));
            }
            let p = &v["pool_put"];
            if u(&p["short_blobs"]) > 0 {
                eprintln!(
                    "only {} of {} copies could be placed: the pool has {} holder(s) offering storage; repair adds copies when members offer more",
                    u(&p["holders"]).min(u(&p["replicas"])),
                    u(&p["replicas"]),
                    u(&p["holders"])
                );
            }
            for a in p["acks"].as_array().into_iter().flatten().filter(|a| a["ok"] != true) {
                eprintln!(
                    "holder {} could not take its copy yet ({}); repair keeps copying in the background",
                    &s(&a["node"])[..8.min(s(&a["node"]).len())],
                    s(&a["error"])
                );
            }
        }
        "ls" => {
            let sites = v["sites"].as_array().cloned().unwrap_or_default();
            if sites.is_empty() {
                eprintln!("no sites yet (kith site publish DIR --name NAME)");
            }
            for x in sites {
                println!(
                    "{:<24} v{:<4} {:<8} {:>6} files {:>10}  {} in {}{}",
                    s(&x["name"]),
                    u(&x["version"]),
                    s(&x["access"]),
                    u(&x["files"]),
                    fmt::bytes(u(&x["bytes"])),
                    s(&x["owner_name"]),
                    s(&x["pool_name"]),
                    if x["served"] == true { "" } else { "  (name taken: not served)" }
                );
            }
        }
        "versions" => {
            for x in v["versions"].as_array().into_iter().flatten() {
                println!(
                    "{}{:<4} {} {:>6} files {:>10}",
                    if x["current"] == true { "*" } else { " " },
                    u(&x["version"]),
                    fmt::time(u(&x["at_ms"])),
                    u(&x["files"]),
                    fmt::bytes(u(&x["bytes"]))
                );
            }
        }
        "rollback" => eprintln!("{} now serves version {}", s(&v["name"]), u(&v["version"])),
        "rm" => eprintln!("took {} down ({} versions forgotten)", s(&v["name"]), u(&v["versions"])),
        "credential" => {
            println!("{}", s(&v["credential"]));
            eprintln!(
                "valid until {}; send it as `Authorization: Bearer ...` or the cookie kith_access",
                fmt::time(u(&v["expires_ms"]))
            );
        }
        _ => println!("{v}"),
    }
    Ok(ExitCode::SUCCESS)
}
