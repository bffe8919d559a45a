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
/// Kernel receive and send buffers of a peer connection's UDP socket. The default (about
/// 208 KiB) overflows under one SCTP burst on a LAN: webrtc-rs reads one datagram per wake,
/// and every datagram the kernel drops costs the association a halved window or a
/// retransmission timeout of a second or more.
const SOCKET_BUFFER: usize = 4 << 20;

/// Tokio, with larger socket buffers on every UDP socket a peer connection binds.
#[derive(Debug)]
struct Runtime;

impl webrtc::runtime::Runtime for Runtime {
    fn spawn(
        &self,
        future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Box<dyn webrtc::runtime::JoinHandle> {
        webrtc::runtime::TokioRuntime.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Box<dyn webrtc::runtime::JoinHandle> {
        webrtc::runtime::TokioRuntime.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn webrtc::runtime::AsyncUdpSocket>> {
        use std::os::fd::AsRawFd;
        for (force, plain) in
            [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)]
        {
            // The forced option needs CAP_NET_ADMIN; without it the kernel caps the plain one
            // at net.core.[rw]mem_max. Either way the socket keeps working: a smaller buffer
            // only costs speed.
            if !set_buffer(socket.as_raw_fd(), force, SOCKET_BUFFER) {
                set_buffer(socket.as_raw_fd(), plain, SOCKET_BUFFER);
            }
        }
        webrtc::runtime::TokioRuntime.wrap_udp_socket(socket)
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> std::io::Result<Arc<dyn webrtc::runtime::AsyncTcpListener>> {
        webrtc::runtime::TokioRuntime.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote: std::net::SocketAddr,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = std::io::Result<Arc<dyn webrtc::runtime::AsyncTcpStream>>,
                > + Send
                + 'a,
        >,
    > {
        webrtc::runtime::TokioRuntime.connect_tcp(remote)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = std::io::Result<Vec<std::net::SocketAddr>>>
                + Send
                + 'a,
        >,
    > {
        webrtc::runtime::TokioRuntime.resolve_host(host)
    }

    fn sleep(
        &self,
        duration: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>> {
        webrtc::runtime::TokioRuntime.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn webrtc::runtime::AsyncInterval> {
        webrtc::runtime::TokioRuntime.interval(period)
    }

    fn block_on(&self, future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>) {
        webrtc::runtime::TokioRuntime.block_on(future)
    }
}

/// Sets the socket option `opt` (a buffer size) on `fd`; whether the kernel took it.
fn set_buffer(fd: std::os::fd::RawFd, opt: libc::c_int, bytes: usize) -> bool {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open socket owned by the caller for the duration of the call, and
    // the option value is a c_int living on this stack frame with its size passed alongside.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

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
        .with_runtime(Arc::new(Runtime))
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

#[cfg(test)]
mod tests {
    use super::*;
    use webrtc::runtime::Runtime as _;

    fn buffer(fd: std::os::fd::RawFd, opt: libc::c_int) -> usize {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` is an open socket; `v` and `len` live on this frame and `len` holds the
        // size of `v`.
        let rc = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &raw mut len)
        };
        assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
        usize::try_from(v).unwrap_or(0)
    }

    /// A peer connection's socket gets the large buffers (root may force them past
    /// net.core.rmem_max; anyone else gets at most that), where the kernel's default is ~208 KiB.
    #[tokio::test]
    async fn peer_connection_sockets_get_large_buffers() {
        use std::os::fd::AsRawFd;
        let max = |name: &str| -> usize {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let probe = sock.try_clone().expect("clone");
        let before = buffer(probe.as_raw_fd(), libc::SO_RCVBUF);
        let _wrapped = Runtime.wrap_udp_socket(sock).expect("wrap");
        for (opt, sysctl) in [(libc::SO_RCVBUF, "rmem_max"), (libc::SO_SNDBUF, "wmem_max")] {
            let want = if root { SOCKET_BUFFER } else { SOCKET_BUFFER.min(max(sysctl)) };
            // The kernel reports twice what was set (its bookkeeping overhead).
            let got = buffer(probe.as_raw_fd(), opt);
            assert!(got >= want, "{sysctl}: {got} bytes, wanted at least {want} (was {before})");
        }
    }
}
