//! The protocol's two ends, written once for every transport: an iroh stream (length-prefixed
//! frames, a blob's bytes raw after its `Have`) and a [`Link`] (one message per frame, a blob's
//! bytes in messages of at most [`MAX_MESSAGE`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use iroh::EndpointId;
use iroh::endpoint::{RecvStream, SendStream};
use minicbor::bytes::ByteArray;
use tokio::sync::mpsc;

use super::LinkError;
use super::{Blob, DeviceProof, MAX_IDS, Reply, Request, STALL_TIMEOUT, Served, read_ahead};
use crate::ids::ChunkId;
use crate::net::frame::{self, FrameError, MAX_FRAME};
use crate::net::link::{Link, MAX_MESSAGE};
use crate::store::Store;
use crate::store::pack::{BlobKind, MAX_BLOB_BYTES};

/// What a get returns: the ids the peer does not have and what arrived (each id with its
/// length), or on failure what arrived before it failed and why.
pub type GetResult = Result<(Vec<ChunkId>, Received), (Received, String)>;

/// Each id received, with its length.
pub type Received = Vec<(ChunkId, u64)>;

/// The slowest a blob may arrive, in bytes a second, beyond the stall timeout (a 1 MiB chunk may
/// take 42 s: slow links are fine, a peer trickling a byte at a time is not).
const MIN_BLOB_RATE: u32 = 32 << 10;

/// One end of a transport carrying `kith/blobs/1`.
pub(crate) trait Wire: Send {
    /// Sends one frame (its CBOR body).
    fn send_frame(&mut self, body: Vec<u8>) -> impl Future<Output = Result<(), FrameError>> + Send;
    /// Sends a blob's bytes, after its `Have`.
    fn send_blob(&mut self, bytes: Bytes) -> impl Future<Output = Result<(), FrameError>> + Send;
    /// The next frame's body; `Ok(None)` at a clean end.
    fn recv_frame(&mut self) -> impl Future<Output = Result<Option<Vec<u8>>, FrameError>> + Send;
    /// The next piece of a blob, at most `max` bytes; `Ok(None)` if the transport ended.
    fn recv_part(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Option<Bytes>, FrameError>> + Send;
    /// Ends what this side sends (a stream's finish; nothing on a link).
    fn finish(&mut self) -> Result<(), FrameError>;
}

/// A bi-directional iroh stream: one request and its replies.
pub(crate) struct StreamWire {
    pub(crate) send: SendStream,
    pub(crate) recv: RecvStream,
}

fn stream_error(e: impl std::fmt::Display) -> FrameError {
    FrameError::Stream(e.to_string())
}

impl Wire for StreamWire {
    async fn send_frame(&mut self, body: Vec<u8>) -> Result<(), FrameError> {
        frame::write_body(&mut self.send, &body).await
    }

    async fn send_blob(&mut self, bytes: Bytes) -> Result<(), FrameError> {
        // Handing over the buffer, not copying it.
        self.send.write_chunk(bytes).await.map_err(stream_error)
    }

    async fn recv_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        frame::read_body(&mut self.recv, MAX_FRAME).await
    }

    async fn recv_part(&mut self, max: usize) -> Result<Option<Bytes>, FrameError> {
        self.recv.read_chunk(max).await.map_err(stream_error)
    }

    fn finish(&mut self) -> Result<(), FrameError> {
        self.send.finish().map_err(stream_error)
    }
}

/// A link: requests and replies one after another, each a message.
pub(crate) struct LinkWire<'a> {
    pub(crate) link: &'a dyn Link,
    /// How long a receive waits for the next message.
    pub(crate) wait: Duration,
}

impl Wire for LinkWire<'_> {
    async fn send_frame(&mut self, body: Vec<u8>) -> Result<(), FrameError> {
        if body.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(body.len(), MAX_FRAME));
        }
        self.link.send(Bytes::from(body)).await.map_err(FrameError::Stream)
    }

    async fn send_blob(&mut self, bytes: Bytes) -> Result<(), FrameError> {
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + MAX_MESSAGE).min(bytes.len());
            self.link.send(bytes.slice(at..end)).await.map_err(FrameError::Stream)?;
            at = end;
        }
        Ok(())
    }

    async fn recv_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        match self.link.recv(self.wait).await.map_err(FrameError::Stream)? {
            Some(m) if m.len() > MAX_FRAME => Err(FrameError::TooLarge(m.len(), MAX_FRAME)),
            m => Ok(m.map(|m| m.to_vec())),
        }
    }

    async fn recv_part(&mut self, max: usize) -> Result<Option<Bytes>, FrameError> {
        match self.link.recv(self.wait).await.map_err(FrameError::Stream)? {
            Some(m) if m.len() > max => {
                Err(FrameError::Malformed("sent more bytes than the blob has".into()))
            }
            m => Ok(m),
        }
    }

    fn finish(&mut self) -> Result<(), FrameError> {
        Ok(())
    }
}

