//! Driving Debian's Chromium through ChromeDriver (W3C WebDriver over HTTP, JSON in and out),
//! for tests that click, type and read pages as a person would. ChromeDriver and the browser
//! run in a network namespace of the testnet (or on loopback), so the page sees the LAN the
//! nodes see; the commands reach ChromeDriver from a thread that joined that namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// ChromeDriver's port inside a namespace of its own (free there: the namespace is new).
const NS_PORT: u16 = 9515;
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);

/// A headless Chromium session.
pub struct Browser {
    ns: Option<String>,
    addr: SocketAddr,
    session: String,
    driver: Child,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("ns", &self.ns).field("session", &self.session).finish()
    }
}

/// One HTTP request to ChromeDriver; the answer's JSON `value`.
fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // ChromeDriver keeps the connection open: read the headers, then Content-Length bytes.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("ChromeDriver closed the connection before its answer's headers ended");
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
        })
        .context("ChromeDriver's answer has no Content-Length")?;
    while raw.len() < split + 4 + len {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("ChromeDriver's answer is cut short");
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let payload = &raw[split + 4..split + 4 + len];
    let v: Value = serde_json::from_slice(payload).with_context(|| {
        format!("ChromeDriver answered {head:?} {:?}", String::from_utf8_lossy(payload))
    })?;
    if let Some(err) = v["value"]["error"].as_str() {
        bail!("{method} {path}: {err}: {}", v["value"]["message"].as_str().unwrap_or(""));
    }
    Ok(v["value"].clone())
}

impl Browser {
    /// Starts ChromeDriver (in namespace `ns`, if any) and a headless Chromium with its
    /// profile in `dir`.
    pub fn start(ns: Option<&str>, dir: &Path) -> Result<Browser> {
        std::fs::create_dir_all(dir)?;
        let port = match ns {
            Some(_) => NS_PORT,
            None => std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
        };
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "chromedriver"]);
                c
            }
            None => Command::new("chromedriver"),
        };
        let log = std::fs::File::create(dir.join("chromedriver.log"))?;
        let driver =
            cmd.arg(format!("--port={port}")).stdout(Stdio::null()).stderr(log).spawn().context(
                "cannot run chromedriver (scripts/test installs Debian's chromium-driver)",
            )?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut b = Browser { ns: ns.map(str::to_string), addr, session: String::new(), driver };
        let t = Instant::now();
        while b.call("GET", "/status", None).ok().and_then(|v| v["ready"].as_bool()) != Some(true) {
            if let Some(status) = b.driver.try_wait()? {
                let said =
                    std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default();
                bail!(
                    "chromedriver exited ({status}) before it was ready (scripts/test installs \
                     Debian's chromium-driver); it said: {}",
                    said.trim()
                );
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("chromedriver did not get ready in 30 s");
            }
            std::thread::sleep(POLL);
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-dev-shm-usage", "--disable-extensions",
                    "--disable-background-networking", "--window-size=1280,1000",
                    format!("--user-data-dir={}", dir.join("profile").display())],
            },
        } } });
        let v = b.call("POST", "/session", Some(&caps))?;
        b.session = v["sessionId"].as_str().context("no session id")?.to_string();
        Ok(b)
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (addr, method, path, body) =
            (self.addr, method.to_string(), path.to_string(), body.cloned());
        match &self.ns {
            Some(ns) => crate::netns::on_ns_thread(ns, move || {
                request(addr, &method, &path, body.as_ref())
            })?,
            None => request(addr, &method, &path, body.as_ref()),
        }
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.call(method, &format!("/session/{}{path}", self.session), body.as_ref())
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.session_call("POST", "/url", Some(json!({ "url": url })))?;
        Ok(())
    }

    fn element(&self, css: &str) -> Result<String> {
        let v = self.session_call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .with_context(|| format!("no element id for {css}"))
    }

    /// Waits until an element matching `css` exists, then clicks it (finding it again if the
    /// page redrew it in between: live pages do).
    pub fn click(&self, css: &str) -> Result<()> {
        let t = Instant::now();
        loop {
            let id = self.wait_element(css, Duration::from_secs(30))?;
            match self.session_call("POST", &format!("/element/{id}/click"), Some(json!({}))) {
                Ok(_) => return Ok(()),
                Err(e) if e.to_string().contains("stale element") && t.elapsed().as_secs() < 30 => {
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Types `text` into the element matching `css` (for a file input: the paths of the
    /// files, one per line).
    pub fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let id = self.wait_element(css, Duration::from_secs(30))?;
        self.session_call("POST", &format!("/element/{id}/value"), Some(json!({ "text": text })))?;
        Ok(())
    }

    fn wait_element(&self, css: &str, limit: Duration) -> Result<String> {
        let t = Instant::now();
        loop {
            match self.element(css) {
                Ok(id) => return Ok(id),
                Err(e) if t.elapsed() > limit => return Err(e.context(format!("waited {limit:?}"))),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// The visible text of the element matching `css` (empty if there is none).
    pub fn text(&self, css: &str) -> Result<String> {
        let Ok(id) = self.element(css) else { return Ok(String::new()) };
        Ok(self
            .session_call("GET", &format!("/element/{id}/text"), None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its return value.
    pub fn run(&self, script: &str, args: Value) -> Result<Value> {
        self.session_call("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// Runs `script` (a function body whose last argument is a callback) in the page and waits
    /// for the value it passes to the callback.
    pub fn run_async(&self, script: &str, args: Value) -> Result<Value> {
        self.session_call("POST", "/execute/async", Some(json!({ "script": script, "args": args })))
    }

    /// Waits until the text of `css` satisfies `cond`; returns that text.
    pub fn wait_text(
        &self,
        css: &str,
        limit: Duration,
        what: &str,
        cond: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let t = Instant::now();
        let mut last = String::new();
        loop {
            if let Ok(text) = self.text(css) {
                if cond(&text) {
                    return Ok(text);
                }
                last = text;
            }
            if t.elapsed() > limit {
                bail!("waited {limit:?} for {what} in `{css}`; it reads: {last}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<PathBuf> {
        use base64_decode as b64;
        let v = self.session_call("GET", "/screenshot", None)?;
        let png = b64(v.as_str().context("no screenshot")?)?;
        std::fs::write(path, png)?;
        Ok(path.to_path_buf())
    }
}

/// Standard base64 (what WebDriver's screenshots are), decoded.
fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => bail!("not base64: {:?}", c as char),
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_of_webdriver_screenshots_decodes() {
        assert_eq!(super::base64_decode("aGVsbG8=").expect("valid"), b"hello");
        assert_eq!(super::base64_decode("aGk=").expect("valid"), b"hi");
        assert!(super::base64_decode("a*b").is_err());
    }
}
