//! As the far node: answering a relayed offer, then serving `kith/blobs/1` requests over the
//! channel it opens.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use iroh::EndpointId;
use iroh::endpoint::Connection;
use minicbor::bytes::ByteArray;
use webrtc::peer_connection::RTCSessionDescription;

use super::ice::{gather, local_ip_towards, remote_ip, stun_url};
use super::link::RtcLink;
use super::{Description, IDLE_TIMEOUT, MAX_SESSIONS, Mesh, Signed, lock, short};
use crate::net::blobs::{LinkWire, Reply, Request, Sent, Wire, answer};
use crate::net::frame;
use crate::net::rtc::{Events, is_gone, peer_connection};

impl Mesh {
    /// As the far node: answer an offer relayed by `conn`'s node, and serve the channel.
    pub(super) async fn answer(
        self: &Arc<Self>,
        conn: &Connection,
        offer: &Signed,
        stun: u16,
    ) -> Result<Signed, String> {
        let d = offer.open(self.me(), crate::keys::now_ms()).map_err(|e| e.to_string())?;
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
            at_ms: crate::keys::now_ms(),
            answers: Some(ByteArray::from(offer.hash())),
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.sessions).insert(id, pc.clone());
        let this = self.clone();
        tokio::spawn(async move {
            let Events { channels: mut crx, state: mut srx, .. } = events;
            match tokio::time::timeout(crate::net::rtc::OPEN_TIMEOUT, crx.recv()).await {
                Ok(Some(dc)) => {
                    let link = RtcLink {
                        pc: pc.clone(),
                        dc,
                        route: format!("webrtc answered for {}", short(&from)),
                        state: srx.clone(),
                        closed: AtomicBool::new(false),
                        stats: this.stats.clone(),
                    };
                    let closed = async {
                        while srx.changed().await.is_ok() {
                            if is_gone(*srx.borrow()) {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        _ = this.serve(from, link) => {}
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

    /// Serves `kith/blobs/1` requests from `peer` on `link` until it closes or idles.
    async fn serve(&self, peer: EndpointId, link: RtcLink) {
        let Ok(node) = self.node() else { return };
        let mut wire = LinkWire { link: &link, wait: IDLE_TIMEOUT };
        loop {
            let body = match wire.recv_frame().await {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(peer = %short(&peer), error = %e, "a linked peer's channel ended");
                    break;
                }
            };
            let req: Request = match frame::decode(&body) {
                Ok(r) => r,
                Err(e) => {
                    let why = minicbor::to_vec(Reply::Refused(format!("a malformed request: {e}")))
                        .expect("encoding into a Vec cannot fail");
                    if wire.send_frame(why).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let mut sent = Sent::default();
            let r = answer(&mut wire, node.store(), node.served(), peer, req, &mut sent).await;
            self.stats.served_blobs.fetch_add(sent.blobs, Ordering::Relaxed);
            self.stats.served_bytes.fetch_add(sent.bytes, Ordering::Relaxed);
            if let Err(e) = r {
                tracing::info!(peer = %short(&peer), error = %e, "a linked peer's channel failed");
                break;
            }
        }
    }
}
