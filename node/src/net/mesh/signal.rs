//! The signalling messages, the signed descriptions they carry, and their framing on a
//! `kith/signal/1` stream.

use std::time::Duration;

use crate::net::frame;
use iroh::endpoint::{RecvStream, SendStream};
use iroh::{EndpointId, SecretKey, Signature};
use minicbor::bytes::ByteArray;
use minicbor::{Decode, Encode};

use super::{MAX_SKEW_MS, SIGN_CONTEXT};

/// A signalling message (one frame each, see the module's table).
#[derive(Debug, Encode, Decode)]
pub enum Signal {
    /// Please pass my offer to this node.
    #[n(0)]
    Want {
        /// The far node.
        #[n(0)]
        to: ByteArray<32>,
    },
    /// I can reach it; my STUN responder listens on this UDP port of the address you reach me at.
    #[n(1)]
    Go {
        /// The port.
        #[n(0)]
        stun: u16,
    },
    /// A signed offer (to the neighbour).
    #[n(2)]
    Offer(#[n(0)] Signed),
    /// A signed answer.
    #[n(3)]
    Answer(#[n(0)] Signed),
    /// It cannot be done, and why.
    #[n(4)]
    Cannot(#[n(0)] String),
    /// A signed offer for you (from the neighbour), and its STUN port.
    #[n(5)]
    Incoming {
        /// The offer.
        #[n(0)]
        offer: Signed,
        /// The neighbour's STUN port.
        #[n(1)]
        stun: u16,
    },
}

/// A description and its sender's signature over `SIGN_CONTEXT` and `body`.
#[derive(Debug, Clone, Encode, Decode)]
pub struct Signed {
    /// The CBOR of a [`Description`].
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub body: Vec<u8>,
    /// Ed25519 by the sender's node key.
    #[n(1)]
    pub sig: ByteArray<64>,
}

/// One side's session description.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Description {
    /// Sender.
    #[n(0)]
    pub from: ByteArray<32>,
    /// Receiver.
    #[n(1)]
    pub to: ByteArray<32>,
    /// The SDP.
    #[n(2)]
    pub sdp: String,
    /// When it was made (ms since the epoch).
    #[n(3)]
    pub at_ms: u64,
    /// For an answer: the BLAKE3 of the offer's body it answers.
    #[n(4)]
    pub answers: Option<ByteArray<32>>,
}

impl Signed {
    /// Signs `d` with `key` (which must be `d.from`'s).
    pub fn sign(key: &SecretKey, d: &Description) -> Signed {
        let body = minicbor::to_vec(d).expect("encoding into a Vec cannot fail");
        let sig = key.sign(&signed_message(&body));
        Signed { body, sig: ByteArray::from(sig.to_bytes()) }
    }

    /// The description, if it is signed by its sender, addressed to `me`, and recent.
    pub fn open(&self, me: EndpointId, now_ms: u64) -> Result<Description, SignalError> {
        let d: Description = minicbor::decode(&self.body)?;
        let from = EndpointId::from_bytes(&d.from).map_err(|_| SignalError::BadSender)?;
        from.verify(&signed_message(&self.body), &Signature::from_bytes(&self.sig))
            .map_err(|_| SignalError::NotSigned(from.fmt_short().to_string()))?;
        if *d.to != *me.as_bytes() {
            return Err(SignalError::OtherNode);
        }
        if d.at_ms.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(SignalError::Stale);
        }
        Ok(d)
    }

    /// The BLAKE3 of the body (what an answer names).
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.body).as_bytes()
    }
}

/// Why a signed session description was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// Not valid CBOR of a description.
    #[error("a malformed description: {0}")]
    Malformed(#[from] minicbor::decode::Error),
    /// The sender is not a valid node id.
    #[error("a description from an invalid node id")]
    BadSender,
    /// The signature is not its sender's.
    #[error("a description not signed by {0}")]
    NotSigned(String),
    /// Addressed to another node.
    #[error("a description meant for another node")]
    OtherNode,
    /// Outside the allowed clock skew.
    #[error("a description too old or from the future (check the clocks)")]
    Stale,
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    [SIGN_CONTEXT, body].concat()
}

pub(super) async fn read_frame(recv: &mut RecvStream, within: Duration) -> Result<Signal, String> {
    tokio::time::timeout(within, frame::read::<Signal>(recv))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the stream ended".to_string())
}

pub(super) async fn write_frame(send: &mut SendStream, s: &Signal) -> Result<(), String> {
    frame::write(send, s).await.map_err(|e| e.to_string())
}
