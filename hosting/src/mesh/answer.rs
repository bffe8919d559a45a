//! As the far node: answering a relayed offer, then serving `kith/blobs/1` requests over the
//! channel it opens.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use iroh::EndpointId;
use iroh::endpoint::Connection;
use kith_node::net::Node;
use kith_node::net::blobs::{MAX_IDS, Reply, Request};
use minicbor::bytes::ByteArray;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::RTCSessionDescription;

use super::ice::{gather, local_ip_towards, remote_ip, stun_url};
use super::{
    Description, IDLE_TIMEOUT, MAX_MESSAGE, MAX_SESSIONS, Mesh, STALL_TIMEOUT, Signed, lock, short,
};
use crate::browser::{Events, is_gone, next_message, peer_connection};

impl Mesh {
    /// As the far node: answer an offer relayed by `conn`'s node, and serve the channel.
    pub(super) async fn answer(
        self: &Arc<Self>,
        conn: &Connection,
        offer: &Signed,
        stun: u16,
    ) -> Result<Signed, String> {
        let d = offer.open(self.me(), kith_node::keys::now_ms()).map_err(|e| e.to_string())?;
        let from = EndpointId::from_bytes(&d.from).map_err(|_| "an invalid node id")?;
        if lock(&self.sessions).len() >= MAX_SESSIONS {
            return Err(format!("{} has as many channels as it keeps", short(&self.me())));
        }
        let neighbour = remote_ip(conn).ok_or("no address for the neighbour")?;
        tracing::debug!(from = %short(&from), %neighbour, stun, offer = %d.sdp, "answering");
        let (pc, mut events) =
            peer_connection(local_ip_towards(neighbour), vec![stun_url(neighbour, stun)])
                .await
                .map_err(|e| e.to_string())?;
        let offer_sdp = RTCSessionDescription::offer(d.sdp).map_err(|e| e.to_string());
        let setup = async {
            pc.set_remote_description(offer_sdp?)
                .await
                .map_err(|e| format!("the offer's SDP was refused: {e}"))?;
            let a = pc.create_answer(None).await.map_err(|e| e.to_string())?;
            pc.set_local_description(a).await.map_err(|e| e.to_string())?;
            gather(&mut events).await;
            pc.local_description().await.ok_or_else(|| "no answer was made".to_string())
        };
        let local = match setup.await {
            Ok(l) => l,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        let answer = Description {
            from: ByteArray::from(*self.me().as_bytes()),
            to: d.from,
            sdp: local.sdp,
            at_ms: kith_node::keys::now_ms(),
            answers: Some(ByteArray::from(offer.hash())),
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.sessions).insert(id, pc.clone());
        let this = self.clone();
        tokio::spawn(async move {
            let Events { channels: mut crx, state: mut srx, .. } = events;
            match tokio::time::timeout(crate::browser::OPEN_TIMEOUT, crx.recv()).await {
                Ok(Some(dc)) => {
                    let closed = async {
                        while srx.changed().await.is_ok() {
                            if is_gone(*srx.borrow()) {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        _ = this.serve(from, dc) => {}
                        _ = closed => tracing::info!(peer = %short(&from), "a linked peer went away"),
                    }
                }
                _ => {
                    tracing::info!(peer = %short(&from), "an offer never opened a channel; dropped")
                }
            }
            let _ = pc.close().await;
            lock(&this.sessions).remove(&id);
        });
        Ok(Signed::sign(&self.key, &answer))
    }

    /// Serves `kith/blobs/1` requests from `peer` on `dc` until it closes or idles.
    async fn serve(&self, peer: EndpointId, dc: Arc<dyn DataChannel>) {
        let Ok(node) = self.node() else { return };
        while let Some(msg) = next_message(&dc, IDLE_TIMEOUT).await {
            if msg.data.len() > MAX_MESSAGE {
                break;
            }
            let req: Request = match minicbor::decode(&msg.data) {
                Ok(r) => r,
                Err(e) => {
                    let why = format!("a malformed request: {e}");
                    if send_reply(&dc, &Reply::Refused(why)).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let sent = match req {
                Request::Ping(n) => send_reply(&dc, &Reply::Pong(n)).await,
                Request::Get(ids, ..) if ids.len() > MAX_IDS => {
                    let why = format!("at most {MAX_IDS} ids per request");
                    send_reply(&dc, &Reply::Refused(why)).await
                }
                Request::Get(ids, pool, proof) => {
                    self.send_blobs(node, &dc, peer, ids, pool.map(|p| *p), proof).await
                }
            };
            if let Err(e) = sent {
                tracing::info!(peer = %short(&peer), error = %e, "a linked peer's channel failed");
                break;
            }
        }
    }

    async fn send_blobs(
        &self,
        node: &Arc<Node>,
        dc: &Arc<dyn DataChannel>,
        peer: EndpointId,
        ids: Vec<ByteArray<32>>,
        pool: Option<[u8; 32]>,
        proof: Option<kith_node::net::blobs::DeviceProof>,
    ) -> Result<(), String> {
        let served = node.served();
        if let Err(why) = served.check(&peer, proof.as_ref(), &ids) {
            return send_reply(dc, &Reply::Refused(why)).await;
        }
        let (mut rx, reader) = kith_node::net::blobs::read_ahead(node.store().clone(), ids);
        while let Some(blob) = rx.recv().await {
            let write = async {
                match blob {
                    Some((kind, bytes, id)) => {
                        let len = bytes.len() as u64;
                        send_reply(dc, &Reply::Have { kind: kind as u8, len: len as u32 }).await?;
                        for part in bytes.chunks(MAX_MESSAGE) {
                            dc.send(BytesMut::from(part)).await.map_err(|e| e.to_string())?;
                        }
                        served.blobs.fetch_add(1, Ordering::Relaxed);
                        served.bytes.fetch_add(len, Ordering::Relaxed);
                        self.stats.served_blobs.fetch_add(1, Ordering::Relaxed);
                        self.stats.served_bytes.fetch_add(len, Ordering::Relaxed);
                        if let Some(pool) = pool {
                            served.tagged().add(pool, peer, id, len);
                        }
                        Ok(())
                    }
                    None => send_reply(dc, &Reply::Missing).await,
                }
            };
            tokio::time::timeout(STALL_TIMEOUT, write)
                .await
                .map_err(|_| "the peer stalled".to_string())??;
        }
        drop(rx);
        let _ = reader.await;
        Ok(())
    }
}

async fn send_reply(dc: &Arc<dyn DataChannel>, r: &Reply) -> Result<(), String> {
    let body = minicbor::to_vec(r).expect("encoding into a Vec cannot fail");
    dc.send(BytesMut::from(&body[..])).await.map_err(|e| e.to_string())
}
