//! `testnet up`: a LAN a person reaches by hand with the printed commands, gone after Ctrl-C.
//!
//! Runs the real `testnet` binary, which runs the `kith` binary built next to it (the
//! workspace's test run builds both).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long three nodes and their pool get to be ready.
const READY: Duration = Duration::from_secs(240);
/// How long the nodes get to stop and the LAN to be removed.
const STOPPED: Duration = Duration::from_secs(60);

/// The `testnet up` process; stopped with SIGTERM if the test fails while it runs.
struct Up(Child);

impl Up {
    fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, signal) };
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            let _ = self.0.wait();
        }
    }
}

/// The values of the lines `  NAME  VALUE` that `testnet up` printed, in order.
fn field(printed: &[String], name: &str) -> Vec<String> {
    printed
        .iter()
        .filter_map(|l| l.trim_start().strip_prefix(name))
        .filter(|rest| rest.starts_with("  "))
        .map(|rest| rest.trim().to_string())
        .collect()
}

/// Runs a printed node command with `args` in place of its `status`; returns its stdout.
fn run_printed(command: &str, args: &[&str]) -> serde_json::Value {
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words.last(), Some(&"status"), "{command}");
    let out = Command::new(words[0]).args(&words[1..words.len() - 1]).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{command} {args:?}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn up_prints_commands_that_reach_the_nodes_and_ctrl_c_removes_the_lan() {
    let testnet = env!("CARGO_BIN_EXE_testnet");
    let kith = Path::new(testnet).with_file_name("kith");
    assert!(
        kith.is_file(),
        "no kith at {}: cargo build -p kith (or test the workspace)",
        kith.display()
    );
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(testnet)
        .args(["up", "3", "--pool", "street"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut up = Up(child);
    let (tx, rx) = mpsc::channel();
    let stdout = up.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let deadline = Instant::now() + READY;
    let mut printed = Vec::new();
    while !printed.last().is_some_and(|l: &String| l.starts_with("ready:")) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => printed.push(line),
            Err(e) => panic!(
                "testnet up was not ready ({e}):\n{}\n{}",
                printed.join("\n"),
                std::fs::read_to_string(stderr.path()).unwrap_or_default()
            ),
        }
    }
    let (commands, spaces, homes) =
        (field(&printed, "command"), field(&printed, "namespace"), field(&printed, "home"));
    assert_eq!((commands.len(), spaces.len(), homes.len()), (3, 3, 3), "{}", printed.join("\n"));
    assert_eq!(field(&printed, "gateway")[1], "http://10.99.0.2:7780/");

    // What a person would type: the printed command lines, another kith command at the end.
    let status = run_printed(&commands[0], &["status", "--json"]);
    assert_eq!(status["running"], true, "{status}");
    assert_eq!(status["node"].as_str(), field(&printed, "node id").first().map(String::as_str));
    let pool = run_printed(&commands[2], &["pool", "show", "street", "--json"]);
    assert_eq!(pool["members"].as_array().map(Vec::len), Some(3), "{pool}");

    up.signal(libc::SIGINT);
    let deadline = Instant::now() + STOPPED;
    let status = loop {
        if let Some(status) = up.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "testnet up did not stop in {STOPPED:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(stderr.path()).unwrap_or_default();
    assert!(status.success(), "testnet up exited with {status}:\n{err}");
    let left = namespaces();
    let maker = format!("kt{}x", up.0.id());
    assert!(!left.contains(&maker), "namespaces left behind:\n{left}");
    assert!(spaces.iter().all(|ns| !left.contains(ns.as_str())), "left behind:\n{left}");
    assert!(homes.iter().all(|h| !Path::new(h).exists()), "homes left behind: {homes:?}");
}
