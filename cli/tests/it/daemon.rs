//! `kith up`: the daemon, its control API and its LAN listener.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use kith_testnet::Layout;

use crate::util::*;

#[test]
fn a_running_node_answers_commands_and_refuses_a_second_daemon() {
    let mut net = testnet(1, Layout::Loopback);
    net.start(0).unwrap();
    let home = net.nodes[0].home.clone();
    let status = net.json(0, &["status"]).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["addrs"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["node"].as_str().unwrap().len(), 64);
    let human = net.kith_ok(0, &["status"]).unwrap();
    for word in ["node", "addrs", "peers", "store", "up for"] {
        assert!(human.contains(word), "{human}");
    }
    for f in ["control.sock", "control.token"] {
        let mode = std::fs::metadata(home.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }

    // Commands go through the daemon, which holds the store.
    let file = net.dir().join("f.txt");
    std::fs::write(&file, b"through the daemon").unwrap();
    let id = net.kith_ok(0, &["put", file.to_str().unwrap()]).unwrap().trim().to_string();
    let got = net.cmd(0).args(["get", &id, "-o", "-"]).output().unwrap();
    assert_eq!(got.stdout, b"through the daemon");
    assert!(net.kith_ok(0, &["ls"]).unwrap().contains(&id[..12]));

    let second = net
        .cmd(0)
        .args(["up", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another kith process") && err.contains("kith up"), "{err}");
    assert!(net.is_running(0));

    // SIGTERM stops it cleanly (exit status 0) and it removes its control files.
    net.stop(0).unwrap();
    assert!(!home.join("control.sock").exists() && !home.join("control.token").exists());
    // Without the daemon the same commands run locally on the same store.
    assert!(net.kith_ok(0, &["ls"]).unwrap().contains(&id[..12]));
    assert_eq!(net.json(0, &["status"]).unwrap()["running"], false);
}

#[test]
fn the_control_api_needs_the_token_and_is_not_on_the_lan_listener() {
    let mut net = testnet(1, Layout::Loopback);
    net.start(0).unwrap();
    let home = net.nodes[0].home.clone();
    let token = std::fs::read_to_string(home.join("control.token")).unwrap();
    let ok_auth = format!("Authorization: Bearer {token}\r\n");
    assert_eq!(control_post(&home, "", r#"{"op":"status"}"#).0, 401);
    assert_eq!(control_post(&home, "Authorization: Bearer nope\r\n", r#"{"op":"status"}"#).0, 401);
    // A command this daemon does not know, or a request from a newer kith: "upgrade kith".
    let (code, body) = control_post(&home, &ok_auth, r#"{"op":"format_disk"}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("does not know that command") && body.contains("upgrade kith"), "{body}");
    let newer = format!("{ok_auth}Kith-Api: 999\r\n");
    let (code, body) = control_post(&home, &newer, r#"{"op":"status"}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("older than the command's") && body.contains("upgrade kith"), "{body}");
    let (code, body) = control_post(&home, &ok_auth, r#"{"op":"status""#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("malformed request"), "{body}");
    assert_eq!(control_post(&home, &ok_auth, r#"{"op":"status"}"#).0, 200);

    let http = net.json(0, &["status"]).unwrap()["http"].as_str().unwrap().to_string();
    let ask = |req: &str| -> String {
        let mut s = std::net::TcpStream::connect(&http).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let page = ask("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("kith node"), "{page}");
    let control = ask(&format!(
        "POST /v1/run HTTP/1.1\r\nHost: x\r\n{ok_auth}Content-Length: 15\r\nConnection: close\r\n\r\n{{\"op\":\"status\"}}"
    ));
    assert!(
        control.starts_with("HTTP/1.1 404"),
        "the LAN listener must not answer the control API: {control}"
    );
    assert!(net.is_running(0));
}

#[test]
fn sigint_stops_the_daemon_cleanly() {
    let mut net = testnet(1, Layout::Loopback);
    net.start(0).unwrap();
    let pid = std::fs::read_to_string(net.nodes[0].home.join("lock")).unwrap();
    let pid: i32 = pid.trim_start_matches("pid ").split(',').next().unwrap().parse().unwrap();
    // SAFETY: signalling the daemon we started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    net.wait_for(Duration::from_secs(5), "the daemon to exit after SIGINT", |n| {
        Ok(!n.is_running(0))
    })
    .unwrap();
    assert!(net.log(0).contains("stopped"), "{}", net.log(0));
}
