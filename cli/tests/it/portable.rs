//! Portable data: `kith export` writes everything of an identity into one file, `kith import`
//! takes it in on another machine with no network, byte for byte; bad files are refused.

use std::fs;

use serde_json::Value;

use crate::util::*;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A second home with the identity of `a` (a new machine of the same person).
fn same_person(a: &Kith) -> Kith {
    let key = a.path("me.age");
    if !key.exists() {
        let mut cmd = a.cmd();
        cmd.args(["key", "export", key.to_str().unwrap()]).env("KITH_PASSPHRASE", "pw");
        assert!(cmd.output().unwrap().status.success());
    }
    let b = Kith::new();
    let mut cmd = b.cmd();
    cmd.args(["init", "--import", key.to_str().unwrap()]).env("KITH_PASSPHRASE", "pw");
    assert!(cmd.output().unwrap().status.success());
    b
}

fn log(k: &Kith, src: &str) -> Vec<(u64, String)> {
    json(&k.ok(&["log", "--json", src]).stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["version"].as_u64().unwrap(), o["id"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn everything_of_an_identity_moves_in_one_file_and_bad_files_are_refused() {
    let a = Kith::new();
    let src = a.path("letters");
    write(&src.join("dear.txt"), b"Dear neighbour, the plums are ripe.");
    write(&src.join("scan.bin"), &random_bytes(2_000_000, 5));
    let v1 = describe(&src);
    a.put(&src);
    write(&src.join("dear.txt"), b"Dear neighbour, the plums are gone.");
    a.put(&src);
    write(&src.join("dear.txt"), b"Dear neighbour, the pears are next.");
    let v3 = describe(&src);
    a.put(&src);
    // A forgotten version: the numbers of the others are kept as they are.
    a.ok(&["rm", "--local", &format!("{}@2", src.display())]);
    let photo = a.path("photo.jpg");
    write(&photo, &random_bytes(700_000, 6));
    let photo_id = a.put(&photo);
    let kept = log(&a, src.to_str().unwrap());

    let file = a.path("me.kexp");
    let e = json(&a.ok(&["export", "-o", file.to_str().unwrap(), "--json"]).stdout);
    assert_eq!(e["objects"], 3, "{e}");
    let bytes = fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"KITHEXP1"));
    let plain = b"plums are";
    assert!(!bytes.windows(plain.len()).any(|w| w == plain), "the export holds plaintext");
    let e = a.fail(&["export", "-o", file.to_str().unwrap()]);
    assert!(e.stderr.contains("already exists"), "{}", e.stderr);
    // Or as ordinary files: the latest version of every path, at its path under a folder.
    let plain = a.path("plain");
    let p = json(&a.ok(&["export", "--plain", plain.to_str().unwrap(), "--json"]).stdout);
    assert_eq!(p["objects"], 2, "{p}");
    let under = |path: &std::path::Path| plain.join(path.strip_prefix("/").unwrap());
    assert_eq!(describe(&under(&src)), v3);
    assert_eq!(fs::read(under(&photo)).unwrap(), fs::read(&photo).unwrap());

    // Another machine of the same person takes it all in, with no network, byte for byte.
    let b = same_person(&a);
    let src_s = src.to_str().unwrap();
    let i = json(&b.ok(&["import", file.to_str().unwrap(), "--json"]).stdout);
    assert_eq!((i["objects"].as_u64(), i["blobs_present"].as_u64()), (Some(3), Some(0)), "{i}");
    assert_eq!(log(&b, src_s), kept);
    assert_eq!(kept.iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![1, 3]);
    for (v, want) in [(1, &v1), (3, &v3)] {
        let out = b.path(&format!("v{v}"));
        b.ok(&["get", &format!("{src_s}@{v}"), "-o", out.to_str().unwrap()]);
        assert_eq!(&describe(&out), want);
    }
    let got = b.path("photo.back");
    b.ok(&["get", &photo_id, "-o", got.to_str().unwrap()]);
    assert_eq!(fs::read(&got).unwrap(), fs::read(&photo).unwrap());
    assert_eq!(json(&b.ok(&["verify", "--json"]).stdout)["damaged"], false);
    // Again: nothing new, nothing doubled.
    let again = json(&b.ok(&["import", file.to_str().unwrap(), "--json"]).stdout);
    assert_eq!((again["objects"].as_u64(), again["blobs"].as_u64()), (Some(0), Some(0)));
    assert_eq!(log(&b, src_s), kept);

    // Bad files: each refused by what is wrong, and no object of it is recorded.
    let c = same_person(&a);
    let bad = c.path("bad.kexp");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bytes[..bytes.len() / 2].to_vec(), "truncated"),
        (
            {
                let mut b = bytes.clone();
                let at = b.len() / 2;
                b[at] ^= 1;
                b
            },
            "(damaged)",
        ),
        (
            {
                let mut b = bytes.clone();
                *b.last_mut().unwrap() ^= 1;
                b
            },
            "end does not match",
        ),
        (b"PK\x03\x04 a zip file, not an export".to_vec(), "KITHEXP1"),
        (
            {
                let mut b = bytes.clone();
                b[8] = 7;
                b
            },
            "upgrade kith",
        ),
    ];
    for (content, why) in cases {
        fs::write(&bad, &content).unwrap();
        let e = c.fail(&["import", bad.to_str().unwrap()]);
        assert!(e.stderr.contains(why), "{why}: {}", e.stderr);
        assert_eq!(json(&c.ok(&["ls", "--json"]).stdout), Value::Array(vec![]));
    }
    // Somebody else's export: refused by name.
    let stranger = Kith::new();
    stranger.ok(&["init"]);
    let e = stranger.fail(&["import", file.to_str().unwrap()]);
    assert!(
        e.stderr.contains("this export is identity") && e.stderr.contains("init --import"),
        "{}",
        e.stderr
    );
    assert_eq!(json(&stranger.ok(&["ls", "--json"]).stdout), Value::Array(vec![]));
}

