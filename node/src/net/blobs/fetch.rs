//! The fetcher: spreads batches of ids over the peers, moves a batch on when a peer fails, and
//! verifies every blob it receives.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::EndpointId;
use tokio::sync::{Notify, mpsc};

use super::wire::{self, GetResult, StreamWire};
use super::{
    BUSY, Blob, Connections, FETCH_BATCH, LANES_PER_PEER, MAX_FETCH_PEERS, REFUSED_PATIENCE, Route,
    STALL_TIMEOUT, STREAMS_PER_PEER, Tally,
};
use crate::ids::ChunkId;
use crate::net::peers::PeerTable;

/// What a fetch got.
#[derive(Debug, Clone, Default)]
pub struct FetchReport {
    /// Blobs received.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Ids no live peer had.
    pub missing: Vec<ChunkId>,
    /// Peers dropped during the fetch, with the reason.
    pub failed_peers: Vec<(EndpointId, String)>,
    /// Peers asked.
    pub peers_asked: usize,
    /// What each peer sent (verified blobs only).
    pub by_peer: HashMap<EndpointId, Tally>,
}

#[derive(Default)]
struct FetchState {
    /// Ids still to fetch, in order.
    pending: VecDeque<ChunkId>,
    /// Peers that said they do not have an id.
    lacking: HashMap<ChunkId, HashSet<EndpointId>>,
    /// Batches being fetched.
    in_flight: usize,
    /// Peers still in this fetch.
    live: HashSet<EndpointId>,
    /// Peers refusing our connections as too many, and when to ask them again.
    refused: HashMap<EndpointId, Refused>,
    report: FetchReport,
}

/// A peer that refuses our connections (it holds as many of this node's as it allows, such
/// as a crashed run's it has not yet seen go silent): asked again after 0.25 s, 0.5 s, 1 s,
/// then every 2 s, the last time [`REFUSED_PATIENCE`] after the first refusal. Kept for the
/// peer, not for each of its workers, so they ask in step.
struct Refused {
    since: Instant,
    next: Instant,
    backoff: Duration,
}

impl Refused {
    fn new(now: Instant) -> Refused {
        Refused { since: now, next: now, backoff: Duration::from_millis(250) }
    }

    /// Takes a refusal at `now`: whether to ask again. A refusal of a try made before the
    /// next one was scheduled (a sibling's, in the same round) does not push it further.
    fn refused(&mut self, now: Instant) -> bool {
        let last = self.since + REFUSED_PATIENCE;
        if now >= last {
            return false;
        }
        if self.next <= now {
            self.next = (now + self.backoff).min(last);
            self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
        }
        true
    }
}

impl FetchState {
    /// Takes up to a batch of ids that `peer` has not said it lacks.
    fn take_for(&mut self, peer: &EndpointId) -> Vec<ChunkId> {
        let mut batch = Vec::new();
        let mut rest = VecDeque::with_capacity(self.pending.len());
        for id in self.pending.drain(..) {
            let lacks = self.lacking.get(&id).is_some_and(|s| s.contains(peer));
            if batch.len() < FETCH_BATCH && !lacks { batch.push(id) } else { rest.push_back(id) }
        }
        self.pending = rest;
        batch
    }

    /// Gives up on pending ids that every live peer lacks (all of them if no peer is left).
    fn give_up_hopeless(&mut self) {
        let (live, lacking) = (&self.live, &self.lacking);
        let hopeless = |id: &ChunkId| {
            live.is_empty() || lacking.get(id).is_some_and(|s| live.iter().all(|p| s.contains(p)))
        };
        let (gone, keep): (Vec<ChunkId>, Vec<ChunkId>) = self.pending.drain(..).partition(hopeless);
        self.pending = keep.into();
        self.report.missing.extend(gone);
    }
}

/// Fetches `ids` from the peers in `peers`, sending each verified blob to `sink` (in no
/// particular order). Memory stays bounded by the sink's capacity and the stream count.
pub async fn fetch(
    conns: Arc<Connections>,
    peers: &PeerTable,
    ids: Vec<ChunkId>,
    sink: mpsc::Sender<Blob>,
) -> FetchReport {
    fetch_from(conns, peers.candidates(), ids, None, sink).await
}

