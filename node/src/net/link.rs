//! Links: reaching a peer other than by dialing it over iroh.
//!
//! Two nodes behind different NATs cannot dial each other (there is no relay: kith sends nothing
//! beyond the LAN). A layer above (`kith_hosting::mesh`) can still join them with a WebRTC data
//! channel, signalled through a neighbour both can reach. It hands this layer a [`Linker`]; when
//! a peer does not answer directly, [`super::blobs::Connections`] asks the linker for a
//! [`Link`], and the fetcher and the pinger use it like a connection: the same requests, the
//! same replies, every blob verified by its id on arrival.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use iroh::EndpointId;
use tokio::sync::mpsc;

use super::blobs::{Blob, Received};
use crate::ids::ChunkId;

/// A boxed future (the traits here are object safe).
pub type LinkFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a get over a link returns: the ids the peer does not have and what arrived, or on
/// failure what arrived before it failed and why (as for a direct connection).
pub type GetResult = Result<(Vec<ChunkId>, Received), (Received, String)>;

/// A way to one peer that is not a direct iroh connection.
pub trait Link: Send + Sync + 'static {
    /// Asks for `ids` (at most [`super::blobs::MAX_IDS`]) on behalf of `pool`; each blob,
    /// verified against its id, goes to `sink`.
    fn get<'a>(
        &'a self,
        ids: &'a [ChunkId],
        pool: Option<[u8; 32]>,
        sink: &'a mpsc::Sender<Blob>,
    ) -> LinkFuture<'a, GetResult>;

    /// Whether the peer answers over the link.
    fn ping(&self) -> LinkFuture<'_, Result<(), String>>;

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
