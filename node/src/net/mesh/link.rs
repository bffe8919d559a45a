//! A data channel as a [`Link`]: one message per frame, in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};

use super::MeshStats;
use crate::net::link::{Link, LinkFuture};
use crate::net::rtc::is_gone;

/// A data channel to another node (the one this node opened, or one it answered).
pub(super) struct RtcLink {
    pub(super) pc: Arc<dyn PeerConnection>,
    pub(super) dc: Arc<dyn DataChannel>,
    pub(super) route: String,
    pub(super) state: watch::Receiver<RTCPeerConnectionState>,
    pub(super) closed: AtomicBool,
    pub(super) stats: Arc<MeshStats>,
}

impl Link for RtcLink {
    fn send(&self, msg: Bytes) -> LinkFuture<'_, Result<(), String>> {
        Box::pin(async move { self.dc.send(BytesMut::from(msg)).await.map_err(|e| e.to_string()) })
    }

    fn recv(&self, wait: Duration) -> LinkFuture<'_, Result<Option<Bytes>, String>> {
        Box::pin(async move {
            let next = async {
                loop {
                    match self.dc.poll().await {
                        Some(DataChannelEvent::OnMessage(m)) => return Some(m.data.freeze()),
                        Some(DataChannelEvent::OnClose) | None => return None,
                        Some(_) => continue,
                    }
                }
            };
            let m = tokio::time::timeout(wait, next).await.map_err(|_| "stalled".to_string())?;
            if let Some(m) = &m {
                self.stats.received_bytes.fetch_add(m.len() as u64, Ordering::Relaxed);
            }
            Ok(m)
        })
    }

    fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Relaxed) && !is_gone(*self.state.borrow())
    }

    fn route(&self) -> String {
        self.route.clone()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
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
