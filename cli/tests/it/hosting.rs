//! Sites between real daemons: published into a pool, served by every node's gateway the way
//! nginx serves static files, updated atomically, surviving the publisher, guarded for members,
//! and the gateway stays up under bad requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use kith_testnet::{Layout, Testnet};

use crate::util::*;

const CONVERGE: Duration = Duration::from_secs(60);

/// Nodes 0..n in one pool, each offering storage in its own zone, two replicas.
fn pool(net: &mut Testnet, n: usize) {
    for i in 0..n {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada"]).unwrap();
    for i in 1..n {
        let ticket = net.kith_ok(0, &["pool", "invite", "street"]).unwrap();
        net.kith_ok(i, &["pool", "join", ticket.trim()]).unwrap();
    }
    for i in 0..n {
        let zone = format!("house-{i}");
        net.kith_ok(i, &["offer", "street", "--storage", "1GiB", "--zone", &zone]).unwrap();
    }
    net.wait_for(CONVERGE, "every node to see every offer", |net| {
        Ok((0..n).all(|i| {
            net.json(i, &["pool", "show", "street"]).unwrap_or_default()["capacity"]["offered"]
                == (n as u64) << 30
        }))
    })
    .unwrap();
    net.kith_ok(0, &["pool", "set", "street", "replicas", "2"]).unwrap();
}

fn site_dir(net: &Testnet, name: &str, version: &str) -> (std::path::PathBuf, Vec<u8>) {
    let dir = net.dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["css", "docs", ".git"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    write(&dir.join("index.html"), format!("<h1>Bakery {version}</h1>").as_bytes());
    write(&dir.join("404.html"), b"<h1>no such loaf</h1>");
    let css =
        format!("/* {version} */\n{}", "body { color: brown; margin: 0 auto; }\n".repeat(200));
    write(&dir.join("css/site.css"), css.as_bytes());
    write(&dir.join("docs/index.html"), b"<p>docs</p>");
    write(&dir.join(".git/config"), b"secret");
    write(&dir.join("empty.txt"), b"");
    let big = random_bytes(3 << 20, 77);
    write(&dir.join("bread.bin"), &big);
    (dir, big)
}

#[test]
fn a_site_is_served_by_every_node_the_way_nginx_would() {
    let mut net = testnet(3, Layout::Loopback);
    pool(&mut net, 3);
    let (dir, big) = site_dir(&net, "bakery", "v1");
    let p = net.json(0, &["site", "publish", dir.to_str().unwrap(), "--name", "bakery"]).unwrap();
    assert_eq!(p["version"], 1, "{p}");
    assert_eq!(p["files"], 6, "{p}");
    assert!(p["skipped"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().contains(".git")));
    let a = http(&net, 1);
    net.wait_for(CONVERGE, "node 1 to serve the site", |_| Ok(get(a, "/s/bakery/").status == 200))
        .unwrap();

    // Pages, folders, types, the site's own 404.
    let r = get(a, "/s/bakery/");
    assert_eq!(r.body, b"<h1>Bakery v1</h1>");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let etag = r.header("etag").unwrap().to_string();
    let modified = r.header("last-modified").unwrap().to_string();
    let by_host = req(a, "GET", "/", &["Host: bakery.local"]);
    assert_eq!(by_host.status, 200, "{by_host:?}");
    assert_eq!(by_host.body, r.body);
    let r = get(a, "/s/bakery");
    assert_eq!((r.status, r.header("location")), (301, Some("/s/bakery/")));
    let r = get(a, "/s/bakery/docs");
    assert_eq!((r.status, r.header("location")), (301, Some("/s/bakery/docs/")));
    assert_eq!(get(a, "/s/bakery/docs/").body, b"<p>docs</p>");
    let r = get(a, "/s/bakery/no/such/page");
    assert_eq!((r.status, r.body.as_slice()), (404, &b"<h1>no such loaf</h1>"[..]));
    assert_eq!(get(a, "/s/bakery/.git/config").status, 404, "hidden files are not published");
    let r = get(a, "/s/bakery/empty.txt");
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    // Validators.
    let r = req(a, "GET", "/s/bakery/", &[&format!("If-None-Match: {etag}")]);
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = req(a, "GET", "/s/bakery/", &[&format!("If-Modified-Since: {modified}")]);
    assert_eq!(r.status, 304);
    let r = req(a, "GET", "/s/bakery/", &["If-None-Match: \"other\""]);
    assert_eq!(r.status, 200);

    // Ranges, across chunk boundaries of a 3 MiB file.
    let r = get(a, "/s/bakery/bread.bin");
    assert!(r.status == 200 && r.body == big, "whole file differs");
    let r = req(a, "GET", "/s/bakery/bread.bin", &["Range: bytes=1000000-2500000"]);
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1000000-2500000/{}", big.len()).as_str())
    );
    assert!(r.body == big[1_000_000..=2_500_000], "range bytes differ");
    let r = req(a, "GET", "/s/bakery/bread.bin", &["Range: bytes=-10"]);
    assert!(r.status == 206 && r.body == big[big.len() - 10..]);
    let r = req(a, "GET", "/s/bakery/bread.bin", &["Range: bytes=99999999-"]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some(format!("bytes */{}", big.len()).as_str()));
    let r = req(a, "GET", "/s/bakery/bread.bin", &["Range: bytes=0-0", "If-Range: \"stale\""]);
    assert_eq!((r.status, r.body.len()), (200, big.len()));

    // HEAD: the same head, no body.
    let r = req(a, "HEAD", "/s/bakery/bread.bin", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(big.len().to_string().as_str()));
    assert!(r.body.is_empty());

    // gzip where the client accepts it; the same bytes once unpacked.
    let css = std::fs::read(dir.join("css/site.css")).unwrap();
    let r = req(a, "GET", "/s/bakery/css/site.css", &["Accept-Encoding: gzip, br"]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert!(r.body.len() < css.len() / 4);
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..]).read_to_end(&mut plain).unwrap();
    assert_eq!(plain, css);
    let r = get(a, "/s/bakery/css/site.css");
    assert!(r.header("content-encoding").is_none() && r.body == css);
    // Hot content came from the memory cache; the gateway counts what it did.
    let g = net.json(1, &["status"]).unwrap()["gateway"].clone();
    assert!(g["requests"].as_u64().unwrap() > 0 && g["cache_hits"].as_u64().unwrap() > 0, "{g}");
    assert!(g["cache_bytes"].as_u64().unwrap() >= big.len() as u64, "{g}");

    // No escape, however the path is spelled; other methods, other sites.
    for bad in [
        "/s/bakery/../../etc/passwd",
        "/s/bakery/%2e%2e/%2e%2e/etc/passwd",
        "/s/bakery/..%2f..%2fetc",
        "/s/bakery/%2E./x",
    ] {
        let r = get(a, bad);
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    assert_eq!(get(a, "/s/bakery/%252e%252e/%252e%252e/etc/passwd").status, 404);
    assert_eq!(get(a, "/s/bakery/%ff%fe").status, 400);
    let r = req(a, "POST", "/s/bakery/", &["Content-Length: 0"]);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    assert_eq!(get(a, "/s/nosuchsite/").status, 404);
    assert_eq!(get(a, "/s/Not_A_Name/").status, 404);
    assert_eq!(req(a, "GET", "/", &["Host: nosuch.local"]).status, 404);

    // A new version: every node serves it within seconds; a page's later requests keep the
    // version the page came from.
    let r = get(a, "/s/bakery/");
    let cookie = r.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    assert_eq!(cookie, "kithv-bakery=1");
    let (dir, _) = site_dir(&net, "bakery", "v2");
    net.kith_ok(0, &["site", "publish", dir.to_str().unwrap(), "--name", "bakery"]).unwrap();
    let b = http(&net, 2);
    net.wait_for(CONVERGE, "nodes 1 and 2 to serve version 2", |_| {
        Ok([a, b].iter().all(|x| get(*x, "/s/bakery/").body == b"<h1>Bakery v2</h1>"))
    })
    .unwrap();
    let pinned = req(a, "GET", "/s/bakery/css/site.css", &[&format!("Cookie: {cookie}")]);
    assert!(
        pinned.body.starts_with(b"/* v1 */"),
        "the page's stylesheet came from another version"
    );
    assert!(get(a, "/s/bakery/css/site.css").body.starts_with(b"/* v2 */"));
    // Regression: a reload (a navigation, with the old page's cookie) showed the pinned old
    // version for a minute after a publish; it gets the new one.
    // (Chromium's request headers for a reload of a LAN page: no Sec-Fetch-* on `http://`.)
    let accept = "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
    let reload = req(a, "GET", "/s/bakery/", &[&format!("Cookie: {cookie}"), accept]);
    assert_eq!(reload.body, b"<h1>Bakery v2</h1>", "a reload kept the pinned version");
    assert!(reload.header("set-cookie").is_some_and(|c| c.starts_with("kithv-bakery=2")));
    let nav =
        req(a, "GET", "/s/bakery/", &[&format!("Cookie: {cookie}"), "Sec-Fetch-Mode: navigate"]);
    assert_eq!(nav.body, b"<h1>Bakery v2</h1>");
    // The page's own later requests (a stylesheet, a fetch) stay on its version.
    let css = req(
        a,
        "GET",
        "/s/bakery/css/site.css",
        &[&format!("Cookie: {cookie}"), "Accept: text/css,*/*;q=0.1"],
    );
    assert!(css.body.starts_with(b"/* v1 */"));
    let v = net.json(1, &["site", "versions", "bakery"]).unwrap();
    assert_eq!(v["versions"].as_array().unwrap().len(), 2, "{v}");
    net.kith_ok(0, &["site", "rollback", "bakery", "1"]).unwrap();
    net.wait_for(CONVERGE, "node 2 to serve version 1 again", |_| {
        Ok(get(b, "/s/bakery/").body == b"<h1>Bakery v1</h1>")
    })
    .unwrap();

    // What node 1 served of the site, and how many nodes serve it.
    let before = net.json(1, &["site", "ls"]).unwrap();
    let counts = |v: &serde_json::Value| {
        let s =
            v["sites"].as_array().unwrap().iter().find(|s| s["name"] == "bakery").unwrap().clone();
        (
            s["requests"].as_u64().unwrap(),
            s["cache_hits"].as_u64().unwrap(),
            s["nodes"].as_u64().unwrap(),
        )
    };
    let (r0, h0, nodes) = counts(&before);
    assert_eq!(nodes, 3, "{before}");
    for _ in 0..3 {
        assert_eq!(get(a, "/s/bakery/docs/").status, 200);
    }
    let (r1, h1, _) = counts(&net.json(1, &["site", "ls"]).unwrap());
    assert_eq!(r1, r0 + 3, "three requests counted");
    assert!(h1 >= h0 + 2, "the second and third from the cache: {h0} -> {h1}");

    // The publisher's node goes away: the others still serve every byte.
    net.kill(0).unwrap();
    for x in [a, b] {
        assert!(
            get(x, "/s/bakery/bread.bin").body == big,
            "a node lost the site with its publisher"
        );
        assert_eq!(get(x, "/s/bakery/docs/").body, b"<p>docs</p>");
    }
}

#[test]
fn members_only_sites_need_a_members_credential_and_bad_input_is_refused() {
    let mut net = testnet(2, Layout::Loopback);
    pool(&mut net, 2);
    let (dir, _) = site_dir(&net, "club", "v1");
    let d = dir.to_str().unwrap();
    net.kith_ok(0, &["site", "publish", d, "--name", "club", "--members"]).unwrap();
    let a = http(&net, 1);
    net.wait_for(CONVERGE, "node 1 to know the site", |_| Ok(get(a, "/s/club/").status == 401))
        .unwrap();
    let cred = net.kith_ok(1, &["site", "credential"]).unwrap().trim().to_string();
    let r = req(a, "GET", "/s/club/", &[&format!("Authorization: Bearer {cred}")]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"<h1>Bakery v1</h1>"[..]));
    let r = req(a, "GET", "/s/club/", &[&format!("Cookie: kith_access={cred}")]);
    assert_eq!(r.status, 200);
    let mut forged = cred.clone();
    forged.pop();
    forged.push(if cred.ends_with('a') { 'b' } else { 'a' });
    let r = req(a, "GET", "/s/club/", &[&format!("Authorization: Bearer {forged}")]);
    assert_eq!(r.status, 401);

    // Publishing: bad names, empty folders, names another member holds.
    let err = |net: &Testnet, i: usize, args: &[&str]| {
        let out = net.kith(i, args);
        assert!(!out.status.success(), "kith {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(&net, 0, &["site", "publish", d, "--name", "Bad_Name"]);
    assert!(e.contains("not a valid site name"), "{e}");
    let empty = net.dir().join("empty");
    std::fs::create_dir_all(empty.join(".hidden")).unwrap();
    let e = err(&net, 0, &["site", "publish", empty.to_str().unwrap(), "--name", "void"]);
    assert!(e.contains("no files to publish"), "{e}");
    let e = err(&net, 0, &["site", "publish", "/nonexistent/folder", "--name", "void"]);
    assert!(e.contains("cannot read"), "{e}");
    net.wait_for(CONVERGE, "node 1 to see the site", |net| {
        Ok(net.json(1, &["site", "ls"])?["sites"].as_array().is_some_and(|s| !s.is_empty()))
    })
    .unwrap();
    let e = err(&net, 1, &["site", "publish", d, "--name", "club"]);
    assert!(e.contains("another member's site"), "{e}");
    let e = err(&net, 1, &["site", "rm", "club"]);
    assert!(e.contains("not yours") && e.contains("only its owner"), "the owner is named: {e}");

    // The gateway stays up for everybody while a client misbehaves.
    let r = raw(a, b"GARBAGE\r\n\r\n");
    assert_eq!(r.status, 400);
    let huge =
        format!("GET /s/club/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 << 10));
    let r = raw(a, huge.as_bytes());
    assert_eq!(r.status, 431);
    let huger = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
    let r = raw(a, huger.as_bytes());
    assert!(r.status == 431 || r.status == 400, "{}", r.status);
    // A slow client that never finishes its headers is cut off; others are served meanwhile.
    let mut slow = TcpStream::connect(a).unwrap();
    slow.write_all(b"GET /s/club/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    assert_eq!(req(a, "GET", "/s/club/", &[&format!("Authorization: Bearer {cred}")]).status, 200);
    slow.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(60), "the slow client was never cut off");

    // Taking the site down.
    net.kith_ok(0, &["site", "rm", "club"]).unwrap();
    net.wait_for(CONVERGE, "node 1 to drop the site", |_| Ok(get(a, "/s/club/").status == 404))
        .unwrap();
}

#[test]
fn a_site_name_resolves_over_mdns_and_opens_from_a_neighbours_device() {
    // Nodes 0 and 1 are pool members on one LAN; namespace 2 is a neighbour's phone with no kith.
    let mut net = testnet(3, Layout::Namespaces);
    for i in 0..2 {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada"]).unwrap();
    let ticket = net.kith_ok(0, &["pool", "invite", "street"]).unwrap();
    net.kith_ok(1, &["pool", "join", ticket.trim()]).unwrap();
    for i in 0..2 {
        let zone = format!("house-{i}");
        net.kith_ok(i, &["offer", "street", "--storage", "1GiB", "--zone", &zone]).unwrap();
    }
    let (dir, _) = site_dir(&net, "bakery", "v1");
    net.kith_ok(0, &["site", "publish", dir.to_str().unwrap(), "--name", "bakery"]).unwrap();
    let phone = net.lan().unwrap().ns(2).to_string();
    let mut addrs = Vec::new();
    net.wait_for(CONVERGE, "both nodes to answer for bakery.local", |_| {
        let out = kith_testnet::netns::in_ns(&phone, kith_bin(), &["resolve", "bakery", "--json"]);
        let v: serde_json::Value =
            serde_json::from_str(&out.unwrap_or_default()).unwrap_or_default();
        addrs = v["addrs"].as_array().cloned().unwrap_or_default();
        Ok(["10.99.0.1", "10.99.0.2"].iter().all(|a| addrs.iter().any(|x| x == a)))
    })
    .unwrap_or_else(|e| panic!("{e}: {addrs:?}"));
    // The phone opens http://bakery.local:7780/ at either address.
    for ip in ["10.99.0.1", "10.99.0.2"] {
        let addr: SocketAddr = format!("{ip}:7780").parse().unwrap();
        let r = kith_testnet::netns::on_ns_thread(&phone, move || {
            req(addr, "GET", "/", &["Host: bakery.local:7780"])
        })
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"<h1>Bakery v1</h1>"[..]), "{ip}");
    }
    // Taken down: nobody answers for the name any more.
    net.kith_ok(0, &["site", "rm", "bakery"]).unwrap();
    net.wait_for(CONVERGE, "bakery.local to stop resolving", |_| {
        let out = kith_testnet::netns::in_ns(&phone, kith_bin(), &["resolve", "bakery", "--json"]);
        Ok(out.is_err())
    })
    .unwrap();
}

#[test]
fn a_site_keeps_the_versions_its_retention_keeps_and_holders_reclaim_the_rest() {
    // Issue 18: every version of a site stayed in the pool for good.
    let mut net = testnet(2, Layout::Loopback);
    pool(&mut net, 2);
    let versions = |net: &Testnet, i: usize| -> Vec<(u64, bool)> {
        net.json(i, &["site", "versions", "club"]).unwrap()["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["version"].as_u64().unwrap(), v["current"].as_bool().unwrap()))
            .collect()
    };
    let stored = |net: &Testnet, i: usize| -> u64 {
        net.json(i, &["status"]).unwrap()["store"]["bytes"].as_u64().unwrap()
    };
    for v in 1..=3u64 {
        let (dir, _) = site_dir(&net, "club", &format!("v{v}"));
        write(&dir.join("bread.bin"), &random_bytes(3 << 20, 100 + v));
        net.kith_ok(0, &["site", "publish", dir.to_str().unwrap(), "--name", "club"]).unwrap();
    }
    net.kith_ok(0, &["site", "rollback", "club", "2"]).unwrap();
    net.wait_for(CONVERGE, "node 1 to hold the three versions", |net| {
        Ok(versions(net, 1).len() == 3 && stored(net, 1) > 9 << 20)
    })
    .unwrap();
    let held = stored(&net, 1);

    // Keep one: the newest stays, and so does the one served.
    let out = net.kith(0, &["site", "set", "club", "keep", "1"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("forgot versions 1"), "{said}");
    assert_eq!(versions(&net, 0), vec![(2, true), (3, false)]);
    net.wait_for(CONVERGE, "node 1 to reclaim version 1", |net| {
        Ok(versions(net, 1).len() == 2 && stored(net, 1) + (3 << 20) <= held)
    })
    .unwrap();
    // A new version is served; with keep 1 it is the only one left.
    let (dir, _) = site_dir(&net, "club", "v4");
    net.kith_ok(0, &["site", "publish", dir.to_str().unwrap(), "--name", "club"]).unwrap();
    assert_eq!(versions(&net, 0), vec![(4, true)]);
    let a = http(&net, 1);
    net.wait_for(CONVERGE, "node 1 to serve version 4", |_| {
        Ok(get(a, "/s/club/").body.as_slice() == b"<h1>Bakery v4</h1>")
    })
    .unwrap();
    assert_eq!(net.json(1, &["verify"]).unwrap()["damaged"], false);

    // Settings that make no sense are refused by name.
    for (args, why) in [
        (["site", "set", "club", "keep", "0"], "at least 1"),
        (["site", "set", "club", "colour", "red"], "one setting, `keep N`"),
        (["site", "set", "nope", "keep", "3"], "nope"),
    ] {
        let out = net.kith(0, &args);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && e.contains(why), "{args:?}: {e}");
    }
}
