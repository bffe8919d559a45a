//! The near end of a link: `kith/blobs/1` requests over a data channel, one at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use kith_node::ChunkId;
use kith_node::net::blobs::{Blob, Received, Reply, Request};
use kith_node::net::link::{GetResult, Link, LinkFuture};
use kith_node::store::pack::{BlobKind, MAX_BLOB_BYTES};
use minicbor::bytes::ByteArray;
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};

use super::{MeshStats, STALL_TIMEOUT};
use crate::browser::is_gone;

/// A data channel to a far node, carrying `kith/blobs/1` requests one at a time.
pub(super) struct RtcLink {
    pub(super) pc: Arc<dyn PeerConnection>,
    pub(super) dc: Arc<dyn DataChannel>,
    pub(super) route: String,
    pub(super) state: watch::Receiver<RTCPeerConnectionState>,
    pub(super) busy: tokio::sync::Mutex<()>,
    pub(super) closed: AtomicBool,
    pub(super) stats: Arc<MeshStats>,
    pub(super) proof: Option<kith_node::net::blobs::DeviceProof>,
}

impl RtcLink {
    /// The next message, within the stall timeout.
    async fn next(&self) -> Result<BytesMut, String> {
        let wait = async {
            loop {
                match self.dc.poll().await {
                    Some(DataChannelEvent::OnMessage(m)) => return Ok(m.data),
                    Some(DataChannelEvent::OnClose) | None => {
                        return Err("the channel closed".to_string());
                    }
                    Some(_) => continue,
                }
            }
        };
        tokio::time::timeout(STALL_TIMEOUT, wait).await.map_err(|_| "stalled".to_string())?
    }

    async fn reply(&self) -> Result<Reply, String> {
        let m = self.next().await?;
        minicbor::decode(&m).map_err(|e| format!("a malformed reply: {e}"))
    }

    async fn request(&self, r: &Request) -> Result<(), String> {
        let body = minicbor::to_vec(r).expect("encoding into a Vec cannot fail");
        self.dc.send(BytesMut::from(&body[..])).await.map_err(|e| e.to_string())
    }

    fn fail(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    async fn get_inner(
        &self,
        ids: &[ChunkId],
        pool: Option<[u8; 32]>,
        sink: &mpsc::Sender<Blob>,
        received: &mut Received,
    ) -> Result<Vec<ChunkId>, String> {
        let req = Request::Get(
            ids.iter().map(|id| ByteArray::from(id.0)).collect(),
            pool.map(ByteArray::from),
            self.proof.clone(),
        );
        self.request(&req).await?;
        let mut missing = Vec::new();
        for id in ids {
            match self.reply().await? {
                Reply::Have { kind, len } => {
                    if len > MAX_BLOB_BYTES {
                        return Err(format!("announced a blob of {len} bytes"));
                    }
                    let mut parts = Vec::new();
                    let mut hasher = blake3::Hasher::new();
                    let mut got = 0usize;
                    while got < len as usize {
                        let m = self.next().await?;
                        if got + m.len() > len as usize {
                            return Err("sent more bytes than the blob has".into());
                        }
                        got += m.len();
                        hasher.update(&m);
                        parts.push(m.freeze());
                    }
                    if ChunkId(*hasher.finalize().as_bytes()) != *id {
                        return Err(format!("sent bytes that do not match chunk {id}"));
                    }
                    self.stats.received_bytes.fetch_add(u64::from(len), Ordering::Relaxed);
                    let kind = BlobKind::from_u8(kind).unwrap_or(BlobKind::Chunk);
                    if sink.send(Blob { id: *id, kind, parts }).await.is_err() {
                        return Err("the fetch was cancelled".into());
                    }
                    received.push((*id, u64::from(len)));
                }
                Reply::Missing => missing.push(*id),
                Reply::Refused(why) => return Err(format!("refused: {why}")),
                Reply::Pong(_) => return Err("an unexpected pong".into()),
            }
        }
        Ok(missing)
    }
}

impl Link for RtcLink {
    fn get<'a>(
        &'a self,
        ids: &'a [ChunkId],
        pool: Option<[u8; 32]>,
        sink: &'a mpsc::Sender<Blob>,
    ) -> LinkFuture<'a, GetResult> {
        Box::pin(async move {
            let _one = self.busy.lock().await;
            let mut received = Vec::new();
            match self.get_inner(ids, pool, sink, &mut received).await {
                Ok(missing) => Ok((missing, received)),
                Err(e) => {
                    // The replies of this request may still be coming: the channel is out of step.
                    self.fail();
                    Err((received, e))
                }
            }
        })
    }

    fn ping(&self) -> LinkFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // A request in flight is progress the stall timeout watches; a ping queued behind
            // a long batch would only time out and close a working link.
            let Ok(_one) = self.busy.try_lock() else {
                return if self.is_open() { Ok(()) } else { Err("the link closed".into()) };
            };
            let nonce = kith_node::keys::now_ms();
            let r = async {
                self.request(&Request::Ping(nonce)).await?;
                match self.reply().await? {
                    Reply::Pong(n) if n == nonce => Ok(()),
                    other => Err(format!("unexpected reply {other:?}")),
                }
            };
            let r = r.await;
            if r.is_err() {
                self.fail();
            }
            r
        })
    }

    fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Relaxed) && !is_gone(*self.state.borrow())
    }

    fn route(&self) -> String {
        self.route.clone()
    }

    fn close(&self) {
        self.fail();
        let pc = self.pc.clone();
        tokio::spawn(async move {
            let _ = pc.close().await;
        });
    }
}

impl Drop for RtcLink {
    fn drop(&mut self) {
        let pc = self.pc.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}
