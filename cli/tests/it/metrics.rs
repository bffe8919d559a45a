//! `kith up --metrics`: Prometheus figures, served only when asked, that move with what the node
//! does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use kith_testnet::Layout;

use crate::util::*;

/// One scrape: each sample (name with its labels) and its value. The body must be OpenMetrics
/// text: `# HELP`/`# TYPE` lines, samples, `# EOF` last.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample `{line}`"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("value of `{line}`"));
        assert!(out.insert(name.to_string(), v).is_none(), "`{name}` twice");
    }
    out
}

fn at(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    *m.get(name).unwrap_or_else(|| panic!("no `{name}` in {:#?}", m.keys().collect::<Vec<_>>()))
}

#[test]
fn metrics_are_served_only_when_asked_and_move_with_what_the_node_does() {
    let mut net = testnet(2, Layout::Loopback);
    for i in 0..2 {
        net.kith_ok(i, &["init"]).unwrap();
    }
    net.nodes[0].up_args = vec!["--metrics".into(), "127.0.0.1:0".into()];
    net.start_all().unwrap();

    // Only the node that was asked serves them; `kith status` says where.
    assert!(net.json(1, &["status"]).unwrap().get("metrics").is_none());
    let url = net.json(0, &["status"]).unwrap()["metrics"].as_str().unwrap().to_string();
    let addr: SocketAddr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{url}"))
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert!(net.kith_ok(0, &["status"]).unwrap().contains(&url));
    assert_eq!(get(addr, "/").status, 404);
    assert_ne!(req(addr, "POST", "/metrics", &["Content-Length: 0"]).status, 200);
    // The LAN listener does not serve them.
    assert_eq!(get(http(&net, 0), "/metrics").status, 404);

    net.wait_for(Duration::from_secs(20), "node 0 to count its peer reachable", |_| {
        Ok(scrape(addr).get("kith_node_peers{state=\"reachable\"}") == Some(&1.0))
    })
    .unwrap();
    let before = scrape(addr);
    for zero in [
        "kith_store_puts_total",
        "kith_store_put_bytes_total",
        "kith_store_restores_total",
        "kith_blobs_fetched_bytes_total{route=\"direct\"}",
    ] {
        assert_eq!(at(&before, zero), 0.0, "{zero}");
    }
    assert!(at(&before, "kith_node_uptime_seconds") >= 0.0);

    // A pool of two, both holding everything.
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada", "--replicas", "2"]).unwrap();
    let ticket = net.kith_ok(0, &["pool", "invite"]).unwrap();
    net.kith_ok(1, &["pool", "join", ticket.trim(), "--as", "bob"]).unwrap();
    for i in 0..2 {
        net.kith_ok(i, &["offer", "--storage", "1GiB"]).unwrap();
    }
    net.wait_for(Duration::from_secs(30), "node 0 to see two members", |_| {
        Ok(scrape(addr).get("kith_pool_members{pool=\"street\"}") == Some(&2.0))
    })
    .unwrap();

    // Node 0 puts 3 MiB into the pool: its put counters move by exactly that, and node 1
    // fetches the blobs from it.
    let size = 3 << 20;
    let src = net.dir().join("a.bin");
    write(&src, &random_bytes(size, 1));
    let put = net.json(0, &["put", src.to_str().unwrap(), "--pool", "street"]).unwrap();
    let id = put["id"].as_str().unwrap().to_string();
    let after_put = scrape(addr);
    assert_eq!(at(&after_put, "kith_store_puts_total"), 1.0);
    assert_eq!(at(&after_put, "kith_store_put_bytes_total"), size as f64);
    assert!(at(&after_put, "kith_store_stored_bytes_total") >= size as f64);
    assert!(at(&after_put, "kith_store_chunks") > at(&before, "kith_store_chunks"));
    assert!(at(&after_put, "kith_store_bytes") >= size as f64);
    // Node 1 took its copy from node 0. The holder acknowledges once its copy is verified and
    // synced, which can be a moment before node 0 has counted the last bytes as served.
    net.wait_for(Duration::from_secs(30), "node 0 to count what node 1 took", |_| {
        Ok(at(&scrape(addr), "kith_blobs_served_bytes_total{route=\"direct\"}") >= size as f64)
    })
    .unwrap();
    assert!(at(&after_put, "kith_sync_settled_total") > at(&before, "kith_sync_settled_total"));
    assert!(
        at(&after_put, "kith_sync_bytes_total{direction=\"sent\"}")
            > at(&before, "kith_sync_bytes_total{direction=\"sent\"}")
    );

    // Node 1 puts 2 MiB: node 0, a holder, fetches it directly.
    let src1 = net.dir().join("b.bin");
    write(&src1, &random_bytes(2 << 20, 2));
    net.json(1, &["put", src1.to_str().unwrap(), "--pool", "street"]).unwrap();
    let after_fetch = scrape(addr);
    assert!(
        at(&after_fetch, "kith_blobs_fetched_bytes_total{route=\"direct\"}") >= (2 << 20) as f64
    );
    assert_eq!(at(&after_fetch, "kith_blobs_fetched_bytes_total{route=\"linked\"}"), 0.0);
    assert_eq!(at(&after_fetch, "kith_store_puts_total"), 1.0, "node 1's put is not node 0's");

    // A restore counts the bytes it wrote.
    let out = net.dir().join("a.out");
    net.kith_ok(0, &["get", &id, "-o", out.to_str().unwrap()]).unwrap();
    let after_get = scrape(addr);
    assert_eq!(at(&after_get, "kith_store_restores_total"), 1.0);
    assert_eq!(at(&after_get, "kith_store_restored_bytes_total"), size as f64);

    // Site requests, by status.
    let site = net.dir().join("site");
    write(&site.join("index.html"), b"<h1>Bakery</h1>");
    net.kith_ok(0, &["site", "publish", site.to_str().unwrap(), "--name", "bakery"]).unwrap();
    let lan = http(&net, 0);
    assert_eq!(get(lan, "/s/bakery/").status, 200);
    assert_eq!(get(lan, "/s/bakery/").status, 200);
    assert_eq!(get(lan, "/s/bakery/no-such-page").status, 404);
    let after_site = scrape(addr);
    assert_eq!(at(&after_site, "kith_gateway_requests_total{status=\"200\"}"), 2.0);
    assert_eq!(at(&after_site, "kith_gateway_requests_total{status=\"404\"}"), 1.0);
    assert!(at(&after_site, "kith_gateway_cache_hits_total") >= 1.0, "the second read is cached");

    // Workers are counted by state; their total is the number `kith status` lists.
    let workers = net.json(0, &["status"]).unwrap()["workers"].as_array().unwrap().len();
    let counted: f64 = after_site
        .iter()
        .filter(|(k, _)| k.starts_with("kith_node_workers{"))
        .map(|(_, v)| v)
        .sum();
    assert!(workers > 0 && (counted - workers as f64).abs() <= 1.0, "{counted} vs {workers}");
}

#[test]
fn a_metrics_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = taken.local_addr().unwrap().to_string();
    let net = testnet(1, Layout::Loopback);
    net.kith_ok(0, &["init"]).unwrap();
    let out = net
        .cmd(0)
        .args(["up", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--no-mdns"])
        .args(["--metrics", &a])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot serve metrics on {a}")), "{err}");
}
