//! The dashboard's server side: its token, what it refuses, and that its actions are the CLI's
//! typed requests with the CLI's rules.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use kith_testnet::Layout;

use crate::util::*;

/// A POST of `body` to the dashboard API with the given header lines.
fn post(addr: SocketAddr, body: &str, headers: &[&str]) -> Resp {
    let mut r = format!(
        "POST /kith/api/v1/run HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body);
    raw(addr, r.as_bytes())
}

fn json(r: &Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{r:?}"))
}

#[test]
fn the_dashboard_answers_only_its_token_and_runs_the_clis_requests_with_the_clis_rules() {
    let mut net = testnet(1, Layout::Loopback);
    net.kith_ok(0, &["init"]).unwrap();
    net.start(0).unwrap();
    let d = net.json(0, &["dashboard"]).unwrap();
    let local = d["local"].as_str().unwrap().to_string();
    let token = local.split("#t=").nth(1).unwrap().to_string();
    assert_eq!(token.len(), 64);
    let addr = http(&net, 0);
    assert!(local.starts_with(&format!("http://127.0.0.1:{}/kith/dashboard#t=", addr.port())));
    let auth = format!("Authorization: Bearer {token}");
    let json_ct = "Content-Type: application/json";

    // The page carries no secret and runs only its own script.
    let page = get(addr, "/kith/dashboard");
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!String::from_utf8_lossy(&page.body).contains(&token));
    assert_eq!(get(addr, "/kith/dashboard.js").status, 200);

    // No token, a wrong one: 401, nothing runs.
    let status = r#"{"op":"status"}"#;
    let r = post(addr, status, &[json_ct]);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("www-authenticate").is_some());
    let wrong = format!("Authorization: Bearer {}", "0".repeat(64));
    assert_eq!(post(addr, status, &[json_ct, &wrong]).status, 401);
    assert_eq!(req(addr, "GET", "/kith/api/v1/events", &[]).status, 401);
    // With it: the node's status, as `kith status --json` has it.
    let r = post(addr, status, &[json_ct, &auth]);
    assert_eq!(r.status, 200, "{r:?}");
    let node = net.json(0, &["status"]).unwrap()["node"].clone();
    assert_eq!(json(&r)["result"]["node"], node);

    // Another page cannot act: its origin is refused even with the token (a browser would not
    // send the header cross-origin without a preflight the node never grants), and a form's
    // content type is refused.
    let evil = "Origin: http://evil.example";
    assert_eq!(post(addr, status, &[json_ct, &auth, evil]).status, 403);
    assert_eq!(
        post(addr, status, &[&auth, "Content-Type: application/x-www-form-urlencoded"]).status,
        415
    );
    let own = format!("Origin: http://{addr}");
    assert_eq!(post(addr, status, &[json_ct, &auth, &own]).status, 200);

    // Requests that name paths on the node are the command line's only.
    let put = r#"{"op":"put","path":"/etc/passwd"}"#;
    let r = post(addr, put, &[json_ct, &auth]);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(!net.kith_ok(0, &["ls"]).unwrap().contains("passwd"));
    // Malformed and oversized bodies.
    assert_eq!(post(addr, "{not json", &[json_ct, &auth]).status, 400);

    // An action, and the rules refusing one with the CLI's own words.
    let create = r#"{"op":"pool","pool_op":"create","name":"street","display":"ada"}"#;
    let r = post(addr, create, &[json_ct, &auth]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(net.kith_ok(0, &["pool", "ls"]).unwrap().contains("street"));
    let bad = r#"{"op":"pool","pool_op":"set","pool":"street","key":"replicas","value":"0"}"#;
    let r = post(addr, bad, &[json_ct, &auth]);
    assert_eq!(r.status, 422, "{r:?}");
    let said = json(&r)["error"].as_str().unwrap().to_string();
    let cli = net.kith(0, &["pool", "set", "street", "replicas", "0"]);
    let cli_err = String::from_utf8_lossy(&cli.stderr);
    assert!(!cli.status.success() && cli_err.contains(&said), "{said} vs {cli_err}");
    let r = post(
        addr,
        r#"{"op":"pool","pool_op":"invite","pool":"street","expires":"1h","uses":1}"#,
        &[json_ct, &auth],
    );
    assert!(json(&r)["result"]["ticket"].as_str().unwrap().starts_with("kithpool1"), "{r:?}");

    // Live updates: the first event comes at once and holds the node's state.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET /kith/api/v1/events HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // One whole event: its data line and the blank line after it (the body is chunked).
    let whole = |t: &str| t.find("data: ").is_some_and(|i| t[i..].contains("\n\n"));
    while !whole(&String::from_utf8_lossy(&got)) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("text/event-stream") && text.contains("event: state"), "{text}");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let state: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(state["status"]["node"], node);
    assert_eq!(state["pools"][0]["name"], "street", "{state}");
    drop(s);

    // A QR code of a ticket, the statement as CSV, a folder published: with the token only.
    let qr_req = |headers: &[&str]| {
        let body = r#"{"text":"kithpool1abc"}"#;
        let mut r = format!(
            "POST /kith/api/v1/qr HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for h in headers {
            r.push_str(&format!("{h}\r\n"));
        }
        raw(addr, format!("{r}\r\n{body}").as_bytes())
    };
    assert_eq!(qr_req(&[json_ct]).status, 401);
    let r = qr_req(&[json_ct, &auth]);
    assert_eq!((r.status, r.header("content-type")), (200, Some("image/svg+xml")), "{r:?}");
    assert!(String::from_utf8_lossy(&r.body).starts_with("<?xml"), "{r:?}");
    assert_eq!(req(addr, "GET", "/kith/api/v1/statement.csv?pool=street", &[]).status, 401);
    // Nothing recorded yet this month: the CLI's refusal, in its words (the story below reads
    // a statement with lines).
    let r = req(addr, "GET", "/kith/api/v1/statement.csv?pool=street", &[&auth]);
    assert_eq!(r.status, 422, "{r:?}");
    let cli = net.kith(0, &["ledger", "statement", "--pool", "street"]);
    let said = String::from_utf8_lossy(&r.body).trim().to_string();
    assert!(String::from_utf8_lossy(&cli.stderr).contains(&said), "{said}");
    let upload = |path: &str, data: &[u8], headers: &[&str]| {
        let mut body = (path.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(path.as_bytes());
        body.extend_from_slice(&(data.len() as u64).to_le_bytes());
        body.extend_from_slice(data);
        let mut r = format!(
            "POST /kith/api/v1/publish?pool=street&name=bakery HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for h in headers {
            r.push_str(&format!("{h}\r\n"));
        }
        let mut bytes = format!("{r}\r\n").into_bytes();
        bytes.extend_from_slice(&body);
        raw(addr, &bytes)
    };
    assert_eq!(upload("index.html", b"<h1>hi</h1>", &[]).status, 401);
    assert_eq!(upload("index.html", b"<h1>hi</h1>", &[&auth, evil]).status, 403);
    let r = upload("../../escape.html", b"x", &[&auth]);
    assert_eq!(r.status, 422, "{r:?}");
    assert!(json(&r)["error"].as_str().unwrap().contains("not a plain relative path"), "{r:?}");
    assert!(!net.dir().join("escape.html").exists());
    net.kith_ok(0, &["offer", "--storage", "1GiB"]).unwrap();
    let r = upload("index.html", b"<h1>hi</h1>", &[&auth]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(json(&r)["result"]["version"], 1, "{r:?}");
    let served = get(addr, "/s/bakery/");
    assert_eq!(served.body, b"<h1>hi</h1>", "{served:?}");
    let leftovers =
        std::fs::read_dir(net.nodes[0].home.join("tmp")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "the uploaded folder is removed after publishing");

    // A new token: the old address stops working at once.
    let d2 = net.json(0, &["dashboard", "--new-token"]).unwrap();
    let token2 = d2["local"].as_str().unwrap().split("#t=").nth(1).unwrap().to_string();
    assert_ne!(token2, token);
    assert_eq!(post(addr, status, &[json_ct, &auth]).status, 401);
    let auth2 = format!("Authorization: Bearer {token2}");
    assert_eq!(post(addr, status, &[json_ct, &auth2]).status, 200);
    // The control token works from this machine.
    let control = std::fs::read_to_string(net.nodes[0].home.join("control.token")).unwrap();
    let by_control = format!("Authorization: Bearer {}", control.trim());
    assert_eq!(post(addr, status, &[json_ct, &by_control]).status, 200);
}

/// Headless Chromium (Debian's) loads the page with `--dump-dom`: the DOM it built, after
/// `budget_ms` of the page's own time.
fn chromium_dom(dir: &std::path::Path, url: &str, budget_ms: u32) -> String {
    let out = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .args([
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
        ])
        .arg(format!("--user-data-dir={}", dir.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(["--dump-dom", url])
        .output()
        .expect("chromium runs (scripts/test installs Debian's chromium)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_real_browser_shows_the_live_dashboard_with_the_token_and_nothing_without_it() {
    let mut net = testnet(2, Layout::Loopback);
    for i in 0..2 {
        net.kith_ok(i, &["init"]).unwrap();
    }
    net.start_all().unwrap();
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada"]).unwrap();
    net.kith_ok(0, &["offer", "--storage", "1GiB"]).unwrap();
    let site = net.dir().join("www");
    write(&site.join("index.html"), b"<h1>Bakery</h1>");
    net.kith_ok(0, &["site", "publish", site.to_str().unwrap(), "--name", "bakery"]).unwrap();
    let url = net.json(0, &["dashboard"]).unwrap()["local"].as_str().unwrap().to_string();
    let node = net.json(0, &["status"]).unwrap()["node"].as_str().unwrap().to_string();
    let peer = net.json(1, &["status"]).unwrap()["node"].as_str().unwrap().to_string();

    let dom = chromium_dom(&net.dir().join("chromium-1"), &url, 8000);
    // The page fetched the node's state over its live stream and drew it.
    assert!(dom.contains("data-updates=\""), "the page drew no state: {dom}");
    assert!(dom.contains(&node), "{dom}");
    assert!(dom.contains(&peer[..16]), "the peers page lists node 1: {dom}");
    assert!(dom.contains("<td>street</td>"), "{dom}");
    // The ledger and the sites, drawn from the same typed API.
    assert!(dom.contains("<h3>street, "), "the ledger page: {dom}");
    assert!(dom.contains("<td>ada</td>"), "ada's row in the ledger: {dom}");
    assert!(dom.contains("<td>bakery</td>"), "the sites page: {dom}");
    assert!(dom.contains("id=\"login\" class=\"error\" hidden"), "{dom}");

    // A pool's page (`?pool=`): its members, replication, and the forms of its actions.
    let pool_url = url.replacen("/kith/dashboard#", "/kith/dashboard?pool=street#", 1);
    let dom = chromium_dom(&net.dir().join("chromium-3"), &pool_url, 8000);
    assert!(dom.contains("<h3>Pool street</h3>"), "{dom}");
    assert!(dom.contains("<td>ada</td><td>admin</td><td>active</td>"), "{dom}");
    for action in ["offer storage", "set", "invite"] {
        assert!(dom.contains(&format!(">{action}</button>")), "{action}: {dom}");
    }
    assert!(dom.contains("under-replicated"), "{dom}");

    // Without the token the page says how to get in, and shows nothing of the node.
    let bare = url.split('#').next().unwrap();
    let dom = chromium_dom(&net.dir().join("chromium-2"), bare, 4000);
    assert!(!dom.contains(&node), "{dom}");
    assert!(!dom.contains("id=\"login\" class=\"error\" hidden"), "the login note shows: {dom}");
}

/// Reads `street`'s page on the dashboard the browser has open, clicking "show" again until
/// the page's text satisfies `cond` (the pool page is drawn at a click, not live).
fn pool_page_until(
    b: &kith_testnet::webdriver::Browser,
    limit: Duration,
    what: &str,
    cond: impl Fn(&str) -> bool,
) -> String {
    let t = std::time::Instant::now();
    loop {
        b.click("button[data-act=show][data-pool=street]").unwrap();
        let text = b
            .wait_text("#pool", Duration::from_secs(20), "the pool's page", |t| {
                t.contains("Pool street")
            })
            .unwrap();
        // Table cells come tab-separated: one space between words.
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if cond(&text) {
            return text;
        }
        assert!(t.elapsed() < limit, "waited {limit:?} for {what}; the page reads:\n{text}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The number in `text` after `before` (such as "3" in "… 3 blobs fetched").
fn number_before(text: &str, after: &str) -> u64 {
    let at = text.find(after).unwrap_or_else(|| panic!("no `{after}` in {text}"));
    text[..at].split_whitespace().last().and_then(|w| w.parse().ok()).unwrap_or(0)
}

/// The whole story in a real browser, as the admin of a pool of three nodes on a LAN (network
/// namespaces, mDNS) would live it: she opens the dashboard with its token, sees her two
/// neighbours, invites two members (a ticket and its QR code; each joins with the ticket on
/// their own node), publishes a folder as a site (served by a neighbour's node at once), loses
/// a node and watches the survivors repair; a page of another origin that tries to change her
/// pool, even holding a leaked token, changes nothing.
#[test]
fn a_person_runs_a_three_node_pool_from_the_dashboard_in_a_real_browser() {
    use kith_testnet::webdriver::Browser;
    let long = Duration::from_secs(60);
    let mut net = testnet(3, Layout::Namespaces);
    for i in 0..3 {
        net.kith_ok(i, &["init"]).unwrap();
    }
    net.start_all().unwrap();
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada", "--replicas", "2"]).unwrap();
    net.kith_ok(0, &["pool", "set", "street", "repair_after", "5s"]).unwrap();
    net.kith_ok(0, &["pool", "set", "street", "record_every", "5s"]).unwrap();
    net.kith_ok(0, &["offer", "--storage", "1GiB", "--zone", "z0"]).unwrap();
    let shots = std::env::var_os("KITH_SCREENSHOTS").map(std::path::PathBuf::from);
    let shot = |b: &kith_testnet::webdriver::Browser, name: &str| {
        if let Some(dir) = &shots {
            b.screenshot(&dir.join(format!("dashboard-{name}.png"))).unwrap();
        }
    };
    let ids: Vec<String> = (0..3).map(|i| net.id(i).unwrap()).collect();
    let dash = |net: &kith_testnet::Testnet, i: usize| -> String {
        let v = net.json(i, &["dashboard"]).unwrap();
        let lan = v["lan"].as_array().unwrap();
        let ip = net.lan().unwrap().ip(i).to_string();
        lan.iter()
            .filter_map(|u| u.as_str())
            .find(|u| u.contains(&ip))
            .unwrap_or_else(|| panic!("no LAN address of node {i} in {v}"))
            .to_string()
    };
    let url = dash(&net, 0);
    let ns0 = net.lan().unwrap().ns(0).to_string();
    let b = Browser::start(Some(&ns0), &net.dir().join("browser")).unwrap();

    // In with the token; the first page is this node.
    b.goto(&url).unwrap();
    if let Err(e) = b.wait_text("#node", long, "this node's id", |t| t.contains(&ids[0])) {
        panic!("{e}; {url}; the page: {}", b.text("body").unwrap());
    }
    assert!(b.text("#login").unwrap().is_empty(), "the login note stays hidden");

    // Peers: both neighbours, found on the LAN, with a round trip.
    b.click("nav button[data-page=peers]").unwrap();
    let peers = b
        .wait_text("#peers", long, "both neighbours reachable with a round trip", |t| {
            t.matches("reachable").count() == 2 && t.matches(" ms").count() >= 2
        })
        .unwrap();
    for id in &ids[1..] {
        assert!(peers.contains(&id[..16]), "{peers}");
    }
    shot(&b, "peers");

    // Pairing a phone's browser: a code, and the node's page with it as a QR code.
    b.click("nav button[data-page=node]").unwrap();
    b.click("#pair").unwrap();
    let code = b.wait_text("#pair-code", long, "a pairing code", |t| !t.is_empty()).unwrap();
    let link = b.text("#pair-url").unwrap();
    assert!(link.ends_with(&format!("/kith/#pair={code}")), "{link}");
    let qr = b
        .run("const i = document.querySelector('#pairing img.qr'); return i && i.complete ? i.naturalWidth : 0;", serde_json::json!([]))
        .unwrap();
    assert!(qr.as_u64().unwrap_or(0) >= 200, "the pairing QR code is drawn: {qr}");
    shot(&b, "node");
    b.click("nav button[data-page=peers]").unwrap();

    // Invitations: a ticket and its QR code at a click; each new member joins with it on their
    // own node (the ticket is the admin's acceptance: pools join by invitation).
    b.click("nav button[data-page=pools]").unwrap();
    let mut last = String::new();
    for (i, name) in [(1, "bob"), (2, "cy")] {
        b.click("button[data-act=invite][data-pool=street]").unwrap();
        let ticket = b
            .wait_text("#ticket", long, "a new ticket", |t| t.starts_with("kith") && t != last)
            .unwrap()
            .trim()
            .to_string();
        let qr = b
            .run("const i = document.querySelector('#pool img.qr'); return i && i.complete ? i.naturalWidth : 0;", serde_json::json!([]))
            .unwrap();
        assert!(qr.as_u64().unwrap_or(0) >= 200, "the ticket's QR code is drawn: {qr}");
        net.kith_ok(i, &["pool", "join", &ticket, "--as", name]).unwrap();
        last = ticket;
        net.kith_ok(i, &["offer", "--storage", "1GiB", "--zone", &format!("z{i}")]).unwrap();
    }
    let page = pool_page_until(&b, long, "bob and cy as active members", |t| {
        t.contains("bob member active") && t.contains("cy member active")
    });
    assert!(page.contains("ada admin active"), "{page}");
    shot(&b, "pools");

    // A site from files picked on the page (a folder dropped on it goes the same way).
    let www = net.dir().join("www");
    write(&www.join("index.html"), b"<h1>Bakery of the street</h1>");
    write(&www.join("style.css"), b"h1 { color: brown }");
    b.click("nav button[data-page=sites]").unwrap();
    b.type_into("#publish input[name=site]", "bakery").unwrap();
    let picked =
        format!("{}\n{}", www.join("index.html").display(), www.join("style.css").display());
    b.type_into("#publish-files", &picked).unwrap();
    let done = b
        .wait_text("#publish-result", long, "the site published", |t| {
            t.starts_with("published") || t.contains("error") || t.contains("cannot")
        })
        .unwrap();
    assert!(done.starts_with("published bakery version 1: 2 files"), "{done}");
    b.wait_text("#sites", long, "the site listed", |t| t.contains("bakery")).unwrap();
    shot(&b, "sites");
    // Served by bob's node, over the LAN.
    let on_bob = format!("http://{}:7780/s/bakery/", net.lan().unwrap().ip(1));
    let t = std::time::Instant::now();
    loop {
        b.goto(&on_bob).unwrap();
        if b.text("h1").unwrap() == "Bakery of the street" {
            break;
        }
        assert!(
            t.elapsed() < long,
            "bob's node does not serve the site: {}",
            b.text("body").unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A second version dropped on the page (files made in the page: ChromeDriver cannot drag
    // from the disk, so the test dispatches the drop a person's drag makes).
    b.goto(&url).unwrap();
    b.click("nav button[data-page=sites]").unwrap();
    b.type_into("#publish input[name=site]", "bakery").unwrap();
    b.run(
        "const dt = new DataTransfer();
         dt.items.add(new File(['<h1>Bakery, now with bread</h1>'], 'index.html', { type: 'text/html' }));
         const zone = document.getElementById('drop');
         zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));",
        serde_json::json!([]),
    )
    .unwrap();
    let done = b
        .wait_text("#publish-result", long, "the dropped version published", |t| {
            t.contains("version 2") || t.contains("error") || t.contains("cannot")
        })
        .unwrap();
    assert!(done.starts_with("published bakery version 2: 1 files"), "{done}");
    let t = std::time::Instant::now();
    loop {
        b.goto(&on_bob).unwrap();
        if b.text("h1").unwrap() == "Bakery, now with bread" {
            eprintln!("version 2 served by bob's node {:?} after it was published", t.elapsed());
            break;
        }
        assert!(
            t.elapsed() < long,
            "bob's node serves an old version: {}",
            b.text("body").unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A node is lost: the survivors take its share over, and the page shows them fetching.
    let data = net.dir().join("photos.bin");
    write(&data, &random_bytes(6 << 20, 7));
    net.kith_ok(0, &["put", data.to_str().unwrap(), "--pool", "street"]).unwrap();
    let show = net.json(0, &["pool", "show", "street"]).unwrap();
    let holds = |i: usize| {
        show["replication"]["holders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["node"] == ids[i].as_str())
            .map(|h| h["assigned_bytes"].as_u64().unwrap())
            .unwrap_or(0)
    };
    let victim = if holds(1) >= holds(2) { 1 } else { 2 };
    let survivor = 3 - victim;
    assert!(holds(victim) > 0, "{show}");
    let fetched = |net: &kith_testnet::Testnet, i: usize| {
        net.json(i, &["pool", "show", "street"]).unwrap()["repair"]["repaired_blobs"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = [fetched(&net, 0), fetched(&net, survivor)];
    net.kill(victim).unwrap();
    let survivor_url = dash(&net, survivor);
    let t = std::time::Instant::now();
    let mut seen = [0u64; 2];
    loop {
        for (k, u) in [&url, &survivor_url].into_iter().enumerate() {
            b.goto(u).unwrap();
            b.click("nav button[data-page=pools]").unwrap();
            let page = pool_page_until(&b, long, "the repair line", |t| {
                t.contains("blobs fetched since it started")
            });
            seen[k] = number_before(&page, "blobs fetched since it started");
        }
        if seen[0] > before[0] || seen[1] > before[1] {
            eprintln!(
                "node {victim} killed: fetched by repair {before:?} -> {seen:?} (node 0, node {survivor})"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no repair seen: {seen:?} (before {before:?})"
        );
    }
    b.goto(&url).unwrap();
    b.click("nav button[data-page=pools]").unwrap();
    pool_page_until(&b, Duration::from_secs(120), "full replication again", |t| {
        t.contains("under-replicated\t0 B (0 blobs)")
            || t.contains("under-replicated 0 B (0 blobs)")
    });
    shot(&b, "repair");

    // The ledger: this month per member, months as charts, the statement as the CLI's CSV.
    b.click("nav button[data-page=ledger]").unwrap();
    let t = std::time::Instant::now();
    loop {
        // Drawn at load: reload until the first records are in.
        b.goto(&url).unwrap();
        b.click("nav button[data-page=ledger]").unwrap();
        let text = b.text("#ledger").unwrap();
        if text.contains("bob") && text.contains("cy") {
            break;
        }
        assert!(t.elapsed() < long, "the ledger lists no members: {text}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let charts = b
        .run("return document.querySelectorAll('#ledger svg.chart').length", serde_json::json!([]))
        .unwrap();
    assert_eq!(charts.as_u64(), Some(2), "held and served, month by month");
    let statement = || {
        b.run_async(
            "const done = arguments[arguments.length - 1];
             fetch('/kith/api/v1/statement.csv?pool=street', { headers: { Authorization: 'Bearer ' + sessionStorage.getItem('kith-token') } })
               .then((r) => r.text()).then(done, (e) => done('failed: ' + e));",
            serde_json::json!([]),
        )
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_string()
    };
    // Usage goes into the ledger every record_every (5 s here): until then the statement
    // says nothing was recorded.
    let t = std::time::Instant::now();
    let mut csv = statement();
    while !csv.starts_with("pool,period,member,name,") {
        assert!(t.elapsed() < long, "no statement: {csv}");
        std::thread::sleep(Duration::from_millis(500));
        csv = statement();
    }
    for name in ["ada", "bob", "cy"] {
        assert!(csv.contains(&format!(",{name},")), "{name} in the statement: {csv}");
    }
    shot(&b, "ledger");

    // Another origin (a page on ada's LAN that learnt her token) cannot act on the node: the
    // browser refuses its header without a CORS grant, and the node refuses its origin.
    let token = url.split("#t=").nth(1).unwrap().to_string();
    let api = format!("http://{}:7780/kith/api/v1/run", net.lan().unwrap().ip(0));
    let evil = format!(
        r#"<!doctype html><p id="out">…</p><script>
const body = JSON.stringify({{ op: "pool", pool_op: "set", pool: "street", key: "replicas", value: "1" }});
const out = [];
fetch("{api}", {{ method: "POST", headers: {{ "Authorization": "Bearer {token}", "Content-Type": "application/json" }}, body }})
  .then((r) => out.push("cors:" + r.status), (e) => out.push("cors:refused"))
  .then(() => fetch("{api}", {{ method: "POST", mode: "no-cors", headers: {{ "Content-Type": "text/plain" }}, body }}))
  .then((r) => out.push("no-cors:" + r.type), (e) => out.push("no-cors:refused"))
  .then(() => {{ document.getElementById("out").textContent = out.join(" "); }});
</script>"#
    );
    let ip0 = net.lan().unwrap().ip(0);
    let listener = kith_testnet::netns::on_ns_thread(&ns0, move || {
        std::net::TcpListener::bind((ip0, 8088)).unwrap()
    })
    .unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{evil}",
                evil.len()
            );
        }
    });
    b.goto(&format!("http://{ip0}:8088/")).unwrap();
    let out = b.wait_text("#out", long, "both attempts", |t| t.contains("no-cors:")).unwrap();
    eprintln!("another origin's attempts: {out}");
    assert!(out.contains("cors:refused"), "the browser sent the token cross-origin: {out}");
    let replicas =
        net.json(0, &["pool", "show", "street"]).unwrap()["charter"]["replicas"].as_u64();
    assert_eq!(replicas, Some(2), "another origin changed the pool ({out})");
}
