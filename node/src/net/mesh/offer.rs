//! As the node that wants a link: an offer through a neighbour, and the channel it opens.

use std::sync::atomic::AtomicBool;

use iroh::EndpointId;
use iroh::endpoint::Connection;
use minicbor::bytes::ByteArray;
use webrtc::peer_connection::RTCSessionDescription;

use super::ice::{gather, local_ip_towards, remote_ip, stun_url};
use super::link::RtcLink;
use super::signal::{read_frame, write_frame};
use super::{ANSWER_TIMEOUT, Description, Mesh, SIGNAL_ALPN, STEP_TIMEOUT, Signal, Signed, short};
use crate::net::rtc::{peer_connection, wait_open};

impl Mesh {
    /// As the node that wants a link: through `neighbour`, to `to`.
    pub(super) async fn link_via(
        &self,
        neighbour: EndpointId,
        to: EndpointId,
    ) -> Result<RtcLink, String> {
        let node = self.node()?;
        let conn =
            tokio::time::timeout(STEP_TIMEOUT, node.endpoint().connect(neighbour, SIGNAL_ALPN))
                .await
                .map_err(|_| "connecting timed out".to_string())?
                .map_err(|e| crate::net::connect_error(&neighbour, e).to_string())?;
        let result = self.offer_through(&conn, neighbour, to).await;
        conn.close(0u32.into(), b"done");
        result
    }

    async fn offer_through(
        &self,
        conn: &Connection,
        neighbour: EndpointId,
        to: EndpointId,
    ) -> Result<RtcLink, String> {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut send, &Signal::Want { to: ByteArray::from(*to.as_bytes()) }).await?;
        let stun = match read_frame(&mut recv, STEP_TIMEOUT * 2).await? {
            Signal::Go { stun } => stun,
            Signal::Cannot(why) => return Err(why),
            _ => return Err("answered something else than Go".into()),
        };
        let ip = remote_ip(conn).ok_or("no address for the neighbour")?;
        tracing::debug!(neighbour = %short(&neighbour), %ip, stun, "offering");
        let (pc, mut events) = peer_connection(local_ip_towards(ip), vec![stun_url(ip, stun)])
            .await
            .map_err(|e| e.to_string())?;
        let made = async {
            let e = |e: webrtc::error::Error| e.to_string();
            let dc = pc.create_data_channel("kith/blobs/1", None).await.map_err(e)?;
            let offer = pc.create_offer(None).await.map_err(e)?;
            pc.set_local_description(offer).await.map_err(e)?;
            gather(&mut events).await;
            let local = pc.local_description().await.ok_or("no offer was made")?;
            let d = Description {
                from: ByteArray::from(*self.me().as_bytes()),
                to: ByteArray::from(*to.as_bytes()),
                sdp: local.sdp,
                at_ms: crate::keys::now_ms(),
                answers: None,
            };
            let offer = Signed::sign(&self.key, &d);
            write_frame(&mut send, &Signal::Offer(offer.clone())).await?;
            let answer = match read_frame(&mut recv, ANSWER_TIMEOUT * 2).await? {
                Signal::Answer(a) => a,
                Signal::Cannot(why) => return Err(why),
                _ => return Err("answered something else than an answer".into()),
            };
            let a = answer.open(self.me(), crate::keys::now_ms()).map_err(|e| e.to_string())?;
            tracing::debug!(answer = %a.sdp, "answered");
            if *a.from != *to.as_bytes() {
                return Err("the answer is not from the node asked".into());
            }
            if a.answers.map(|h| *h) != Some(offer.hash()) {
                return Err("the answer is not for this offer".into());
            }
            let sdp = RTCSessionDescription::answer(a.sdp).map_err(|e| e.to_string())?;
            pc.set_remote_description(sdp)
                .await
                .map_err(|e| format!("the answer's SDP was refused: {e}"))?;
            wait_open(&dc)
                .await
                .map_err(|e| format!("{e} (no path between the two nodes: ICE failed)"))?;
            Ok(dc)
        };
        match made.await {
            Ok(dc) => Ok(RtcLink {
                pc,
                dc,
                route: format!("webrtc via {}", short(&neighbour)),
                state: events.state,
                closed: AtomicBool::new(false),
                stats: self.stats.clone(),
            }),
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }
}