/// Like [`fetch`], from these peers (in order of preference; the first
/// `MAX_FETCH_PEERS` are used), on behalf of `pool` if given (the servers count what they
/// send for it; the report says what each peer sent).
pub async fn fetch_from(
    conns: Arc<Connections>,
    candidates: Vec<EndpointId>,
    ids: Vec<ChunkId>,
    pool: Option<[u8; 32]>,
    sink: mpsc::Sender<Blob>,
) -> FetchReport {
    let candidates: Vec<EndpointId> = candidates.into_iter().take(MAX_FETCH_PEERS).collect();
    let mut st = FetchState { live: candidates.iter().copied().collect(), ..FetchState::default() };
    st.report.peers_asked = candidates.len();
    if candidates.is_empty() {
        st.report.missing = ids;
        return st.report;
    }
    // A fetch of a batch or two gains nothing from further connections; a large one spreads
    // its streams over up to `LANES_PER_PEER` connections to each peer (leased until it ends).
    let lanes = ids.len().div_ceil(FETCH_BATCH).clamp(1, LANES_PER_PEER);
    let _leases: Vec<_> = match lanes {
        1 => Vec::new(),
        _ => candidates.iter().map(|p| conns.lease_lanes(*p)).collect(),
    };
    st.pending = ids.into();
    let state = Arc::new(Mutex::new(st));
    let wake = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    for peer in candidates {
        for worker in 0..STREAMS_PER_PEER {
            let lane = worker % lanes;
            let (conns, state, wake, sink) =
                (conns.clone(), state.clone(), wake.clone(), sink.clone());
            tasks.spawn(async move {
                fetch_worker(&conns, peer, lane, pool, &state, &wake, &sink).await
            });
        }
    }
    drop(sink);
    // Done when nothing is left to ask for and nothing is in flight: a worker still dialling a
    // peer that is gone (a dial, then a link through a neighbour, may take tens of seconds)
    // must not hold the fetch up, so the rest are stopped then.
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let st = lock(&state);
            if st.pending.is_empty() && st.in_flight == 0 {
                break;
            }
        }
        tokio::select! {
            r = tasks.join_next() => match r {
                None => break,
                Some(Err(e)) if e.is_panic() => {
                    tracing::error!(error = %e, "a fetch worker panicked; its batch goes to the others");
                }
                Some(_) => {}
            },
            _ = &mut notified => {}
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let mut st = lock(&state);
    let left: Vec<ChunkId> = st.pending.drain(..).collect();
    st.report.missing.extend(left);
    std::mem::take(&mut st.report)
}

fn lock(state: &Mutex<FetchState>) -> std::sync::MutexGuard<'_, FetchState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

async fn fetch_worker(
    conns: &Connections,
    peer: EndpointId,
    lane: usize,
    pool: Option<[u8; 32]>,
    state: &Mutex<FetchState>,
    wake: &Notify,
    sink: &mpsc::Sender<Blob>,
) {
    // Reach the peer before taking any work: a peer that cannot be reached holds no blobs back
    // from the others while it times out.
    if let Err(why) = conns.route_lane(peer, lane).await {
        tracing::info!(peer = %peer.fmt_short(), error = %why, "dropping peer from this fetch");
        let mut st = lock(state);
        if st.live.remove(&peer) {
            st.report.failed_peers.push((peer, why.to_string()));
        }
        st.give_up_hopeless();
        drop(st);
        wake.notify_waiters();
        return;
    }
    loop {
        // Registered before looking, so a change made after the look still wakes us.
        let notified = wake.notified();
        let batch = {
            let mut st = lock(state);
            if !st.live.contains(&peer) {
                return;
            }
            // A peer refusing us is asked again when its schedule says, by whichever worker.
            let next = st.refused.get(&peer).map(|r| r.next);
            if let Some(wait) = next.and_then(|n| n.checked_duration_since(Instant::now())) {
                Err(wait)
            } else {
                let batch = st.take_for(&peer);
                if batch.is_empty() && st.in_flight == 0 {
                    // Nothing this peer can do, and nothing in flight that could change that.
                    wake.notify_waiters();
                    return;
                }
                if !batch.is_empty() {
                    st.in_flight += 1;
                }
                Ok(batch)
            }
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(wait) => {
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        if batch.is_empty() {
            notified.await;
            continue;
        }
        let mut taken = Taken { state, wake, peer, batch: Some(batch.clone()) };
        let result = get_batch(conns, peer, lane, pool, &batch, sink).await;
        taken.batch = None;
        {
            let mut st = lock(state);
            st.in_flight -= 1;
            let now = Instant::now();
            let wait = match &result {
                Err((got, why)) if got.is_empty() && why == REFUSED_FIRST => {
                    let r = st.refused.entry(peer).or_insert_with(|| {
                        tracing::info!(peer = %peer.fmt_short(), "the peer refused our connection (it holds as many of this node's as it allows); asking again for up to {REFUSED_PATIENCE:?}");
                        Refused::new(now)
                    });
                    r.refused(now)
                }
                _ => {
                    st.refused.remove(&peer);
                    false
                }
            };
            let got = match &result {
                Ok((_, got)) | Err((got, _)) => got,
            };
            if let Some((last, _)) = got.last() {
                let t = st.report.by_peer.entry(peer).or_default();
                t.blobs += got.len() as u64;
                t.bytes += got.iter().map(|(_, len)| len).sum::<u64>();
                t.last = last.0;
            }
            match result {
                Ok((missing, _)) => {
                    st.report.blobs += (batch.len() - missing.len()) as u64;
                    for id in &missing {
                        st.lacking.entry(*id).or_default().insert(peer);
                    }
                    st.pending.extend(missing);
                }
                // The batch goes back (another peer may serve it meanwhile); this peer stays.
                Err(_) if wait => st.pending.extend(batch),
                Err((done, why)) => {
                    tracing::info!(peer = %peer.fmt_short(), error = %why, "dropping peer from this fetch");
                    if st.live.remove(&peer) {
                        st.report.failed_peers.push((peer, why));
                    }
                    st.report.blobs += done.len() as u64;
                    let done: HashSet<ChunkId> = done.into_iter().map(|(id, _)| id).collect();
                    st.pending.extend(batch.into_iter().filter(|id| !done.contains(id)));
                    conns.drop_peer(&peer);
                }
            }
            st.give_up_hopeless();
        }
        wake.notify_waiters();
    }
}

/// A batch a worker took: if the worker ends without settling it (it panicked), the batch
/// goes back to the others and the peer leaves the fetch, so the fetch still ends.
struct Taken<'a> {
    state: &'a Mutex<FetchState>,
    wake: &'a Notify,
    peer: EndpointId,
    batch: Option<Vec<ChunkId>>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let Some(batch) = self.batch.take() else { return };
        let mut st = lock(self.state);
        st.in_flight -= 1;
        st.pending.extend(batch);
        if st.live.remove(&self.peer) {
            st.report.failed_peers.push((self.peer, "the fetch from it failed".into()));
        }
        st.give_up_hopeless();
        drop(st);
        self.wake.notify_waiters();
    }
}

