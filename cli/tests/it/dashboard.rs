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
