//! Talks to a running daemon over its control socket: HTTP/1.1 on `HOME/control.sock`, with
//! the token from `HOME/control.token`.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::ops::Request;

/// File name of the control socket in a home.
pub const SOCKET: &str = "control.sock";
/// Header naming the API version of a request.
pub const API_HEADER: &str = "Kith-Api";
/// File name of the control token in a home.
pub const TOKEN: &str = "control.token";
const MAX_HEADERS: usize = 16 << 10;

/// Sends `req` to the daemon of the home at `root`; `None` if no daemon runs there. Returns
/// the response body: the operation's frames.
pub fn send(root: &Path, req: &Request) -> Result<Option<Box<dyn Read>>> {
    let sock = root.join(SOCKET);
    let stream = match UnixStream::connect(&sock) {
        Ok(s) => s,
        Err(e)
            if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot reach the daemon at {}", sock.display()));
        }
    };
    let token_path = root.join(TOKEN);
    let token = fs::read_to_string(&token_path).with_context(|| {
        format!("a daemon runs but its token {} cannot be read", token_path.display())
    })?;
    let body = serde_json::to_vec(req)?;
    let mut w = &stream;
    write!(
        w,
        "POST /v1/run HTTP/1.1\r\nHost: kith\r\nAuthorization: Bearer {}\r\n{API_HEADER}: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        token.trim(),
        crate::api::API_VERSION,
        body.len()
    )?;
    w.write_all(&body)?;
    let mut r = BufReader::new(stream);
    let (status, chunked, length) = read_head(&mut r)?;
    let body: Box<dyn Read> = match (chunked, length) {
        (true, _) => Box::new(Chunked { inner: r, left: 0, done: false }),
        (false, Some(n)) => Box::new(r.take(n)),
        (false, None) => Box::new(r),
    };
    if status != 200 {
        let mut text = String::new();
        body.take(4096).read_to_string(&mut text)?;
        bail!("the daemon refused the request ({status}): {}", text.trim());
    }
    Ok(Some(body))
}

/// Sends `req` to the daemon of the home at `root` and returns its typed answer; progress,
/// data and warnings frames are passed over. An error if no daemon runs there.
pub fn call<T: serde::de::DeserializeOwned>(root: &Path, req: &Request) -> Result<T> {
    let Some(mut body) = send(root, req)? else {
        bail!("no daemon runs on {}", root.display());
    };
    loop {
        match crate::wire::Frame::read(&mut body)? {
            Some(crate::wire::Frame::Result(v)) => {
                return serde_json::from_value(v).context("an answer of another shape");
            }
            Some(crate::wire::Frame::Error(e)) => bail!(e),
            Some(_) => {}
            None => bail!("the operation ended without an answer (did the daemon stop?)"),
        }
    }
}

fn read_head(r: &mut impl BufRead) -> Result<(u16, bool, Option<u64>)> {
    let mut seen = 0;
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer from the daemon: {line:?}"))?;
    let (mut chunked, mut length) = (false, None);
    loop {
        line.clear();
        let n = r.read_line(&mut line)?;
        seen += n;
        if n == 0 || seen > MAX_HEADERS {
            bail!("the daemon's answer has no end of headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse().ok();
            }
        }
    }
    Ok((status, chunked, length))
}

/// Decodes `Transfer-Encoding: chunked`.
struct Chunked<R> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            if self.inner.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon stopped in the middle of an answer",
                ));
            }
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = u64::from_str_radix(size, 16).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "bad chunk size from the daemon")
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon stopped in the middle of an answer",
            ));
        }
        self.left -= n as u64;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode() {
        let raw = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        let mut c = Chunked { inner: &raw[..], left: 0, done: false };
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");
        let cut = b"5\r\nhel";
        let mut c = Chunked { inner: &cut[..], left: 0, done: false };
        assert!(c.read_to_string(&mut String::new()).is_err());
    }
}
