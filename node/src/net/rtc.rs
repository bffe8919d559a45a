//! WebRTC helpers shared by every data channel kith opens: node-to-node links
//! ([`super::mesh`]) and browsers (`kith_hosting::browser`).
//!
//! A peer connection binds one address, uses only the STUN servers it is given (a neighbour's
//! responder), has webrtc-rs's mDNS off (it needs a multicast route an offline LAN may lack),
//! and a bounded send buffer; its events arrive on channels ([`Events`]).

use std::sync::Arc;
use std::time::Duration;

use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, SettingEngineBuilder,
};

pub use super::link::MAX_MESSAGE;
/// Time for a channel to open after the answer.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Send-buffer limit per channel (back-pressure for senders).
const SEND_BUFFER: usize = 16 << 20;

struct Handler {
    gathered: tokio::sync::mpsc::UnboundedSender<()>,
    channels: tokio::sync::mpsc::UnboundedSender<Arc<dyn DataChannel>>,
    state: tokio::sync::watch::Sender<RTCPeerConnectionState>,
}

/// What a peer connection reports: gathering done, channels the other side opened, and its
/// state.
#[derive(Debug)]
pub struct Events {
    /// One message when candidate gathering completes.
    pub gathered: tokio::sync::mpsc::UnboundedReceiver<()>,
    /// The channels the other side opened.
    pub channels: tokio::sync::mpsc::UnboundedReceiver<Arc<dyn DataChannel>>,
    /// The connection's state.
    pub state: tokio::sync::watch::Receiver<RTCPeerConnectionState>,
}

/// A peer connection bound to `bind` (`IP:0`; a wildcard means every interface), using the
/// STUN servers `stun` (`stun:IP:PORT`).
pub async fn peer_connection(
    bind: std::net::SocketAddr,
    stun: Vec<String>,
) -> Result<(Arc<dyn PeerConnection>, Events), webrtc::error::Error> {
    let (gtx, grx) = tokio::sync::mpsc::unbounded_channel();
    let (ctx, crx) = tokio::sync::mpsc::unbounded_channel();
    let (stx, srx) = tokio::sync::watch::channel(RTCPeerConnectionState::New);
    let handler = Arc::new(Handler { gathered: gtx, channels: ctx, state: stx });
    let settings = SettingEngineBuilder::default()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let mut config = RTCConfigurationBuilder::new();
    if !stun.is_empty() {
        config = config.with_ice_servers(vec![webrtc::peer_connection::RTCIceServer {
            urls: stun,
            ..Default::default()
        }]);
    }
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config.build())
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_udp_addrs(vec![bind.to_string()])
        .with_data_channel_send_buffer_limit(SEND_BUFFER)
        .build()
        .await?;
    Ok((Arc::new(pc), Events { gathered: grx, channels: crx, state: srx }))
}

/// Whether a connection in state `s` is gone for good.
pub fn is_gone(s: RTCPeerConnectionState) -> bool {
    matches!(
        s,
        RTCPeerConnectionState::Failed
            | RTCPeerConnectionState::Closed
            | RTCPeerConnectionState::Disconnected
    )
}

/// The next message on `dc`; `None` once it closes or nothing came for `idle`.
pub async fn next_message(
    dc: &Arc<dyn DataChannel>,
    idle: Duration,
) -> Option<rtc::data_channel::RTCDataChannelMessage> {
    loop {
        match tokio::time::timeout(idle, dc.poll()).await {
            Ok(Some(DataChannelEvent::OnMessage(m))) => return Some(m),
            Ok(Some(DataChannelEvent::OnClose) | None) | Err(_) => return None,
            Ok(Some(_)) => continue,
        }
    }
}

/// Waits for `dc` to open.
pub async fn wait_open(dc: &Arc<dyn DataChannel>) -> Result<(), String> {
    let open = async {
        while let Some(ev) = dc.poll().await {
            if matches!(ev, DataChannelEvent::OnOpen) {
                return Ok(());
            }
        }
        Err("the channel closed before it opened".to_string())
    };
    tokio::time::timeout(OPEN_TIMEOUT, open)
        .await
        .map_err(|_| "the channel did not open".to_string())?
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(());
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.channels.send(dc);
    }

    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.state.send(s);
    }
}
