//! Links: reaching a peer other than by dialing it over iroh.
//!
//! Two nodes behind different NATs cannot dial each other (there is no relay: kith sends nothing
//! beyond the LAN). [`super::mesh`] can still join them with a WebRTC data channel, signalled
//! through a neighbour both can reach. A [`Link`] is what such a channel is to the layers
//! above: a framed message channel. The `kith/blobs/1` client and server
//! ([`super::blobs`]) run over it exactly as over an iroh stream: the same requests, the same
//! replies, every blob verified by its id on arrival.
//!
//! [`super::blobs::Connections`] asks its [`Linker`] for a link when a peer does not answer
//! directly, and the fetcher and the pinger then use it like a connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iroh::EndpointId;

/// Largest message on a link (the SCTP `max-message-size` of kith's data channels).
pub const MAX_MESSAGE: usize = 64 << 10;

/// A boxed future (the traits here are object safe).
pub type LinkFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A framed message channel to one peer that is not a direct iroh connection. Messages
/// arrive whole and in order; each is at most [`MAX_MESSAGE`] bytes.
pub trait Link: Send + Sync + 'static {
    /// Sends one message.
    fn send(&self, msg: Bytes) -> LinkFuture<'_, Result<(), String>>;

    /// The next message; `Ok(None)` once the link closed, an error if none came within
    /// `wait`.
    fn recv(&self, wait: Duration) -> LinkFuture<'_, Result<Option<Bytes>, String>>;

    /// Whether the link is still up.
    fn is_open(&self) -> bool;

    /// How the link goes, for people (`webrtc via NEIGHBOUR`).
    fn route(&self) -> String;

    /// Closes the link.
    fn close(&self);
}

/// Makes links to peers that cannot be dialed.
pub trait Linker: Send + Sync + 'static {
    /// A link to `peer`, or why none could be made (naming every neighbour asked).
    fn link(&self, peer: EndpointId) -> LinkFuture<'_, Result<Arc<dyn Link>, String>>;
}