/// Asks `peer` for `ids` (directly, or over its link); returns the ids it does not have and
/// what it received, or on failure what it received before it failed and why.
async fn get_batch(
    conns: &Connections,
    peer: EndpointId,
    mut lane: usize,
    pool: Option<[u8; 32]>,
    ids: &[ChunkId],
    sink: &mpsc::Sender<Blob>,
) -> GetResult {
    loop {
        let proof = conns.device_proof();
        let conn =
            match conns.route_lane(peer, lane).await.map_err(|e| (Vec::new(), e.to_string()))? {
                Route::Direct(c) => c,
                Route::Link(l) => return l.get(ids, pool, proof, sink).await,
            };
        match get_on(&conn, ids, pool, proof, sink).await {
            // A further connection the peer refused (it has as many of ours open as it
            // allows): the first connection carries this batch, and the lane's next ones.
            Err((got, _)) if lane != 0 && got.is_empty() && refused(&conn) => lane = 0,
            // The first refused too: said in words, not as a lost connection.
            Err((got, _)) if got.is_empty() && refused(&conn) => {
                return Err((got, REFUSED_FIRST.to_string()));
            }
            result => return result,
        }
    }
}

/// Asks for `ids` on a stream of `conn`.
async fn get_on(
    conn: &iroh::endpoint::Connection,
    ids: &[ChunkId],
    pool: Option<[u8; 32]>,
    proof: Option<super::DeviceProof>,
    sink: &mpsc::Sender<Blob>,
) -> GetResult {
    // A peer that grants no new stream (it reads none of the ones open) is a stalled peer.
    let (send, recv) = tokio::time::timeout(STALL_TIMEOUT, conn.open_bi())
        .await
        .map_err(|_| (Vec::new(), "opened no stream in time".to_string()))?
        .map_err(|e| (Vec::new(), e.to_string()))?;
    wire::get(&mut StreamWire { send, recv }, ids, pool, proof, sink).await
}

/// Why a peer that refused even the first connection failed the batch; the fetch asks it
/// again for [`REFUSED_PATIENCE`] before it gives up on the peer with these words.
const REFUSED_FIRST: &str = "it refused our connections: it holds as many of this node's \
     connections as it allows (a crashed run's stay until they have been silent for 10 s), and \
     still did after 20 s";

/// Whether the peer closed `conn` as one connection too many (see [`BUSY`]).
fn refused(conn: &iroh::endpoint::Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(iroh::endpoint::ConnectionError::ApplicationClosed(c)) if c.error_code == BUSY.into()
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{REFUSED_PATIENCE, Refused};

    /// The peer is asked again after 0.25 s, 0.5 s, 1 s, then every 2 s, the last time
    /// exactly at the end of the patience; the siblings refused in the same round do not push
    /// the schedule; a refusal after the last try ends it.
    #[test]
    fn a_refusing_peer_is_asked_on_one_schedule_until_the_patience_ends() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut r = Refused::new(t0);
        let mut at = t0;
        let mut tries = Vec::new();
        while r.refused(at) {
            // Three siblings refused a moment later, in the same round.
            for _ in 0..3 {
                assert!(r.refused(at + Duration::from_millis(1)));
            }
            at = r.next;
            tries.push(at.duration_since(t0).as_millis());
        }
        assert_eq!(tries[..4], [250, 750, 1750, 3750]);
        assert!(tries.windows(2).all(|w| w[1] - w[0] <= 2000), "{tries:?}");
        assert_eq!(*tries.last().unwrap(), REFUSED_PATIENCE.as_millis(), "{tries:?}");
        assert_eq!(at, ms(REFUSED_PATIENCE.as_millis() as u64));
    }
}