fn encode<T: minicbor::Encode<()>>(msg: &T) -> Vec<u8> {
    minicbor::to_vec(msg).expect("encoding into a Vec cannot fail")
}

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the peer stalled")]
    Timeout,
}

/// What one answer sent.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sent {
    pub(crate) blobs: u64,
    pub(crate) bytes: u64,
}

/// The server's end: answers `req` from `peer` on `wire` (a pong, a refusal, or each blob
/// `peer` may have, from `store`), counting into `served` and `sent` as each blob goes (what
/// went before a failure stays counted).
pub(crate) async fn answer<W: Wire>(
    wire: &mut W,
    store: &Arc<Store>,
    served: &Served,
    peer: EndpointId,
    req: Request,
    sent: &mut Sent,
) -> Result<(), ServeError> {
    let refuse = |why: String| encode(&Reply::Refused(why));
    // A peer that does not read its pong or refusal fails the request within the stall
    // timeout, as one that does not read its blobs does.
    let stalled = |_| ServeError::Timeout;
    match req {
        Request::Ping(n) => {
            let pong = encode(&Reply::Pong(n, Some(super::Facts::here())));
            tokio::time::timeout(STALL_TIMEOUT, wire.send_frame(pong)).await.map_err(stalled)??
        }
        Request::Get(ids, ..) if ids.len() > MAX_IDS => {
            let no = refuse(format!("at most {MAX_IDS} ids per request"));
            tokio::time::timeout(STALL_TIMEOUT, wire.send_frame(no)).await.map_err(stalled)??
        }
        Request::Get(ids, pool, proof) => match served.check(&peer, proof.as_ref(), &ids) {
            Err(why) => tokio::time::timeout(STALL_TIMEOUT, wire.send_frame(refuse(why)))
                .await
                .map_err(stalled)??,
            Ok(()) => {
                let skip = served.withheld(&peer, &ids);
                let tag = pool.map(|p| (*p, peer));
                return send_blobs(wire, store, served, ids, skip, tag, sent).await;
            }
        },
    }
    Ok(())
}

async fn send_blobs<W: Wire>(
    wire: &mut W,
    store: &Arc<Store>,
    served: &Served,
    ids: Vec<ByteArray<32>>,
    skip: Vec<bool>,
    tag: Option<([u8; 32], EndpointId)>,
    sent: &mut Sent,
) -> Result<(), ServeError> {
    let (mut rx, reader) = read_ahead(store.clone(), ids, skip);
    while let Some(blob) = rx.recv().await {
        let write = async {
            match blob {
                Some((kind, bytes, id)) => {
                    let len = bytes.len() as u64;
                    let have = Reply::Have { kind: kind as u8, len: len as u32 };
                    wire.send_frame(encode(&have)).await?;
                    wire.send_blob(Bytes::from(bytes)).await?;
                    served.blobs.fetch_add(1, Ordering::Relaxed);
                    served.bytes.fetch_add(len, Ordering::Relaxed);
                    sent.blobs += 1;
                    sent.bytes += len;
                    if let Some((pool, peer)) = tag {
                        served.tagged().add(pool, peer, id, len);
                    }
                    Ok(())
                }
                None => wire.send_frame(encode(&Reply::Missing)).await,
            }
        };
        tokio::time::timeout(STALL_TIMEOUT, write).await.map_err(|_| ServeError::Timeout)??;
    }
    drop(rx);
    let _ = reader.await;
    Ok(())
}

/// Waits for `f` at most the stall timeout.
async fn unstalled<T>(f: impl Future<Output = Result<T, FrameError>>) -> Result<T, String> {
    match tokio::time::timeout(STALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("stalled".into()),
    }
}

/// The client's end of a get: asks for `ids` (at most [`MAX_IDS`]) on `wire`, on behalf of
/// `pool`, proving the device with `proof`; each blob, verified against its id, goes to `sink`.
pub(crate) async fn get<W: Wire>(
    wire: &mut W,
    ids: &[ChunkId],
    pool: Option<[u8; 32]>,
    proof: Option<DeviceProof>,
    sink: &mpsc::Sender<Blob>,
) -> GetResult {
    let mut received = Vec::new();
    match get_into(wire, ids, pool, proof, sink, &mut received).await {
        Ok(missing) => Ok((missing, received)),
        Err(why) => Err((received, why)),
    }
}

