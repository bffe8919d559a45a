//! A real browser as a light peer: headless Chromium (Debian's package) in one network
//! namespace, the node in another. The page opens a WebRTC data channel signalled over HTTP,
//! lists the pool's public sites, downloads a file (checked by SHA-256), and uploads one into
//! the node's store with a pairing code.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kith_testnet::netns::{in_ns, on_ns_thread};
use kith_testnet::{Layout, Testnet};
use serde_json::Value;

use crate::util::*;

const OPEN: Duration = Duration::from_secs(60);

/// Headless Chromium in a namespace, killed when dropped.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium(net: &Testnet, ns: &str, url: &str, n: usize) -> Browser {
    let profile = net.dir().join(format!("chromium-{n}"));
    let log = std::fs::File::create(net.dir().join(format!("chromium-{n}.log"))).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "chromium", "--headless", "--no-sandbox", "--disable-gpu"])
        .args(["--no-first-run", "--disable-dev-shm-usage", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("chromium runs (scripts/test installs Debian's chromium)");
    Browser(child)
}

fn reports(net: &Testnet) -> Vec<Value> {
    net.json(0, &["status"]).unwrap_or_default()["browsers"]["reports"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn sha256(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The bytes the page makes for `?upload=...&size=N&seed=S` (xorshift32).
fn pseudo(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    (status, text)
}

/// Node 0 of a testnet of `n` with a pool and a public site `name` of `files`.
fn node_with_site(n: usize, layout: Layout, name: &str, files: &[(&str, &[u8])]) -> Testnet {
    let mut net = testnet(n, layout);
    net.kith_ok(0, &["init"]).unwrap();
    net.start(0).unwrap();
    net.kith_ok(0, &["pool", "create", "street"]).unwrap();
    net.kith_ok(0, &["offer", "street", "--storage", "1GiB"]).unwrap();
    let site = net.dir().join("www");
    std::fs::create_dir_all(&site).unwrap();
    for (path, bytes) in files {
        write(&site.join(path), bytes);
    }
    net.kith_ok(0, &["site", "publish", site.to_str().unwrap(), "--name", name]).unwrap();
    net
}

/// Node 0 in namespace 0 with a public site `name` of `files`; namespace 1 is a phone with a
/// browser and no kith. Returns the net, the phone's namespace and the node's HTTP address.
fn node_and_phone(name: &str, files: &[(&str, &[u8])]) -> (Testnet, String, SocketAddr) {
    let net = node_with_site(2, Layout::Namespaces, name, files);
    let phone = net.lan().unwrap().ns(1).to_string();
    // Chromium gathers no candidates without a default route (even one that leads nowhere).
    in_ns(&phone, "ip", &["route", "add", "default", "via", "10.99.0.1"]).unwrap();
    (net, phone, "10.99.0.1:7780".parse().unwrap())
}

#[test]
fn a_browser_downloads_a_public_file_and_uploads_with_a_pairing_code() {
    let big = random_bytes(1 << 20, 5);
    let (mut net, phone, node) =
        node_and_phone("bakery", &[("index.html", b"<h1>Bakery</h1>"), ("bread.bin", &big)]);

    // Download: the page lists the sites and fetches a file over the channel.
    let url = format!("http://{node}/kith/?get=bakery/bread.bin");
    let b = chromium(&net, &phone, &url, 1);
    let mut got = Value::Null;
    net.wait_for(OPEN, "the browser to report its download", |net| {
        got = reports(net).into_iter().find(|r| r["kind"] == "download").unwrap_or_default();
        Ok(!got.is_null())
    })
    .unwrap();
    drop(b);
    assert_eq!(got["ok"], true, "{got}");
    assert_eq!(got["bytes"], big.len() as u64, "{got}");
    assert_eq!(got["sha256"].as_str().unwrap(), sha256(&big), "the browser's bytes differ");
    assert!(got["listed"].as_array().unwrap().iter().any(|s| s == "bakery"), "{got}");

    // Upload with a pairing code: the object lands in the node's store intact.
    let code = net.kith_ok(0, &["pair"]).unwrap().trim().to_string();
    let url = format!("http://{node}/kith/?upload={code}&size=300000&seed=7&name=from-phone.bin");
    let b = chromium(&net, &phone, &url, 2);
    net.wait_for(OPEN, "the browser to report its upload", |net| {
        got = reports(net).into_iter().find(|r| r["kind"] == "upload").unwrap_or_default();
        Ok(!got.is_null())
    })
    .unwrap();
    drop(b);
    assert_eq!(got["ok"], true, "{got}");
    let id = got["id"].as_str().unwrap().to_string();
    let back = net.dir().join("uploaded.bin");
    net.kith_ok(0, &["get", &id, "-o", back.to_str().unwrap()]).unwrap();
    assert!(std::fs::read(&back).unwrap() == pseudo(300_000, 7), "the upload arrived changed");

    // A wrong pairing code is refused, clearly.
    let _ = net.kith_ok(0, &["pair"]).unwrap();
    let url = format!("http://{node}/kith/?upload=wrongcode&size=1000&seed=1");
    let b = chromium(&net, &phone, &url, 3);
    net.wait_for(OPEN, "the browser to report the refusal", |net| {
        got = reports(net).into_iter().filter(|r| r["kind"] == "upload").nth(1).unwrap_or_default();
        Ok(!got.is_null())
    })
    .unwrap();
    drop(b);
    assert_eq!(got["ok"], false, "{got}");
    assert!(got["error"].as_str().unwrap().contains("wrong pairing code"), "{got}");

    // Malformed and oversized offers get clear errors; the node stays up.
    let (status, text) =
        on_ns_thread(&phone, move || post(node, "/kith/rtc", b"not json")).unwrap();
    assert_eq!(status, 400, "{text}");
    let bad = br#"{"type":"offer","sdp":"v=0\r\nnonsense"}"#;
    let (status, text) = on_ns_thread(&phone, move || post(node, "/kith/rtc", bad)).unwrap();
    assert_eq!(status, 400, "{text}");
    let huge = vec![b'x'; 200 << 10];
    let (status, _) = on_ns_thread(&phone, move || post(node, "/kith/rtc", &huge)).unwrap();
    assert_eq!(status, 413);
    assert!(net.json(0, &["status"]).is_ok(), "the node went down");
}

fn sessions(net: &Testnet) -> u64 {
    net.json(0, &["status"]).unwrap_or_default()["browsers"]["sessions"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

#[test]
fn browsers_that_vanish_or_never_connect_leave_nothing_behind() {
    let huge = random_bytes(200 << 20, 9);
    let (mut net, phone, node) = node_and_phone("films", &[("huge.bin", &huge)]);

    // A browser that disappears in the middle of a 200 MiB download.
    let b = chromium(&net, &phone, &format!("http://{node}/kith/?get=films/huge.bin"), 1);
    net.wait_for(OPEN, "the download to begin", |net| {
        let served = net.json(0, &["status"])?["browsers"]["sessions"].as_u64().unwrap_or(0);
        Ok(served == 1)
    })
    .unwrap();
    drop(b);
    net.wait_for(
        OPEN,
        "the vanished browser's session to be dropped",
        |net| Ok(sessions(net) == 0),
    )
    .unwrap();

    // An offer whose connection never completes (the phone's UDP is blocked).
    let rules = "table inet kith_test {\n  chain out {\n    type filter hook output priority 0;\n    udp dport != 53 drop\n  }\n}\n";
    let file = net.dir().join("block-udp.nft");
    std::fs::write(&file, rules).unwrap();
    in_ns(&phone, "nft", &["-f", file.to_str().unwrap()]).unwrap();
    let b = chromium(&net, &phone, &format!("http://{node}/kith/"), 2);
    net.wait_for(OPEN, "the offer to be answered", |net| Ok(sessions(net) == 1)).unwrap();
    net.wait_for(OPEN, "the unfinished session to be dropped", |net| Ok(sessions(net) == 0))
        .unwrap();
    drop(b);
    assert!(net.json(0, &["status"]).is_ok(), "the node went down");
}

#[test]
fn a_client_that_breaks_the_channel_protocol_gets_clear_errors() {
    // A Rust WebRTC client (what a node uses to reach another's page) on loopback, free to send
    // what a browser would refuse to.
    let mut net =
        node_with_site(1, Layout::Loopback, "bakery", &[("index.html", b"<h1>Bakery</h1>")]);
    let http: SocketAddr =
        net.json(0, &["status"]).unwrap()["http"].as_str().unwrap().parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answers: Vec<Value> = rt.block_on(async move {
        use kith_hosting::browser::connect_http;
        use webrtc::data_channel::DataChannelEvent;
        let local = "127.0.0.1".parse().unwrap();
        let (pc, dc) = connect_http(http, local).await.unwrap();
        let mut out = Vec::new();
        let next = async || loop {
            match tokio::time::timeout(Duration::from_secs(20), dc.poll()).await {
                Ok(Some(DataChannelEvent::OnMessage(m))) => {
                    return serde_json::from_slice::<Value>(&m.data).unwrap_or_default();
                }
                Ok(Some(DataChannelEvent::OnClose)) | Ok(None) => {
                    return serde_json::json!({ "closed": true });
                }
                Err(_) => return serde_json::json!({ "timeout": true }),
                Ok(Some(_)) => {}
            }
        };
        for req in [
            "not json",
            r#"{"op":"teleport"}"#,
            r#"{"op":"get","site":"bakery","path":"nope"}"#,
            r#"{"op":"upload","code":"guess","name":"x","len":3}"#,
            r#"{"op":"list"}"#,
        ] {
            dc.send_text(req).await.unwrap();
            out.push(next().await);
        }
        // Bytes with no upload open, then a message over 64 KiB: the channel is closed.
        dc.send(bytes::BytesMut::from(&b"abc"[..])).await.unwrap();
        out.push(next().await);
        // A message over the node's advertised max-message-size (64 KiB) is refused by the
        // sender's own stack; the channel goes on working.
        let sent = dc.send(bytes::BytesMut::from(&vec![0u8; 100 << 10][..])).await;
        out.push(serde_json::json!({ "send": format!("{sent:?}") }));
        dc.send_text(r#"{"op":"list"}"#).await.unwrap();
        out.push(next().await);
        let _ = pc.close().await;
        out
    });
    let err = |i: usize| answers[i]["error"].as_str().unwrap_or("").to_string();
    assert!(err(0).contains("not a JSON request"), "{answers:?}");
    assert!(err(1).contains("unknown request"), "{answers:?}");
    assert!(err(2).contains("no file"), "{answers:?}");
    assert!(err(3).contains("no pairing code is open"), "{answers:?}");
    assert_eq!(answers[4]["sites"][0]["name"], "bakery", "{answers:?}");
    assert!(err(5).contains("no upload open"), "{answers:?}");
    assert!(answers[6]["send"].as_str().unwrap().contains("TooLarge"), "{answers:?}");
    assert_eq!(answers[7]["op"], "list", "the channel broke: {answers:?}");
    net.wait_for(OPEN, "the session to be gone", |net| {
        Ok(net.json(0, &["status"])?["browsers"]["sessions"] == 0)
    })
    .unwrap();
}