#[test]
fn an_import_onto_a_full_disk_fails_clearly_and_loses_nothing() {
    let a = Kith::new();
    let big = a.path("film.bin");
    write(&big, &random_bytes(40 << 20, 21));
    a.put(&big);
    let file = a.path("me.kexp");
    a.ok(&["export", "-o", file.to_str().unwrap()]);
    let key = a.path("me.age");
    let mut cmd = a.cmd();
    cmd.args(["key", "export", key.to_str().unwrap()]).env("KITH_PASSPHRASE", "pw");
    assert!(cmd.output().unwrap().status.success());

    // The same person on a machine whose disk has 24 MiB.
    let mnt = a.path("small-disk");
    let _fs = Tmpfs::mount(&mnt, "24m");
    let home = mnt.join("home");
    let run = |args: &[&str]| -> Out {
        std::process::Command::new(kith_bin())
            .arg("--home")
            .arg(&home)
            .args(args)
            .env("KITH_PASSPHRASE", "pw")
            .output()
            .unwrap()
            .into()
    };
    assert_eq!(run(&["init", "--import", key.to_str().unwrap()]).code, Some(0));
    let note = a.path("note.txt");
    write(&note, b"kept through it all");
    let first = run(&["put", note.to_str().unwrap()]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let note_id = first.stdout.trim().to_string();

    let out = run(&["import", file.to_str().unwrap()]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("No space left on device"), "{}", out.stderr);
    // Nothing of the import is recorded, and what was there is intact.
    let ls: Value = serde_json::from_str(&run(&["ls", "--json"]).stdout).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 1, "{ls}");
    let v = run(&["verify", "--json"]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
    let got = a.path("note.back");
    assert_eq!(run(&["get", &note_id, "-o", got.to_str().unwrap()]).code, Some(0));
    assert_eq!(fs::read(&got).unwrap(), b"kept through it all");
}

/// `n` nodes up; pool street (2 replicas) made by ada on node 0, joined by bob and cy (nodes 1
/// and 2); nobody offers storage yet.
fn street(n: usize, layout: kith_testnet::Layout) -> kith_testnet::Testnet {
    let mut net = testnet(n, layout);
    for i in 0..n {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada", "--replicas", "2"]).unwrap();
    for (i, name) in [(1, "bob"), (2, "cy")] {
        let ticket = net.kith_ok(0, &["pool", "invite", "street"]).unwrap();
        net.kith_ok(i, &["pool", "join", ticket.trim(), "--as", name]).unwrap();
    }
    net
}

fn pool_objects(net: &kith_testnet::Testnet, i: usize, pool: &str) -> Vec<String> {
    let v = net.json(i, &["pool", "show", pool]).unwrap();
    let mut ids: Vec<String> = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_member_moves_everything_to_another_pool_then_home_and_nothing_is_ever_missing() {
    // Issue 18 item 2: ada leaves street's storage for town's, then takes everything home.
    use std::time::Duration;
    const CONVERGE: Duration = Duration::from_secs(90);
    let mut net = street(4, kith_testnet::Layout::Loopback);
    for i in [1, 2] {
        net.kith_ok(i, &["offer", "street", "--storage", "1GiB", "--zone", &format!("z{i}")])
            .unwrap();
    }
    // Town: cy holds for both pools (what street lets go, town may still need), dee for town.
    net.kith_ok(0, &["pool", "create", "town", "--as", "ada", "--replicas", "2"]).unwrap();
    for (i, name) in [(2, "cy"), (3, "dee")] {
        let ticket = net.kith_ok(0, &["pool", "invite", "town"]).unwrap();
        net.kith_ok(i, &["pool", "join", ticket.trim(), "--as", name]).unwrap();
        net.kith_ok(i, &["offer", "town", "--storage", "1GiB", "--zone", &format!("t{i}")])
            .unwrap();
    }
    net.wait_for(CONVERGE, "ada to see the offers of both pools", |net| {
        Ok(["street", "town"].iter().all(|p| {
            net.json(0, &["pool", "show", p]).is_ok_and(|v| v["capacity"]["offered"] == 2u64 << 30)
        }))
    })
    .unwrap();
    let stored = |net: &kith_testnet::Testnet, i: usize| -> u64 {
        net.json(i, &["status"]).unwrap()["store"]["bytes"].as_u64().unwrap()
    };
    let bob_before = stored(&net, 1);
    // Three objects: two files and a folder, and a site, all in street.
    let dir = net.dir().join("data");
    fs::create_dir_all(dir.join("photos")).unwrap();
    let files = [
        (dir.join("a.bin"), random_bytes(3 << 20, 91)),
        (dir.join("notes.txt"), text_bytes(200 << 10, 92)),
        (dir.join("photos/p1.jpg"), random_bytes(1 << 20, 93)),
    ];
    for (p, b) in &files {
        write(p, b);
    }
    let mut ids = Vec::new();
    for p in [dir.join("a.bin"), dir.join("notes.txt"), dir.join("photos")] {
        let put = net.json(0, &["put", p.to_str().unwrap(), "--pool", "street"]).unwrap();
        assert_eq!(put["pool"]["complete"], true, "{put}");
        ids.push(put["id"].as_str().unwrap().to_string());
    }
    ids.sort();
    let site = net.dir().join("site");
    fs::create_dir_all(&site).unwrap();
    write(&site.join("index.html"), b"<h1>ada</h1>");
    net.kith_ok(
        0,
        &["site", "publish", site.to_str().unwrap(), "--name", "ada", "--pool", "street"],
    )
    .unwrap();
    net.wait_for(CONVERGE, "bob to hold street's copies", |net| {
        Ok(stored(net, 1) >= bob_before + (2 << 20))
    })
    .unwrap();

    // Town's holder dee is down: the move places nothing it cannot confirm, and releases
    // nothing it did not place.
    net.stop(3).unwrap();
    let first = net.kith(0, &["move", "--from", "street", "--to", "town"]);
    assert!(!first.status.success(), "a move with a holder down claimed success");
    let said = String::from_utf8_lossy(&first.stderr);
    assert!(
        said.contains("holder dee")
            && said.contains("does not answer")
            && said.contains("nothing was moved"),
        "{said}"
    );
    assert_eq!(
        pool_objects(&net, 0, "street").len(),
        4,
        "street lost objects: the site's version and 3"
    );
    net.start(3).unwrap();
    net.kith_ok(0, &["pool", "set", "town", "quota", "4MiB"]).unwrap();
    let holders_up = |net: &mut kith_testnet::Testnet| -> anyhow::Result<bool> {
        Ok(net.json(0, &["pool", "show", "town"])?["replication"]["holders"]
            .as_array()
            .is_some_and(|hs| hs.iter().filter(|h| h["state"] == "up").count() == 2))
    };
    net.wait_for(CONVERGE, "ada's node to hear from dee again", holders_up).unwrap();

    // Stopped the hard way in the middle (once town lists one of ada's objects), then run again.
    let mut cmd = net.cmd(0);
    cmd.args(["move", "--from", "street", "--to", "town"]);
    let mut child = cmd.spawn().unwrap();
    wait_for(CONVERGE, "town to list an object of ada's", || {
        net.json(0, &["pool", "show", "town"])
            .is_ok_and(|v| v["objects"].as_array().is_some_and(|o| !o.is_empty()))
    });
    net.kill(0).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    net.start(0).unwrap();
    // Nothing is missing from both pools at any point.
    let (street, town) = (pool_objects(&net, 0, "street"), pool_objects(&net, 0, "town"));
    for id in &ids {
        assert!(street.contains(id) || town.contains(id), "object {id} is in neither pool");
    }
    net.wait_for(CONVERGE, "ada's node to hear from town's holders again", holders_up).unwrap();
    // Town's quota holds a.bin and the notes, not the photos as well: they stay in street.
    let out = net.kith(0, &["move", "--from", "street", "--to", "town"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("stays in pool street") && said.contains("quota"), "{said}");
    assert!(said.contains("site ada stays published in pool street"), "{said}");
    assert_eq!(pool_objects(&net, 0, "street").len(), 2, "{said}");
    assert_eq!(pool_objects(&net, 0, "town").len(), 2, "{said}");
    net.kith_ok(0, &["pool", "set", "town", "quota", "1GiB"]).unwrap();
    let out = net.kith(0, &["move", "--from", "street", "--to", "town"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("moved 1 object"), "{said}");
    assert!(said.contains("confirmed on 2 of town's holders"), "{said}");
    // Street keeps only the site's version; town has every object, with its copies.
    let street = pool_objects(&net, 0, "street");
    assert_eq!(street.len(), 1, "{street:?}");
    assert!(!ids.contains(&street[0]));
    assert_eq!(pool_objects(&net, 0, "town"), ids);
    net.wait_for(CONVERGE, "town to be fully replicated", |net| {
        Ok(net.json(3, &["pool", "show", "town"])?["replication"]["under_replicated_bytes"] == 0)
    })
    .unwrap();
    // Street's holder bob gives the space back; cy keeps what town needs.
    net.wait_for(CONVERGE, "bob to reclaim what street let go", |net| {
        Ok(stored(net, 1) < bob_before + (1 << 20))
    })
    .unwrap();
    // What street let go, cy still holds for town.
    net.wait_for(CONVERGE, "town to stay fully replicated after street's reclaim", |net| {
        Ok(net.json(3, &["pool", "show", "town"])?["replication"]["under_replicated_bytes"] == 0)
    })
    .unwrap();
    // Running it again has nothing to do.
    let again = net.kith(0, &["move", "--from", "street", "--to", "town"]);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success() && said.contains("nothing to move"), "{said}");

    // With dee gone, ada forgets her own copies and reads them back from cy alone.
    net.stop(3).unwrap();
    let back_dir = net.dir().join("back");
    fs::create_dir_all(&back_dir).unwrap();
    let id_of = |net: &kith_testnet::Testnet, p: &std::path::Path| -> String {
        net.json(0, &["log", p.to_str().unwrap()]).unwrap()[0]["id"].as_str().unwrap().to_string()
    };
    let sources = [dir.join("a.bin"), dir.join("notes.txt"), dir.join("photos")];
    // Their ids, read before `rm --local` forgets them here.
    let src_ids: Vec<String> = sources.iter().map(|src| id_of(&net, src)).collect();
    let check_back = |net: &kith_testnet::Testnet, label: &str| {
        for (src, id) in sources.iter().zip(&src_ids) {
            let back =
                back_dir.join(format!("{label}-{}", src.file_name().unwrap().to_str().unwrap()));
            net.kith_ok(0, &["get", id, "-o", back.to_str().unwrap()]).unwrap();
            let (got, want) = if src.is_dir() {
                (fs::read(back.join("p1.jpg")).unwrap(), fs::read(src.join("p1.jpg")).unwrap())
            } else {
                (fs::read(&back).unwrap(), fs::read(src).unwrap())
            };
            assert!(got == want, "{} came back different ({label})", src.display());
        }
    };
    for id in &src_ids {
        net.kith_ok(0, &["rm", "--local", id]).unwrap();
    }
    check_back(&net, "town");

    // Home: forgotten here again (their chunks stay while town lists them), every object is
    // recorded whole here, then town lets it go.
    for id in &src_ids {
        net.kith_ok(0, &["rm", "--local", id]).unwrap();
    }
    let out = net.kith(0, &["move", "--from", "town", "--to", "home", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(r["objects"], 3, "{r}");
    assert!(pool_objects(&net, 0, "town").is_empty());
    net.stop(1).unwrap();
    net.stop(2).unwrap();
    check_back(&net, "home");
    assert_eq!(net.json(0, &["verify"]).unwrap()["damaged"], false);
}

/// What node `i`'s gateway answers for `http://NAME.local:7780/`, asked from `from`'s namespace.
fn site_page(net: &kith_testnet::Testnet, from: usize, i: usize, name: &str) -> Option<String> {
    let lan = net.lan().unwrap();
    let addr: std::net::SocketAddr = format!("{}:7780", lan.ip(i)).parse().unwrap();
    let host = format!("Host: {name}.local:7780");
    let r = kith_testnet::netns::on_ns_thread(lan.ns(from), move || {
        req(addr, "GET", "/", &[host.as_str()])
    })
    .ok()?;
    (r.status == 200).then(|| String::from_utf8_lossy(&r.body).into_owned())
}

fn holders_out(net: &kith_testnet::Testnet, i: usize, n: usize) -> anyhow::Result<bool> {
    Ok(net.json(i, &["pool", "show", "street"])?["replication"]["holders"]
        .as_array()
        .is_some_and(|hs| hs.iter().filter(|h| h["state"] == "out").count() == n))
}

#[test]
fn two_neighbourhoods_with_no_link_exchange_a_pool_by_drop_files() {
    // Issue 18 item 3: ada's house loses its link to the street; a stick carries the pool.
    use std::time::Duration;
    const CONVERGE: Duration = Duration::from_secs(90);
    let mut net = street(3, kith_testnet::Layout::Namespaces);
    for i in 0..3 {
        net.kith_ok(i, &["offer", "street", "--storage", "1GiB", "--zone", &format!("z{i}")])
            .unwrap();
    }
    net.kith_ok(0, &["pool", "set", "street", "repair_after", "5s"]).unwrap();
    let site = |net: &kith_testnet::Testnet, name: &str, text: &str| {
        let dir = net.dir().join(format!("{name}-{text}"));
        fs::create_dir_all(&dir).unwrap();
        write(&dir.join("index.html"), text.as_bytes());
        dir
    };
    let v1 = site(&net, "bakery", "bakery v1");
    net.kith_ok(0, &["site", "publish", v1.to_str().unwrap(), "--name", "bakery"]).unwrap();
    net.wait_for(CONVERGE, "bob to serve bakery v1", |net| {
        Ok(site_page(net, 2, 1, "bakery").as_deref() == Some("bakery v1"))
    })
    .unwrap();

    // Ada's house is cut off. She stores a letter and publishes v2 there.
    net.lan().unwrap().cut(0).unwrap();
    net.wait_for(CONVERGE, "each side to count the other out", |net| {
        Ok(holders_out(net, 0, 2)? && holders_out(net, 1, 1)?)
    })
    .unwrap();
    let letter = net.dir().join("letter.txt");
    write(&letter, &text_bytes(300 << 10, 7));
    let put = net.kith(0, &["put", letter.to_str().unwrap(), "--pool", "street", "--json"]);
    let put = json(&String::from_utf8_lossy(&put.stdout));
    let letter_id = put["id"].as_str().unwrap().to_string();
    let v2 = site(&net, "bakery", "bakery v2");
    let _ = net.kith(0, &["site", "publish", v2.to_str().unwrap(), "--name", "bakery"]);
    assert_eq!(site_page(&net, 0, 0, "bakery").as_deref(), Some("bakery v2"));
    assert_eq!(site_page(&net, 2, 1, "bakery").as_deref(), Some("bakery v1"));

    // The drop: ada has never applied one from the street, so it carries everything.
    let a1 = net.dir().join("a1.kdrop");
    let made = net.json(0, &["drop", "make", "-o", a1.to_str().unwrap()]).unwrap();
    assert_eq!(made["incremental"], false, "{made}");
    assert_eq!(made["blobs_missing"], 0, "{made}");
    assert!(made["changes"].as_u64().unwrap() > 0 && made["blobs"].as_u64().unwrap() > 0);
    let applied = net.json(1, &["drop", "apply", a1.to_str().unwrap()]).unwrap();
    assert!(applied["changes"].as_u64().unwrap() > 0, "{applied}");
    // The street has the letter (cy hears it from bob over the LAN) and serves v2.
    net.wait_for(CONVERGE, "cy to list ada's letter", |net| {
        Ok(net.json(2, &["pool", "show", "street"])?["objects"]
            .as_array()
            .is_some_and(|os| os.iter().any(|o| o["id"] == letter_id.as_str())))
    })
    .unwrap();
    net.wait_for(CONVERGE, "bob to serve bakery v2", |net| {
        Ok(site_page(net, 2, 1, "bakery").as_deref() == Some("bakery v2"))
    })
    .unwrap();
    net.wait_for(CONVERGE, "the street to hold two copies of everything", |net| {
        Ok(net.json(2, &["pool", "show", "street"])?["replication"]["under_replicated_bytes"] == 0)
    })
    .unwrap();
    // Applying it again changes nothing.
    let again = net.json(1, &["drop", "apply", a1.to_str().unwrap()]).unwrap();
    assert_eq!((again["changes"].as_u64(), again["blobs"].as_u64()), (Some(0), Some(0)));

    // The other way: bob publishes a site; his drop carries only what ada lacks.
    let club = site(&net, "club", "club v1");
    net.kith_ok(1, &["site", "publish", club.to_str().unwrap(), "--name", "club"]).unwrap();
    let b1 = net.dir().join("b1.kdrop");
    let made = net.json(1, &["drop", "make", "-o", b1.to_str().unwrap()]).unwrap();
    assert_eq!(made["incremental"], true, "{made}");
    assert_eq!(made["objects"], 1, "only the club's version is new to ada: {made}");
    // Bad copies of it are refused, and change nothing.
    let bytes = fs::read(&b1).unwrap();
    let cut = net.dir().join("cut.kdrop");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    // A byte of the last blob flipped: only the end's hash can tell.
    let flipped = net.dir().join("flipped.kdrop");
    let mut f = bytes.clone();
    let at = f.len() - 60;
    f[at] ^= 1;
    fs::write(&flipped, &f).unwrap();
    // Re-framed (anyone can recompute the end): a forged signature; the changes backwards.
    let forged = net.dir().join("forged.kdrop");
    reframe(&b1, &forged, |mut es| {
        let c = es.iter_mut().find(|(t, _)| *t == 2).expect("a change");
        c.1[0] ^= 1;
        es
    });
    let backwards = net.dir().join("backwards.kdrop");
    reframe(&b1, &backwards, |es| {
        let (mut changes, rest): (Vec<_>, Vec<_>) = es.into_iter().partition(|(t, _)| *t == 2);
        assert!(changes.len() > 1, "the drop carries one change");
        changes.reverse();
        let mut out = vec![rest[0].clone()];
        out.extend(changes);
        out.extend(rest.into_iter().skip(1));
        out
    });
    // An export is not a drop; ada's own drop is not for ada.
    let export = net.dir().join("ada.kexp");
    net.kith_ok(0, &["export", "-o", export.to_str().unwrap()]).unwrap();
    let heads_before = net.json(0, &["pool", "show", "street"]).unwrap()["members"].clone();
    for (file, why) in [
        (&cut, "truncated"),
        (&flipped, "damaged"),
        (&forged, "signature"),
        (&backwards, "follow changes"),
        (&export, "kith import"),
        (&a1, "made on this node"),
    ] {
        let out = net.kith(0, &["drop", "apply", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{why}: {err}");
    }
    assert_eq!(net.json(0, &["pool", "show", "street"]).unwrap()["members"], heads_before);
    assert_eq!(site_page(&net, 0, 0, "club"), None);
    // Blobs the pool does not reference are not taken (a drop cannot fill a disk with junk).
    let padded = net.dir().join("padded.kdrop");
    let junk = random_bytes(2 << 20, 99);
    reframe(&b1, &padded, |mut es| {
        let mut entry = blake3::hash(&junk).as_bytes().to_vec();
        entry.push(0);
        entry.extend_from_slice(&junk);
        es.push((3, entry));
        es
    });
    let applied = net.json(0, &["drop", "apply", padded.to_str().unwrap()]).unwrap();
    assert!(applied["changes"].as_u64().unwrap() > 0, "{applied}");
    assert_eq!(applied["blobs_skipped"], 1, "{applied}");
    net.wait_for(CONVERGE, "ada to serve the club's site", |net| {
        Ok(site_page(net, 0, 0, "club").as_deref() == Some("club v1"))
    })
    .unwrap();
    // Each side has acknowledged the other's: nothing is left to carry.
    let made = net.json(0, &["drop", "make", "-o", net.dir().join("a2.kdrop").to_str().unwrap()]);
    let made = made.unwrap();
    assert_eq!((made["incremental"].as_bool(), made["objects"].as_u64()), (Some(true), Some(0)));

    // A drop of a pool the street's nodes are not in.
    net.kith_ok(0, &["pool", "create", "attic", "--as", "ada"]).unwrap();
    let attic = net.dir().join("attic.kdrop");
    net.kith_ok(0, &["drop", "make", "--pool", "attic", "-o", attic.to_str().unwrap()]).unwrap();
    let out = net.kith(1, &["drop", "apply", attic.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not in"), "{err}");
}

/// A copy of drop `from` whose entries `(tag, payload)` went through `f`, framed anew (a
/// forger can recompute the end hash: the signatures are what protects a drop).
fn reframe(
    from: &std::path::Path,
    to: &std::path::Path,
    f: impl FnOnce(Vec<(u8, Vec<u8>)>) -> Vec<(u8, Vec<u8>)>,
) {
    use kith_node::store::framed::{FramedReader, FramedWriter};
    let input = fs::File::open(from).unwrap();
    let (mut r, format) = FramedReader::new(input, b"KITHDRP1", 64 << 20).unwrap();
    let mut entries = Vec::new();
    while let Some(e) = r.next_raw().unwrap() {
        entries.push(e);
    }
    let mut w = FramedWriter::new(fs::File::create(to).unwrap(), b"KITHDRP1", format).unwrap();
    for (tag, payload) in f(entries) {
        w.entry(tag, &[&payload]).unwrap();
    }
    w.end().unwrap();
}

#[test]
fn an_interrupted_export_continues_where_it_stopped() {
    let a = Kith::new();
    let src = a.path("photos");
    for i in 0..6 {
        write(&src.join(format!("p{i}.bin")), &random_bytes(400_000, 40 + i));
    }
    a.put(&src);
    let doc = a.path("notes.txt");
    write(&doc, &text_bytes(200_000, 9));
    a.put(&doc);
    let whole = a.path("whole.kexp");
    a.ok(&["export", "-o", whole.to_str().unwrap()]);
    let bytes = fs::read(&whole).unwrap();

    // Interrupted in the middle of an entry (what a crash or Ctrl-C leaves): the same command
    // continues from the last whole entry, and the result is the file an uninterrupted run
    // would have written, byte for byte.
    let out = a.path("me.kexp");
    let partial = a.path(".me.kexp.kith-partial");
    fs::write(&partial, &bytes[..bytes.len() * 3 / 5]).unwrap();
    let e = json(&a.ok(&["export", "-o", out.to_str().unwrap(), "--json"]).stdout);
    assert!(e["resumed_blobs"].as_u64().unwrap() > 0, "nothing was resumed: {e}");
    assert!(!partial.exists());
    assert!(fs::read(&out).unwrap() == bytes, "the continued export differs from a whole one");
    let said = a.ok(&["import", out.to_str().unwrap(), "--json"]);
    assert_eq!(json(&said.stdout)["objects"], 0, "an import of what is here takes in nothing");

    // A partial from before the store changed (a new version since), or another identity's:
    // started over, never continued into a file that says something else.
    let stale = a.path("stale.kexp");
    fs::write(a.path(".stale.kexp.kith-partial"), &bytes[..bytes.len() * 3 / 5]).unwrap();
    write(&doc, &text_bytes(200_000, 10));
    a.put(&doc);
    let e = json(&a.ok(&["export", "-o", stale.to_str().unwrap(), "--json"]).stdout);
    assert_eq!((e["resumed_blobs"].as_u64(), e["objects"].as_u64()), (Some(0), Some(3)), "{e}");
    let stranger = Kith::new();
    stranger.ok(&["init"]);
    let theirs = stranger.path("theirs.kexp");
    fs::write(stranger.path(".theirs.kexp.kith-partial"), &bytes[..bytes.len() / 2]).unwrap();
    let e = json(&stranger.ok(&["export", "-o", theirs.to_str().unwrap(), "--json"]).stdout);
    assert_eq!(e["resumed_blobs"], 0, "{e}");
    // A partial that is not an export at all: started over, and the result reads back.
    let out2 = a.path("again.kexp");
    fs::write(a.path(".again.kexp.kith-partial"), random_bytes(5000, 1)).unwrap();
    let e = json(&a.ok(&["export", "-o", out2.to_str().unwrap(), "--json"]).stdout);
    assert_eq!(e["resumed_blobs"], 0, "{e}");
    let b = same_person(&a);
    let i = json(&b.ok(&["import", out2.to_str().unwrap(), "--json"]).stdout);
    assert_eq!(i["objects"], 3, "{i}");
    let back = b.path("back");
    b.ok(&["get", src.to_str().unwrap(), "-o", back.to_str().unwrap()]);
    assert_eq!(describe(&back), describe(&src));
}