async fn get_into<W: Wire>(
    wire: &mut W,
    ids: &[ChunkId],
    pool: Option<[u8; 32]>,
    proof: Option<DeviceProof>,
    sink: &mpsc::Sender<Blob>,
    received: &mut Received,
) -> Result<Vec<ChunkId>, String> {
    let req = Request::Get(
        ids.iter().map(|id| ByteArray::from(id.0)).collect(),
        pool.map(ByteArray::from),
        proof,
    );
    // A peer that stops reading (or a link whose buffer stays full) fails the request within
    // the stall timeout, as one that stops sending does.
    unstalled(wire.send_frame(encode(&req))).await?;
    wire.finish().map_err(|e| e.to_string())?;
    let mut missing = Vec::new();
    for id in ids {
        let Some(body) = unstalled(wire.recv_frame()).await? else {
            return Err("closed the stream early".into());
        };
        match frame::decode::<Reply>(&body).map_err(|e| e.to_string())? {
            Reply::Have { kind, len } => {
                if len > MAX_BLOB_BYTES {
                    return Err(format!("announced a blob of {len} bytes"));
                }
                // Progress on every piece, and the whole blob within a time for its size: a
                // peer trickling a byte at a time cannot hold the batch for long.
                let deadline = STALL_TIMEOUT + Duration::from_secs(u64::from(len / MIN_BLOB_RATE));
                let parts = tokio::time::timeout(deadline, read_blob(wire, len as usize, id))
                    .await
                    .map_err(|_| format!("took over {} s for a blob", deadline.as_secs()))??;
                let kind = BlobKind::from_u8(kind).unwrap_or(BlobKind::Chunk);
                if sink.send(Blob { id: *id, kind, parts }).await.is_err() {
                    return Err("the fetch was cancelled".into());
                }
                received.push((*id, u64::from(len)));
            }
            Reply::Missing => missing.push(*id),
            Reply::Refused(why) => return Err(format!("refused: {why}")),
            other => return Err(format!("unexpected reply {other:?}")),
        }
    }
    Ok(missing)
}

/// Bytes gathered into one piece of a received blob (a multiple of BLAKE3's 1 KiB chunk).
const STAGE: usize = 256 << 10;

/// Reads a blob of `len` bytes, hashing as it goes; fails if it ends early, stalls, or the
/// bytes do not hash to `id`. The transport delivers pieces of about a packet each; they are
/// gathered into pieces of [`STAGE`] bytes, each hashed in one update (BLAKE3 hashes many
/// 1 KiB chunks at once, with SIMD, only when one update holds many) and kept as they are: the
/// pack writes them without copying them again, and the transport's buffers go back at once.
async fn read_blob<W: Wire>(wire: &mut W, len: usize, id: &ChunkId) -> Result<Vec<Bytes>, String> {
    let mut parts = Vec::with_capacity(len.div_ceil(STAGE));
    let mut hasher = blake3::Hasher::new();
    let mut stage: Vec<u8> = Vec::new();
    let mut stage_len = 0;
    // Bytes received and placed in `parts` or `stage`.
    let mut at = 0;
    while at < len {
        let Some(part) = unstalled(wire.recv_part(len - at)).await? else {
            return Err("disconnected in the middle of a blob".into());
        };
        if part.len() > len - at {
            return Err("sent more bytes than the blob has".into());
        }
        if stage.is_empty() && part.len() >= STAGE {
            at += part.len();
            hasher.update(&part);
            parts.push(part);
            continue;
        }
        let mut rest = &part[..];
        while !rest.is_empty() {
            if stage.is_empty() {
                stage_len = STAGE.min(len - at);
                stage.reserve_exact(stage_len);
            }
            let take = (stage_len - stage.len()).min(rest.len());
            stage.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            at += take;
            if stage.len() == stage_len {
                hasher.update(&stage);
                parts.push(Bytes::from(std::mem::take(&mut stage)));
            }
        }
    }
    if ChunkId(*hasher.finalize().as_bytes()) != *id {
        return Err(format!("sent bytes that do not match chunk {id}"));
    }
    Ok(parts)
}

/// The client's end of a ping: `Ok` if the peer answers `nonce` with the same, with what it
/// says of itself.
pub(crate) async fn ping<W: Wire>(
    wire: &mut W,
    nonce: u64,
) -> Result<Option<super::Facts>, LinkError> {
    wire.send_frame(encode(&Request::Ping(nonce))).await?;
    wire.finish()?;
    let reply = match wire.recv_frame().await? {
        Some(body) => Some(frame::decode::<Reply>(&body)?),
        None => None,
    };
    match reply {
        Some(Reply::Pong(n, facts)) if n == nonce => Ok(facts),
        other => Err(LinkError::UnexpectedReply(format!("{other:?}"))),
    }
}
