//! As the neighbour: passing one offer on to the far node and its answer back.

use std::sync::atomic::Ordering;

use iroh::EndpointId;
use iroh::endpoint::{Connection, RecvStream, SendStream};

use super::signal::{read_frame, write_frame};
use super::{ANSWER_TIMEOUT, Description, Mesh, SIGNAL_ALPN, STEP_TIMEOUT, Signal, short};

impl Mesh {
    /// As the neighbour: pass one offer from `conn`'s node to `to` and the answer back.
    pub(super) async fn relay(
        &self,
        conn: &Connection,
        send: &mut SendStream,
        recv: &mut RecvStream,
        to: [u8; 32],
    ) -> Result<(), String> {
        let node = self.node()?;
        let from = conn.remote_id();
        let to = EndpointId::from_bytes(&to).map_err(|_| "an invalid node id".to_string())?;
        if to == self.me() || to == from {
            return Err("that node is this one; dial it directly".into());
        }
        let stun = *self.stun_port.get().ok_or("this node runs no STUN responder")?;
        let _permit = self.relays.clone().try_acquire_owned().map_err(|_| {
            format!("{} is relaying as much as it can; try later", short(&self.me()))
        })?;
        let far = tokio::time::timeout(STEP_TIMEOUT, node.endpoint().connect(to, SIGNAL_ALPN))
            .await
            .map_err(|_| format!("{} cannot reach {}: timed out", short(&self.me()), short(&to)))?
            .map_err(|e| {
                format!(
                    "{} cannot reach {}: {}",
                    short(&self.me()),
                    short(&to),
                    crate::net::connect_error(&to, e)
                )
            })?;
        tracing::debug!(from = %short(&from), to = %short(&to), "passing signalling on");
        write_frame(send, &Signal::Go { stun }).await?;
        let offer = match read_frame(recv, ANSWER_TIMEOUT).await? {
            Signal::Offer(o) => o,
            _ => return Err("expected an offer".into()),
        };
        // Only the node on this connection may send offers under its name.
        let d: Description =
            minicbor::decode(&offer.body).map_err(|e| format!("a malformed offer: {e}"))?;
        if *d.from != *from.as_bytes() || *d.to != *to.as_bytes() {
            return Err("the offer is not from this connection's node to the node named".into());
        }
        let (mut fsend, mut frecv) = far.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut fsend, &Signal::Incoming { offer, stun }).await?;
        let _ = fsend.finish();
        let reply = read_frame(&mut frecv, ANSWER_TIMEOUT)
            .await
            .map_err(|e| format!("{} did not answer: {e}", short(&to)))?;
        far.close(0u32.into(), b"done");
        match reply {
            Signal::Answer(a) => {
                self.stats.relayed.fetch_add(1, Ordering::Relaxed);
                write_frame(send, &Signal::Answer(a)).await
            }
            Signal::Cannot(why) => Err(format!("{} refused: {why}", short(&to))),
            _ => Err(format!("{} sent something else than an answer", short(&to))),
        }
    }
}
