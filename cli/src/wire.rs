//! The frames a command's execution sends back, whether it runs in this process or in the
//! daemon: `kind u8 | length u32 LE | payload`.
//!
//! Kinds: progress (JSON), data (bytes for standard output), warning (text), result (JSON,
//! last), error (text, last), stage (text: the long operation's next step, whose progress
//! follows from zero).

use std::io::{self, Read};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::sync::mpsc;

/// Largest frame payload (data frames carry at most 1 MiB).
pub const MAX_FRAME: usize = 4 << 20;

/// One frame.
#[derive(Debug)]
pub enum Frame {
    /// How far a long operation is.
    Progress {
        /// Units done (bytes, most often).
        done: u64,
        /// Units in all, as far as known.
        total: u64,
        /// Files done, when it counts files.
        files: u64,
    },
    /// Bytes for standard output.
    Data(Vec<u8>),
    /// Something the user should read; the operation goes on.
    Warning(String),
    /// The operation succeeded; the last frame.
    Result(serde_json::Value),
    /// The operation failed; the last frame.
    Error(String),
    /// The operation's next step (its progress frames start again from zero).
    Stage(String),
}

const PROGRESS: u8 = 1;
const DATA: u8 = 2;
const WARNING: u8 = 3;
const RESULT: u8 = 4;
const ERROR: u8 = 5;
const STAGE: u8 = 6;

impl Frame {
    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload) = match self {
            Frame::Progress { done, total, files } => {
                (PROGRESS, serde_json::json!([done, total, files]).to_string().into_bytes())
            }
            Frame::Data(b) => (DATA, b.clone()),
            Frame::Warning(w) => (WARNING, w.as_bytes().to_vec()),
            Frame::Result(v) => (RESULT, v.to_string().into_bytes()),
            Frame::Error(e) => (ERROR, e.as_bytes().to_vec()),
            Frame::Stage(s) => (STAGE, s.as_bytes().to_vec()),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Reads the next frame; `None` at a clean end.
    pub fn read(r: &mut impl Read) -> Result<Option<Frame>> {
        let mut head = [0u8; 5];
        match read_full(r, &mut head)? {
            0 => return Ok(None),
            5 => {}
            _ => bail!("the daemon's answer ended in the middle of a frame"),
        }
        let len = u32::from_le_bytes(head[1..].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            bail!("the daemon sent a frame of {len} bytes, over the {MAX_FRAME}-byte limit");
        }
        let mut payload = vec![0u8; len];
        if read_full(r, &mut payload)? != len {
            bail!("the daemon's answer ended in the middle of a frame");
        }
        let text = || String::from_utf8_lossy(&payload).into_owned();
        Ok(Some(match head[0] {
            PROGRESS => {
                let v: [u64; 3] = serde_json::from_slice(&payload).context("bad progress frame")?;
                Frame::Progress { done: v[0], total: v[1], files: v[2] }
            }
            DATA => Frame::Data(payload),
            WARNING => Frame::Warning(text()),
            RESULT => Frame::Result(serde_json::from_slice(&payload).context("bad result frame")?),
            ERROR => Frame::Error(text()),
            STAGE => Frame::Stage(text()),
            k => bail!("unknown frame kind {k} from the daemon (a newer kith?)"),
        }))
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// Where an operation sends its frames.
#[derive(Clone)]
pub struct Out(pub mpsc::Sender<Frame>, pub Option<Arc<crate::ops::Operation>>);

impl Out {
    /// Frames to `tx`, reported to no one else.
    pub fn new(tx: mpsc::Sender<Frame>) -> Out {
        Out(tx, None)
    }

    /// The same frames, with their progress and stages also kept in `op` (which the node's
    /// status lists, so the dashboard and `kith status` show operations under way).
    pub fn watched(&self, op: Arc<crate::ops::Operation>) -> Out {
        Out(self.0.clone(), Some(op))
    }

    fn note(&self, f: &Frame) {
        if let Some(op) = &self.1 {
            op.note(f);
        }
    }

    /// Sends a frame; a gone receiver (the client left) is not an error for the operation.
    pub async fn send(&self, f: Frame) {
        self.note(&f);
        let _ = self.0.send(f).await;
    }

    /// Sends a frame from a blocking thread.
    pub fn blocking_send(&self, f: Frame) {
        self.note(&f);
        let _ = self.0.blocking_send(f);
    }

    /// Sends a frame if there is room now (progress, which the next one supersedes).
    pub fn try_send(&self, f: Frame) {
        self.note(&f);
        let _ = self.0.try_send(f);
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let frames = [
            Frame::Progress { done: 1, total: 2, files: 3 },
            Frame::Data(vec![1, 2, 3]),
            Frame::Warning("careful".into()),
            Frame::Result(serde_json::json!({"a": 1})),
            Frame::Stage("replicating".into()),
            Frame::Error("no".into()),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(|f| f.encode()).collect();
        let mut r = &bytes[..];
        for f in &frames {
            assert_eq!(format!("{f:?}"), format!("{:?}", Frame::read(&mut r).unwrap().unwrap()));
        }
        assert!(Frame::read(&mut r).unwrap().is_none());
        let mut cut = &bytes[..bytes.len() - 1];
        let mut last = None;
        while let Ok(Some(f)) = Frame::read(&mut cut) {
            last = Some(f);
        }
        assert!(!matches!(last, Some(Frame::Error(_))));
        let huge = [DATA, 0xff, 0xff, 0xff, 0x7f];
        assert!(Frame::read(&mut &huge[..]).unwrap_err().to_string().contains("limit"));
    }
}
